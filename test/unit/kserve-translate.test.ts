/**
 * Table tests of the `kserve` kind's pure parts (kserve-grpc-translate.ts, kserve-rest-translate.ts,
 * kserve-common.ts) and the half-precision conversions (tensor-math.ts): our Predict ↔
 * ModelInferRequest/ModelInferResponse (gRPC) and ↔ the REST JSON, the JSON writer, paths,
 * versions, and the option schemas. Fixtures are inline, after the Open Inference Protocol
 * spec (kserve/kserve docs/predict-api/v2) and Triton's behaviour.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { type ModelInferResponse, ModelInferResponseSchema } from "../../gen/inference/grpc_service_pb.js";
import { type PredictRequest, PredictRequestSchema, type PredictResponse } from "../../gen/infergate/v1/inference_service_pb.js";
import { DataType, type ParameterValueSchema, type Tensor, TensorForm } from "../../gen/infergate/v1/tensor_pb.js";
import { parseConfig } from "../../src/config/load-config.js";
import { GatewayError } from "../../src/core/gateway-error.js";
import { parseExactJson } from "../../src/upstreams/exact-json.js";
import { upstreamVersion } from "../../src/upstreams/kserve/kserve-common.js";
import { fromModelInferResponse, toModelInferRequest } from "../../src/upstreams/kserve/kserve-grpc-translate.js";
import { fromRestInferResponse, restModelPath, toRestInferRequest, writeRestJson } from "../../src/upstreams/kserve/kserve-rest-translate.js";
import { kserveModelOptionsSchema, kserveOptionsSchema } from "../../src/upstreams/kserve/kserve-upstream.js";
import { applyOutputForm } from "../../src/upstreams/tensor-bulk.js";
import { bfloat16BitsToNumber, float16BitsToNumber, numberToBfloat16Bits, numberToFloat16Bits } from "../../src/upstreams/tensor-math.js";

type PredictInit = MessageInitShape<typeof PredictRequestSchema>;
type TensorInit = NonNullable<PredictInit["inputs"]>[number];
type ResponseInit = MessageInitShape<typeof ModelInferResponseSchema>;

function predict(inputs: TensorInit[], extra: Partial<PredictInit> = {}): PredictRequest {
  return create(PredictRequestSchema, { model: "m", inputs, ...extra } as PredictInit);
}

const typed = (name: string, datatype: DataType, shape: number[], field: string, values: unknown[]): TensorInit => ({
  name,
  datatype,
  shape: shape.map(BigInt),
  data: { case: "contents", value: { [field]: values } },
});
const raw = (name: string, datatype: DataType, shape: number[], bytes: number[] | Uint8Array): TensorInit => ({
  name,
  datatype,
  shape: shape.map(BigInt),
  data: { case: "rawContents", value: new Uint8Array(bytes) },
});
/** A tensor with parameters. */
const withParams = (t: TensorInit, parameters: Record<string, MessageInitShape<typeof ParameterValueSchema>>): TensorInit =>
  ({ ...(t as object), parameters }) as TensorInit;
const utf8 = (s: string) => new TextEncoder().encode(s);
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const le16 = (...words: number[]) => words.flatMap((w) => [w & 0xff, w >> 8]);

/** The thrown GatewayError as {code, field, message}. */
function failure(run: () => unknown): { code: Code; field: string | undefined; message: string; reason: string } {
  try {
    run();
  } catch (err) {
    if (err instanceof GatewayError) return { code: err.code, field: err.metadata["field"], message: err.message, reason: err.reason };
    throw err;
  }
  throw new Error("expected a GatewayError");
}

/** A tensor as plain data, for exact comparisons. */
function plain(t: Tensor) {
  const c = t.data.case === "contents" ? t.data.value : undefined;
  const values =
    c === undefined
      ? undefined
      : ([c.boolContents, c.intContents, c.int64Contents, c.uintContents, c.uint64Contents, c.fp32Contents, c.fp64Contents, c.bytesContents] as unknown[][]).find(
          (v) => v.length > 0,
        ) ?? [];
  return {
    name: t.name,
    datatype: DataType[t.datatype],
    shape: t.shape.map(Number),
    ...(c === undefined ? { raw: hex(t.data.value as Uint8Array) } : { values: values!.map((v) => (v instanceof Uint8Array ? hex(v) : v)) }),
    ...(Object.keys(t.parameters).length === 0 ? {} : { parameters: Object.fromEntries(Object.entries(t.parameters).map(([k, p]) => [k, p.value])) }),
  };
}

const plainResponse = (r: PredictResponse) => ({
  outputs: r.outputs.map(plain),
  parameters: Object.fromEntries(Object.entries(r.parameters).map(([k, p]) => [k, p.value])),
});

