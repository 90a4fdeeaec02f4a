import type { Registry } from "prom-client";

/**
 * One point of GET /admin/traffic: what happened since the point before, read from infergate's
 * own metrics (src/observability/metrics.ts), so that the console charts traffic without a
 * Prometheus. Rates are per second over `intervalS`; percentiles are interpolated within the
 * histogram buckets as PromQL's histogram_quantile does, null when no call ended in the interval.
 */
export interface TrafficPoint {
  /** Milliseconds since the epoch. */
  readonly t: number;
  readonly intervalS: number;
  readonly callsPerS: number;
  /** Failed calls over calls, 0 to 1; null without calls. */
  readonly errorRatio: number | null;
  /** Failed calls per second by ErrorInfo reason (OTHER: without one). */
  readonly errorsPerSByReason: Record<string, number>;
  /** Call latency percentiles in milliseconds (whole stream for Generate). */
  readonly latencyMs: Percentiles;
  /** Generate: time to the first event, percentiles in milliseconds. */
  readonly ttftMs: Percentiles;
  /** Cache hits over hits and misses, 0 to 1; null when the cache was not asked. */
  readonly cacheHitRatio: number | null;
  /** Tokens (prompt and completion) per second by model. */
  readonly tokensPerSByModel: Record<string, number>;
  /** Cost in the configured currency per minute by model (priced models only). */
  readonly costPerMinByModel: Record<string, number>;
  /** Calls and streams in flight now. */
  readonly inFlight: number;
}

export interface Percentiles {
  readonly p50: number | null;
  readonly p95: number | null;
  readonly p99: number | null;
}

/** The cumulative counters one point is the difference of. */
interface Totals {
  readonly t: number;
  readonly calls: number;
  readonly errorsByReason: Map<string, number>;
  /** Upper bound (seconds) → cumulative count, summed over every series. */
  readonly latency: Map<number, number>;
  readonly ttft: Map<number, number>;
  readonly cacheHits: number;
  readonly cacheMisses: number;
  readonly tokensByModel: Map<string, number>;
  readonly costByModel: Map<string, number>;
  readonly inFlight: number;
}

type Sample = { value: number; labels: Record<string, string | number>; metricName?: string };

async function samples(registry: Registry, name: string): Promise<Sample[]> {
  const metric = registry.getSingleMetric(name);
  if (metric === undefined) return [];
  return ((await metric.get()).values ?? []) as Sample[];
}

const sum = (values: Sample[]) => values.reduce((a, s) => a + s.value, 0);

function sumBy(values: Sample[], label: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const s of values) {
    const k = String(s.labels[label] ?? "");
    out.set(k, (out.get(k) ?? 0) + s.value);
  }
  return out;
}

function buckets(values: Sample[]): Map<number, number> {
  const out = new Map<number, number>();
  for (const s of values) {
    if (s.metricName?.endsWith("_bucket") !== true) continue;
    const le = s.labels["le"] === "+Inf" ? Infinity : Number(s.labels["le"]);
    out.set(le, (out.get(le) ?? 0) + s.value);
  }
  return out;
}

async function readTotals(registry: Registry, now: number): Promise<Totals> {
  const [calls, errors, latency, ttft, hits, misses, tokens, cost, inFlight] = await Promise.all(
    [
      "infergate_requests_total",
      "infergate_errors_total",
      "infergate_request_duration_seconds",
      "infergate_time_to_first_token_seconds",
      "infergate_cache_hits_total",
      "infergate_cache_misses_total",
      "infergate_tokens_total",
      "infergate_cost_total",
      "infergate_in_flight_calls",
    ].map((n) => samples(registry, n)),
  );
  return {
    t: now,
    calls: sum(calls!),
    errorsByReason: sumBy(errors!, "reason"),
    latency: buckets(latency!),
    ttft: buckets(ttft!),
    cacheHits: sum(hits!),
    cacheMisses: sum(misses!),
    tokensByModel: sumBy(tokens!, "model"),
    costByModel: sumBy(cost!, "model"),
    inFlight: sum(inFlight!),
  };
}

/** `after - before` per key, only the keys that grew. */
function grown(after: Map<string, number>, before: Map<string, number>, scale: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of after) {
    const d = v - (before.get(k) ?? 0);
    if (d > 0) out[k === "" ? "(none)" : k] = d * scale;
  }
  return out;
}

/**
 * The q-quantile (0..1) of the observations between two cumulative bucket counts, in
 * milliseconds, interpolated linearly inside the bucket it falls in (histogram_quantile's way);
 * the highest finite bound when it falls in +Inf; null without observations.
 */
export function quantileMs(after: Map<number, number>, before: Map<number, number>, q: number): number | null {
  const bounds = [...after.keys()].sort((a, b) => a - b);
  const counts = bounds.map((le) => (after.get(le) ?? 0) - (before.get(le) ?? 0));
  const total = counts[counts.length - 1] ?? 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (let i = 0; i < bounds.length; i++) {
    const le = bounds[i]!;
    const c = counts[i]!;
    if (c >= rank) {
      if (le === Infinity) return lower * 1000;
      const inBucket = c - below;
      const at = inBucket <= 0 ? le : lower + ((le - lower) * (rank - below)) / inBucket;
      return Math.round(at * 1000 * 100) / 100;
    }
    lower = le;
    below = c;
  }
  return lower * 1000;
}

function percentiles(after: Map<number, number>, before: Map<number, number>): Percentiles {
  return { p50: quantileMs(after, before, 0.5), p95: quantileMs(after, before, 0.95), p99: quantileMs(after, before, 0.99) };
}

/**
 * A source of traffic points: each `next()` reads the metrics and answers the difference from
 * the reading before (the first reading is the baseline and answers nothing).
 */
export function createTrafficSampler(registry: Registry, now: () => number = Date.now): { next(): Promise<TrafficPoint | undefined> } {
  let before: Totals | undefined;
  return {
    async next() {
      const after = await readTotals(registry, now());
      const prev = before;
      before = after;
      if (prev === undefined) return undefined;
      const intervalS = Math.max(0.001, (after.t - prev.t) / 1000);
      const calls = after.calls - prev.calls;
      const errorsByReason = grown(after.errorsByReason, prev.errorsByReason, 1);
      const errors = Object.values(errorsByReason).reduce((a, b) => a + b, 0);
      const hits = after.cacheHits - prev.cacheHits;
      const asked = hits + after.cacheMisses - prev.cacheMisses;
      return {
        t: after.t,
        intervalS,
        callsPerS: calls / intervalS,
        errorRatio: calls > 0 ? Math.min(1, errors / calls) : null,
        errorsPerSByReason: grown(after.errorsByReason, prev.errorsByReason, 1 / intervalS),
        latencyMs: percentiles(after.latency, prev.latency),
        ttftMs: percentiles(after.ttft, prev.ttft),
        cacheHitRatio: asked > 0 ? hits / asked : null,
        tokensPerSByModel: grown(after.tokensByModel, prev.tokensByModel, 1 / intervalS),
        costPerMinByModel: grown(after.costByModel, prev.costByModel, 60 / intervalS),
        inFlight: after.inFlight,
      };
    },
  };
}
