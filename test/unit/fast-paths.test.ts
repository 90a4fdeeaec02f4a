/**
 * The gRPC wire's shortcuts (src/wire/fast-paths.ts): every byte written by hand is byte for byte
 * what toBinary writes, remembered bytes are written as they are, and the listener's request
 * decoder gives what fromBinary gives (shared and frozen for the requests the cache keys). Request
 * interning with cache keys: test/unit/cache-key.test.ts; big Predicts: predict-wire.test.ts.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { FinishReason, Role } from "../../gen/infergate/v1/chat_pb.js";
import {
  ChatRequestSchema,
  ChatResponseSchema,
  DeleteSessionRequestSchema,
  GenerateResponseSchema,
  ListModelsResponseSchema,
  PredictRequestSchema,
  PredictResponseSchema,
} from "../../gen/infergate/v1/inference_service_pb.js";
import { DataType } from "../../gen/infergate/v1/tensor_pb.js";
import { bigPredictRequestBytes } from "../../src/wire/predict-wire.js";
import {
  cachedChatAnswer,
  isSharedRequest,
  predictResponseBytes,
  receivedDigest,
  rememberEncoding,
  requestDecoder,
  responseBytes,
  textDeltaBytes,
} from "../../src/wire/fast-paths.js";

const delta = (text: string) => create(GenerateResponseSchema, { event: { case: "textDelta", value: text } });

describe("textDeltaBytes", () => {
  // Lengths on each side of a varint's byte boundaries (1, 2, 3 and 4 bytes), in UTF-8 bytes.
  const texts: [string, string][] = [
    ["empty", ""],
    ["one byte", "a"],
    ["127 bytes", "x".repeat(127)],
    ["128 bytes", "x".repeat(128)],
    ["16,383 bytes", "x".repeat(16383)],
    ["16,384 bytes", "x".repeat(16384)],
    ["2,097,152 bytes", "x".repeat(2 ** 21)],
    ["multi-byte UTF-8", "héllo wörld — 日本語 🎉".repeat(9)],
    ["a lone surrogate (written as U+FFFD)", "a\uD800b"],
  ];

  it.each(texts)("%s: byte for byte toBinary's", (_name, text) => {
    const e = delta(text);
    const got = Buffer.from(textDeltaBytes(e)!);
    const want = Buffer.from(toBinary(GenerateResponseSchema, e));
    // Compared whole (toEqual on megabytes takes seconds); the head shows a difference first.
    expect(got.subarray(0, 16)).toEqual(want.subarray(0, 16));
    expect(got.length).toBe(want.length);
    expect(got.equals(want)).toBe(true);
  });

  it("leaves other events, and events with unknown fields, to toBinary", () => {
    expect(textDeltaBytes(create(GenerateResponseSchema, { event: { case: "final", value: { finishReason: FinishReason.STOP } } }))).toBeUndefined();
    expect(textDeltaBytes(create(GenerateResponseSchema))).toBeUndefined();
    const unknown = fromBinary(GenerateResponseSchema, Uint8Array.from([...toBinary(GenerateResponseSchema, delta("hi")), 0xf8, 0x01, 0x07]));
    expect(unknown.$unknown).toBeDefined();
    expect(textDeltaBytes(unknown)).toBeUndefined();
  });
});

describe("responseBytes", () => {
  it("is toBinary's bytes for every event and for answers written by protobuf-es", () => {
    const events = [
      delta("token"),
      create(GenerateResponseSchema, { event: { case: "toolCallDelta", value: { index: 1, id: "c", name: "f", arguments: "{}" } } }),
      create(GenerateResponseSchema, { event: { case: "final", value: { finishReason: FinishReason.LENGTH, model: "m", cached: true } } }),
    ];
    for (const e of events) expect(Buffer.from(responseBytes(GenerateResponseSchema, e))).toEqual(Buffer.from(toBinary(GenerateResponseSchema, e)));
    const models = create(ListModelsResponseSchema, { models: [{ name: "m" }] });
    expect(Buffer.from(responseBytes(ListModelsResponseSchema, models))).toEqual(Buffer.from(toBinary(ListModelsResponseSchema, models)));
    const small = create(PredictResponseSchema, { model: "m", outputs: [{ name: "o", datatype: DataType.FP32, shape: [2n], data: { case: "contents", value: { fp32Contents: [1, 2] } } }] });
    expect(Buffer.from(responseBytes(PredictResponseSchema, small))).toEqual(Buffer.from(toBinary(PredictResponseSchema, small)));
    expect(Buffer.from(predictResponseBytes(small))).toEqual(Buffer.from(toBinary(PredictResponseSchema, small)));
  });

  it("writes remembered bytes as they are", () => {
    const answer = create(ChatResponseSchema, { id: "x" });
    const bytes = toBinary(ChatResponseSchema, answer);
    rememberEncoding(answer, bytes);
    expect(responseBytes(ChatResponseSchema, answer)).toBe(bytes);
  });
});

describe("cachedChatAnswer", () => {
  const answer = create(ChatResponseSchema, {
    id: "chatcmpl-1",
    message: { role: Role.ASSISTANT, content: [{ part: { case: "text", value: "Hello ✓" } }], toolCalls: [{ id: "t", name: "f", arguments: '{"a":1}' }] },
    finishReason: FinishReason.TOOL_CALLS,
    usage: { promptTokens: 3, completionTokens: 300, totalTokens: 303 },
    model: "m",
    modelVersion: "7",
    upstream: "u",
  });

  it("is the stored answer marked cached, frozen, whose bytes are toBinary's", () => {
    const hit = cachedChatAnswer(toBinary(ChatResponseSchema, answer));
    expect(hit).toEqual({ ...answer, cached: true });
    expect(Object.isFrozen(hit)).toBe(true);
    expect(Object.isFrozen(hit.message!.content)).toBe(true);
    expect(Buffer.from(responseBytes(ChatResponseSchema, hit))).toEqual(Buffer.from(toBinary(ChatResponseSchema, hit)));
  });

  it("stored already marked, or with unknown fields: toBinary's bytes", () => {
    const marked = cachedChatAnswer(toBinary(ChatResponseSchema, { ...answer, cached: true }));
    expect(Buffer.from(responseBytes(ChatResponseSchema, marked))).toEqual(Buffer.from(toBinary(ChatResponseSchema, marked)));
    const unknown = cachedChatAnswer(Uint8Array.from([...toBinary(ChatResponseSchema, answer), 0xf8, 0x01, 0x07]));
    expect(unknown.$unknown).toBeDefined();
    expect(Buffer.from(responseBytes(ChatResponseSchema, unknown))).toEqual(Buffer.from(toBinary(ChatResponseSchema, unknown)));
  });
});

describe("requestDecoder", () => {
  it("decodes a request the cache does not key with fromBinary: neither shared nor digested", () => {
    const bytes = Buffer.from(toBinary(DeleteSessionRequestSchema, create(DeleteSessionRequestSchema, { sessionId: "s" })));
    const m = requestDecoder(DeleteSessionRequestSchema)(bytes) as object;
    expect(m).toEqual(fromBinary(DeleteSessionRequestSchema, bytes));
    expect(isSharedRequest(m)).toBe(false);
    expect(receivedDigest(m)).toBeUndefined();
  });

  it("shares a small keyed request and keeps the digest of its bytes", () => {
    const bytes = Buffer.from(toBinary(ChatRequestSchema, create(ChatRequestSchema, { model: "m", messages: [{ role: Role.USER, content: [{ part: { case: "text", value: "decoder" } }] }] })));
    const decode = requestDecoder(ChatRequestSchema);
    const m = decode(bytes) as object;
    expect(m).toEqual(fromBinary(ChatRequestSchema, bytes));
    expect(isSharedRequest(m)).toBe(true);
    expect(receivedDigest(m)).toBe(createHash("sha256").update(bytes).digest("base64"));
    expect(decode(Buffer.from(bytes))).toBe(m);
  });

  it("reads a big Predict's typed inputs as raw bytes", () => {
    const n = bigPredictRequestBytes / 4 + 1;
    const values = Array.from({ length: n }, (_, i) => i / 8);
    const bytes = Buffer.from(
      toBinary(PredictRequestSchema, create(PredictRequestSchema, { model: "m", inputs: [{ name: "x", datatype: DataType.FP32, shape: [BigInt(n)], data: { case: "contents", value: { fp32Contents: values } } }] })),
    );
    const m = requestDecoder(PredictRequestSchema)(bytes) as ReturnType<typeof fromBinary<typeof PredictRequestSchema>>;
    expect(m.inputs[0]!.data.case).toBe("rawContents");
    expect(Buffer.from(m.inputs[0]!.data.value as Uint8Array)).toEqual(Buffer.from(Float32Array.from(values).buffer));
    expect(isSharedRequest(m)).toBe(false);
  });
});
