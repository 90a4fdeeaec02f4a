import type { ResilienceConfig } from "../config/schema.js";
import { type AttemptProgress, unwatchAttempt, watchAttempt } from "../core/attempt-progress.js";
import type { AttemptSpan, AttemptSpanInfo, AttemptTrace } from "../core/call-context.js";
import { GatewayError } from "../core/gateway-error.js";
import type { Upstream, UpstreamCall } from "../core/upstream.js";
import { redactedError } from "../upstreams/http/http-errors.js";
import { fullJitterBackoff } from "./backoff.js";
import type { ConcurrencyLimit } from "./concurrency-limit.js";
import type { BreakerLease, EndpointBreaker } from "./endpoint-breaker.js";
import { failureScope, isSlowFailure, retryVerdict } from "./failure-policy.js";
import type { RetryBudget } from "./retry-budget.js";
import { brokenOff } from "./stream-attempt.js";

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
export interface Endpoint {
  readonly index: number;
  /** The URL without credentials, query or fragment ("" for in-process kinds). */
  readonly display: string;
  readonly weight: number;
  readonly adapter: Upstream;
  readonly breaker: EndpointBreaker;
  inFlight: number;
}

/** One attempt in progress: where it went, its leases, and what its transport reported. */
export interface Attempt {
  readonly endpoint: Endpoint;
  /** The endpoint's breaker lease; undefined once settled (a stream's at its first event). */
  lease: BreakerLease | undefined;
  /** The (endpoint, model) breaker's lease, when the model has a breaker there. */
  modelLease: BreakerLease | undefined;
  /** The breakers have been told (a stream's first event): later failures go to ejection only. */
  breakersSettled: boolean;
  readonly progress: AttemptProgress;
  readonly startedAt: number;
  /** The attempt's client span when the call is traced (src/observability/tracing.ts). */
  readonly span: AttemptSpan | undefined;
  /** For the span: the attempt's (redacted) error. */
  error: unknown;
}

/** How an attempt ended, for breakers and ejection: see settle in createResilientUpstream. */
export type Verdict = "success" | "abandoned" | "endpoint" | "model";

/**
 * What a call's attempts need of their upstream's wrapper (src/resilience/resilient-upstream.ts),
 * which makes one per upstream: its settings and shared state, and its endpoints' health.
 */
export interface AttemptHost {
  readonly name: string;
  /** The upstream's kind, for the attempts' spans. */
  readonly kind: string;
  readonly config: ResilienceConfig;
  /** The endpoints are remote (not one in-process instance): attempts have a transport to watch. */
  readonly remote: boolean;
  readonly now: () => number;
  readonly random: () => number;
  readonly budget: RetryBudget;
  readonly limit: ConcurrencyLimit;
  /** What the upstream's errors must never carry: every error of an attempt is redacted of them. */
  readonly secrets: readonly string[];
  /** The endpoint for the next attempt, with its breaker leases; undefined when no breaker admits. */
  choose(tried: ReadonlySet<number>, model: string): Pick<Attempt, "endpoint" | "lease" | "modelLease"> | undefined;
  /** The error when every breaker refuses. */
  circuitOpen(model: string): GatewayError;
  /** Tells the breakers and outlier ejection how an attempt ended. */
  settle(a: Attempt, model: string, verdict: Verdict): void;
}

/** What an in-process upstream's attempt reports: nothing (it has no transport, and no slow failures). */
const inProcessProgress: AttemptProgress = Object.freeze({ answered: false, connectionFailed: false });

/**
 * One call's attempts, unary or streamed: the endpoints it tried, its last error and its retries.
 * The constructor takes the call's concurrency slot (or throws OVERLOADED) and enters the retry
 * budget; `leave` gives both back. A class rather than closures per call: unary calls are the hot
 * path of every proxied call (src/gateway/handlers.ts), and instances share their methods.
 */
export class CallAttempts {
  private readonly tried = new Set<number>();
  private lastErr: unknown;
  private retries = 0;

  constructor(
    private readonly host: AttemptHost,
    private readonly call: ResilientCall<unknown>,
    /** The upstream RPC, for the attempts' spans. */
    private readonly operation: AttemptSpanInfo["operation"],
  ) {
    host.limit.acquire();
    host.budget.enter();
  }

