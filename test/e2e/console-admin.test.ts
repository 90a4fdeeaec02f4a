/**
 * The console's admin endpoints over plain HTTP (docs/console.md), against a running gateway with
 * the mock and a failing OpenAI-compatible fake: models with their breakers, the recent calls
 * and their filters, the redacted config, the traffic stream, the admin token and the loopback
 * rule, and the CORS answers of the HTTP listener to the console's origin only.
 */
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { request } from "node:http";
import * as http2 from "node:http2";
import { promisify } from "node:util";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { defaultConfigYaml } from "../../src/config/default-config.js";
import { parseConfig } from "../../src/config/load-config.js";
import { startApp } from "../../src/server/app.js";
import { adminToken, chatBody, type ConsoleGateway, consoleConfig, headerSecret, startConsoleGateway, upstreamKey } from "../browser/console-gateway.js";

interface ModelsBody {
  models: {
    name: string;
    version: string;
    kind: string;
    capabilities: string[];
    state: string;
    recentCalls: number;
    recentErrorRatio: number | null;
    endpoints: { endpoint: string; breaker: string; ejected: boolean; inFlight: number; recentErrorRatio: number | null }[];
  }[];
}

interface CallsBody {
  calls: { model: string; status: string; reason?: string; caller: string; servedBy?: string; time: string; latencyMs: number; requestId: string }[];
}

/** Reads server-sent events from `res` until `until` says stop; returns them. */
async function readEvents(res: Response, until: (event: string, data: unknown) => boolean): Promise<void> {
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error("the stream ended");
    buffered += decoder.decode(value, { stream: true });
    let end: number;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const block = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      const event = /^event: (.*)$/m.exec(block)?.[1] ?? "message";
      const data = JSON.parse(/^data: (.*)$/m.exec(block)?.[1] ?? "null") as unknown;
      if (until(event, data)) {
        await reader.cancel();
        return;
      }
    }
  }
}

/** The status of a GET of `path` sent as written (no URL normalisation), with `headers`. */
function rawStatus(address: string, path: string, headers: Record<string, string> = {}): Promise<number> {
  const i = address.lastIndexOf(":");
  return new Promise((resolve, reject) => {
    request({ host: address.slice(0, i), port: Number(address.slice(i + 1)), path, headers: { authorization: `Bearer ${adminToken}`, ...headers } }, (res) => {
      res.resume();
      resolve(res.statusCode!);
    })
      .on("error", reject)
      .end();
  });
}

