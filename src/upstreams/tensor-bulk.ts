import { create } from "@bufbuild/protobuf";
import type { PredictRequest, PredictResponse } from "../../gen/infergate/v1/inference_service_pb.js";
import { DataType, type Tensor, type TensorContents, TensorContentsSchema, TensorForm, TensorSchema } from "../../gen/infergate/v1/tensor_pb.js";
import { bytesOf, littleEndian } from "../wire/byte-order.js";
import { checkTensor, dataTypeInfo, decodeTensor, encodeTensor } from "./tensor-codec.js";

/**
 * Conversions between a tensor's typed values and its raw little-endian bytes, done with typed
 * arrays in bulk (one native copy) instead of an element-by-element loop through a DataView: on a
 * 1M-element FP32 tensor a few milliseconds instead of hundreds. The event loop is never held by
 * one big tensor for longer than a copy of its bytes (docs/benchmarks.md, issue 16).
 *
 * Typed arrays use the machine's byte order; on a big-endian machine every conversion goes through
 * the element-by-element codec of tensor-codec.ts, which writes little-endian explicitly
 * (littleEndian, src/wire/byte-order.ts).
 */

type NumberArrayCtor = Float32ArrayConstructor | Float64ArrayConstructor | Int8ArrayConstructor | Int16ArrayConstructor | Int32ArrayConstructor | Uint8ArrayConstructor | Uint16ArrayConstructor | Uint32ArrayConstructor;

/** The typed array whose elements are a datatype's raw form, for the datatypes held as numbers. */
const numberArrays: ReadonlyMap<DataType, NumberArrayCtor> = new Map<DataType, NumberArrayCtor>([
  [DataType.FP32, Float32Array],
  [DataType.FP64, Float64Array],
  [DataType.INT8, Int8Array],
  [DataType.INT16, Int16Array],
  [DataType.INT32, Int32Array],
  [DataType.UINT8, Uint8Array],
  [DataType.UINT16, Uint16Array],
  [DataType.UINT32, Uint32Array],
]);

/**
 * `raw` as an array of `ctor`'s elements: a view when the bytes are aligned for it, otherwise a
 * view of an aligned copy (a bytes field decoded from the wire is a view at any offset).
 */
function viewAs<T>(raw: Uint8Array, ctor: { new (b: ArrayBuffer, offset: number, length: number): T; BYTES_PER_ELEMENT: number }): T {
  const n = raw.byteLength / ctor.BYTES_PER_ELEMENT;
  if (raw.byteOffset % ctor.BYTES_PER_ELEMENT === 0) return new ctor(raw.buffer as ArrayBuffer, raw.byteOffset, n);
  // Uint8Array's slice copies; a Buffer's (a bytes field read from the wire may be one) does not.
  return new ctor(Uint8Array.prototype.slice.call(raw).buffer, 0, n);
}

/**
 * A tensor's raw form from its typed values, in bulk. The tensor must be one checkTensor accepts
 * (and narrow integers in range: see checkNarrowInts in tensor-codec.ts); numbers are stored as
 * a typed array stores them (wrapped to the width, as the DataView codec does).
 */
export function rawFromTyped(t: Tensor, path: string): Uint8Array {
  if (t.data.case === "rawContents") return t.data.value;
  const ctor = numberArrays.get(t.datatype);
  if (littleEndian && t.data.case === "contents") {
    const c = t.data.value;
    if (ctor !== undefined) {
      const field = dataTypeInfo(t.datatype)!.field!;
      checkTensor(t, path);
      return bytesOf(ctor.from(c[field] as number[]));
    }
    if (t.datatype === DataType.INT64) {
      checkTensor(t, path);
      return bytesOf(BigInt64Array.from(c.int64Contents));
    }
    if (t.datatype === DataType.UINT64) {
      checkTensor(t, path);
      return bytesOf(BigUint64Array.from(c.uint64Contents));
    }
    if (t.datatype === DataType.BOOL) {
      checkTensor(t, path);
      const v = c.boolContents;
      const out = new Uint8Array(v.length);
      for (let i = 0; i < v.length; i++) out[i] = v[i] ? 1 : 0;
      return out;
    }
  }
  // BYTES (length-prefixed), or a big-endian machine.
  return encodeTensor(t.name, t.datatype, t.shape, decodeTensor(t, path), true).data.value as Uint8Array;
}

/**
 * A tensor's typed values from its raw form, in bulk; FP16 and BF16, which have no typed field,
 * stay raw. Checks the raw length against shape and datatype first (INVALID_ARGUMENT at `path`).
 */
