/** The Redis-backed pieces, as named in the `component` label of the failure counter. */
export type RedisComponent = "rate_limits" | "cache" | "sessions" | "budgets";

/**
 * What the shared (Redis) pieces count, in one place for the metrics exporter, the same way the
 * cache keeps its CacheStats: plain counters read at scrape time.
 */
export interface RedisStats {
  /** Redis commands that failed (unreachable, timed out, refused), by component. */
  errors: Record<RedisComponent, number>;
  /** Admission decisions taken on this process's own buckets because Redis failed (fail-open). */
  failOpen: number;
  /** Admission refusals because Redis failed and `onFailure` is `closed`. */
  failClosed: number;
  /** Budget checks that admitted a call without its budget because Redis failed (budgets.onRedisFailure: open). */
  budgetFailOpen: number;
  /** Calls refused because Redis failed and budgets.onRedisFailure is `closed`. */
  budgetFailClosed: number;
  /** Answers found in the Redis cache tier after a local miss. */
  cacheHits: number;
  /** Whether the client is connected now. */
  connected: () => boolean;
}

export function createRedisStats(connected: () => boolean = () => false): RedisStats {
  return { errors: { rate_limits: 0, cache: 0, sessions: 0, budgets: 0 }, failOpen: 0, failClosed: 0, budgetFailOpen: 0, budgetFailClosed: 0, cacheHits: 0, connected };
}
