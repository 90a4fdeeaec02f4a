/**
 * Pure translations between infergate's Predict messages and TF Serving's REST predict API
 * (tfserving-wire.ts). No I/O: the client in tfserving-upstream.ts sends what these build and
 * feeds back what arrives. docs/upstream-tfserving.md has the mapping table; every request field
 * either maps or is rejected here with INVALID_ARGUMENT naming it, never silently dropped.
 */
import { ModelState, type PredictRequest } from "../../../gen/infergate/v1/inference_service_pb.js";
import { DataType, type Tensor } from "../../../gen/infergate/v1/tensor_pb.js";
import { echoed, invalidArgument } from "../../core/gateway-error.js";
import { writeExactJson } from "../exact-json.js";
import { badResponse } from "../http/http-errors.js";
import { dataTypeInfo, decodeTensor, encodeTensor, type TensorValues } from "../tensor-codec.js";
import {
  type B64Value,
  isB64,
  type PredictColumnarRequest,
  type PredictRequestBody,
  type PredictRowRequest,
  type TfJson,
  type TfTensorValue,
} from "./tfserving-wire.js";

/** The datatypes an output may be declared with (`outputs.NAME.datatype` in a model's options). */
export const outputDatatypeNames = [
  "BOOL",
  "UINT8",
  "UINT16",
  "UINT32",
  "UINT64",
  "INT8",
  "INT16",
  "INT32",
  "INT64",
  "FP32",
  "FP64",
  "BYTES",
] as const;
export type OutputDatatypeName = (typeof outputDatatypeNames)[number];

/** A model's options as the `tfserving` kind parses them (see tfserving-upstream.ts for defaults). */
export interface TfServingModelOptions {
  /** Which request form to send: "row" (`instances`) or "columnar" (`inputs`). */
  readonly format: "row" | "columnar";
  /** `signature_name`; left out (the model's default signature) when undefined. */
  readonly signatureName?: string | undefined;
  /** The datatype to build each named output with; TF Serving's JSON carries no datatypes. */
  readonly outputs?: Readonly<Record<string, { readonly datatype: OutputDatatypeName }>> | undefined;
}

const datatypeByName: Readonly<Record<OutputDatatypeName, DataType>> = {
  BOOL: DataType.BOOL,
  UINT8: DataType.UINT8,
  UINT16: DataType.UINT16,
  UINT32: DataType.UINT32,
  UINT64: DataType.UINT64,
  INT8: DataType.INT8,
  INT16: DataType.INT16,
  INT32: DataType.INT32,
  INT64: DataType.INT64,
  FP32: DataType.FP32,
  FP64: DataType.FP64,
  BYTES: DataType.BYTES,
};

/** Deepest tensor TensorFlow has (TensorShape's kMaxDims). */
const maxRank = 254;

/**
 * The path of the predict call: `/v1/models/{model}:predict`, with `/versions/{v}` when the
 * caller pins a numeric version (TF Serving versions are integers) or `/labels/{v}` for a version
 * label such as "stable" (TF Serving's `--model_config_file` labels).
 */
export function predictPath(model: string, version: string | undefined): string {
  return `${modelPath(model, version)}:predict`;
}

/** The path of the model status call (`GET`), for readiness. */
export function statusPath(model: string): string {
  return modelPath(model, undefined);
}

function modelPath(model: string, version: string | undefined): string {
  const base = `/v1/models/${encodeURIComponent(model)}`;
  if (version === undefined) return base;
  return /^\d+$/.test(version) ? `${base}/versions/${version}` : `${base}/labels/${encodeURIComponent(version)}`;
}

/**
 * Writes a body in TF Serving's JSON dialect (exact-json.ts): finite numbers as JSON numbers,
 * non-finite ones as `NaN` / `Infinity` / `-Infinity`, bigints with all their digits, strings as
 * JSON strings.
 */
export function writeTfJson(value: TfJson): string {
  return writeExactJson(value, { nonFinite: "tokens", what: "a TF Serving body" });
}

