/**
 * The openai kind's embeddings translation (src/upstreams/openai/openai-embeddings.ts): an
 * EmbedRequest → the body of `POST /embeddings`, and the API's answer → an EmbedResponse of packed
 * FP32 vectors in input order, every malformed answer refused as UPSTREAM_BAD_RESPONSE. Also the
 * kind's per-model option `embeddingEncoding` and its `embed` capability.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { CachePolicy } from "../../gen/infergate/v1/chat_pb.js";
import { EmbeddingEncoding, EmbedRequestSchema } from "../../gen/infergate/v1/inference_service_pb.js";
import { ConfigError } from "../../src/config/config-error.js";
import { parseConfig } from "../../src/config/load-config.js";
import { Reason } from "../../src/core/gateway-error.js";
import { upstreamKindRegistry } from "../../src/upstreams/registry.js";
import { fromEmbeddingsResponse, inputCount, toEmbeddingsRequest } from "../../src/upstreams/openai/openai-embeddings.js";
import { openaiKind, openaiModelOptionsSchema } from "../../src/upstreams/openai/openai-upstream.js";
import { fp32FromNumbers, numbersFromFp32 } from "../../src/wire/fp32.js";
import { gatewayErrorOf } from "../helpers/gateway-errors.js";

type Obj = Record<string, unknown>;
type EmbedInit = MessageInitShape<typeof EmbedRequestSchema>;

const answers = { upstream: "emb-up", secrets: ["sk-test-secret-0123456789"] };
const ctx = { model: "text-embedding-3-small", encoding: "base64" as const };

const embed = (init: Partial<EmbedInit>) => create(EmbedRequestSchema, { model: "emb", ...init } as EmbedInit);

/** The base64 of packed FP32, as OpenAI sends `encoding_format: "base64"` vectors. */
const b64 = (values: number[]) => Buffer.from(fp32FromNumbers(values)).toString("base64");
const item = (index: number, embedding: unknown): Obj => ({ object: "embedding", index, embedding });
const list = (data: unknown[], usage: unknown = { prompt_tokens: 5, total_tokens: 5 }): Obj => ({ object: "list", data, model: "text-embedding-3-small", usage });

describe("toEmbeddingsRequest", () => {
  it("sends model, the texts as input and encoding_format, in that order, nothing else", () => {
    const req = embed({ texts: ["a b", "c"], encoding: EmbeddingEncoding.FLOAT, cachePolicy: CachePolicy.BYPASS, metadata: { team: "x" } });
    expect(JSON.stringify(toEmbeddingsRequest(req, ctx))).toBe('{"model":"text-embedding-3-small","input":["a b","c"],"encoding_format":"base64"}');
  });

  it("sends token ids as lists of numbers", () => {
    const req = embed({ tokens: [{ ids: [1, 2, 3] }, { ids: [4294967295] }] });
    expect(toEmbeddingsRequest(req, { ...ctx, encoding: "float" })).toEqual({ model: ctx.model, input: [[1, 2, 3], [4294967295]], encoding_format: "float" });
  });

  it("passes dimensions on when set, and leaves model out when the context gives none (Azure)", () => {
    expect(toEmbeddingsRequest(embed({ texts: ["a"], dimensions: 256 }), { model: undefined, encoding: "base64" })).toEqual({
      input: ["a"],
      encoding_format: "base64",
      dimensions: 256,
    });
  });

  it.each<[string, Partial<EmbedInit>, string]>([
    ["no input", {}, "texts"],
    ["texts and tokens together", { texts: ["a"], tokens: [{ ids: [1] }] }, "tokens"],
  ])("refuses %s with INVALID_ARGUMENT naming the field", (_name, init, field) => {
    const err = gatewayErrorOf(() => toEmbeddingsRequest(embed(init), ctx));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.metadata["field"]).toBe(field);
  });

  it("counts the inputs of either kind", () => {
    expect(inputCount(embed({ texts: ["a", "b"] }))).toBe(2);
    expect(inputCount(embed({ tokens: [{ ids: [1] }, { ids: [2] }, { ids: [3] }] }))).toBe(3);
  });
});