describe("the console's admin endpoints", () => {
  let g: ConsoleGateway;

  beforeAll(async () => {
    g = await startConsoleGateway(true);
  });
  afterAll(async () => {
    await g?.close();
  });

  it("lists every model with version, kind, capabilities, state and each endpoint's breaker", async () => {
    const res = await g.get("/admin/models");
    expect(res.status).toBe(200);
    const body = (await res.json()) as ModelsBody;
    expect(body.models.map((m) => m.name)).toEqual(["mock-chat", "slow-chat", "mock-predict", "mock-embed", "broken"]);
    const broken = body.models.find((m) => m.name === "broken")!;
    expect(broken).toMatchObject({ version: "7", kind: "openai", capabilities: ["chat", "generate"] });
    expect(broken.endpoints).toEqual([expect.objectContaining({ endpoint: g.fake.baseUrl, breaker: "CLOSED", ejected: false, inFlight: 0 })]);
    expect(body.models[0]).toMatchObject({ name: "mock-chat", version: "1", kind: "mock", capabilities: ["chat", "generate"] });
  });

  it("shows the breaker OPEN after failures, with the recent error ratio; the calls list them with their reason", async () => {
    for (let i = 0; i < 3; i++) {
      const res = await g.call("Chat", chatBody("broken", `fail ${i}`));
      expect(res.status).not.toBe(200);
    }
    const fast = await g.call("Chat", chatBody("broken", "once more"));
    expect(((await fast.json()) as { details?: { debug?: { reason?: string } }[] }).details?.[0]?.debug?.reason).toBe("CIRCUIT_OPEN");
    expect((await g.call("Chat", chatBody("mock-chat"))).status).toBe(200);

    await expect
      .poll(async () => ((await (await g.get("/admin/models")).json()) as ModelsBody).models.find((m) => m.name === "broken"))
      .toMatchObject({ recentCalls: 4, recentErrorRatio: 1, endpoints: [expect.objectContaining({ breaker: "OPEN", recentCalls: 3, recentErrorRatio: 1 })] });

    const all = (await (await g.get("/admin/calls")).json()) as CallsBody;
    expect(all.calls[0]).toMatchObject({ model: "mock-chat", status: "OK", caller: "console-user", servedBy: "mock-chat/mock" });
    expect(Date.parse(all.calls[0]!.time)).not.toBeNaN();
    const errors = (await (await g.get("/admin/calls?status=error&model=broken")).json()) as CallsBody;
    expect(errors.calls).toHaveLength(4);
    expect(errors.calls[0]).toMatchObject({ status: "UNAVAILABLE", reason: "CIRCUIT_OPEN" });
    expect(errors.calls.every((c) => c.model === "broken" && c.status !== "OK")).toBe(true);
    expect(((await (await g.get("/admin/calls?status=UNAVAILABLE&limit=2")).json()) as CallsBody).calls).toHaveLength(2);
    expect(((await (await g.get("/admin/calls?caller=other-user")).json()) as CallsBody).calls).toEqual([]);
  });

  it("refuses bad filters with 400 naming the parameter, without echoing it unbounded", async () => {
    for (const [query, field] of [
      ["status=sometimes", "status"],
      ["limit=0", "limit"],
      ["limit=2.5", "limit"],
      [`model=${"m".repeat(300)}`, "model"],
    ] as const) {
      const res = await g.get(`/admin/calls?${query}`);
      expect(res.status).toBe(400);
      const text = await res.text();
      expect(text.startsWith(`${field}:`)).toBe(true);
      expect(text.length).toBeLessThan(200);
    }
    expect((await g.get("/admin/traffic?intervalMs=10")).status).toBe(400);
  });

  it("shows the running config with every secret redacted, its load time and the last reload's result", async () => {
    const res = await g.get("/admin/config");
    expect(res.status).toBe(200);
    const text = await res.text();
    for (const secret of [upstreamKey, headerSecret, adminToken]) expect(text).not.toContain(secret);
    const body = JSON.parse(text) as { loadedAt: string; lastReload: unknown; config: { upstreams: { name: string; apiKey?: string; headers: Record<string, string> }[]; auth: { keys: { sha256: string }[] } } };
    const failing = body.config.upstreams.find((u) => u.name === "failing")!;
    expect(failing.apiKey).toBe("[redacted]");
    expect(failing.headers).toEqual({ "x-team-token": "[redacted]", "x-team": "[redacted]" });
    expect(body.config.auth.keys[0]!.sha256).toBe("[redacted]");
    expect(Date.parse(body.loadedAt)).not.toBeNaN();
    expect(body.lastReload).toBeNull();

    const yaml = consoleConfig(g.fake.baseUrl, true);
    expect(await g.app.reload(async () => parseConfig("models: [{name: x, upstream: nowhere}]", "(test)", {}))).toBe(false);
    const rejected = (await (await g.get("/admin/config")).json()) as { loadedAt: string; lastReload: { result: string; at: string } };
    expect(rejected.lastReload.result).toBe("rejected");
    expect(rejected.loadedAt).toBe(body.loadedAt);
    expect(await g.app.reload(async () => parseConfig(yaml, "(test)", {}))).toBe(true);
    const applied = (await (await g.get("/admin/config")).json()) as { loadedAt: string; lastReload: { result: string } };
    expect(applied.lastReload.result).toBe("applied");
    expect(Date.parse(applied.loadedAt)).toBeGreaterThanOrEqual(Date.parse(body.loadedAt));
  });

  it("streams traffic points (calls/s, latency percentiles, tokens by model) and the models over SSE", async () => {
    const res = await g.get("/admin/traffic?intervalMs=250");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/event-stream");
    let models = false;
    let calls = 0;
    await readEvents(res, (event, data) => {
      if (event === "models") models = (data as ModelsBody).models.length === 5;
      if (event === "traffic") {
        const p = data as { callsPerS: number; latencyMs: { p50: number | null }; tokensPerSByModel: Record<string, number> };
        if (p.callsPerS > 0) {
          expect(p.latencyMs.p50).not.toBeNull();
          expect(p.tokensPerSByModel["mock-chat"]).toBeGreaterThan(0);
          return models;
        }
        // Each point is the difference from the one before: make a call for the next one.
        if (calls++ < 20) void g.call("Chat", chatBody("mock-chat"));
      }
      return false;
    });
    expect(models).toBe(true);
  });

  it("needs the admin token on the JSON endpoints; the console's static files hold no data and do not", async () => {
    for (const path of ["/admin/info", "/admin/models", "/admin/calls", "/admin/config", "/admin/traffic"]) {
      const res = await fetch(`${g.admin}${path}`);
      expect(res.status, path).toBe(401);
      const wrong = await fetch(`${g.admin}${path}`, { headers: { authorization: "Bearer not-the-admin-token-at-all" } });
      expect(wrong.status, path).toBe(401);
    }
    const info = (await (await g.get("/admin/info")).json()) as { httpPort: number; adminToken: boolean };
    expect(info).toEqual({ httpPort: Number(g.app.httpAddress.split(":").pop()), httpTls: false, adminToken: true });
    const page = await fetch(`${g.admin}/console/`);
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toContain("text/html");
    expect(page.headers.get("content-security-policy")).toContain(`connect-src 'self' http://127.0.0.1:${info.httpPort}`);
    expect(await page.text()).toContain("infergate console");
    expect((await fetch(`${g.admin}/console`, { redirect: "manual" })).headers.get("location")).toBe("/console/");
    // Paths out of the console's folder (sent as written: fetch would normalise them).
    for (const path of ["/console/../package.json", "/console/..%2f..%2fpackage.json", "/console/%2e%2e/%2e%2e/package.json"]) {
      expect(await rawStatus(g.app.adminAddress, path), path).toBe(404);
    }
  });

  it("answers CORS preflights and calls from the console's origin only", async () => {
    const adminPort = g.app.adminAddress.split(":").pop();
    const url = `${g.http}/infergate.v1.InferenceService/Chat`;
    const preflight = (origin: string) =>
      fetch(url, { method: "OPTIONS", headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "authorization,content-type,connect-protocol-version" } });
    const ok = await preflight(`http://127.0.0.1:${adminPort}`);
    expect(ok.status).toBe(204);
    expect(ok.headers.get("access-control-allow-origin")).toBe(`http://127.0.0.1:${adminPort}`);
    expect(ok.headers.get("access-control-allow-headers")?.toLowerCase()).toContain("authorization");
    expect((await preflight("http://evil.example")).headers.get("access-control-allow-origin")).toBeNull();
    expect((await preflight(`http://localhost:${adminPort}`)).headers.get("access-control-allow-origin")).toBeNull();

    const res = await fetch(url, {
      method: "POST",
      headers: { origin: `http://127.0.0.1:${adminPort}`, "content-type": "application/json", authorization: "Bearer sk-console-player-key" },
      body: JSON.stringify(chatBody("mock-chat")),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("access-control-allow-origin")).toBe(`http://127.0.0.1:${adminPort}`);
    expect(res.headers.get("access-control-expose-headers")?.toLowerCase()).toContain("grpc-status-details-bin");
  });
});