describe("half-precision conversions", () => {
  it.each([
    [0x0000, 0],
    [0x8000, -0],
    [0x3c00, 1],
    [0xc000, -2],
    [0x3555, 0.333251953125],
    [0x7bff, 65504],
    [0x0400, 2 ** -14],
    [0x0001, 2 ** -24],
    [0x03ff, 1023 * 2 ** -24],
    [0x7c00, Infinity],
    [0xfc00, -Infinity],
  ])("FP16 0x%s ↔ %s exactly", (bits, value) => {
    expect(Object.is(float16BitsToNumber(bits), value)).toBe(true);
    expect(numberToFloat16Bits(value)).toBe(bits);
  });

  it.each([
    [0x3f80, 1],
    [0x8000, -0],
    [0x4049, 3.140625],
    [0x7f7f, 3.3895313892515355e38],
    [0x0080, 2 ** -126],
    [0x0001, 2 ** -133],
    [0xff80, -Infinity],
  ])("BF16 0x%s ↔ %s exactly", (bits, value) => {
    expect(Object.is(bfloat16BitsToNumber(bits), value)).toBe(true);
    expect(numberToBfloat16Bits(value)).toBe(bits);
  });

  it.each([
    ["FP16 tie 1+2^-11 → even (1)", numberToFloat16Bits, 1 + 2 ** -11, 0x3c00],
    ["FP16 tie 1+3·2^-11 → even (1+2^-9)", numberToFloat16Bits, 1 + 3 * 2 ** -11, 0x3c02],
    ["FP16 just above a tie rounds up", numberToFloat16Bits, 1 + 2 ** -11 + 2 ** -30, 0x3c01],
    ["FP16 65520 (tie at the top) → Infinity", numberToFloat16Bits, 65520, 0x7c00],
    ["FP16 65519 → max finite", numberToFloat16Bits, 65519, 0x7bff],
    ["FP16 2^-25 (tie below the smallest subnormal) → 0", numberToFloat16Bits, 2 ** -25, 0x0000],
    ["FP16 largest subnormal + half a step → smallest normal", numberToFloat16Bits, 1023.5 * 2 ** -24, 0x0400],
    ["FP16 NaN → quiet NaN", numberToFloat16Bits, NaN, 0x7e00],
    ["FP16 0.1", numberToFloat16Bits, 0.1, 0x2e66],
    ["BF16 from the double, not via FP32 (no double rounding)", numberToBfloat16Bits, 1 + 2 ** -8 + 2 ** -40, 0x3f81],
    ["BF16 tie 1+2^-8 → even (1)", numberToBfloat16Bits, 1 + 2 ** -8, 0x3f80],
    ["BF16 NaN → quiet NaN", numberToBfloat16Bits, NaN, 0x7fc0],
    ["BF16 beyond the range → Infinity", numberToBfloat16Bits, 1e39, 0x7f80],
  ])("%s", (_name, toBits, value, bits) => {
    expect(toBits(value)).toBe(bits);
  });

  it("every FP16 and BF16 bit pattern but NaNs survives bits → number → bits", () => {
    const mismatches: string[] = [];
    for (let bits = 0; bits < 0x10000; bits++) {
      const h = float16BitsToNumber(bits);
      if (!Number.isNaN(h) && numberToFloat16Bits(h) !== bits) mismatches.push(`FP16 ${bits.toString(16)}`);
      const b = bfloat16BitsToNumber(bits);
      if (!Number.isNaN(b) && numberToBfloat16Bits(b) !== bits) mismatches.push(`BF16 ${bits.toString(16)}`);
    }
    expect(mismatches).toEqual([]);
    expect(Number.isNaN(float16BitsToNumber(0x7e01))).toBe(true);
    expect(Number.isNaN(bfloat16BitsToNumber(0xffc1))).toBe(true);
  });
});

describe("paths and versions", () => {
  it.each([
    ["simple", undefined, "infer", "/v2/models/simple/infer"],
    ["simple", "2", "infer", "/v2/models/simple/versions/2/infer"],
    ["simple", undefined, "ready", "/v2/models/simple/ready"],
    ["a b/c", "v 1", "ready", "/v2/models/a%20b%2Fc/versions/v%201/ready"],
  ] as const)("%s version %s %s → %s", (model, version, action, path) => {
    expect(restModelPath(model, version, action)).toBe(path);
  });

  it.each([
    ["neither: none sent", {}, {}, undefined],
    ["the model's upstreamVersion", {}, { upstreamVersion: "3" }, "3"],
    ["the request's pin", { modelVersion: "2" }, {}, "2"],
    ["the request's pin beats upstreamVersion", { modelVersion: "2" }, { upstreamVersion: "3" }, "2"],
  ])("%s", (_name, extra, options, version) => {
    expect(upstreamVersion(predict([], extra), options)).toBe(version);
  });
});

