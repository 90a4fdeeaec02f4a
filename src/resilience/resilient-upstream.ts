import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import {
  BreakerState,
  type EndpointStatus,
  EndpointStatusSchema,
  type GenerateResponse,
  ModelState,
} from "../../gen/infergate/v1/inference_service_pb.js";
import type { ResilienceConfig, UpstreamConfig } from "../config/schema.js";
import { GatewayError, Reason } from "../core/gateway-error.js";
import { missingFinalEvent } from "../core/final-event.js";
import type { ChatInput, Upstream, UpstreamCall } from "../core/upstream.js";
import { type Attempt, type AttemptHost, CallAttempts, type Endpoint, type ResilientCall, type Verdict } from "./call-attempts.js";
import { ConcurrencyLimit } from "./concurrency-limit.js";
import { type BreakerState as EndpointBreakerState, EndpointBreaker } from "./endpoint-breaker.js";
import { upstreamSecrets } from "../upstreams/http/http-errors.js";
import { linkedAbort } from "./linked-abort.js";
import { createLoadBalancer, type LoadBalancer } from "./load-balancer.js";
import { OutlierDetector } from "./outlier-detector.js";
import { RetryBudget } from "./retry-budget.js";
import { attemptOver, idleWatch } from "./stream-attempt.js";

export type { ResilientCall } from "./call-attempts.js";

/**
 * The health of one model on each endpoint (docs/resilience.md, "Breaker scope"): a breaker per
 * endpoint and outlier ejection over the endpoints, for the failures that concern the model there
 * (the endpoint answered). Made at the model's first model-level failure, so that a model that
 * never fails costs nothing per call; that failure begins the breaker's run of failures in a row,
 * and its window counts the attempts after it (a window with that failure but without the
 * successes before it would open on a model that fails every other call).
 */
interface ModelHealth {
  /** Index: the endpoint's. */
  readonly breakers: readonly EndpointBreaker[];
  readonly outliers: OutlierDetector;
}

/** What tests and ListModels can read of one endpoint. */
export interface EndpointSnapshot {
  readonly endpoint: string;
  readonly state: "closed" | "open" | "halfOpen";
  readonly ejected: boolean;
  readonly weight: number;
  readonly inFlight: number;
  readonly failures: number;
}

/** The wrapper: an Upstream, plus its endpoints' state. */
export interface ResilientUpstream extends Upstream {
  endpointStatus(upstreamModel?: string): EndpointStatus[];
  /**
   * Each endpoint's state, in configuration order; for `upstreamModel`, as that model sees it
   * (the worse of the endpoint's breaker and the model's there, ejected by either).
   */
  snapshot(upstreamModel?: string): EndpointSnapshot[];
}

/** Seams for tests: time, randomness. */
export interface ResilienceSeams {
  now?: () => number;
  random?: () => number;
}

/** The URL as ListModels may show it: no user, password, query or fragment. */
export function displayUrl(url: string): string {
  const u = new URL(url);
  return `${u.origin}${u.pathname === "/" ? "" : u.pathname}`;
}

const breakerStateEnum = { closed: BreakerState.CLOSED, open: BreakerState.OPEN, halfOpen: BreakerState.HALF_OPEN } as const;
const breakerStateRank = { closed: 0, halfOpen: 1, open: 2 } as const;

/**
 * Puts an upstream behind breakers, load balancing, outlier ejection, retries and a concurrency
 * limit (docs/resilience.md). For N configured endpoints it makes N adapter instances with
 * `make({...config, endpoints: [e]})`, so that adapters never choose endpoints and stay unaware of
 * all this; in-process kinds without endpoints get one instance.
 *
 * Each call: take a concurrency slot (or fail at once with OVERLOADED); then per attempt pick an
 * endpoint whose breaker admits the call, that is not ejected and, for a retry, that was not tried
 * yet when there is one; run the adapter; on a retryable failure wait a full-jitter backoff (at
 * least the upstream's Retry-After) and try again, within `maxAttempts`, the retry budget and the
 * caller's deadline. A stream is committed at its first event: after it, a failure passes through.
 * Here: the endpoints and their health; one call's attempts and retries: src/resilience/call-attempts.ts;
 * a stream's idle timeout and truncation: src/resilience/stream-attempt.ts.
 */
