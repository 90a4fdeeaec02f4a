/**
 * The OpenAI-compatible ingress's embeddings translation (src/ingress/openai/openai-embeddings.ts):
 * the API's request body → our EmbedRequest (always asking for packed FP32), our EmbedResponse →
 * the API's `list`, and the gateway's field names in errors → the API's.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import {
  EmbeddingEncoding,
  EmbedRequestSchema,
  EmbedResponseSchema,
} from "../../gen/infergate/v1/inference_service_pb.js";
import { GatewayError, invalidArgument, Reason } from "../../src/core/gateway-error.js";
import { fromEmbeddingsRequest, type InputShape, toApiField, toEmbeddingList, withApiField } from "../../src/ingress/openai/openai-embeddings.js";
import { toErrorAnswer } from "../../src/ingress/openai/openai-ingress-translate.js";
import { fp32FromNumbers } from "../../src/wire/fp32.js";
import { gatewayErrorOf } from "../helpers/gateway-errors.js";

type Obj = Record<string, unknown>;
type EmbedInit = MessageInitShape<typeof EmbedRequestSchema>;

const fp32 = EmbeddingEncoding.FP32_BYTES;

describe("fromEmbeddingsRequest", () => {
  it.each<[string, Obj, EmbedInit, InputShape, boolean]>([
    ["a string", { input: "hello" }, { texts: ["hello"] }, "string", false],
    ["an array of strings", { input: ["a", "b c"] }, { texts: ["a", "b c"] }, "strings", false],
    ["an array of token ids: one input", { input: [1, 2, 0, 4294967295] }, { tokens: [{ ids: [1, 2, 0, 4294967295] }] }, "token-ids", false],
    ["an array of token-id arrays", { input: [[1, 2], [3]] }, { tokens: [{ ids: [1, 2] }, { ids: [3] }] }, "token-id-arrays", false],
    ["dimensions", { input: "x", dimensions: 256 }, { texts: ["x"], dimensions: 256 }, "string", false],
    ["encoding_format float", { input: "x", encoding_format: "float" }, { texts: ["x"] }, "string", false],
    ["encoding_format base64", { input: "x", encoding_format: "base64" }, { texts: ["x"] }, "string", true],
    ["user is request metadata, as on the chat route", { input: "x", user: "u-1" }, { texts: ["x"], metadata: { "openai.user": "u-1" } }, "string", false],
    ["null is unset", { input: "x", dimensions: null, encoding_format: null, user: null, other: null }, { texts: ["x"] }, "string", false],
  ])("%s", (_name, extra, init, shape, base64) => {
    const call = fromEmbeddingsRequest({ model: "emb", ...extra });
    // Whatever the caller asked for, the gateway is asked for packed FP32.
    expect(call.request).toEqual(create(EmbedRequestSchema, { model: "emb", encoding: fp32, ...init }));
    expect(call.shape).toBe(shape);
    expect(call.base64).toBe(base64);
  });

  it.each<[string, unknown, string | undefined]>([
    ["a body that is not an object", [], undefined],
    ["no model", { input: "x" }, "model"],
    ["an empty model", { model: "", input: "x" }, "model"],
    ["a model that is not a string", { model: 3, input: "x" }, "model"],
    ["no input", { model: "emb" }, "input"],
    ["input null", { model: "emb", input: null }, "input"],
    ["an empty input list", { model: "emb", input: [] }, "input"],
    ["an empty string", { model: "emb", input: "" }, "input"],
    ["an empty string in the list", { model: "emb", input: ["a", ""] }, "input[1]"],
    ["an empty token-id array", { model: "emb", input: [[1], []] }, "input[1]"],
    ["an input that is an object", { model: "emb", input: { text: "x" } }, "input"],
    ["an input that is a number", { model: "emb", input: 5 }, "input"],
    ["a first element of the wrong type", { model: "emb", input: [true] }, "input[0]"],
    ["a null element", { model: "emb", input: ["a", null] }, "input[1]"],
    ["strings mixed with token arrays", { model: "emb", input: ["a", [1, 2]] }, "input[1]"],
    ["token arrays mixed with strings", { model: "emb", input: [[1, 2], "a"] }, "input[1]"],
    ["token ids mixed with strings", { model: "emb", input: [1, "a"] }, "input[1]"],
    ["token ids mixed with arrays", { model: "emb", input: [1, [2]] }, "input[1]"],
    ["a negative token id", { model: "emb", input: [[1, -1]] }, "input[0][1]"],
    ["a token id that is not whole", { model: "emb", input: [1.5] }, "input[0]"],
    ["a token id over 2^32 − 1", { model: "emb", input: [[4294967296]] }, "input[0][0]"],
    ["a token id as a string", { model: "emb", input: [["1"]] }, "input[0][0]"],
    ["dimensions 0", { model: "emb", input: "x", dimensions: 0 }, "dimensions"],
    ["negative dimensions", { model: "emb", input: "x", dimensions: -3 }, "dimensions"],
    ["dimensions not whole", { model: "emb", input: "x", dimensions: 1.5 }, "dimensions"],
    ["dimensions as a string", { model: "emb", input: "x", dimensions: "256" }, "dimensions"],
    ["an unknown encoding_format", { model: "emb", input: "x", encoding_format: "binary" }, "encoding_format"],
    ["a user that is not a string", { model: "emb", input: "x", user: 7 }, "user"],
    ["a key the API does not have", { model: "emb", input: "x", input_type: "query" }, "input_type"],
    ["a chat key", { model: "emb", input: "x", messages: [] }, "messages"],
  ])("%s: INVALID_ARGUMENT naming the field", (_name, body, field) => {
    const err = gatewayErrorOf(() => fromEmbeddingsRequest(body));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.metadata["field"]).toBe(field);
    // The answer's `param` is the field.
    const answer = toErrorAnswer(err);
    expect(answer.status).toBe(400);
    expect(answer.body.error.param).toBe(field ?? null);
  });

  it("a long unknown key is cut in the error", () => {
    const key = "k".repeat(5000);
    const err = gatewayErrorOf(() => fromEmbeddingsRequest({ model: "emb", input: "x", [key]: 1 }));
    expect(err.message.length).toBeLessThan(1000);
    expect(err.metadata["field"]!.length).toBeLessThan(300);
  });
});

describe("toEmbeddingList", () => {
  const v0 = [0.1, -0.2, 0.3, 1 / 3];
  const v1 = [1e-8, -1, 0, 0.5];
  const answer = create(EmbedResponseSchema, {
    embeddings: [
      { index: 0, fp32: fp32FromNumbers(v0) },
      { index: 1, fp32: fp32FromNumbers(v1), cached: true },
    ],
    model: "emb-fallback",
    modelVersion: "3",
    upstream: "up",
    usage: { promptTokens: 7, totalTokens: 7 },
    dimensions: 4,
  });

  it("float: the API's list, each value the FP32 value exactly", () => {
    const list = toEmbeddingList(answer, false);
    expect(Object.keys(list)).toEqual(["object", "data", "model", "usage"]);
    expect(list).toEqual({
      object: "list",
      data: [
        { object: "embedding", index: 0, embedding: v0.map(Math.fround) },
        { object: "embedding", index: 1, embedding: v1.map(Math.fround) },
      ],
      model: "emb-fallback",
      usage: { prompt_tokens: 7, total_tokens: 7 },
    });
    // Through JSON and back, still the FP32 values (the double of each, in full).
    const parsed = JSON.parse(JSON.stringify(list)) as { data: { embedding: number[] }[] };
    expect(parsed.data[0]!.embedding).toEqual(v0.map(Math.fround));
    expect(parsed.data[0]!.embedding[0]).not.toBe(0.1);
  });

  it("base64: the base64 of the little-endian FP32 bytes, which decode to the float path's values", () => {
    const list = toEmbeddingList(answer, true);
    const [e0, e1] = list.data as { embedding: string }[];
    expect(e0!.embedding).toBe(Buffer.from(fp32FromNumbers(v0)).toString("base64"));
    const bytes = Buffer.from(e1!.embedding, "base64");
    expect(bytes.length).toBe(16);
    expect([0, 1, 2, 3].map((i) => bytes.readFloatLE(i * 4))).toEqual(toEmbeddingList(answer, false).data[1]!.embedding);
  });

  it("a vector whose bytes are not 4-aligned in their buffer reads the same", () => {
    const buf = new Uint8Array(17);
    buf.set(fp32FromNumbers(v0), 1);
    const odd = create(EmbedResponseSchema, { embeddings: [{ index: 0, fp32: buf.subarray(1) }], model: "m" });
    expect(toEmbeddingList(odd, false).data[0]!.embedding).toEqual(v0.map(Math.fround));
  });

  it("usage: total is the prompt's when the upstream gave none; none at all is zeros", () => {
    const a = create(EmbedResponseSchema, { model: "m", usage: { promptTokens: 5 } });
    expect(toEmbeddingList(a, false).usage).toEqual({ prompt_tokens: 5, total_tokens: 5 });
    expect(toEmbeddingList(create(EmbedResponseSchema, { model: "m" }), false).usage).toEqual({ prompt_tokens: 0, total_tokens: 0 });
  });
});

describe("the gateway's field names in the API's", () => {
  it.each<[string, InputShape, string]>([
    ["texts", "string", "input"],
    ["texts[0]", "string", "input"],
    ["texts", "strings", "input"],
    ["texts[3]", "strings", "input[3]"],
    ["tokens", "token-ids", "input"],
    ["tokens[0].ids", "token-ids", "input"],
    ["tokens[0].ids[5]", "token-ids", "input[5]"],
    ["tokens[2]", "token-id-arrays", "input[2]"],
    ["tokens[2].ids", "token-id-arrays", "input[2]"],
    ["tokens[2].ids[5]", "token-id-arrays", "input[2][5]"],
    ["dimensions", "strings", "dimensions"],
    ["model", "strings", "model"],
    ['metadata["openai.user"]', "strings", "user"],
    ["textsx", "strings", "textsx"],
  ])("%s (%s) is %s", (field, shape, api) => {
    expect(toApiField(field, shape)).toBe(api);
  });

  it("an INVALID_ARGUMENT from the gateway: param and message name the API's field", () => {
    const err = withApiField(invalidArgument("texts", "at most 4 inputs, got 5"), "strings") as GatewayError;
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.reason).toBe(Reason.InvalidArgument);
    expect(err.message).toBe("input: at most 4 inputs, got 5");
    const answer = toErrorAnswer(err);
    expect(answer.status).toBe(400);
    expect(answer.body.error.param).toBe("input");
    expect(toErrorAnswer(withApiField(invalidArgument("tokens[1].ids[0]", "bad"), "token-id-arrays")).body.error.param).toBe("input[1][0]");
  });

  it("errors without a field, or whose field is the same, are unchanged", () => {
    const limited = new GatewayError(Code.ResourceExhausted, "slow down", { reason: Reason.RateLimited, retryAfterMs: 1500 });
    expect(withApiField(limited, "strings")).toBe(limited);
    const dims = invalidArgument("dimensions", "at most 8");
    expect(withApiField(dims, "strings")).toBe(dims);
    const other = new Error("x");
    expect(withApiField(other, "strings")).toBe(other);
  });
});
