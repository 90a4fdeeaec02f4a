import type { GenerateResponse } from "../../../gen/infergate/v1/inference_service_pb.js";
import { GatewayError } from "../../core/gateway-error.js";
import { createSseDecoder, type SseEvent, SseDecodeError } from "../sse/sse-decoder.js";
import { badResponse } from "./http-errors.js";
import type { HttpAnswer, HttpUpstream } from "./http-upstream.js";

/**
 * Turns one kind's SSE events into our stream events, one SSE event at a time (each SSE kind's
 * createStreamTranslator: openai-translate.ts, anthropic-translate.ts).
 */
export interface StreamTranslator {
  /** The events an SSE event completes; throws a GatewayError for an error event or a malformed one. */
  push(event: SseEvent): GenerateResponse[];
  /** Whether the upstream's terminator arrived (the final event was returned); later events are ignored. */
  readonly done: boolean;
  /** Call when the body ended: throws UNAVAILABLE STREAM_TRUNCATED if the terminator never came. */
  end(): void;
}

const doneResult: IteratorReturnResult<undefined> = Object.freeze({ done: true, value: undefined });

/**
 * The events of an upstream's SSE answer, translated: checks the content type, decodes with the
 * size bound, stops at the terminator, and maps failures once for every SSE kind — translator and
 * adapter errors pass, a malformed stream is UPSTREAM_BAD_RESPONSE, I/O errors go through the
 * HTTP layer's mapping (caller cancel, deadline, reset).
 *
 * `open` sends the request; it runs when the first event is asked for (as an async generator's
 * body would). After the terminator the rest of the response (a chunked body's last chunk) is
 * read in the background (HttpAnswer.drain), so that the connection goes back to the pool; the
 * terminal event is handed over at once, not after that read. Any other early exit (the consumer
 * stops, a failure) closes the connection, so the upstream stops generating.
 *
 * Not an async generator: when `next()` finds no event left it reads what the body holds
 * ('readable', `read()`), splits it into SSE events, and translates the next of them (lazily, as
 * the generator did: the first event of a chunk holding 200 goes on before the other 199 are
 * parsed). Per event that
 * is one settled promise, where the generators it replaces (the body's async iterator, the SSE
 * decoder's, this one's and the adapter's `yield*`) cost four layers of promises and microtasks.
 * A failure of the body (reset, abort) is reported after the events that arrived before it.
 */