export function createResilientUpstream(
  config: UpstreamConfig,
  make: (config: UpstreamConfig) => Upstream,
  seams: ResilienceSeams = {},
): ResilientUpstream {
  const now = seams.now ?? Date.now;
  const random = seams.random ?? Math.random;
  const r: ResilienceConfig = config.resilience;
  const remote = config.endpoints.length > 0;
  const urls = remote ? config.endpoints : [undefined];
  const endpoints: Endpoint[] = urls.map((url, index) => {
    const weight = url === undefined ? 1 : (config.endpointWeights[index] ?? 1);
    const display = url === undefined ? "" : displayUrl(url);
    const own = config.endpointTimeouts[index] ?? {};
    return {
      index,
      display,
      weight,
      adapter:
        url === undefined
          ? make(config)
          : make({
              ...config,
              endpoints: [url],
              endpointWeights: [weight],
              endpointTimeouts: [own],
              // The endpoint's own timeouts, where it sets them, for its adapter's transport.
              connectTimeoutMs: own.connectTimeoutMs ?? config.connectTimeoutMs,
              firstByteTimeoutMs: own.firstByteTimeoutMs ?? config.firstByteTimeoutMs,
            }),
      breaker: new EndpointBreaker(`${config.name}#${index}`, r.breaker, now),
      inFlight: 0,
    };
  });
  const first = endpoints[0]!.adapter;
  const balancer: LoadBalancer = createLoadBalancer(r.loadBalancing, endpoints.map((e) => e.weight), random);
  const outliers = new OutlierDetector(endpoints.length, r.outlierDetection, now);
  const budget = new RetryBudget(r.retry.budgetPercent, r.retry.minRetryConcurrency);
  const limit = new ConcurrencyLimit(`upstream "${config.name}"`, r.maxConcurrent);
  /** What the upstream's errors must never carry: every error of an attempt is redacted of them. */
  const secrets = upstreamSecrets(config);
  /** Per upstream model, once it has failed at the model level somewhere. */
  const models = new Map<string, ModelHealth>();

  function healthOf(model: string): ModelHealth {
    let health = models.get(model);
    if (health === undefined) {
      health = {
        breakers: endpoints.map((e) => new EndpointBreaker(`${config.name}#${e.index}/${model}`, r.breaker, now)),
        outliers: new OutlierDetector(endpoints.length, r.outlierDetection, now),
      };
      models.set(model, health);
    }
    return health;
  }

  /** The endpoint for the next attempt, with its breaker leases; undefined when no breaker admits. */
  function choose(tried: ReadonlySet<number>, model: string): Pick<Attempt, "endpoint" | "lease" | "modelLease"> | undefined {
    const health = models.get(model);
    const admitted = endpoints.filter((e) => e.breaker.admits() && (health === undefined || health.breakers[e.index]!.admits())).map((e) => e.index);
    if (admitted.length === 0) return undefined;
    // Ejected endpoints are skipped unless nothing else is left (Envoy's panic mode).
    const healthy = orAll(admitted.filter((i) => !outliers.isEjected(i) && health?.outliers.isEjected(i) !== true), admitted);
    const fresh = orAll(healthy.filter((i) => !tried.has(i)), healthy);
    const endpoint = endpoints[balancer.pick(fresh, (i) => endpoints[i]!.inFlight)]!;
    const lease = endpoint.breaker.admit();
    if (lease === undefined) return undefined;
    // Both breakers said they admit, a moment ago and synchronously: both leases are there.
    return { endpoint, lease, modelLease: health?.breakers[endpoint.index]!.admit() };
  }

  /** Every breaker (the endpoints', or the model's on each) refuses: fail fast, and say when the first probe is due. */
  function circuitOpen(model: string): GatewayError {
    const health = models.get(model);
    const retryAfterMs = Math.min(
      ...endpoints.map((e) => Math.max(e.breaker.retryAfterMs(), health?.breakers[e.index]!.retryAfterMs() ?? 0)),
    );
    const which = endpoints.length === 1 ? "its circuit breaker is open" : "the circuit breakers of all its endpoints are open";
    return new GatewayError(Code.Unavailable, `upstream "${config.name}" is failing: ${which}; next probe in ${retryAfterMs}ms`, {
      reason: Reason.CircuitOpen,
      metadata: { upstream: config.name },
      retryAfterMs,
    });
  }

  /**
   * Tells the breakers (those not settled yet) and outlier ejection how an attempt ended:
   * - `success` (also a client fault: the endpoint answered): both breakers and both ejections;
   * - `abandoned` (the caller went away): the breakers learn nothing, ejection is not told;
   * - `endpoint` failure: the endpoint's breaker and ejection; the model's breaker learns nothing;
   * - `model` failure: the model's breaker and ejection on this endpoint (made now if the model had
   *   none: see ModelHealth); for the endpoint it is a success (it answered).
   */
  function settle(a: Attempt, model: string, verdict: Verdict): void {
    const i = a.endpoint.index;
    switch (verdict) {
      case "success":
        a.lease?.settle("success");
        a.modelLease?.settle("success");
        outliers.success(i);
        models.get(model)?.outliers.success(i);
        break;
      case "abandoned":
        a.lease?.settle("abandoned");
        a.modelLease?.settle("abandoned");
        break;
      case "endpoint":
        a.lease?.settle("failure");
        a.modelLease?.settle("abandoned");
        outliers.failure(i);
        break;
      case "model": {
        a.lease?.settle("success");
        outliers.success(i);
        const health = healthOf(model);
        if (a.modelLease !== undefined) a.modelLease.settle("failure");
        else if (!a.breakersSettled) health.breakers[i]!.failedBefore();
        health.outliers.failure(i);
        break;
      }
    }
    a.lease = a.modelLease = undefined;
  }

  /** Made once: what each call's attempts need of this upstream (see CallAttempts). */
  const host: AttemptHost = { name: config.name, kind: config.kind, config: r, remote, now, random, budget, limit, secrets, choose, circuitOpen, settle };

  async function unary<Req, Res>(
    call: ResilientCall<Req>,
    operation: "predict" | "chat" | "embed" | "count_tokens",
    op: (adapter: Upstream, call: UpstreamCall<Req>) => Promise<Res>,
  ): Promise<Res> {
    const run = new CallAttempts(host, call, operation);
    try {
      for (let attempt = 1; ; attempt++) {
        const a = run.start(attempt, call.signal);
        let delay: number;
        try {
          const res = await op(a.endpoint.adapter, call);
          settle(a, call.upstreamModel, "success");
          return res;
        } catch (thrown) {
          delay = run.failed(thrown, attempt, a);
        } finally {
          run.end(a, call.signal);
        }
        // Backoff after the attempt is over: the endpoint is not busy with this call meanwhile.
        await run.backoff(delay);
      }
    } finally {
      run.leave();
    }
  }

  /** As unary, per attempt a stream of events: committed at its first, so no retry after it. */
  async function* generate(call: ResilientCall<ChatInput>): AsyncGenerator<GenerateResponse> {
    const run = new CallAttempts(host, call, "generate");
    try {
      for (let attempt = 1; ; attempt++) {
        const attemptAbort = linkedAbort(call.signal);
        let a: Attempt;
        try {
          a = run.start(attempt, attemptAbort.signal);
        } catch (err) {
          attemptAbort.dispose();
          throw err;
        }
        const idle = idleWatch(r.streamIdleTimeoutMs, attemptAbort, config.name);
        const events = a.endpoint.adapter.generate!({ ...call, signal: attemptAbort.signal })[Symbol.asyncIterator]();
        let sent = 0;
        let delay: number;
        try {
          for (;;) {
            // No idle timeout before the first event: the upstream's time to first token is bounded
            // by the headers timeout and the caller's deadline.
            const next = await (sent === 0 ? events.next() : idle.next(events));
            if (next.done === true) break;
            if (sent === 0) {
              // The endpoint answered: settle the breakers now, so that a half-open probe does not
              // hold every other call off for the length of a whole stream.
              a.lease?.settle("success");
              a.modelLease?.settle("success");
              a.lease = a.modelLease = undefined;
              a.breakersSettled = true;
            }
            sent++;
            const isFinal = next.value.event.case === "final";
            yield next.value;
            if (isFinal) {
              settle(a, call.upstreamModel, "success");
              return;
            }
          }
          throw missingFinalEvent(config.name, sent);
        } catch (thrown) {
          // Once events were sent, the consumer has them: run.failed throws, with no retry.
          delay = run.failed(thrown, attempt, a, sent);
        } finally {
          run.end(a, attemptAbort.signal);
          // The attempt is over, however it ended: whatever of it still listens to its signal
          // (an HTTP body the adapter dropped unread) is released now, not when the call ends.
          attemptAbort.abort(attemptOver);
          attemptAbort.dispose();
          idle.dispose();
          // Ends the adapter's stream if it is still open (consumer gone, final event seen): its
          // own cleanup closes the upstream connection.
          await events.return?.(undefined).catch(() => undefined);
        }
        await run.backoff(delay);
      }
    } finally {
      run.leave();
    }
  }

  const wrapper: ResilientUpstream = {
    name: config.name,
    kind: config.kind,
    ...(first.predict === undefined ? {} : { predict: (call) => unary(call, "predict", (a, c) => a.predict!(c)) }),
    ...(first.chat === undefined ? {} : { chat: (call) => unary(call, "chat", (a, c) => a.chat!(c)) }),
    // Embeddings are idempotent: retried, breakers and endpoints as Predict.
    ...(first.embed === undefined ? {} : { embed: (call) => unary(call, "embed", (a, c) => a.embed!(c)) }),
    ...(first.generate === undefined ? {} : { generate }),
    // Counting generates nothing: retried, breakers and endpoints as Chat.
    ...(first.countTokens === undefined ? {} : { countTokens: (call) => unary(call, "count_tokens", (a, c) => a.countTokens!(c)) }),
    modelState(upstreamModel) {
      const health = models.get(upstreamModel);
      if (endpoints.every((e) => e.breaker.state() === "open" || health?.breakers[e.index]!.state() === "open")) return ModelState.NOT_READY;
      const states = endpoints.map((e) => e.adapter.modelState?.(upstreamModel) ?? ModelState.UNSPECIFIED);
      if (states.includes(ModelState.READY)) return ModelState.READY;
      return states.every((s) => s === ModelState.NOT_READY) ? ModelState.NOT_READY : ModelState.UNSPECIFIED;
    },
    snapshot: (upstreamModel) => {
      const health = upstreamModel === undefined ? undefined : models.get(upstreamModel);
      return endpoints.map((e) => {
        const own = health?.breakers[e.index];
        return {
          endpoint: e.display,
          state: worse(e.breaker.state(), own?.state() ?? "closed"),
          ejected: outliers.isEjected(e.index) || health?.outliers.isEjected(e.index) === true,
          weight: e.weight,
          inFlight: e.inFlight,
          failures: e.breaker.stats().failures + (own?.stats().failures ?? 0),
        };
      });
    },
    endpointStatus: (upstreamModel) =>
      wrapper.snapshot(upstreamModel).map((s) =>
        create(EndpointStatusSchema, {
          endpoint: s.endpoint,
          state: breakerStateEnum[s.state],
          ejected: s.ejected,
          weight: s.weight,
          inFlight: s.inFlight,
        }),
      ),
    async close() {
      for (const e of endpoints) e.breaker.shutdown();
      for (const h of models.values()) for (const b of h.breakers) b.shutdown();
      await Promise.all(endpoints.map((e) => e.adapter.close()));
    },
  };
  return wrapper;
}

function worse(a: EndpointBreakerState, b: EndpointBreakerState): EndpointBreakerState {
  return breakerStateRank[a] >= breakerStateRank[b] ? a : b;
}

function orAll<T>(some: T[], all: T[]): T[] {
  return some.length > 0 ? some : all;
}
