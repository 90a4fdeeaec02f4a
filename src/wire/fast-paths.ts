import { type DescMessage, fromBinary, toBinary } from "@bufbuild/protobuf";
import { hash } from "node:crypto";
import {
  ChatRequestSchema,
  type ChatResponse,
  ChatResponseSchema,
  type EmbedResponse,
  EmbedResponseSchema,
  type GenerateResponse,
  GenerateRequestSchema,
  GenerateResponseSchema,
  PredictRequestSchema,
  type PredictResponse,
  PredictResponseSchema,
} from "../../gen/infergate/v1/inference_service_pb.js";
import { encodeEmbedResponse } from "./embed-wire.js";
import { encodePredictResponse, typedInputsToRaw } from "./predict-wire.js";

/**
 * The gRPC wire's performance shortcuts: where infergate decodes or encodes a message otherwise
 * than by protobuf-es's fromBinary and toBinary, or remembers what it decoded and encoded. Each
 * holds only under a rule, written where it is defined. The gRPC listener
 * (src/server/grpc-server.ts) decodes requests with requestDecoder and writes answers with
 * responseBytes; the cache (src/cache/) and the gateway's validation
 * (src/gateway/validate-request.ts) read what decoding left (isSharedRequest, receivedDigest);
 * the cache hands over a Chat hit with its bytes (cachedChatAnswer). src/wire/ imports gen/,
 * @bufbuild/protobuf and node:* only, so every layer above core/ may import it
 * (.dependency-cruiser.cjs: layer "wire", rule wire-protobuf-only). Its other files:
 * predict-wire.ts (big Predicts) and byte-order.ts (typed arrays as wire bytes).
 *
 * What each shortcut saves, as measured. The tables are in docs/benchmarks.md, section "Changes
 * made from the profiles" (its rounds: the second, of issue 5; the third, of issue 7; the fourth)
 * and section "Issue 16: big tensors and Predict". Their whole-process A/Bs (bench/ab.mjs) measure
 * a round's changes together, never one shortcut alone.
 *
 * - Request interning (decodeKeyedRequest): a keyed request of at most 1 KiB received again as the
 *   same bytes is the same deep-frozen message. Saves its fromBinary: 2.4 µs for the bench's
 *   74-byte chat in a tight loop (fourth round's table). With the lazy caller headers, the cache
 *   hit at concurrency 1 cost 0.89 of the CPU per hit of before (paired ratios 0.80–0.97: the
 *   fourth round, "The first two against the session's starting build").
 * - Digests of received bytes (receivedDigest): the cache finds a repeated request's key by the
 *   SHA-256 of its bytes instead of a canonical re-encoding (src/cache/cache-key.ts): 9 → about
 *   1 µs per hit, 0.4 µs of it the digest of 66 bytes (third round's table; its changes together,
 *   at concurrency 1: 0.82 of the CPU per hit).
 * - Shared requests (isSharedRequest): what is derived from a frozen request alone is kept with
 *   it, its validation (src/gateway/validate-request.ts) and its last cache key (cache-key.ts):
 *   route and validation 4.2 → 1.0 µs, the cache's decision and lookup 4.7 → 3.0 µs, 0.93 of the
 *   CPU per hit (fourth round's table).
 * - Wire-byte memo (rememberEncoding, read by responseBytes): bytes already known for an answer
 *   are written as they are. A Chat cache hit's (cachedChatAnswer: the stored bytes and the
 *   `cached` field): 8.2 → 0.47 µs per hit, 7% of a hit's profile (second round's table; with the
 *   round's other changes, the hit at concurrency 64 cost 0.831 of the CPU). Answers the listener
 *   encodes before the call is reported (the size check of issue 17; a Predict's encoding counted
 *   in its latency, "Issue 16: big tensors and Predict") are not encoded a second time by the
 *   serializer: no measurement of its own.
 * - Text deltas (textDeltaBytes): tag, varint length and UTF-8 written directly: 1.57 → 0.31 µs
 *   per event, the serializer having been 4.3% of the Generate load (second round's table; with
 *   the round's other changes, the 200-token Generate at concurrency 64 cost 0.815 of the CPU).
 * - Big Predicts (predict-wire.ts): the packed typed inputs of a request over 64 KiB read as raw
 *   bytes, big typed outputs written from typed arrays. For 1M FP32 values, fromBinary 68–151 ms
 *   → a copy plus fromBinary of bytes fields; toBinary 25–43 ms → Float32Array.from plus copies
 *   ("Issue 16: big tensors and Predict"). bench/RESULTS.md, section 8 ("4 MiB tensors"), shows
 *   the typed case end to end (infergate / direct 0.77×), not an A/B of the change.
 *
 * Not here: the serializer's view of these bytes and the unary answer's response headers handed
 * to grpc-js as they are (grpc-js glue, in src/server/grpc-server.ts); the cache's own memos of
 * keys and hits (src/cache/cache-key.ts, src/cache/response-cache.ts); request limits read from
 * the bytes before decoding (a policy: src/gateway/request-limits.ts).
 */

