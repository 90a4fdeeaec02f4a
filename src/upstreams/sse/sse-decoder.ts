import { StringDecoder } from "node:string_decoder";

/**
 * One server-sent event (WHATWG HTML §9.2 "Server-sent events", event stream interpretation).
 * `event` is "message" when the stream named none; `data` is the data lines joined by "\n".
 */
export interface SseEvent {
  readonly event: string;
  readonly data: string;
  readonly id: string | undefined;
}

/** The stream is not a well-formed event stream we are willing to hold in memory. */
export class SseDecodeError extends Error {
  override readonly name = "SseDecodeError";
}

/** Decodes an event stream chunk by chunk; bytes may be split anywhere. */
export interface SseDecoder {
  /** Feeds bytes; returns the events they completed. */
  push(chunk: Uint8Array): SseEvent[];
  /** Ends the stream; an event without its closing blank line is dropped, as the spec says. */
  end(): SseEvent[];
}

export interface SseDecoderOptions {
  /** Largest event (its data plus the line being read), in UTF-16 code units ≈ bytes. */
  maxEventSize: number;
}

/**
 * Makes a decoder. It follows the spec's parsing rules: lines end with CR, LF or CRLF (also when
 * a CRLF is split between chunks); UTF-8 split inside a character is joined (a streaming
 * StringDecoder: for a token's chunk a third of TextDecoder's cost; a leading BOM is dropped, as
 * TextDecoder does); lines starting with ":" are comments; a field's value
 * loses one leading space; several `data` lines join with "\n"; a blank line dispatches the event;
 * an event with no data is not dispatched. Memory stays bounded: an event or unterminated line
 * longer than `maxEventSize` is an error, not a buffer that grows.
 */
export function createSseDecoder(options: SseDecoderOptions): SseDecoder {
  const text = new StringDecoder("utf8");
  /** Whether the stream's first character (a BOM or not) has been seen. */
  let started = false;
  let pending = "";
  let data: string[] = [];
  let dataSize = 0;
  let eventType = "";
  let lastId: string | undefined;

  function line(l: string, out: SseEvent[]): void {
    if (l === "") {
      if (data.length > 0) {
        out.push({ event: eventType === "" ? "message" : eventType, data: data.join("\n"), id: lastId });
      }
      data = [];
      dataSize = 0;
      eventType = "";
      return;
    }
    if (l.startsWith(":")) {
      return;
    }
    const colon = l.indexOf(":");
    const field = colon < 0 ? l : l.slice(0, colon);
    let value = colon < 0 ? "" : l.slice(colon + 1);
    if (value.startsWith(" ")) {
      value = value.slice(1);
    }
    switch (field) {
      case "data":
        dataSize += value.length + 1;
        if (dataSize > options.maxEventSize) {
          throw new SseDecodeError(`event larger than ${options.maxEventSize} bytes`);
        }
        data.push(value);
        return;
      case "event":
        eventType = value;
        return;
      case "id":
        if (!value.includes("\0")) {
          lastId = value;
        }
        return;
      default:
        // "retry" and unknown fields are ignored, as the spec says.
        return;
    }
  }

  /** Drops the BOM that may start the stream (TextDecoder's default). */
  function decoded(s: string): string {
    if (started || s === "") return s;
    started = true;
    return s.charCodeAt(0) === 0xfeff ? s.slice(1) : s;
  }

  function drain(final: boolean): SseEvent[] {
    const out: SseEvent[] = [];
    let start = 0;
    // The next LF and CR at or after `start`, found with indexOf (not a loop over characters) and
    // looked for again only once passed; -1: none left, -2: not looked for yet.
    let lf = -2;
    let cr = -2;
    for (;;) {
      if (lf !== -1 && lf < start) lf = pending.indexOf("\n", start);
      if (cr !== -1 && cr < start) cr = pending.indexOf("\r", start);
      const i = lf === -1 ? cr : cr === -1 ? lf : Math.min(lf, cr);
      if (i === -1) {
        break;
      }
      if (i === cr && i === pending.length - 1 && !final) {
        // A CR at the end of what we have may be the first half of a CRLF.
        break;
      }
      line(pending.slice(start, i), out);
      start = i === cr && pending.charCodeAt(i + 1) === 10 ? i + 2 : i + 1;
    }
    pending = pending.slice(start);
    if (pending.length + dataSize > options.maxEventSize) {
      throw new SseDecodeError(`event larger than ${options.maxEventSize} bytes`);
    }
    return out;
  }

  return {
    push(chunk) {
      pending += decoded(text.write(chunk));
      return drain(false);
    },
    end() {
      pending += decoded(text.end());
      const out = drain(true);
      pending = "";
      data = [];
      return out;
    },
  };
}

/** Decodes a whole body of byte chunks into events, ending with the spec's end-of-stream rule. */
export async function* decodeSse(body: AsyncIterable<Uint8Array>, options: SseDecoderOptions): AsyncGenerator<SseEvent> {
  const decoder = createSseDecoder(options);
  for await (const chunk of body) {
    yield* decoder.push(chunk);
  }
  yield* decoder.end();
}
