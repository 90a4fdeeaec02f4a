/**
 * OpenAI's Responses API on two gateways sharing one redis-server (issue 23): stored responses
 * live on the session store (src/ingress/responses/response-store.ts), which with `redis:` is
 * Redis, so a response made on one replica is retrieved, continued and deleted on the other, and
 * each key still sees only its own. The client is the official `openai` npm package, as an app
 * behind a load balancer would use it.
 */
import OpenAI, { NotFoundError } from "openai";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hashKey } from "../../src/security/api-keys.js";
import type { App } from "../../src/server/app.js";
import { openaiSdk, rejection } from "../helpers/openai-sdk.js";
import { startRedis, type RedisServer } from "../helpers/redis.js";
import { startInProcess } from "../helpers/servers.js";

const keys = { alpha: "sk-resp-redis-alpha", beta: "sk-resp-redis-beta" };
const TTL_MS = 60_000;

let redis: RedisServer;
let raw: Redis;
const apps: App[] = [];

/** A client of each gateway for `key`: [on A, on B]. */
function clients(key: string): [OpenAI, OpenAI] {
  return [openaiSdk(apps[0]!, { apiKey: key }), openaiSdk(apps[1]!, { apiKey: key })];
}

/** The Redis keys holding stored responses (the session store's lists, src/sessions/redis-session-store.ts). */
const responseKeys = () => raw.keys("resp-test:session:*");

beforeAll(async () => {
  redis = await startRedis();
  raw = new Redis(redis.port, "127.0.0.1");
  raw.on("error", () => {});
  const yaml = `upstreams: [{name: mock, kind: mock}]
models: [{name: mock-chat, upstream: mock}]
auth:
  enabled: true
  keys:
    - {name: alpha, sha256: ${hashKey(keys.alpha)}}
    - {name: beta, sha256: ${hashKey(keys.beta)}}
sessions: {ttlMs: ${TTL_MS}}
redis: {url: "${redis.url}", keyPrefix: "resp-test:"}
`;
  apps.push(...(await Promise.all([startInProcess(yaml), startInProcess(yaml)])));
}, 60_000);

afterAll(async () => {
  await Promise.all(apps.map((a) => a.shutdown()));
  raw?.disconnect();
  await redis?.kill();
});

describe("Responses API on two gateways sharing Redis", () => {
  it("a response made on A is retrieved and continued on B, and B's continuation on A", async () => {
    const [onA, onB] = clients(keys.alpha);
    const first = await onA.responses.create({ model: "mock-chat", input: "one two three" });
    expect(first.output_text).toBe("You said: one two three");
    // B has it, as A answered it.
    expect(await onB.responses.retrieve(first.id)).toEqual(await onA.responses.retrieve(first.id));

    const second = await onB.responses.create({ model: "mock-chat", previous_response_id: first.id, input: "four" });
    expect(second.output_text).toBe("You said: four");
    expect(second.previous_response_id).toBe(first.id);
    // The mock counts the words of every message it is sent: A's turn (question and answer) came along.
    expect(second.usage!.input_tokens).toBe(first.usage!.input_tokens + first.usage!.output_tokens + 1);

    // Back on A, streamed: the history made of A's and B's turns.
    const third = await onA.responses.stream({ model: "mock-chat", previous_response_id: second.id, input: "five" }).finalResponse();
    expect(third.status).toBe("completed");
    expect(third.usage!.input_tokens).toBe(second.usage!.input_tokens + second.usage!.output_tokens + 1);
    expect((await onB.responses.retrieve(third.id)).usage).toEqual(third.usage);
  });

  it("the responses are on Redis under the key's hash (never the key), with the sessions TTL", async () => {
    const [onA] = clients(keys.alpha);
    const r = await onA.responses.create({ model: "mock-chat", input: "where am I kept" });
    const stored = (await responseKeys()).filter((k) => k.endsWith(`:${r.id}`));
    expect(stored).toHaveLength(1);
    expect(stored[0]).toContain(hashKey(keys.alpha));
    expect(stored[0]).not.toContain(keys.alpha);
    const ttl = await raw.pttl(stored[0]!);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(TTL_MS);
  });

  it("another key gets 404 on either gateway", async () => {
    const [alphaA] = clients(keys.alpha);
    const [betaA, betaB] = clients(keys.beta);
    const r = await alphaA.responses.create({ model: "mock-chat", input: "alpha's own" });
    for (const other of [betaA, betaB]) {
      expect(await rejection(other.responses.retrieve(r.id))).toBeInstanceOf(NotFoundError);
      expect(await rejection(other.responses.create({ model: "mock-chat", previous_response_id: r.id, input: "x" }))).toBeInstanceOf(NotFoundError);
      expect(await rejection(other.responses.delete(r.id))).toBeInstanceOf(NotFoundError);
    }
    // Beta's failed delete left it in place.
    expect((await alphaA.responses.retrieve(r.id)).id).toBe(r.id);
  });

  it("deleted on B: 404 on A, for retrieve, continue and delete, and gone from Redis", async () => {
    const [onA, onB] = clients(keys.alpha);
    const r = await onA.responses.create({ model: "mock-chat", input: "delete me elsewhere" });
    expect((await responseKeys()).some((k) => k.endsWith(`:${r.id}`))).toBe(true);
    // (The SDK types delete as void; it returns the body, OpenAI's `{id, object: "response", deleted: true}`.)
    expect(await onB.responses.delete(r.id)).toEqual({ id: r.id, object: "response", deleted: true });
    expect((await responseKeys()).some((k) => k.endsWith(`:${r.id}`))).toBe(false);
    expect(await rejection(onA.responses.retrieve(r.id))).toBeInstanceOf(NotFoundError);
    expect(await rejection(onA.responses.create({ model: "mock-chat", previous_response_id: r.id, input: "x" }))).toBeInstanceOf(NotFoundError);
    expect(await rejection(onA.responses.delete(r.id))).toBeInstanceOf(NotFoundError);
  });
});
