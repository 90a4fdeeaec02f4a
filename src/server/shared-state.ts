import type { AnswerTier } from "../cache/redis-answer-tier.js";
import { createRedisAnswerTier } from "../cache/redis-answer-tier.js";
import type { Config } from "../config/schema.js";
import type { Logger } from "../observability/logger.js";
import { createRedisConnection, redactedUrl } from "../redis/redis-client.js";
import { createRedisStats, type RedisStats } from "../redis/redis-stats.js";
import { MemoryBudgetStore, type BudgetStore } from "../security/budget-store.js";
import { MemoryRateLimitStore, type RateLimitStore } from "../security/rate-limiter.js";
import { RedisBudgetStore } from "../security/redis-budget-store.js";
import { RedisRateLimitStore } from "../security/redis-rate-limit-store.js";
import { MemorySessionStore } from "../sessions/memory-session-store.js";
import { RedisSessionStore } from "../sessions/redis-session-store.js";
import { Sessions } from "../sessions/sessions.js";

/**
 * What replicas may share (README.md, "Scale-out on Redis"): rate-limit buckets, the second cache tier and
 * conversation sessions. Each piece is in memory unless the `redis:` section turns it to Redis.
 */
export interface SharedState {
  readonly rateLimits: RateLimitStore;
  /** The Redis cache tier; undefined: the cache is local only. */
  readonly cacheTier: AnswerTier | undefined;
  readonly sessions: Sessions;
  /** Where budgets count (config `budgets`): on Redis whenever the `redis:` section is present. */
  readonly budgets: BudgetStore;
  /** Counters of the Redis pieces, for the metrics; undefined without Redis. */
  readonly redisStats: RedisStats | undefined;
  /** Closes the Redis connection, if any. */
  close(): Promise<void>;
}

/**
 * Builds the shared pieces from config. With Redis, waits up to `redis.connectTimeoutMs` for the
 * first connection, but starts either way: Redis may come up later, and until then each piece
 * follows its failure rule.
 */
export async function createSharedState(config: Config, log: Logger): Promise<SharedState> {
  const memorySessions = () =>
    new MemorySessionStore({
      ttlMs: config.sessions.ttlMs,
      maxMessages: config.sessions.maxMessages,
      maxBytes: config.sessions.maxBytes,
      maxSessions: config.sessions.maxSessions,
    });
  const r = config.redis;
  if (r === undefined) {
    return {
      rateLimits: new MemoryRateLimitStore(),
      cacheTier: undefined,
      sessions: new Sessions(memorySessions()),
      budgets: new MemoryBudgetStore(),
      redisStats: undefined,
      close: async () => {},
    };
  }
  const redis = createRedisConnection(r, log);
  const stats = createRedisStats(() => redis.connected());
  const connected = await redis.ready(r.connectTimeoutMs);
  const where = r.clusterNodes.length > 0 ? r.clusterNodes.map(redactedUrl).join(",") : redactedUrl(r.url);
  log.info(
    {
      redis: where,
      connected,
      rateLimits: r.rateLimits.enabled ? `shared (on failure: ${r.rateLimits.onFailure})` : "local",
      cache: r.cache.enabled ? "local + redis" : "local",
      sessions: r.sessions.enabled ? "redis" : "local",
      ...(config.budgets === undefined ? {} : { budgets: `redis (on failure: ${config.budgets.onRedisFailure})` }),
    },
    "redis",
  );
  return {
    rateLimits: r.rateLimits.enabled ? new RedisRateLimitStore(redis, r.rateLimits.onFailure, stats, log) : new MemoryRateLimitStore(),
    cacheTier: r.cache.enabled ? createRedisAnswerTier(redis, stats, log) : undefined,
    sessions: new Sessions(r.sessions.enabled ? new RedisSessionStore(redis, config.sessions, stats, log) : memorySessions()),
    budgets: new RedisBudgetStore(redis, config.budgets?.onRedisFailure ?? "open", stats, log),
    redisStats: stats,
    close: () => redis.close(),
  };
}
