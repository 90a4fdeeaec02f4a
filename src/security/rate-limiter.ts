/** The outcome of taking from a bucket. */
export interface TakeResult {
  readonly ok: boolean;
  /** When refused: how long until the bucket holds enough, in ms (exact, for RetryInfo). */
  readonly retryAfterMs: number;
}

/** A token bucket's shape: `capacity` tokens, refilled continuously at `capacity` per minute. */
export interface BucketSpec {
  readonly capacity: number;
  readonly perMinute: number;
}

/**
 * Where token buckets live. In memory by default; the Redis store (scale-out) implements the same
 * interface so that replicas share one budget.
 */
export interface RateLimitStore {
  /**
   * Takes `cost` from the bucket `key` if it holds that much (after refill); otherwise takes
   * nothing and says how long until it would.
   */
  take(key: string, spec: BucketSpec, cost: number): Promise<TakeResult> | TakeResult;
  /**
   * Charges `cost` after the fact (tokens used by a finished call); the bucket may go negative,
   * which refuses later takes until it has refilled.
   */
  charge(key: string, spec: BucketSpec, cost: number): Promise<void> | void;
}

interface Bucket {
  tokens: number;
  at: number;
}

/** Token buckets in this process's memory, with an injectable clock. */
export class MemoryRateLimitStore implements RateLimitStore {
  private readonly buckets = new Map<string, Bucket>();

  constructor(private readonly now: () => number = () => performance.timeOrigin + performance.now()) {}

  private refill(key: string, spec: BucketSpec): Bucket {
    const now = this.now();
    let b = this.buckets.get(key);
    if (b === undefined) {
      b = { tokens: spec.capacity, at: now };
      this.buckets.set(key, b);
      return b;
    }
    const rate = spec.perMinute / 60_000;
    b.tokens = Math.min(spec.capacity, b.tokens + (now - b.at) * rate);
    b.at = now;
    return b;
  }

  take(key: string, spec: BucketSpec, cost: number): TakeResult {
    const b = this.refill(key, spec);
    if (b.tokens >= cost) {
      b.tokens -= cost;
      return { ok: true, retryAfterMs: 0 };
    }
    const rate = spec.perMinute / 60_000;
    return { ok: false, retryAfterMs: Math.ceil((cost - b.tokens) / rate) };
  }

  charge(key: string, spec: BucketSpec, cost: number): void {
    const b = this.refill(key, spec);
    b.tokens -= cost;
  }
}