  /**
   * Starts attempt number `attempt`: picks an endpoint not tried yet whose breakers admit it
   * (failing with the last attempt's error, or CIRCUIT_OPEN before any, when none is left), counts
   * it as busy, notes it in the call's trace, and watches what the transport reports of it on
   * `signal` (the signal its adapter call gets). The caller calls `end` when it ends.
   */
  start(attempt: number, signal: AbortSignal): Attempt {
    const { host, call } = this;
    call.signal.throwIfAborted();
    const picked = host.choose(this.tried, call.upstreamModel);
    // A retry was due but no endpoint admits one (their breakers opened meanwhile, maybe on this
    // call's own failure): the last error, saying how many attempts were made, even one.
    if (picked === undefined) throw this.lastErr === undefined ? host.circuitOpen(call.upstreamModel) : final(this.lastErr, attempt - 1, true);
    const { endpoint } = picked;
    this.tried.add(endpoint.index);
    endpoint.inFlight++;
    if (call.trace !== undefined) {
      call.trace.attempts++;
      call.trace.endpoint = endpoint.display === "" ? undefined : endpoint.display;
    }
    const progress = host.remote ? watchAttempt(signal) : inProcessProgress;
    const span = call.trace?.span?.attempt({
      operation: this.operation,
      upstream: host.name,
      kind: host.kind,
      upstreamModel: call.upstreamModel,
      endpoint: endpoint.display,
      attempt,
      breaker: endpoint.breaker.state(),
    });
    // The transport sends the span's trace context upstream (src/core/attempt-progress.ts).
    if (span !== undefined && host.remote) progress.traceHeaders = span.headers;
    return { ...picked, breakersSettled: false, progress, startedAt: host.now(), span, error: undefined };
  }

  /**
   * Attempt `a` (number `attempt`) failed with `thrown`: settles it, and returns the wait before
   * the next attempt, or throws the call's error when there is none. A stream that `sent` events
   * is committed: another attempt would replay them to the consumer.
   */
  failed(thrown: unknown, attempt: number, a: Attempt, sent = 0): number {
    const { host, call } = this;
    // The one place every error of an adapter passes, whatever the status (issue 17).
    const err = redactedError(thrown, host.secrets);
    a.error = err;
    host.settle(a, call.upstreamModel, this.verdictOf(err, a));
    if (sent > 0) throw brokenOff(err, sent, call.signal, host.name);
    const delay = this.retryDelay(err, attempt);
    if (delay === undefined) throw final(err, attempt);
    this.lastErr = err;
    this.retries++;
    return delay;
  }

  /** Attempt `a` is over (its adapter call got `signal`): the endpoint is no longer busy with it. */
  end(a: Attempt, signal: AbortSignal): void {
    a.endpoint.inFlight--;
    if (this.host.remote) unwatchAttempt(signal, a.progress);
    a.span?.end(a.error);
  }

  /** The wait before the next attempt; rejects when the call's signal aborts. */
  backoff(delay: number): Promise<void> {
    return sleep(delay, this.call.signal);
  }

  /** The call is over: its retries go to the budget, its concurrency slot back to the limit. */
  leave(): void {
    this.host.budget.leave(this.retries);
    this.host.limit.release();
  }

  /** How an attempt that failed with `err` counts (see settle in createResilientUpstream). */
  private verdictOf(err: unknown, a: Attempt): Verdict {
    const { host, call } = this;
    if (call.signal.aborted) {
      // The caller's end: nothing learnt, unless its deadline cut an attempt the upstream had
      // sent nothing for (a slow failure: the endpoint's).
      return host.remote && isSlowFailure(call.signal.reason, a.progress, host.now() - a.startedAt, host.config.slowFailureMs)
        ? "endpoint"
        : "abandoned";
    }
    return failureScope(err, a.progress) ?? "success";
  }

  /**
   * The wait before the next attempt, or undefined when the call must fail now: not retryable, no
   * attempts left, the wait would end past the retry deadline, or the retry budget is spent.
   */
  private retryDelay(err: unknown, attempt: number): number | undefined {
    const { host, call } = this;
    const retry = host.config.retry;
    if (attempt >= retry.maxAttempts || call.signal.aborted) return undefined;
    const deadline = Math.min(call.deadline, call.retryDeadline ?? call.deadline);
    const verdict = retryVerdict(err, deadline - host.now());
    if (!verdict.retry) return undefined;
    const delay = Math.max(verdict.minDelayMs, fullJitterBackoff(attempt, retry.backoffBaseMs, retry.backoffMaxMs, host.random));
    if (host.now() + delay >= deadline) return undefined;
    return host.budget.tryRetry() ? delay : undefined;
  }
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
