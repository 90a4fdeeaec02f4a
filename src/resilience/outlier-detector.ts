import type { ResilienceConfig } from "../config/schema.js";

interface EndpointRecord {
  consecutiveFailures: number;
  timesEjected: number;
  /** Epoch ms until which the endpoint is out of rotation; 0 when it is in. */
  ejectedUntil: number;
  /** When the last ejection ended (or 0): the multiplier decays while the endpoint stays in. */
  lastEjectionEnd: number;
}

/**
 * Outlier ejection as Envoy's consecutive-5xx detection: an endpoint whose last N attempts were
 * upstream failures leaves the rotation for `baseEjectionMs × times ejected` (at most
 * `maxEjectionMs`), then comes back by itself. The multiplier goes down by one for every
 * `baseEjectionMs` the endpoint then stays in. At most `maxEjectionPercent` of the endpoints are
 * out at once — at least one when there are two or more, none when there is only one (a lone
 * endpoint is guarded by its breaker; ejecting it would only hide it).
 */
export class OutlierDetector {
  private readonly records: EndpointRecord[];

  constructor(
    count: number,
    private readonly config: ResilienceConfig["outlierDetection"],
    private readonly now: () => number = Date.now,
  ) {
    this.records = Array.from({ length: count }, () => ({ consecutiveFailures: 0, timesEjected: 0, ejectedUntil: 0, lastEjectionEnd: 0 }));
  }

  /** Whether endpoint `i` is out of rotation now. */
  isEjected(i: number): boolean {
    const r = this.records[i];
    if (r === undefined || r.ejectedUntil === 0) return false;
    if (this.now() < r.ejectedUntil) return true;
    r.lastEjectionEnd = r.ejectedUntil;
    r.ejectedUntil = 0;
    // Back in rotation with a clean slate; the multiplier remembers.
    r.consecutiveFailures = 0;
    return false;
  }

  /** How many endpoints are out now. */
  ejectedCount(): number {
    let n = 0;
    for (let i = 0; i < this.records.length; i++) {
      if (this.isEjected(i)) n++;
    }
    return n;
  }

  /** How many endpoints may be out at once. */
  maxEjected(): number {
    const n = this.records.length;
    if (n < 2) return 0;
    return Math.max(1, Math.floor((n * this.config.maxEjectionPercent) / 100));
  }

  /** Endpoint `i` answered (or failed in a way that is not its fault). */
  success(i: number): void {
    const r = this.records[i];
    if (r !== undefined) r.consecutiveFailures = 0;
  }

  /** Endpoint `i` failed; ejects it once the failures in a row reach the threshold. */
  failure(i: number): void {
    const r = this.records[i];
    if (r === undefined || this.isEjected(i)) return;
    r.consecutiveFailures++;
    if (r.consecutiveFailures < this.config.consecutiveFailures || this.ejectedCount() >= this.maxEjected()) {
      return;
    }
    const now = this.now();
    if (r.lastEjectionEnd > 0) {
      const decay = Math.floor((now - r.lastEjectionEnd) / this.config.baseEjectionMs);
      r.timesEjected = Math.max(0, r.timesEjected - decay);
    }
    r.timesEjected++;
    r.ejectedUntil = now + Math.min(this.config.maxEjectionMs, this.config.baseEjectionMs * r.timesEjected);
    r.consecutiveFailures = 0;
  }
}