describe("gRPC: PredictRequest → ModelInferRequest", () => {
  const int32 = (name: string, values: number[]) => typed(name, DataType.INT32, [1, values.length], "intContents", values);

  it("typed inputs stay typed; every field maps", () => {
    const req = predict([withParams(int32("INPUT0", [1, 2]), { s: { value: { case: "stringParam", value: "v" } } }), typed("B", DataType.BYTES, [2], "bytesContents", [utf8("a"), new Uint8Array([0xff, 0])])], {
      id: "req-1",
      modelVersion: "2",
      parameters: { flag: { value: { case: "boolParam", value: true } }, n: { value: { case: "int64Param", value: -(2n ** 63n) } } },
      outputs: [{ name: "OUTPUT0", parameters: { classification: { value: { case: "int64Param", value: 2n } } } }, { name: "OUTPUT1" }],
      metadata: { "not.sent": "x" },
    });
    const m = toModelInferRequest(req, "simple", "2");
    expect({
      modelName: m.modelName,
      modelVersion: m.modelVersion,
      id: m.id,
      parameters: Object.fromEntries(Object.entries(m.parameters).map(([k, p]) => [k, p.parameterChoice])),
      inputs: m.inputs.map((t) => ({
        name: t.name,
        datatype: t.datatype,
        shape: t.shape,
        parameters: Object.fromEntries(Object.entries(t.parameters).map(([k, p]) => [k, p.parameterChoice])),
        int: t.contents?.intContents,
        bytes: t.contents?.bytesContents.map(hex),
      })),
      outputs: m.outputs.map((o) => ({ name: o.name, parameters: Object.fromEntries(Object.entries(o.parameters).map(([k, p]) => [k, p.parameterChoice])) })),
      raw: m.rawInputContents,
    }).toEqual({
      modelName: "simple",
      modelVersion: "2",
      id: "req-1",
      parameters: { flag: { case: "boolParam", value: true }, n: { case: "int64Param", value: -(2n ** 63n) } },
      inputs: [
        { name: "INPUT0", datatype: "INT32", shape: [1n, 2n], parameters: { s: { case: "stringParam", value: "v" } }, int: [1, 2], bytes: [] },
        { name: "B", datatype: "BYTES", shape: [2n], parameters: {}, int: [], bytes: ["61", "ff00"] },
      ],
      outputs: [
        { name: "OUTPUT0", parameters: { classification: { case: "int64Param", value: 2n } } },
        { name: "OUTPUT1", parameters: {} },
      ],
      raw: [],
    });
  });

  it("no version: model_version empty (the server's policy)", () => {
    expect(toModelInferRequest(predict([int32("A", [1])]), "simple", undefined).modelVersion).toBe("");
  });

  it("an empty typed tensor still carries (empty) contents, so the server sees it as typed", () => {
    const m = toModelInferRequest(predict([typed("E", DataType.FP32, [0], "fp32Contents", [])]), "x", undefined);
    expect(m.inputs[0]!.contents).toBeDefined();
    expect(m.rawInputContents).toEqual([]);
  });

  it.each([
    [
      "one raw input makes every input raw, in input order (typed ones encoded little-endian)",
      [int32("A", [1, -2]), raw("H", DataType.FP16, [1], le16(0x3c00)), typed("S", DataType.BYTES, [2], "bytesContents", [utf8("hi"), new Uint8Array([0])])],
      ["01000000feffffff", "003c", "02000000686901000000" + "00"],
    ],
    [
      "every datatype's typed form encodes to its raw form",
      [
        typed("b", DataType.BOOL, [2], "boolContents", [true, false]),
        typed("u8", DataType.UINT8, [1], "uintContents", [255]),
        typed("u16", DataType.UINT16, [1], "uintContents", [0x1234]),
        typed("u32", DataType.UINT32, [1], "uintContents", [0xffffffff]),
        typed("u64", DataType.UINT64, [1], "uint64Contents", [2n ** 64n - 1n]),
        typed("i8", DataType.INT8, [1], "intContents", [-1]),
        typed("i16", DataType.INT16, [1], "intContents", [-2]),
        typed("i64", DataType.INT64, [1], "int64Contents", [-(2n ** 63n)]),
        typed("f32", DataType.FP32, [1], "fp32Contents", [1]),
        typed("f64", DataType.FP64, [1], "fp64Contents", [-0]),
        raw("bf", DataType.BF16, [1], le16(0x7fc0)),
      ],
      ["0100", "ff", "3412", "ffffffff", "ffffffffffffffff", "ff", "feff", "0000000000000080", "0000803f", "0000000000000080", "c07f"],
    ],
    ["an empty raw tensor is an empty entry", [raw("E", DataType.FP16, [0], [])], [""]],
  ])("%s", (_name, inputs, rawHex) => {
    const m = toModelInferRequest(predict(inputs), "m", undefined);
    expect(m.inputs.every((t) => t.contents === undefined)).toBe(true);
    expect(m.rawInputContents.map(hex)).toEqual(rawHex);
    expect(m.inputs.map((t) => [t.name, t.datatype, t.shape.map(Number)])).toEqual(inputs.map((t) => [t.name, DataType[t.datatype!], t.shape!.map(Number)]));
  });

  it.each([
    [
      "a parameter without a value",
      predict([int32("A", [1])], { parameters: { p: {} } }),
      "parameters[\"p\"]",
    ],
    ["a tensor parameter without a value", predict([withParams(int32("A", [1]), { q: {} })]), 'inputs[0].parameters["q"]'],
    ["an output parameter without a value", predict([int32("A", [1])], { outputs: [{ name: "O", parameters: { r: {} } }] }), 'outputs[0].parameters["r"]'],
    ["a duplicate requested output", predict([int32("A", [1])], { outputs: [{ name: "O" }, { name: "O" }] }), "outputs[1].name"],
    ["UINT8 above 255", predict([typed("u", DataType.UINT8, [2], "uintContents", [1, 256])]), "inputs[0].contents.uint_contents[1]"],
    ["INT16 below -32768", predict([typed("i", DataType.INT16, [1], "intContents", [-32769])]), "inputs[0].contents.int_contents[0]"],
  ])("refused: %s (INVALID_ARGUMENT naming %s)", (_name, req, field) => {
    expect(failure(() => toModelInferRequest(req, "m", undefined))).toMatchObject({ code: Code.InvalidArgument, field });
  });
});

