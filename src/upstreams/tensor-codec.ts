import { create } from "@bufbuild/protobuf";
import {
  DataType,
  type Tensor,
  type TensorContents,
  TensorContentsSchema,
  TensorSchema,
} from "../../gen/infergate/v1/tensor_pb.js";
import { invalidArgument } from "../core/gateway-error.js";

type ContentsField = Exclude<keyof TensorContents, "$typeName" | "$unknown">;

/** Facts of one datatype: its KServe v2 name, the typed field that holds it, its raw width. */
export interface DataTypeInfo {
  /** The KServe v2 / Triton name, e.g. "FP32". */
  readonly kserveName: string;
  /** The TensorContents field for typed values; undefined for FP16/BF16 (raw only). */
  readonly field: ContentsField | undefined;
  /** Bytes per element in raw form; 0 for BYTES (length-prefixed). */
  readonly byteSize: number;
}

const info = (kserveName: string, field: ContentsField | undefined, byteSize: number): DataTypeInfo => ({
  kserveName,
  field,
  byteSize,
});

const dataTypes: ReadonlyMap<DataType, DataTypeInfo> = new Map([
  [DataType.BOOL, info("BOOL", "boolContents", 1)],
  [DataType.UINT8, info("UINT8", "uintContents", 1)],
  [DataType.UINT16, info("UINT16", "uintContents", 2)],
  [DataType.UINT32, info("UINT32", "uintContents", 4)],
  [DataType.UINT64, info("UINT64", "uint64Contents", 8)],
  [DataType.INT8, info("INT8", "intContents", 1)],
  [DataType.INT16, info("INT16", "intContents", 2)],
  [DataType.INT32, info("INT32", "intContents", 4)],
  [DataType.INT64, info("INT64", "int64Contents", 8)],
  [DataType.FP16, info("FP16", undefined, 2)],
  [DataType.FP32, info("FP32", "fp32Contents", 4)],
  [DataType.FP64, info("FP64", "fp64Contents", 8)],
  [DataType.BF16, info("BF16", undefined, 2)],
  [DataType.BYTES, info("BYTES", "bytesContents", 0)],
]);

const snakeField: Record<ContentsField, string> = {
  boolContents: "bool_contents",
  intContents: "int_contents",
  int64Contents: "int64_contents",
  uintContents: "uint_contents",
  uint64Contents: "uint64_contents",
  fp32Contents: "fp32_contents",
  fp64Contents: "fp64_contents",
  bytesContents: "bytes_contents",
};

/** The facts of a datatype, or undefined for DATA_TYPE_UNSPECIFIED and unknown values. */
export function dataTypeInfo(datatype: DataType): DataTypeInfo | undefined {
  return dataTypes.get(datatype);
}

/** Largest tensor element count we accept: beyond it sizes lose precision as JS numbers. */
const maxElements = 2 ** 40;

/**
 * Checks a tensor's name, datatype, shape and that its contents hold exactly as many elements as
 * the shape says, in the one form its datatype allows. Returns the element count. Throws an
 * INVALID_ARGUMENT naming the field at `path` (e.g. `inputs[1]`).
 */
export function checkTensor(t: Tensor, path: string): number {
  if (t.name === "") {
    throw invalidArgument(`${path}.name`, "required");
  }
  const dt = dataTypeInfo(t.datatype);
  if (dt === undefined) {
    throw invalidArgument(`${path}.datatype`, "required (one of the DATA_TYPE_* values)");
  }
  let count = 1;
  t.shape.forEach((d, i) => {
    if (d < 0n) {
      throw invalidArgument(`${path}.shape[${i}]`, `dimension ${d} is negative`);
    }
    count *= Number(d);
    if (count > maxElements) {
      throw invalidArgument(`${path}.shape`, `more than ${maxElements} elements`);
    }
  });
  const shape = `[${t.shape.join(", ")}]`;
  switch (t.data.case) {
    case "contents": {
      if (dt.field === undefined) {
        throw invalidArgument(`${path}.contents`, `${dt.kserveName} tensors must use raw_contents`);
      }
      for (const [field, name] of Object.entries(snakeField) as [ContentsField, string][]) {
        const n = t.data.value[field].length;
        if (field === dt.field) {
          if (n !== count) {
            throw invalidArgument(
              `${path}.contents.${name}`,
              `${n} values, but shape ${shape} has ${count} elements`,
            );
          }
        } else if (n > 0) {
          throw invalidArgument(`${path}.contents.${name}`, `not allowed for ${dt.kserveName}; use ${snakeField[dt.field]}`);
        }
      }
      return count;
    }
    case "rawContents": {
      const raw = t.data.value;
      if (dt.byteSize > 0) {
        if (raw.length !== count * dt.byteSize) {
          throw invalidArgument(
            `${path}.raw_contents`,
            `${raw.length} bytes, but shape ${shape} of ${dt.kserveName} needs ${count * dt.byteSize}`,
          );
        }
        return count;
      }
      const n = splitLengthPrefixed(raw, `${path}.raw_contents`).length;
      if (n !== count) {
        throw invalidArgument(`${path}.raw_contents`, `${n} elements, but shape ${shape} has ${count}`);
      }
      return count;
    }
    default:
      throw invalidArgument(`${path}.contents`, "no data: set contents or raw_contents");
  }
}

