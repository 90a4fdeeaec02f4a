/**
 * The gRPC listener's direct EmbedResponse encoder (src/wire/embed-wire.ts) gives byte for byte
 * what protobuf-es's toBinary gives, for answers of every shape; and falls back where it must.
 */
import { create, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { EmbeddingEncoding, EmbedResponseSchema } from "../../gen/infergate/v1/inference_service_pb.js";
import { applyEncoding } from "../../src/gateway/embed-batches.js";
import { encodeEmbedResponse } from "../../src/wire/embed-wire.js";
import { fp32FromNumbers, numbersFromFp32 } from "../../src/wire/fp32.js";

const same = (init: MessageInitShape<typeof EmbedResponseSchema>) => {
  const res = create(EmbedResponseSchema, init);
  expect(Buffer.from(encodeEmbedResponse(res)!)).toEqual(Buffer.from(toBinary(EmbedResponseSchema, res)));
};

describe("encodeEmbedResponse", () => {
  it("writes what toBinary writes", () => {
    same({});
    same({ usage: {} });
    same({ model: "m", modelVersion: "1", upstream: "up", cached: true, dimensions: 3, usage: { promptTokens: 300, totalTokens: 300, cachedPromptTokens: 2 } });
    same({ embeddings: [{ index: 0, values: [0.5, -1, 3.25] }, { index: 1, values: [1, 2, 3], cached: true }], dimensions: 3 });
    same({ embeddings: [{ fp32: fp32FromNumbers([1, 2]) }, { index: 200, fp32: fp32FromNumbers([0.1, 0.2]), cached: true }] });
    same({ embeddings: Array.from({ length: 70 }, (_, index) => ({ index, values: Array.from({ length: 1536 }, (_, i) => Math.fround(Math.sin(i + index))) })), model: "é-ü" });
  });

  it("writes what toBinary writes, for any answer", () => {
    const embedding = fc.record({
      index: fc.nat({ max: 2 ** 32 - 1 }),
      values: fc.array(fc.float({ noNaN: true }), { maxLength: 40 }),
      fp32: fc.uint8Array({ maxLength: 40 }),
      cached: fc.boolean(),
    });
    fc.assert(
      fc.property(
        fc.record({
          embeddings: fc.array(embedding, { maxLength: 5 }),
          model: fc.string(),
          upstream: fc.string(),
          cached: fc.boolean(),
          dimensions: fc.nat({ max: 2 ** 32 - 1 }),
          usage: fc.option(fc.record({ promptTokens: fc.nat({ max: 2 ** 32 - 1 }), totalTokens: fc.nat({ max: 2 ** 32 - 1 }) }), { nil: undefined }),
        }),
        (init) => same(init),
      ),
    );
  });

  it("writes FLOAT values from the packed bytes they were read from, as toBinary writes the numbers", () => {
    const fp32 = fp32FromNumbers([0.25, -7, Math.fround(0.3)]);
    const res = create(EmbedResponseSchema, { embeddings: [{ index: 0, fp32 }], dimensions: 3 });
    applyEncoding(res, EmbeddingEncoding.FLOAT);
    expect(res.embeddings[0]!.fp32).toHaveLength(0);
    expect(Buffer.from(encodeEmbedResponse(res)!)).toEqual(Buffer.from(toBinary(EmbedResponseSchema, res)));
    // Values changed after (no code does): the numbers are written, not the stale bytes.
    res.embeddings[0]!.values = [1, 2];
    expect(Buffer.from(encodeEmbedResponse(res)!)).toEqual(Buffer.from(toBinary(EmbedResponseSchema, res)));
  });

  it("leaves a message with unknown fields to toBinary", () => {
    const res = create(EmbedResponseSchema, { model: "m" });
    res.$unknown = [{ no: 99, wireType: 0, data: new Uint8Array([1]) }];
    expect(encodeEmbedResponse(res)).toBeUndefined();
  });
});

describe("numbersFromFp32", () => {
  it("reads every FP32 value, aligned or not", () => {
    const bytes = fp32FromNumbers([1.5, -2, 0.1]);
    expect(numbersFromFp32(bytes)).toEqual([1.5, -2, Math.fround(0.1)]);
    const unaligned = new Uint8Array(bytes.byteLength + 1).subarray(1);
    unaligned.set(bytes);
    expect(numbersFromFp32(unaligned)).toEqual([1.5, -2, Math.fround(0.1)]);
  });
});