describe("gRPC: ModelInferResponse → PredictResponse", () => {
  const response = (init: ResponseInit): ModelInferResponse => create(ModelInferResponseSchema, { modelName: "simple", modelVersion: "1", ...init });

  it.each([
    [
      "typed outputs stay typed, parameters map back",
      response({
        outputs: [
          { name: "OUTPUT0", datatype: "INT32", shape: [1n, 2n], contents: { intContents: [3, -1] }, parameters: { p: { parameterChoice: { case: "doubleParam", value: 0.5 } } } },
          { name: "B", datatype: "BYTES", shape: [1n], contents: { bytesContents: [new Uint8Array([0, 0xff])] } },
        ],
        parameters: { seq: { parameterChoice: { case: "uint64Param", value: 2n ** 64n - 1n } }, empty: {} },
      }),
      {
        outputs: [
          { name: "OUTPUT0", datatype: "INT32", shape: [1, 2], values: [3, -1], parameters: { p: { case: "doubleParam", value: 0.5 } } },
          { name: "B", datatype: "BYTES", shape: [1], values: ["00ff"] },
        ],
        parameters: { seq: { case: "uint64Param", value: 2n ** 64n - 1n }, empty: { case: undefined } },
      },
    ],
    [
      "raw outputs pass through raw, byte for byte (raw_output_contents[i] ↔ outputs[i])",
      response({
        outputs: [
          { name: "I64", datatype: "INT64", shape: [2n] },
          { name: "H", datatype: "FP16", shape: [2n] },
          { name: "S", datatype: "BYTES", shape: [2n] },
          { name: "U8", datatype: "UINT8", shape: [3n] },
          { name: "E", datatype: "FP32", shape: [0n] },
        ],
        rawOutputContents: [
          new Uint8Array([...Buffer.from("ffffffffffffff7f", "hex"), ...Buffer.from("0000000000000080", "hex")]),
          new Uint8Array(le16(0x7c00, 0x8000)),
          new Uint8Array([1, 0, 0, 0, 0xfe, 0, 0, 0, 0]),
          new Uint8Array([0, 128, 255]),
          new Uint8Array(0),
        ],
      }),
      {
        outputs: [
          { name: "I64", datatype: "INT64", shape: [2], raw: "ffffffffffffff7f0000000000000080" },
          { name: "H", datatype: "FP16", shape: [2], raw: "007c0080" },
          { name: "S", datatype: "BYTES", shape: [2], raw: "01000000fe00000000" },
          { name: "U8", datatype: "UINT8", shape: [3], raw: "0080ff" },
          { name: "E", datatype: "FP32", shape: [0], raw: "" },
        ],
        parameters: {},
      },
    ],
    [
      "an empty FP16 output without raw contents is an empty raw tensor",
      response({ outputs: [{ name: "H", datatype: "FP16", shape: [0n] }] }),
      { outputs: [{ name: "H", datatype: "FP16", shape: [0], raw: "" }], parameters: {} },
    ],
  ])("%s", (_name, res, expected) => {
    expect(plainResponse(fromModelInferResponse("tri", res))).toEqual(expected);
  });

  it("output_form TYPED decodes raw outputs in bulk (FP16 stays raw); RAW encodes typed ones back, byte for byte", () => {
    const raw = [
      new Uint8Array([...Buffer.from("ffffffffffffff7f", "hex"), ...Buffer.from("0000000000000080", "hex")]),
      new Uint8Array(le16(0x7c00, 0x8000)),
      new Uint8Array([1, 0, 0, 0, 0xfe, 0, 0, 0, 0]),
      new Uint8Array([0, 128, 255]),
      new Uint8Array(0),
      // -1.5 and 2^-149 (the smallest subnormal) as FP32, at an odd offset in their buffer.
      new Uint8Array([9, ...Buffer.from("0000c0bf01000000", "hex")]).subarray(1),
      new Uint8Array([...Buffer.from("ffffffff00000080", "hex")]),
    ];
    const res = fromModelInferResponse(
      "tri",
      response({
        outputs: [
          { name: "I64", datatype: "INT64", shape: [2n] },
          { name: "H", datatype: "FP16", shape: [2n] },
          { name: "S", datatype: "BYTES", shape: [2n] },
          { name: "U8", datatype: "UINT8", shape: [3n] },
          { name: "E", datatype: "FP32", shape: [0n] },
          { name: "F", datatype: "FP32", shape: [2n] },
          { name: "I32", datatype: "INT32", shape: [2n] },
        ],
        rawOutputContents: raw,
      }),
    );
    const typed = applyOutputForm(res, TensorForm.TYPED);
    expect(plainResponse(typed).outputs).toEqual([
      { name: "I64", datatype: "INT64", shape: [2], values: [2n ** 63n - 1n, -(2n ** 63n)] },
      { name: "H", datatype: "FP16", shape: [2], raw: "007c0080" },
      { name: "S", datatype: "BYTES", shape: [2], values: ["fe", ""] },
      { name: "U8", datatype: "UINT8", shape: [3], values: [0, 128, 255] },
      { name: "E", datatype: "FP32", shape: [0], values: [] },
      { name: "F", datatype: "FP32", shape: [2], values: [-1.5, 2 ** -149] },
      { name: "I32", datatype: "INT32", shape: [2], values: [-1, -2147483648] },
    ]);
    // The answer itself is not changed (the cache may share it).
    expect(res.outputs.every((t) => t.data.case === "rawContents")).toBe(true);
    const back = applyOutputForm(typed, TensorForm.RAW);
    expect(back.outputs.map((t) => (t.data.case === "rawContents" ? Buffer.from(t.data.value).toString("hex") : t.data.case))).toEqual(
      raw.map((r) => Buffer.from(r).toString("hex")),
    );
    expect(applyOutputForm(res, TensorForm.UNSPECIFIED)).toBe(res);
  });

  it.each([
    ["fewer raw entries than outputs", response({ outputs: [{ name: "A", datatype: "INT8", shape: [1n] }, { name: "B", datatype: "INT8", shape: [1n] }], rawOutputContents: [new Uint8Array([1])] }), "1 raw_output_contents for 2 outputs"],
    ["an unknown datatype", response({ outputs: [{ name: "A", datatype: "FP8", shape: [1n], contents: {} }] }), 'outputs[0] ("A") has unknown datatype "FP8"'],
    ["contents that do not fill the shape", response({ outputs: [{ name: "A", datatype: "FP32", shape: [3n], contents: { fp32Contents: [1, 2] } }] }), "outputs[0].contents.fp32_contents: 2 values, but shape [3] has 3 elements"],
    ["contents in the wrong field", response({ outputs: [{ name: "A", datatype: "FP32", shape: [1n], contents: { fp64Contents: [1] } }] }), "outputs[0].contents.fp32_contents: 0 values, but shape [1] has 1 elements"],
    ["raw bytes that do not fit the shape", response({ outputs: [{ name: "A", datatype: "INT32", shape: [2n] }], rawOutputContents: [new Uint8Array(4)] }), "outputs[0].raw_contents: 4 bytes, but shape [2] of INT32 needs 8"],
    ["both typed and raw", response({ outputs: [{ name: "A", datatype: "INT8", shape: [1n], contents: { intContents: [1] } }], rawOutputContents: [new Uint8Array([1])] }), 'outputs[0] ("A") has both contents and raw_output_contents'],
    ["FP16 in typed contents", response({ outputs: [{ name: "A", datatype: "FP16", shape: [1n], contents: { fp32Contents: [1] } }] }), "outputs[0].contents: FP16 tensors must use raw_contents"],
    ["a negative dimension", response({ outputs: [{ name: "A", datatype: "INT8", shape: [-1n], contents: { intContents: [] } }] }), "outputs[0].shape[0]: dimension -1 is negative"],
    ["UINT8 beyond its range", response({ outputs: [{ name: "A", datatype: "UINT8", shape: [1n], contents: { uintContents: [300] } }] }), "outputs[0].contents.uint_contents[0]: 300 is out of range for UINT8 (0 to 255)"],
  ])("bad response: %s", (_name, res, problem) => {
    expect(failure(() => fromModelInferResponse("tri", res))).toEqual({
      code: Code.Unavailable,
      field: undefined,
      reason: "UPSTREAM_BAD_RESPONSE",
      message: `upstream "tri" sent an invalid response: ${problem}`,
    });
  });
});

