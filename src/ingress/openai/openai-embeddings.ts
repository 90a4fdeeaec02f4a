/**
 * OpenAI's Embeddings API on the OpenAI-compatible ingress (`POST /v1/embeddings`,
 * openai-ingress.ts routes it here): the request body → our EmbedRequest, our EmbedResponse → the
 * API's `list` of `embedding` objects, and the gateway's field names in errors → the API's. Pure
 * functions, no I/O. docs/openai-ingress.md has the mapping.
 *
 * The gateway is always asked for EMBEDDING_ENCODING_FP32_BYTES, the form it keeps vectors in
 * (src/wire/fp32.ts): `encoding_format: "base64"` is then the base64 of those bytes, with no
 * per-value work, and `"float"` the numbers read from them.
 *
 * Requests are read as the Chat Completions route reads its own (openai-ingress-translate.ts):
 * every key maps or is refused with INVALID_ARGUMENT whose `field` (the error's `param`) names it,
 * never silently dropped; `null` means "unset".
 */
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import {
  type EmbedRequest,
  EmbedRequestSchema,
  type EmbedResponse,
  EmbeddingEncoding,
  TokenIdsSchema,
} from "../../../gen/infergate/v1/inference_service_pb.js";
import { echoed, GatewayError, invalidArgument, withFieldRenamed } from "../../core/gateway-error.js";
import { isObject } from "../../upstreams/json-value.js";
import type { EmbeddingsResponse } from "../../upstreams/openai/openai-embeddings-wire.js";
import { base64FromFp32, fp32View } from "../../wire/fp32.js";

/** The form of `input` in the body: what a gateway field name maps back to (see toApiField). */
export type InputShape = "string" | "strings" | "token-ids" | "token-id-arrays";

/** A request read from the API. */
export interface EmbeddingsCall {
  readonly request: EmbedRequest;
  /** `encoding_format: "base64"`: each vector as the base64 of its little-endian FP32 bytes. */
  readonly base64: boolean;
  /** How `input` was given, to name its elements in the gateway's errors. */
  readonly shape: InputShape;
}

/** The keys of the API's request body; any other key with a value is refused. */
const knownKeys = new Set(["model", "input", "dimensions", "encoding_format", "user"]);

const maxUint32 = 0xffff_ffff;

const inputKinds = "a non-empty string, an array of non-empty strings, an array of token ids, or an array of non-empty token-id arrays";

/** A token id: a whole number from 0 to 2^32 − 1 (TokenIds.ids is uint32). */
function tokenId(v: unknown, at: string): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > maxUint32) {
    throw invalidArgument(at, `a token id must be a whole number from 0 to ${maxUint32}`);
  }
  return v;
}

/**
 * Reads the body of `POST /v1/embeddings` (already parsed JSON). Throws INVALID_ARGUMENT naming the
 * key at fault by its path in the API (`input[3]`, `input[1][0]`): an empty input list, an empty
 * string or token array, strings mixed with token ids, a `dimensions` that is not a whole number
 * from 1, an unknown `encoding_format`, wrong types, keys the API does not have. Limits that are
 * the model's (its `embedding.maxInputs` and `dimensions`) are the gateway's to check; their errors
 * name our fields, which toApiField names back.
 *
 * `user` (an end-user id, for abuse monitoring at OpenAI) does not change the answer: it is kept
 * as `metadata["openai.user"]`, as the Chat Completions route keeps it: passed on only to another
 * infergate, never to a model server, and part of the cache key only when the model's
 * `cache.keyMetadata` names it.
 */
export function fromEmbeddingsRequest(body: unknown): EmbeddingsCall {
  if (!isObject(body)) {
    throw new GatewayError(Code.InvalidArgument, "the body must be a JSON object");
  }
  for (const [key, v] of Object.entries(body)) {
    if (v !== null && !knownKeys.has(key)) {
      throw invalidArgument(key, "not a field of the embeddings API (docs/openai-ingress.md lists what is)");
    }
  }
  const model = body["model"];
  if (typeof model !== "string" || model === "") {
    throw invalidArgument("model", "required: the name of a model this gateway serves");
  }
  const request = create(EmbedRequestSchema, { model, encoding: EmbeddingEncoding.FP32_BYTES });
  const shape = readInput(body["input"], request);

  const dimensions = body["dimensions"];
  if (dimensions !== undefined && dimensions !== null) {
    if (typeof dimensions !== "number" || !Number.isInteger(dimensions) || dimensions < 1 || dimensions > maxUint32) {
      throw invalidArgument("dimensions", `must be a whole number from 1 to ${maxUint32}`);
    }
    request.dimensions = dimensions;
  }
  const format = body["encoding_format"];
  if (format !== undefined && format !== null && format !== "float" && format !== "base64") {
    throw invalidArgument("encoding_format", 'one of "float", "base64"');
  }
  const user = body["user"];
  if (user !== undefined && user !== null) {
    if (typeof user !== "string") throw invalidArgument("user", "must be a string");
    request.metadata["openai.user"] = user;
  }
  return { request, base64: format === "base64", shape };
}

