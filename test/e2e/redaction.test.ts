/**
 * Secrets never leave infergate: the real process is started with an upstream API key taken from
 * the environment (`apiKey: ${TEST_SECRET}`) and authentication on, then driven through every
 * failure path where a secret could escape — callers with bad keys (one of them the upstream's
 * key itself), upstreams that echo the key in their error bodies (401, 400, 500; Chat and
 * Generate; gRPC and Connect JSON), an upstream whose TLS certificate is not trusted, a client
 * without a certificate at an mTLS listener, invalid configurations holding the secret
 * (`check-config` and start-up), and server certificate files that are missing or garbage.
 * Everything the processes wrote (stdout and stderr) and everything a client could see (status
 * codes, messages, error details, headers and trailers, JSON error bodies, /metrics) is collected
 * and searched for the secret.
 *
 * The secret is shaped so that no generic key pattern of the scrubber matches it (no `sk-`
 * prefix, no long token): only redaction of the configured secret itself can hide it.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { Agent, fetch as undiciFetch } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { Role } from "../../gen/infergate/v1/chat_pb.js";
import { InferenceService } from "../../gen/infergate/v1/inference_service_pb.js";
import { hashKey } from "../../src/security/api-keys.js";
import { createEchoKeyFake, type EchoKeyFake } from "../fakes/echo-key-fake.js";
import { createTestPki, type TestPki } from "../helpers/certs.js";
import { binPath, repoRoot, type ServerProcess, startProcess } from "../helpers/servers.js";

const SECRET = `zq.${randomBytes(6).toString("hex")}.${randomBytes(6).toString("hex")}`;
/** The key of the one configured caller (its SHA-256 is in the config). */
const CALLER_KEY = `caller.${randomBytes(6).toString("hex")}`;
const WRONG_KEY = `wrong.${randomBytes(6).toString("hex")}`;
const env = { TEST_SECRET: SECRET };

const dir = mkdtempSync(join(tmpdir(), "infergate-redaction-"));
let pki: TestPki;
let fake: EchoKeyFake;
let untrusted: HttpsServer;
let server: ServerProcess;
let serverClosed: Promise<unknown>;

/** Everything a client saw, one entry per observation. */
const visible: string[] = [];
/** Output of the short-lived processes (check-config, failed start-ups). */
const processOutput: string[] = [];

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

/** The config of the running gateway: mTLS listeners, auth on, upstreams keyed by the secret. */
function gatewayYaml(): string {
  const untrustedPort = (untrusted.address() as AddressInfo).port;
  return `server:
  tls: {certFile: ${pki.serverPem}, keyFile: ${pki.serverKey}, clientCaFile: ${pki.caPem}}
  # Every refused call logged (not one per caller and interval): the test counts their lines.
  refusalLogIntervalMs: 0
auth:
  enabled: true
  keys: [{name: team, sha256: ${hashKey(CALLER_KEY)}}]
upstreams:
  - name: echo
    kind: openai
    endpoints: ["${fake.baseUrl}"]
    apiKey: "\${TEST_SECRET}"
    resilience: { breaker: { enabled: false }, retry: { backoffBaseMs: 1, backoffMaxMs: 2 } }
  - name: untrusted
    kind: openai
    endpoints: ["https://127.0.0.1:${untrustedPort}/v1"]
    apiKey: "\${TEST_SECRET}"
    resilience: { breaker: { enabled: false }, retry: { maxAttempts: 1 } }
models:
  - {name: gpt, upstream: echo}
  - {name: gpt-untrusted, upstream: untrusted}
`;
}

beforeAll(async () => {
  pki = createTestPki();
  fake = await createEchoKeyFake();
  // An HTTPS upstream whose certificate infergate does not trust (no caFile for it).
  untrusted = createHttpsServer({ cert: readFileSync(pki.serverPem), key: readFileSync(pki.serverKey) }, (req, res) => {
    res.writeHead(401, { "content-type": "application/json" }).end(JSON.stringify({ error: { message: `key ${String(req.headers.authorization)}` } }));
  });
  await new Promise<void>((resolve) => untrusted.listen(0, "127.0.0.1", () => resolve()));
  server = await startProcess(["--config", file("gateway.yaml", gatewayYaml())], { env });
  serverClosed = once(server.proc, "close");
});

afterAll(async () => {
  await server?.stop();
  await fake?.close();
  await new Promise((resolve) => (untrusted === undefined ? resolve(undefined) : untrusted.close(resolve)));
  rmSync(dir, { recursive: true, force: true });
  if (pki !== undefined) rmSync(pki.dir, { recursive: true, force: true });
});