describe("REST: PredictRequest → JSON body", () => {
  const body = (req: PredictRequest) => writeRestJson(toRestInferRequest(req));

  it.each([
    [
      "typed INT32 with id, parameters and outputs",
      predict([typed("INPUT0", DataType.INT32, [1, 2], "intContents", [1, -2])], {
        id: "r1",
        parameters: {
          b: { value: { case: "boolParam", value: false } },
          s: { value: { case: "stringParam", value: "x\"y" } },
          i: { value: { case: "int64Param", value: 7n } },
          big: { value: { case: "uint64Param", value: 2n ** 64n - 1n } },
          d: { value: { case: "doubleParam", value: 3 } },
          d2: { value: { case: "doubleParam", value: 0.25 } },
          d3: { value: { case: "doubleParam", value: 1e21 } },
        },
        outputs: [{ name: "OUTPUT0", parameters: { classification: { value: { case: "int64Param", value: 2n } } } }, { name: "OUTPUT1" }],
      }),
      '{"id":"r1","parameters":{"b":false,"s":"x\\"y","i":7,"big":18446744073709551615,"d":3.0,"d2":0.25,"d3":1e+21},' +
        '"inputs":[{"name":"INPUT0","shape":[1,2],"datatype":"INT32","data":[1,-2]}],' +
        '"outputs":[{"name":"OUTPUT0","parameters":{"classification":2}},{"name":"OUTPUT1"}]}',
    ],
    [
      "INT64/UINT64 extremes keep every digit; safe ones are plain numbers",
      predict([
        typed("i", DataType.INT64, [3], "int64Contents", [-(2n ** 63n), 2n ** 63n - 1n, 5n]),
        raw("u", DataType.UINT64, [1], Buffer.from("0100000000002000", "hex")),
      ]),
      '{"inputs":[{"name":"i","shape":[3],"datatype":"INT64","data":[-9223372036854775808,9223372036854775807,5]},' +
        '{"name":"u","shape":[1],"datatype":"UINT64","data":[9007199254740993]}]}',
    ],
    [
      "FP16/BF16 raw bits as their exact values, -0 as -0.0",
      predict([raw("h", DataType.FP16, [4], le16(0x3c00, 0x8000, 0x0001, 0x7bff)), raw("b", DataType.BF16, [1], le16(0x4049))]),
      '{"inputs":[{"name":"h","shape":[4],"datatype":"FP16","data":[1,-0.0,5.960464477539063e-8,65504]},' +
        '{"name":"b","shape":[1],"datatype":"BF16","data":[3.140625]}]}',
    ],
    [
      "BOOL, FP32 (raw), FP64, BYTES (UTF-8, a BOM kept), tensor parameters, empty tensor",
      predict([
        typed("t", DataType.BOOL, [2], "boolContents", [true, false]),
        raw("f", DataType.FP32, [1], Buffer.from("0000c0bf", "hex")),
        withParams(typed("d", DataType.FP64, [1], "fp64Contents", [0.1]), { k: { value: { case: "int64Param", value: 1n } } }),
        typed("s", DataType.BYTES, [2], "bytesContents", [utf8("\ufeffé"), utf8("")]),
        typed("e", DataType.UINT16, [0, 3], "uintContents", []),
      ]),
      '{"inputs":[{"name":"t","shape":[2],"datatype":"BOOL","data":[true,false]},' +
        '{"name":"f","shape":[1],"datatype":"FP32","data":[-1.5]},' +
        '{"name":"d","shape":[1],"datatype":"FP64","parameters":{"k":1},"data":[0.1]},' +
        '{"name":"s","shape":[2],"datatype":"BYTES","data":["\ufeffé",""]},' +
        '{"name":"e","shape":[0,3],"datatype":"UINT16","data":[]}]}',
    ],
  ])("%s", (_name, req, json) => {
    expect(body(req)).toBe(json);
  });

  it.each([
    ["NaN in FP32", predict([typed("x", DataType.FP32, [2], "fp32Contents", [1, NaN])]), "inputs[0].contents.fp32_contents[1]", 'tensor "x" element 1 is NaN'],
    ["Infinity in FP64", predict([typed("x", DataType.FP64, [1], "fp64Contents", [-Infinity])]), "inputs[0].contents.fp64_contents[0]", 'tensor "x" element 0 is -Infinity'],
    ["+Inf in FP16", predict([raw("h", DataType.FP16, [2], le16(0, 0x7c00))]), "inputs[0].raw_contents", 'tensor "h" element 1 is Infinity'],
    ["NaN in BF16", predict([raw("h", DataType.BF16, [1], le16(0x7fc1))]), "inputs[0].raw_contents", 'tensor "h" element 0 is NaN'],
    ["non-UTF-8 BYTES", predict([typed("s", DataType.BYTES, [2], "bytesContents", [utf8("ok"), new Uint8Array([0xc3, 0x28])])]), "inputs[0].contents.bytes_contents[1]", 'BYTES tensor "s" element 1 is not valid UTF-8'],
    ["non-UTF-8 raw BYTES", predict([raw("s", DataType.BYTES, [1], [1, 0, 0, 0, 0xff])]), "inputs[0].raw_contents", 'BYTES tensor "s" element 0 is not valid UTF-8'],
    ["a NaN double parameter", predict([typed("x", DataType.INT8, [0], "intContents", [])], { parameters: { t: { value: { case: "doubleParam", value: NaN } } } }), 'parameters["t"]', "NaN cannot be written"],
    ["Triton's binary_data output parameter", predict([typed("x", DataType.INT8, [0], "intContents", [])], { outputs: [{ name: "o", parameters: { binary_data: { value: { case: "boolParam", value: true } } } }] }), 'outputs[0].parameters["binary_data"]', "binary tensor data extension"],
    ["Triton's binary_data_output request parameter", predict([typed("x", DataType.INT8, [0], "intContents", [])], { parameters: { binary_data_output: { value: { case: "boolParam", value: true } } } }), 'parameters["binary_data_output"]', "binary tensor data extension"],
    ["a parameter without a value", predict([withParams(typed("x", DataType.INT8, [0], "intContents", []), { p: {} })]), 'inputs[0].parameters["p"]', "no value set"],
    ["INT8 out of range", predict([typed("x", DataType.INT8, [1], "intContents", [128])]), "inputs[0].contents.int_contents[0]", "128 is out of range for INT8"],
    ["a duplicate requested output", predict([typed("x", DataType.INT8, [0], "intContents", [])], { outputs: [{ name: "o" }, { name: "o" }] }), "outputs[1].name", 'duplicate output name "o"'],
  ])("refused: %s", (_name, req, field, problem) => {
    const f = failure(() => toRestInferRequest(req));
    expect({ code: f.code, field: f.field }).toEqual({ code: Code.InvalidArgument, field });
    expect(f.message).toContain(problem);
  });
});

