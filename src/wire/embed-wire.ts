import type { Usage } from "../../gen/infergate/v1/chat_pb.js";
import type { EmbedResponse, Embedding } from "../../gen/infergate/v1/inference_service_pb.js";
import { bytesOf, littleEndian } from "./byte-order.js";
import { varintLength, writeVarint32 } from "./varint.js";

/**
 * An EmbedResponse's wire bytes, written directly (the gRPC listener's answer; responseBytes in
 * fast-paths.ts). protobuf-es writes a packed `repeated float` one value at a time: 64 vectors of
 * 1536 values took it about 4 ms of a 12 ms Embed (docs/benchmarks.md, "Issue 19"). Here each
 * vector's packed values are its Float32Array's bytes, and `fp32` is copied as it is. Fields in
 * number order, zero values left out, a set message written even when empty: byte for byte what
 * toBinary gives (test/unit/embed-wire.test.ts). Undefined (toBinary's, then) for a message with
 * unknown fields, and on a big-endian machine.
 */
/**
 * The packed FP32 an Embedding's `values` were read from (applyEncoding, src/gateway/embed-batches.ts):
 * the wire form of those values already, written as it is instead of packing the numbers again.
 * Used only while its length still matches `values` (nothing changes an answer after that).
 */
const packedValues = new WeakMap<Embedding, Uint8Array>();

/** Records `fp32` as the packed form of `e.values` (see packedValues). */
export function rememberPackedValues(e: Embedding, fp32: Uint8Array): void {
  packedValues.set(e, fp32);
}

export function encodeEmbedResponse(res: EmbedResponse): Uint8Array | undefined {
  if (!littleEndian || res.$unknown !== undefined || res.usage?.$unknown !== undefined) return undefined;
  const w = new Writer();
  for (const e of res.embeddings) {
    if (e.$unknown !== undefined) return undefined;
    w.message(1, embeddingLength(e), () => writeEmbedding(w, e));
  }
  w.string(2, res.model);
  w.string(3, res.modelVersion);
  w.string(4, res.upstream);
  w.bool(5, res.cached);
  if (res.usage !== undefined) w.message(6, usageLength(res.usage), () => writeUsage(w, res.usage!));
  w.varint(7, res.dimensions);
  return w.finish();
}

// Lengths first (a message's length goes before it), then the bytes into one buffer.

function embeddingLength(e: Embedding): number {
  let n = varintField(e.index);
  if (e.values.length > 0) n += 1 + varintLength(e.values.length * 4) + e.values.length * 4;
  if (e.fp32.byteLength > 0) n += 1 + varintLength(e.fp32.byteLength) + e.fp32.byteLength;
  if (e.cached) n += 2;
  return n;
}

function writeEmbedding(w: Writer, e: Embedding): void {
  w.varint(1, e.index);
  if (e.values.length > 0) {
    const packed = packedValues.get(e);
    w.bytes(2, packed !== undefined && packed.byteLength === e.values.length * 4 ? packed : bytesOf(Float32Array.from(e.values)));
  }
  w.bytes(3, e.fp32);
  w.bool(4, e.cached);
}

const usageFields = (u: Usage): number[] => [u.promptTokens, u.completionTokens, u.totalTokens, u.cachedPromptTokens, u.cacheCreationTokens, u.reasoningTokens];

function usageLength(u: Usage): number {
  let n = 0;
  for (const v of usageFields(u)) n += varintField(v);
  return n;
}

function writeUsage(w: Writer, u: Usage): void {
  usageFields(u).forEach((v, i) => w.varint(i + 1, v));
}

/** The bytes of a varint field of value `v` (tag of one byte), 0 when it is left out. */
function varintField(v: number): number {
  return v === 0 ? 0 : 1 + varintLength(v);
}


/** Fields of numbers 1–15 (one-byte tags) into chunks, joined once at the end. */
class Writer {
  private readonly chunks: Uint8Array[] = [];
  private head = new Uint8Array(64);
  private at = 0;
  private total = 0;

  private room(n: number): void {
    if (this.at + n <= this.head.length) return;
    this.flush();
    this.head = new Uint8Array(Math.max(64, n));
  }

  private flush(): void {
    if (this.at > 0) this.chunks.push(this.head.subarray(0, this.at));
    this.total += this.at;
    this.head = new Uint8Array(64);
    this.at = 0;
  }

  private raw(v: number): void {
    this.room(10);
    this.at = writeVarint32(this.head, this.at, v);
  }

  varint(field: number, v: number): void {
    if (v === 0) return;
    this.raw(field << 3);
    this.raw(v);
  }

  bool(field: number, v: boolean): void {
    if (v) this.varint(field, 1);
  }

  bytes(field: number, b: Uint8Array): void {
    if (b.byteLength === 0) return;
    this.raw((field << 3) | 2);
    this.raw(b.byteLength);
    this.flush();
    this.chunks.push(b);
    this.total += b.byteLength;
  }

  string(field: number, s: string): void {
    if (s !== "") this.bytes(field, Buffer.from(s, "utf8"));
  }

  message(field: number, length: number, write: () => void): void {
    this.raw((field << 3) | 2);
    this.raw(length);
    write();
  }

  finish(): Uint8Array {
    this.flush();
    return Buffer.concat(this.chunks, this.total);
  }
}