describe("a Host header longer than a DNS name", () => {
  let g: ConsoleGateway;
  const longHost = "h".repeat(15_000);

  beforeAll(async () => {
    g = await startConsoleGateway(true);
  });
  afterAll(async () => {
    await g?.close();
  });

  it("is not copied into the console page's Content-Security-Policy (127.0.0.1 instead)", async () => {
    const i = g.app.adminAddress.lastIndexOf(":");
    const [status, csp] = await new Promise<[number, string]>((resolve, reject) => {
      request({ host: g.app.adminAddress.slice(0, i), port: Number(g.app.adminAddress.slice(i + 1)), path: "/console/", headers: { host: `${longHost}:9090` } }, (res) => {
        res.resume();
        resolve([res.statusCode!, String(res.headers["content-security-policy"])]);
      })
        .on("error", reject)
        .end();
    });
    expect(status).toBe(200);
    expect(csp).toContain(`connect-src 'self' http://127.0.0.1:${g.app.httpAddress.split(":").pop()};`);
    expect(csp.length).toBeLessThan(400);
  });

  it("is not copied into access-control-allow-origin (HTTP/2, whose header lists hold 15,000 characters twice)", async () => {
    const adminPort = g.app.adminAddress.split(":").pop();
    const session = http2.connect(`http://${g.app.httpAddress}`);
    try {
      const headers = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
        const stream = session.request({
          ":method": "OPTIONS",
          ":path": "/infergate.v1.InferenceService/Chat",
          ":authority": `${longHost}:${g.app.httpAddress.split(":").pop()}`,
          origin: `http://${longHost}:${adminPort}`,
          "access-control-request-method": "POST",
        });
        stream.on("response", (h) => {
          stream.resume();
          resolve(h);
        });
        stream.on("error", reject);
        stream.end();
      });
      expect(headers["access-control-allow-origin"]).toBeUndefined();
      expect(JSON.stringify(headers).length).toBeLessThan(1000);
    } finally {
      session.close();
    }
  });
});