describe("REST: JSON writer", () => {
  it.each([
    [{ $double: 2 }, "2.0"],
    [{ $double: -0 }, "-0.0"],
    [{ $double: 1.5 }, "1.5"],
    [{ $double: 1e-7 }, "1e-7"],
    [-0, "-0.0"],
    [2n ** 70n, "1180591620717411303424"],
    [{ a: [1, "x", true], skipped: undefined }, '{"a":[1,"x",true]}'],
  ])("%o → %s", (value, text) => {
    expect(writeRestJson(value)).toBe(text);
  });

  it("a non-finite number is a bug, not a body", () => {
    expect(() => writeRestJson([NaN])).toThrow("non-finite number NaN");
  });
});

describe("REST: JSON answer → PredictResponse", () => {
  const read = (text: string) => plainResponse(fromRestInferResponse("kfs", parseExactJson(text)));
  const answer = (outputs: string, extra = "") => `{"model_name":"m","model_version":"1"${extra},"outputs":[${outputs}]}`;

  it.each([
    [
      "Triton's simple model",
      answer('{"name":"OUTPUT0","datatype":"INT32","shape":[1,2],"data":[3,-1]},{"name":"OUTPUT1","datatype":"INT32","shape":[1,2],"data":[[1,5]]}', ',"id":"r1"'),
      {
        outputs: [
          { name: "OUTPUT0", datatype: "INT32", shape: [1, 2], values: [3, -1] },
          { name: "OUTPUT1", datatype: "INT32", shape: [1, 2], values: [1, 5] },
        ],
        parameters: {},
      },
    ],
    [
      "INT64/UINT64 beyond 2^53 read losslessly",
      answer('{"name":"i","datatype":"INT64","shape":[3],"data":[-9223372036854775808,9223372036854775807,-1]},{"name":"u","datatype":"UINT64","shape":[2],"data":[18446744073709551615,9007199254740993]}'),
      {
        outputs: [
          { name: "i", datatype: "INT64", shape: [3], values: [-(2n ** 63n), 2n ** 63n - 1n, -1n] },
          { name: "u", datatype: "UINT64", shape: [2], values: [2n ** 64n - 1n, 2n ** 53n + 1n] },
        ],
        parameters: {},
      },
    ],
    [
      "FP16/BF16 numbers to exact bits (raw); NaN/Infinity tokens accepted",
      answer('{"name":"h","datatype":"FP16","shape":[5],"data":[1,-0.0,65504,5.960464477539063e-8,Infinity]},{"name":"b","datatype":"BF16","shape":[2],"data":[3.140625,NaN]}'),
      {
        outputs: [
          { name: "h", datatype: "FP16", shape: [5], raw: "003c0080ff7b0100007c" },
          { name: "b", datatype: "BF16", shape: [2], raw: "4940c07f" },
        ],
        parameters: {},
      },
    ],
    [
      "BOOL, FP32 (rounded as the wire rounds), FP64, BYTES, empty, parameters",
      answer(
        '{"name":"t","datatype":"BOOL","shape":[2],"data":[true,false]},{"name":"f","datatype":"FP32","shape":[1],"data":[0.1],"parameters":{"x":"y"}},' +
          '{"name":"d","datatype":"FP64","shape":[1],"data":[0.1]},{"name":"s","datatype":"BYTES","shape":[1],"data":["é"]},{"name":"e","datatype":"INT8","shape":[0],"data":[]}',
        ',"parameters":{"n":3,"d":0.5,"b":true,"u":18446744073709551615,"i":-9223372036854775808}',
      ),
      {
        outputs: [
          { name: "t", datatype: "BOOL", shape: [2], values: [true, false] },
          { name: "f", datatype: "FP32", shape: [1], values: [Math.fround(0.1)], parameters: { x: { case: "stringParam", value: "y" } } },
          { name: "d", datatype: "FP64", shape: [1], values: [0.1] },
          { name: "s", datatype: "BYTES", shape: [1], values: ["c3a9"] },
          { name: "e", datatype: "INT8", shape: [0], values: [] },
        ],
        parameters: {
          n: { case: "int64Param", value: 3n },
          d: { case: "doubleParam", value: 0.5 },
          b: { case: "boolParam", value: true },
          u: { case: "uint64Param", value: 2n ** 64n - 1n },
          i: { case: "int64Param", value: -(2n ** 63n) },
        },
      },
    ],
  ])("%s", (_name, text, expected) => {
    expect(read(text)).toEqual(expected);
  });

  it.each([
    ["not an object", "[1]", "the answer is not a JSON object"],
    ["no outputs", '{"model_name":"m"}', 'the answer has no "outputs" array'],
    ["an unknown datatype", answer('{"name":"a","datatype":"STRING","shape":[1],"data":["x"]}'), 'outputs[0] ("a") has unknown datatype "STRING"'],
    ["a negative dimension", answer('{"name":"a","datatype":"INT8","shape":[-1],"data":[]}'), 'outputs[0] ("a") has no shape of non-negative integers'],
    ["too few values", answer('{"name":"a","datatype":"INT8","shape":[2,2],"data":[1,2,3]}'), 'outputs[0] ("a") has 3 values for shape [2, 2]'],
    ["INT8 out of range", answer('{"name":"a","datatype":"INT8","shape":[1],"data":[200]}'), 'outputs[0] ("a") element 0 is not a INT8 value: 200'],
    ["INT64 written as a float", answer('{"name":"a","datatype":"INT64","shape":[1],"data":[1e19]}'), 'outputs[0] ("a") element 0 is not a INT64 value: 10000000000000000000'],
    ["UINT64 negative", answer('{"name":"a","datatype":"UINT64","shape":[1],"data":[-1]}'), 'outputs[0] ("a") element 0 is not a UINT64 value: -1'],
    ["a fraction in INT32", answer('{"name":"a","datatype":"INT32","shape":[1],"data":[1.5]}'), 'outputs[0] ("a") element 0 is not a INT32 value: 1.5'],
    ["null for a float", answer('{"name":"a","datatype":"FP32","shape":[1],"data":[null]}'), 'outputs[0] ("a") element 0 is not a FP32 value: null'],
    ["a number for BYTES", answer('{"name":"a","datatype":"BYTES","shape":[1],"data":[1]}'), 'outputs[0] ("a") element 0 is not a BYTES value: 1'],
    ["0/1 for BOOL", answer('{"name":"a","datatype":"BOOL","shape":[1],"data":[1]}'), 'outputs[0] ("a") element 0 is not a BOOL value: 1'],
    ["a nested parameter", answer("", ',"parameters":{"p":{"q":1}}'), 'parameters["p"] is not a string, number or boolean'],
  ])("bad response: %s", (_name, text, problem) => {
    expect(failure(() => fromRestInferResponse("kfs", parseExactJson(text)))).toEqual({
      code: Code.Unavailable,
      field: undefined,
      reason: "UPSTREAM_BAD_RESPONSE",
      message: `upstream "kfs" sent an invalid response: ${problem}`,
    });
  });
});