// --- requests ---------------------------------------------------------------------------------

/** The requests the cache keys: only theirs are worth a digest, and sharing. */
const keyedRequestSchemas: ReadonlySet<DescMessage> = new Set<DescMessage>([ChatRequestSchema, GenerateRequestSchema, PredictRequestSchema]);

/**
 * The gRPC listener's decoder of `schema`'s requests. A request the cache keys keeps the digest of
 * its bytes, and a small one received again is the same frozen message (decodeKeyedRequest); a
 * big Predict's packed typed inputs are read as raw bytes first (predict-wire.ts).
 */
export function requestDecoder(schema: DescMessage): (bytes: Buffer) => unknown {
  if (!keyedRequestSchemas.has(schema)) return (b) => fromBinary(schema, b);
  if (schema === PredictRequestSchema) {
    return (b) => {
      const raw = typedInputsToRaw(b);
      return decodeKeyedRequest(schema, raw === undefined ? b : Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength));
    };
  }
  return (b) => decodeKeyedRequest(schema, b);
}

/**
 * Digests (SHA-256) of the wire bytes requests were decoded from, as the gRPC listener received
 * them. Valid only while the message is not changed (nothing below the listener changes a request:
 * a session's turn is a new message, without a digest here). Taken when the request is decoded,
 * so that its bytes are not kept (a small one is a slice of a shared 8 KiB pool buffer).
 */
const receivedDigests = new WeakMap<object, string>();

/** Largest request digested (0.4 µs for 66 bytes, 3 µs for 4 KiB, 11 µs at this bound). */
const maxDigestedBytes = 16 * 1024;

/** Records the digest of the bytes `message` was decoded from (see receivedDigests). */
export function rememberReceivedBytes(message: object, bytes: Uint8Array): void {
  if (bytes.length <= maxDigestedBytes) receivedDigests.set(message, hash("sha256", bytes, "base64"));
}

/** The digest (base64) of the bytes `message` was received as, if it was recorded. */
export function receivedDigest(message: object): string | undefined {
  return receivedDigests.get(message);
}

/**
 * Requests decoded lately from small bodies, by schema and by their exact bytes: the same bytes
 * received again give the same message object, not a second decode (2.4 µs for the 74-byte chat
 * of bench/, twice that in a busy process; the SHA-256 of such a body is 0.3 µs). Each is deep-
 * frozen before it is handed out, so that a call can never change what another call receives;
 * nothing below the listener changes a request (a session's turn is a new message). Bounded in
 * count and in body size; the oldest entry goes first.
 */
const recentRequests = new Map<DescMessage, Map<string, object>>();
/** The messages decodeKeyedRequest shares between calls (deep-frozen). */
const sharedRequests = new WeakSet<object>();
const maxSharedRequestBytes = 1024;
const maxSharedRequests = 1024;

/**
 * Decodes a request the cache keys, as the gRPC listener received it, and records the digest of
 * its bytes (rememberReceivedBytes). A small body seen lately gives the same frozen message again.
 */
export function decodeKeyedRequest(schema: DescMessage, bytes: Buffer): object {
  if (bytes.length > maxSharedRequestBytes) {
    const m = fromBinary(schema, bytes);
    rememberReceivedBytes(m, bytes);
    return m;
  }
  let recent = recentRequests.get(schema);
  if (recent === undefined) recentRequests.set(schema, (recent = new Map()));
  const id = bytes.toString("latin1");
  let m = recent.get(id);
  if (m === undefined) {
    // From a copy: a bytes field decodes as a view of the buffer it came from, and a kept message
    // must not keep the listener's receive buffer (or the pool slab it is a slice of) alive.
    m = deepFreeze(fromBinary(schema, Uint8Array.prototype.slice.call(bytes)));
    rememberReceivedBytes(m, bytes);
    sharedRequests.add(m);
    if (recent.size >= maxSharedRequests) recent.delete(recent.keys().next().value!);
    recent.set(id, m);
  }
  return m;
}

