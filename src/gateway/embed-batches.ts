import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import {
  EmbeddingEncoding,
  type EmbedRequest,
  EmbedRequestSchema,
  type EmbedResponse,
  EmbedResponseSchema,
} from "../../gen/infergate/v1/inference_service_pb.js";
import { GatewayError, Reason } from "../core/gateway-error.js";
import type { ModelRoute } from "../core/model-route.js";
import { rememberPackedValues } from "../wire/embed-wire.js";
import { numbersFromFp32 } from "../wire/fp32.js";

/**
 * An Embed's inputs as the upstream takes them: in batches of at most the model's
 * `embedding.maxBatch` (config), sent in parallel and joined again in input order, each answer
 * checked against the contract of Upstream.embed (src/core/upstream.ts). One failed batch fails
 * the call and aborts the others.
 */
export async function embedInBatches(
  route: ModelRoute,
  req: EmbedRequest,
  signal: AbortSignal,
  send: (req: EmbedRequest, signal: AbortSignal) => Promise<EmbedResponse>,
): Promise<EmbedResponse> {
  const n = req.texts.length + req.tokens.length;
  const size = route.embedding.maxBatch;
  if (size === undefined || n <= size) return checked(route, req, await send(req, signal));
  const failed = new AbortController();
  const each = AbortSignal.any([signal, failed.signal]);
  const parts: Promise<EmbedResponse>[] = [];
  for (let from = 0; from < n; from += size) {
    const part = create(EmbedRequestSchema, {
      ...req,
      texts: req.texts.slice(from, from + size),
      tokens: req.tokens.slice(from, from + size),
    });
    parts.push(
      send(part, each).then(
        (res) => checked(route, part, res),
        (err: unknown) => {
          failed.abort(err);
          throw err;
        },
      ),
    );
  }
  const answers = await Promise.all(parts);
  const joined = create(EmbedResponseSchema, { dimensions: answers[0]!.dimensions, usage: {} });
  for (const a of answers) {
    if (a.dimensions !== joined.dimensions) throw badAnswer(route, `batches answered vectors of ${joined.dimensions} and ${a.dimensions} values`);
    for (const e of a.embeddings) {
      e.index = joined.embeddings.length;
      joined.embeddings.push(e);
    }
    joined.usage!.promptTokens += a.usage?.promptTokens ?? 0;
    joined.usage!.totalTokens += a.usage?.totalTokens ?? a.usage?.promptTokens ?? 0;
  }
  return joined;
}

/**
 * An adapter's answer as the contract says: one vector per input, in order, all of the answer's
 * `dimensions` (the request's, when it asked for some). Anything else is the upstream's fault:
 * UNAVAILABLE, reason UPSTREAM_BAD_RESPONSE, as an HTTP upstream's malformed body; never a half answer.
 */
function checked(route: ModelRoute, req: EmbedRequest, res: EmbedResponse): EmbedResponse {
  const n = req.texts.length + req.tokens.length;
  if (res.embeddings.length !== n) throw badAnswer(route, `${res.embeddings.length} embeddings for ${n} inputs`);
  const dims = res.dimensions;
  if (dims === 0) throw badAnswer(route, "empty vectors");
  if (req.dimensions !== undefined && dims !== req.dimensions) throw badAnswer(route, `vectors of ${dims} values, ${req.dimensions} asked for`);
  for (let i = 0; i < n; i++) {
    const e = res.embeddings[i]!;
    if (e.index !== i) throw badAnswer(route, `embedding ${i} has index ${e.index}`);
    if (e.fp32.byteLength !== dims * 4) throw badAnswer(route, `embedding ${i} has ${e.fp32.byteLength} bytes, not ${dims} FP32 values`);
  }
  return res;
}

function badAnswer(route: ModelRoute, problem: string): GatewayError {
  const upstream = route.upstream.name;
  return new GatewayError(Code.Unavailable, `upstream "${upstream}" sent an invalid response: ${problem}`, {
    reason: Reason.UpstreamBadResponse,
    metadata: { upstream },
  });
}

/**
 * The caller's form of the vectors (EmbedRequest.encoding): numbers in `values`, or the packed
 * FP32 kept in `fp32`. Done per caller, after the cache, which keeps the packed form.
 */
export function applyEncoding(res: EmbedResponse, encoding: EmbeddingEncoding): EmbedResponse {
  if (encoding === EmbeddingEncoding.FP32_BYTES) return res;
  for (const e of res.embeddings) {
    e.values = numbersFromFp32(e.fp32);
    // The gRPC listener writes the values' packed form from these bytes (src/wire/embed-wire.ts).
    rememberPackedValues(e, e.fp32);
    e.fp32 = new Uint8Array(0);
  }
  return res;
}
