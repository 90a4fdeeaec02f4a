import { Code } from "@connectrpc/connect";
import { GatewayError, Reason } from "../core/gateway-error.js";
import type { Logger } from "../observability/logger.js";
import type { RedisConnection } from "../redis/redis-client.js";
import type { RedisStats } from "../redis/redis-stats.js";
import { type BucketSpec, MemoryRateLimitStore, type RateLimitStore, type TakeResult } from "./rate-limiter.js";

/** What to do with a call when Redis cannot be asked (config `redis.rateLimits.onFailure`). */
export type OnRedisFailure = "open" | "closed";

/**
 * Token buckets on Redis, shared by every replica: one Lua script per check (redis-scripts.ts),
 * atomic and on the Redis server's clock, so N replicas together admit exactly the configured
 * rate. When a command fails (Redis down, slow past `commandTimeoutMs`), `open` decides on this
 * process's own buckets — each replica then admits up to the full rate by itself — and `closed`
 * refuses the call (UNAVAILABLE, RATE_LIMITER_UNAVAILABLE). Either way it is counted and logged
 * (once per outage).
 */
export class RedisRateLimitStore implements RateLimitStore {
  private readonly local: MemoryRateLimitStore;
  private failing = false;

  constructor(
    private readonly redis: RedisConnection,
    private readonly onFailure: OnRedisFailure,
    private readonly stats: RedisStats,
    private readonly log: Logger,
    local: MemoryRateLimitStore = new MemoryRateLimitStore(),
  ) {
    this.local = local;
  }

  private key(key: string): string {
    // A hash tag would put every bucket on one cluster node; each bucket is its own key instead.
    return `${this.redis.prefix}rl:${key}`;
  }

  private failed(err: unknown): void {
    this.stats.errors.rate_limits++;
    if (!this.failing) {
      this.failing = true;
      this.log.warn(
        { err: err instanceof Error ? err.message : String(err), onFailure: this.onFailure },
        this.onFailure === "open" ? "rate limits: redis failed; admitting on this process's own buckets" : "rate limits: redis failed; refusing calls",
      );
    }
  }

  private recovered(): void {
    if (this.failing) {
      this.failing = false;
      this.log.info("rate limits: redis answers again; buckets are shared again");
    }
  }

  private refused(err: unknown): GatewayError {
    this.stats.failClosed++;
    return new GatewayError(Code.Unavailable, "the rate limiter is unavailable; retry shortly", {
      reason: Reason.RateLimiterUnavailable,
      retryAfterMs: 1000,
      cause: err,
    });
  }

  async take(key: string, spec: BucketSpec, cost: number): Promise<TakeResult> {
    try {
      const [ok, retryAfterMs] = await this.redis.client.igRateLimit(this.key(key), spec.capacity, spec.perMinute, cost, "take");
      this.recovered();
      return { ok: ok === 1, retryAfterMs: Number(retryAfterMs) };
    } catch (err) {
      this.failed(err);
      if (this.onFailure === "closed") throw this.refused(err);
      this.stats.failOpen++;
      return this.local.take(key, spec, cost);
    }
  }

  async charge(key: string, spec: BucketSpec, cost: number): Promise<void> {
    try {
      await this.redis.client.igRateLimit(this.key(key), spec.capacity, spec.perMinute, cost, "charge");
      this.recovered();
    } catch (err) {
      // A charge comes after the call: nothing to refuse. The local bucket takes it in both modes,
      // so fail-open decisions still see this process's own usage.
      this.failed(err);
      this.local.charge(key, spec, cost);
    }
  }
}
