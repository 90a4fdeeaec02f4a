/**
 * The Redis pieces one by one against a real redis-server: the token-bucket script and its
 * failure rules, the session store's bounds and sliding TTL, and, through a running infergate,
 * what reaches the cache tier and when a session turn is recorded.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Redis } from "ioredis";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { MessageSchema, Role } from "../../gen/infergate/v1/chat_pb.js";
import { InferenceService } from "../../gen/infergate/v1/inference_service_pb.js";
import { parseConfig } from "../../src/config/load-config.js";
import { GatewayError } from "../../src/core/gateway-error.js";
import { createRedisConnection, type RedisConnection } from "../../src/redis/redis-client.js";
import { createRedisStats } from "../../src/redis/redis-stats.js";
import type { App } from "../../src/server/app.js";
import { RedisRateLimitStore } from "../../src/security/redis-rate-limit-store.js";
import { RedisSessionStore } from "../../src/sessions/redis-session-store.js";
import { startRedis, type RedisServer } from "../helpers/redis.js";
import { startInProcess } from "../helpers/servers.js";

const silent = pino({ level: "silent" });
let redis: RedisServer;
let raw: Redis;
const connections: RedisConnection[] = [];

function connect(prefix = "unit:", extra = ""): RedisConnection {
  const config = parseConfig(`upstreams: [{name: mock, kind: mock}]
models: [{name: m, upstream: mock}]
redis: {url: "${redis.url}", keyPrefix: "${prefix}", commandTimeoutMs: 500${extra}}
`, "(test)", {}).redis!;
  const c = createRedisConnection(config, silent);
  connections.push(c);
  return c;
}

beforeAll(async () => {
  redis = await startRedis();
  raw = new Redis(redis.port, "127.0.0.1", { lazyConnect: false });
  raw.on("error", () => {});
});
afterAll(async () => {
  await Promise.all(connections.map((c) => c.close()));
  raw.disconnect();
  await redis?.kill();
});

const bytes = (n: number) => new Uint8Array(n).fill(n % 250);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("RedisRateLimitStore", () => {
  it("is one bucket for every store instance (replica), refilled on the server's clock", async () => {
    const stats = createRedisStats();
    const [ca, cb] = [connect(), connect()];
    expect(await ca.ready(2000)).toBe(true);
    expect(await cb.ready(2000)).toBe(true);
    const a = new RedisRateLimitStore(ca, "open", stats, silent);
    const b = new RedisRateLimitStore(cb, "open", stats, silent);
    const spec = { capacity: 6, perMinute: 6 };
    const results = [];
    for (let i = 0; i < 8; i++) results.push(await (i % 2 === 0 ? a : b).take("req:shared", spec, 1));
    expect(results.map((r) => r.ok)).toEqual([true, true, true, true, true, true, false, false]);
    // 6 per minute: one token every 10 s.
    expect(results[6]!.retryAfterMs).toBeGreaterThan(9_000);
    expect(results[6]!.retryAfterMs).toBeLessThanOrEqual(10_000);
    expect(stats.failOpen).toBe(0);
    // A charge may drive it below zero; takes then wait for the debt to be repaid.
    await a.charge("tok:t", { capacity: 600, perMinute: 600 }, 900);
    const t = await b.take("tok:t", { capacity: 600, perMinute: 600 }, 0);
    expect(t.ok).toBe(false);
    expect(t.retryAfterMs).toBeGreaterThan(29_000);
    // The bucket key expires once it would be full again.
    const ttl = await raw.pttl("unit:rl:req:shared");
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(61_000);
  });

  it("never runs a bucket's clock backwards (a failover to a server whose clock is behind)", async () => {
    const c = connect();
    expect(await c.ready(2000)).toBe(true);
    const store = new RedisRateLimitStore(c, "open", createRedisStats(), silent);
    const [sec, usec] = await raw.time();
    const now = Number(sec) * 1000 + Math.floor(Number(usec) / 1000);
    // As a server 2 s ahead left it: empty, refilled up to its own clock.
    await raw.hset("unit:rl:req:skew", { tokens: "0", at: String(now + 2000) });
    const spec = { capacity: 60, perMinute: 60 };
    const first = await store.take("req:skew", spec, 1);
    expect(first.ok).toBe(false);
    // One token a second, counted from the bucket's own time, 2 s ahead of this clock.
    expect(first.retryAfterMs).toBeGreaterThan(2_500);
    await sleep(1_200);
    // 1.2 s on, this clock is still before the bucket's: nothing has been refilled twice.
    expect((await store.take("req:skew", spec, 1)).ok).toBe(false);
  });

  it("fail-open decides on local buckets and counts it; fail-closed refuses with UNAVAILABLE", async () => {
    const dead = await startRedis();
    const config = parseConfig(`upstreams: [{name: mock, kind: mock}]
models: [{name: m, upstream: mock}]
redis: {url: "${dead.url}", commandTimeoutMs: 200, connectTimeoutMs: 200}
`, "(test)", {}).redis!;
    const conn = createRedisConnection(config, silent);
    connections.push(conn);
    expect(await conn.ready(2000)).toBe(true);
    await dead.kill();
    await expect.poll(() => conn.connected(), { timeout: 10_000 }).toBe(false);
    const stats = createRedisStats();
    const open = new RedisRateLimitStore(conn, "open", stats, silent);
    const closed = new RedisRateLimitStore(conn, "closed", stats, silent);
    const spec = { capacity: 2, perMinute: 2 };
    // Fast: nothing waits on a Redis that is down. A timer of the command timeout, set before the
    // takes, has not fired when they end: a take that waited on a command's timeout (set later,
    // as long) would end after it.
    let commandTimeoutPassed = false;
    const commandTimeout = setTimeout(() => (commandTimeoutPassed = true), 200);
    expect((await open.take("req:x", spec, 1)).ok).toBe(true);
    expect((await open.take("req:x", spec, 1)).ok).toBe(true);
    // Local buckets still limit.
    expect((await open.take("req:x", spec, 1)).ok).toBe(false);
    expect(stats.failOpen).toBe(3);
    const err = (await closed.take("req:y", spec, 1).catch((e: unknown) => e)) as GatewayError;
    expect(err).toBeInstanceOf(GatewayError);
    expect(err.code).toBe(Code.Unavailable);
    expect(err.reason).toBe("RATE_LIMITER_UNAVAILABLE");
    expect(stats.failClosed).toBe(1);
    expect(stats.errors.rate_limits).toBe(4);
    clearTimeout(commandTimeout);
    expect(commandTimeoutPassed).toBe(false);
  });
});

describe("the Redis connection", () => {
  it("never logs the URL's password, and an outage is log lines, not a crash", async () => {
    const lines: string[] = [];
    const log = pino({ level: "debug" }, { write: (l: string) => void lines.push(l) });
    const dead = await startRedis();
    await dead.kill();
    const config = parseConfig(`upstreams: [{name: mock, kind: mock}]
models: [{name: m, upstream: mock}]
redis: {url: "redis://admin:s3cret-pw@127.0.0.1:${dead.port}/2", connectTimeoutMs: 100, commandTimeoutMs: 100}
`, "(test)", {}).redis!;
    const conn = createRedisConnection(config, log);
    connections.push(conn);
    expect(await conn.ready(300)).toBe(false);
    const stats = createRedisStats();
    await new RedisRateLimitStore(conn, "open", stats, log).take("req:t", { capacity: 1, perMinute: 1 }, 1);
    await new RedisSessionStore(conn, { ttlMs: 1000, maxMessages: 1, maxBytes: 1 }, stats, log).load("t", "s").catch(() => {});
    await expect.poll(() => lines.length, { timeout: 10_000 }).toBeGreaterThan(0);
    expect(lines.join("\n")).not.toContain("s3cret-pw");
    // Reconnect attempts do not flood the log: one line per outage per piece.
    expect(lines.filter((l) => l.includes("redis unreachable"))).toHaveLength(1);
  });
});

describe("RedisSessionStore", () => {
  it("bounds a session by messages and bytes (oldest first), per tenant, with a sliding TTL", async () => {
    const stats = createRedisStats();
    const conn = connect();
    expect(await conn.ready(2000)).toBe(true);
    const s = new RedisSessionStore(conn, { ttlMs: 600, maxMessages: 4, maxBytes: 20 }, stats, silent);
    await s.append("alpha", "c", [bytes(1), bytes(2), bytes(3)]);
    await s.append("alpha", "c", [bytes(4), bytes(5)]);
    expect((await s.load("alpha", "c")).map((m) => m.length)).toEqual([2, 3, 4, 5]);
    await s.append("alpha", "c", [bytes(9)]);
    // 4 messages at most → [3, 4, 5, 9] = 21 bytes > 20 → [4, 5, 9].
    expect((await s.load("alpha", "c")).map((m) => m.length)).toEqual([4, 5, 9]);
    expect(await s.load("beta", "c")).toEqual([]);
    expect(await s.delete("beta", "c")).toBe(false);
    // The bytes come back exactly.
    expect((await s.load("alpha", "c"))[2]).toEqual(bytes(9));
    // Sliding: each use renews the 600 ms.
    for (let i = 0; i < 3; i++) {
      await sleep(350);
      expect(await s.load("alpha", "c")).toHaveLength(3);
    }
    // Unused for its 600 ms, it is gone. Polled on the key itself (a load would renew it); a
    // loaded machine may take longer to show it.
    await expect.poll(() => raw.exists("unit:session:5:alpha:c"), { timeout: 10_000, interval: 100 }).toBe(0);
    expect(await s.load("alpha", "c")).toEqual([]);
    expect(await s.delete("alpha", "c")).toBe(false);
    await s.append("alpha", "d", [bytes(1)]);
    expect(await s.delete("alpha", "d")).toBe(true);
    expect(await raw.exists("unit:session:5:alpha:d")).toBe(0);
  });
});

describe("through infergate with Redis", () => {
  let app: App;
  let client: Client<typeof InferenceService>;
  beforeAll(async () => {
    app = await startInProcess(`upstreams: [{name: mock, kind: mock}]
models: [{name: mock-chat, upstream: mock}]
cache: {maxEntryBytes: 400}
sessions: {ttlMs: 1000}
redis: {url: "${redis.url}", keyPrefix: "app:"}
`);
    client = createClient(InferenceService, createGrpcTransport({ baseUrl: `http://${app.grpcAddress}` }));
  });
  afterAll(async () => {
    await app.shutdown();
  });

  const text = (t: string) => ({ role: Role.USER, content: [{ part: { case: "text" as const, value: t } }] });
  const cacheKeys = async () => (await raw.keys("app:cache:*")).length;
  const history = async (id: string) => (await raw.lrangeBuffer(`app:session:0::${id}`, 0, -1)).length;

  it("writes answers through to Redis, but not errors, cut streams, or answers over maxEntryBytes", async () => {
    const before = await cacheKeys();
    await client.chat({ model: "mock-chat", messages: [text("short")], temperature: 0 });
    // The write-through follows the answer: wait for it to be there, not for a time.
    await expect.poll(cacheKeys, { timeout: 10_000 }).toBe(before + 1);
    const failed = await client.chat({ model: "mock-chat", messages: [text("fails")], temperature: 0, metadata: { "mock.fail_code": "UNAVAILABLE" } }).catch((e: unknown) => e);
    expect(ConnectError.from(failed).code).toBe(Code.Unavailable);
    const cut = (async () => {
      for await (const _ of client.generate({ model: "mock-chat", messages: [text("a b c d e f")], temperature: 0, metadata: { "mock.cut_after_tokens": "2" } }));
    })();
    await expect(cut).rejects.toThrow();
    await client.chat({ model: "mock-chat", messages: [text("long ".repeat(200))], temperature: 0 });
    // Not "nothing yet" after a sleep: one more answer that is stored, then exactly it. Its write
    // goes on the same connection after any the calls above made, so once it is there theirs
    // would be too.
    await client.chat({ model: "mock-chat", messages: [text("marker")], temperature: 0 });
    await expect.poll(cacheKeys, { timeout: 10_000 }).toBeGreaterThanOrEqual(before + 2);
    expect(await cacheKeys()).toBe(before + 2);
  });

  it("records a session turn only when the call succeeded: not on errors, cut streams or cancels", async () => {
    await client.chat({ model: "mock-chat", sessionId: "s", messages: [text("hello")] });
    expect(await history("s")).toBe(2);
    await expect(client.chat({ model: "mock-chat", sessionId: "s", messages: [text("x")], metadata: { "mock.fail_code": "INTERNAL" } })).rejects.toThrow();
    expect(await history("s")).toBe(2);
    const cut = (async () => {
      for await (const _ of client.generate({ model: "mock-chat", sessionId: "s", messages: [text("a b c d")], metadata: { "mock.cut_after_tokens": "2" } }));
    })();
    await expect(cut).rejects.toThrow();
    expect(await history("s")).toBe(2);
    const controller = new AbortController();
    const cancelled = (async () => {
      for await (const _ of client.generate(
        { model: "mock-chat", sessionId: "s", messages: [text("a b c d")], metadata: { "mock.token_delay_ms": "50" } },
        { signal: controller.signal },
      )) controller.abort();
    })();
    await expect(cancelled).rejects.toThrow();
    // Not "nothing yet" after a sleep: the gateway is done with the cancelled call, which left
    // the history as it was (the stream below, recorded, then makes it 4, not 6).
    await expect.poll(() => app.gateway.inFlight(), { timeout: 10_000 }).toBe(0);
    expect(await history("s")).toBe(2);
    // A Generate that reaches its final event records the assembled answer.
    const events = [];
    for await (const e of client.generate({ model: "mock-chat", sessionId: "s", messages: [text("stream this")] })) events.push(e);
    expect(events.at(-1)?.event.case).toBe("final");
    const stored = await raw.lrangeBuffer("app:session:0::s", 0, -1);
    expect(stored).toHaveLength(4);
    expect(Buffer.from(stored[3]!)).toEqual(
      Buffer.from(toBinary(MessageSchema, create(MessageSchema, { role: Role.ASSISTANT, content: [{ part: { case: "text", value: "You said: stream this" } }] }))),
    );
    // The whole conversation went to the model: 1 + 3 + 2 + 4 words before this turn's 1.
    const res = await client.chat({ model: "mock-chat", sessionId: "s", messages: [text("count")] });
    expect(res.usage?.promptTokens).toBe(1 + 3 + 2 + 4 + 1);
  });

  it("with onFailure: closed and Redis down, a limited call is refused with UNAVAILABLE; without a limit it is served", async () => {
    const dead = await startRedis();
    await dead.kill();
    const closed = await startInProcess(`upstreams: [{name: mock, kind: mock}]
models: [{name: mock-chat, upstream: mock}]
limits: {default: {requestsPerMinute: 100}}
redis: {url: "${dead.url}", connectTimeoutMs: 100, rateLimits: {onFailure: closed}}
`);
    try {
      const c = createClient(InferenceService, createGrpcTransport({ baseUrl: `http://${closed.grpcAddress}` }));
      const err = ConnectError.from(await c.chat({ model: "mock-chat", messages: [text("hi")] }).catch((e: unknown) => e));
      expect(err.code).toBe(Code.Unavailable);
      expect(err.findDetails(ErrorInfoSchema)[0]?.reason).toBe("RATE_LIMITER_UNAVAILABLE");
    } finally {
      await closed.shutdown();
    }
  });

  it("forgets a session ttlMs after its last call", async () => {
    // Redis's own expiry times, not a sleep shorter than the TTL: the second call renews it.
    const expiry = () => raw.pexpiretime("app:session:0::ttl");
    await client.chat({ model: "mock-chat", sessionId: "ttl", messages: [text("one")] });
    const first = await expiry();
    await sleep(50);
    expect((await client.chat({ model: "mock-chat", sessionId: "ttl", messages: [text("two")] })).usage?.promptTokens).toBe(5);
    const renewed = await expiry();
    expect(renewed).toBeGreaterThanOrEqual(first + 50);
    expect(await raw.pttl("app:session:0::ttl")).toBeLessThanOrEqual(1_000);
    // Then, unused, it goes: polled on the key (a call would renew it).
    await expect.poll(() => raw.exists("app:session:0::ttl"), { timeout: 10_000, interval: 100 }).toBe(0);
    expect((await client.chat({ model: "mock-chat", sessionId: "ttl", messages: [text("three")] })).usage?.promptTokens).toBe(1);
    const err = ConnectError.from(await client.deleteSession({ sessionId: "never" }).catch((e: unknown) => e));
    expect(err.code).toBe(Code.NotFound);
    expect(err.findDetails(ErrorInfoSchema)[0]?.reason).toBe("SESSION_NOT_FOUND");
  });
});