/**
 * Builds the body of `POST …:predict`. Throws INVALID_ARGUMENT naming the field for anything TF
 * Serving's JSON cannot carry: request or tensor parameters, output parameters, FP16/BF16 tensors
 * (json_tensor.cc has no JSON form for DT_HALF or DT_BFLOAT16 inputs), and, in the row form,
 * inputs without a common first (batch) dimension. `model` and `model_version` go into the path;
 * `outputs` is applied to the answer (fromPredictAnswer); `id`, `cache_policy` and `metadata`
 * are the gateway's.
 */
export function toPredictBody(req: PredictRequest, options: TfServingModelOptions): PredictRequestBody {
  if (Object.keys(req.parameters).length > 0) {
    throw invalidArgument("parameters", "TF Serving's REST predict API takes no parameters");
  }
  req.outputs.forEach((o, i) => {
    if (Object.keys(o.parameters).length > 0) {
      throw invalidArgument(`outputs[${i}].parameters`, "TF Serving's REST predict API takes no output parameters");
    }
  });
  const names = new Set<string>();
  req.outputs.forEach((o, i) => {
    if (names.has(o.name)) throw invalidArgument(`outputs[${i}].name`, `duplicate output name "${echoed(o.name)}"`);
    names.add(o.name);
  });
  const values = req.inputs.map((t, i) => {
    if (Object.keys(t.parameters).length > 0) {
      throw invalidArgument(`inputs[${i}].parameters`, "TF Serving's REST predict API takes no tensor parameters");
    }
    return nested(t, `inputs[${i}]`);
  });
  const signature = options.signatureName === undefined ? {} : { signature_name: options.signatureName };
  if (options.format === "columnar") {
    const body: PredictColumnarRequest = {
      ...signature,
      inputs: Object.fromEntries(req.inputs.map((t, i) => [t.name, values[i]!])),
    };
    return body;
  }
  const batch = req.inputs[0]?.shape[0];
  req.inputs.forEach((t, i) => {
    if (t.shape.length === 0) {
      throw invalidArgument(`inputs[${i}].shape`, 'the row format needs a first (batch) dimension; use the model option format: "columnar" for scalars');
    }
    if (t.shape[0] !== batch) {
      throw invalidArgument(
        `inputs[${i}].shape[0]`,
        `the row format needs one batch size for all inputs: ${t.shape[0]} here, ${batch} in inputs[0]; use the model option format: "columnar"`,
      );
    }
  });
  const rows = values as TfTensorValue[][];
  if (rows.length === 1) {
    const body: PredictRowRequest = { ...signature, instances: rows[0]! };
    return body;
  }
  const instances = rows[0]!.map((_, r) => Object.fromEntries(req.inputs.map((t, i) => [t.name, rows[i]![r]!])));
  return { ...signature, instances };
}

/** A tensor in TF Serving's nested JSON form; BYTES elements as `{"b64": …}`. */
function nested(t: Tensor, path: string): TfTensorValue {
  const v = decodeTensor(t, path);
  const flat = leaves(v, t, path);
  let next = 0;
  const build = (dim: number): TfTensorValue => {
    if (dim === t.shape.length) return flat[next++]!;
    const n = Number(t.shape[dim]);
    const out: TfTensorValue[] = new Array(n);
    for (let i = 0; i < n; i++) out[i] = build(dim + 1);
    return out;
  };
  return build(0);
}

function leaves(v: TensorValues, t: Tensor, path: string): readonly TfTensorValue[] {
  switch (v.kind) {
    case "bool":
    case "number":
    case "bigint":
      return v.values;
    case "bytes":
      return v.values.map((b): B64Value => ({ b64: Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("base64") }));
    case "half":
      throw invalidArgument(
        `${path}.datatype`,
        `TF Serving's JSON API has no ${dataTypeInfo(t.datatype)!.kserveName} values; send the tensor as FP32`,
      );
  }
}

/**
 * Reads the answer to `toPredictBody(req, options)`: `predictions` (row form) or `outputs`
 * (columnar) back into named tensors. Shapes come from the nesting (the row form's first dimension
 * is the batch); datatypes from `options.outputs`, else FP32 for numbers, BOOL for booleans and
 * BYTES for strings and `{"b64": …}`. A single output, which TF Serving writes without its name,
 * is named after the only entry of `options.outputs`, else the only output the request asked for,
 * else the JSON key ("predictions" or "outputs"). When the request names outputs, exactly those
 * are returned, in its order. Anything that does not read as the promised shape is an
 * UNAVAILABLE UPSTREAM_BAD_RESPONSE; an asked-for output the model did not give is INVALID_ARGUMENT.
 */
