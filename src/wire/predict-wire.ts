import { toBinary } from "@bufbuild/protobuf";
import { type PredictResponse, PredictResponseSchema } from "../../gen/infergate/v1/inference_service_pb.js";
import { DataType, type Tensor, type TensorContents, TensorContentsSchema, TensorSchema } from "../../gen/infergate/v1/tensor_pb.js";
import { bytesOf, littleEndian } from "./byte-order.js";
import { varintLength, writeVarint32 } from "./varint.js";

/**
 * Big Predict messages on the gRPC listener, read and written without visiting their tensors'
 * elements one by one through protobuf-es: a 1M-element FP32 tensor costs protobuf-es 2.17 about
 * 70–150 ms to decode and 25–45 ms to encode on the project's machine (docs/benchmarks.md), which
 * is that long with every other call of the process waiting. Here it costs a copy of its bytes.
 *
 * - Requests: typedInputsToRaw rewrites the bytes of a big PredictRequest so that each input given
 *   as packed typed numbers (`contents`) arrives as `raw_contents` holding the same values — for
 *   FP32 and FP64 the packed field *is* the little-endian raw form; integers and booleans are
 *   varints, read in one tight loop into a typed array. fromBinary of the result then reads each
 *   tensor as one bytes field. Only tensors whose values are all valid for their datatype and
 *   whose count matches their shape are rewritten; anything else is left for protobuf-es, so that
 *   validation names the field at fault exactly as for a small request.
 * - Responses: encodePredictResponse writes an answer whose outputs hold many typed numbers with
 *   the packed fields built from typed arrays in bulk. The bytes decode to the same message as
 *   toBinary's (the outputs come after the other fields, which protobuf allows).
 *
 * Typed arrays use the machine's byte order: on a big-endian machine neither function is used.
 */

/** Requests smaller than this are decoded by protobuf-es as they are (the rewrite gains nothing). */
export const bigPredictRequestBytes = 64 * 1024;

/** Outputs with fewer typed elements than this are encoded by protobuf-es. */
const bigOutputElements = 4096;

// Field numbers (proto/infergate/v1/inference_service.proto, tensor.proto).
const requestInputs = 3;
const responseOutputs = 3;
const tensorShape = 3;
const tensorDatatype = 2;
const tensorContents = 4;
const tensorRaw = 5;

const wireVarint = 0;
const wireFixed64 = 1;
const wireLen = 2;
const wireFixed32 = 5;

/** How a datatype's typed values are packed: TensorContents field and element reader. */
interface Packing {
  readonly field: number;
  /** Bytes per element in the raw form. */
  readonly width: number;
  /** "fixed": the packed bytes are the raw form; "varint": one varint per element. */
  readonly kind: "fixed" | "varint";
  /** Inclusive range of a varint element read as a 32-bit integer (signed or not), if narrow. */
  readonly range?: readonly [number, number];
  readonly signed?: boolean;
}

const packings: ReadonlyMap<DataType, Packing> = new Map<DataType, Packing>([
  [DataType.FP32, { field: 6, width: 4, kind: "fixed" }],
  [DataType.FP64, { field: 7, width: 8, kind: "fixed" }],
  [DataType.BOOL, { field: 1, width: 1, kind: "varint", range: [0, 1] }],
  [DataType.INT8, { field: 2, width: 1, kind: "varint", range: [-128, 127], signed: true }],
  [DataType.INT16, { field: 2, width: 2, kind: "varint", range: [-32768, 32767], signed: true }],
  [DataType.INT32, { field: 2, width: 4, kind: "varint", signed: true }],
  [DataType.UINT8, { field: 4, width: 1, kind: "varint", range: [0, 255] }],
  [DataType.UINT16, { field: 4, width: 2, kind: "varint", range: [0, 65535] }],
  [DataType.UINT32, { field: 4, width: 4, kind: "varint" }],
  [DataType.INT64, { field: 3, width: 8, kind: "varint" }],
  [DataType.UINT64, { field: 5, width: 8, kind: "varint" }],
]);

