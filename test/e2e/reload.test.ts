/**
 * Configuration reload on SIGHUP, through the real `infergate` process with config files in a temp
 * dir: a stream in flight finishes on the configuration it started with while new calls see the
 * new models and upstreams; an invalid file is refused with its problems and the old one serves
 * on; swapped API keys; rotated certificates on both listeners (new handshakes get the new
 * certificate, open connections go on), and broken certificate files refused; --workers.
 * The clients are grpc-js with proto/ loaded at run time, and node:tls / node:http2 for TLS.
 */
import { once } from "node:events";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import * as http2 from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { X509Certificate } from "node:crypto";
import * as tls from "node:tls";
import { status } from "@grpc/grpc-js";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { hashKey } from "../../src/security/api-keys.js";
import { createTestPki, issueServerCertificate, type TestPki } from "../helpers/certs.js";
import { errorInfoOf, expectServiceError, inferenceClient, type ProtoClient, statusDetails } from "../helpers/proto-clients.js";
import { type ServerProcess, startInProcess, startProcess } from "../helpers/servers.js";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Role } from "../../gen/infergate/v1/chat_pb.js";
import { InferenceService } from "../../gen/infergate/v1/inference_service_pb.js";
import { parseConfig } from "../../src/config/load-config.js";

const dir = mkdtempSync(join(tmpdir(), "infergate-reload-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface LogLine {
  level?: number;
  msg?: string;
  worker?: number;
  problems?: string[];
  fields?: string[];
}

const parse = (line: string): LogLine => {
  try {
    return JSON.parse(line) as LogLine;
  } catch {
    return {};
  }
};

async function until(what: string, check: () => boolean, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

const user = (text: string) => ({ role: "ROLE_USER", content: [{ text }] });

interface ChatAnswer {
  model: string;
  message: { content: { text: string }[] };
}

describe("configuration reload on SIGHUP", () => {
  let server: ServerProcess | undefined;
  const clients: ProtoClient[] = [];
  const configPath = join(dir, "infergate.yaml");

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    const s = server;
    server = undefined;
    if (s !== undefined && s.proc.exitCode === null && s.proc.signalCode === null) {
      const exited = once(s.proc, "exit");
      s.proc.kill("SIGKILL");
      await exited;
    }
  });

  async function start(yaml: string, args: string[] = []): Promise<{ s: ServerProcess; client: ProtoClient; lines: () => LogLine[] }> {
    writeFileSync(configPath, yaml);
    const s = await startProcess(["--config", configPath, ...args]);
    server = s;
    const client = inferenceClient(s.grpcAddress);
    clients.push(client);
    return { s, client, lines: () => s.lines.map(parse) };
  }

  /** Writes the new configuration, sends SIGHUP and waits for the reload's outcome line. */
  async function reload(s: ServerProcess, yaml: string | undefined, expected: "configuration reloaded" | "rejected", workers = 1): Promise<LogLine[]> {
    if (yaml !== undefined) writeFileSync(configPath, yaml);
    const outcome = (l: LogLine) => l.msg === "configuration reloaded" || (l.msg ?? "").startsWith("configuration reload rejected");
    const before = s.lines.map(parse).filter(outcome).length;
    s.proc.kill("SIGHUP");
    await until("the reload's outcome", () => s.lines.map(parse).filter(outcome).length >= before + workers);
    const results = s.lines.map(parse).filter(outcome).slice(before);
    for (const r of results) {
      expect(r.msg).toContain(expected === "rejected" ? "configuration reload rejected" : expected);
    }
    return results;
  }

  async function metric(s: ServerProcess, result: "ok" | "rejected"): Promise<number> {
    const text = await (await fetch(`http://${s.adminAddress}/metrics`)).text();
    const m = new RegExp(`^infergate_config_reloads_total\\{result="${result}"\\} (\\d+)$`, "m").exec(text);
    return m === null ? Number.NaN : Number(m[1]);
  }

  it("a stream in flight finishes on its old upstream; new calls see the added, changed and removed models", async () => {
    const { s, client, lines } = await start(`upstreams: [{name: mock, kind: mock}]
models:
  - {name: kept, upstream: mock}
  - {name: removed, upstream: mock}
`);
    const words = "one two three four five six seven eight nine ten";
    const stream = client.serverStream<Record<string, unknown>>("Generate", { model: "kept", messages: [user(words)], metadata: { "mock.token_delay_ms": "250" } }, { timeoutMs: 20_000 });
    expect(await stream.waitFor(() => true, 5_000)).toEqual({ text_delta: "You", event: "text_delta" });

    // The upstream changes (streams are cut after 2 events): it is made anew for the calls that
    // start from now on; the stream in flight keeps the instance it started with.
    await reload(
      s,
      `upstreams: [{name: mock, kind: mock, options: {cutAfterTokens: 2}}]
models:
  - {name: kept, upstream: mock}
  - {name: added, upstream: mock, version: "7"}
`,
      "configuration reloaded",
    );
    expect(stream.finished).toBe(false);

    const listed = await client.unary<{ models: { name: string; version: string }[] }>("ListModels", {});
    expect(listed.models.map((m) => [m.name, m.version])).toEqual([
      ["kept", "1"],
      ["added", "7"],
    ]);
    const added = await client.unary<ChatAnswer>("Chat", { model: "added", messages: [user("hello new model")] });
    expect(added.message.content[0]!.text).toBe("You said: hello new model");
    const removed = await expectServiceError(client.unary("Chat", { model: "removed", messages: [user("gone?")] }));
    expect(removed.code).toBe(status.NOT_FOUND);
    expect(errorInfoOf(statusDetails(removed))?.reason).toBe("MODEL_NOT_FOUND");
    const cut = await client.serverStream<Record<string, unknown>>("Generate", { model: "kept", messages: [user(words)] }).done;
    expect(cut.status.code).toBe(status.UNAVAILABLE);
    expect(cut.events).toHaveLength(2);

    const result = await stream.done;
    expect(result.status.code).toBe(status.OK);
    const deltas = `You said: ${words}`.match(/\s*\S+/g)!;
    expect(result.events.slice(0, -1)).toEqual(deltas.map((text_delta) => ({ text_delta, event: "text_delta" })));
    expect(result.events.at(-1)).toMatchObject({ event: "final", final: { model: "kept", upstream: "mock", finish_reason: "FINISH_REASON_STOP" } });

    expect(await metric(s, "ok")).toBe(1);
    expect(await metric(s, "rejected")).toBe(0);
    // Nothing was logged as a problem but the cut stream (the new upstream's doing).
    expect(lines().filter((l) => l.level !== undefined && l.level >= 40).map((l) => l.msg)).toEqual(["upstream stream ended before its final event"]);
  });

  it("an invalid configuration is refused with every problem; the old one serves on", async () => {
    const { s, client } = await start(`upstreams: [{name: mock, kind: mock}]\nmodels: [{name: kept, upstream: mock}]\n`);
    const [rejected] = await reload(
      s,
      `upstreams:
  - {name: mock, kind: mock}
  - {name: remote, kind: openai, endpoints: ["not a url"]}
models:
  - {name: kept, upstream: nowhere}
  - {name: new-one, upstream: mock}
`,
      "rejected",
    );
    expect(rejected!.level).toBe(50);
    expect(rejected!.problems).toEqual(["upstreams[1].endpoints[0]: not a URL"]);
    expect(rejected!.msg).toContain("upstreams[1].endpoints[0]: not a URL");

    // Cross-checks come once the schema passes; all of them are listed.
    const [again] = await reload(
      s,
      `upstreams: [{name: mock, kind: mock}]
models:
  - {name: kept, upstream: nowhere}
  - {name: new-one, upstream: mock, fallbacks: [missing]}
`,
      "rejected",
    );
    expect(again!.problems).toEqual(['models[0].upstream: no upstream named "nowhere"', 'models[1].fallbacks[0]: no model named "missing"']);

    writeFileSync(configPath, "models: [unclosed\n");
    const [yamlError] = await reload(s, undefined, "rejected");
    expect(yamlError!.problems![0]).toMatch(/^YAML: /);

    const res = await client.unary<ChatAnswer>("Chat", { model: "kept", messages: [user("still here")] });
    expect(res.message.content[0]!.text).toBe("You said: still here");
    const unknown = await expectServiceError(client.unary("Chat", { model: "new-one", messages: [user("x")] }));
    expect(unknown.code).toBe(status.NOT_FOUND);
    expect(await metric(s, "rejected")).toBe(3);
    expect(await metric(s, "ok")).toBe(0);

    // A setting bound at start is named, kept, and the rest applies.
    const [applied] = await reload(s, `server: {maxMessageBytes: 1000}\nupstreams: [{name: mock, kind: mock}]\nmodels: [{name: new-one, upstream: mock}]\n`, "configuration reloaded");
    expect(applied).toBeDefined();
    const warning = s.lines.map(parse).find((l) => l.fields !== undefined);
    expect(warning).toMatchObject({ level: 40, fields: ["server.maxMessageBytes"] });
    // A 2 KB message still passes: the running limit (4 MiB) stays.
    const big = "x".repeat(2000);
    const res2 = await client.unary<ChatAnswer>("Chat", { model: "new-one", messages: [user(big)] });
    expect(res2.message.content[0]!.text).toBe(`You said: ${big}`);
  });

  it("swapped API keys: the old key stops working, the new one works", async () => {
    // Every refused call logged (not sampled: server.refusalLogIntervalMs 0), to check each line's tenant.
    const auth = (name: string, key: string) => `server: {refusalLogIntervalMs: 0}
upstreams: [{name: mock, kind: mock}]
models: [{name: kept, upstream: mock}]
auth:
  enabled: true
  keys: [{name: ${name}, sha256: ${hashKey(key)}}]
limits: {default: {requestsPerMinute: 1000}}
`;
    const { s, client, lines } = await start(auth("team-a", "sk-old-key-1"));
    const chat = (key: string) => client.unary<ChatAnswer>("Chat", { model: "kept", messages: [user("hi")] }, { headers: { authorization: `Bearer ${key}` } });
    expect((await chat("sk-old-key-1")).model).toBe("kept");
    const before = await expectServiceError(chat("sk-new-key-2"));
    expect(before.code).toBe(status.UNAUTHENTICATED);

    await reload(s, auth("team-b", "sk-new-key-2"), "configuration reloaded");
    const after = await expectServiceError(chat("sk-old-key-1"));
    expect(after.code).toBe(status.UNAUTHENTICATED);
    expect((await chat("sk-new-key-2")).model).toBe("kept");
    await until("the call lines", () => lines().filter((l) => l.msg === "call").length === 4);
    expect(s.lines.filter((l) => l.includes('"msg":"call"')).map((l) => (JSON.parse(l) as { tenant?: string }).tenant)).toEqual(["team-a", undefined, undefined, "team-b"]);
    expect(s.lines.join("\n")).not.toMatch(/sk-old-key-1|sk-new-key-2/);
  });

  it("with --workers 2, the primary forwards SIGHUP and each worker reloads", async () => {
    const { s, lines } = await start(`upstreams: [{name: mock, kind: mock}]\nmodels: [{name: kept, upstream: mock}]\n`, ["--workers", "2"]);
    await until("both workers listening", () => lines().filter((l) => l.msg === "listening").length === 2);
    const reloaded = await reload(s, `upstreams: [{name: mock, kind: mock}]\nmodels: [{name: added, upstream: mock}]\n`, "configuration reloaded", 2);
    expect(reloaded.map((l) => l.worker).sort()).toEqual([1, 2]);
    // Separate connections reach both workers (see workers.test.ts); each serves the new model.
    for (let i = 0; i < 4; i++) {
      const c = inferenceClient(s.grpcAddress, { "grpc.use_local_subchannel_pool": 1 });
      clients.push(c);
      const res = await c.unary<ChatAnswer>("Chat", { model: "added", messages: [user(`call ${i}`)] });
      expect(res.model).toBe("added");
    }
  });

  it("in process: a model's new version misses the old version's cached answers; a policy change applies", async () => {
    const yaml = (version: string, policy: string) => `upstreams: [{name: mock, kind: mock}]\nmodels: [{name: m, version: "${version}", upstream: mock, cache: {policy: ${policy}}}]\n`;
    const app = await startInProcess(yaml("1", "always"));
    try {
      const load = (version: string, policy: string) => async () => {
        const c = parseConfig(yaml(version, policy), "(test)", {});
        return { ...c, server: { ...c.server, listen: "127.0.0.1:0", httpListen: "127.0.0.1:0", adminListen: "127.0.0.1:0" } };
      };
      const client = createClient(InferenceService, createGrpcTransport({ baseUrl: `http://${app.grpcAddress}` }));
      const chat = async () => {
        const res = await client.chat({ model: "m", messages: [{ role: Role.USER, content: [{ part: { case: "text", value: "same question" } }] }] });
        return [res.modelVersion, res.cached] as const;
      };
      expect(await chat()).toEqual(["1", false]);
      expect(await chat()).toEqual(["1", true]);
      expect(await app.reload(load("2", "always"))).toBe(true);
      expect(await chat()).toEqual(["2", false]);
      expect(await chat()).toEqual(["2", true]);
      // Back to version 1: its answer is still there, under its own key.
      expect(await app.reload(load("1", "always"))).toBe(true);
      expect(await chat()).toEqual(["1", true]);
      expect(await app.reload(load("1", "off"))).toBe(true);
      expect(await chat()).toEqual(["1", false]);
      // An invalid configuration resolves false and changes nothing.
      expect(await app.reload(async () => parseConfig("models: []\n", "(test)", {}))).toBe(false);
      expect(await chat()).toEqual(["1", false]);
    } finally {
      await app.shutdown();
    }
  });

  describe("TLS certificates", () => {
    let pki: TestPki;
    let second: { pem: string; key: string };
    const live = { pem: join(dir, "live.pem"), key: join(dir, "live.key") };
    const fingerprint = (pem: string) => new X509Certificate(readFileSync(pem)).fingerprint256;
    const clientTls = () => ({ ca: readFileSync(pki.caPem), cert: readFileSync(pki.clientPem), key: readFileSync(pki.clientKey) });

    beforeAll(() => {
      pki = createTestPki();
      second = issueServerCertificate(pki, "server2");
    });
    afterAll(() => rmSync(pki.dir, { recursive: true, force: true }));

    /** The fingerprint of the certificate a new TLS connection to `address` is shown. */
    function presented(address: string): Promise<string> {
      const i = address.lastIndexOf(":");
      return new Promise((resolve, reject) => {
        const socket = tls.connect({ host: address.slice(0, i), port: Number(address.slice(i + 1)), servername: "localhost", ALPNProtocols: ["h2"], ...clientTls() }, () => {
          resolve(socket.getPeerCertificate().fingerprint256);
          socket.end();
        });
        socket.once("error", reject);
      });
    }

    /** A gRPC ListModels over an HTTP/2 session; resolves with its grpc-status. */
    function listModels(session: http2.ClientHttp2Session): Promise<string | undefined> {
      return new Promise((resolve, reject) => {
        const req = session.request({ ":method": "POST", ":path": "/infergate.v1.InferenceService/ListModels", "content-type": "application/grpc", te: "trailers" });
        let grpcStatus: string | undefined;
        req.on("response", (headers) => (grpcStatus ??= headers["grpc-status"] as string | undefined));
        req.on("trailers", (trailers) => (grpcStatus = trailers["grpc-status"] as string | undefined));
        req.on("data", () => {});
        req.on("end", () => resolve(grpcStatus));
        req.on("error", reject);
        req.end(Buffer.alloc(5));
      });
    }

    it("a new certificate reaches new connections on both listeners, open ones go on, broken files are refused", async () => {
      copyFileSync(pki.serverPem, live.pem);
      copyFileSync(pki.serverKey, live.key);
      const yaml = `server:
  tls: {certFile: ${live.pem}, keyFile: ${live.key}, clientCaFile: ${pki.caPem}}
upstreams: [{name: mock, kind: mock}]
models: [{name: kept, upstream: mock}]
`;
      writeFileSync(configPath, yaml);
      const s = await startProcess(["--config", configPath]);
      server = s;
      const listeners = [s.grpcAddress, s.httpAddress];
      const first = fingerprint(pki.serverPem);
      expect(first).not.toBe(fingerprint(second.pem));
      for (const a of listeners) expect(await presented(a)).toBe(first);

      // Connections opened before the rotation.
      const sessions = listeners.map((a) => http2.connect(`https://${a}`, { servername: "localhost", ...clientTls() }));
      try {
        for (const session of sessions) expect(await listModels(session)).toBe("0");

        copyFileSync(second.pem, live.pem);
        copyFileSync(second.key, live.key);
        await reload(s, undefined, "configuration reloaded");
        for (const a of listeners) expect(await presented(a)).toBe(fingerprint(second.pem));
        for (const session of sessions) {
          expect(await listModels(session)).toBe("0");
          expect((session.socket as tls.TLSSocket).getPeerCertificate().fingerprint256).toBe(first);
        }

        // The first certificate with the second's key: refused, the second certificate stays.
        copyFileSync(pki.serverPem, live.pem);
        const [mismatch] = await reload(s, undefined, "rejected");
        expect(mismatch!.problems).toEqual(["server.tls.keyFile: does not match the certificate of server.tls.certFile"]);
        // A missing key file and a garbage certificate.
        unlinkSync(live.key);
        writeFileSync(live.pem, "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n");
        const [missing] = await reload(s, undefined, "rejected");
        expect(missing!.problems).toHaveLength(2);
        expect(missing!.problems!.some((p) => /^server\.tls\.keyFile: cannot read .*live\.key \(ENOENT\)$/.test(p))).toBe(true);
        expect(missing!.problems!.some((p) => /^server\.tls\.certFile: not a PEM certificate \(.+\)$/.test(p))).toBe(true);

        for (const a of listeners) expect(await presented(a)).toBe(fingerprint(second.pem));
        for (const session of sessions) expect(await listModels(session)).toBe("0");
        const fresh = http2.connect(`https://${s.httpAddress}`, { servername: "localhost", ...clientTls() });
        try {
          expect(await listModels(fresh)).toBe("0");
        } finally {
          fresh.close();
        }
        const text = await (await fetch(`http://${s.adminAddress}/metrics`)).text();
        expect(text).toMatch(/^infergate_config_reloads_total\{result="rejected"\} 2$/m);

        // No key material in the log: not the keys' PEM bodies, not the certificate that failed.
        const output = `${s.lines.join("\n")}${s.stderr}`;
        for (const keyFile of [pki.serverKey, second.key]) {
          for (const line of readFileSync(keyFile, "utf8").split("\n").filter((l) => l.length > 20 && !l.startsWith("-----"))) {
            expect(output).not.toContain(line);
          }
        }
        expect(output).not.toContain("bm90IGEgY2VydGlmaWNhdGU");
      } finally {
        for (const session of sessions) session.close();
      }
    });
  });
});
