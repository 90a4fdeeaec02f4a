/**
 * Table tests of the `tfserving` kind's pure parts: TF Serving's JSON dialect (exact-json.ts,
 * writeTfJson), the request and answer translations and the readiness reading
 * (tfserving-translate.ts), and its option schemas. Fixtures are inline, after
 * https://www.tensorflow.org/tfx/serving/api_rest and tensorflow_serving/util/json_tensor.cc.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { ModelState, type PredictRequest, PredictRequestSchema } from "../../gen/infergate/v1/inference_service_pb.js";
import { DataType, type Tensor } from "../../gen/infergate/v1/tensor_pb.js";
import { ConfigError } from "../../src/config/config-error.js";
import { parseConfig } from "../../src/config/load-config.js";
import { GatewayError } from "../../src/core/gateway-error.js";
import { ExactJsonSyntaxError, parseExactJson } from "../../src/upstreams/exact-json.js";
import {
  fromPredictAnswer,
  modelStateOf,
  predictPath,
  statusPath,
  type TfServingModelOptions,
  toPredictBody,
  writeTfJson,
} from "../../src/upstreams/tfserving/tfserving-translate.js";
import { tfservingModelOptionsSchema, tfservingOptionsSchema } from "../../src/upstreams/tfserving/tfserving-upstream.js";
import type { TfJson } from "../../src/upstreams/tfserving/tfserving-wire.js";

type PredictInit = MessageInitShape<typeof PredictRequestSchema>;
type TensorInit = NonNullable<PredictInit["inputs"]>[number];

const row: TfServingModelOptions = { format: "row" };
const columnar: TfServingModelOptions = { format: "columnar" };

function predict(inputs: TensorInit[], extra: Partial<PredictInit> = {}): PredictRequest {
  return create(PredictRequestSchema, { model: "m", inputs, ...extra } as PredictInit);
}

const fp32 = (name: string, shape: number[], values: number[]): TensorInit => ({
  name,
  datatype: DataType.FP32,
  shape: shape.map(BigInt),
  data: { case: "contents", value: { fp32Contents: values } },
});
const bytes = (name: string, shape: number[], values: string[]): TensorInit => ({
  name,
  datatype: DataType.BYTES,
  shape: shape.map(BigInt),
  data: { case: "contents", value: { bytesContents: values.map((v) => new TextEncoder().encode(v)) } },
});
const raw = (name: string, datatype: DataType, shape: number[], bytesLE: number[]): TensorInit => ({
  name,
  datatype,
  shape: shape.map(BigInt),
  data: { case: "rawContents", value: new Uint8Array(bytesLE) },
});
const b64 = (s: string) => ({ b64: Buffer.from(s).toString("base64") });

/** A tensor as plain data, for exact comparisons. */
function plain(t: Tensor) {
  const c = t.data.case === "contents" ? t.data.value : undefined;
  const values = c === undefined ? undefined : [c.boolContents, c.intContents, c.int64Contents, c.uintContents, c.uint64Contents, c.fp32Contents, c.fp64Contents, c.bytesContents.map((b) => Buffer.from(b).toString("latin1"))].find((v) => v.length > 0) ?? [];
  return { name: t.name, datatype: DataType[t.datatype], shape: t.shape.map(Number), values };
}

function thrown(fn: () => unknown): GatewayError {
  try {
    fn();
  } catch (err) {
    if (err instanceof GatewayError) return err;
    throw err;
  }
  throw new Error("no error thrown");
}