describe("the console without an admin token", () => {
  it("answers on a loopback admin listener for a loopback Host only, and is refused (403) on another listener", async () => {
    const g = await startConsoleGateway(false);
    const config = parseConfig(consoleConfig(g.fake.baseUrl, false), "(test)", {});
    config.server.listen = "127.0.0.1:0";
    config.server.httpListen = "127.0.0.1:0";
    config.server.adminListen = "0.0.0.0:0";
    const open = await startApp(config, pino({ level: "silent" }));
    try {
      expect((await fetch(`${g.admin}/admin/models`)).status).toBe(200);
      // A page of another name rebound to 127.0.0.1 (DNS rebinding) sends its own Host.
      expect(await rawStatus(g.app.adminAddress, "/admin/config", { host: "attacker.example" })).toBe(403);
      expect(await rawStatus(g.app.adminAddress, "/admin/config", { host: "localhost" })).toBe(200);
      const port = open.adminAddress.slice(open.adminAddress.lastIndexOf(":") + 1);
      for (const path of ["/console/", "/admin/models", "/admin/config"]) {
        const res = await fetch(`http://127.0.0.1:${port}${path}`);
        expect(res.status, path).toBe(403);
        expect(await res.text()).toContain("server.adminToken");
      }
    } finally {
      await Promise.all([g.close(), open.shutdown()]);
    }
  });
});

describe("docs/console.md's examples work as written", () => {
  const doc = readFileSync(new URL("../../docs/console.md", import.meta.url), "utf8");
  const blocks = (lang: string) => [...doc.matchAll(new RegExp("```" + lang + "\\n([\\s\\S]*?)```", "g"))].map((m) => m[1]!.trim());

  it("its YAML is a valid server section", () => {
    const yaml = blocks("yaml");
    expect(yaml.length).toBeGreaterThan(0);
    for (const y of yaml) expect(parseConfig(`${y}\n${defaultConfigYaml}`, "(docs/console.md)", { ADMIN_TOKEN: adminToken }).server.adminToken).toBe(adminToken);
  });

  it("its curl commands answer on a loopback admin listener without a token", async () => {
    const g = await startConsoleGateway(false);
    try {
      const commands = blocks("sh").filter((b) => b.startsWith("curl "));
      const checks: [RegExp, (code: number, out: string) => void][] = [
        [/admin\/models$/, (code, out) => expect([code, (JSON.parse(out) as ModelsBody).models.length]).toEqual([0, 5])],
        [/admin\/calls\?/, (code, out) => expect([code, Array.isArray((JSON.parse(out) as CallsBody).calls)]).toEqual([0, true])],
        [/admin\/config$/, (code, out) => expect([code, JSON.stringify(JSON.parse(out)).includes(upstreamKey)]).toEqual([0, false])],
        // Cut by --max-time (curl's code 28) after a few events.
        [/admin\/traffic$/, (code, out) => expect([code, out.includes("event: models")]).toEqual([28, true])],
      ];
      expect(commands).toHaveLength(checks.length);
      for (const command of commands) {
        const check = checks.find(([re]) => re.test(command));
        expect(check, command).toBeDefined();
        const run = command.replaceAll("127.0.0.1:9090", g.app.adminAddress);
        const out = await promisify(execFile)("bash", ["-c", run]).then(
          (r) => ({ code: 0, stdout: r.stdout }),
          (e: { code: number; stdout: string }) => ({ code: e.code, stdout: e.stdout }),
        );
        check![1](out.code, out.stdout);
      }
    } finally {
      await g.close();
    }
  });
});
