import { Code } from "@connectrpc/connect";
import { GatewayError, Reason } from "../core/gateway-error.js";
import { UpstreamFailure } from "../upstreams/http/http-errors.js";
import type { LinkedAbort } from "./linked-abort.js";

/**
 * What a streaming attempt of the resilience wrapper (src/resilience/resilient-upstream.ts,
 * generate) needs beyond any attempt's: its idle timeout, its abort reason once over, and the
 * error of a stream broken off after its first event.
 */

/**
 * A stream whose connection failed after events went out is a truncated answer, and says so
 * (STREAM_TRUNCATED) rather than "could not be reached". Failures the upstream itself declared (an
 * error event, a bad event: their cause is an UpstreamFailure) and timeouts keep their own reason.
 */
export function brokenOff(err: unknown, sent: number, signal: AbortSignal, upstream: string): unknown {
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
export const attemptOver = new GatewayError(Code.Canceled, "the upstream attempt has ended", { reason: Reason.Cancelled });

/** The idle timeout of one attempt's stream (see idleWatch). */
export interface IdleWatch {
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
export function idleWatch(idleMs: number, attempt: LinkedAbort, upstream: string): IdleWatch {
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