describe("options", () => {
  it.each([
    [{}, { protocol: "grpc", readinessTtlMs: 5000 }],
    [{ protocol: "rest", http: { connections: 4 } }, { protocol: "rest", readinessTtlMs: 5000, http: { connections: 4 } }],
    [{ protocol: "grpc", maxMessageBytes: 1024, readinessTtlMs: 100 }, { protocol: "grpc", readinessTtlMs: 100, maxMessageBytes: 1024 }],
  ])("%o → %o", (input, parsed) => {
    expect(kserveOptionsSchema.parse(input)).toEqual(parsed);
  });

  it.each([
    [{ protocol: "http" }, ["protocol"]],
    [{ protocol: "grpc", http: { connections: 1 } }, ["http"]],
    [{ protocol: "rest", maxMessageBytes: 1 }, ["maxMessageBytes"]],
    [{ readinessTtlMs: 0 }, ["readinessTtlMs"]],
    [{ unknown: 1 }, []],
  ])("%o is refused at %o", (input, path) => {
    const r = kserveOptionsSchema.safeParse(input);
    expect(r.success).toBe(false);
    expect(r.error!.issues[0]!.path).toEqual(path);
  });

  it("model options: upstreamVersion, nothing else", () => {
    expect(kserveModelOptionsSchema.parse({ upstreamVersion: "3" })).toEqual({ upstreamVersion: "3" });
    expect(kserveModelOptionsSchema.safeParse({ version: "3" }).success).toBe(false);
  });

  it("a config with kserve upstreams of both protocols loads", () => {
    const config = parseConfig(
      `
upstreams:
  - name: triton-grpc
    kind: kserve
    endpoints: ["http://127.0.0.1:8001"]
  - name: triton-rest
    kind: kserve
    endpoints: ["http://127.0.0.1:8000"]
    options: { protocol: rest, readinessTtlMs: 1000 }
models:
  - name: simple
    upstream: triton-grpc
    options: { upstreamVersion: "2" }
  - name: simple-rest
    upstream: triton-rest
    upstreamModel: simple
`,
      "(test)",
      {},
    );
    expect(config.upstreams.map((u) => [u.name, u.kind, u.options])).toEqual([
      ["triton-grpc", "kserve", {}],
      ["triton-rest", "kserve", { protocol: "rest", readinessTtlMs: 1000 }],
    ]);
  });
});
