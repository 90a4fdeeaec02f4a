/**
 * Envoy's retry budget: retries in flight may be at most `percent` of the calls in flight, and
 * `minConcurrency` are always allowed, so that retries cannot multiply an outage's load. A retry
 * holds its slot until its call ends, and a call's second retry needs a second slot: a call that
 * keeps failing cannot reuse a slot that another call's first retry is waiting for.
 */
export class RetryBudget {
  private active = 0;
  private retries = 0;

  constructor(
    private readonly percent: number,
    private readonly minConcurrency: number,
  ) {}

  /** A call starts. */
  enter(): void {
    this.active++;
  }

  /** A call ends, giving back the retry slots it held. */
  leave(heldRetries: number): void {
    this.active--;
    this.retries -= heldRetries;
  }

  /** Takes a slot for one retry, or refuses when the budget is spent. */
  tryRetry(): boolean {
    const allowed = Math.max(this.minConcurrency, Math.floor((this.active * this.percent) / 100));
    if (this.retries >= allowed) {
      return false;
    }
    this.retries++;
    return true;
  }

  /** Calls and retry slots in flight (for tests). */
  get usage(): { active: number; retries: number } {
    return { active: this.active, retries: this.retries };
  }
}