const ask = (text: string, model = "gpt") => ({ model, messages: [{ role: Role.USER, content: [{ part: { case: "text" as const, value: text } }] }] });
const withCert = () => ({ ca: readFileSync(pki.caPem), cert: readFileSync(pki.clientPem), key: readFileSync(pki.clientKey) });

const transports: [string, () => Transport][] = [
  ["gRPC", () => createGrpcTransport({ baseUrl: `https://${server.grpcAddress}`, nodeOptions: withCert() })],
  ["Connect", () => createConnectTransport({ baseUrl: `https://${server.httpAddress}`, httpVersion: "1.1", nodeOptions: withCert() })],
];

/** Records everything of a client-side error: code, messages, every detail, every header and trailer. */
function record(err: ConnectError): ConnectError {
  const details = err.details.map((d) =>
    "type" in d && typeof d.type === "string"
      ? `${d.type} ${Buffer.from(d.value).toString("utf8")} ${Buffer.from(d.value).toString("base64")} ${JSON.stringify(d.debug ?? null)}`
      : JSON.stringify(d),
  );
  visible.push(JSON.stringify({ code: err.code, rawMessage: err.rawMessage, message: err.message, details, metadata: [...err.metadata.entries()] }));
  return err;
}

async function failing(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (e) {
    return record(ConnectError.from(e));
  }
  throw new Error("the call succeeded; an error was expected");
}

function reasonOf(err: ConnectError): string | undefined {
  return err.findDetails(ErrorInfoSchema)[0]?.reason;
}

describe.sequential("a running gateway whose upstream key is the secret", () => {
  it.each(transports)("%s: callers with a wrong key, with the upstream's key, or none are UNAUTHENTICATED", async (_name, transport) => {
    const client = createClient(InferenceService, transport());
    const cases: Record<string, string>[] = [
      { authorization: `Bearer ${WRONG_KEY}` },
      { authorization: `Bearer ${SECRET}` },
      { "x-api-key": SECRET },
      { "x-api-key": `${SECRET}x` },
      { authorization: `Basic ${Buffer.from(`user:${SECRET}`).toString("base64")}` },
      {},
    ];
    for (const headers of cases) {
      const err = await failing(client.chat(ask("hello"), { headers }));
      expect(err.code).toBe(Code.Unauthenticated);
      expect(reasonOf(err)).toBe("UNAUTHENTICATED");
    }
    // Nothing of these calls reached the upstream.
    expect(fake.requests.filter((r) => r.lastUserText === "hello")).toEqual([]);
  });

  it.each(transports)("%s: upstream errors that echo the key reach the client without it", async (_name, transport) => {
    const client = createClient(InferenceService, transport());
    const headers = { authorization: `Bearer ${CALLER_KEY}` };
    const before = fake.requests.length;

    const unauthorized = await failing(client.chat(ask("echo-401"), { headers }));
    expect([unauthorized.code, reasonOf(unauthorized), unauthorized.rawMessage]).toEqual([
      Code.Internal,
      "UPSTREAM_AUTH",
      'upstream "echo" refused the gateway\'s credentials',
    ]);

    const rejected = await failing(client.chat(ask("echo-400"), { headers }));
    expect([rejected.code, reasonOf(rejected)]).toEqual([Code.InvalidArgument, "INVALID_ARGUMENT"]);
    // The upstream's own message is passed on, with the key cut out of it.
    expect(rejected.rawMessage).toBe(
      'upstream "echo" rejected the request: Incorrect API key provided: [redacted]. The request carried Authorization: Bearer [redacted].',
    );

    const unavailable = await failing(client.chat(ask("echo-500"), { headers }));
    expect([unavailable.code, reasonOf(unavailable)]).toEqual([Code.Unavailable, "UPSTREAM_UNAVAILABLE"]);

    const streamed = await failing(
      (async () => {
        for await (const _ of client.generate(ask("echo-401"), { headers })) {
          // no event is expected
        }
      })(),
    );
    expect([streamed.code, reasonOf(streamed)]).toEqual([Code.Internal, "UPSTREAM_AUTH"]);

    // The upstream did receive the secret, and did echo it: the paths above carried it.
    const seen = fake.requests.slice(before);
    expect(seen.map((r) => [r.lastUserText, r.status])).toEqual([
      ["echo-401", 401],
      ["echo-400", 400],
      // 500 is retried (3 attempts by default)
      ["echo-500", 500],
      ["echo-500", 500],
      ["echo-500", 500],
      ["echo-401", 401],
    ]);
    for (const r of seen) {
      expect(r.headers.authorization).toBe(`Bearer ${SECRET}`);
      expect(r.responseBody).toContain(SECRET);
    }
  });

  it("Connect JSON over HTTP/1.1: the raw error bodies and headers hold no secret", async () => {
    const dispatcher = new Agent({ connect: withCert() });
    try {
      for (const [text, status, code] of [
        ["echo-401", 500, "internal"],
        ["echo-400", 400, "invalid_argument"],
      ] as const) {
        const res = await undiciFetch(`https://${server.httpAddress}/infergate.v1.InferenceService/Chat`, {
          method: "POST",
          headers: { "content-type": "application/json", authorization: `Bearer ${CALLER_KEY}` },
          body: JSON.stringify({ model: "gpt", messages: [{ role: "ROLE_USER", content: [{ text }] }] }),
          dispatcher,
        });
        const body = await res.text();
        visible.push(JSON.stringify({ status: res.status, headers: [...res.headers.entries()], body }));
        expect([res.status, (JSON.parse(body) as { code: string }).code]).toEqual([status, code]);
      }
    } finally {
      await dispatcher.close();
    }
  });

  it("an upstream with an untrusted TLS certificate fails as UNAVAILABLE", async () => {
    const client = createClient(InferenceService, transports[0]![1]());
    const err = await failing(client.chat(ask("over tls", "gpt-untrusted"), { headers: { authorization: `Bearer ${CALLER_KEY}` } }));
    expect([err.code, reasonOf(err)]).toEqual([Code.Unavailable, "UPSTREAM_UNAVAILABLE"]);
  });

  it.each([
    ["gRPC", () => createGrpcTransport({ baseUrl: `https://${server.grpcAddress}`, nodeOptions: { ca: readFileSync(pki.caPem) } })],
    ["Connect", () => createConnectTransport({ baseUrl: `https://${server.httpAddress}`, httpVersion: "2", nodeOptions: { ca: readFileSync(pki.caPem) } })],
  ])("%s: a client without a certificate is refused by the mTLS listener", async (_name, transport) => {
    const client = createClient(InferenceService, transport());
    const err = await failing(client.chat(ask("no cert"), { headers: { authorization: `Bearer ${SECRET}` }, timeoutMs: 5000 }));
    expect([Code.Unavailable, Code.Internal, Code.Unknown]).toContain(err.code);
    expect(reasonOf(err)).toBeUndefined();
  });

  it("nothing the process wrote, nor anything a client saw, holds the secret or a caller's key", async () => {
    const metrics = await fetch(`http://${server.adminAddress}/metrics`);
    visible.push(await metrics.text());
    expect(await server.stop()).toBe(0);
    await serverClosed;
    const output = `${server.lines.join("\n")}\n${server.stderr}`;
    // The paths ran and were logged: one call line each, and the upstream failures with their cause.
    const lines = server.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    const calls = lines.filter((l) => l["msg"] === "call");
    expect(calls.filter((c) => c["code"] === "UNAUTHENTICATED")).toHaveLength(12);
    expect(calls.filter((c) => c["reason"] === "UPSTREAM_AUTH")).toHaveLength(5);
    expect(lines.some((l) => l["msg"] === 'upstream "echo" refused the gateway\'s credentials')).toBe(true);

    for (const s of [SECRET, CALLER_KEY, WRONG_KEY]) {
      expect(output).not.toContain(s);
    }
    expect(visible.length).toBeGreaterThan(20);
    expect(visible.filter((v) => v.includes(SECRET))).toEqual([]);
  });
});

