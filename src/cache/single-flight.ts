import { Code } from "@connectrpc/connect";
import { GatewayError, Reason } from "../core/gateway-error.js";

interface Flight {
  readonly controller: AbortController;
  waiters: number;
}

interface UnaryFlight<T> extends Flight {
  readonly promise: Promise<T>;
}

interface StreamFlight<E> extends Flight {
  readonly events: E[];
  done: boolean;
  failed: boolean;
  error: unknown;
  /** Resolves at the next event or at the end; replaced after each. */
  changed: Promise<void>;
  wake: () => void;
}

/** What a caller of SingleFlight gets: the shared outcome and whether it joined another's call. */
export interface Joined<T> {
  readonly value: T;
  readonly joined: boolean;
}

export function abandoned(): GatewayError {
  return new GatewayError(Code.Canceled, "every caller of this request left", { reason: Reason.Cancelled });
}

/** Rejects when `signal` aborts, with its reason; never resolves otherwise. */
export function whenAborted(signal: AbortSignal): { promise: Promise<never>; dispose: () => void } {
  let onAbort: () => void = () => {};
  const promise = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason);
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
  promise.catch(() => {});
  return { promise, dispose: () => signal.removeEventListener("abort", onAbort) };
}

/**
 * Request coalescing: identical calls in flight at the same time share one upstream call. Each
 * caller waits with its own signal, so one caller's cancel or deadline affects only that caller;
 * when the last one leaves, the shared call is aborted. A failure reaches every waiter, and the
 * flight is forgotten as soon as it settles, so the next identical call starts afresh.
 */
export class SingleFlight {
  private readonly unaries = new Map<string, UnaryFlight<unknown>>();
  private readonly streams = new Map<string, StreamFlight<unknown>>();

  /** Calls in flight now (for tests and metrics). */
  get size(): number {
    return this.unaries.size + this.streams.size;
  }

  /** Whether a call with this key is in flight (unary or stream). */
  has(key: string): boolean {
    return this.unaries.has(key) || this.streams.has(key);
  }

  /** Runs `start` once for all concurrent callers with the same key. */
  async unary<T>(key: string, caller: AbortSignal, start: (signal: AbortSignal) => Promise<T>): Promise<Joined<T>> {
    caller.throwIfAborted();
    let flight = this.unaries.get(key) as UnaryFlight<T> | undefined;
    const joined = flight !== undefined;
    if (flight === undefined) {
      const controller = new AbortController();
      const promise = start(controller.signal).finally(() => {
        if (this.unaries.get(key) === flight) this.unaries.delete(key);
      });
      promise.catch(() => {});
      flight = { controller, waiters: 0, promise };
      this.unaries.set(key, flight as UnaryFlight<unknown>);
    }
    const f = flight;
    f.waiters++;
    const abort = whenAborted(caller);
    try {
      return { value: await Promise.race([f.promise, abort.promise]), joined };
    } catch (err) {
      // A caller that has gone (its deadline, its cancel) answers with its own reason, even when
      // the shared call failed in the same moment.
      throw caller.aborted ? caller.reason : err;
    } finally {
      abort.dispose();
      f.waiters--;
      if (f.waiters === 0) {
        // Settled flights ignore the abort; a pending one loses its last caller.
        f.controller.abort(abandoned());
        if (this.unaries.get(key) === f) this.unaries.delete(key);
      }
    }
  }

  /**
   * Runs the stream `start` once for all concurrent callers with the same key. A caller that
   * joins late first receives every event so far, then the live ones.
   */
  stream<E>(key: string, caller: AbortSignal, start: (signal: AbortSignal) => AsyncIterable<E>): Joined<AsyncGenerator<E>> {
    let flight = this.streams.get(key) as StreamFlight<E> | undefined;
    const joined = flight !== undefined;
    if (flight === undefined) {
      flight = this.startStream(key, start);
    }
    return { value: this.follow(key, flight, caller), joined };
  }

  private startStream<E>(key: string, start: (signal: AbortSignal) => AsyncIterable<E>): StreamFlight<E> {
    let wake: () => void = () => {};
    const f: StreamFlight<E> = {
      controller: new AbortController(),
      waiters: 0,
      events: [],
      done: false,
      failed: false,
      error: undefined,
      changed: new Promise((resolve) => (wake = resolve)),
      wake: () => {
        const w = wake;
        f.changed = new Promise((resolve) => (wake = resolve));
        w();
      },
    };
    this.streams.set(key, f as StreamFlight<unknown>);
    void (async () => {
      try {
        for await (const e of start(f.controller.signal)) {
          f.events.push(e);
          f.wake();
        }
      } catch (err) {
        f.failed = true;
        f.error = err;
      } finally {
        f.done = true;
        if (this.streams.get(key) === f) this.streams.delete(key);
        f.wake();
      }
    })();
    return f;
  }

  private async *follow<E>(key: string, f: StreamFlight<E>, caller: AbortSignal): AsyncGenerator<E> {
    f.waiters++;
    const abort = whenAborted(caller);
    let i = 0;
    try {
      for (;;) {
        while (i < f.events.length) {
          yield f.events[i++]!;
        }
        if (f.done) {
          if (f.failed) throw caller.aborted ? caller.reason : f.error;
          return;
        }
        await Promise.race([f.changed, abort.promise]);
      }
    } finally {
      abort.dispose();
      f.waiters--;
      if (f.waiters === 0 && !f.done) {
        f.controller.abort(abandoned());
        if (this.streams.get(key) === f) this.streams.delete(key);
      }
    }
  }
}
