/**
 * Pure translations between infergate's Predict messages and the Open Inference Protocol (KServe
 * v2) over HTTP/REST: the JSON of kserve-wire.ts, read and written exactly (exact-json.ts). No
 * I/O: the client in kserve-upstream.ts sends what these build and feeds back what arrives (big
 * tensors on the worker thread, offload-worker.ts). docs/upstream-kserve.md has the mapping table;
 * every request field either maps or is rejected here with INVALID_ARGUMENT naming it, never
 * silently dropped. The gRPC half is kserve-grpc-translate.ts.
 */
import { create } from "@bufbuild/protobuf";
import { type PredictRequest, type PredictResponse, PredictResponseSchema } from "../../../gen/infergate/v1/inference_service_pb.js";
import { DataType, type ParameterValue, ParameterValueSchema, type Tensor } from "../../../gen/infergate/v1/tensor_pb.js";
import { echoed, invalidArgument } from "../../core/gateway-error.js";
import { writeExactJson } from "../exact-json.js";
import { badResponse } from "../http/http-errors.js";
import { isObject } from "../json-value.js";
import { checkNarrowInts, dataTypeInfo, decodeTensor, elementPath, encodeTensor, type TensorValues } from "../tensor-codec.js";
import { bfloat16BitsToNumber, float16BitsToNumber, numberToBfloat16Bits, numberToFloat16Bits } from "../tensor-math.js";
import { checkRequestedOutputs, dataTypeOfName, kserveName, noParameterValue } from "./kserve-common.js";
import type {
  RestElement,
  RestInferInput,
  RestInferRequest,
  RestParameters,
  RestParameterValue,
  RestRequestedOutput,
} from "./kserve-wire.js";

/** `/v2/models/{model}[/versions/{version}]/{infer|ready}`, each segment URL-encoded. */
export function restModelPath(model: string, version: string | undefined, action: "infer" | "ready"): string {
  const v = version === undefined ? "" : `/versions/${encodeURIComponent(version)}`;
  return `/v2/models/${encodeURIComponent(model)}${v}/${action}`;
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
        throw invalidArgument(at, noParameterValue);
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