/** Runs the infergate command to its end. */
function cli(args: string[], extraEnv: Record<string, string> = env): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [binPath, ...args], { cwd: repoRoot, env: { ...process.env, ...extraEnv }, timeout: 20_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === "number" ? ((err as { code: number }).code) : null;
      processOutput.push(stdout, stderr);
      resolve({ code, stdout, stderr });
    });
  });
}

describe("configuration and TLS failures with the secret in the config", () => {
  const upstream = `  - {name: up, kind: openai, endpoints: ["http://127.0.0.1:9/v1"], apiKey: "\${TEST_SECRET}"}\n`;
  const model = `models: [{name: m, upstream: up}]\n`;

  it.each([
    ["the raw key where its hash goes", `auth: {enabled: true, keys: [{name: t, sha256: "\${TEST_SECRET}"}]}\nupstreams:\n${upstream}${model}`, 'auth.keys[0].sha256: not a hex SHA-256 (use infergate hash-key)'],
    ["the key as an endpoint", `upstreams:\n  - {name: up, kind: openai, endpoints: ["\${TEST_SECRET}"], apiKey: "\${TEST_SECRET}"}\n${model}`, "upstreams[0].endpoints[0]: not a URL"],
    ["the key as a listen address", `server: {listen: "\${TEST_SECRET}"}\nupstreams:\n${upstream}${model}`, "server.listen: not HOST:PORT (IPv6 as [::1]:PORT)"],
    ["the key as a kind", `upstreams:\n  - {name: up, kind: "\${TEST_SECRET}"}\n${model}`, "upstreams[0].kind: unknown kind; one of:"],
    ["the key as a timeout", `upstreams:\n  - {name: up, kind: openai, endpoints: ["http://127.0.0.1:9/v1"], timeoutMs: "\${TEST_SECRET}"}\n${model}`, "upstreams[0].timeoutMs: "],
    ["a bad option beside a header that holds the key", `upstreams:\n  - {name: up, kind: openai, endpoints: ["http://127.0.0.1:9/v1"], headers: {x-key: "\${TEST_SECRET}"}, options: {maxTokensField: "\${TEST_SECRET}"}}\n${model}`, "upstreams[0].options.maxTokensField: "],
  ])("%s: check-config and start-up name the field, not the value", async (_name, yaml, expected) => {
    const path = file(`bad-${randomBytes(4).toString("hex")}.yaml`, yaml);
    for (const args of [["check-config", path], ["--config", path, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]]) {
      const r = await cli(args);
      expect(r.code).toBe(1);
      expect(r.stdout).toBe("");
      expect(r.stderr).toContain(`invalid configuration ${path}:\n`);
      expect(r.stderr).toContain(expected);
      expect(r.stderr).not.toContain(SECRET);
    }
  });

  it.each([
    ["a missing server certificate", () => ({ cert: join(dir, "missing.pem"), key: pki.serverKey }), "ENOENT"],
    ["a garbage certificate and key", () => ({ cert: file("garbage.pem", `-----BEGIN CERTIFICATE-----\n${SECRET}\n-----END CERTIFICATE-----\n`), key: file("garbage.key", "not a key\n") }), ""],
  ])("start-up with %s fails without printing the secret", async (_name, files, expected) => {
    const { cert, key } = files();
    const path = file(`tls-${randomBytes(4).toString("hex")}.yaml`, `server:\n  tls: {certFile: ${cert}, keyFile: ${key}}\nupstreams:\n${upstream}${model}`);
    const r = await cli(["--config", path, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(expected);
    expect(r.stderr.length).toBeGreaterThan(0);
    expect(`${r.stdout}${r.stderr}`).not.toContain(SECRET);
  });

  it("the collected output of every short-lived process holds no secret", () => {
    expect(processOutput.length).toBe(2 * (6 * 2 + 2));
    expect(processOutput.filter((o) => o.includes(SECRET))).toEqual([]);
  });
});

describe("server.logContent", () => {
  const yaml = (logContent: boolean) => `server: {logContent: ${logContent}}\nupstreams: [{name: mock, kind: mock}]\nmodels: [{name: mock-chat, upstream: mock}]\n`;

  async function callLines(logContent: boolean): Promise<Record<string, unknown>[]> {
    const s = await startProcess(["--config", file(`content-${logContent}.yaml`, yaml(logContent))]);
    const closed = once(s.proc, "close");
    try {
      const client = createClient(InferenceService, createGrpcTransport({ baseUrl: `http://${s.grpcAddress}` }));
      await client.chat({ model: "mock-chat", messages: [ask("first question", "mock-chat").messages[0]!, { role: Role.ASSISTANT, content: [{ part: { case: "text", value: "an answer" } }] }, ask("second question", "mock-chat").messages[0]!] }, { headers: { "x-request-id": "content-1" } });
      await failing(client.chat({ model: "mock-chat", messages: ask("fails", "mock-chat").messages, metadata: { "mock.fail_code": "UNAVAILABLE" } }, { headers: { "x-request-id": "content-2" } }));
      for await (const _ of client.generate(ask("streamed words", "mock-chat"), { headers: { "x-request-id": "content-3" } })) {
        // drain
      }
    } finally {
      await s.stop();
      await closed;
    }
    return s.lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l["msg"] === "call");
  }

  it("on: a Chat call's one log line adds the last user text and the answer text", async () => {
    const calls = await callLines(true);
    expect(calls.map((c) => [c["requestId"], c["rpc"], c["code"], c["prompt"], c["completion"]])).toEqual([
      ["content-1", "Chat", "OK", "second question", "You said: second question"],
      ["content-2", "Chat", "UNAVAILABLE", "fails", undefined],
      // Generate lines carry no content.
      ["content-3", "Generate", "OK", undefined, undefined],
    ]);
    // The words of all three messages; "You said: second question".
    expect(calls[0]).toMatchObject({ model: "mock-chat", upstream: "mock", promptTokens: 6, completionTokens: 4 });
  });

  it("off (the default): the same calls log no content", async () => {
    const calls = await callLines(false);
    expect(calls.map((c) => [c["requestId"], c["code"], "prompt" in c, "completion" in c])).toEqual([
      ["content-1", "OK", false, false],
      ["content-2", "UNAVAILABLE", false, false],
      ["content-3", "OK", false, false],
    ]);
  });
});