export function typedFromRaw(t: Tensor, path: string): Tensor["data"] {
  if (t.data.case !== "rawContents") return t.data;
  const info = dataTypeInfo(t.datatype);
  if (info?.field === undefined) return t.data;
  checkTensor(t, path);
  const raw = t.data.value;
  const ctor = numberArrays.get(t.datatype);
  let contents: TensorContents;
  if (littleEndian && ctor !== undefined) {
    const view = viewAs(raw, ctor as unknown as Float64ArrayConstructor) as ArrayLike<number>;
    // A plain loop into a preallocated array: the quickest way to a number[] (Array.from is about
    // twice as slow on Node 20).
    const values: number[] = new Array<number>(view.length);
    for (let i = 0; i < view.length; i++) values[i] = view[i]!;
    contents = create(TensorContentsSchema, { [info.field]: values });
  } else if (littleEndian && (t.datatype === DataType.INT64 || t.datatype === DataType.UINT64)) {
    const view = t.datatype === DataType.INT64 ? viewAs(raw, BigInt64Array) : viewAs(raw, BigUint64Array);
    contents = create(TensorContentsSchema, { [info.field]: Array.from(view) });
  } else if (t.datatype === DataType.BOOL) {
    const values: boolean[] = new Array<boolean>(raw.length);
    for (let i = 0; i < raw.length; i++) values[i] = raw[i] !== 0;
    contents = create(TensorContentsSchema, { boolContents: values });
  } else {
    const typed = encodeTensor(t.name, t.datatype, t.shape, decodeTensor(t, path), false);
    return typed.data;
  }
  return { case: "contents", value: contents };
}

/**
 * The response in the form the request asked for (PredictRequest.output_form): unset returns it
 * as it is; TYPED and RAW convert each output that is in the other form, in bulk. Never changes
 * `res` or its tensors (an answer may be shared with the cache): a converted response is a new
 * message with new tensors.
 */
export function applyOutputForm(res: PredictResponse, form: TensorForm): PredictResponse {
  if (form !== TensorForm.TYPED && form !== TensorForm.RAW) return res;
  const want = form === TensorForm.TYPED ? "contents" : "rawContents";
  if (res.outputs.every((t) => t.data.case === want || dataTypeInfo(t.datatype)?.field === undefined)) return res;
  const outputs = res.outputs.map((t, i) => {
    if (t.data.case === want) return t;
    const path = `outputs[${i}]`;
    const data: Tensor["data"] = want === "contents" ? typedFromRaw(t, path) : { case: "rawContents", value: rawFromTyped(t, path) };
    return create(TensorSchema, { name: t.name, datatype: t.datatype, shape: t.shape, parameters: t.parameters, data });
  });
  return { ...res, outputs };
}

/** The bytes of the values of some tensors (typed ones counted at their raw width). */
export function tensorBytes(tensors: readonly Tensor[]): number {
  let n = 0;
  for (const t of tensors) {
    if (t.data.case === "rawContents") n += t.data.value.length;
    else if (t.data.case === "contents") {
      const c = t.data.value;
      n += 4 * (c.fp32Contents.length + c.intContents.length + c.uintContents.length) + 8 * (c.fp64Contents.length + c.int64Contents.length + c.uint64Contents.length) + c.boolContents.length;
      for (const b of c.bytesContents) n += 4 + b.length;
    }
  }
  return n;
}

/** Datatypes whose typed field holds exactly what their raw form does (no narrower width to check). */
const losslessRaw = new Set([DataType.FP32, DataType.FP64, DataType.INT32, DataType.UINT32, DataType.INT64, DataType.UINT64, DataType.BOOL]);

/**
 * The request with its numeric typed inputs in raw form, converted in bulk: what protobuf then
 * encodes (to hand the request to a worker thread) is a copy of bytes, not a loop over elements.
 * INT8/INT16/UINT8/UINT16 stay typed (their values are range-checked where they are read) and
 * BYTES stays as it is. A new message; `req` is not changed.
 */
export function withRawInputs(req: PredictRequest): PredictRequest {
  const inputs = req.inputs.map((t, i) =>
    t.data.case === "contents" && losslessRaw.has(t.datatype) ? { ...t, data: { case: "rawContents" as const, value: rawFromTyped(t, `inputs[${i}]`) } } : t,
  );
  return { ...req, inputs };
}

/**
 * Outputs `typed` of a response read off-thread in raw form (see offload-worker.ts), back in the
 * typed form the upstream sent them in, unless the caller asked for RAW.
 */
export function typedAgain(res: PredictResponse, typed: readonly number[], form: TensorForm): PredictResponse {
  if (form !== TensorForm.RAW) {
    for (const i of typed) res.outputs[i]!.data = typedFromRaw(res.outputs[i]!, `outputs[${i}]`);
  }
  return res;
}