// --- reading ----------------------------------------------------------------------------------

/** The last varint read by readVarint: its low and high 32 bits (unsigned). */
let lo = 0;
let hi = 0;

/** Reads a varint of up to 64 bits at `pos`; returns the position after it, or -1 if malformed. */
function readVarint(buf: Uint8Array, pos: number, end: number): number {
  let l = 0;
  let b = 0;
  for (let shift = 0; shift < 28; shift += 7) {
    if (pos >= end) return -1;
    b = buf[pos++]!;
    l |= (b & 0x7f) << shift;
    if (b < 0x80) {
      lo = l >>> 0;
      hi = 0;
      return pos;
    }
  }
  if (pos >= end) return -1;
  b = buf[pos++]!;
  l |= (b & 0x0f) << 28;
  let h = (b & 0x7f) >> 4;
  if (b >= 0x80) {
    for (let shift = 3; ; shift += 7) {
      if (pos >= end || shift > 31) return -1;
      b = buf[pos++]!;
      h |= (b & 0x7f) << shift;
      if (b < 0x80) break;
    }
  }
  lo = l >>> 0;
  hi = h >>> 0;
  return pos;
}

/** The end of the field whose value starts at `pos` (after its tag), or -1 if malformed. */
function skipField(buf: Uint8Array, pos: number, end: number, wire: number): number {
  switch (wire) {
    case wireVarint:
      return readVarint(buf, pos, end);
    case wireFixed64:
      return pos + 8 <= end ? pos + 8 : -1;
    case wireFixed32:
      return pos + 4 <= end ? pos + 4 : -1;
    case wireLen: {
      const at = readVarint(buf, pos, end);
      if (at < 0 || hi !== 0 || at + lo > end) return -1;
      return at + lo;
    }
    default:
      // Groups (3, 4) are not in these messages.
      return -1;
  }
}

/**
 * The bytes of a big PredictRequest with every input given as packed typed numbers rewritten as
 * `raw_contents` (see the top of this file), or undefined when there is nothing to rewrite, the
 * request is small, the machine is big-endian, or the bytes are not what they should be (then
 * protobuf-es reads them as they are and reports what is wrong).
 */
export function typedInputsToRaw(bytes: Uint8Array): Uint8Array | undefined {
  if (!littleEndian || bytes.length < bigPredictRequestBytes) return undefined;
  const parts: Uint8Array[] = [];
  let copiedTo = 0;
  let pos = 0;
  const end = bytes.length;
  while (pos < end) {
    const fieldStart = pos;
    pos = readVarint(bytes, pos, end);
    if (pos < 0 || hi !== 0) return undefined;
    const field = lo >>> 3;
    const wire = lo & 7;
    if (field === requestInputs && wire === wireLen) {
      const at = readVarint(bytes, pos, end);
      if (at < 0 || hi !== 0 || at + lo > end) return undefined;
      const tensorEnd = at + lo;
      const rewritten = rawTensor(bytes, at, tensorEnd);
      if (rewritten !== undefined) {
        parts.push(bytes.subarray(copiedTo, fieldStart), lenField(requestInputs, rewritten.length), ...rewritten.parts);
        copiedTo = tensorEnd;
      }
      pos = tensorEnd;
      continue;
    }
    pos = skipField(bytes, pos, end, wire);
    if (pos < 0) return undefined;
  }
  if (parts.length === 0) return undefined;
  parts.push(bytes.subarray(copiedTo));
  return concat(parts);
}

/**
 * A Tensor (bytes[start, end)) whose `contents` hold packed typed numbers, as the same tensor with
 * `raw_contents` instead: its other fields as they are, then the raw bytes. Undefined when the
 * tensor is not one to rewrite.
 */
