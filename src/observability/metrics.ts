import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { CacheStats } from "../cache/cache-stats.js";
import { Reason } from "../core/gateway-error.js";
import type { ModelRoute } from "../core/model-route.js";
import { BreakerState } from "../../gen/infergate/v1/inference_service_pb.js";
import type { RedisComponent, RedisStats } from "../redis/redis-stats.js";
import type { CallRecord } from "./call-record.js";
import type { ExportStats } from "./tracing-export.js";

const codeNames = [
  "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
  "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
];

/** What the metrics read from the running gateway at scrape time. */
export interface MetricsSources {
  /** Names of the configured models: the only values the `model` label takes. */
  models: readonly string[];
  inFlight: () => number;
  cache: CacheStats | undefined;
  /** The shared (Redis) pieces; undefined without a `redis:` section. */
  redis?: RedisStats | undefined;
  /** The routes of the running configuration, whose endpoints' breakers `infergate_breaker_state` reads. */
  routes?: () => readonly ModelRoute[];
  /** Tracing's export losses (src/observability/tracing-export.ts); undefined when tracing is off (the counters stay 0). */
  tracing?: ExportStats | undefined;
}

/** The stable reasons (src/core/gateway-error.ts): the values the `reason` label takes, besides OTHER. */
const reasons: ReadonlySet<string> = new Set(Object.values(Reason));

/** `infergate_breaker_state`'s value of each state: higher is worse, so `max` over series is the worst. */
const breakerValue: Partial<Record<BreakerState, number>> = {
  [BreakerState.CLOSED]: 0,
  [BreakerState.HALF_OPEN]: 1,
  [BreakerState.OPEN]: 2,
};

/** The Prometheus registry and the call observer that feeds it. */
export interface Metrics {
  readonly registry: Registry;
  observe(record: CallRecord): void;
  /** Replaces the model names the `model` label takes (a configuration reload changed them). */
  setModels(models: readonly string[]): void;
  /** Counts one configuration reload (SIGHUP): applied, or rejected with the old one kept. */
  reloaded(result: "ok" | "rejected"): void;
  /** Reports a listener's client connections: open now, and refused by its caps so far. */
  countConnections(listener: "api" | "admin", counts: { readonly open: number; readonly refused: number }): void;
}

/**
 * infergate's metrics (prom-client). Label values are bounded by construction: `model` is a
 * configured model name or "other" (a caller cannot grow the label set by sending junk names),
 * `code` a gRPC code name, `rpc` one of five, `component` one of four, `reason` one of
 * src/core/gateway-error.ts's reasons or OTHER, `upstream` and `endpoint` configured ones. Keys, prompts, session ids and Redis URLs never
 * become labels; tenants only on the cost counter, as `caller`: the key's configured name, a set the config bounds.
 */
