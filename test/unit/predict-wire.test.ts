/**
 * The gRPC listener's bulk reading and writing of big Predict messages (src/wire/predict-wire.ts):
 * what it produces must decode to exactly what protobuf-es would give, the typed inputs rewritten
 * as the raw bytes of the same values.
 */
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { PredictRequestSchema, PredictResponseSchema } from "../../gen/infergate/v1/inference_service_pb.js";
import { DataType, type TensorContents, TensorSchema } from "../../gen/infergate/v1/tensor_pb.js";
import { bigPredictRequestBytes, encodePredictResponse, typedInputsToRaw } from "../../src/wire/predict-wire.js";
import { rawFromTyped } from "../../src/upstreams/tensor-bulk.js";

type Field = Exclude<keyof TensorContents, "$typeName" | "$unknown">;

/** Enough elements of every kind that the request is over the bulk threshold. */
const n = bigPredictRequestBytes + 17;

const cases: { datatype: DataType; field: Field; value: (i: number) => number | bigint | boolean }[] = [
  { datatype: DataType.FP32, field: "fp32Contents", value: (i) => Math.fround((i - 5000) / 7) },
  { datatype: DataType.FP64, field: "fp64Contents", value: (i) => (i - 5000) / 7 },
  { datatype: DataType.INT8, field: "intContents", value: (i) => (i % 256) - 128 },
  { datatype: DataType.INT16, field: "intContents", value: (i) => ((i * 37) % 65536) - 32768 },
  { datatype: DataType.INT32, field: "intContents", value: (i) => (i % 3 === 0 ? -2147483648 + i : 2147483647 - i) },
  { datatype: DataType.UINT8, field: "uintContents", value: (i) => i % 256 },
  { datatype: DataType.UINT16, field: "uintContents", value: (i) => (i * 37) % 65536 },
  { datatype: DataType.UINT32, field: "uintContents", value: (i) => 4294967295 - i },
  { datatype: DataType.INT64, field: "int64Contents", value: (i) => (i % 2 === 0 ? -(2n ** 63n) + BigInt(i) : 2n ** 62n + BigInt(i)) },
  { datatype: DataType.UINT64, field: "uint64Contents", value: (i) => 2n ** 64n - 1n - BigInt(i) },
  { datatype: DataType.BOOL, field: "boolContents", value: (i) => i % 3 === 0 },
];

function tensor(name: string, datatype: DataType, field: Field, values: unknown[], shape = [BigInt(values.length)]) {
  return { name, datatype, shape, data: { case: "contents" as const, value: { [field]: values } }, parameters: { p: { value: { case: "int64Param" as const, value: 3n } } } };
}

function request(inputs: MessageInitShape<typeof TensorSchema>[]) {
  return create(PredictRequestSchema, { model: "m", id: "abc", inputs, parameters: { q: { value: { case: "stringParam", value: "x" } } }, outputs: [{ name: "O" }] });
}

describe("typedInputsToRaw", () => {
  it.each(cases)("datatype $datatype: the typed input arrives as the raw bytes of the same values; every other field as it was", ({ datatype, field, value }) => {
    const values = Array.from({ length: n }, (_, i) => value(i));
    const small = tensor("s", DataType.FP32, "fp32Contents", [1.5, 2.5]);
    const req = request([tensor("big", datatype, field, values), small]);
    const bytes = toBinary(PredictRequestSchema, req);
    const rewritten = typedInputsToRaw(bytes);
    expect(rewritten).toBeDefined();
    const got = fromBinary(PredictRequestSchema, rewritten!);
    const want = fromBinary(PredictRequestSchema, bytes);
    // Every typed input of a big request, the small one too.
    for (const i of [0, 1]) {
      expect(got.inputs[i]!.data.case).toBe("rawContents");
      expect(Buffer.from(got.inputs[i]!.data.value as Uint8Array)).toEqual(Buffer.from(rawFromTyped(want.inputs[i]!, `inputs[${i}]`)));
    }
    // Everything else decodes as before.
    const withoutData = (r: typeof got) => ({ ...r, inputs: r.inputs.map((t) => ({ ...t, data: undefined })) });
    expect(withoutData(got)).toEqual(withoutData(want));
  });

  it("leaves alone: a small request, a raw input, a count that does not fit the shape, an out-of-range INT8, a wrong field for the datatype", () => {
    const values = Array.from({ length: n }, (_, i) => i % 100);
    const same = (inputs: MessageInitShape<typeof TensorSchema>[]) => typedInputsToRaw(toBinary(PredictRequestSchema, request(inputs)));
    expect(same([tensor("a", DataType.INT32, "intContents", [1, 2, 3])])).toBeUndefined();
    expect(same([{ name: "r", datatype: DataType.UINT8, shape: [BigInt(n)], data: { case: "rawContents", value: new Uint8Array(n) } }])).toBeUndefined();
    expect(same([tensor("a", DataType.INT32, "intContents", values, [BigInt(n + 1)])])).toBeUndefined();
    expect(same([tensor("a", DataType.INT8, "intContents", [...values.slice(1), 128])])).toBeUndefined();
    expect(same([tensor("a", DataType.INT32, "uintContents", values)])).toBeUndefined();
    // Not protobuf at all: protobuf-es reports it.
    expect(typedInputsToRaw(new Uint8Array(bigPredictRequestBytes).fill(0xff))).toBeUndefined();
  });
});

describe("encodePredictResponse", () => {
  it("big typed outputs decode to the same message as toBinary's", () => {
    const outputs = cases
      .filter((c) => c.datatype !== DataType.INT8 && c.datatype !== DataType.UINT8)
      .map((c, k) => tensor(`o${k}`, c.datatype, c.field, Array.from({ length: 5000 }, (_, i) => c.value(i))));
    const res = create(PredictResponseSchema, {
      model: "m",
      modelVersion: "1",
      id: "x",
      upstream: "u",
      cached: true,
      parameters: { a: { value: { case: "boolParam", value: true } } },
      outputs: [...outputs, tensor("small", DataType.INT32, "intContents", [-1, 0, 1]), { name: "raw", datatype: DataType.FP16, shape: [1n], data: { case: "rawContents", value: new Uint8Array([0, 0x3c]) } }],
    });
    const bytes = encodePredictResponse(res);
    expect(bytes).toBeDefined();
    expect(fromBinary(PredictResponseSchema, bytes!)).toEqual(fromBinary(PredictResponseSchema, toBinary(PredictResponseSchema, res)));
  });

  it("small answers are left to toBinary", () => {
    const res = create(PredictResponseSchema, { outputs: [tensor("o", DataType.FP32, "fp32Contents", [1, 2, 3])] });
    expect(encodePredictResponse(res)).toBeUndefined();
  });
});