/**
 * Whether `m` is a request decodeKeyedRequest shares between calls: deep-frozen, so that what is
 * derived from it alone (its validity, its cache key in a scope) holds for as long as it lives.
 */
export function isSharedRequest(m: object): boolean {
  return sharedRequests.has(m);
}

/** Freezes an object graph; byte arrays (which cannot be frozen) are left as they are. */
function deepFreeze<T>(v: T): T {
  if (v !== null && typeof v === "object" && !Object.isFrozen(v) && !ArrayBuffer.isView(v)) {
    for (const x of Object.values(v)) deepFreeze(x);
    Object.freeze(v);
  }
  return v;
}

// --- answers ----------------------------------------------------------------------------------

/**
 * Wire bytes already known for a message, so that the gRPC listener writes them instead of
 * encoding the message again. Valid only while the message is not changed: remember bytes only
 * for a message nobody changes afterwards, and only bytes that decode to it (toBinary's, or
 * predict-wire.ts's bulk encoding, which writes the same fields in another order).
 */
const known = new WeakMap<object, Uint8Array>();

/** Records `bytes` as the encoding of `message` (see the rules of `known`). */
export function rememberEncoding(message: object, bytes: Uint8Array): void {
  known.set(message, bytes);
}

/**
 * A message's wire bytes, as the gRPC listener writes them: bytes already known for it as they
 * are, a text delta's and a big Predict answer's written directly, else toBinary.
 */
export function responseBytes(schema: DescMessage, m: object): Uint8Array {
  return (
    known.get(m) ??
    (schema === GenerateResponseSchema
      ? textDeltaBytes(m as GenerateResponse)
      : schema === PredictResponseSchema
        ? encodePredictResponse(m as PredictResponse)
        : schema === EmbedResponseSchema
          ? encodeEmbedResponse(m as EmbedResponse)
          : undefined) ??
    toBinary(schema, m as never)
  );
}

/** A PredictResponse's wire bytes: big typed outputs in bulk (predict-wire.ts), else toBinary. */
export function predictResponseBytes(res: PredictResponse): Uint8Array {
  return encodePredictResponse(res) ?? toBinary(PredictResponseSchema, res);
}

/**
 * A text delta's wire bytes, written directly: field 1 (text_delta, length-delimited: tag 0x0a),
 * the UTF-8 length as a varint, the UTF-8 bytes; byte for byte what toBinary gives, in a fifth of
 * its time (most events of a stream are text deltas). Undefined for other events, and for any
 * with unknown fields: toBinary's then.
 */
export function textDeltaBytes(e: GenerateResponse): Buffer | undefined {
  if (e.event.case !== "textDelta" || e.$unknown !== undefined) return undefined;
  const text = e.event.value;
  const n = Buffer.byteLength(text, "utf8");
  const out = Buffer.allocUnsafe(6 + n);
  out[0] = 0x0a;
  let i = 1;
  let v = n;
  while (v >= 0x80) {
    out[i++] = (v & 0x7f) | 0x80;
    v >>>= 7;
  }
  out[i++] = v;
  out.write(text, i, "utf8");
  return out.subarray(0, i + n);
}

/**
 * The message a Chat cache hit answers with, from the answer's stored bytes: marked `cached` and
 * deep-frozen, so that it can be shared by every hit on the entry (src/cache/response-cache.ts).
 * Its wire bytes are remembered: the stored bytes followed by `cached` (ChatResponse's last field,
 * 8: tag 0x40, true), exactly what toBinary gives; not when the stored answer is already marked
 * or has unknown fields (toBinary's bytes then).
 */
export function cachedChatAnswer(stored: Uint8Array): ChatResponse {
  const value = fromBinary(ChatResponseSchema, stored);
  if (!value.cached && value.$unknown === undefined) {
    const bytes = new Uint8Array(stored.length + 2);
    bytes.set(stored);
    bytes[stored.length] = 0x40;
    bytes[stored.length + 1] = 0x01;
    known.set(value, bytes);
  }
  value.cached = true;
  return deepFreeze(value);
}
