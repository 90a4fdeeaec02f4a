/**
 * Pure translations between infergate's Embed messages and the OpenAI embeddings API
 * (`POST /embeddings`, openai-wire.ts): the request body, and the answer read into packed FP32
 * vectors in input order (src/core/upstream.ts, Upstream.embed). No I/O: the client in
 * openai-upstream.ts sends what these build and feeds back what arrives. docs/upstream-openai.md,
 * "Embeddings", has the mapping.
 */
import { create } from "@bufbuild/protobuf";
import {
  type EmbedRequest,
  type EmbedResponse,
  type Embedding,
  EmbeddingSchema,
  EmbedResponseSchema,
} from "../../../gen/infergate/v1/inference_service_pb.js";
import { type GatewayError, invalidArgument } from "../../core/gateway-error.js";
import { bytesOf, littleEndian } from "../../wire/byte-order.js";
import { fp32FromBase64, fp32FromNumbers } from "../../wire/fp32.js";
import { badResponse } from "../http/http-errors.js";
import { isObject, safeJson } from "../json-value.js";
import { type AnswerContext, errorFromBody, usageOf } from "./openai-translate.js";
import type { EmbeddingEncodingFormat, EmbeddingsRequest } from "./openai-embeddings-wire.js";
import type { WireUsage } from "./openai-wire.js";

/** What an embeddings request needs beyond the caller's message. */
export interface EmbeddingsRequestContext {
  /** The model's name at the upstream; undefined leaves `model` out (Azure: the deployment names it). */
  readonly model: string | undefined;
  /** The `encoding_format` to ask for (the model's `embeddingEncoding` option). */
  readonly encoding: EmbeddingEncodingFormat;
}

/**
 * Builds the body of `POST /embeddings`: the texts, or the token-id lists, as `input` (always the
 * array form), `encoding_format`, and `dimensions` when the request sets it. The gateway has
 * validated the inputs (one kind, none empty); a request with both kinds or none is still refused
 * here with INVALID_ARGUMENT, since the API could not say which was meant. `cache_policy`,
 * `metadata` and `encoding` are the gateway's and never reach the upstream.
 */
export function toEmbeddingsRequest(req: EmbedRequest, ctx: EmbeddingsRequestContext): EmbeddingsRequest {
  let input: string[] | number[][];
  if (req.tokens.length === 0) {
    if (req.texts.length === 0) throw invalidArgument("texts", "at least one input is required (texts or tokens)");
    input = req.texts;
  } else {
    if (req.texts.length > 0) throw invalidArgument("tokens", "give the inputs as texts or as token ids, not both");
    input = req.tokens.map((t) => t.ids);
  }
  const body: EmbeddingsRequest = ctx.model !== undefined ? { model: ctx.model, input, encoding_format: ctx.encoding } : { input, encoding_format: ctx.encoding };
  if (req.dimensions !== undefined) body.dimensions = req.dimensions;
  return body;
}

/** The number of inputs of a request (texts or token-id lists). */
export function inputCount(req: EmbedRequest): number {
  return req.tokens.length > 0 ? req.tokens.length : req.texts.length;
}

/**
 * Reads the answer of `POST /embeddings` for a request of `inputs` inputs (that asked for
 * `dimensions`, when set): one embedding per input, put in input order by its `index` (servers may
 * list them in another order), each vector as packed little-endian FP32 whether it came as base64
 * (decoded, no per-value work) or as JSON numbers (one pass into FP32), `dimensions` their
 * length, `usage.promptTokens` the upstream's count. An `{"error": …}` body is the upstream's
 * failure (errorFromBody). Anything else that is not exactly one vector per input — a missing,
 * repeated or out-of-range index, a count that differs, a vector that is neither numbers nor
 * base64 of FP32, vectors of different lengths, or not of the length asked for — is UNAVAILABLE
 * UPSTREAM_BAD_RESPONSE, as every malformed answer (openai-translate.ts).
 */
export function fromEmbeddingsResponse(ctx: AnswerContext, body: unknown, inputs: number, dimensions?: number): EmbedResponse {
  // The body as text for the log only: serialised when an error needs it.
  const bad = (problem: string): GatewayError => badResponse(ctx.upstream, problem, safeJson(body));
  if (isObject(body) && body["error"] !== undefined && body["error"] !== null) {
    throw errorFromBody(ctx, body, safeJson(body) ?? "", "answer");
  }
  if (!isObject(body) || !Array.isArray(body["data"])) {
    throw bad("the answer has no data array");
  }
  const data = body["data"] as unknown[];
  if (data.length !== inputs) {
    throw bad(`${data.length} embeddings for ${inputs} inputs`);
  }
  const out = new Array<Embedding>(inputs);
  let length = -1;
  for (let i = 0; i < inputs; i++) {
    const item = data[i];
    if (!isObject(item)) throw bad(`data[${i}] is not an object`);
    const index = item["index"];
    if (typeof index !== "number" || !Number.isInteger(index) || index < 0 || index >= inputs) {
      throw bad(`data[${i}] has no index between 0 and ${inputs - 1}`);
    }
    if (out[index] !== undefined) throw bad(`two embeddings for index ${index}`);
    const fp32 = vectorOf(item["embedding"]);
    if (fp32 === undefined) throw bad(`data[${i}].embedding is neither an array of numbers nor base64 of FP32 values`);
    if (length === -1) {
      length = fp32.byteLength;
      if (length === 0) throw bad("an empty embedding");
      if (dimensions !== undefined && length !== dimensions * 4) {
        throw bad(`embeddings of ${length / 4} values where ${dimensions} dimensions were asked for`);
      }
    } else if (fp32.byteLength !== length) {
      throw bad(`embeddings of different lengths (${length / 4} and ${fp32.byteLength / 4} values)`);
    }
    out[index] = create(EmbeddingSchema, { index, fp32 });
  }
  const usage = body["usage"];
  if (usage !== undefined && usage !== null && !isObject(usage)) {
    throw bad("usage is not an object");
  }
  return create(EmbedResponseSchema, {
    embeddings: out,
    dimensions: Math.max(0, length / 4),
    // Embeddings have input tokens only (usageOf makes total = prompt).
    usage: usageOf({ prompt_tokens: isObject(usage) ? (usage["prompt_tokens"] as WireUsage["prompt_tokens"]) : undefined }),
  });
}

/**
 * A vector as packed little-endian FP32: base64 text decoded as it is; JSON numbers in one pass
 * that also checks each is a number (a string or null would otherwise become NaN or 0 silently).
 * Undefined for anything else.
 */
export function vectorOf(embedding: unknown): Uint8Array | undefined {
  if (typeof embedding === "string") return fp32FromBase64(embedding);
  if (!Array.isArray(embedding)) return undefined;
  const values = embedding as unknown[];
  const n = values.length;
  const f = new Float32Array(n);
  for (let j = 0; j < n; j++) {
    const v = values[j];
    if (typeof v !== "number") return undefined;
    f[j] = v;
  }
  return littleEndian ? bytesOf(f) : fp32FromNumbers(f);
}
