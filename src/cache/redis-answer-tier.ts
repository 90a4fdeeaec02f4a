import type { Logger } from "../observability/logger.js";
import type { RedisConnection } from "../redis/redis-client.js";
import type { RedisStats } from "../redis/redis-stats.js";
import type { StoredAnswer } from "./response-store.js";

/**
 * A second, shared cache tier behind the local store: looked up after a local miss, written
 * through on every store. Failures never fail a call: a lookup that fails is a miss, a write that
 * fails is dropped.
 */
export interface AnswerTier {
  /** The answer under `key` and its remaining TTL, or undefined (absent, unreadable, or Redis failed). */
  get(key: string): Promise<{ answer: StoredAnswer; ttlMs: number } | undefined>;
  /** Stores in the background; never throws. */
  set(key: string, answer: StoredAnswer, ttlMs: number): void;
}

const messageTag = 1;
const streamTag = 2;

/**
 * The value stored in Redis: a tag byte, then the serialized response (Predict, Chat) or each
 * serialized stream event behind a 4-byte big-endian length (Generate) — the same protobuf bytes
 * the local store keeps.
 */
export function encodeAnswer(a: StoredAnswer): Buffer {
  if (a.kind === "message") return Buffer.concat([Buffer.of(messageTag), a.bytes]);
  const parts: Uint8Array[] = [Buffer.of(streamTag)];
  for (const e of a.events) {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(e.length);
    parts.push(len, e);
  }
  return Buffer.concat(parts);
}

/** The inverse of encodeAnswer; undefined for anything it did not write. */
export function decodeAnswer(b: Buffer): StoredAnswer | undefined {
  if (b.length === 0) return undefined;
  if (b[0] === messageTag) return { kind: "message", bytes: new Uint8Array(b.subarray(1)) };
  if (b[0] !== streamTag) return undefined;
  const events: Uint8Array[] = [];
  let at = 1;
  while (at < b.length) {
    if (at + 4 > b.length) return undefined;
    const len = b.readUInt32BE(at);
    at += 4;
    if (at + len > b.length) return undefined;
    events.push(new Uint8Array(b.subarray(at, at + len)));
    at += len;
  }
  return { kind: "stream", events };
}

/** The Redis tier: one key per answer, `<prefix>cache:<key hash>`, expiring with the answer's TTL. */
export function createRedisAnswerTier(redis: RedisConnection, stats: RedisStats, log: Logger): AnswerTier {
  const key = (k: string) => `${redis.prefix}cache:${k}`;
  let failing = false;
  const failed = (err: unknown) => {
    stats.errors.cache++;
    if (!failing) log.warn({ err: err instanceof Error ? err.message : String(err) }, "cache: redis failed; the cache is local only until it answers");
    failing = true;
  };
  return {
    async get(k) {
      try {
        const results = await redis.client.pipeline().getBuffer(key(k)).pttl(key(k)).exec();
        const [getResult, ttlResult] = results ?? [];
        if (getResult?.[0]) throw getResult[0];
        failing = false;
        const value = getResult?.[1] as Buffer | null | undefined;
        const ttlMs = Number(ttlResult?.[1]);
        if (value === null || value === undefined || !(ttlMs > 0)) return undefined;
        const answer = decodeAnswer(value);
        return answer === undefined ? undefined : { answer, ttlMs };
      } catch (err) {
        failed(err);
        return undefined;
      }
    },
    set(k, answer, ttlMs) {
      redis.client.set(key(k), encodeAnswer(answer), "PX", Math.max(1, Math.round(ttlMs))).then(
        () => {
          failing = false;
        },
        failed,
      );
    },
  };
}
