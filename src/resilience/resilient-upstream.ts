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
import type { AttemptTrace } from "../core/call-context.js";
import type { ChatInput, Upstream, UpstreamCall } from "../core/upstream.js";
import { fullJitterBackoff } from "./backoff.js";
import { ConcurrencyLimit } from "./concurrency-limit.js";
import { type AttemptProgress, unwatchAttempt, watchAttempt } from "../core/attempt-progress.js";
import { type BreakerLease, type BreakerState as EndpointBreakerState, EndpointBreaker } from "./endpoint-breaker.js";
import { redactedError, UpstreamFailure, upstreamSecrets } from "../upstreams/http/http-errors.js";
import { failureScope, isSlowFailure, retryVerdict } from "./failure-policy.js";
import { type LinkedAbort, linkedAbort } from "./linked-abort.js";
import { createLoadBalancer, type LoadBalancer } from "./load-balancer.js";
import { OutlierDetector } from "./outlier-detector.js";
import { RetryBudget } from "./retry-budget.js";

/**
 * An upstream call as the resilience wrapper takes it: an UpstreamCall, plus the moment after which
 * no retry may start. The gateway sets it to the caller's deadline when the call runs for a
 * coalesced flight (src/cache), whose own deadline is longer so that later joiners can be served.
 */
export interface ResilientCall<Req> extends UpstreamCall<Req> {
  readonly retryDeadline?: number;
  /** Counts the attempts and notes the endpoint of each, for the caller's log line. */
  readonly trace?: AttemptTrace;
}

/** One endpoint of the upstream: its own adapter instance, breaker and load. */
interface Endpoint {
  readonly index: number;
  /** The URL without credentials, query or fragment ("" for in-process kinds). */
  readonly display: string;
  readonly weight: number;
  readonly adapter: Upstream;
  readonly breaker: EndpointBreaker;
  inFlight: number;
}

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

/** One attempt in progress: where it went, its leases, and what its transport reported. */
interface Attempt {
  readonly endpoint: Endpoint;
  /** The endpoint's breaker lease; undefined once settled (a stream's at its first event). */
  lease: BreakerLease | undefined;
  /** The (endpoint, model) breaker's lease, when the model has a breaker there. */
  modelLease: BreakerLease | undefined;
  /** The breakers have been told (a stream's first event): later failures go to ejection only. */
  breakersSettled: boolean;
  readonly progress: AttemptProgress;
  readonly startedAt: number;
}

/** How an attempt ended, for breakers and ejection: see settle in createResilientUpstream. */
type Verdict = "success" | "abandoned" | "endpoint" | "model";

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

