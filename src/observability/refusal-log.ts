import type { CallRecord } from "./call-record.js";

/**
 * The reasons of calls refused at the door, before any work: no or an unknown key, a model the
 * key may not use, a rate limit, a budget spent, a concurrency limit, the shared rate-limit or budget store down, a request
 * that is not a message of its method (MALFORMED_REQUEST: refused before the key is read). A caller
 * can make these as fast as it can send (issue 17: 104,000 rate-limited calls in 40 s from one
 * tenant, a line each), so their log lines are sampled; they are still counted in the metrics.
 * The names are those of Reason in src/core/gateway-error.ts. A request refused from its bytes
 * (CallRecord.undecoded: over server.requestLimits, INVALID_ARGUMENT) is sampled whatever its reason.
 */
export const refusalReasons: ReadonlySet<string> = new Set([
  "UNAUTHENTICATED",
  "MODEL_NOT_ALLOWED",
  "RATE_LIMITED",
  "OVERLOADED",
  "RATE_LIMITER_UNAVAILABLE",
  "BUDGET_EXCEEDED",
  "BUDGET_STORE_UNAVAILABLE",
  "MALFORMED_REQUEST",
]);

/** Refused calls of one caller and reason whose lines were left out in one interval. */
export interface RefusalSummary {
  /** The caller's name ("" when none is known: no key, an unknown key, auth off). */
  readonly tenant: string;
  /** The gRPC status code of the refusals. */
  readonly code: number;
  readonly reason: string;
  /** How many refused calls were not logged one by one. */
  readonly suppressed: number;
  readonly intervalMs: number;
}

/** Decides which finished calls get their log line (see createRefusalLog). */
export interface RefusalLog {
  /** Whether `record`'s line is written: always, but for refusals past the first of their caller and reason in an interval. */
  shouldLog(record: CallRecord): boolean;
  /** Writes the summaries still owed and forgets every interval (at shutdown). */
  flush(): void;
}

interface Window {
  readonly tenant: string;
  readonly code: number;
  readonly reason: string;
  suppressed: number;
  timer: NodeJS.Timeout;
}

/**
 * At most one log line per caller (tenant) and refusal reason per `intervalMs`: the first refusal
 * is logged as any call is and opens an interval; the refusals of that caller and reason within
 * it are only counted, and when it ends, one `summarize` says how many were left out and opens the
 * next interval (none was left out: the next refusal is logged again). A flood thus writes its
 * first call's line, then one summary per interval. `intervalMs` 0 logs every refusal. The keys are
 * the configured caller names (and "") times the reasons above, so a caller cannot grow the map.
 */
export function createRefusalLog(intervalMs: number, summarize: (s: RefusalSummary) => void): RefusalLog {
  const windows = new Map<string, Window>();

  const close = (key: string) => {
    const w = windows.get(key);
    if (w === undefined) return;
    if (w.suppressed === 0) {
      windows.delete(key);
      return;
    }
    const suppressed = w.suppressed;
    w.suppressed = 0;
    w.timer = setTimeout(close, intervalMs, key).unref();
    summarize({ tenant: w.tenant, code: w.code, reason: w.reason, suppressed, intervalMs });
  };

  return {
    shouldLog(r) {
      if (intervalMs <= 0 || r.reason === undefined || !(r.undecoded === true || refusalReasons.has(r.reason))) return true;
      const key = `${r.reason}\n${r.tenant}`;
      const w = windows.get(key);
      if (w !== undefined) {
        w.suppressed++;
        return false;
      }
      windows.set(key, { tenant: r.tenant, code: r.code, reason: r.reason, suppressed: 0, timer: setTimeout(close, intervalMs, key).unref() });
      return true;
    },
    flush() {
      for (const w of windows.values()) {
        clearTimeout(w.timer);
        if (w.suppressed > 0) summarize({ tenant: w.tenant, code: w.code, reason: w.reason, suppressed: w.suppressed, intervalMs });
      }
      windows.clear();
    },
  };
}
