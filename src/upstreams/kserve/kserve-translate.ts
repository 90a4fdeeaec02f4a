/**
 * Pure translations between infergate's Predict messages and the Open Inference Protocol (KServe
 * v2): `inference.ModelInferRequest`/`ModelInferResponse` for gRPC, and the REST JSON of
 * kserve-wire.ts. No I/O: the client in kserve-upstream.ts sends what these build and feeds back
 * what arrives. docs/upstream-kserve.md has the mapping table; every request field either maps or
 * is rejected here with INVALID_ARGUMENT naming it, never silently dropped.
 *
 * Answers keep the form the server used: raw bytes as `raw_contents` (never decoded element by
 * element), typed values as `contents`; the caller's PredictRequest.output_form asks for one form
 * whatever the server sent, and the gateway converts in bulk (tensor-bulk.ts).
 */
import { create } from "@bufbuild/protobuf";
import {
  type InferParameter,
  InferParameterSchema,
  type InferTensorContents,
  InferTensorContentsSchema,
  type ModelInferRequest,
  type ModelInferRequest_InferInputTensor,
  ModelInferRequest_InferInputTensorSchema,
  ModelInferRequestSchema,
  type ModelInferResponse,
} from "../../../gen/inference/grpc_service_pb.js";
import { type PredictRequest, type PredictResponse, PredictResponseSchema } from "../../../gen/infergate/v1/inference_service_pb.js";
import {
  DataType,
  type ParameterValue,
  ParameterValueSchema,
  type Tensor,
  TensorContentsSchema,
  TensorSchema,
} from "../../../gen/infergate/v1/tensor_pb.js";
import { echoed, GatewayError, invalidArgument } from "../../core/gateway-error.js";
import { writeExactJson } from "../exact-json.js";
import { badResponse } from "../http/http-errors.js";
import { rawFromTyped } from "../tensor-bulk.js";
import { checkTensor, dataTypeInfo, decodeTensor, encodeTensor, type TensorValues } from "../tensor-codec.js";
import type {
  RestElement,
  RestInferInput,
  RestInferRequest,
  RestParameters,
  RestParameterValue,
  RestRequestedOutput,
} from "./kserve-wire.js";

// ---------------------------------------------------------------------------------------------
// Datatypes, versions, paths
// ---------------------------------------------------------------------------------------------

/** A model's options as the `kserve` kind parses them (kserve-upstream.ts). */
export interface KserveModelOptions {
  /**
   * The model version asked of the server when the request pins none. Unset: no version is sent
   * and the server picks by its version policy. (The model's configured `version` is infergate's
   * cache label and is never sent.)
   */
  readonly upstreamVersion?: string | undefined;
}

const allDataTypes = (Object.values(DataType).filter((v) => typeof v === "number") as DataType[]).filter(
  (dt) => dataTypeInfo(dt) !== undefined,
);

const dataTypeByName: ReadonlyMap<string, DataType> = new Map(allDataTypes.map((dt) => [dataTypeInfo(dt)!.kserveName, dt]));

/** Our datatype of a KServe v2 datatype name ("FP32"), or undefined for a name KServe does not have. */
export function dataTypeOfName(name: string): DataType | undefined {
  return dataTypeByName.get(name);
}

/** The model version sent upstream: the request's pin, else the model's `upstreamVersion`, else none. */
export function upstreamVersion(req: PredictRequest, options: KserveModelOptions): string | undefined {
  return req.modelVersion ?? options.upstreamVersion;
}

/** `/v2/models/{model}[/versions/{version}]/{infer|ready}`, each segment URL-encoded. */
export function restModelPath(model: string, version: string | undefined, action: "infer" | "ready"): string {
  const v = version === undefined ? "" : `/versions/${encodeURIComponent(version)}`;
  return `/v2/models/${encodeURIComponent(model)}${v}/${action}`;
}

// ---------------------------------------------------------------------------------------------
// Half-precision floats
// ---------------------------------------------------------------------------------------------

/** The 16-bit float formats: exponent and mantissa widths. */
const fp16 = { expBits: 5, mantBits: 10 } as const;
const bf16 = { expBits: 8, mantBits: 7 } as const;
type SmallFloat = { readonly expBits: number; readonly mantBits: number };

