/**
 * Pure translations between infergate's Embed messages and Gemini's embedding APIs
 * (gemini-wire.ts): Google AI's `embedContent` (one input) and `batchEmbedContents` (several), and
 * Vertex AI's `predict` for text embedding models. The answers are read into packed FP32 vectors
 * in input order (src/core/upstream.ts, Upstream.embed). No I/O; docs/upstream-gemini.md,
 * "Embeddings", has the mapping.
 */
import { create } from "@bufbuild/protobuf";
import { type EmbedRequest, type EmbedResponse, EmbeddingSchema, EmbedResponseSchema } from "../../../gen/infergate/v1/inference_service_pb.js";
import { type GatewayError, invalidArgument } from "../../core/gateway-error.js";
import { fp32FromNumbers } from "../../wire/fp32.js";
import { badResponse } from "../http/http-errors.js";
import { isObject, safeJson } from "../json-value.js";
import { tokenCount, usageFromCounts } from "../usage.js";
import type { BatchEmbedContentsRequest, EmbedContentRequest, VertexEmbedRequest } from "./gemini-wire.js";

/** The texts of an Embed request; Gemini embeds text only, so token-id inputs are refused. */
export function embedTexts(req: EmbedRequest): readonly string[] {
  if (req.tokens.length > 0) throw invalidArgument("tokens", "Gemini embeds texts only; send the inputs as texts");
  if (req.texts.length === 0) throw invalidArgument("texts", "at least one input is required");
  return req.texts;
}

/**
 * The body of `…:embedContent` for one text, or of `…:batchEmbedContents` for several (each of
 * its requests naming `models/{model}`, as the API requires), with the model's task type and the
 * request's `dimensions` as outputDimensionality.
 */
export function toGoogleEmbedRequest(
  texts: readonly string[],
  model: string,
  taskType: string | undefined,
  dimensions: number | undefined,
): EmbedContentRequest | BatchEmbedContentsRequest {
  const one = (text: string, withModel: boolean): EmbedContentRequest => ({
    ...(withModel ? { model: `models/${model}` } : {}),
    content: { parts: [{ text }] },
    ...(taskType === undefined ? {} : { taskType }),
    ...(dimensions === undefined ? {} : { outputDimensionality: dimensions }),
  });
  return texts.length === 1 ? one(texts[0]!, false) : { requests: texts.map((t) => one(t, true)) };
}

/** The body of Vertex AI's `…:predict` for a text embedding model. */
export function toVertexEmbedRequest(texts: readonly string[], taskType: string | undefined, dimensions: number | undefined): VertexEmbedRequest {
  return {
    instances: texts.map((content) => ({ content, ...(taskType === undefined ? {} : { task_type: taskType }) })),
    ...(dimensions === undefined ? {} : { parameters: { outputDimensionality: dimensions } }),
  };
}

/**
 * Reads the answer of `embedContent` (`{"embedding": {"values": […]}}`), `batchEmbedContents`
 * (`{"embeddings": [{"values": […]}, …]}`, in request order) or Vertex's `predict`
 * (`{"predictions": [{"embeddings": {"values": […], "statistics": {"token_count": n}}}, …]}`, whose
 * token counts are the usage; Google AI's answers tell none, so 0). Anything but exactly one
 * vector of numbers per input, all of one length (the asked-for `dimensions`, when set), is
 * UNAVAILABLE UPSTREAM_BAD_RESPONSE.
 */
export function fromEmbedResponse(upstream: string, body: unknown, inputs: number, dimensions: number | undefined): EmbedResponse {
  const bad = (problem: string): GatewayError => badResponse(upstream, problem, safeJson(body));
  if (!isObject(body)) throw bad("the answer is not a JSON object");
  let items: unknown[];
  let tokens = 0;
  if (Array.isArray(body["predictions"])) {
    items = (body["predictions"] as unknown[]).map((p) => {
      const e = isObject(p) ? p["embeddings"] : undefined;
      const stats = isObject(e) ? e["statistics"] : undefined;
      if (isObject(stats)) tokens += tokenCount(stats["token_count"]);
      return e;
    });
  } else if (Array.isArray(body["embeddings"])) {
    items = body["embeddings"] as unknown[];
  } else if (body["embedding"] !== undefined) {
    items = [body["embedding"]];
  } else {
    throw bad("the answer has no embeddings");
  }
  if (items.length !== inputs) throw bad(`${items.length} embeddings for ${inputs} inputs`);
  let length = -1;
  const embeddings = items.map((item, index) => {
    const values = isObject(item) ? item["values"] : undefined;
    if (!Array.isArray(values) || values.some((v) => typeof v !== "number")) throw bad(`embedding ${index} has no array of numbers`);
    if (length === -1) {
      length = values.length;
      if (length === 0) throw bad("an empty embedding");
      if (dimensions !== undefined && length !== dimensions) throw bad(`embeddings of ${length} values where ${dimensions} dimensions were asked for`);
    } else if (values.length !== length) {
      throw bad(`embeddings of different lengths (${length} and ${values.length} values)`);
    }
    return create(EmbeddingSchema, { index, fp32: fp32FromNumbers(values as number[]) });
  });
  return create(EmbedResponseSchema, {
    embeddings,
    dimensions: length,
    usage: usageFromCounts({ prompt: tokens, completion: 0 }),
  });
}