/** Puts `input` into `request.texts` or `request.tokens`, and says which form it had. */
function readInput(input: unknown, request: EmbedRequest): InputShape {
  if (typeof input === "string") {
    if (input === "") throw invalidArgument("input", "must not be an empty string");
    request.texts = [input];
    return "string";
  }
  if (input === undefined || input === null) {
    throw invalidArgument("input", `required: ${inputKinds}`);
  }
  if (!Array.isArray(input)) {
    throw invalidArgument("input", `must be ${inputKinds}`);
  }
  if (input.length === 0) {
    throw invalidArgument("input", "must not be an empty list");
  }
  const first: unknown = input[0];
  if (typeof first === "string") {
    const texts = new Array<string>(input.length);
    for (let i = 0; i < input.length; i++) {
      const v: unknown = input[i];
      if (typeof v !== "string") throw mixed(`input[${i}]`, "a string", v);
      if (v === "") throw invalidArgument(`input[${i}]`, "must not be an empty string");
      texts[i] = v;
    }
    request.texts = texts;
    return "strings";
  }
  if (typeof first === "number") {
    // One input given as token ids.
    const ids = new Array<number>(input.length);
    for (let i = 0; i < input.length; i++) ids[i] = tokenId(input[i], `input[${i}]`);
    request.tokens = [create(TokenIdsSchema, { ids })];
    return "token-ids";
  }
  if (Array.isArray(first)) {
    request.tokens = input.map((v: unknown, i) => {
      if (!Array.isArray(v)) throw mixed(`input[${i}]`, "an array of token ids", v);
      if (v.length === 0) throw invalidArgument(`input[${i}]`, "must not be an empty array of token ids");
      const ids = new Array<number>(v.length);
      for (let j = 0; j < v.length; j++) ids[j] = tokenId(v[j], `input[${i}][${j}]`);
      return create(TokenIdsSchema, { ids });
    });
    return "token-id-arrays";
  }
  throw invalidArgument("input[0]", `must be a string, a token id or an array of token ids (input is ${inputKinds})`);
}

/** An element of `input` unlike the first: mixed forms, or a wrong type. */
function mixed(at: string, expected: string, v: unknown): GatewayError {
  const got = v === null ? "null" : Array.isArray(v) ? "an array" : typeof v;
  return invalidArgument(at, `must be ${expected} like input[0], not ${got}: the inputs of one request are all strings or all token-id arrays`);
}

/**
 * The answer as the API's `list`: one `embedding` object per vector with its `index`, the
 * vector as numbers or (base64) the base64 of its FP32 bytes; `model` the model that answered (a
 * fallback's name when one did); `usage` the tokens the upstream counted (inputs answered from
 * infergate's cache count none).
 *
 * Numbers are written as JSON.stringify writes the FP32 values read as doubles (as OpenAI writes
 * its own): parsed back, each is exactly the FP32 value, the same a client decodes from base64. A
 * non-finite value (which no upstream should send) is `null`, as JSON.stringify writes it.
 * `Array.from` of the bytes' Float32Array per vector is what JSON.stringify serialises fastest
 * (64 vectors of 1536 values: ~15 ms, against ~19 ms for Float32Array.join and ~45 ms for a
 * string built value by value, Node 20); base64 takes ~0.2 ms for the same batch.
 */
export function toEmbeddingList(res: EmbedResponse, base64: boolean): EmbeddingsResponse {
  const data = res.embeddings.map((e) => ({
    object: "embedding" as const,
    index: e.index,
    embedding: base64 ? base64FromFp32(e.fp32) : Array.from(fp32View(e.fp32)),
  }));
  // Embeddings count prompt tokens only: the total is the prompt's when the upstream gave none.
  const prompt = res.usage?.promptTokens ?? 0;
  const total = res.usage?.totalTokens ?? 0;
  return { object: "list", data, model: res.model, usage: { prompt_tokens: prompt, total_tokens: total > 0 ? total : prompt } };
}

/**
 * The API's name of a field the gateway named by our EmbedRequest's path, `input` given as
 * `shape`: `texts[i]` and `tokens[i].ids` are `input[i]` (or `input` when the body had a single
 * input), `tokens[0].ids[j]` of a single token-id input is `input[j]`, `metadata` is `user` (the
 * one key the ingress puts there); others (`model`, `dimensions`) are the same.
 */
export function toApiField(field: string, shape: InputShape): string {
  const m = /^(texts|tokens)(?:\[(\d+)\](?:\.ids)?(?:\[(\d+)\])?)?(.*)$/.exec(field);
  if (m !== null) {
    const [, , i, j, rest] = m as unknown as [string, string, string | undefined, string | undefined, string];
    if (rest !== "" && !rest.startsWith(".") && !rest.startsWith("[")) return field;
    switch (shape) {
      case "string":
        return "input";
      case "token-ids":
        return j === undefined ? "input" : `input[${j}]`;
      default:
        return i === undefined ? "input" : j === undefined ? `input[${i}]` : `input[${i}][${j}]`;
    }
  }
  if (field === "metadata" || field.startsWith("metadata[") || field.startsWith("metadata.")) return "user";
  return field;
}

/**
 * `err` with its `field` (the error's `param`) and the message's leading path in the API's names
 * (toApiField); any other error unchanged.
 */
export function withApiField(err: unknown, shape: InputShape): unknown {
  return withFieldRenamed(err, (field) => toApiField(field, shape));
}