/** The number that IEEE 754 binary16 bits stand for (exact: every half is a double). */
export function float16BitsToNumber(bits: number): number {
  return smallFloatToNumber(bits, fp16);
}

/** The binary16 bits of a number, rounded to nearest, ties to even; NaN → 0x7e00. */
export function numberToFloat16Bits(value: number): number {
  return numberToSmallFloat(value, fp16);
}

/** The number that bfloat16 bits stand for (exact). */
export function bfloat16BitsToNumber(bits: number): number {
  return smallFloatToNumber(bits, bf16);
}

/** The bfloat16 bits of a number, rounded to nearest, ties to even (from the double, not via FP32); NaN → 0x7fc0. */
export function numberToBfloat16Bits(value: number): number {
  return numberToSmallFloat(value, bf16);
}

function smallFloatToNumber(bits: number, f: SmallFloat): number {
  const expMax = (1 << f.expBits) - 1;
  const bias = (expMax >> 1);
  const sign = (bits >> (f.expBits + f.mantBits)) & 1 ? -1 : 1;
  const e = (bits >> f.mantBits) & expMax;
  const m = bits & ((1 << f.mantBits) - 1);
  if (e === expMax) return m === 0 ? sign * Infinity : NaN;
  if (e === 0) return sign * m * 2 ** (1 - bias - f.mantBits);
  return sign * (2 ** f.mantBits + m) * 2 ** (e - bias - f.mantBits);
}

function numberToSmallFloat(value: number, f: SmallFloat): number {
  const expMax = (1 << f.expBits) - 1;
  const bias = expMax >> 1;
  const signBit = 1 << (f.expBits + f.mantBits);
  const one = 2 ** f.mantBits;
  if (Number.isNaN(value)) return (expMax << f.mantBits) | (1 << (f.mantBits - 1));
  const sign = value < 0 || Object.is(value, -0) ? signBit : 0;
  const abs = Math.abs(value);
  if (abs === 0) return sign;
  if (abs === Infinity) return sign | (expMax << f.mantBits);
  // Below the smallest normal the quantum stays that of the smallest binade (subnormals).
  let e = Math.max(exponentOf(abs), 1 - bias);
  // Scaling by a power of two is exact, so the only rounding is this one (no double rounding).
  let q = roundHalfEven(abs / 2 ** (e - f.mantBits));
  if (q >= 2 * one) {
    q /= 2;
    e += 1;
  }
  if (q < one) return sign | q;
  if (e > bias) return sign | (expMax << f.mantBits);
  return sign | ((e + bias) << f.mantBits) | (q - one);
}

/** floor(log2(x)) for a positive finite double, exactly. */
function exponentOf(x: number): number {
  let e = Math.floor(Math.log2(x));
  if (2 ** e > x) e -= 1;
  else if (2 ** (e + 1) <= x) e += 1;
  return e;
}

function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

// ---------------------------------------------------------------------------------------------
// Values and their checks
// ---------------------------------------------------------------------------------------------

/** The range of the datatypes narrower than their typed field (int32/uint32 hold them). */
const narrowRange: ReadonlyMap<DataType, readonly [number, number]> = new Map([
  [DataType.INT8, [-128, 127]],
  [DataType.INT16, [-32768, 32767]],
  [DataType.UINT8, [0, 255]],
  [DataType.UINT16, [0, 65535]],
]);

/** The proto path of a TensorContents field ("fp32Contents" → "fp32_contents"). */
const snake = (field: string) => field.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/**
 * Where element `j` of a tensor sits, for error messages: `inputs[0].contents.fp32_contents[3]`,
 * or `inputs[0].raw_contents` for raw tensors.
 */
function elementPath(t: Tensor, path: string, j: number): string {
  const field = dataTypeInfo(t.datatype)?.field;
  return t.data.case === "contents" && field !== undefined ? `${path}.contents.${snake(field)}[${j}]` : `${path}.raw_contents`;
}

/**
 * Typed INT8/INT16/UINT8/UINT16 values travel in 32-bit fields: one outside its datatype's range
 * would be wrapped (raw form) or misread by the server, so it is rejected instead.
 */
