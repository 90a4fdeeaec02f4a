/**
 * The admin listener's console endpoints (docs/console.md) against clients that misbehave or
 * configurations that hide secrets in odd places: an admin listener of its own on a loopback port
 * (src/server/admin-server.ts) with console sources this file controls, over real HTTP.
 */
import { request } from "node:http";
import { Registry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config/load-config.js";
import type { ModelRoute } from "../../src/core/model-route.js";
import { type AdminServer, startAdminServer } from "../../src/server/admin-server.js";
import type { ConsoleSources } from "../../src/server/console-api.js";
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

/** An admin listener on 127.0.0.1 without a token, with the console reading `yaml` and `routes`. */
async function startConsole(yaml = minimalYaml, routes: ModelRoute[] = [fakeRoute("mock-chat")]): Promise<Console> {
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
  const server = await startAdminServer("127.0.0.1:0", { registry, ready: () => true, console: sources }, config.server.connections);
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
