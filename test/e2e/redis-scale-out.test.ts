/**
 * Two infergate processes sharing one redis-server (issue: scale-out on Redis): one rate limit
 * across both, a cache hit on one for an answer cached through the other, a session that moves
 * between them; then Redis killed mid-run (calls go on, fail-open counted) and back (sharing
 * resumes).
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { Role } from "../../gen/infergate/v1/chat_pb.js";
import { type GenerateResponse, InferenceService } from "../../gen/infergate/v1/inference_service_pb.js";
import { hashKey } from "../../src/security/api-keys.js";
import { startRedis, type RedisServer } from "../helpers/redis.js";
import { startProcess, type ServerProcess } from "../helpers/servers.js";

let redis: RedisServer;
const procs: ServerProcess[] = [];
const clients: Client<typeof InferenceService>[] = [];

const keys = { limited: "sk-limited", alpha: "sk-alpha", beta: "sk-beta" };

beforeAll(async () => {
  redis = await startRedis();
  const dir = mkdtempSync(join(tmpdir(), "infergate-redis-"));
  const file = join(dir, "infergate.yaml");
  writeFileSync(
    file,
    `upstreams: [{name: mock, kind: mock}]
models: [{name: mock-chat, upstream: mock}]
auth:
  enabled: true
  keys:
    - {name: limited, sha256: ${hashKey(keys.limited)}, limits: {requestsPerMinute: 60}}
    - {name: alpha, sha256: ${hashKey(keys.alpha)}, limits: {requestsPerMinute: 100000}}
    - {name: beta, sha256: ${hashKey(keys.beta)}}
redis:
  url: \${TEST_REDIS_URL}
  keyPrefix: "test:"
  connectTimeoutMs: 2000
`,
  );
  const env = { TEST_REDIS_URL: redis.url };
  procs.push(...(await Promise.all([startProcess(["--config", file], { env }), startProcess(["--config", file], { env })])));
  for (const p of procs) clients.push(createClient(InferenceService, createGrpcTransport({ baseUrl: `http://${p.grpcAddress}` })));
  for (const p of procs) await until("the connection to Redis", async () => metric(await metrics(p), "infergate_redis_connected") === 1);
}, 60_000);

afterAll(async () => {
  await Promise.all(procs.map((p) => p.stop()));
  await redis?.kill();
});

const text = (t: string) => ({ role: Role.USER, content: [{ part: { case: "text" as const, value: t } }] });
const auth = (key: string) => ({ authorization: `Bearer ${key}` });

async function metrics(p: ServerProcess): Promise<string> {
  return (await fetch(`http://${p.adminAddress}/metrics`)).text();
}

function metric(body: string, name: string): number {
  const line = body.split("\n").find((l) => l.startsWith(`${name} `));
  return line === undefined ? Number.NaN : Number(line.slice(name.length + 1));
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** How many Generate streams the shared cache tier holds: values tagged 2 under the cache prefix (src/cache/redis-answer-tier.ts). */
async function storedStreams(): Promise<number> {
  const raw = new Redis(redis.port, "127.0.0.1", { lazyConnect: true });
  raw.on("error", () => {});
  try {
    await raw.connect();
    const values = await Promise.all((await raw.keys("test:cache:*")).map((k) => raw.getBuffer(k)));
    return values.filter((v) => v?.[0] === 2).length;
  } finally {
    raw.disconnect();
  }
}

async function chat(i: number, key: string, t: string, extra: object = {}): Promise<{ cache: string | null; res: Awaited<ReturnType<Client<typeof InferenceService>["chat"]>> }> {
  let cache: string | null = null;
  const res = await clients[i]!.chat(
    { model: "mock-chat", messages: [text(t)], temperature: 0, ...extra },
    { headers: auth(key), onHeader: (h) => (cache = h.get("infergate-cache")) },
  );
  return { cache, res };
}

