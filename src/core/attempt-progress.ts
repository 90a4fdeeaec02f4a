/**
 * What the transport learnt of the upstream attempt in progress, for the resilience layer to
 * judge how it ended (docs/resilience.md, "Slow failures" and "Breaker scope"): whether the
 * endpoint's answer began, and whether the connection broke.
 *
 * The attempt is known by the signal its adapter call was given (`UpstreamCall.signal`): every
 * adapter hands that signal to its transport unchanged (src/upstreams/http/http-upstream.ts,
 * src/upstreams/grpc/grpc-upstream.ts), so the transports can report here without each kind
 * passing anything more. A signal the resilience layer does not watch (a readiness probe's)
 * reports to nothing. One attempt at a time per signal: the attempts of one call run one after
 * another. It lives in src/core/ because both sides use it: the transports (src/upstreams/) report,
 * the resilience layer above them (src/resilience/) watches.
 */
export interface AttemptProgress {
  /** The endpoint's answer began: HTTP response headers, or gRPC response metadata or status. */
  answered: boolean;
  /** A socket failed (refused, reset, closed) — after the answer began, too. */
  connectionFailed: boolean;
  /**
   * The W3C trace context headers of the attempt's client span, when tracing is on
   * (CallSpan.attempt, src/core/call-context.ts): the transports send them upstream.
   */
  traceHeaders?: Readonly<Record<string, string>> | undefined;
}

const watched = new WeakMap<AbortSignal, AttemptProgress>();

/** Starts watching the attempt whose adapter call is given `signal`. */
export function watchAttempt(signal: AbortSignal): AttemptProgress {
  const progress: AttemptProgress = { answered: false, connectionFailed: false, traceHeaders: undefined };
  watched.set(signal, progress);
  return progress;
}

/** Stops watching; what the transport reports after this goes nowhere. */
export function unwatchAttempt(signal: AbortSignal, progress: AttemptProgress): void {
  if (watched.get(signal) === progress) watched.delete(signal);
}

/** For transports: the endpoint's answer to the attempt on `signal` began. */
export function attemptAnswered(signal: AbortSignal): void {
  const p = watched.get(signal);
  if (p !== undefined) p.answered = true;
}

/** For transports: the connection of the attempt on `signal` failed (refused, reset, closed). */
export function attemptConnectionFailed(signal: AbortSignal): void {
  const p = watched.get(signal);
  if (p !== undefined) p.connectionFailed = true;
}

/**
 * For transports: the trace context headers to send with the attempt on `signal` (a parent span
 * for the upstream), or undefined when tracing is off or the signal is not watched. Read when the
 * request is made: the attempts of one call run one after another.
 */
export function attemptTraceHeaders(signal: AbortSignal): Readonly<Record<string, string>> | undefined {
  return watched.get(signal)?.traceHeaders;
}