/** The range of the datatypes narrower than their typed field (int32/uint32 hold them). */
const narrowRange: ReadonlyMap<DataType, readonly [number, number]> = new Map([
  [DataType.INT8, [-128, 127]],
  [DataType.INT16, [-32768, 32767]],
  [DataType.UINT8, [0, 255]],
  [DataType.UINT16, [0, 65535]],
]);

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

/**
 * Where element `j` of a tensor sits, for error messages: `inputs[0].contents.fp32_contents[3]`,
 * or `inputs[0].raw_contents` for raw tensors.
 */
export function elementPath(t: Tensor, path: string, j: number): string {
  const field = dataTypeInfo(t.datatype)?.field;
  return t.data.case === "contents" && field !== undefined ? `${path}.contents.${snakeField[field]}[${j}]` : `${path}.raw_contents`;
}

/** Splits the raw BYTES form: each element is a 4-byte little-endian length, then the bytes. */
export function splitLengthPrefixed(raw: Uint8Array, path: string): Uint8Array[] {
  const out: Uint8Array[] = [];
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  let at = 0;
  while (at < raw.length) {
    if (at + 4 > raw.length) {
      throw invalidArgument(path, `truncated length prefix at byte ${at}`);
    }
    const len = view.getUint32(at, true);
    at += 4;
    if (at + len > raw.length) {
      throw invalidArgument(path, `element ${out.length} runs past the end (${len} bytes at byte ${at})`);
    }
    out.push(raw.subarray(at, at + len));
    at += len;
  }
  return out;
}

/** The values of a tensor in the JS type that holds its datatype exactly. */
export type TensorValues =
  | { readonly kind: "bool"; readonly values: boolean[] }
  | { readonly kind: "number"; readonly values: number[] }
  | { readonly kind: "bigint"; readonly values: bigint[] }
  | { readonly kind: "bytes"; readonly values: Uint8Array[] }
  | { readonly kind: "half"; readonly raw: Uint8Array };

/** Reads a tensor that checkTensor accepted, from typed or raw form alike. */
export function decodeTensor(t: Tensor, path: string): TensorValues {
  const count = checkTensor(t, path);
  const dt = dataTypeInfo(t.datatype)!;
  if (t.data.case === "contents") {
    const c = t.data.value;
    switch (dt.field) {
      case "boolContents":
        return { kind: "bool", values: c.boolContents };
      case "int64Contents":
        return { kind: "bigint", values: c.int64Contents };
      case "uint64Contents":
        return { kind: "bigint", values: c.uint64Contents };
      case "bytesContents":
        return { kind: "bytes", values: c.bytesContents };
      default:
        return { kind: "number", values: c[dt.field!] as number[] };
    }
  }
  const raw = t.data.value as Uint8Array;
  if (t.datatype === DataType.BYTES) {
    return { kind: "bytes", values: splitLengthPrefixed(raw, `${path}.raw_contents`) };
  }
  if (t.datatype === DataType.FP16 || t.datatype === DataType.BF16) {
    return { kind: "half", raw };
  }
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const read = rawReader(t.datatype);
  const values: (number | bigint | boolean)[] = new Array(count);
  for (let i = 0; i < count; i++) {
    values[i] = read(view, i * dt.byteSize);
  }
  if (t.datatype === DataType.BOOL) {
    return { kind: "bool", values: values as boolean[] };
  }
  if (t.datatype === DataType.INT64 || t.datatype === DataType.UINT64) {
    return { kind: "bigint", values: values as bigint[] };
  }
  return { kind: "number", values: values as number[] };
}

