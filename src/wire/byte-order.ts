import { endianness } from "node:os";

/**
 * Whether typed arrays, which use the machine's byte order, hold numbers as the protobuf wire
 * (fixed32, fixed64) and a tensor's raw form do: little-endian. The bulk paths (predict-wire.ts,
 * src/upstreams/tensor-bulk.ts) are taken only then; a big-endian machine goes element by element.
 */
export const littleEndian = endianness() === "LE";

/** The bytes of a typed array (a view, no copy). */
export function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}
