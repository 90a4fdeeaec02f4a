/**
 * Table tests of the `kserve` kind's Embed translation (kserve-embed-translate.ts): the inference
 * request made of the texts, the vectors read from the FP32 output in both forms a server answers
 * in (raw bytes over gRPC, typed numbers from REST JSON), shortening, and the answers refused.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import {
  EmbedRequestSchema,
  type PredictResponse,
  PredictResponseSchema,
} from "../../gen/infergate/v1/inference_service_pb.js";
import { DataType, TensorForm } from "../../gen/infergate/v1/tensor_pb.js";
import { defaultEmbeddingTensors, type KserveEmbeddingTensors } from "../../src/upstreams/kserve/kserve-common.js";
import { fromEmbedPredictResponse, toEmbedPredictRequest } from "../../src/upstreams/kserve/kserve-embed-translate.js";
import { kserveModelOptionsSchema } from "../../src/upstreams/kserve/kserve-upstream.js";
import { splitLengthPrefixed } from "../../src/upstreams/tensor-codec.js";
import { fp32FromNumbers, numbersFromFp32 } from "../../src/wire/fp32.js";
import { gatewayErrorOf } from "../helpers/gateway-errors.js";

type TensorInit = NonNullable<MessageInitShape<typeof PredictResponseSchema>["outputs"]>[number];

const tensors = defaultEmbeddingTensors;
const rows = [
  [3, 4, 0, 0],
  [0, 0, 0, 2],
];

const answer = (...outputs: TensorInit[]): PredictResponse => create(PredictResponseSchema, { outputs });
const rawOutput = (name: string, datatype: DataType, shape: number[], bytes: Uint8Array): TensorInit => ({
  name,
  datatype,
  shape: shape.map(BigInt),
  data: { case: "rawContents", value: bytes },
});
const typedOutput = (name: string, shape: number[], values: number[]): TensorInit => ({
  name,
  datatype: DataType.FP32,
  shape: shape.map(BigInt),
  data: { case: "contents", value: { fp32Contents: values } },
});

describe("kserve embed translation", () => {
  it("the texts become one raw BYTES input, [n] or [n, 1], and the one output is asked for raw", () => {
    const req = create(EmbedRequestSchema, { model: "m", texts: ["a", "héllo"] });
    const p = toEmbedPredictRequest(req, tensors);
    expect(p.inputs).toHaveLength(1);
    const input = p.inputs[0]!;
    expect(input).toMatchObject({ name: "text", datatype: DataType.BYTES, shape: [2n] });
    expect(input.data.case).toBe("rawContents");
    const elements = splitLengthPrefixed(input.data.value as Uint8Array, "x").map((b) => new TextDecoder().decode(b));
    expect(elements).toEqual(["a", "héllo"]);
    expect(p.outputs.map((o) => o.name)).toEqual(["embedding"]);
    expect(p.outputForm).toBe(TensorForm.RAW);

    const b1 = toEmbedPredictRequest(req, { input: "TEXT", output: "E", inputShape: "batch1" });
    expect(b1.inputs[0]).toMatchObject({ name: "TEXT", shape: [2n, 1n] });
    expect(b1.outputs.map((o) => o.name)).toEqual(["E"]);
  });

  it("token ids are INVALID_ARGUMENT naming tokens", () => {
    const req = create(EmbedRequestSchema, { model: "m", tokens: [{ ids: [1, 2] }] });
    const err = gatewayErrorOf(() => toEmbedPredictRequest(req, tensors));
    expect(err).toMatchObject({ code: Code.InvalidArgument, metadata: { field: "tokens" } });
  });

  it("reads raw and typed FP32 answers alike, row i as input i, each in its own bytes", () => {
    const raw = answer(rawOutput("embedding", DataType.FP32, [2, 4], fp32FromNumbers(rows.flat())));
    const typed = answer(typedOutput("other", [1], [9]), typedOutput("embedding", [2, 4], rows.flat()));
    for (const res of [raw, typed]) {
      const out = fromEmbedPredictResponse("up", res, tensors, 2, undefined);
      expect(out.dimensions).toBe(4);
      expect(out.usage).toMatchObject({ promptTokens: 0, completionTokens: 0, totalTokens: 0 });
      expect(out.embeddings.map((e) => [e.index, numbersFromFp32(e.fp32)])).toEqual([
        [0, rows[0]],
        [1, rows[1]],
      ]);
      for (const e of out.embeddings) expect(e.fp32.buffer.byteLength).toBe(16);
    }
  });

  it("shortens to `dimensions` with unit length, also from a Buffer view at an odd offset (as grpc-js hands bytes)", () => {
    const packed = fp32FromNumbers(rows.flat());
    const pool = Buffer.alloc(packed.byteLength + 3, 0x7f);
    pool.set(packed, 3);
    const res = answer(rawOutput("embedding", DataType.FP32, [2, 4], pool.subarray(3)));
    const out = fromEmbedPredictResponse("up", res, tensors, 2, 2);
    expect(out.dimensions).toBe(2);
    expect(out.embeddings.map((e) => numbersFromFp32(e.fp32))).toEqual([
      [Math.fround(0.6), Math.fround(0.8)],
      // A zero vector stays zero.
      [0, 0],
    ]);
    expect(fromEmbedPredictResponse("up", res, tensors, 2, 4).dimensions).toBe(4);
  });

  it("dimensions above the output's length is INVALID_ARGUMENT naming dimensions", () => {
    const res = answer(typedOutput("embedding", [2, 4], rows.flat()));
    const err = gatewayErrorOf(() => fromEmbedPredictResponse("up", res, tensors, 2, 5));
    expect(err).toMatchObject({ code: Code.InvalidArgument, metadata: { field: "dimensions" } });
  });

  const bad: readonly (readonly [string, PredictResponse, RegExp])[] = [
    ["no outputs", answer(), /no output "embedding" in the answer \(outputs: none\)/],
    ["another output only", answer(typedOutput("x", [2, 4], rows.flat())), /no output "embedding" in the answer \(outputs: "x"\)/],
    ["FP16", answer(rawOutput("embedding", DataType.FP16, [2, 4], new Uint8Array(16))), /is FP16 where FP32 was expected/],
    ["one row short", answer(typedOutput("embedding", [1, 4], rows[0]!)), /has shape \[1, 4\] where \[2, dim\] was expected/],
    ["three dimensions", answer(typedOutput("embedding", [2, 1, 4], rows.flat())), /has shape \[2, 1, 4\]/],
    ["zero length", answer(typedOutput("embedding", [2, 0], [])), /has shape \[2, 0\]/],
    ["bytes short of the shape", answer(rawOutput("embedding", DataType.FP32, [2, 4], new Uint8Array(28))), /28 bytes for shape \[2, 4\]/],
    ["values short of the shape", answer(typedOutput("embedding", [2, 4], [1, 2, 3])), /output "embedding"/],
  ];
  it.each(bad)("a wrong answer (%s) is UNAVAILABLE UPSTREAM_BAD_RESPONSE", (_, res, message) => {
    const err = gatewayErrorOf(() => fromEmbedPredictResponse("up", res, tensors, 2, undefined));
    expect(err).toMatchObject({ code: Code.Unavailable, reason: "UPSTREAM_BAD_RESPONSE", metadata: { upstream: "up" } });
    expect(err.message).toMatch(message);
  });

  it("model options: embedding tensors, each defaulted, nothing else", () => {
    expect(kserveModelOptionsSchema.parse({}).embedding).toBeUndefined();
    expect(kserveModelOptionsSchema.parse({ embedding: {} }).embedding).toEqual(defaultEmbeddingTensors);
    const set: KserveEmbeddingTensors = { input: "TEXT", output: "EMB", inputShape: "batch1" };
    expect(kserveModelOptionsSchema.parse({ embedding: set }).embedding).toEqual(set);
    expect(kserveModelOptionsSchema.safeParse({ embedding: { inputShape: "batch2" } }).success).toBe(false);
    expect(kserveModelOptionsSchema.safeParse({ embedding: { input: "" } }).success).toBe(false);
    expect(kserveModelOptionsSchema.safeParse({ embedding: { dimensions: 3 } }).success).toBe(false);
  });
});