/** What an in-process upstream's attempt reports: nothing (it has no transport, and no slow failures). */
const inProcessProgress: AttemptProgress = Object.freeze({ answered: false, connectionFailed: false });

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

  /** How an attempt that failed with `err` counts (see settle). */
  function verdictOf(err: unknown, a: Attempt, signal: AbortSignal): Verdict {
    if (signal.aborted) {
      // The caller's end: nothing learnt, unless its deadline cut an attempt the upstream had
      // sent nothing for (a slow failure: the endpoint's).
      return remote && isSlowFailure(signal.reason, a.progress, now() - a.startedAt, r.slowFailureMs) ? "endpoint" : "abandoned";
    }
    return failureScope(err, a.progress) ?? "success";
  }

  /**
   * The wait before the next attempt, or undefined when the call must fail now: not retryable, no
   * attempts left, the wait would end past the retry deadline, or the retry budget is spent.
   */
  function retryDelay(err: unknown, attempt: number, call: ResilientCall<unknown>): number | undefined {
    if (attempt >= r.retry.maxAttempts || call.signal.aborted) return undefined;
    const deadline = Math.min(call.deadline, call.retryDeadline ?? call.deadline);
    const verdict = retryVerdict(err, deadline - now());
    if (!verdict.retry) return undefined;
    const delay = Math.max(verdict.minDelayMs, fullJitterBackoff(attempt, r.retry.backoffBaseMs, r.retry.backoffMaxMs, random));
    if (now() + delay >= deadline) return undefined;
    return budget.tryRetry() ? delay : undefined;
  }

  /**
   * Starts attempt number `attempt`: picks an endpoint not tried yet whose breakers admit it
   * (failing with the last attempt's error, or CIRCUIT_OPEN before any, when none is left), counts
   * it as busy, notes it in the call's trace, and watches what the transport reports of it on
   * `signal` (the signal its adapter call gets). The caller decrements `inFlight` and calls
   * `endAttempt` when it ends.
   */
  function startAttempt(call: ResilientCall<unknown>, tried: Set<number>, lastErr: unknown, attempt: number, signal: AbortSignal): Attempt {
    call.signal.throwIfAborted();
    const picked = choose(tried, call.upstreamModel);
    // A retry was due but no endpoint admits one (their breakers opened meanwhile, maybe on this
    // call's own failure): the last error, saying how many attempts were made, even one.
    if (picked === undefined) throw lastErr === undefined ? circuitOpen(call.upstreamModel) : final(lastErr, attempt - 1, true);
    const { endpoint } = picked;
    tried.add(endpoint.index);
    endpoint.inFlight++;
    if (call.trace !== undefined) {
      call.trace.attempts++;
      call.trace.endpoint = endpoint.display === "" ? undefined : endpoint.display;
    }
    return { ...picked, breakersSettled: false, progress: remote ? watchAttempt(signal) : inProcessProgress, startedAt: now() };
  }

  function endAttempt(a: Attempt, signal: AbortSignal): void {
    a.endpoint.inFlight--;
    if (remote) unwatchAttempt(signal, a.progress);
  }

  /**
   * The error of the last attempt, saying how many attempts the call made: when it made more than
   * one, or when it wanted another (`retryWanted`) and no endpoint was left to make it.
   */
  function final(err: unknown, attempts: number, retryWanted = false): unknown {
    if ((attempts < 2 && !retryWanted) || !(err instanceof GatewayError)) return err;
    return new GatewayError(err.code, err.message, {
      reason: err.reason,
      metadata: { ...err.metadata, attempts: String(attempts) },
      ...(err.retryAfterMs === undefined ? {} : { retryAfterMs: err.retryAfterMs }),
      cause: err.cause,
    });
  }

  async function unary<Req, Res>(call: ResilientCall<Req>, op: (adapter: Upstream, call: UpstreamCall<Req>) => Promise<Res>): Promise<Res> {
    limit.acquire();
    budget.enter();
    let retries = 0;
    const tried = new Set<number>();
    let lastErr: unknown;
    try {
      for (let attempt = 1; ; attempt++) {
        const a = startAttempt(call, tried, lastErr, attempt, call.signal);
        let delay: number;
        try {
          const res = await op(a.endpoint.adapter, call);
          settle(a, call.upstreamModel, "success");
          return res;
        } catch (thrown) {
          // The one place every error of an adapter passes, whatever the status (issue 17).
          const err = redactedError(thrown, secrets);
          settle(a, call.upstreamModel, verdictOf(err, a, call.signal));
          const d = retryDelay(err, attempt, call);
          if (d === undefined) throw final(err, attempt);
          delay = d;
          lastErr = err;
          retries++;
        } finally {
          endAttempt(a, call.signal);
        }
        // Backoff after the attempt is over: the endpoint is not busy with this call meanwhile.
        await sleep(delay, call.signal);
      }
    } finally {
      budget.leave(retries);
      limit.release();
    }
  }

  async function* generate(call: ResilientCall<ChatInput>): AsyncGenerator<GenerateResponse> {
    limit.acquire();
    budget.enter();
    let retries = 0;
    const tried = new Set<number>();
    let lastErr: unknown;
    try {
      for (let attempt = 1; ; attempt++) {
        const attemptAbort = linkedAbort(call.signal);
        let a: Attempt;
        try {
          a = startAttempt(call, tried, lastErr, attempt, attemptAbort.signal);
        } catch (err) {
          attemptAbort.dispose();
          throw err;
        }
        const { endpoint } = a;
        const idle = idleWatch(r.streamIdleTimeoutMs, attemptAbort, config.name);
        const events = endpoint.adapter.generate!({ ...call, signal: attemptAbort.signal })[Symbol.asyncIterator]();
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
          const err = redactedError(thrown, secrets);
          settle(a, call.upstreamModel, verdictOf(err, a, call.signal));
          // Committed: the consumer has events of this attempt; another attempt would replay them.
          if (sent > 0) throw brokenOff(err, sent, call.signal, config.name);
          const d = retryDelay(err, attempt, call);
          if (d === undefined) throw final(err, attempt);
          delay = d;
          lastErr = err;
          retries++;
        } finally {
          endAttempt(a, attemptAbort.signal);
          // The attempt is over, however it ended: whatever of it still listens to its signal
          // (an HTTP body the adapter dropped unread) is released now, not when the call ends.
          attemptAbort.abort(attemptOver);
          attemptAbort.dispose();
          idle.dispose();
          // Ends the adapter's stream if it is still open (consumer gone, final event seen): its
          // own cleanup closes the upstream connection.
          await events.return?.(undefined).catch(() => undefined);
        }
        await sleep(delay, call.signal);
      }
    } finally {
      budget.leave(retries);
      limit.release();
    }
  }

  const wrapper: ResilientUpstream = {
    name: config.name,
    kind: config.kind,
    ...(first.predict === undefined ? {} : { predict: (call) => unary(call, (a, c) => a.predict!(c)) }),
    ...(first.chat === undefined ? {} : { chat: (call) => unary(call, (a, c) => a.chat!(c)) }),
    ...(first.generate === undefined ? {} : { generate }),
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

/**
 * A stream whose connection failed after events went out is a truncated answer, and says so
 * (STREAM_TRUNCATED) rather than "could not be reached". Failures the upstream itself declared (an
 * error event, a bad event: their cause is an UpstreamFailure) and timeouts keep their own reason.
 */
function brokenOff(err: unknown, sent: number, signal: AbortSignal, upstream: string): unknown {
  if (
    signal.aborted ||
    !(err instanceof GatewayError) ||
    err.code !== Code.Unavailable ||
    err.reason !== Reason.UpstreamUnavailable ||
    err.cause instanceof UpstreamFailure
  ) {
    return err;
  }
  return new GatewayError(Code.Unavailable, `upstream "${upstream}" broke off the stream after ${sent} events`, {
    reason: Reason.StreamTruncated,
    metadata: { upstream },
    cause: err,
  });
}

/** The abort reason of an attempt that has ended (seen only by what still listened to it). */
const attemptOver = new GatewayError(Code.Canceled, "the upstream attempt has ended", { reason: Reason.Cancelled });

function worse(a: EndpointBreakerState, b: EndpointBreakerState): EndpointBreakerState {
  return breakerStateRank[a] >= breakerStateRank[b] ? a : b;
}

function orAll<T>(some: T[], all: T[]): T[] {
  return some.length > 0 ? some : all;
}

/** The idle timeout of one attempt's stream (see idleWatch). */
interface IdleWatch {
  /** The next event; rejects when the upstream stays silent for the idle time. */
  next<T>(events: AsyncIterator<T>): Promise<IteratorResult<T>>;
  /** Clears the timer; call once the attempt is over. */
  dispose(): void;
}

/**
 * The idle timeout of an attempt's stream: an upstream silent for `idleMs` (counted from when the
 * consumer asked, so a slow reader is not the upstream's fault) has the attempt aborted, and the
 * wait fails with UNAVAILABLE. One timer per attempt, not re-armed per event: a wait notes when it
 * started, and the timer, when it fires, fails the wait in progress if that one has lasted
 * `idleMs`, or sets itself again for the rest (and is set again by the next wait when none is in
 * progress). Per event that is a clock reading where `refresh()` re-inserted the timer in Node's
 * timer list, and the wait's callbacks are made once per attempt.
 */
function idleWatch(idleMs: number, attempt: LinkedAbort, upstream: string): IdleWatch {
  let timer: NodeJS.Timeout | undefined;
  /** Date.now() when the wait in progress started. */
  let since = 0;
  /** The wait in progress; undefined between waits (a timer firing then does nothing). */
  let resolveWait: ((r: IteratorResult<never>) => void) | undefined;
  let rejectWait: ((err: unknown) => void) | undefined;
  const onValue = (r: IteratorResult<never>): void => {
    const resolve = resolveWait;
    resolveWait = rejectWait = undefined;
    resolve?.(r);
  };
  const onError = (err: unknown): void => {
    const reject = rejectWait;
    resolveWait = rejectWait = undefined;
    reject?.(err);
  };
  const fire = (): void => {
    timer = undefined;
    const reject = rejectWait;
    if (reject === undefined) return;
    const waited = Date.now() - since;
    if (waited < idleMs) {
      timer = setTimeout(fire, idleMs - waited);
      return;
    }
    resolveWait = rejectWait = undefined;
    const err = new GatewayError(Code.Unavailable, `upstream "${upstream}" sent nothing for ${idleMs}ms in the middle of the stream`, {
      reason: Reason.UpstreamTimeout,
      metadata: { upstream },
    });
    attempt.abort(err);
    reject(err);
  };
  return {
    next<T>(events: AsyncIterator<T>): Promise<IteratorResult<T>> {
      since = Date.now();
      if (timer === undefined) timer = setTimeout(fire, idleMs);
      return new Promise<IteratorResult<T>>((resolve, reject) => {
        resolveWait = resolve as (r: IteratorResult<never>) => void;
        rejectWait = reject;
        events.next().then(onValue as (r: IteratorResult<T>) => void, onError);
      });
    },
    dispose() {
      clearTimeout(timer);
      timer = undefined;
      resolveWait = rejectWait = undefined;
    },
  };
}

/** Waits `ms`, or rejects with the signal's reason when it aborts first. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