function rawTensor(buf: Uint8Array, start: number, end: number): { parts: Uint8Array[]; length: number } | undefined {
  let datatype = 0;
  let count = 1;
  let contents: [number, number] | undefined;
  const kept: Uint8Array[] = [];
  let pos = start;
  while (pos < end) {
    const fieldStart = pos;
    pos = readVarint(buf, pos, end);
    if (pos < 0 || hi !== 0) return undefined;
    const field = lo >>> 3;
    const wire = lo & 7;
    if (field === tensorRaw) return undefined;
    if (field === tensorContents) {
      if (contents !== undefined || wire !== wireLen) return undefined;
      const at = readVarint(buf, pos, end);
      if (at < 0 || hi !== 0 || at + lo > end) return undefined;
      contents = [at, at + lo];
      pos = at + lo;
      continue;
    }
    if (field === tensorDatatype && wire === wireVarint) {
      pos = readVarint(buf, pos, end);
      if (pos < 0) return undefined;
      datatype = lo;
    } else if (field === tensorShape && (wire === wireLen || wire === wireVarint)) {
      let dimsEnd = end;
      if (wire === wireLen) {
        pos = readVarint(buf, pos, end);
        if (pos < 0 || hi !== 0 || pos + lo > end) return undefined;
        dimsEnd = pos + lo;
      }
      do {
        pos = readVarint(buf, pos, dimsEnd);
        // A negative or huge dimension: left for validation to name.
        if (pos < 0 || hi !== 0) return undefined;
        count *= lo;
      } while (wire === wireLen && pos < dimsEnd);
    } else {
      pos = skipField(buf, pos, end, wire);
      if (pos < 0) return undefined;
    }
    kept.push(buf.subarray(fieldStart, pos));
  }
  const packing = packings.get(datatype as DataType);
  if (contents === undefined || packing === undefined || count === 0 || count > 2 ** 31) return undefined;
  const raw = rawOfContents(buf, contents[0], contents[1], packing, count);
  if (raw === undefined) return undefined;
  const head = lenField(tensorRaw, raw.length);
  kept.push(head, raw);
  return { parts: kept, length: kept.reduce((n, p) => n + p.length, 0) };
}

/**
 * The raw form of a TensorContents (bytes[start, end)) that holds exactly `count` values in the
 * one packed field of `packing`, each valid for the datatype; otherwise undefined.
 */
function rawOfContents(buf: Uint8Array, start: number, end: number, packing: Packing, count: number): Uint8Array | undefined {
  let pos = readVarint(buf, start, end);
  if (pos < 0 || hi !== 0 || lo !== ((packing.field << 3) | wireLen)) return undefined;
  pos = readVarint(buf, pos, end);
  if (pos < 0 || hi !== 0 || pos + lo !== end) return undefined;
  // The one field, and nothing after it.
  const payloadEnd = end;
  if (packing.kind === "fixed") {
    // Packed FP32/FP64 are little-endian IEEE 754: the raw form itself.
    return payloadEnd - pos === count * packing.width ? buf.subarray(pos, payloadEnd) : undefined;
  }
  const out = new Uint8Array(count * packing.width);
  const words = packing.width === 8 ? new Uint32Array(out.buffer) : undefined;
  const view = packing.width === 2 || packing.width === 4 ? new DataView(out.buffer) : undefined;
  const range = packing.range;
  for (let i = 0; i < count; i++) {
    pos = readVarint(buf, pos, payloadEnd);
    if (pos < 0) return undefined;
    if (words !== undefined) {
      words[2 * i] = lo;
      words[2 * i + 1] = hi;
      continue;
    }
    const v = packing.signed ? lo | 0 : lo;
    // A value beyond its datatype (or a uint32 field's varint wider than 32 bits): left for
    // validation to report.
    if ((range !== undefined && (v < range[0] || v > range[1])) || (!packing.signed && hi !== 0)) return undefined;
    if (packing.width === 1) out[i] = v & 0xff;
    else if (packing.width === 2) view!.setUint16(2 * i, v & 0xffff, true);
    else view!.setUint32(4 * i, v >>> 0, true);
  }
  return pos === payloadEnd ? out : undefined;
}

// --- writing ----------------------------------------------------------------------------------