export function fromPredictAnswer(upstream: string, answer: unknown, req: PredictRequest, options: TfServingModelOptions): Tensor[] {
  const key = options.format === "row" ? "predictions" : "outputs";
  if (typeof answer !== "object" || answer === null || Array.isArray(answer) || !(key in answer)) {
    throw badResponse(upstream, `the answer has no "${key}"`);
  }
  const payload = (answer as Record<string, unknown>)[key];
  const named = new Map<string, unknown>();
  let unnamed: unknown;
  let single = false;
  if (options.format === "row") {
    if (!Array.isArray(payload)) {
      throw badResponse(upstream, '"predictions" is not a list');
    }
    const objects = payload.filter(isNamedObject).length;
    if (objects > 0 && objects < payload.length) {
      throw badResponse(upstream, '"predictions" mixes objects of named outputs with values');
    }
    if (objects === 0) {
      single = true;
      unnamed = payload;
    } else {
      const first = Object.keys(payload[0] as object);
      for (const name of first) named.set(name, []);
      payload.forEach((row: Record<string, unknown>, r) => {
        const keys = Object.keys(row);
        if (keys.length !== first.length || keys.some((k) => !named.has(k))) {
          throw badResponse(upstream, `"predictions[${r}]" names other outputs than "predictions[0]"`);
        }
        for (const k of keys) (named.get(k) as unknown[]).push(row[k]);
      });
    }
  } else if (isNamedObject(payload)) {
    for (const [name, v] of Object.entries(payload)) named.set(name, v);
  } else {
    single = true;
    unnamed = payload;
  }
  if (single) {
    named.set(singleOutputName(upstream, key, req, options), unnamed);
  }
  const tensors = new Map<string, Tensor>();
  for (const [name, value] of named) {
    tensors.set(name, toTensor(upstream, name, value, options.outputs?.[name]?.datatype));
  }
  if (req.outputs.length === 0) return [...tensors.values()];
  return req.outputs.map((o, i) => {
    const t = tensors.get(o.name);
    if (t === undefined) {
      throw invalidArgument(`outputs[${i}].name`, `the model has no output "${echoed(o.name)}"; it answered ${echoed([...tensors.keys()].map((n) => `"${n}"`).join(", "))}`);
    }
    return t;
  });
}

/** An object of named outputs (as opposed to a `{"b64": …}` value or a list). */
function isNamedObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !isB64(v);
}

function singleOutputName(upstream: string, key: string, req: PredictRequest, options: TfServingModelOptions): string {
  const declared = Object.keys(options.outputs ?? {});
  if (declared.length === 1) return declared[0]!;
  if (declared.length > 1) {
    throw badResponse(upstream, `one unnamed output, but the model's options declare ${declared.length} outputs`);
  }
  return req.outputs.length === 1 ? req.outputs[0]!.name : key;
}

type Leaf = number | bigint | boolean | string | B64Value;

/** One output's JSON value as a tensor (shape from the nesting). */
function toTensor(upstream: string, name: string, value: unknown, declared: OutputDatatypeName | undefined): Tensor {
  const fail = (problem: string) => badResponse(upstream, `output "${name}": ${problem}`);
  const shape: number[] = [];
  for (let v = value; Array.isArray(v); v = v[0]) {
    if (shape.length === maxRank) throw fail(`nested deeper than ${maxRank} dimensions`);
    shape.push(v.length);
    if (v.length === 0) break;
  }
  const flat: Leaf[] = [];
  const walk = (v: unknown, dim: number, at: string): void => {
    if (dim < shape.length) {
      if (!Array.isArray(v) || v.length !== shape[dim]) {
        throw fail(`ragged: ${at} is not a list of ${shape[dim]} (the shape from the first elements is [${shape.join(", ")}])`);
      }
      v.forEach((e, i) => walk(e, dim + 1, `${at}[${i}]`));
      return;
    }
    if (typeof v === "number" || typeof v === "bigint" || typeof v === "boolean" || typeof v === "string" || isB64(v)) {
      flat.push(v);
      return;
    }
    throw fail(`${at} is ${Array.isArray(v) ? "a list nested deeper than its siblings" : v === null ? "null" : "not a tensor element"}`);
  };
  walk(value, 0, "value");
  const kinds = new Set(flat.map(leafKind));
  if (kinds.size > 1) throw fail(`mixes ${[...kinds].join(" and ")} values`);
  const kind = [...kinds][0];
  const datatypeName: OutputDatatypeName =
    declared ?? (kind === "boolean" ? "BOOL" : kind === "bytes" ? "BYTES" : "FP32");
  const values = convert(flat, datatypeName, kind, fail);
  return encodeTensor(name, datatypeByName[datatypeName], shape.map(BigInt), values, false);
}

