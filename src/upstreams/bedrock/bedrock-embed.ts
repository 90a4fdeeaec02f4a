/**
 * Pure translations between infergate's Embed messages and the InvokeModel bodies of Bedrock's
 * embedding models: Amazon Titan Text Embeddings (one text per call: `{"inputText"}` →
 * `{"embedding", "inputTextTokenCount"}`) and Cohere Embed (a batch per call: `{"texts",
 * "input_type"}` → `{"embeddings"}`). No I/O: bedrock-upstream.ts sends what these build.
 * docs/upstream-bedrock.md, "Embeddings", has the mapping.
 */
import { create } from "@bufbuild/protobuf";
import { type EmbedRequest, type EmbedResponse, EmbeddingSchema, EmbedResponseSchema } from "../../../gen/infergate/v1/inference_service_pb.js";
import { type GatewayError, invalidArgument } from "../../core/gateway-error.js";
import { badResponse } from "../http/http-errors.js";
import { isObject, safeJson } from "../json-value.js";
import { vectorOf } from "../openai/openai-embeddings.js";
import { tokenCount, usageFromCounts } from "../usage.js";

/** The body formats of Bedrock's embedding models. */
export const embeddingFormats = ["titan", "cohere"] as const;
export type EmbeddingFormat = (typeof embeddingFormats)[number];

/** The format of a model id (or inference-profile ARN) that names a Titan or Cohere embedding model. */
export function embeddingFormatOf(modelId: string): EmbeddingFormat | undefined {
  if (/amazon\.titan-embed-/i.test(modelId)) return "titan";
  if (/cohere\.embed-/i.test(modelId)) return "cohere";
  return undefined;
}

/** The model's embedding options (its `embedding*` options). */
export interface EmbedContext {
  readonly format: EmbeddingFormat;
  /** Titan: `normalize` (default true at Bedrock). */
  readonly normalize?: boolean | undefined;
  /** Cohere: `input_type` (search_document, search_query, classification, clustering). */
  readonly inputType: string;
  /** Cohere: `truncate` (NONE, START, END). */
  readonly truncate?: string | undefined;
}

/**
 * The InvokeModel bodies for a request: one per text for Titan, one for the whole batch for
 * Cohere. Token-id inputs are refused (both take text), and so is `dimensions` for Cohere, whose
 * models have one size.
 */
export function toEmbedBodies(req: EmbedRequest, ctx: EmbedContext): Record<string, unknown>[] {
  if (req.tokens.length > 0) throw invalidArgument("tokens", "Bedrock's embedding models take texts, not token ids");
  if (req.texts.length === 0) throw invalidArgument("texts", "at least one input is required");
  if (ctx.format === "titan") {
    return req.texts.map((inputText) => ({
      inputText,
      ...(req.dimensions !== undefined ? { dimensions: req.dimensions } : {}),
      ...(ctx.normalize !== undefined ? { normalize: ctx.normalize } : {}),
    }));
  }
  if (req.dimensions !== undefined) throw invalidArgument("dimensions", "Cohere's embedding models on Bedrock have one size; leave dimensions unset");
  return [{ texts: [...req.texts], input_type: ctx.inputType, ...(ctx.truncate !== undefined ? { truncate: ctx.truncate } : {}) }];
}

/**
 * Reads the answers of the bodies toEmbedBodies made, in the same order, for `inputs` texts: one
 * packed FP32 vector per input, in input order, all of one length (`dimensions` when the request
 * set it). `inputTokens`: Titan's `inputTextTokenCount` summed, or for Cohere the count Bedrock
 * gave in its `X-Amzn-Bedrock-Input-Token-Count` header (0 when none). Anything else is
 * UNAVAILABLE UPSTREAM_BAD_RESPONSE.
 */
export function fromEmbedAnswers(upstream: string, format: EmbeddingFormat, answers: readonly { body: unknown; inputTokens?: number | undefined }[], inputs: number, dimensions?: number): EmbedResponse {
  const bad = (problem: string, body: unknown): GatewayError => badResponse(upstream, problem, safeJson(body));
  const vectors: unknown[] = [];
  let tokens = 0;
  for (const { body, inputTokens } of answers) {
    if (!isObject(body)) throw bad("the answer is not a JSON object", body);
    if (format === "titan") {
      vectors.push(body["embedding"]);
      tokens += tokenCount(body["inputTextTokenCount"]);
    } else {
      if (!Array.isArray(body["embeddings"])) throw bad("the answer has no embeddings array", body);
      vectors.push(...(body["embeddings"] as unknown[]));
      tokens += tokenCount(inputTokens);
    }
  }
  if (vectors.length !== inputs) throw bad(`${vectors.length} embeddings for ${inputs} inputs`, undefined);
  let length = -1;
  const embeddings = vectors.map((v, index) => {
    const fp32 = vectorOf(v);
    if (fp32 === undefined) throw bad(`embedding ${index} is not an array of numbers`, undefined);
    if (length === -1) {
      length = fp32.byteLength;
      if (length === 0) throw bad("an empty embedding", undefined);
      if (dimensions !== undefined && length !== dimensions * 4) throw bad(`embeddings of ${length / 4} values where ${dimensions} dimensions were asked for`, undefined);
    } else if (fp32.byteLength !== length) {
      throw bad(`embeddings of different lengths (${length / 4} and ${fp32.byteLength / 4} values)`, undefined);
    }
    return create(EmbeddingSchema, { index, fp32 });
  });
  return create(EmbedResponseSchema, { embeddings, dimensions: length / 4, usage: usageFromCounts({ prompt: tokens, completion: 0 }) });
}