/** The tag and length of a length-delimited field of `length` bytes. */
function lenField(field: number, length: number): Uint8Array {
  const tag = (field << 3) | wireLen;
  const out = new Uint8Array(varintLength(tag) + varintLength(length));
  let at = writeVarint32(out, 0, tag);
  at = writeVarint32(out, at, length);
  return out;
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  let total = 0;
  for (const p of parts) total += p.length;
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** The number of typed values a tensor holds in the fields written here in bulk. */
function bulkElements(t: Tensor): number {
  if (t.data.case !== "contents") return 0;
  const c = t.data.value;
  return c.fp32Contents.length + c.fp64Contents.length + c.intContents.length + c.uintContents.length + c.boolContents.length;
}

/**
 * The packed field of one TensorContents field, built in bulk, or undefined for the fields left
 * to protobuf-es (64-bit integers, bytes).
 */
function packedField(field: number, values: readonly number[] | readonly boolean[]): Uint8Array[] {
  if (values.length === 0) return [];
  let payload: Uint8Array;
  if (field === 6) payload = bytesOf(Float32Array.from(values as number[]));
  else if (field === 7) payload = bytesOf(Float64Array.from(values as number[]));
  else {
    // int32 (2), uint32 (4), bool (1): varints; a negative int32 takes ten bytes (sign-extended).
    const out = new Uint8Array(values.length * 10);
    let at = 0;
    for (let i = 0; i < values.length; i++) {
      const x = values[i]!;
      let v = typeof x === "boolean" ? (x ? 1 : 0) : (x as number);
      if (field === 2 && v < 0) {
        let l = v >>> 0;
        for (let k = 0; k < 4; k++) {
          out[at++] = (l & 0x7f) | 0x80;
          l >>>= 7;
        }
        // bits 28-31 of the low word, then the high word 0xffffffff sign extension.
        out[at++] = (l & 0x0f) | 0x70 | 0x80;
        out[at++] = 0xff;
        out[at++] = 0xff;
        out[at++] = 0xff;
        out[at++] = 0xff;
        out[at++] = 0x01;
        continue;
      }
      v = field === 4 ? v >>> 0 : v;
      while (v >= 0x80) {
        out[at++] = (v & 0x7f) | 0x80;
        v >>>= 7;
      }
      out[at++] = v;
    }
    payload = out.subarray(0, at);
  }
  return [lenField(field, payload.length), payload];
}

/** A TensorContents message's bytes, its packed number fields built in bulk. */
function contentsBytes(c: TensorContents): Uint8Array[] {
  if (c.$unknown !== undefined || c.int64Contents.length > 0 || c.uint64Contents.length > 0 || c.bytesContents.length > 0) {
    return [toBinary(TensorContentsSchema, c)];
  }
  // Field order as protobuf-es writes it.
  return [
    ...packedField(1, c.boolContents),
    ...packedField(2, c.intContents),
    ...packedField(4, c.uintContents),
    ...packedField(6, c.fp32Contents),
    ...packedField(7, c.fp64Contents),
  ];
}

/**
 * A PredictResponse's wire bytes with big typed outputs written in bulk (see the top of this
 * file), or undefined when no output is big enough to gain from it (toBinary then).
 */
export function encodePredictResponse(res: PredictResponse): Uint8Array | undefined {
  if (!littleEndian || res.$unknown !== undefined || !res.outputs.some((t) => bulkElements(t) >= bigOutputElements)) return undefined;
  const parts: Uint8Array[] = [toBinary(PredictResponseSchema, { ...res, outputs: [] })];
  for (const t of res.outputs) {
    let tensor: Uint8Array[];
    if (bulkElements(t) >= bigOutputElements && t.$unknown === undefined && t.data.case === "contents") {
      const contents = contentsBytes(t.data.value);
      const contentsLength = contents.reduce((n, p) => n + p.length, 0);
      tensor = [toBinary(TensorSchema, { ...t, data: { case: undefined } }), lenField(tensorContents, contentsLength), ...contents];
    } else {
      tensor = [toBinary(TensorSchema, t)];
    }
    parts.push(lenField(responseOutputs, tensor.reduce((n, p) => n + p.length, 0)), ...tensor);
  }
  return concat(parts);
}
