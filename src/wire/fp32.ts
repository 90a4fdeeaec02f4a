import { bytesOf, littleEndian } from "./byte-order.js";

/**
 * Embedding vectors as packed little-endian IEEE 754 single precision (4 bytes per dimension):
 * the one form the gateway keeps them in between an upstream and the caller (Upstream.embed,
 * src/core/upstream.ts), the form the cache stores and EmbedResponse's `fp32` carries, and what
 * OpenAI's `encoding_format: "base64"` decodes to. Numbers are made from it only for a caller that
 * asks for them.
 */

/** The packed form of `values` (rounded to FP32). */
export function fp32FromNumbers(values: ArrayLike<number>): Uint8Array {
  const f = Float32Array.from(values);
  if (littleEndian) return bytesOf(f);
  const out = new Uint8Array(f.length * 4);
  const view = new DataView(out.buffer);
  for (let i = 0; i < f.length; i++) view.setFloat32(i * 4, f[i]!, true);
  return out;
}

/** The vector's values as FP32 (a view when the bytes are aligned, else a copy). */
export function fp32View(bytes: Uint8Array): Float32Array {
  if (bytes.byteLength % 4 !== 0) throw new RangeError(`${bytes.byteLength} bytes is not a whole number of FP32 values`);
  const n = bytes.byteLength / 4;
  if (littleEndian) {
    if (bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, n);
    // Uint8Array's slice copies; a Buffer's (grpc-js decodes bytes fields as Buffer views) does not.
    return new Float32Array(Uint8Array.prototype.slice.call(bytes).buffer, 0, n);
  }
  const out = new Float32Array(n);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < n; i++) out[i] = view.getFloat32(i * 4, true);
  return out;
}

/**
 * The vector's values as numbers (EmbedResponse `values`, JSON). A plain loop: Array.from of a
 * Float32Array goes through its iterator, about ten times slower for 64 × 1536 values.
 */
export function numbersFromFp32(bytes: Uint8Array): number[] {
  const f = fp32View(bytes);
  const out = new Array<number>(f.length);
  for (let i = 0; i < f.length; i++) out[i] = f[i]!;
  return out;
}

/**
 * The packed vector of OpenAI's base64 embedding (little-endian FP32 bytes, base64); undefined
 * when the text is not base64 of a whole number of FP32 values. Buffer.from skips what is not
 * base64 (and stops at a `=`), so a text of anything else decodes to fewer bytes than its length
 * promises: comparing the two is the check, at no cost beside the decoding (encoding the bytes back
 * cost a quarter of the decoding; a regular expression, ten times it). The URL-safe alphabet,
 * which Buffer.from also reads, is refused by a search for its two characters. Padding bits that
 * are not zero pass: they change no decoded byte.
 */
export function fp32FromBase64(text: string): Uint8Array | undefined {
  const n = text.length;
  if (n % 4 !== 0 || text.includes("-") || text.includes("_")) return undefined;
  const padding = n === 0 ? 0 : text.charCodeAt(n - 1) !== 61 ? 0 : text.charCodeAt(n - 2) === 61 ? 2 : 1;
  const bytes = Buffer.from(text, "base64");
  if (bytes.byteLength !== (n / 4) * 3 - padding || bytes.byteLength % 4 !== 0) return undefined;
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** The base64 text of a packed vector (OpenAI's `encoding_format: "base64"`). */
export function base64FromFp32(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
}

/**
 * The first `dimensions` values of a vector, scaled back to unit length (how models trained for
 * shortening, such as OpenAI's text-embedding-3, shorten theirs). A zero vector stays zero.
 */
export function shortenFp32(bytes: Uint8Array, dimensions: number): Uint8Array {
  const v = fp32View(bytes).slice(0, dimensions);
  let sum = 0;
  for (let i = 0; i < v.length; i++) sum += v[i]! * v[i]!;
  const norm = Math.sqrt(sum);
  if (norm > 0) for (let i = 0; i < v.length; i++) v[i] = v[i]! / norm;
  return fp32FromNumbers(v);
}
