/**
 * The requests of the embeddings section (bench/lib/embed-bench.mjs, bench/embed-client.mjs): short
 * texts, an EmbedRequest of them (protobuf, with the generated schemas of dist/gen), and the OpenAI
 * JSON body infergate's openai upstream sends for them. Internal to bench/.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { EmbeddingEncoding, EmbedRequestSchema } from "../../dist/gen/infergate/v1/inference_service_pb.js";
import { grpcFrame } from "./common.mjs";

export const embedPath = "/infergate.v1.InferenceService/Embed";

/** A short text (about 70 characters), different for every `label`. */
export function shortText(label) {
  return `${label}: a short passage about the quick brown fox and the lazy dog.`;
}

/** `n` texts, `prefix` making them unique to one call (or one fixed set). */
export function texts(prefix, n) {
  return Array.from({ length: n }, (_, i) => shortText(`${prefix} ${i}`));
}

/** The caller's encoding by its name in the bench: fp32 (packed bytes) or float (numbers). */
export function encodingOf(name) {
  if (name === "fp32") return EmbeddingEncoding.FP32_BYTES;
  if (name === "float") return EmbeddingEncoding.FLOAT;
  throw new Error(`encoding ${name}: fp32 or float`);
}

/** An EmbedRequest for `model` (asking for `dimensions` when given), serialized with the 5-byte gRPC prefix. */
export function embedRequestFrame(model, inputs, encoding, dimensions) {
  return grpcFrame(toBinary(EmbedRequestSchema, create(EmbedRequestSchema, { model, texts: inputs, encoding: encodingOf(encoding), ...(dimensions === undefined ? {} : { dimensions }) })));
}

/**
 * The JSON body infergate's openai upstream sends for these texts (src/upstreams/openai/
 * openai-embeddings.ts toEmbeddingsRequest: model, input, encoding_format, dimensions when asked
 * for, in that order; compact).
 */
export function upstreamBody(upstreamModel, inputs, format, dimensions) {
  return JSON.stringify({ model: upstreamModel, input: inputs, encoding_format: format, ...(dimensions === undefined ? {} : { dimensions }) });
}

/** Writes a body file h2load sends into `dir`; returns its path. */
export function writeBody(dir, name, bytes) {
  const path = join(dir, name);
  writeFileSync(path, bytes);
  return path;
}
