import { echoed } from "../core/gateway-error.js";
import type { CallRecord } from "../observability/call-record.js";
import { codeName } from "../observability/metrics.js";

/** How many finished calls the ring keeps (GET /admin/calls, docs/console.md). */
export const recentCallsMax = 1000;

/**
 * One finished call as GET /admin/calls shows it: the call record's fields (no prompt,
 * completion or secret; src/observability/call-record.ts), with the time it was recorded.
 */
export interface RecentCall {
  /** When the call was recorded (ISO 8601), just after it ended. */
  readonly time: string;
  /** Milliseconds since the epoch of `time`, for the error ratios over a window. */
  readonly at: number;
  readonly requestId: string;
  /** The key's or certificate's configured name; "" without auth. */
  readonly caller: string;
  readonly rpc: string;
  /** The model asked for, cut as errors cut a caller's value. */
  readonly model: string;
  /** The gRPC status code's name: OK, UNAVAILABLE, … */
  readonly status: string;
  readonly reason: string | undefined;
  readonly latencyMs: number;
  readonly ttftMs: number | undefined;
  readonly promptTokens: number;
  readonly completionTokens: number;
  /** hit | miss | coalesced | bypass, when the cache was consulted. */
  readonly cache: string | undefined;
  /** `<model>/<upstream>` that answered (a fallback's when one did), when one was reached. */
  readonly servedBy: string | undefined;
  readonly upstream: string | undefined;
  readonly endpoint: string | undefined;
  readonly attempts: number;
  readonly cost: number | undefined;
  readonly currency: string;
  readonly traceId: string | undefined;
}

/** The filters of GET /admin/calls; each one unset matches every call. */
export interface CallFilter {
  readonly model?: string | undefined;
  /** `ok`, `error`, or a gRPC code name (UNAVAILABLE). */
  readonly status?: string | undefined;
  readonly caller?: string | undefined;
  /** At most this many, newest first. */
  readonly limit?: number | undefined;
}

/** The last finished calls, newest last, in a fixed-size ring fed by the call recorder. */
export interface CallRing {
  /** Adds one finished call (the call recorder's `onRecord`). */
  add(record: CallRecord): void;
  /** The calls that pass `filter`, newest first. */
  list(filter?: CallFilter): RecentCall[];
  /** The calls recorded at or after `since` (ms since the epoch), oldest first. */
  since(since: number): RecentCall[];
}

const round = (ms: number) => Math.round(ms * 100) / 100;

/** A ring of the last `size` calls; `now` is a seam for tests. */
export function createCallRing(size: number = recentCallsMax, now: () => number = Date.now): CallRing {
  const ring: RecentCall[] = [];
  let next = 0;
  const ordered = () => (ring.length < size ? ring : [...ring.slice(next), ...ring.slice(0, next)]);
  return {
    add(r) {
      const at = now();
      const call: RecentCall = {
        time: new Date(at).toISOString(),
        at,
        requestId: r.requestId,
        caller: r.tenant,
        rpc: r.rpc,
        model: echoed(r.model),
        status: codeName(r.code),
        reason: r.reason,
        latencyMs: round(r.latencyMs),
        ttftMs: r.ttftMs === undefined ? undefined : round(r.ttftMs),
        promptTokens: r.promptTokens,
        completionTokens: r.completionTokens,
        cache: r.cache,
        servedBy: r.upstream === undefined ? undefined : `${r.pricedModel ?? r.model}/${r.upstream}`,
        upstream: r.upstream,
        endpoint: r.endpoint,
        attempts: r.attempts,
        cost: r.cost,
        currency: r.currency,
        traceId: r.traceId,
      };
      if (ring.length < size) ring.push(call);
      else ring[next] = call;
      next = (next + 1) % size;
    },
    list(filter = {}) {
      const out: RecentCall[] = [];
      const limit = filter.limit ?? size;
      const all = ordered();
      for (let i = all.length - 1; i >= 0 && out.length < limit; i--) {
        const c = all[i]!;
        if (filter.model !== undefined && c.model !== filter.model) continue;
        if (filter.caller !== undefined && c.caller !== filter.caller) continue;
        if (filter.status !== undefined && !statusMatches(c.status, filter.status)) continue;
        out.push(c);
      }
      return out;
    },
    since(since) {
      return ordered().filter((c) => c.at >= since);
    },
  };
}

function statusMatches(status: string, wanted: string): boolean {
  if (wanted === "ok") return status === "OK";
  if (wanted === "error") return status !== "OK";
  return status === wanted;
}