describe("TF Serving JSON", () => {
  it.each<[string, TfJson, string]>([
    ["finite numbers as JSON", [1, -2.5, 0.1, 1e21], "[1,-2.5,0.1,1e+21]"],
    ["non-finite floats as TF Serving's tokens", [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY], "[NaN,Infinity,-Infinity]"],
    ["-0 keeps its sign", [-0], "[-0.0]"],
    ["64-bit integers with every digit", [9007199254740993n, -(2n ** 63n), 2n ** 64n - 1n], "[9007199254740993,-9223372036854775808,18446744073709551615]"],
    ["strings escaped", ['a"b\\c\n'], '["a\\"b\\\\c\\n"]'],
    ["objects, booleans, b64", { x: [true, false], "y z": { b64: "AAE=" } }, '{"x":[true,false],"y z":{"b64":"AAE="}}'],
  ])("writes %s", (_name, value, text) => {
    expect(writeTfJson(value)).toBe(text);
  });

  it.each<[string, string, unknown]>([
    ["plain JSON", '{"predictions": [2.5, 3.0, 4.5]}', { predictions: [2.5, 3, 4.5] }],
    ["non-finite tokens", '{"outputs": [NaN, Infinity, -Infinity, -1.5]}', { outputs: [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -1.5] }],
    ["integers beyond 2^53 exactly", "[9007199254740993, -9223372036854775808, 18446744073709551615, 12]", [9007199254740993n, -(2n ** 63n), 2n ** 64n - 1n, 12]],
    ["large floats stay numbers", "[1e300, 9007199254740993.0]", [1e300, 9007199254740992]],
    ["strings with escaped quotes beside tokens", '{"a\\"": "x\\\\", "b": [NaN, "\\u00e9"]}', { 'a"': "x\\", b: [Number.NaN, "é"] }],
    ["null and nesting", " { \"a\" : [ [ ], [ null ] ] , \"t\": true, \"f\": false, \"n\": NaN } ", { a: [[], [null]], t: true, f: false, n: Number.NaN }],
  ])("parses %s", (_name, text, value) => {
    expect(parseExactJson(text)).toEqual(value);
  });

  it("keeps a __proto__ key an ordinary key in the exact parser", () => {
    const v = parseExactJson('{"__proto__": [NaN]}') as Record<string, unknown>;
    expect(Object.keys(v)).toEqual(["__proto__"]);
    expect(Object.getPrototypeOf(v)).toBe(Object.prototype);
  });

  it.each([
    ["nan", "unexpected character"],
    ["[1, 2", "expected , or ]"],
    ['{"a" 1}', "expected :"],
    ['["abc', "unterminated string"],
    ["[NaN] x", "unexpected text after the value"],
    ["[-Inf]", "malformed number"],
    [`${"[".repeat(400)}NaN${"]".repeat(400)}`, "nesting deeper than 300"],
  ])("rejects %j", (text, problem) => {
    expect(() => parseExactJson(text)).toThrow(ExactJsonSyntaxError);
    expect(() => parseExactJson(text)).toThrow(problem);
  });
});

describe("predict paths", () => {
  it.each<[string, string | undefined, string]>([
    ["half_plus_two", undefined, "/v1/models/half_plus_two:predict"],
    ["half_plus_two", "123", "/v1/models/half_plus_two/versions/123:predict"],
    ["half_plus_two", "stable", "/v1/models/half_plus_two/labels/stable:predict"],
    ["my model", "canary/2", "/v1/models/my%20model/labels/canary%2F2:predict"],
  ])("%s version %s → %s", (model, version, path) => {
    expect(predictPath(model, version)).toBe(path);
  });

  it("status path", () => {
    expect(statusPath("half_plus_two")).toBe("/v1/models/half_plus_two");
  });
});