export function createMetrics(sources: MetricsSources): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "infergate_process_" });
  let known = new Set(sources.models);
  const model = (m: string) => (known.has(m) ? m : m === "" ? "" : "other");

  const requests = new Counter({
    name: "infergate_requests_total",
    help: "Calls by RPC, model and gRPC status code.",
    labelNames: ["rpc", "model", "code"] as const,
    registers: [registry],
  });
  const latency = new Histogram({
    name: "infergate_request_duration_seconds",
    help: "Call latency by RPC and model (whole stream for Generate).",
    labelNames: ["rpc", "model"] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
    registers: [registry],
  });
  const ttft = new Histogram({
    name: "infergate_time_to_first_token_seconds",
    help: "Generate: time to the first event, by model.",
    labelNames: ["model"] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  // The kinds are disjoint, so that a sum over kinds is the direction's total (the sums of
  // `direction` alone are what they were before the kind label).
  const tokens = new Counter({
    name: "infergate_tokens_total",
    help:
      "Tokens by model, direction (prompt = in, completion = out) and kind; the kinds are disjoint, so a direction's " +
      'total is the sum of its kinds: direction="prompt" is kind="prompt" (neither read from nor written to the ' +
      'provider\'s prompt cache), kind="cached" (read from it) and kind="cache_creation" (written to it); ' +
      'direction="completion" is kind="completion" (not reasoning) and kind="reasoning".',
    labelNames: ["model", "direction", "kind"] as const,
    registers: [registry],
  });
  const countToken = (m: string, direction: string, kind: string, n: number) => {
    if (n > 0) tokens.inc({ model: m, direction, kind }, n);
  };
  /**
   * A call's tokens, split into the disjoint kinds. The parts are cut to the total they are part
   * of (an upstream kind that let a part exceed it would otherwise make a kind negative, which a
   * counter refuses), so a direction's sum is always its total.
   */
  const countTokens = (m: string, r: CallRecord) => {
    const cached = Math.min(r.cachedPromptTokens, r.promptTokens);
    const creation = Math.min(r.cacheCreationTokens, r.promptTokens - cached);
    countToken(m, "prompt", "prompt", r.promptTokens - cached - creation);
    countToken(m, "prompt", "cached", cached);
    countToken(m, "prompt", "cache_creation", creation);
    const reasoning = Math.min(r.reasoningTokens, r.completionTokens);
    countToken(m, "completion", "completion", r.completionTokens - reasoning);
    countToken(m, "completion", "reasoning", reasoning);
  };
  const errors = new Counter({
    name: "infergate_errors_total",
    help: "Failed calls (any code but OK) by RPC, model and ErrorInfo reason (OTHER: a call that failed without one of infergate's reasons).",
    labelNames: ["rpc", "model", "reason"] as const,
    registers: [registry],
  });
  // `caller` is the key's configured name (auth.keys[].name, a certificate's name; "" without
  // auth): a set the config bounds, so the one label of a tenant (docs/production.md, "Metrics").
  const cost = new Counter({
    name: "infergate_cost_total",
    help:
      "What the calls cost, in the configured currency, by the model whose price they were at (the one that answered: " +
      "a fallback when one did), caller (the API key's or certificate's configured name) and currency. Unpriced models are not counted.",
    labelNames: ["model", "caller", "currency"] as const,
    registers: [registry],
  });
  const rateLimited = new Counter({
    name: "infergate_rate_limited_total",
    help: "Calls refused by a rate limit.",
    labelNames: ["rpc"] as const,
    registers: [registry],
  });
  const malformed = new Counter({
    name: "infergate_malformed_requests_total",
    help: "Calls refused because their request was not a message of the method (reason MALFORMED_REQUEST), by RPC.",
    labelNames: ["rpc"] as const,
    registers: [registry],
  });
  const reloads = new Counter({
    name: "infergate_config_reloads_total",
    help: "Configuration reloads (SIGHUP) by result: ok (applied) or rejected (the old configuration stays).",
    labelNames: ["result"] as const,
    registers: [registry],
  });
  // Both results show from the start, at 0, so that a rate over them needs no absent-series care.
  reloads.inc({ result: "ok" }, 0);
  reloads.inc({ result: "rejected" }, 0);
  new Gauge({
    name: "infergate_in_flight_calls",
    help: "Calls and streams in flight.",
    registers: [registry],
    collect() {
      this.set(sources.inFlight());
    },
  });
  const cacheCounter = (name: string, help: string, read: (s: CacheStats) => number) =>
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        if (sources.cache === undefined) return;
        this.reset();
        this.inc(read(sources.cache));
      },
    });
  cacheCounter("infergate_cache_hits_total", "Answers served from the cache.", (s) => s.hits);
  cacheCounter("infergate_cache_misses_total", "Cacheable calls that went upstream.", (s) => s.misses);
  cacheCounter("infergate_cache_coalesced_total", "Calls that joined an identical call in flight.", (s) => s.coalesced);
  cacheCounter("infergate_cache_bypassed_total", "Calls not cached (policy or bypass).", (s) => s.bypassed);
  cacheCounter("infergate_cache_evictions_total", "Answers evicted to respect the bounds.", (s) => s.evictions);
  const cacheGauge = (name: string, help: string, read: (s: CacheStats) => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        if (sources.cache !== undefined) this.set(read(sources.cache));
      },
    });
  // Tracing (docs/tracing.md): present, at 0, also when it is off, so that alerts need no absent-series care.
  const tracingCounter = (name: string, help: string, read: (s: ExportStats) => number) =>
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(sources.tracing === undefined ? 0 : read(sources.tracing));
      },
    });
  tracingCounter("infergate_tracing_export_failures_total", "OTLP span export requests that failed (collector down, refusing or too slow); calls go on.", (s) => s.exportFailures);
  tracingCounter("infergate_tracing_dropped_spans_total", "Spans never exported: the export queue was full when they ended, or their export request failed.", (s) => s.droppedSpans);
  cacheGauge("infergate_cache_bytes", "Bytes of answers held by the cache.", (s) => s.bytes);
  cacheGauge("infergate_cache_entries", "Answers held by the cache.", (s) => s.entries);

  const redis = sources.redis;
  if (redis !== undefined) {
    const components: readonly RedisComponent[] = ["rate_limits", "cache", "sessions", "budgets"];
    new Counter({
      name: "infergate_redis_errors_total",
      help: "Redis commands that failed (unreachable, timed out, refused), by the piece that sent them.",
      labelNames: ["component"] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const c of components) this.inc({ component: c }, redis.errors[c]);
      },
    });
    const redisCounter = (name: string, help: string, read: (s: RedisStats) => number) =>
      new Counter({
        name,
        help,
        registers: [registry],
        collect() {
          this.reset();
          this.inc(read(redis));
        },
      });
    redisCounter("infergate_rate_limit_fail_open_total", "Admission decisions taken on local buckets because Redis failed (onFailure: open).", (s) => s.failOpen);
    redisCounter("infergate_rate_limit_fail_closed_total", "Calls refused because Redis failed (onFailure: closed).", (s) => s.failClosed);
    redisCounter("infergate_budget_fail_open_total", "Budget checks that admitted a call unchecked because Redis failed (budgets.onRedisFailure: open).", (s) => s.budgetFailOpen);
    redisCounter("infergate_budget_fail_closed_total", "Calls refused because Redis failed (budgets.onRedisFailure: closed), reason BUDGET_STORE_UNAVAILABLE.", (s) => s.budgetFailClosed);
    redisCounter("infergate_cache_redis_hits_total", "Answers found in the Redis cache tier after a local miss (also counted as hits).", (s) => s.cacheHits);
    new Gauge({
      name: "infergate_redis_connected",
      help: "1 while the Redis client is connected, else 0.",
      registers: [registry],
      collect() {
        this.set(redis.connected() ? 1 : 0);
      },
    });
  }

  // The breakers as ListModels shows them: per model, each endpoint of its upstream, the worse of
  // the endpoint's breaker and the model's own there (src/resilience/resilient-upstream.ts).
  new Gauge({
    name: "infergate_breaker_state",
    help: "Circuit breaker state of each model's upstream endpoints: 0 closed, 1 half-open (probing), 2 open (failing fast).",
    labelNames: ["model", "upstream", "endpoint"] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const r of sources.routes?.() ?? []) {
        for (const e of r.upstream.endpointStatus?.(r.upstreamModel) ?? []) {
          const value = breakerValue[e.state];
          if (value !== undefined) this.set({ model: r.name, upstream: r.upstream.name, endpoint: e.endpoint }, value);
        }
      }
    },
  });

  // Client connections (src/server/connection-limits.ts): `api` is the gRPC and HTTP listeners
  // together, which share their caps; `admin` the admin listener, which has its own.
  const listeners = new Map<string, { readonly open: number; readonly refused: number }>();
  new Gauge({
    name: "infergate_connections_open",
    help: "Client connections open, by listener (api: gRPC and HTTP together; admin).",
    labelNames: ["listener"] as const,
    registers: [registry],
    collect() {
      for (const [listener, c] of listeners) this.set({ listener }, c.open);
    },
  });
  new Counter({
    name: "infergate_connections_refused_total",
    help: "Client connections reset at accept because a cap (server.connections.max, maxPerIp; the admin listener's own) was reached.",
    labelNames: ["listener"] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const [listener, c] of listeners) this.inc({ listener }, c.refused);
    },
  });

  return {
    registry,
    countConnections(listener, counts) {
      listeners.set(listener, counts);
    },
    setModels(models) {
      known = new Set(models);
    },
    reloaded(result) {
      reloads.inc({ result });
    },
    observe(r) {
      const m = model(r.model);
      requests.inc({ rpc: r.rpc, model: m, code: codeNames[r.code] ?? "UNKNOWN" });
      latency.observe({ rpc: r.rpc, model: m }, r.latencyMs / 1000);
      if (r.ttftMs !== undefined) ttft.observe({ model: m }, r.ttftMs / 1000);
      if (r.code !== 0) errors.inc({ rpc: r.rpc, model: m, reason: r.reason !== undefined && reasons.has(r.reason) ? r.reason : "OTHER" });
      if (r.reason === "RATE_LIMITED") rateLimited.inc({ rpc: r.rpc });
      else if (r.reason === "MALFORMED_REQUEST") malformed.inc({ rpc: r.rpc });
      countTokens(m, r);
      if (r.cost !== undefined && r.cost > 0) cost.inc({ model: model(r.pricedModel ?? ""), caller: r.tenant, currency: r.currency }, r.cost);
    },
  };
}

/** The gRPC code name for logs and labels. */
export function codeName(code: number): string {
  return codeNames[code] ?? "UNKNOWN";
}
