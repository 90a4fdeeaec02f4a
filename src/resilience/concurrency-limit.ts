import { overloaded } from "./failure-policy.js";

/**
 * A concurrency limit without a queue: a call over the limit is refused at once with
 * RESOURCE_EXHAUSTED, reason OVERLOADED (load shedding), so that latency stays bounded and the
 * caller can go elsewhere. `limit` undefined means no limit (only counting).
 */
export class ConcurrencyLimit {
  private current = 0;

  constructor(
    /** Names what is limited in the error message, e.g. `upstream "openai"`. */
    private readonly what: string,
    readonly limit: number | undefined,
  ) {}

  /** Takes a slot, or throws OVERLOADED. Release it exactly once. */
  acquire(): void {
    if (this.limit !== undefined && this.current >= this.limit) {
      throw overloaded(this.what, this.limit);
    }
    this.current++;
  }

  release(): void {
    this.current--;
  }

  /** Slots taken now. */
  get inUse(): number {
    return this.current;
  }
}