describe("fromEmbeddingsResponse", () => {
  const v0 = [0.5, -0.25, 0.125];
  const v1 = [1, 0, -1];
  const v2 = [0.1, 0.2, 0.3];

  it("reads base64 vectors into packed FP32, with dimensions and usage", () => {
    const res = fromEmbeddingsResponse(answers, list([item(0, b64(v0)), item(1, b64(v1))], { prompt_tokens: 7, total_tokens: 7 }), 2);
    expect(res.embeddings.map((e) => e.index)).toEqual([0, 1]);
    expect(res.embeddings.map((e) => numbersFromFp32(e.fp32))).toEqual([v0, v1]);
    expect(res.embeddings.every((e) => e.values.length === 0 && !e.cached)).toBe(true);
    expect(res.dimensions).toBe(3);
    expect(res.usage).toMatchObject({ promptTokens: 7, completionTokens: 0, totalTokens: 7 });
  });

  it("reads JSON numbers into the same FP32 bytes", () => {
    const res = fromEmbeddingsResponse(answers, list([item(0, v2), item(1, v0)]), 2);
    expect(res.embeddings.map((e) => [...e.fp32])).toEqual([[...fp32FromNumbers(v2)], [...fp32FromNumbers(v0)]]);
  });

  it("puts vectors listed out of order in input order", () => {
    const res = fromEmbeddingsResponse(answers, list([item(2, b64(v2)), item(0, b64(v0)), item(1, v1)]), 3);
    expect(res.embeddings.map((e) => e.index)).toEqual([0, 1, 2]);
    expect(res.embeddings.map((e) => numbersFromFp32(e.fp32))).toEqual([v0, v1, v2].map((v) => Array.from(Float32Array.from(v))));
  });

  it("counts no tokens when the answer tells none", () => {
    const bodies = [{ object: "list", data: [item(0, v0)] }, ...[null, {}, { prompt_tokens: null }, { prompt_tokens: -3 }].map((u) => list([item(0, v0)], u))];
    for (const body of bodies) {
      expect(fromEmbeddingsResponse(answers, body, 1).usage).toMatchObject({ promptTokens: 0, totalTokens: 0 });
    }
  });

  it("accepts vectors of the length asked for", () => {
    expect(fromEmbeddingsResponse(answers, list([item(0, v0)]), 1, 3).dimensions).toBe(3);
  });

  it.each<[string, unknown, number, number | undefined]>([
    ["a body that is not an object", [1, 2], 1, undefined],
    ["no data array", { object: "list", data: { 0: v0 } }, 1, undefined],
    ["fewer embeddings than inputs", list([item(0, v0)]), 2, undefined],
    ["more embeddings than inputs", list([item(0, v0), item(1, v1)]), 1, undefined],
    ["an item that is not an object", list([v0]), 1, undefined],
    ["a missing index", list([{ object: "embedding", embedding: v0 }]), 1, undefined],
    ["an index that is text", list([item("0" as unknown as number, v0)]), 1, undefined],
    ["a fractional index", list([item(0.5, v0), item(1, v1)]), 2, undefined],
    ["a negative index", list([item(-1, v0)]), 1, undefined],
    ["an index past the inputs", list([item(0, v0), item(2, v1)]), 2, undefined],
    ["a repeated index", list([item(1, v0), item(1, v1)]), 2, undefined],
    ["base64 with characters outside its alphabet", list([item(0, "not base64!")]), 1, undefined],
    ["base64 of bytes that are not whole FP32 values", list([item(0, "AAAAAAA=")]), 1, undefined],
    ["base64 without its padding", list([item(0, "AACAPwAAAEA")]), 1, undefined],
    // Each decodes to 8 bytes (Buffer.from skips or maps what is not base64): refused for the text.
    ["base64 of the URL-safe alphabet", list([item(0, "AAAA-_AAAAA=")]), 1, undefined],
    ["base64 with a line break", list([item(0, "AACAPwAA\nAEA")]), 1, undefined],
    ["a number array holding text", list([item(0, [0.1, "0.2"])]), 1, undefined],
    ["a number array holding null", list([item(0, [0.1, null])]), 1, undefined],
    ["an embedding that is an object", list([item(0, { values: v0 })]), 1, undefined],
    ["an empty embedding", list([item(0, [])]), 1, undefined],
    ["vectors of different lengths", list([item(0, v0), item(1, b64([1, 2]))]), 2, undefined],
    ["vectors not of the dimensions asked for", list([item(0, v0)]), 1, 256],
    ["usage that is not an object", list([item(0, v0)], 5), 1, undefined],
  ])("refuses %s as UNAVAILABLE UPSTREAM_BAD_RESPONSE", (_name, body, inputs, dimensions) => {
    const err = gatewayErrorOf(() => fromEmbeddingsResponse(answers, body, inputs, dimensions));
    expect(err.code).toBe(Code.Unavailable);
    expect(err.reason).toBe(Reason.UpstreamBadResponse);
    expect(err.metadata["upstream"]).toBe("emb-up");
  });

  it("reads an error object as the upstream's failure", () => {
    const limited = gatewayErrorOf(() => fromEmbeddingsResponse(answers, { error: { message: "slow down", type: "requests", code: "rate_limit_exceeded" } }, 1));
    expect(limited.code).toBe(Code.ResourceExhausted);
    const generic = gatewayErrorOf(() => fromEmbeddingsResponse(answers, { error: { message: "db host 10.0.0.7", type: "server_error" } }, 1));
    expect(generic.code).toBe(Code.Unavailable);
    expect(generic.message).not.toContain("10.0.0.7");
  });
});

describe("openai embeddings configuration", () => {
  it("asks for base64 unless a model's options say float", () => {
    expect(openaiModelOptionsSchema.parse({})).toEqual({ embeddingEncoding: "base64" });
    expect(openaiModelOptionsSchema.parse({ embeddingEncoding: "float" })).toEqual({ embeddingEncoding: "float" });
  });

  it("can serve embed, but a model has it only when its config lists it", () => {
    expect(openaiKind.capabilities).toContain("embed");
    expect(upstreamKindRegistry.openai.defaultCapabilities).toEqual(["chat", "generate"]);
  });

  const config = (modelOptions: string) => `
upstreams:
  - { name: emb-up, kind: openai, endpoints: ["https://api.openai.com/v1"], apiKey: "k" }
models:
  - name: emb
    upstream: emb-up
    upstreamModel: text-embedding-3-small
    capabilities: [embed]
    embedding: { dimensions: 1536, maxBatch: 512 }
    options: ${modelOptions}
`;

  it("accepts an embedding model with embeddingEncoding", () => {
    const c = parseConfig(config("{ embeddingEncoding: float }"), "(test)", {});
    expect(c.models[0]!.capabilities).toEqual(["embed"]);
    expect(openaiModelOptionsSchema.parse(c.models[0]!.options)).toEqual({ embeddingEncoding: "float" });
  });

  it.each([
    ["an unknown embeddingEncoding", "{ embeddingEncoding: binary }", "models[0].options.embeddingEncoding"],
    ["an unknown model option", "{ maxTokens: 5 }", "models[0].options"],
  ])("refuses %s", (_name, options, path) => {
    let err: unknown;
    try {
      parseConfig(config(options), "(test)", {});
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).issues.map((i) => i.path)).toEqual([path]);
  });
});
