import type { GenerateResponse } from "../../../gen/infergate/v1/inference_service_pb.js";
import { GatewayError } from "../../gateway/gateway-error.js";
import { decodeSse, type SseEvent, SseDecodeError } from "../sse/sse-decoder.js";
import { badResponse } from "./http-errors.js";
import type { HttpAnswer, HttpUpstream } from "./http-upstream.js";

/** Turns one kind's SSE events into our stream events (e.g. the OpenAI or Anthropic translator). */
export interface EventTranslator {
  /** The events an SSE event gives; throws a GatewayError for an error event or a bad one. */
  push(event: SseEvent): Iterable<GenerateResponse>;
  /** The upstream's terminator was seen: the stream is complete. */
  readonly done: boolean;
  /** The byte stream ended; throws STREAM_TRUNCATED when the terminator never came. */
  end(): void;
}

/**
 * The events of an upstream's SSE answer, translated: checks the content type, decodes with the
 * size bound, stops at the terminator, and maps failures once for every SSE kind — translator and
 * adapter errors pass, a malformed stream is UPSTREAM_BAD_RESPONSE, I/O errors go through the
 * HTTP layer's mapping (caller cancel, deadline, reset). Any early exit closes the connection, so
 * the upstream stops generating.
 */
export async function* translateEventStream(
  http: HttpUpstream,
  upstream: string,
  answer: HttpAnswer,
  signal: AbortSignal,
  maxEventBytes: number,
  translator: EventTranslator,
): AsyncGenerator<GenerateResponse> {
  http.expectEventStream(answer);
  try {
    for await (const event of decodeSse(answer.body, { maxEventSize: maxEventBytes })) {
      yield* translator.push(event);
      if (translator.done) {
        return;
      }
    }
  } catch (err) {
    if (err instanceof GatewayError && !signal.aborted) {
      throw err;
    }
    if (err instanceof SseDecodeError) {
      throw badResponse(upstream, err.message);
    }
    throw http.failure(err, signal, answer.signal);
  } finally {
    answer.body.destroy();
  }
  translator.end();
}
