/**
 * The admin listener (docs/console.md) against clients that misbehave, pages of a DNS-rebound
 * name, and configurations that hide secrets in odd places: an admin listener of its own on a
 * loopback port without a token (src/server/admin-server.ts), with console sources this file
 * controls, over real HTTP.
 */
import { type ClientRequest, type IncomingMessage, request } from "node:http";
import * as net from "node:net";
import { Registry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config/load-config.js";
import type { ModelRoute } from "../../src/core/model-route.js";
import { type AdminServer, type AdminSources, startAdminServer } from "../../src/server/admin-server.js";
import { type ConsoleSources, loopbackHostRefusal, modelsView, trafficBufferMaxBytes, trafficStreamStats, trafficStreamsMax } from "../../src/server/console-api.js";
import { createCallRing } from "../../src/server/console-calls.js";

const minimalYaml = `
upstreams: [{ name: mock, kind: mock }]
models: [{ name: mock-chat, upstream: mock }]
`;

/** A route of `name` on a mock upstream: all GET /admin/models reads of a route. */
function fakeRoute(name: string): ModelRoute {
  return { name, version: "1", upstream: { kind: "mock", name: "mock" }, upstreamModel: name, capabilities: ["chat"], fallbacks: [] } as unknown as ModelRoute;
}

interface Console {
  readonly server: AdminServer;
  readonly sources: ConsoleSources;
  readonly host: string;
  readonly port: number;
}

const started: AdminServer[] = [];
afterEach(async () => {
  await Promise.all(started.splice(0).map((s) => s.close()));
});

/** An admin listener on 127.0.0.1 without a token, with the console reading `yaml` and `routes`, and `more` sources. */
async function startConsole(yaml = minimalYaml, routes: ModelRoute[] = [fakeRoute("mock-chat")], more: Partial<AdminSources> = {}): Promise<Console> {
  const config = parseConfig(yaml, "(test)", {});
  const registry = new Registry();
  const sources: ConsoleSources = {
    registry,
    routes: () => routes,
    calls: createCallRing(),
    config: () => ({ config, loadedAt: Date.now(), lastReload: undefined }),
    http: () => ({ port: undefined, tls: false }),
    trafficIntervalMs: 250,
  };
  const server = await startAdminServer("127.0.0.1:0", { registry, ready: () => true, console: sources, ...more }, config.server.connections);
  started.push(server);
  const i = server.address.lastIndexOf(":");
  return { server, sources, host: server.address.slice(0, i), port: Number(server.address.slice(i + 1)) };
}

/** A GET of `path`: status and body. */
function get(c: Console, path: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  return new Promise((resolve, reject) => {
    request({ host: c.host, port: c.port, path, headers, agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    })
      .on("error", reject)
      .end();
  });
}

describe("GET /admin/config", () => {
  it("redacts the whole user info of a URL whose password holds an @ (redis, tracing and upstream endpoints)", async () => {
    const c = await startConsole(`
redis:
  url: "redis://default:s3cr@t!pw@redis.internal:6379/0"
tracing:
  endpoint: "http://otel:tr@ce!pw@collector.internal:4318/v1/traces"
upstreams:
  - { name: remote, kind: openai, endpoints: ["https://bob:up@str!pw@llm.internal/v1?x=1"] }
models: [{ name: m, upstream: remote }]
`);
    const res = await get(c, "/admin/config");
    expect(res.status).toBe(200);
    for (const part of ["s3cr", "t!pw", "tr@ce", "ce!pw", "up@str", "str!pw", "default:", "otel:", "bob:"]) expect(res.body).not.toContain(part);
    const body = JSON.parse(res.body) as { config: { redis: { url: string }; tracing: { endpoint: string }; upstreams: { endpoints: string[] }[] } };
    expect(body.config.redis.url).toBe("redis://[redacted]@redis.internal:6379/0");
    expect(body.config.tracing.endpoint).toBe("http://[redacted]@collector.internal:4318/v1/traces");
    expect(body.config.upstreams[0]!.endpoints).toEqual(["https://[redacted]@llm.internal/v1?x=1"]);
  });
});

/** A GET of `path` whose answer is left open: its response (headers read) and its request, to end it. */
function open(c: Console, path: string): Promise<{ res: IncomingMessage; req: ClientRequest }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: c.host, port: c.port, path, agent: false }, (res) => resolve({ res, req }));
    req.on("error", reject).end();
  });
}