export function checkNarrowInts(t: Tensor, path: string): void {
  const range = narrowRange.get(t.datatype);
  if (range === undefined || t.data.case !== "contents") return;
  const values = t.data.value[dataTypeInfo(t.datatype)!.field!] as number[];
  const j = values.findIndex((v) => v < range[0] || v > range[1]);
  if (j >= 0) {
    throw invalidArgument(
      elementPath(t, path, j),
      `${values[j]} is out of range for ${dataTypeInfo(t.datatype)!.kserveName} (${range[0]} to ${range[1]})`,
    );
  }
}

/** Requested outputs: each name once (a server would answer one tensor per name, or fail). */
function checkRequestedOutputs(req: PredictRequest): void {
  const names = new Set<string>();
  req.outputs.forEach((o, i) => {
    if (names.has(o.name)) throw invalidArgument(`outputs[${i}].name`, `duplicate output name "${echoed(o.name)}"`);
    names.add(o.name);
  });
}

/** A decodeTensor/checkTensor complaint about an answer is the server's fault, not the caller's. */
function asBadResponse<T>(upstream: string, run: () => T): T {
  try {
    return run();
  } catch (err) {
    if (err instanceof GatewayError) throw badResponse(upstream, err.message);
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

const noValue = "no value set: set one of bool_param, int64_param, string_param, double_param, uint64_param";

/** Our parameters → InferParameter (the same five choices, the same field numbers). */
function toInferParameters(params: Readonly<Record<string, ParameterValue>>, path: string): Record<string, InferParameter> {
  const out: Record<string, InferParameter> = {};
  for (const [k, p] of Object.entries(params)) {
    const v = p.value;
    switch (v.case) {
      case "boolParam":
        out[k] = create(InferParameterSchema, { parameterChoice: { case: "boolParam", value: v.value } });
        break;
      case "int64Param":
        out[k] = create(InferParameterSchema, { parameterChoice: { case: "int64Param", value: v.value } });
        break;
      case "stringParam":
        out[k] = create(InferParameterSchema, { parameterChoice: { case: "stringParam", value: v.value } });
        break;
      case "doubleParam":
        out[k] = create(InferParameterSchema, { parameterChoice: { case: "doubleParam", value: v.value } });
        break;
      case "uint64Param":
        out[k] = create(InferParameterSchema, { parameterChoice: { case: "uint64Param", value: v.value } });
        break;
      default:
        throw invalidArgument(`${path}["${k}"]`, noValue);
    }
  }
  return out;
}

/** InferParameter → ours; an empty InferParameter stays empty. */
function fromInferParameters(params: Readonly<Record<string, InferParameter>>): Record<string, ParameterValue> {
  const out: Record<string, ParameterValue> = {};
  for (const [k, p] of Object.entries(params)) {
    const c = p.parameterChoice;
    out[k] = c.case === undefined ? create(ParameterValueSchema) : create(ParameterValueSchema, { value: c } as never);
  }
  return out;
}

/**
 * Parameter names of Triton's binary tensor data extension. With them the server would answer in
 * a binary body this kind does not read, so on REST they are refused up front.
 */
const binaryExtensionParameters = new Set(["binary_data", "binary_data_output", "binary_data_size"]);

/** A 64-bit integer as a JSON number when a double holds it exactly, else every digit (bigint). */
const jsonInt = (v: bigint): number | bigint => (v >= -(2n ** 53n) + 1n && v <= 2n ** 53n - 1n ? Number(v) : v);

/**
 * Our parameters → REST `$parameters`. int64/uint64 become JSON integers (every digit kept); a
 * double is written with a fraction (`3.0`) so the server keeps it a double. JSON has no
 * NaN/Infinity and no int64/uint64 distinction: a non-finite double is refused; uint64 values read
 * back as the server's integer type.
 */
function toRestParameters(params: Readonly<Record<string, ParameterValue>>, path: string): RestParameters | undefined {
  const entries = Object.entries(params);
  if (entries.length === 0) return undefined;
  const out: Record<string, RestParameterValue> = {};
  for (const [k, p] of entries) {
    const at = `${path}["${k}"]`;
    if (binaryExtensionParameters.has(k)) {
      throw invalidArgument(at, 'the binary tensor data extension is not supported over REST; use protocol "grpc"');
    }
    const v = p.value;
    switch (v.case) {
      case "boolParam":
      case "stringParam":
        out[k] = v.value;
        break;
      case "int64Param":
      case "uint64Param":
        out[k] = jsonInt(v.value);
        break;
      case "doubleParam":
        if (!Number.isFinite(v.value)) {
          throw invalidArgument(at, `${v.value} cannot be written in KServe's REST JSON; use protocol "grpc"`);
        }
        out[k] = { $double: v.value };
        break;
      default:
        throw invalidArgument(at, noValue);
    }
  }
  return out;
}

const int64Min = -(2n ** 63n);
const int64Max = 2n ** 63n - 1n;
const uint64Max = 2n ** 64n - 1n;

/**
 * REST `$parameters` of an answer → ours: strings and booleans as such; integers as int64_param
 * (uint64_param above the int64 range); other numbers as double_param.
 */
function fromRestParameters(upstream: string, value: unknown, path: string): Record<string, ParameterValue> {
  if (value === undefined) return {};
  if (!isObject(value)) throw badResponse(upstream, `${path} is not an object`);
  const out: Record<string, ParameterValue> = {};
  for (const [k, v] of Object.entries(value)) {
    let p: ParameterValue["value"];
    if (typeof v === "boolean") p = { case: "boolParam", value: v };
    else if (typeof v === "string") p = { case: "stringParam", value: v };
    else if (typeof v === "number" && Number.isSafeInteger(v)) p = { case: "int64Param", value: BigInt(v) };
    else if (typeof v === "number") p = { case: "doubleParam", value: v };
    else if (typeof v === "bigint" && v >= int64Min && v <= int64Max) p = { case: "int64Param", value: v };
    else if (typeof v === "bigint" && v > int64Max && v <= uint64Max) p = { case: "uint64Param", value: v };
    else throw badResponse(upstream, `${path}["${k}"] is not a string, number or boolean`);
    out[k] = create(ParameterValueSchema, { value: p });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// gRPC
// ---------------------------------------------------------------------------------------------

/**
 * Builds the ModelInferRequest. `model_name` is the upstream model; `model_version` is set only
 * when `version` is (see upstreamVersion); `id` and every parameter map pass through. Tensor
 * data: if any input is raw (FP16 and BF16 always are), every input goes raw, in input order, in
 * `raw_input_contents` (the typed ones encoded little-endian, BYTES length-prefixed); otherwise
 * every input carries typed `contents`. One form for all inputs keeps `raw_input_contents[i]` ↔
 * `inputs[i]` true for every server. `cache_policy` and `metadata` are the gateway's and are not
 * sent.
 */
export function toModelInferRequest(req: PredictRequest, upstreamModel: string, version: string | undefined): ModelInferRequest {
  checkRequestedOutputs(req);
  const raw = req.inputs.some((t) => t.data.case === "rawContents");
  const rawInputContents: Uint8Array[] = [];
  const inputs = req.inputs.map((t, i): ModelInferRequest_InferInputTensor => {
    const path = `inputs[${i}]`;
    checkNarrowInts(t, path);
    const base = {
      name: t.name,
      datatype: kserveName(t.datatype, path),
      shape: [...t.shape],
      parameters: toInferParameters(t.parameters, `${path}.parameters`),
    };
    if (raw) {
      // As given, or converted in bulk from the typed values.
      rawInputContents.push(rawFromTyped(t, path));
      return create(ModelInferRequest_InferInputTensorSchema, base);
    }
    return create(ModelInferRequest_InferInputTensorSchema, { ...base, contents: typedContents(t, path) });
  });
  return create(ModelInferRequestSchema, {
    modelName: upstreamModel,
    modelVersion: version ?? "",
    id: req.id,
    parameters: toInferParameters(req.parameters, "parameters"),
    inputs,
    outputs: req.outputs.map((o, i) => ({ name: o.name, parameters: toInferParameters(o.parameters, `outputs[${i}].parameters`) })),
    rawInputContents,
  });
}

function kserveName(datatype: DataType, path: string): string {
  const info = dataTypeInfo(datatype);
  if (info === undefined) throw invalidArgument(`${path}.datatype`, "required (one of the DATA_TYPE_* values)");
  return info.kserveName;
}

/** A typed tensor's values in InferTensorContents (the same fields, the same numbers). */
function typedContents(t: Tensor, path: string): InferTensorContents {
  const field = dataTypeInfo(t.datatype)?.field;
  if (t.data.case !== "contents" || field === undefined) {
    // validatePredictRequest lets no such tensor through; decodeTensor names the fault.
    decodeTensor(t, path);
    throw invalidArgument(`${path}.contents`, "no typed contents");
  }
  return create(InferTensorContentsSchema, { [field]: t.data.value[field] });
}

/**
 * Reads a ModelInferResponse: `raw_output_contents[i]` holds `outputs[i]` when present (then for
 * every output); otherwise each output's typed `contents`. Each output keeps the form it came in:
 * raw bytes pass through as `raw_contents` untouched (checked for length against shape and
 * datatype, never decoded element by element), typed values as `contents` (checked for count, and
 * narrow integers for range). A mismatch is UNAVAILABLE UPSTREAM_BAD_RESPONSE. The caller's
 * PredictRequest.output_form converts afterwards, in the gateway (tensor-bulk.ts). Response and
 * tensor parameters map back; the server's model name, version and id are not used (the gateway
 * reports its own).
 */
export function fromModelInferResponse(upstream: string, res: ModelInferResponse): PredictResponse {
  const raw = res.rawOutputContents;
  if (raw.length > 0 && raw.length !== res.outputs.length) {
    throw badResponse(upstream, `${raw.length} raw_output_contents for ${res.outputs.length} outputs`);
  }
  const outputs = res.outputs.map((o, i) => {
    const path = `outputs[${i}]`;
    const datatype = dataTypeOfName(o.datatype);
    if (datatype === undefined) throw badResponse(upstream, `${path} ("${o.name}") has unknown datatype "${o.datatype}"`);
    let data: Tensor["data"];
    if (raw.length > 0) {
      if (o.contents !== undefined && hasValues(o.contents)) {
        throw badResponse(upstream, `${path} ("${o.name}") has both contents and raw_output_contents`);
      }
      data = { case: "rawContents", value: raw[i]! };
    } else if (dataTypeInfo(datatype)!.field === undefined && (o.contents === undefined || !hasValues(o.contents))) {
      // FP16/BF16 have no typed field: only an empty tensor can come without raw contents.
      data = { case: "rawContents", value: new Uint8Array(0) };
    } else {
      const c = o.contents ?? create(InferTensorContentsSchema);
      data = {
        case: "contents",
        value: create(TensorContentsSchema, {
          boolContents: c.boolContents,
          intContents: c.intContents,
          int64Contents: c.int64Contents,
          uintContents: c.uintContents,
          uint64Contents: c.uint64Contents,
          fp32Contents: c.fp32Contents,
          fp64Contents: c.fp64Contents,
          bytesContents: c.bytesContents,
        }),
      };
    }
    const tensor = create(TensorSchema, { name: o.name, datatype, shape: o.shape, data });
    asBadResponse(upstream, () => {
      checkTensor(tensor, path);
      checkNarrowInts(tensor, path);
    });
    tensor.parameters = fromInferParameters(o.parameters);
    return tensor;
  });
  return create(PredictResponseSchema, { outputs, parameters: fromInferParameters(res.parameters) });
}

function hasValues(c: InferTensorContents): boolean {
  return (
    c.boolContents.length + c.intContents.length + c.int64Contents.length + c.uintContents.length +
      c.uint64Contents.length + c.fp32Contents.length + c.fp64Contents.length + c.bytesContents.length >
    0
  );
}

// ---------------------------------------------------------------------------------------------
// REST
// ---------------------------------------------------------------------------------------------

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const utf8Encoder = new TextEncoder();

/**
 * Builds the body of `POST …/infer`: inputs with flat row-major `data` (from typed or raw form
 * alike), requested outputs, parameters (see toRestParameters) and `id`. JSON cannot carry
 * everything a tensor can; refused with INVALID_ARGUMENT naming the element:
 * - NaN and ±Infinity in FP16/BF16/FP32/FP64 (JSON has no such numbers);
 * - BYTES elements that are not valid UTF-8 (REST BYTES are JSON strings; the binary tensor
 *   extension is not implemented).
 * FP16/BF16 go as the exact decimal value of each half (the server rounds it back to the same
 * bits); -0 as `-0.0`; INT64/UINT64 with every digit.
 */
export function toRestInferRequest(req: PredictRequest): RestInferRequest {
  checkRequestedOutputs(req);
  const parameters = toRestParameters(req.parameters, "parameters");
  const inputs = req.inputs.map((t, i): RestInferInput => {
    const path = `inputs[${i}]`;
    checkNarrowInts(t, path);
    const params = toRestParameters(t.parameters, `${path}.parameters`);
    return {
      name: t.name,
      shape: t.shape.map(jsonInt),
      datatype: kserveName(t.datatype, path),
      ...(params === undefined ? {} : { parameters: params }),
      data: restData(t, path),
    };
  });
  const outputs = req.outputs.map((o, i): RestRequestedOutput => {
    const params = toRestParameters(o.parameters, `outputs[${i}].parameters`);
    return { name: o.name, ...(params === undefined ? {} : { parameters: params }) };
  });
  return {
    ...(req.id === "" ? {} : { id: req.id }),
    ...(parameters === undefined ? {} : { parameters }),
    inputs,
    ...(outputs.length === 0 ? {} : { outputs }),
  };
}

function restData(t: Tensor, path: string): RestElement[] {
  const v: TensorValues = decodeTensor(t, path);
  const finite = (x: number, j: number): number => {
    if (!Number.isFinite(x)) {
      throw invalidArgument(
        elementPath(t, path, j),
        `tensor "${echoed(t.name)}" element ${j} is ${x}; KServe's REST JSON has no NaN or Infinity (use protocol "grpc")`,
      );
    }
    return x;
  };
  switch (v.kind) {
    case "bool":
      return v.values;
    case "bigint":
      return v.values.map(jsonInt);
    case "number":
      return t.datatype === DataType.FP32 || t.datatype === DataType.FP64 ? v.values.map(finite) : v.values;
    case "bytes":
      return v.values.map((b, j) => {
        try {
          return utf8.decode(b);
        } catch {
          throw invalidArgument(
            elementPath(t, path, j),
            `BYTES tensor "${echoed(t.name)}" element ${j} is not valid UTF-8; KServe's REST JSON carries BYTES as strings (use protocol "grpc" for binary data)`,
          );
        }
      });
    case "half": {
      const toNumber = t.datatype === DataType.BF16 ? bfloat16BitsToNumber : float16BitsToNumber;
      const view = new DataView(v.raw.buffer, v.raw.byteOffset, v.raw.byteLength);
      const out: number[] = new Array(v.raw.length / 2);
      for (let j = 0; j < out.length; j++) out[j] = finite(toNumber(view.getUint16(j * 2, true)), j);
      return out;
    }
  }
}

/**
 * Writes a request body as JSON text: bigints with every digit, -0 as `-0.0`, RestDouble with a
 * fraction or exponent. Non-finite numbers cannot occur (the translator refuses them); meeting
 * one is a bug, not a client fault.
 */
export function writeRestJson(value: unknown): string {
  return writeExactJson(value, { nonFinite: "throw", doubleMarker: true, what: "a KServe REST body" });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Flattens nested `data` arrays (row-major). */
function flatten(data: readonly unknown[], out: unknown[] = []): unknown[] {
  for (const d of data) {
    if (Array.isArray(d)) flatten(d, out);
    else out.push(d);
  }
  return out;
}

/**
 * Reads the answer of `POST …/infer`, parsed losslessly (64-bit integers as bigint, NaN/Infinity
 * tokens as numbers). Each output's `data` (flat or nested) must hold exactly the elements of its
 * shape, each of its datatype's JSON type and range; anything else is UNAVAILABLE
 * UPSTREAM_BAD_RESPONSE. `null` where a float is expected is refused too: some servers write
 * non-finite floats as null, which loses whether it was NaN or which Infinity.
 */
export function fromRestInferResponse(upstream: string, json: unknown): PredictResponse {
  if (!isObject(json)) throw badResponse(upstream, "the answer is not a JSON object");
  const outs = json["outputs"];
  if (!Array.isArray(outs)) throw badResponse(upstream, 'the answer has no "outputs" array');
  const outputs = outs.map((o: unknown, i) => {
    const path = `outputs[${i}]`;
    if (!isObject(o)) throw badResponse(upstream, `${path} is not an object`);
    const { name, datatype: dtName, shape, data } = o;
    if (typeof name !== "string" || name === "") throw badResponse(upstream, `${path} has no name`);
    const datatype = typeof dtName === "string" ? dataTypeOfName(dtName) : undefined;
    if (datatype === undefined) throw badResponse(upstream, `${path} ("${name}") has unknown datatype ${JSON.stringify(dtName)}`);
    if (!Array.isArray(shape) || !shape.every(isDimension)) {
      throw badResponse(upstream, `${path} ("${name}") has no shape of non-negative integers`);
    }
    if (!Array.isArray(data)) throw badResponse(upstream, `${path} ("${name}") has no data array`);
    const dims = shape.map((d) => BigInt(d));
    const count = dims.reduce((a, b) => a * b, 1n);
    const flat = flatten(data);
    if (BigInt(flat.length) !== count) {
      throw badResponse(upstream, `${path} ("${name}") has ${flat.length} values for shape [${dims.join(", ")}]`);
    }
    const values = restValues(upstream, `${path} ("${name}")`, datatype, flat);
    const tensor = encodeTensor(name, datatype, dims, values, false);
    tensor.parameters = fromRestParameters(upstream, o["parameters"], `${path}.parameters`);
    return tensor;
  });
  return create(PredictResponseSchema, { outputs, parameters: fromRestParameters(upstream, json["parameters"], "parameters") });
}

function isDimension(d: unknown): d is number | bigint {
  return (typeof d === "number" && Number.isSafeInteger(d) && d >= 0) || (typeof d === "bigint" && d >= 0n);
}

const intRange: ReadonlyMap<DataType, readonly [bigint, bigint]> = new Map([
  [DataType.INT8, [-128n, 127n]],
  [DataType.INT16, [-32768n, 32767n]],
  [DataType.INT32, [-(2n ** 31n), 2n ** 31n - 1n]],
  [DataType.INT64, [int64Min, int64Max]],
  [DataType.UINT8, [0n, 255n]],
  [DataType.UINT16, [0n, 65535n]],
  [DataType.UINT32, [0n, 2n ** 32n - 1n]],
  [DataType.UINT64, [0n, uint64Max]],
]);

/** Checks and converts the JSON elements of one output to the values of its datatype. */
function restValues(upstream: string, where: string, datatype: DataType, flat: unknown[]): TensorValues {
  const name = dataTypeInfo(datatype)!.kserveName;
  const bad = (j: number): never => {
    const v = flat[j];
    throw badResponse(upstream, `${where} element ${j} is not a ${name} value: ${typeof v === "bigint" ? v : JSON.stringify(v)}`);
  };
  if (datatype === DataType.BOOL) {
    return { kind: "bool", values: flat.map((v, j) => (typeof v === "boolean" ? v : bad(j))) };
  }
  if (datatype === DataType.BYTES) {
    return { kind: "bytes", values: flat.map((v, j) => (typeof v === "string" ? utf8Encoder.encode(v) : bad(j))) };
  }
  const range = intRange.get(datatype);
  if (range !== undefined) {
    const ints = flat.map((v, j) => {
      const b = typeof v === "bigint" ? v : typeof v === "number" && Number.isSafeInteger(v) ? BigInt(v) : bad(j);
      return b >= range[0] && b <= range[1] ? b : bad(j);
    });
    return datatype === DataType.INT64 || datatype === DataType.UINT64
      ? { kind: "bigint", values: ints }
      : { kind: "number", values: ints.map(Number) };
  }
  // Floats: JSON numbers, or a bigint literal (an integer written with more digits than a double).
  const numbers = flat.map((v, j) => (typeof v === "number" ? v : typeof v === "bigint" ? Number(v) : bad(j)));
  if (datatype === DataType.FP16 || datatype === DataType.BF16) {
    const toBits = datatype === DataType.BF16 ? numberToBfloat16Bits : numberToFloat16Bits;
    const raw = new Uint8Array(numbers.length * 2);
    const view = new DataView(raw.buffer);
    numbers.forEach((x, j) => view.setUint16(j * 2, toBits(x), true));
    return { kind: "half", raw };
  }
  // FP32: what the typed field will hold on the wire, so the answer in memory (and in the cache) is the same.
  return { kind: "number", values: datatype === DataType.FP32 ? numbers.map(Math.fround) : numbers };
}