describe("toPredictBody", () => {
  it.each<[string, PredictRequest, TfServingModelOptions, string]>([
    ["row, one input: its rows are the instances", predict([fp32("x", [3], [1, 2, 5])]), row, '{"instances":[1,2,5]}'],
    ["row, one 2-D input", predict([fp32("x", [2, 2], [1, 2, 3, 4])]), row, '{"instances":[[1,2],[3,4]]}'],
    [
      "row, several inputs: an object per row",
      predict([fp32("signal", [2, 2], [1, 2, 3, 4]), bytes("tag", [2], ["foo", "bar"])]),
      row,
      `{"instances":[{"signal":[1,2],"tag":{"b64":"${b64("foo").b64}"}},{"signal":[3,4],"tag":{"b64":"${b64("bar").b64}"}}]}`,
    ],
    ["row, signature name", predict([fp32("x", [1], [1])]), { format: "row", signatureName: "regress_x" }, '{"signature_name":"regress_x","instances":[1]}'],
    ["row, zero rows", predict([fp32("x", [0, 3], [])]), row, '{"instances":[]}'],
    ["columnar, a scalar", predict([fp32("x", [], [1.5])]), columnar, '{"inputs":{"x":1.5}}'],
    [
      "columnar, inputs of different first dimensions",
      predict([fp32("a", [1], [1]), fp32("b", [2, 1], [2, 3])]),
      columnar,
      '{"inputs":{"a":[1],"b":[[2],[3]]}}',
    ],
    ["columnar, empty inner dimension", predict([fp32("x", [2, 0], [])]), columnar, '{"inputs":{"x":[[],[]]}}'],
    [
      "raw INT64 with every digit, raw UINT8, raw BOOL",
      predict([
        raw("i", DataType.INT64, [2], [1, 0, 0, 0, 0, 0, 0x20, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
        raw("u", DataType.UINT8, [2], [0, 255]),
        raw("b", DataType.BOOL, [2], [1, 0]),
      ]),
      columnar,
      '{"inputs":{"i":[9007199254740993,-1],"u":[0,255],"b":[true,false]}}',
    ],
    [
      "typed INT32 and FP64 with non-finite values",
      predict([
        { name: "i", datatype: DataType.INT32, shape: [2n], data: { case: "contents", value: { intContents: [-7, 2147483647] } } },
        { name: "d", datatype: DataType.FP64, shape: [3n], data: { case: "contents", value: { fp64Contents: [Number.NaN, Number.NEGATIVE_INFINITY, 0.1] } } },
      ]),
      columnar,
      '{"inputs":{"i":[-7,2147483647],"d":[NaN,-Infinity,0.1]}}',
    ],
    ["raw BYTES as b64", predict([raw("s", DataType.BYTES, [1], [2, 0, 0, 0, 0xff, 0x00])]), columnar, '{"inputs":{"s":[{"b64":"/wA="}]}}'],
  ])("%s", (_name, req, options, json) => {
    expect(writeTfJson(toPredictBody(req, options) as unknown as TfJson)).toBe(json);
  });

  it.each<[string, PredictRequest, TfServingModelOptions, string]>([
    ["request parameters", predict([fp32("x", [1], [1])], { parameters: { k: { value: { case: "boolParam", value: true } } } }), row, "parameters"],
    [
      "tensor parameters",
      predict([{ ...fp32("x", [1], [1]), parameters: { k: { value: { case: "int64Param", value: 1n } } } } as TensorInit]),
      row,
      "inputs[0].parameters",
    ],
    [
      "output parameters",
      predict([fp32("x", [1], [1])], { outputs: [{ name: "y", parameters: { classification: { value: { case: "int64Param", value: 3n } } } }] }),
      row,
      "outputs[0].parameters",
    ],
    ["duplicate outputs", predict([fp32("x", [1], [1])], { outputs: [{ name: "y" }, { name: "y" }] }), row, "outputs[1].name"],
    ["FP16 inputs", predict([fp32("x", [1], [1]), raw("h", DataType.FP16, [1], [0, 0x3c])]), columnar, "inputs[1].datatype"],
    ["BF16 inputs", predict([raw("h", DataType.BF16, [1], [0x80, 0x3f])]), columnar, "inputs[0].datatype"],
    ["a scalar in the row form", predict([fp32("x", [], [1])]), row, "inputs[0].shape"],
    ["inputs of different batch sizes in the row form", predict([fp32("a", [2], [1, 2]), fp32("b", [3], [1, 2, 3])]), row, "inputs[1].shape[0]"],
  ])("rejects %s: INVALID_ARGUMENT naming %s", (_name, req, options, field) => {
    const err = thrown(() => toPredictBody(req, options));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.metadata).toEqual({ field });
  });

  it("says why FP16 is refused", () => {
    expect(thrown(() => toPredictBody(predict([raw("h", DataType.FP16, [1], [0, 0x3c])]), row)).message).toBe(
      "inputs[0].datatype: TF Serving's JSON API has no FP16 values; send the tensor as FP32",
    );
  });
});

describe("fromPredictAnswer", () => {
  const x = predict([fp32("x", [3], [1, 2, 5])]);

  it.each<[string, unknown, PredictRequest, TfServingModelOptions, ReturnType<typeof plain>[]]>([
    [
      "row, one output: named after the JSON key",
      { predictions: [2.5, 3.0, 4.5] },
      x,
      row,
      [{ name: "predictions", datatype: "FP32", shape: [3], values: [2.5, 3, 4.5] }],
    ],
    [
      "row, one output named by options.outputs",
      { predictions: [[2.5], [3]] },
      x,
      { format: "row", outputs: { y: { datatype: "FP64" } } },
      [{ name: "y", datatype: "FP64", shape: [2, 1], values: [2.5, 3] }],
    ],
    [
      "row, one output named by the one requested output",
      { predictions: [2.5] },
      predict([fp32("x", [1], [1])], { outputs: [{ name: "y" }] }),
      row,
      [{ name: "y", datatype: "FP32", shape: [1], values: [2.5] }],
    ],
    [
      "row, several outputs: objects per row, joined by name",
      { predictions: [{ scores: [0.5, 0.25], label: "cat", ok: true }, { scores: [1, 0], label: "dog", ok: false }] },
      x,
      row,
      [
        { name: "scores", datatype: "FP32", shape: [2, 2], values: [0.5, 0.25, 1, 0] },
        { name: "label", datatype: "BYTES", shape: [2], values: ["cat", "dog"] },
        { name: "ok", datatype: "BOOL", shape: [2], values: [true, false] },
      ],
    ],
    [
      "row, b64 values of one output are values, not objects of outputs",
      { predictions: [{ b64: "AAE=" }, { b64: "/w==" }] },
      x,
      row,
      [{ name: "predictions", datatype: "BYTES", shape: [2], values: ["\x00\x01", "\xff"] }],
    ],
    ["row, no rows", { predictions: [] }, x, row, [{ name: "predictions", datatype: "FP32", shape: [0], values: [] }]],
    ["columnar, a scalar", { outputs: 2.5 }, x, columnar, [{ name: "outputs", datatype: "FP32", shape: [], values: [2.5] }]],
    [
      "columnar, several outputs with declared datatypes",
      { outputs: { ids: [9007199254740993n, -1], small: [[1, 2], [3, 250]], img_bytes: [{ b64: "AAE=" }] } },
      x,
      { format: "columnar", outputs: { ids: { datatype: "INT64" }, small: { datatype: "UINT8" } } },
      [
        { name: "ids", datatype: "INT64", shape: [2], values: [9007199254740993n, -1n] },
        { name: "small", datatype: "UINT8", shape: [2, 2], values: [1, 2, 3, 250] },
        { name: "img_bytes", datatype: "BYTES", shape: [1], values: ["\x00\x01"] },
      ],
    ],
    [
      "columnar, non-finite floats",
      { outputs: [Number.NaN, Number.NEGATIVE_INFINITY] },
      x,
      columnar,
      [{ name: "outputs", datatype: "FP32", shape: [2], values: [Number.NaN, Number.NEGATIVE_INFINITY] }],
    ],
    [
      "requested outputs: exactly those, in the request's order",
      { outputs: { a: [1], b: [2], c: [3] } },
      predict([fp32("x", [1], [1])], { outputs: [{ name: "c" }, { name: "a" }] }),
      columnar,
      [
        { name: "c", datatype: "FP32", shape: [1], values: [3] },
        { name: "a", datatype: "FP32", shape: [1], values: [1] },
      ],
    ],
    [
      "an empty output with a declared datatype",
      { outputs: { a: [[], []], b: [1] } },
      x,
      { format: "columnar", outputs: { a: { datatype: "INT32" } } },
      [
        { name: "a", datatype: "INT32", shape: [2, 0], values: [] },
        { name: "b", datatype: "FP32", shape: [1], values: [1] },
      ],
    ],
  ])("%s", (_name, answer, req, options, tensors) => {
    expect(fromPredictAnswer("tfs", answer, req, options).map(plain)).toEqual(tensors);
  });

  it.each<[string, unknown, TfServingModelOptions, string]>([
    ["no predictions", { outputs: [1] }, row, 'the answer has no "predictions"'],
    ["not an object", [1], columnar, 'the answer has no "outputs"'],
    ["predictions not a list", { predictions: 1 }, row, '"predictions" is not a list'],
    ["rows mixing objects and values", { predictions: [{ a: 1, b: 2 }, 3] }, row, '"predictions" mixes objects of named outputs with values'],
    ["rows naming other outputs", { predictions: [{ a: 1, b: 2 }, { a: 1, c: 2 }] }, row, '"predictions[1]" names other outputs than "predictions[0]"'],
    ["a ragged tensor", { outputs: [[1, 2], [3]] }, columnar, 'output "outputs": ragged: value[1] is not a list of 2 (the shape from the first elements is [2, 2])'],
    ["a list deeper than its siblings", { outputs: [1, [2]] }, columnar, 'output "outputs": value[1] is a list nested deeper than its siblings'],
    ["null", { outputs: [1, null] }, columnar, 'output "outputs": value[1] is null'],
    ["mixed kinds", { outputs: [1, "a"] }, columnar, 'output "outputs": mixes number and bytes values'],
    ["a non-integer INT32", { outputs: [1.5] }, { format: "columnar", outputs: { o: { datatype: "INT32" } } }, 'output "o": element 0 (1.5) is not a INT32'],
    ["INT8 out of range", { outputs: [300] }, { format: "columnar", outputs: { o: { datatype: "INT8" } } }, 'output "o": element 0 (300) is not a INT8'],
    ["INT64 rounded by a double", { outputs: [2 ** 60 + 0.5 * 2 ** 10] }, { format: "columnar", outputs: { o: { datatype: "INT64" } } }, 'output "o": element 0 (1152921504606847500) is not an exact INT64'],
    ["UINT64 below zero", { outputs: [-1] }, { format: "columnar", outputs: { o: { datatype: "UINT64" } } }, 'output "o": element 0 (-1) is out of the range of UINT64'],
    ["declared BOOL, sent numbers", { outputs: [1] }, { format: "columnar", outputs: { o: { datatype: "BOOL" } } }, 'output "o": declared BOOL, but the values are numbers'],
    ["declared FP32, sent strings", { outputs: ["a"] }, { format: "columnar", outputs: { o: { datatype: "FP32" } } }, 'output "o": declared FP32, but the values are strings'],
    ["bad base64", { outputs: [{ b64: "A" }] }, columnar, 'output "outputs": element 0 is not valid base64'],
    [
      "one unnamed output where options declare two",
      { outputs: [1] },
      { format: "columnar", outputs: { a: { datatype: "FP32" }, b: { datatype: "FP32" } } },
      "one unnamed output, but the model's options declare 2 outputs",
    ],
  ])("rejects %s: UNAVAILABLE UPSTREAM_BAD_RESPONSE", (_name, answer, options, problem) => {
    const err = thrown(() => fromPredictAnswer("tfs", answer, predict([fp32("x", [1], [1])]), options));
    expect({ code: err.code, reason: err.reason, message: err.message, metadata: err.metadata }).toEqual({
      code: Code.Unavailable,
      reason: "UPSTREAM_BAD_RESPONSE",
      message: `upstream "tfs" sent an invalid response: ${problem}`,
      metadata: { upstream: "tfs" },
    });
  });

  it("an asked-for output the model did not give is INVALID_ARGUMENT naming it", () => {
    const err = thrown(() => fromPredictAnswer("tfs", { outputs: { a: [1], b: [2] } }, predict([fp32("x", [1], [1])], { outputs: [{ name: "a" }, { name: "z" }] }), columnar));
    expect({ code: err.code, message: err.message, metadata: err.metadata }).toEqual({
      code: Code.InvalidArgument,
      message: 'outputs[1].name: the model has no output "z"; it answered "a", "b"',
      metadata: { field: "outputs[1].name" },
    });
  });
});

describe("modelStateOf", () => {
  const version = (state: string) => ({ version: "1", state, status: { error_code: "OK", error_message: "" } });
  it.each<[string, unknown, ModelState]>([
    ["an available version", { model_version_status: [version("AVAILABLE")] }, ModelState.READY],
    ["one of several available", { model_version_status: [version("UNLOADING"), version("AVAILABLE")] }, ModelState.READY],
    ["loading", { model_version_status: [version("LOADING")] }, ModelState.NOT_READY],
    ["no versions", { model_version_status: [] }, ModelState.NOT_READY],
    ["an answer that does not say", { error: "x" }, ModelState.UNSPECIFIED],
    ["not an object", null, ModelState.UNSPECIFIED],
  ])("%s", (_name, status, state) => {
    expect(modelStateOf(status)).toBe(state);
  });
});

describe("options", () => {
  it("defaults", () => {
    expect(tfservingOptionsSchema.parse({})).toEqual({ readinessTtlMs: 5000 });
    expect(tfservingModelOptionsSchema.parse({})).toEqual({ format: "row" });
  });

  function configWith(options: string, modelOptions: string): string {
    return `
upstreams: [{ name: tfs, kind: tfserving, endpoints: ["http://127.0.0.1:8501"], options: ${options} }]
models: [{ name: m, upstream: tfs, options: ${modelOptions} }]
`;
  }

  it.each([
    ["an unknown option", "{ batching: true }", "{}", ["upstreams[0].options"]],
    ["an unknown model option", "{}", "{ form: row }", ["models[0].options"]],
    ["an unknown format", "{}", "{ format: rows }", ["models[0].options.format"]],
    ["an FP16 output (TF Serving writes halves as floats: declare FP32)", "{}", "{ outputs: { y: { datatype: FP16 } } }", ["models[0].options.outputs.y.datatype"]],
  ])("rejects %s", (_name, options, modelOptions, paths) => {
    let err: unknown;
    try {
      parseConfig(configWith(options, modelOptions), "(test)", {});
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).issues.map((i) => i.path)).toEqual(paths);
  });

  it("accepts a full model configuration", () => {
    const c = parseConfig(configWith("{ readinessTtlMs: 1000, http: { connections: 8 } }", '{ format: columnar, signatureName: serving_default, outputs: { y: { datatype: FP64 } } }'), "(test)", {});
    expect(tfservingModelOptionsSchema.parse(c.models[0]!.options)).toEqual({ format: "columnar", signatureName: "serving_default", outputs: { y: { datatype: "FP64" } } });
  });
});