export function translateEventStream(
  http: HttpUpstream,
  upstream: string,
  open: () => Promise<HttpAnswer>,
  signal: AbortSignal,
  maxEventBytes: number,
  translator: StreamTranslator,
): AsyncIterableIterator<GenerateResponse> {
  const decoder = createSseDecoder({ maxEventSize: maxEventBytes });
  let answer: HttpAnswer | undefined;
  /** SSE events received and not yet translated: `raw[rawHead]` is the next. */
  let raw: SseEvent[] = [];
  let rawHead = 0;
  /** Events translated from one SSE event and not yet taken (most SSE events give one). */
  let out: GenerateResponse[] = [];
  let outHead = 0;
  /** The body is over: "end" (ended; the translator decides), or the failure to report. */
  let bodyOver: "end" | { error: unknown } | undefined;
  /** The consumer's pending `next()`, while nothing is ready. */
  let waiting: { resolve(r: IteratorResult<GenerateResponse>): void; reject(err: unknown): void } | undefined;
  /** The stream is over for the consumer: the end was given, or it stopped (return). */
  let closed = false;
  /** The translator saw the terminator, or the stream failed: the body is no longer read. */
  let stopped = false;

  function mapError(err: unknown): unknown {
    if (err instanceof GatewayError && !signal.aborted) return err;
    if (err instanceof SseDecodeError) return badResponse(upstream, err.message);
    return http.failure(err, signal, answer?.signal);
  }

  function detach(body: HttpAnswer["body"]): void {
    body.off("readable", onReadable);
    body.off("end", onEnd);
    body.off("error", onError);
    body.off("close", onClose);
  }

  /** Stops reading: complete (the rest of the body is drained) or not (the connection is closed). */
  function stop(complete: boolean): void {
    if (stopped) return;
    stopped = true;
    raw = [];
    rawHead = 0;
    const a = answer;
    if (a === undefined) return;
    detach(a.body);
    if (complete) {
      a.drain();
    } else if (!a.body.destroyed) {
      // Destroying the body can emit an error; with no listener that would crash the process.
      a.body.on("error", ignore);
      a.body.destroy();
    }
  }

  /**
   * The next thing for the consumer: an event, the end (done), a failure (thrown), or undefined
   * when it has to wait for more of the body.
   */
  function step(): IteratorResult<GenerateResponse> | undefined {
    for (;;) {
      if (outHead < out.length) {
        const e = out[outHead++]!;
        if (outHead === out.length) {
          out = [];
          outHead = 0;
        }
        return { done: false, value: e };
      }
      if (stopped) {
        // After the terminator (or a failure already thrown): the end.
        closed = true;
        return doneResult;
      }
      if (rawHead < raw.length) {
        const ev = raw[rawHead]!;
        raw[rawHead++] = undefined as never;
        if (rawHead === raw.length) {
          raw = [];
          rawHead = 0;
        }
        let events: GenerateResponse[];
        try {
          events = translator.push(ev);
        } catch (err) {
          fail(mapError(err));
        }
        out = events;
        outHead = 0;
        if (translator.done) stop(true);
        continue;
      }
      if (bodyOver === undefined) {
        // Read what the body holds now; nothing: wait for its next 'readable'.
        if (answer !== undefined && pull()) continue;
        return undefined;
      }
      if (bodyOver !== "end") fail(bodyOver.error);
      try {
        translator.end();
      } catch (err) {
        fail(mapError(err));
      }
      stop(true);
    }
  }

  /** Ends the stream with `err` (closing the connection) and throws it. */
  function fail(err: unknown): never {
    stop(false);
    closed = true;
    throw err;
  }

  /** Hands the consumer waiting (if any) what is ready. */
  function wake(): void {
    const w = waiting;
    if (w === undefined) return;
    let r: IteratorResult<GenerateResponse> | undefined;
    try {
      r = step();
    } catch (err) {
      waiting = undefined;
      w.reject(err);
      return;
    }
    if (r !== undefined) {
      waiting = undefined;
      w.resolve(r);
    }
  }

  /**
   * Reads what the body has buffered into `raw`; false when it holds nothing now. The body is read
   * only when the consumer wants the next event (as its async iterator did): a consumer that reads
   * slower than the upstream writes leaves the rest in the body's buffer and the socket, and the
   * upstream's writes stall (backpressure).
   */
  function pull(): boolean {
    const body = answer!.body;
    for (;;) {
      const chunk = body.read() as Buffer | null;
      if (chunk === null) return false;
      let events: SseEvent[];
      try {
        events = decoder.push(chunk);
      } catch (err) {
        overWith({ error: mapError(err) });
        return true;
      }
      if (events.length > 0) {
        raw = events;
        rawHead = 0;
        return true;
      }
    }
  }

  function onReadable(): void {
    wake();
  }

  /** The body is over (ended, failed): what it held is still handed over first. */
  function overWith(how: "end" | { error: unknown }): void {
    if (bodyOver !== undefined) return;
    bodyOver = how;
    const body = answer!.body;
    detach(body);
    if (how !== "end" && !body.destroyed) {
      body.on("error", ignore);
      body.destroy();
    }
    wake();
  }

  function onEnd(): void {
    let events: SseEvent[];
    try {
      events = decoder.end();
    } catch (err) {
      overWith({ error: mapError(err) });
      return;
    }
    for (const e of events) raw.push(e);
    overWith("end");
  }

  function onError(err: unknown): void {
    overWith({ error: mapError(err) });
  }

  // Closed without an end or an error: what `for await` reports as a premature close.
  function onClose(): void {
    overWith({ error: mapError(Object.assign(new Error("Premature close"), { code: "ERR_STREAM_PREMATURE_CLOSE" })) });
  }

  async function start(): Promise<void> {
    const a = await open();
    answer = a;
    http.expectEventStream(a);
    if (closed) {
      // The consumer left while the request was on its way.
      stopped = false;
      stop(false);
      return;
    }
    const body = a.body;
    if (body.destroyed) {
      overWith({ error: mapError(body.errored ?? Object.assign(new Error("Premature close"), { code: "ERR_STREAM_PREMATURE_CLOSE" })) });
      return;
    }
    body.on("readable", onReadable);
    body.on("end", onEnd);
    body.on("error", onError);
    body.on("close", onClose);
  }

  let started = false;

  const iterator: AsyncIterableIterator<GenerateResponse> = {
    next(): Promise<IteratorResult<GenerateResponse>> {
      if (closed) return Promise.resolve(doneResult);
      if (waiting !== undefined) return Promise.reject(new Error("translateEventStream: next() called while another is pending"));
      if (started) {
        let r: IteratorResult<GenerateResponse> | undefined;
        try {
          r = step();
        } catch (err) {
          return Promise.reject(err);
        }
        if (r !== undefined) return Promise.resolve(r);
      }
      const p = new Promise<IteratorResult<GenerateResponse>>((resolve, reject) => {
        waiting = { resolve, reject };
      });
      if (!started) {
        started = true;
        start().then(wake, (err: unknown) => {
          // The request failed (an error status, a network error, not an event stream): the
          // first next() fails with it, already mapped by the HTTP layer.
          closed = true;
          stopped = true;
          const w = waiting;
          waiting = undefined;
          w?.reject(err);
        });
      }
      return p;
    },
    return(): Promise<IteratorResult<GenerateResponse>> {
      const w = waiting;
      waiting = undefined;
      w?.resolve(doneResult);
      if (!closed) {
        closed = true;
        // The consumer stopped before the end: close the connection, so the upstream stops.
        stop(false);
      }
      out = [];
      return Promise.resolve(doneResult);
    },
    [Symbol.asyncIterator]() {
      return iterator;
    },
  };
  return iterator;
}

function ignore(): void {}