function leafKind(v: Leaf): "number" | "boolean" | "bytes" {
  return typeof v === "number" || typeof v === "bigint" ? "number" : typeof v === "boolean" ? "boolean" : "bytes";
}

const intRanges: Partial<Record<OutputDatatypeName, readonly [number, number]>> = {
  INT8: [-128, 127],
  INT16: [-32768, 32767],
  INT32: [-(2 ** 31), 2 ** 31 - 1],
  UINT8: [0, 255],
  UINT16: [0, 65535],
  UINT32: [0, 2 ** 32 - 1],
};
const int64Ranges: Partial<Record<OutputDatatypeName, readonly [bigint, bigint]>> = {
  INT64: [-(2n ** 63n), 2n ** 63n - 1n],
  UINT64: [0n, 2n ** 64n - 1n],
};

/** Flat JSON leaves → the values of `datatype`, exactly or not at all. */
function convert(
  flat: readonly Leaf[],
  datatype: OutputDatatypeName,
  kind: "number" | "boolean" | "bytes" | undefined,
  fail: (problem: string) => Error,
): TensorValues {
  const want = datatype === "BOOL" ? "boolean" : datatype === "BYTES" ? "bytes" : "number";
  if (kind !== undefined && kind !== want) {
    throw fail(`declared ${datatype}, but the values are ${kind === "boolean" ? "booleans" : kind === "bytes" ? "strings" : "numbers"}`);
  }
  switch (datatype) {
    case "BOOL":
      return { kind: "bool", values: flat as boolean[] };
    case "BYTES":
      return { kind: "bytes", values: flat.map((v, i) => bytesOf(v as string | B64Value, i, fail)) };
    case "FP32":
    case "FP64":
      return { kind: "number", values: flat.map((v) => Number(v)) };
    case "INT64":
    case "UINT64": {
      const [min, max] = int64Ranges[datatype]!;
      return {
        kind: "bigint",
        values: flat.map((v, i) => {
          if (typeof v === "number" && !Number.isSafeInteger(v)) throw fail(`element ${i} (${v}) is not an exact ${datatype}`);
          const b = BigInt(v as number | bigint);
          if (b < min || b > max) throw fail(`element ${i} (${b}) is out of the range of ${datatype}`);
          return b;
        }),
      };
    }
    default: {
      const [min, max] = intRanges[datatype]!;
      return {
        kind: "number",
        values: flat.map((v, i) => {
          const n = Number(v);
          if (!Number.isInteger(n) || n < min || n > max) throw fail(`element ${i} (${v}) is not a ${datatype}`);
          return n;
        }),
      };
    }
  }
}

const utf8 = new TextEncoder();
const base64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function bytesOf(v: string | B64Value, i: number, fail: (problem: string) => Error): Uint8Array {
  if (typeof v === "string") return utf8.encode(v);
  if (!base64.test(v.b64)) throw fail(`element ${i} is not valid base64`);
  return new Uint8Array(Buffer.from(v.b64, "base64"));
}

/**
 * A model's readiness from `GET /v1/models/{name}`: READY when a version is AVAILABLE, NOT_READY
 * when none is, UNSPECIFIED when the answer does not say.
 */
export function modelStateOf(status: unknown): ModelState {
  const versions = (status as { model_version_status?: unknown } | null)?.model_version_status;
  if (!Array.isArray(versions)) return ModelState.UNSPECIFIED;
  return versions.some((v) => (v as { state?: unknown } | null)?.state === "AVAILABLE") ? ModelState.READY : ModelState.NOT_READY;
}