describe("GET /admin/traffic", () => {
  it(`answers at most ${trafficStreamsMax} streams at once; the next gets 503 with a JSON error and Retry-After, until one closes`, async () => {
    const c = await startConsole();
    const streams = await Promise.all(Array.from({ length: trafficStreamsMax }, () => open(c, "/admin/traffic")));
    for (const s of streams) {
      expect(s.res.statusCode).toBe(200);
      s.res.resume();
    }
    const refused = await open(c, "/admin/traffic");
    streams.push(refused);
    expect(refused.res.statusCode).toBe(503);
    expect(refused.res.headers["content-type"]).toBe("application/json");
    expect(refused.res.headers["retry-after"]).toBe("10");
    let body = "";
    for await (const chunk of refused.res) body += String(chunk);
    expect((JSON.parse(body) as { error: string }).error).toContain(`at most ${trafficStreamsMax}`);
    streams.pop();
    // The rest of the listener still answers.
    expect((await get(c, "/healthz")).status).toBe(200);
    expect(trafficStreamStats(c.sources).open).toBe(trafficStreamsMax);

    streams.pop()!.req.destroy();
    await expect.poll(() => trafficStreamStats(c.sources).open).toBe(trafficStreamsMax - 1);
    const again = await open(c, "/admin/traffic");
    expect(again.res.statusCode).toBe(200);
    for (const s of [...streams, again]) s.req.destroy();
    await expect.poll(() => trafficStreamStats(c.sources).open).toBe(0);
  });

  it("does not buffer without bound for a client that stops reading: it skips ticks while over the bound, then closes the stream", { timeout: 90_000 }, async () => {
    // Big models events (32 names of 16 KB: about 0.5 MB a tick), so that the socket's buffers fill in a few ticks.
    const routes = Array.from({ length: 32 }, (_, i) => fakeRoute(`${i}-${"m".repeat(16_384)}`));
    const c = await startConsole(minimalYaml, routes);
    const tickBytes = JSON.stringify(modelsView(routes, [])).length + 4096;
    // A client that sends its request and never reads the answer.
    const socket = net.connect({ host: c.host, port: c.port });
    socket.pause();
    socket.write(`GET /admin/traffic?intervalMs=250 HTTP/1.1\r\nHost: 127.0.0.1:${c.port}\r\n\r\n`);
    try {
      const stream = () => trafficStreamStats(c.sources).streams[0];
      let maxUnsent = 0;
      const watch = () => {
        const s = stream();
        if (s !== undefined) maxUnsent = Math.max(maxUnsent, s.unsentBytes);
        return s;
      };
      // Until the server skips a tick for this stream (or, without the bound, holds far more unsent).
      await expect
        .poll(() => {
          const s = watch();
          return s !== undefined && (s.skipped > 0 || s.unsentBytes > trafficBufferMaxBytes + 4 * tickBytes);
        }, { timeout: 60_000, interval: 50 })
        .toBe(true);
      expect(maxUnsent).toBeLessThanOrEqual(trafficBufferMaxBytes + tickBytes);
      // Ticks go on without adding to the buffer, until the stream has skipped enough in a row to be
      // closed (console-api.ts's trafficStalledTicksMax), which frees its place.
      await expect
        .poll(() => {
          watch();
          return trafficStreamStats(c.sources).open;
        }, { timeout: 60_000, interval: 50 })
        .toBe(0);
      expect(maxUnsent).toBeLessThanOrEqual(trafficBufferMaxBytes + tickBytes);
      expect(trafficStreamStats(c.sources).streams).toEqual([]);
    } finally {
      socket.destroy();
    }
  });
});

describe("HEAD /admin/traffic", () => {
  it("answers the headers at once, starts no stream, and the connection then answers its next request", async () => {
    const c = await startConsole();
    const socket = net.connect({ host: c.host, port: c.port });
    let received = "";
    socket.setEncoding("utf8");
    socket.on("data", (d: string) => (received += d));
    try {
      // Both requests on one kept-alive connection: the second waits for the first's end.
      socket.write(`HEAD /admin/traffic HTTP/1.1\r\nHost: 127.0.0.1:${c.port}\r\n\r\nGET /healthz HTTP/1.1\r\nHost: 127.0.0.1:${c.port}\r\n\r\n`);
      // /healthz's body ("ok\n", chunked).
      await expect.poll(() => received, { timeout: 10_000 }).toMatch(/\r\nok\n\r\n/);
      const [head, healthz] = received.split(/(?=HTTP\/1\.1 )/);
      expect(head).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
      expect(head).toMatch(/\r\ncontent-type: text\/event-stream\r\n/i);
      expect(head).toMatch(/\r\n\r\n$/);
      expect(healthz).toMatch(/^HTTP\/1\.1 200 OK\r\ncontent-type: text\/plain\r\n/i);
      expect(trafficStreamStats(c.sources)).toEqual({ open: 0, streams: [] });
    } finally {
      socket.destroy();
    }
  });
});

describe("a loopback admin listener without a token", () => {
  it("answers /metrics, /admin/usage and the console's JSON endpoints for a loopback Host only (DNS rebinding); the probes and static files for any", async () => {
    const c = await startConsole(minimalYaml, undefined, { usage: () => async () => ({ callers: {} }) });
    for (const path of ["/metrics", "/admin/usage", "/admin/models", "/admin/config", "/nowhere"]) {
      const res = await get(c, path, { host: "attacker.example:9090" });
      expect([path, res.status, res.body]).toEqual([path, 403, loopbackHostRefusal]);
    }
    for (const path of ["/healthz", "/readyz", "/console/"]) expect([path, (await get(c, path, { host: "attacker.example:9090" })).status]).toEqual([path, 200]);
    for (const host of [`127.0.0.1:${c.port}`, `localhost:${c.port}`, `[::1]:${c.port}`, "127.0.0.1", "LOCALHOST"]) {
      for (const path of ["/metrics", "/admin/usage", "/admin/models"]) expect([host, path, (await get(c, path, { host })).status]).toEqual([host, path, 200]);
    }
    expect((await get(c, "/admin/usage", { host: `127.0.0.1:${c.port}` })).body).toContain('"callers"');
  });
});
