/**
 * Budgets on Redis (issue 20): two gateways (two apps in this process, each with its own Redis
 * connection, as two replicas) share one budget through a redis-server of the test's own; Redis
 * down → each follows budgets.onRedisFailure.
 */
import { Writable } from "node:stream";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { Role } from "../../gen/infergate/v1/chat_pb.js";
import { InferenceService } from "../../gen/infergate/v1/inference_service_pb.js";
import { hashKey } from "../../src/security/api-keys.js";
import type { App } from "../../src/server/app.js";
import { startRedis, type RedisServer } from "../helpers/redis.js";
import { startInProcess } from "../helpers/servers.js";

let redis: RedisServer;
let open: App;
let closed: App;
const openLines: { msg: string }[] = [];
const clients: Client<typeof InferenceService>[] = [];

const config = (onRedisFailure: string) => `upstreams: [{name: mock, kind: mock}]
models: [{name: mock-chat, upstream: mock, cache: {policy: "off"}}]
auth:
  enabled: true
  keys:
    - {name: shared, sha256: ${hashKey("sk-shared")}}
    - {name: later, sha256: ${hashKey("sk-later")}}
budgets:
  onRedisFailure: ${onRedisFailure}
  keys:
    shared: {day: {tokens: 100}}
    later: {day: {tokens: 10}}
redis:
  url: ${redis.url}
  keyPrefix: "budgets-test:"
  connectTimeoutMs: 2000
`;

beforeAll(async () => {
  redis = await startRedis();
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split("\n").filter(Boolean)) openLines.push(JSON.parse(line) as { msg: string });
      done();
    },
  });
  open = await startInProcess(config("open"), pino({ level: "info" }, sink));
  closed = await startInProcess(config("closed"));
  for (const a of [open, closed]) clients.push(createClient(InferenceService, createGrpcTransport({ baseUrl: `http://${a.grpcAddress}` })));
});
afterAll(async () => {
  await Promise.all([open?.shutdown(), closed?.shutdown()]);
  await redis?.kill();
});

const request = { model: "mock-chat", messages: [{ role: Role.USER, content: [{ part: { case: "text" as const, value: "one two three" } }] }] };
const auth = (k: string) => ({ authorization: `Bearer sk-${k}` });

async function dayTokens(a: App, key: string): Promise<number> {
  const res = await fetch(`http://${a.adminAddress}/admin/usage?period=day`);
  const body = (await res.json()) as { periods: { day: { current: { keys: Record<string, { tokens: number }> } } } };
  return body.periods.day.current.keys[key]!.tokens;
}

async function metric(a: App, name: string): Promise<number> {
  const text = await (await fetch(`http://${a.adminAddress}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line === undefined ? Number.NaN : Number(line.slice(name.length + 1));
}

describe("budgets shared on Redis", () => {
  it("two gateways calling at once never spend past the limit by more than one call each", async () => {
    // Each gateway's client calls one at a time until refused; 8 tokens a call, 100 a day.
    const served = [0, 0];
    await Promise.all(
      clients.map(async (c, i) => {
        for (;;) {
          const r = await c.chat(request, { headers: auth("shared") }).then(
            () => undefined,
            (e: unknown) => ConnectError.from(e),
          );
          if (r !== undefined) {
            expect(r.code).toBe(Code.ResourceExhausted);
            expect(r.findDetails(ErrorInfoSchema)[0]?.reason).toBe("BUDGET_EXCEEDED");
            return;
          }
          served[i]!++;
        }
      }),
    );
    const calls = served[0]! + served[1]!;
    // Both replicas served: the budget was shared, not per process (100 / 8 = 12.5 calls each alone).
    expect(served[0]).toBeGreaterThan(0);
    expect(served[1]).toBeGreaterThan(0);
    await expect.poll(() => dayTokens(open, "shared")).toBe(calls * 8);
    expect(await dayTokens(closed, "shared")).toBe(calls * 8);
    // Past 100 (the call that crossed it was served), by at most one call per gateway.
    expect(calls * 8).toBeGreaterThanOrEqual(100);
    expect(calls * 8).toBeLessThan(100 + 2 * 8);
    // Both refuse now.
    for (const c of clients) expect(ConnectError.from(await c.chat(request, { headers: auth("shared") }).catch((e: unknown) => e)).code).toBe(Code.ResourceExhausted);
    // The window's key carries an expiry (a period after its end).
    const ttl = await import("ioredis").then(async ({ Redis }) => {
      const raw = new Redis(redis.port, "127.0.0.1");
      try {
        const [key] = await raw.keys("budgets-test:budget:{key:shared}:day:*");
        return raw.pttl(key!);
      } finally {
        raw.disconnect();
      }
    });
    expect(ttl).toBeGreaterThan(24 * 3_600_000);
    expect(ttl).toBeLessThanOrEqual(48 * 3_600_000 + 60_000);
  });

  it("Redis down: onRedisFailure open admits (logged once, counted), closed refuses with BUDGET_STORE_UNAVAILABLE", async () => {
    await redis.kill();
    // `shared` has spent its budget on Redis: the open gateway cannot know and admits it.
    await expect.poll(() => clients[0]!.chat(request, { headers: auth("shared") }).then(() => "served", () => "refused")).toBe("served");
    await clients[0]!.chat(request, { headers: auth("shared") });
    expect(await metric(open, "infergate_budget_fail_open_total")).toBeGreaterThanOrEqual(2);
    expect(await metric(open, 'infergate_redis_errors_total{component="budgets"}')).toBeGreaterThan(0);
    expect(openLines.filter((l) => l.msg.startsWith("budgets: redis failed")).map((l) => l.msg)).toEqual(["budgets: redis failed; admitting calls unchecked, charges are lost"]);

    const err = ConnectError.from(await clients[1]!.chat(request, { headers: auth("later") }).catch((e: unknown) => e));
    expect(err.code).toBe(Code.Unavailable);
    expect(err.findDetails(ErrorInfoSchema)[0]?.reason).toBe("BUDGET_STORE_UNAVAILABLE");
    expect(err.rawMessage).toBe("the budget store is unavailable; retry shortly");
    expect(await metric(closed, "infergate_budget_fail_closed_total")).toBeGreaterThanOrEqual(1);
    // The usage query says it cannot read the store.
    expect((await fetch(`http://${closed.adminAddress}/admin/usage`)).status).toBe(503);

    // Redis back (empty): the closed gateway serves again once reconnected.
    await redis.restart();
    await expect.poll(() => clients[1]!.chat(request, { headers: auth("later") }).then(() => "served", () => "refused"), { timeout: 15_000 }).toBe("served");
  });
});