type Reader = (v: DataView, at: number) => number | bigint | boolean;
type Writer = (v: DataView, at: number, x: never) => void;

function rawReader(dt: DataType): Reader {
  switch (dt) {
    case DataType.BOOL:
      return (v, at) => v.getUint8(at) !== 0;
    case DataType.UINT8:
      return (v, at) => v.getUint8(at);
    case DataType.UINT16:
      return (v, at) => v.getUint16(at, true);
    case DataType.UINT32:
      return (v, at) => v.getUint32(at, true);
    case DataType.UINT64:
      return (v, at) => v.getBigUint64(at, true);
    case DataType.INT8:
      return (v, at) => v.getInt8(at);
    case DataType.INT16:
      return (v, at) => v.getInt16(at, true);
    case DataType.INT32:
      return (v, at) => v.getInt32(at, true);
    case DataType.INT64:
      return (v, at) => v.getBigInt64(at, true);
    case DataType.FP32:
      return (v, at) => v.getFloat32(at, true);
    case DataType.FP64:
      return (v, at) => v.getFloat64(at, true);
    default:
      throw new Error(`no fixed-width reader for datatype ${dt}`);
  }
}

function rawWriter(dt: DataType): Writer {
  switch (dt) {
    case DataType.BOOL:
      return ((v, at, x: boolean) => v.setUint8(at, x ? 1 : 0)) as Writer;
    case DataType.UINT8:
      return ((v, at, x: number) => v.setUint8(at, x)) as Writer;
    case DataType.UINT16:
      return ((v, at, x: number) => v.setUint16(at, x, true)) as Writer;
    case DataType.UINT32:
      return ((v, at, x: number) => v.setUint32(at, x, true)) as Writer;
    case DataType.UINT64:
      return ((v, at, x: bigint) => v.setBigUint64(at, x, true)) as Writer;
    case DataType.INT8:
      return ((v, at, x: number) => v.setInt8(at, x)) as Writer;
    case DataType.INT16:
      return ((v, at, x: number) => v.setInt16(at, x, true)) as Writer;
    case DataType.INT32:
      return ((v, at, x: number) => v.setInt32(at, x, true)) as Writer;
    case DataType.INT64:
      return ((v, at, x: bigint) => v.setBigInt64(at, x, true)) as Writer;
    case DataType.FP32:
      return ((v, at, x: number) => v.setFloat32(at, x, true)) as Writer;
    case DataType.FP64:
      return ((v, at, x: number) => v.setFloat64(at, x, true)) as Writer;
    default:
      throw new Error(`no fixed-width writer for datatype ${dt}`);
  }
}

/**
 * Builds a tensor from values, typed (`raw` false) or in the raw little-endian form. Integer
 * values are stored as the datatype holds them (wrapped to its width in raw form).
 */
export function encodeTensor(
  name: string,
  datatype: DataType,
  shape: readonly bigint[],
  values: TensorValues,
  raw: boolean,
): Tensor {
  const dt = dataTypeInfo(datatype);
  if (dt === undefined) {
    throw new Error(`cannot encode datatype ${datatype}`);
  }
  if (values.kind === "half") {
    return create(TensorSchema, { name, datatype, shape: [...shape], data: { case: "rawContents", value: values.raw } });
  }
  if (!raw && dt.field !== undefined) {
    const contents = create(TensorContentsSchema, { [dt.field]: values.values });
    return create(TensorSchema, { name, datatype, shape: [...shape], data: { case: "contents", value: contents } });
  }
  let bytes: Uint8Array;
  if (values.kind === "bytes") {
    const total = values.values.reduce((n, b) => n + 4 + b.length, 0);
    bytes = new Uint8Array(total);
    const view = new DataView(bytes.buffer);
    let at = 0;
    for (const b of values.values) {
      view.setUint32(at, b.length, true);
      bytes.set(b, at + 4);
      at += 4 + b.length;
    }
  } else {
    bytes = new Uint8Array(values.values.length * dt.byteSize);
    const view = new DataView(bytes.buffer);
    const write = rawWriter(datatype);
    values.values.forEach((x, i) => write(view, i * dt.byteSize, x as never));
  }
  return create(TensorSchema, { name, datatype, shape: [...shape], data: { case: "rawContents", value: bytes } });
}