describe("two replicas sharing one Redis", () => {
  it("hold one limit of 60 requests per minute between them (± one refill)", async () => {
    const started = Date.now();
    const outcomes: (string | undefined)[] = [];
    const perReplica = [0, 0];
    for (let i = 0; i < 100; i++) {
      try {
        await clients[i % 2]!.chat({ model: "mock-chat", messages: [text(`call ${i}`)] }, { headers: auth(keys.limited) });
        outcomes.push("ok");
        perReplica[i % 2]!++;
      } catch (e) {
        const err = ConnectError.from(e);
        expect(err.code).toBe(Code.ResourceExhausted);
        outcomes.push(err.findDetails(ErrorInfoSchema)[0]?.reason);
      }
    }
    const elapsedS = (Date.now() - started) / 1000;
    const ok = outcomes.filter((o) => o === "ok").length;
    // 60 in the bucket, plus at most what refilled (1 per second) while the calls ran. Load cannot
    // break this bound: it is measured around the calls, so a slower run only widens it.
    expect(ok).toBeGreaterThanOrEqual(60);
    expect(ok).toBeLessThanOrEqual(60 + Math.ceil(elapsedS));
    expect(outcomes.filter((o) => o !== "ok").every((o) => o === "RATE_LIMITED")).toBe(true);
    // Both replicas admitted calls: the limit is shared, not per process (each alone would admit 60).
    expect(perReplica[0]).toBeGreaterThanOrEqual(30);
    expect(perReplica[1]).toBeGreaterThanOrEqual(29);
  });

  it("a Chat answer cached through one is a hit on the other", async () => {
    const first = await chat(0, keys.alpha, "cache me across replicas");
    expect(first.cache).toBe("miss");
    expect(first.res.cached).toBe(false);
    await until("the write-through", async () => (await chat(1, keys.alpha, "cache me across replicas")).cache === "hit");
    const second = await chat(1, keys.alpha, "cache me across replicas");
    expect(second.cache).toBe("hit");
    expect(second.res.cached).toBe(true);
    expect(second.res.message).toEqual(first.res.message);
    expect(second.res.usage).toEqual(first.res.usage);
    expect(metric(await metrics(procs[1]!), "infergate_cache_redis_hits_total")).toBeGreaterThanOrEqual(1);
    // Another tenant's call is another key (the tenant is in the key): not a hit.
    expect((await chat(1, keys.beta, "cache me across replicas")).cache).toBe("miss");
  });

  it("a Generate stream cached through one is replayed by the other", async () => {
    const req = { model: "mock-chat", messages: [text("stream me across replicas please")], temperature: 0 };
    const collect = async (i: number) => {
      let cache: string | null = null;
      const events: GenerateResponse[] = [];
      for await (const e of clients[i]!.generate(req, { headers: auth(keys.alpha), onHeader: (h) => (cache = h.get("infergate-cache")) })) events.push(e);
      return { cache, events };
    };
    const before = await storedStreams();
    const first = await collect(0);
    expect(first.cache).toBe("miss");
    // The write-through to Redis follows the answer: wait for it to be there, not for a time.
    await expect.poll(storedStreams, { timeout: 10_000 }).toBe(before + 1);
    const second = await collect(1);
    expect(second.cache).toBe("hit");
    expect(second.events.map((e) => e.event.case)).toEqual(first.events.map((e) => e.event.case));
    expect(second.events.slice(0, -1)).toEqual(first.events.slice(0, -1));
    const last = second.events.at(-1)!.event;
    expect(last.case === "final" && last.value.cached).toBe(true);
  });

  it("a session started on one continues on the other, and DeleteSession on either ends it", async () => {
    const headers = auth(keys.alpha);
    const one = await clients[0]!.chat({ model: "mock-chat", sessionId: "conv-1", messages: [text("first")] }, { headers });
    expect(one.message?.content[0]?.part.value).toBe("You said: first");
    // The mock counts the words of every message it is sent: the history came along.
    const two = await clients[1]!.chat({ model: "mock-chat", sessionId: "conv-1", messages: [text("second")] }, { headers });
    expect(two.message?.content[0]?.part.value).toBe("You said: second");
    expect(two.usage?.promptTokens).toBe(1 + 3 + 1);
    const three = await clients[0]!.chat({ model: "mock-chat", sessionId: "conv-1", messages: [text("third")] }, { headers });
    expect(three.usage?.promptTokens).toBe(1 + 3 + 1 + 3 + 1);
    // Another tenant can neither delete it nor see it: the same id is a session of its own.
    const beta = ConnectError.from(await clients[1]!.deleteSession({ sessionId: "conv-1" }, { headers: auth(keys.beta) }).catch((e: unknown) => e));
    expect(beta.code).toBe(Code.NotFound);
    expect(beta.findDetails(ErrorInfoSchema)[0]?.reason).toBe("SESSION_NOT_FOUND");
    const other = await clients[1]!.chat({ model: "mock-chat", sessionId: "conv-1", messages: [text("third")] }, { headers: auth(keys.beta) });
    expect(other.usage?.promptTokens).toBe(1);
    await clients[1]!.deleteSession({ sessionId: "conv-1" }, { headers });
    const fresh = await clients[0]!.chat({ model: "mock-chat", sessionId: "conv-1", messages: [text("again")] }, { headers });
    expect(fresh.usage?.promptTokens).toBe(1);
  });

  it("Redis killed: calls go on (fail-open, counted); Redis back: sharing resumes", async () => {
    const failOpenBefore = metric(await metrics(procs[0]!), "infergate_rate_limit_fail_open_total");
    await redis.kill();
    for (let i = 0; i < 10; i++) {
      const { res, cache } = await chat(i % 2, keys.alpha, `during the outage ${i}`);
      expect(res.message?.content[0]?.part.value).toBe(`You said: during the outage ${i}`);
      expect(cache).toBe("miss");
    }
    // A session call cannot go on without its history: UNAVAILABLE, retryable.
    const err = ConnectError.from(
      await clients[0]!.chat({ model: "mock-chat", sessionId: "conv-2", messages: [text("hi")] }, { headers: auth(keys.alpha) }).catch((e: unknown) => e),
    );
    expect(err.code).toBe(Code.Unavailable);
    expect(err.findDetails(ErrorInfoSchema)[0]?.reason).toBe("SESSION_STORE_UNAVAILABLE");
    for (const p of procs) {
      const body = await metrics(p);
      expect(metric(body, "infergate_redis_connected")).toBe(0);
      expect(body).toMatch(/infergate_redis_errors_total\{component="rate_limits"\} [1-9]/);
    }
    expect(await metrics(procs[0]!)).toMatch(/infergate_redis_errors_total\{component="sessions"\} [1-9]/);
    expect(metric(await metrics(procs[0]!), "infergate_rate_limit_fail_open_total")).toBeGreaterThanOrEqual(failOpenBefore + 5);
    expect(procs.every((p) => p.proc.exitCode === null)).toBe(true);

    await redis.restart();
    for (const p of procs) await until("reconnection", async () => metric(await metrics(p), "infergate_redis_connected") === 1);
    const failOpenAfter = metric(await metrics(procs[0]!), "infergate_rate_limit_fail_open_total");
    expect((await chat(0, keys.alpha, "after the outage")).cache).toBe("miss");
    await until("the write-through", async () => (await chat(1, keys.alpha, "after the outage")).cache === "hit");
    // Shared again: no more local decisions.
    expect(metric(await metrics(procs[0]!), "infergate_rate_limit_fail_open_total")).toBe(failOpenAfter);
    const s1 = await clients[0]!.chat({ model: "mock-chat", sessionId: "conv-3", messages: [text("one")] }, { headers: auth(keys.alpha) });
    expect(s1.usage?.promptTokens).toBe(1);
    const s2 = await clients[1]!.chat({ model: "mock-chat", sessionId: "conv-3", messages: [text("two")] }, { headers: auth(keys.alpha) });
    expect(s2.usage?.promptTokens).toBe(5);
    // The outage was logged, and neither process crashed on the client's error events.
    expect(procs.every((p) => p.proc.exitCode === null)).toBe(true);
    expect(procs[0]!.lines.some((l) => l.includes("redis unreachable"))).toBe(true);
  });
});
