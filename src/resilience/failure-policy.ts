import { Code } from "@connectrpc/connect";
import { GatewayError, Reason } from "../core/gateway-error.js";
import { UpstreamFailure } from "../upstreams/http/http-errors.js";
import type { AttemptProgress } from "../core/attempt-progress.js";

/**
 * What one failed upstream attempt says about the endpoint and about the call (docs/resilience.md,
 * "What counts as a failure"). One place decides, so that breakers, outlier ejection, retries and
 * fallbacks never disagree.
 */

/** Codes that describe the request or the caller, never the health of the upstream. */
const clientCodes = new Set<Code>([
  Code.Canceled,
  Code.InvalidArgument,
  Code.NotFound,
  Code.Unimplemented,
  Code.OutOfRange,
  Code.FailedPrecondition,
  Code.AlreadyExists,
  Code.PermissionDenied,
  Code.Unauthenticated,
]);

/**
 * Whether an attempt's error counts against its endpoint (breaker and outlier ejection).
 *
 * Counted: UNAVAILABLE (connection refused/reset, 5xx, invalid or truncated answers, an upstream's
 * own open breaker), the upstream's per-attempt timeout or its HTTP 408 (DEADLINE_EXCEEDED with
 * reason UPSTREAM_TIMEOUT), INTERNAL/UNKNOWN/DATA_LOSS/ABORTED, and anything that is not a
 * GatewayError.
 *
 * Not counted: client faults (INVALID_ARGUMENT, NOT_FOUND, UNIMPLEMENTED, …, and every other 4xx
 * but 408 and 429), cancels, the caller's own deadline (the caller chose how long to wait; the upstream's
 * `timeoutMs` is what says "too slow"), RESOURCE_EXHAUSTED (an upstream's rate limit is a quota,
 * not an outage, and our own load shedding never reaches a breaker), rejected credentials
 * (UPSTREAM_AUTH: a configuration fault that a breaker would only hide behind CIRCUIT_OPEN).
 * Whatever ends an attempt after the call's own signal aborted (cancel, deadline, this gateway's
 * shutdown) is not looked at here: the caller of this function leaves such outcomes out.
 */
export function countsAsFailure(err: unknown): boolean {
  if (!(err instanceof GatewayError)) {
    return true;
  }
  if (clientCodes.has(err.code) || err.code === Code.ResourceExhausted) {
    return false;
  }
  if (err.code === Code.DeadlineExceeded) {
    return err.reason === Reason.UpstreamTimeout;
  }
  if (err.reason === Reason.UpstreamAuth) {
    return false;
  }
  const status = Number(err.metadata["http_status"]);
  if (status >= 400 && status <= 499 && status !== 429) {
    return false;
  }
  return true;
}

/**
 * Whose failure a counted attempt is (docs/resilience.md, "Breaker scope"): the endpoint's, which
 * its breaker and outlier ejection count for every model it serves; or the model's on that
 * endpoint, counted by the breaker and ejection of that (endpoint, model) pair only.
 */
export type FailureScope = "endpoint" | "model";

/**
 * What an attempt that ended with `err` (its caller still there) says against its endpoint:
 * nothing (undefined), or a failure and its scope.
 *
 * - `model`: the endpoint answered — an error status, an answer that is not what was asked, a
 *   failure it declared in a stream, a timeout after its answer began — or it said that it does
 *   not have the model (NOT_FOUND, reason MODEL_NOT_FOUND, which is counted here although
 *   countsAsFailure leaves it out: a model not loaded on one server of a fleet, where the others
 *   may have it). One broken model on a server must not close the server to the others.
 * - `endpoint`: nothing came back, or the connection broke — refused, reset, connect and
 *   first-byte timeouts, a timeout before any answer, anything that is not a GatewayError.
 *
 * `progress` is what the transport reported (src/core/attempt-progress.ts); an error that
 * carries the upstream's answer (an UpstreamFailure cause: HTTP statuses, invalid answers) shows
 * that it answered even from an adapter that reports nothing.
 */
