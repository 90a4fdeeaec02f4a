import { constants, type Http2Stream } from "node:http2";

/**
 * How long past a call's deadline its HTTP/2 stream may stay open with data the client does not
 * read, before infergate resets it.
 */
export const stuckStreamGraceMs = 1000;

/**
 * The HTTP/2 stream under a grpc-js server call. grpc-js does not expose it: its server call
 * objects hold it as `stream` on the innermost of their `call` / `nextCall` chain (grpc-js 1.14,
 * src/server-interceptors.ts). Undefined when the shape is not the one expected, so a grpc-js
 * upgrade that changes it turns the watch below off instead of breaking calls.
 */
function http2StreamOf(call: object): Http2Stream | undefined {
  let c: unknown = (call as { call?: unknown }).call;
  for (let depth = 0; depth < 8 && typeof c === "object" && c !== null; depth++) {
    const s = (c as { stream?: unknown }).stream;
    if (typeof s === "object" && s !== null && "rstCode" in s && typeof (s as Http2Stream).close === "function") return s as Http2Stream;
    c = (c as { nextCall?: unknown }).nextCall;
  }
  return undefined;
}

/**
 * Called when a server-streaming call has ended (its status is queued): a client that stopped
 * reading keeps the stream's flow-control window shut, and Node sends the trailers only after the
 * data queued before them, so the stream, its buffers and its slot in the connection's
 * concurrent streams would stay for as long as the connection lives (issue 17). Once the call's
 * deadline (epoch ms) and a grace have passed, a stream still open is reset with CANCEL, as gRPC
 * servers do with a call past its deadline.
 */
export function resetIfStuck(call: object, deadline: number): void {
  const stream = http2StreamOf(call);
  if (stream === undefined || stream.closed || stream.destroyed) return;
  const timer = setTimeout(
    () => {
      if (!stream.closed && !stream.destroyed) stream.close(constants.NGHTTP2_CANCEL);
    },
    Math.max(0, deadline - Date.now()) + stuckStreamGraceMs,
  );
  timer.unref();
  stream.once("close", () => clearTimeout(timer));
}
