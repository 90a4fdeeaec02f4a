import CircuitBreaker from "opossum";
import type { ResilienceConfig } from "../config/schema.js";

/** The state of one endpoint's breaker, as ListModels shows it. */
export type BreakerState = "closed" | "open" | "halfOpen";

/**
 * How an attempt ended, as the breaker should see it:
 * - `success`: the endpoint answered, even if the answer was a client fault (400, 404, 429);
 * - `failure`: an upstream fault (see countsAsFailure);
 * - `abandoned`: the caller went away first (cancel, its deadline, shutdown): nothing learnt.
 */
export type AttemptOutcome = "success" | "failure" | "abandoned";

/** An admitted attempt; settle it exactly once. */
export interface BreakerLease {
  /** Whether this attempt is the half-open probe. */
  readonly probe: boolean;
  settle(outcome: AttemptOutcome): void;
}

/** What opossum's action rejects with: errorFilter reads whether it counts. */
class Settled extends Error {
  constructor(readonly counted: boolean) {
    super("attempt failed");
  }
}

type Breaker = CircuitBreaker<[() => Promise<void>], void>;

const noopLease: BreakerLease = { probe: false, settle: () => {} };

/**
 * One endpoint's circuit breaker: opossum (rolling window, error percentage, volume threshold,
 * half-open after a reset timeout with exactly one probe), driven by leases instead of wrapping
 * the call, so that a unary answer and a stream (settled at its first event) go through the same
 * breaker.
 *
 * Opossum's own timeout and AbortController are not used (`timeout: false`): each attempt is bounded
 * by its call's deadline signal, and a shared controller would abort every call at one timeout.
 * When the breaker closes again, its window starts empty (as resilience4j does): the failures that
 * opened it say nothing about the recovered endpoint. Opossum keeps its window across the close,
 * so a fresh opossum breaker replaces the old one then.
 *
 * Besides opossum's window, `consecutiveFailures` counted failures in a row open the breaker
 * (default: the volume threshold), however long they took: attempts against a silent upstream
 * each last a timeout, and too few of them fit in the window to reach its volume threshold.
 */
export class EndpointBreaker {
  private breaker: Breaker | undefined;
  private openedAt = 0;
  /** Counted failures since the last success (abandoned attempts change nothing). */
  private failuresInARow = 0;
  private readonly tripAfter: number;

  constructor(
    private readonly name: string,
    private readonly config: ResilienceConfig["breaker"],
    private readonly now: () => number = Date.now,
  ) {
    this.tripAfter = config.consecutiveFailures ?? Math.max(1, config.volumeThreshold);
    this.breaker = config.enabled ? this.fresh() : undefined;
  }

  private fresh(): Breaker {
    const b: Breaker = new CircuitBreaker((start: () => Promise<void>) => start(), {
      name: this.name,
      timeout: false,
      resetTimeout: this.config.resetTimeoutMs,
      errorThresholdPercentage: this.config.errorThresholdPercent,
      volumeThreshold: this.config.volumeThreshold,
      rollingCountTimeout: this.config.windowMs,
      rollingCountBuckets: 10,
      rollingPercentilesEnabled: false,
      enableSnapshots: false,
      errorFilter: (err: unknown) => !(err instanceof Settled && err.counted),
    });
    b.on("open", () => {
      this.openedAt = this.now();
      this.failuresInARow = 0;
    });
    b.on("close", () => {
      if (this.breaker === b) {
        this.breaker = this.fresh();
        b.shutdown();
      }
    });
    return b;
  }

  /** The current state. */
  state(): BreakerState {
    const b = this.breaker;
    if (b === undefined || b.closed) return "closed";
    return b.halfOpen ? "halfOpen" : "open";
  }

  /** Whether an attempt would be admitted now (closed, or half-open with its probe not taken). */
  admits(): boolean {
    const b = this.breaker;
    return b === undefined || b.closed || (b.halfOpen && b.pendingClose);
  }

  /**
   * Starts an attempt: a lease, or undefined when the breaker is open or its half-open probe is
   * already out. Synchronous, so two callers can never both take the probe.
   */
  admit(): BreakerLease | undefined {
    const b = this.breaker;
    if (b === undefined) {
      return noopLease;
    }
    if (!this.admits()) {
      return undefined;
    }
    const probe = b.halfOpen;
    let settle: { resolve: () => void; reject: (e: Settled) => void } | undefined;
    // opossum runs the action synchronously inside fire() when it admits the call.
    b.fire(() => new Promise<void>((resolve, reject) => (settle = { resolve, reject }))).catch(() => {});
    const s = settle;
    if (s === undefined) {
      return undefined;
    }
    let done = false;
    return {
      probe,
      settle: (outcome) => {
        if (done) return;
        done = true;
        if (outcome === "success") {
          this.failuresInARow = 0;
          s.resolve();
        } else {
          // A probe whose caller went away proved nothing: the breaker stays open for another
          // reset timeout rather than closing on no evidence.
          s.reject(new Settled(outcome === "failure" || probe));
          if (outcome === "failure") this.failedAgain(b);
        }
      },
    };
  }

  /**
   * A failure from before this breaker was made (src/resilience/resilient-upstream.ts makes a
   * model's breakers at its first model-level failure): it begins the run of failures in a row,
   * and stays out of the window, which never saw the successes before it either.
   */
  failedBefore(): void {
    if (this.breaker !== undefined) this.failedAgain(this.breaker);
  }

  /** One more counted failure in a row: opens a closed breaker at `tripAfter`. */
  private failedAgain(b: Breaker): void {
    this.failuresInARow++;
    if (this.failuresInARow >= this.tripAfter && this.breaker === b && b.closed) {
      // Opossum reads the rejection a moment later; with the breaker open it changes nothing.
      b.open();
    }
  }

  /**
   * When to come back (RetryInfo of CIRCUIT_OPEN): the time until the half-open probe, or, with the
   * probe already out, one reset timeout (what it costs if the probe fails).
   */
  retryAfterMs(): number {
    const b = this.breaker;
    if (b === undefined || b.closed) return 0;
    if (b.halfOpen) return this.config.resetTimeoutMs;
    return Math.max(0, this.openedAt + this.config.resetTimeoutMs - this.now());
  }

  /** Counts of the current window (for tests and diagnostics). */
  stats(): { fires: number; failures: number; successes: number } {
    const s = this.breaker?.stats;
    return { fires: s?.fires ?? 0, failures: s?.failures ?? 0, successes: s?.successes ?? 0 };
  }

  /** Stops the breaker's timers. */
  shutdown(): void {
    this.breaker?.shutdown();
    this.breaker = undefined;
  }
}