export function failureScope(err: unknown, progress: AttemptProgress): FailureScope | undefined {
  const answered = progress.answered || (err instanceof GatewayError && err.cause instanceof UpstreamFailure);
  const modelMissing = answered && err instanceof GatewayError && err.code === Code.NotFound && err.reason === Reason.ModelNotFound;
  if (!modelMissing && !countsAsFailure(err)) return undefined;
  return answered && !progress.connectionFailed ? "model" : "endpoint";
}

/**
 * Whether an attempt ended by its call's own signal still counts against its endpoint (a slow
 * failure): cut by the caller's deadline — not a cancel, not this gateway's shutdown — while the
 * upstream had sent nothing, after waiting at least `slowFailureMs`. Envoy's outlier detection
 * counts such timeouts too; without this, an upstream that accepts and never answers is never
 * counted by callers whose deadlines are shorter than `timeoutMs`. The floor keeps callers with
 * tiny deadlines from opening a healthy endpoint's breaker.
 */
export function isSlowFailure(abortReason: unknown, progress: AttemptProgress, waitedMs: number, slowFailureMs: number): boolean {
  return (
    !progress.answered &&
    waitedMs >= slowFailureMs &&
    abortReason instanceof GatewayError &&
    abortReason.code === Code.DeadlineExceeded
  );
}

/** How a failed attempt may be retried: not at all, or after at least `minDelayMs`. */
export type RetryVerdict = { readonly retry: false } | { readonly retry: true; readonly minDelayMs: number };

const noRetry: RetryVerdict = { retry: false };

/**
 * Whether another attempt (on another endpoint where there is one) may succeed where this one
 * failed, given the time left. Retryable: UNAVAILABLE (refused, reset before an answer, 502/503/504
 * and other 5xx, invalid answers; a truncated stream only if no event was passed on — the caller
 * checks that), the upstream's per-attempt timeout, and RESOURCE_EXHAUSTED from the upstream
 * (UPSTREAM_RATE_LIMITED) when it said when to come back (Retry-After / RetryInfo) and that moment
 * fits in `remainingMs`. A rate limit without a delay is not retried: nothing says when it ends.
 */
export function retryVerdict(err: unknown, remainingMs: number): RetryVerdict {
  if (!(err instanceof GatewayError)) {
    return noRetry;
  }
  switch (err.code) {
    case Code.Unavailable:
      return { retry: true, minDelayMs: 0 };
    case Code.DeadlineExceeded:
      return err.reason === Reason.UpstreamTimeout ? { retry: true, minDelayMs: 0 } : noRetry;
    case Code.ResourceExhausted:
      if (err.reason === Reason.UpstreamRateLimited && err.retryAfterMs !== undefined && err.retryAfterMs < remainingMs) {
        return { retry: true, minDelayMs: err.retryAfterMs };
      }
      return noRetry;
    default:
      return noRetry;
  }
}

/**
 * Whether a model's failure (its upstream's attempts exhausted) lets the gateway try the next
 * fallback model: the same outcomes as retries, plus rate limits whatever their delay (another
 * model has another quota). Never client faults, cancels, the caller's deadline, or our own load
 * shedding (OVERLOADED tells the caller to back off, it is not an upstream fault).
 */
export function allowsFallback(err: unknown): boolean {
  if (!(err instanceof GatewayError)) {
    return false;
  }
  switch (err.code) {
    case Code.Unavailable:
      return true;
    case Code.DeadlineExceeded:
      return err.reason === Reason.UpstreamTimeout;
    case Code.ResourceExhausted:
      return err.reason === Reason.UpstreamRateLimited;
    default:
      return false;
  }
}

/** The hint given with OVERLOADED: shedding clears as calls finish, typically within a second. */
export const overloadedRetryAfterMs = 1_000;

/** RESOURCE_EXHAUSTED, reason OVERLOADED: a concurrency limit is reached; no queue, try again soon. */
export function overloaded(what: string, limit: number): GatewayError {
  return new GatewayError(Code.ResourceExhausted, `${what} is at its limit of ${limit} concurrent calls; retry later`, {
    reason: Reason.Overloaded,
    metadata: { limit: String(limit) },
    retryAfterMs: overloadedRetryAfterMs,
  });
}
