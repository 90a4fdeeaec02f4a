/**
 * A fake Triton / KServe v2 inference server for tests: the `inference.GRPCInferenceService` gRPC
 * API (proto/inference/grpc_service.proto) on @grpc/grpc-js and the KServe v2 HTTP/REST API on
 * node:http, each on its own loopback port, with a few real model functions and injected
 * failures selected by model name. Every request is recorded.
 *
 * Models (version "1" unless said otherwise; an empty/absent version means the default one):
 *
 * - `simple`: INT32 INPUT0 and INPUT1 of the same shape ([-1,16] in the metadata, any equal shape
 *   accepted) → INT32 OUTPUT0 = INPUT0 + INPUT1 and OUTPUT1 = INPUT0 − INPUT1 (int32 wrap-around).
 *   Versions "1" (the default) and "2"; version "2" answers model_version "2" and
 *   OUTPUT0 = INPUT0 + INPUT1 + 1.
 * - `identity_fp16`: one FP16 input (any name, any shape) → FP16 OUTPUT0 with the same bytes.
 *   Over gRPC the input must be raw and the answer is always raw_output_contents.
 * - `identity_any`: one input of any datatype → OUTPUT0 with the same datatype, shape and values.
 * - `reverse_bytes`: one BYTES input → BYTES OUTPUT0 whose elements are the input elements with
 *   their bytes in reverse order.
 * - `not_ready`: listed, but ModelReady says false, the REST ready endpoint answers 400 and
 *   inference fails with UNAVAILABLE / 503.
 * - `fail_unavailable`: inference fails with UNAVAILABLE / 503.
 * - `fail_exhausted`: inference fails with RESOURCE_EXHAUSTED / 429 with `Retry-After: 1`.
 * - `fail_internal`: inference fails with INTERNAL / 500.
 * - `slow`: like `simple` version "1", after a delay of request parameter `delay_ms` (default
 *   2000 ms); when the client goes away first, the record's `abortedAt` is set and nothing is sent.
 * - `text_embedding`: a text-embedding model. One BYTES input `text` of shape [batch] (the texts,
 *   UTF-8) → FP32 output `embedding` of shape [batch, 8]: row i is fakeTextEmbedding(text i,
 *   version), deterministic and of unit length. Versions "1" (the default) and "2" (other vectors).
 * - `text_embedding_b1`: the same with input `TEXT` of shape [batch, 1] and output `EMBEDDINGS`.
 * - Embedding models that answer wrongly (input `text` [batch] as `text_embedding`):
 *   `embedding_fp64` (output `embedding` is FP64), `embedding_short_batch` (one row fewer than
 *   the batch), `embedding_flat` (shape [batch × 8]), `embedding_renamed` (its one output is
 *   `OUTPUT0`, answered whatever outputs the request names, as a server that ignores them).
 *
 * Unknown model or version: gRPC NOT_FOUND, REST 404. Malformed requests: gRPC INVALID_ARGUMENT,
 * REST 400. REST errors are `{"error": "<message>"}`.
 *
 * Tensor forms over gRPC: an input with `contents` set is typed; the i-th entry of
 * `raw_input_contents` belongs to the i-th input without `contents`. Raw data is row-major,
 * little-endian, no padding; a BYTES element is a 4-byte little-endian length and then its bytes.
 * The answer is raw (all outputs in `raw_output_contents`, no `contents`) when any input arrived
 * raw or any output is FP16/BF16, and typed otherwise.
 *
 * REST JSON: `data` may be flat or nested; BYTES elements are UTF-8 strings; FP16/BF16 are JSON
 * numbers rounded (to nearest even) to the type. Integers outside ±2^53 are read and written
 * exactly (the fake's JSON parser keeps such literals as bigint, and writes them as plain digit
 * literals, as Triton does), so INT64/UINT64 extremes round-trip if the client also reads them
 * losslessly. Non-finite floats are written as `null`. The binary-data extension
 * (`Inference-Header-Content-Length`) is not supported (400).
 */
import { create, fromBinary, toBinary, type DescMessage, type DescService } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import {
  GRPCInferenceService,
  InferTensorContentsSchema,
  ModelInferResponseSchema,
  ModelMetadataResponseSchema,
  ModelReadyResponseSchema,
  ServerLiveResponseSchema,
  ServerMetadataResponseSchema,
  ServerReadyResponseSchema,
  type InferParameter,
  type InferTensorContents,
  type ModelInferRequest,
  type ModelInferResponse,
  type ModelMetadataRequest,
  type ModelReadyRequest,
} from "../../gen/inference/grpc_service_pb.js";

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

/** The KServe v2 datatypes. */
export type Datatype =
  | "BOOL"
  | "UINT8"
  | "UINT16"
  | "UINT32"
  | "UINT64"
  | "INT8"
  | "INT16"
  | "INT32"
  | "INT64"
  | "FP16"
  | "FP32"
  | "FP64"
  | "BF16"
  | "BYTES";

/** One element value as the fake decodes it (INT64/UINT64 as bigint, BYTES as bytes). */
export type ElementValue = boolean | number | bigint | Uint8Array;

/** A parameter value as received: gRPC InferParameter choices (int64/uint64 as bigint) or JSON. */
export type ParameterValue = boolean | number | bigint | string | null;

/** What the fake recorded of one input tensor. */
export interface RecordedInput {
  readonly name: string;
  readonly datatype: string;
  readonly shape: readonly number[];
  /** How the elements arrived: gRPC typed `contents`, gRPC `raw_input_contents`, or REST JSON. */
  readonly form: "typed" | "raw" | "json";
  /** The byte length of the raw entry (form "raw" only). */
  readonly rawByteLength?: number;
  /**
   * The decoded elements, flat row-major: BOOL → boolean, INT8…INT32/UINT8…UINT32 and all floats
   * (FP16/BF16 decoded) → number, INT64/UINT64 → bigint, BYTES → Uint8Array. Absent when the input
   * could not be decoded (the request then failed with INVALID_ARGUMENT / 400).
   */
  readonly values?: readonly ElementValue[];
  /** The tensor's own parameters. */
  readonly parameters: Readonly<Record<string, ParameterValue>>;
}

/** Method names shared by both protocols (REST requests are named after the gRPC method). */
export type TritonMethod =
  | "ServerLive"
  | "ServerReady"
  | "ModelReady"
  | "ServerMetadata"
  | "ModelMetadata"
  | "ModelInfer"
  | "Unknown";

/** One request the Triton fake received (mutable: status/abortedAt are filled in later). */
export interface TritonRecordedRequest {
  readonly protocol: "grpc" | "rest";
  /** The gRPC method, or the one the REST endpoint corresponds to ("Unknown" for other paths). */
  readonly method: TritonMethod;
  /** gRPC: "/inference.GRPCInferenceService/ModelInfer"; REST: "POST /v2/models/simple/infer". */
  readonly path: string;
  /** The model named by the request (health/server metadata: undefined). */
  readonly model?: string;
  /** The version asked for: "" when none was given. */
  readonly version?: string;
  /** The version that served the request (after defaulting), once resolved. */
  servedVersion?: string;
  /** The request id (ModelInferRequest.id / REST "id"), "" when none. */
  readonly id?: string;
  /** Request parameters. */
  readonly parameters: Readonly<Record<string, ParameterValue>>;
  /** Input tensors, in request order. */
  readonly inputs: readonly RecordedInput[];
  /** Names of the outputs requested (empty: all). */
  readonly requestedOutputs: readonly string[];
  /**
   * gRPC metadata (first value per key; binary `-bin` values base64) or HTTP headers (lower-case
   * names; repeated headers joined with ", "). grpc-js strips `grpc-timeout` from the metadata:
   * see `deadline` / `timeoutMs`.
   */
  readonly metadata: Readonly<Record<string, string>>;
  /** gRPC only: the call's deadline (epoch ms), from the `grpc-timeout` header; undefined if none. */
  readonly deadline?: number;
  /** gRPC only: milliseconds from receipt to the deadline (the grpc-timeout the client sent). */
  readonly timeoutMs?: number;
  /** REST only: the parsed JSON body (lossless: big integers as bigint). */
  readonly body?: unknown;
  /** When the request arrived (Date.now()). */
  readonly receivedAt: number;
  /** When the fake noticed the client cancelled / disconnected before the answer (Date.now()). */
  abortedAt?: number;
  /** When the answer (success or error) was sent. */
  answeredAt?: number;
  /** The answer's gRPC status code (0 = OK) or HTTP status. */
  status?: number;
  /** The error message sent, if any. */
  error?: string;
}

/** A running Triton fake. */
export interface TritonFake {
  /** "127.0.0.1:PORT" of the gRPC listener (h2c). */
  readonly grpcAddress: string;
  /** "http://127.0.0.1:PORT" of the KServe v2 REST listener (no trailing slash). */
  readonly restUrl: string;
  /** Every request received on either listener, in arrival order (clear with `length = 0`). */
  readonly requests: TritonRecordedRequest[];
  /** Stops both listeners (drops open connections and pending slow calls). */
  close(): Promise<void>;
}

/** Names of the models the Triton fake serves. */
export const tritonFakeModels = [
  "simple",
  "identity_fp16",
  "identity_any",
  "reverse_bytes",
  "not_ready",
  "fail_unavailable",
  "fail_exhausted",
  "fail_internal",
  "slow",
  "text_embedding",
  "text_embedding_b1",
  "embedding_fp64",
  "embedding_short_batch",
  "embedding_flat",
  "embedding_renamed",
] as const;

/** The vector length of the fake's embedding models. */
export const fakeEmbeddingDim = 8;

/**
 * The vector the fake's embedding models give one text at a model version: `dim` values from a
 * generator seeded with the FNV-1a hash of the version and the text's UTF-8 bytes (mulberry32),
 * scaled to unit length and rounded to FP32 (what the model answers).
 */
export function fakeTextEmbedding(text: string | Uint8Array, version = "1", dim = fakeEmbeddingDim): Float32Array {
  const bytes = typeof text === "string" ? new TextEncoder().encode(text) : text;
  let h = 0x811c9dc5;
  for (const b of [...new TextEncoder().encode(`${version}\n`), ...bytes]) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  const v = new Float64Array(dim);
  let norm = 0;
  for (let i = 0; i < dim; i++) {
    h = (h + 0x6d2b79f5) >>> 0;
    let t = Math.imul(h ^ (h >>> 15), h | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    v[i] = (((t ^ (t >>> 14)) >>> 0) / 2 ** 32) * 2 - 1;
    norm += v[i]! * v[i]!;
  }
  return Float32Array.from(v, (x) => x / Math.sqrt(norm));
}

/**
 * Starts the fake on two loopback ports (gRPC and REST, both port 0).
 *
 * @returns the addresses, the request log and `close()`.
 */
export async function createTritonFake(): Promise<TritonFake> {
  const requests: TritonRecordedRequest[] = [];
  const pending = new Set<AbortController>();

  // Triton takes messages up to 2 GiB; 64 MiB is plenty for the tests' big tensors.
  const grpcServer = new grpc.Server({ "grpc.max_receive_message_length": 64 << 20, "grpc.max_send_message_length": 64 << 20 });
  grpcServer.addService(grpcServiceDefinition(GRPCInferenceService), grpcHandlers(requests, pending));
  const grpcPort = await new Promise<number>((resolve, reject) => {
    grpcServer.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) =>
      err ? reject(err) : resolve(port),
    );
  });

  const httpServer = http.createServer((req, res) => {
    void handleRest(req, res, requests, pending);
  });
  await new Promise<void>((resolve, reject) => {
    httpServer.once("error", reject);
    httpServer.listen(0, "127.0.0.1", () => resolve());
  });
  const restPort = (httpServer.address() as AddressInfo).port;

  let closed: Promise<void> | undefined;
  return {
    grpcAddress: `127.0.0.1:${grpcPort}`,
    restUrl: `http://127.0.0.1:${restPort}`,
    requests,
    close() {
      closed ??= (async () => {
        for (const c of pending) c.abort(closedReason);
        pending.clear();
        grpcServer.forceShutdown();
        await new Promise<void>((resolve) => {
          httpServer.close(() => resolve());
          httpServer.closeAllConnections();
        });
      })();
      return closed;
    },
  };
}

/**
 * A grpc-js service definition whose (de)serializers are the protobuf-es schemas (the pattern of
 * src/server/grpc-server.ts). Also usable for clients:
 * `new (grpc.makeGenericClientConstructor(grpcServiceDefinition(GRPCInferenceService), "x"))(addr, creds)`;
 * the client's methods are named like the proto methods ("ModelInfer") and their localName
 * ("modelInfer").
 */
export function grpcServiceDefinition(service: DescService): grpc.ServiceDefinition {
  const def: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const method of service.methods) {
    const io = (schema: DescMessage) => ({
      serialize: (m: unknown) => Buffer.from(toBinary(schema, m as never)),
      deserialize: (b: Buffer): unknown => fromBinary(schema, b),
    });
    const input = io(method.input);
    const output = io(method.output);
    def[method.name] = {
      path: `/${service.typeName}/${method.name}`,
      requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
      responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
      requestSerialize: input.serialize,
      requestDeserialize: input.deserialize,
      responseSerialize: output.serialize,
      responseDeserialize: output.deserialize,
      originalName: method.localName,
    };
  }
  return def as grpc.ServiceDefinition;
}

// ---------------------------------------------------------------------------------------------
// Element codecs (exported for tests that build raw tensors)
// ---------------------------------------------------------------------------------------------

/** Bytes per element of the fixed-size datatypes. */
export const elementSize: Readonly<Record<Exclude<Datatype, "BYTES">, number>> = {
  BOOL: 1,
  UINT8: 1,
  UINT16: 2,
  UINT32: 4,
  UINT64: 8,
  INT8: 1,
  INT16: 2,
  INT32: 4,
  INT64: 8,
  FP16: 2,
  FP32: 4,
  FP64: 8,
  BF16: 2,
};

const datatypes = new Set<string>([...Object.keys(elementSize), "BYTES"]);

function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** Rounds a number to the nearest (ties to even) binary float with the given field widths. */
function encodeSmallFloat(value: number, expBits: number, mantBits: number): number {
  const expMax = (1 << expBits) - 1;
  const bias = (1 << (expBits - 1)) - 1;
  const mantOne = 1 << mantBits;
  if (Number.isNaN(value)) return (expMax << mantBits) | (1 << (mantBits - 1));
  const sign = value < 0 || Object.is(value, -0) ? 1 << (expBits + mantBits) : 0;
  const abs = Math.abs(value);
  const inf = sign | (expMax << mantBits);
  if (abs === Infinity) return inf;
  if (abs === 0) return sign;
  const eMin = 1 - bias;
  if (abs < 2 ** eMin) {
    // Subnormal (a result of mantOne is the smallest normal, which the same bits encode).
    return sign | roundHalfEven(abs / 2 ** (eMin - mantBits));
  }
  let e = Math.floor(Math.log2(abs));
  if (2 ** e > abs) e -= 1;
  else if (2 ** (e + 1) <= abs) e += 1;
  let m = roundHalfEven((abs / 2 ** e - 1) * mantOne);
  if (m === mantOne) {
    m = 0;
    e += 1;
  }
  if (e > bias) return inf;
  return sign | ((e + bias) << mantBits) | m;
}

function decodeSmallFloat(bits: number, expBits: number, mantBits: number): number {
  const expMax = (1 << expBits) - 1;
  const bias = (1 << (expBits - 1)) - 1;
  const sign = bits >> (expBits + mantBits) & 1 ? -1 : 1;
  const e = (bits >> mantBits) & expMax;
  const m = bits & ((1 << mantBits) - 1);
  if (e === 0) return sign * m * 2 ** (1 - bias - mantBits);
  if (e === expMax) return m === 0 ? sign * Infinity : NaN;
  return sign * (1 + m / (1 << mantBits)) * 2 ** (e - bias);
}

/** The IEEE 754 binary16 bits of a number (round to nearest, ties to even). */
export function toFloat16Bits(value: number): number {
  return encodeSmallFloat(value, 5, 10);
}

/** The number that IEEE 754 binary16 bits stand for. */
export function fromFloat16Bits(bits: number): number {
  return decodeSmallFloat(bits, 5, 10);
}

/** The bfloat16 bits of a number (round to nearest, ties to even). */
export function toBFloat16Bits(value: number): number {
  return encodeSmallFloat(value, 8, 7);
}

/** The number that bfloat16 bits stand for. */
export function fromBFloat16Bits(bits: number): number {
  return decodeSmallFloat(bits, 8, 7);
}

/** Packs BYTES elements into the KServe v2 raw form (4-byte little-endian length + bytes each). */
export function packBytesRaw(elements: readonly (Uint8Array | string)[]): Uint8Array {
  const parts = elements.map((e) => (typeof e === "string" ? new TextEncoder().encode(e) : e));
  const out = new Uint8Array(parts.reduce((n, p) => n + 4 + p.length, 0));
  const view = new DataView(out.buffer);
  let at = 0;
  for (const p of parts) {
    view.setUint32(at, p.length, true);
    out.set(p, at + 4);
    at += 4 + p.length;
  }
  return out;
}

/** Splits the KServe v2 raw BYTES form into its elements; throws on a malformed buffer. */
export function unpackBytesRaw(raw: Uint8Array): Uint8Array[] {
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const out: Uint8Array[] = [];
  let at = 0;
  while (at < raw.length) {
    if (at + 4 > raw.length) throw invalid("raw BYTES contents end inside a length prefix");
    const len = view.getUint32(at, true);
    if (at + 4 + len > raw.length) throw invalid("raw BYTES element runs past the end of its contents");
    out.push(raw.slice(at + 4, at + 4 + len));
    at += 4 + len;
  }
  return out;
}

/**
 * Encodes flat elements of a datatype into its raw form (row-major, little-endian). Accepts
 * booleans for BOOL, numbers or bigints for the numeric types (FP16/BF16 rounded), and Uint8Array
 * or (UTF-8) strings for BYTES. Throws on a value the datatype cannot hold.
 */
export function encodeRaw(datatype: Datatype, values: readonly unknown[]): Uint8Array {
  const data = encodeElements(datatype, values);
  return Array.isArray(data) ? packBytesRaw(data) : (data as Uint8Array);
}

/** Decodes the raw form of `count` elements of a datatype (see RecordedInput.values for types). */
export function decodeRaw(datatype: Datatype, raw: Uint8Array, count?: number): ElementValue[] {
  const data = datatype === "BYTES" ? unpackBytesRaw(raw) : raw;
  const n = count ?? (Array.isArray(data) ? data.length : raw.length / elementSize[datatype as Exclude<Datatype, "BYTES">]);
  return decodeElements({ name: "", datatype, shape: [n], data, form: "raw" });
}

// ---------------------------------------------------------------------------------------------
// Tensors
// ---------------------------------------------------------------------------------------------

/** A tensor inside the fake: fixed-size elements as raw little-endian bytes, BYTES as a list. */
interface FakeTensor {
  readonly name: string;
  readonly datatype: Datatype;
  readonly shape: readonly number[];
  readonly data: Uint8Array | Uint8Array[];
  readonly form: "typed" | "raw" | "json";
}

type FailureKind = "invalid" | "not_found" | "unavailable" | "exhausted" | "internal";

/** An error the fake answers with: mapped to a gRPC status and an HTTP status. */
class FakeError extends Error {
  constructor(
    readonly kind: FailureKind,
    message: string,
  ) {
    super(message);
  }
}

const grpcCode: Record<FailureKind, grpc.status> = {
  invalid: grpc.status.INVALID_ARGUMENT,
  not_found: grpc.status.NOT_FOUND,
  unavailable: grpc.status.UNAVAILABLE,
  exhausted: grpc.status.RESOURCE_EXHAUSTED,
  internal: grpc.status.INTERNAL,
};

const httpStatus: Record<FailureKind, number> = {
  invalid: 400,
  not_found: 404,
  unavailable: 503,
  exhausted: 429,
  internal: 500,
};

const invalid = (message: string) => new FakeError("invalid", message);

/** Thrown (never answered) when a call was cancelled by the client or the fake closed. */
class Aborted extends Error {}
const closedReason = new Aborted("fake closed");

function parseDatatype(name: string): Datatype {
  if (!datatypes.has(name)) throw invalid(`invalid datatype '${name}'`);
  return name as Datatype;
}

function parseShape(dims: readonly (number | bigint)[], tensor: string): number[] {
  return dims.map((d) => {
    const n = typeof d === "bigint" ? Number(d) : d;
    if (!Number.isSafeInteger(n) || n < 0) throw invalid(`input '${tensor}': invalid shape dimension ${String(d)}`);
    return n;
  });
}

function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

const intRange: Partial<Record<Datatype, readonly [number, number]>> = {
  INT8: [-128, 127],
  INT16: [-32768, 32767],
  INT32: [-2147483648, 2147483647],
  UINT8: [0, 255],
  UINT16: [0, 65535],
  UINT32: [0, 4294967295],
};

/** Encodes flat values of a datatype; throws INVALID_ARGUMENT on a value the type cannot hold. */
function encodeElements(datatype: Datatype, values: readonly unknown[]): Uint8Array | Uint8Array[] {
  if (datatype === "BYTES") {
    return values.map((v) => {
      if (v instanceof Uint8Array) return v;
      if (typeof v === "string") return new TextEncoder().encode(v);
      throw invalid(`BYTES element must be a string, got ${describe(v)}`);
    });
  }
  const size = elementSize[datatype];
  const out = new Uint8Array(values.length * size);
  const view = new DataView(out.buffer);
  values.forEach((v, i) => {
    const at = i * size;
    switch (datatype) {
      case "BOOL":
        if (typeof v !== "boolean") throw invalid(`BOOL element must be a boolean, got ${describe(v)}`);
        out[at] = v ? 1 : 0;
        return;
      case "INT64":
      case "UINT64": {
        const b = toBigInt(v, datatype);
        const ok = datatype === "INT64" ? BigInt.asIntN(64, b) === b : BigInt.asUintN(64, b) === b;
        if (!ok) throw invalid(`${datatype} element out of range: ${b}`);
        if (datatype === "INT64") view.setBigInt64(at, b, true);
        else view.setBigUint64(at, b, true);
        return;
      }
      case "FP16":
      case "BF16":
      case "FP32":
      case "FP64": {
        const n = typeof v === "bigint" ? Number(v) : v;
        if (typeof n !== "number") throw invalid(`${datatype} element must be a number, got ${describe(v)}`);
        if (datatype === "FP16") view.setUint16(at, toFloat16Bits(n), true);
        else if (datatype === "BF16") view.setUint16(at, toBFloat16Bits(n), true);
        else if (datatype === "FP32") view.setFloat32(at, n, true);
        else view.setFloat64(at, n, true);
        return;
      }
      default: {
        const b = toBigInt(v, datatype);
        const [lo, hi] = intRange[datatype] as readonly [number, number];
        if (b < BigInt(lo) || b > BigInt(hi)) throw invalid(`${datatype} element out of range: ${b}`);
        const n = Number(b);
        if (datatype === "INT8") view.setInt8(at, n);
        else if (datatype === "INT16") view.setInt16(at, n, true);
        else if (datatype === "INT32") view.setInt32(at, n, true);
        else if (datatype === "UINT8") view.setUint8(at, n);
        else if (datatype === "UINT16") view.setUint16(at, n, true);
        else view.setUint32(at, n, true);
      }
    }
  });
  return out;
}

function toBigInt(v: unknown, datatype: Datatype): bigint {
  if (typeof v === "bigint") return v;
  if (typeof v === "number" && Number.isInteger(v)) return BigInt(v);
  throw invalid(`${datatype} element must be an integer, got ${describe(v)}`);
}

function describe(v: unknown): string {
  if (typeof v === "bigint") return `${v}`;
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

/** The flat element values of a tensor. */
function decodeElements(t: FakeTensor): ElementValue[] {
  if (Array.isArray(t.data)) return [...t.data];
  const raw = t.data as Uint8Array;
  const dt = t.datatype as Exclude<Datatype, "BYTES">;
  const size = elementSize[dt];
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const out: ElementValue[] = [];
  for (let at = 0; at + size <= raw.length; at += size) {
    switch (dt) {
      case "BOOL":
        out.push(raw[at] !== 0);
        break;
      case "INT8":
        out.push(view.getInt8(at));
        break;
      case "INT16":
        out.push(view.getInt16(at, true));
        break;
      case "INT32":
        out.push(view.getInt32(at, true));
        break;
      case "INT64":
        out.push(view.getBigInt64(at, true));
        break;
      case "UINT8":
        out.push(view.getUint8(at));
        break;
      case "UINT16":
        out.push(view.getUint16(at, true));
        break;
      case "UINT32":
        out.push(view.getUint32(at, true));
        break;
      case "UINT64":
        out.push(view.getBigUint64(at, true));
        break;
      case "FP16":
        out.push(fromFloat16Bits(view.getUint16(at, true)));
        break;
      case "BF16":
        out.push(fromBFloat16Bits(view.getUint16(at, true)));
        break;
      case "FP32":
        out.push(view.getFloat32(at, true));
        break;
      case "FP64":
        out.push(view.getFloat64(at, true));
        break;
    }
  }
  return out;
}

function checkCount(name: string, got: number, want: number, what: string): void {
  if (got !== want) {
    throw invalid(`input '${name}': ${what} holds ${got} elements, the shape needs ${want}`);
  }
}

/** Reads gRPC typed contents. */
function fromTyped(name: string, datatype: Datatype, c: InferTensorContents, count: number): Uint8Array | Uint8Array[] {
  let values: readonly unknown[];
  switch (datatype) {
    case "BOOL":
      values = c.boolContents;
      break;
    case "INT8":
    case "INT16":
    case "INT32":
      values = c.intContents;
      break;
    case "UINT8":
    case "UINT16":
    case "UINT32":
      values = c.uintContents;
      break;
    case "INT64":
      values = c.int64Contents;
      break;
    case "UINT64":
      values = c.uint64Contents;
      break;
    case "FP32":
      values = c.fp32Contents;
      break;
    case "FP64":
      values = c.fp64Contents;
      break;
    case "BYTES":
      values = c.bytesContents;
      break;
    case "FP16":
    case "BF16":
      throw invalid(`input '${name}': ${datatype} has no typed contents; send it in raw_input_contents`);
  }
  checkCount(name, values.length, count, "contents");
  return encodeElements(datatype, values);
}

/** Reads one raw_input_contents entry. */
function fromRaw(name: string, datatype: Datatype, raw: Uint8Array, count: number): Uint8Array | Uint8Array[] {
  if (datatype === "BYTES") {
    const elements = unpackBytesRaw(raw);
    checkCount(name, elements.length, count, "raw_input_contents");
    return elements;
  }
  const want = count * elementSize[datatype];
  if (raw.length !== want) {
    throw invalid(`input '${name}': raw_input_contents has ${raw.length} bytes, ${datatype} shape needs ${want}`);
  }
  return raw.slice();
}

/** Builds gRPC typed contents. */
function toTyped(t: FakeTensor): InferTensorContents {
  const values = decodeElements(t);
  const c = create(InferTensorContentsSchema);
  switch (t.datatype) {
    case "BOOL":
      c.boolContents = values as boolean[];
      break;
    case "INT8":
    case "INT16":
    case "INT32":
      c.intContents = values as number[];
      break;
    case "UINT8":
    case "UINT16":
    case "UINT32":
      c.uintContents = values as number[];
      break;
    case "INT64":
      c.int64Contents = values as bigint[];
      break;
    case "UINT64":
      c.uint64Contents = values as bigint[];
      break;
    case "FP32":
      c.fp32Contents = values as number[];
      break;
    case "FP64":
      c.fp64Contents = values as number[];
      break;
    case "BYTES":
      c.bytesContents = values as Uint8Array[];
      break;
    case "FP16":
    case "BF16":
      throw new FakeError("internal", `${t.datatype} cannot be typed`);
  }
  return c;
}

function toRaw(t: FakeTensor): Uint8Array {
  return Array.isArray(t.data) ? packBytesRaw(t.data) : (t.data as Uint8Array);
}

/** Flattens nested JSON arrays (row-major). */
function flatten(data: unknown, out: unknown[] = []): unknown[] {
  if (Array.isArray(data)) {
    for (const d of data) flatten(d, out);
  } else {
    out.push(data);
  }
  return out;
}

/** The JSON form of a tensor's elements (flat). */
function toJsonData(t: FakeTensor): unknown[] {
  return decodeElements(t).map((v) => {
    if (v instanceof Uint8Array) return new TextDecoder().decode(v);
    if (typeof v === "bigint") return Number.isSafeInteger(Number(v)) ? Number(v) : v;
    return v;
  });
}

// ---------------------------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------------------------

interface TensorMeta {
  readonly name: string;
  readonly datatype: string;
  readonly shape: readonly number[];
}

interface RunContext {
  readonly version: string;
  readonly parameters: Readonly<Record<string, ParameterValue>>;
  readonly signal: AbortSignal;
}

interface FakeModel {
  readonly versions: readonly string[];
  readonly defaultVersion: string;
  readonly platform: string;
  readonly ready: boolean;
  readonly inputs: readonly TensorMeta[];
  readonly outputs: readonly TensorMeta[];
  /** Answers every output it makes whatever outputs the request names (a misbehaving server). */
  readonly ignoresRequestedOutputs?: boolean;
  run(inputs: readonly FakeTensor[], ctx: RunContext): Promise<FakeTensor[]> | FakeTensor[];
}

function out(name: string, datatype: Datatype, shape: readonly number[], data: Uint8Array | Uint8Array[]): FakeTensor {
  return { name, datatype, shape, data, form: "raw" };
}

function onlyInput(inputs: readonly FakeTensor[], model: string): FakeTensor {
  const [first] = inputs;
  if (inputs.length !== 1 || first === undefined) {
    throw invalid(`expected 1 input for model '${model}', got ${inputs.length}`);
  }
  return first;
}

function simpleRun(inputs: readonly FakeTensor[], version: string): FakeTensor[] {
  const byName = new Map(inputs.map((t) => [t.name, t]));
  const a = byName.get("INPUT0");
  const b = byName.get("INPUT1");
  if (a === undefined || b === undefined || inputs.length !== 2) {
    throw invalid("expected inputs 'INPUT0' and 'INPUT1' for model 'simple'");
  }
  for (const t of [a, b]) {
    if (t.datatype !== "INT32") throw invalid(`inference input '${t.name}' data-type is '${t.datatype}', but model 'simple' expects 'INT32'`);
  }
  if (a.shape.join(",") !== b.shape.join(",")) {
    throw invalid(`INPUT0 shape [${a.shape.join(",")}] and INPUT1 shape [${b.shape.join(",")}] differ`);
  }
  const av = decodeElements(a) as number[];
  const bv = decodeElements(b) as number[];
  const bump = version === "2" ? 1 : 0;
  const sum = av.map((x, i) => (x + (bv[i] ?? 0) + bump) | 0);
  const diff = av.map((x, i) => (x - (bv[i] ?? 0)) | 0);
  return [
    out("OUTPUT0", "INT32", a.shape, encodeElements("INT32", sum)),
    out("OUTPUT1", "INT32", a.shape, encodeElements("INT32", diff)),
  ];
}

function delayMs(parameters: Readonly<Record<string, ParameterValue>>): number {
  const p = parameters["delay_ms"];
  if (p === undefined || p === null) return 2000;
  const n = Number(p);
  if (!Number.isFinite(n) || n < 0) throw invalid(`parameter 'delay_ms' must be a non-negative number, got ${describe(p)}`);
  return n;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(new Aborted("aborted"));
      return;
    }
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(new Aborted("aborted"));
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

const simpleMeta = {
  platform: "onnxruntime_onnx",
  inputs: [
    { name: "INPUT0", datatype: "INT32", shape: [-1, 16] },
    { name: "INPUT1", datatype: "INT32", shape: [-1, 16] },
  ],
  outputs: [
    { name: "OUTPUT0", datatype: "INT32", shape: [-1, 16] },
    { name: "OUTPUT1", datatype: "INT32", shape: [-1, 16] },
  ],
} as const;

/** How an embedding model of the fake answers wrongly (see the models in the header). */
type EmbeddingFault = "fp64" | "short_batch" | "flat" | "renamed";

/**
 * A text-embedding model: one BYTES input `input` of shape [batch] (or [batch, 1] with
 * `batch1`), checked as Triton checks a model's configured input, → FP32 `output` [batch, dim] of
 * fakeTextEmbedding rows, or the answer `fault` spoils.
 */
function embeddingModel(modelName: string, input: string, output: string, batch1: boolean, fault?: EmbeddingFault): FakeModel {
  const inShape = batch1 ? [-1, 1] : [-1];
  return {
    versions: fault === undefined ? ["1", "2"] : ["1"],
    defaultVersion: "1",
    platform: "python",
    ready: true,
    inputs: [{ name: input, datatype: "BYTES", shape: inShape }],
    outputs: [{ name: fault === "renamed" ? "OUTPUT0" : output, datatype: fault === "fp64" ? "FP64" : "FP32", shape: [-1, fakeEmbeddingDim] }],
    ...(fault === "renamed" ? { ignoresRequestedOutputs: true } : {}),
    run(inputs, ctx) {
      const t = onlyInput(inputs, modelName);
      if (t.name !== input) throw invalid(`unexpected inference input '${t.name}' for model '${modelName}'`);
      if (t.datatype !== "BYTES") throw invalid(`inference input '${t.name}' data-type is '${t.datatype}', but model '${modelName}' expects 'BYTES'`);
      if (t.shape.length !== inShape.length || (batch1 && t.shape[1] !== 1)) {
        throw invalid(`unexpected shape for input '${t.name}' for model '${modelName}'. Expected [${inShape.join(",")}], got [${t.shape.join(",")}]`);
      }
      const rows = (t.data as Uint8Array[]).map((text) => [...fakeTextEmbedding(text, ctx.version)]);
      if (fault === "short_batch") rows.pop();
      const shape = fault === "flat" ? [rows.length * fakeEmbeddingDim] : [rows.length, fakeEmbeddingDim];
      const datatype = fault === "fp64" ? "FP64" : "FP32";
      return [out(fault === "renamed" ? "OUTPUT0" : output, datatype, shape, encodeElements(datatype, rows.flat()))];
    },
  };
}

function failing(kind: FailureKind, message: string, ready = true): FakeModel {
  return {
    versions: ["1"],
    defaultVersion: "1",
    platform: "python",
    ready,
    inputs: [{ name: "INPUT0", datatype: "FP32", shape: [-1] }],
    outputs: [{ name: "OUTPUT0", datatype: "FP32", shape: [-1] }],
    run() {
      throw new FakeError(kind, message);
    },
  };
}

const models: ReadonlyMap<string, FakeModel> = new Map<string, FakeModel>([
  [
    "simple",
    { ...simpleMeta, versions: ["1", "2"], defaultVersion: "1", ready: true, run: (inputs, ctx) => simpleRun(inputs, ctx.version) },
  ],
  [
    "slow",
    {
      ...simpleMeta,
      versions: ["1"],
      defaultVersion: "1",
      ready: true,
      async run(inputs, ctx) {
        const ms = delayMs(ctx.parameters);
        await sleep(ms, ctx.signal);
        return simpleRun(inputs, "1");
      },
    },
  ],
  [
    "identity_fp16",
    {
      versions: ["1"],
      defaultVersion: "1",
      platform: "onnxruntime_onnx",
      ready: true,
      inputs: [{ name: "INPUT0", datatype: "FP16", shape: [-1] }],
      outputs: [{ name: "OUTPUT0", datatype: "FP16", shape: [-1] }],
      run(inputs) {
        const t = onlyInput(inputs, "identity_fp16");
        if (t.datatype !== "FP16") throw invalid(`inference input '${t.name}' data-type is '${t.datatype}', but model 'identity_fp16' expects 'FP16'`);
        return [out("OUTPUT0", "FP16", t.shape, t.data)];
      },
    },
  ],
  [
    "identity_any",
    {
      versions: ["1"],
      defaultVersion: "1",
      platform: "python",
      ready: true,
      inputs: [{ name: "INPUT0", datatype: "BYTES", shape: [-1] }],
      outputs: [{ name: "OUTPUT0", datatype: "BYTES", shape: [-1] }],
      run(inputs) {
        const t = onlyInput(inputs, "identity_any");
        return [out("OUTPUT0", t.datatype, t.shape, t.data)];
      },
    },
  ],
  [
    "reverse_bytes",
    {
      versions: ["1"],
      defaultVersion: "1",
      platform: "python",
      ready: true,
      inputs: [{ name: "INPUT0", datatype: "BYTES", shape: [-1] }],
      outputs: [{ name: "OUTPUT0", datatype: "BYTES", shape: [-1] }],
      run(inputs) {
        const t = onlyInput(inputs, "reverse_bytes");
        if (t.datatype !== "BYTES") throw invalid(`inference input '${t.name}' data-type is '${t.datatype}', but model 'reverse_bytes' expects 'BYTES'`);
        return [out("OUTPUT0", "BYTES", t.shape, (t.data as Uint8Array[]).map((e) => e.slice().reverse()))];
      },
    },
  ],
  ["not_ready", failing("unavailable", "Request for unknown model: 'not_ready' has no available versions", false)],
  ["fail_unavailable", failing("unavailable", "injected failure: server unavailable")],
  ["fail_exhausted", failing("exhausted", "injected failure: resource exhausted")],
  ["fail_internal", failing("internal", "injected failure: internal error")],
  ["text_embedding", embeddingModel("text_embedding", "text", "embedding", false)],
  ["text_embedding_b1", embeddingModel("text_embedding_b1", "TEXT", "EMBEDDINGS", true)],
  ["embedding_fp64", embeddingModel("embedding_fp64", "text", "embedding", false, "fp64")],
  ["embedding_short_batch", embeddingModel("embedding_short_batch", "text", "embedding", false, "short_batch")],
  ["embedding_flat", embeddingModel("embedding_flat", "text", "embedding", false, "flat")],
  ["embedding_renamed", embeddingModel("embedding_renamed", "text", "embedding", false, "renamed")],
]);

function resolveModel(name: string, version: string): { model: FakeModel; version: string } {
  const model = models.get(name);
  if (model === undefined) throw new FakeError("not_found", `Request for unknown model: '${name}' is not found`);
  const v = version === "" ? model.defaultVersion : version;
  if (!model.versions.includes(v)) {
    throw new FakeError("not_found", `Request for unknown model: '${name}' version ${version} is not found`);
  }
  return { model, version: v };
}

/** Fails with UNAVAILABLE when the model is not ready (checked before the inputs are decoded). */
function ensureReady(model: FakeModel, modelName: string): void {
  if (!model.ready) throw new FakeError("unavailable", `Request for unknown model: '${modelName}' is not ready`);
}

/** Runs the model and applies the requested-outputs filter. */
async function infer(
  model: FakeModel,
  modelName: string,
  version: string,
  inputs: readonly FakeTensor[],
  requested: readonly string[],
  parameters: Readonly<Record<string, ParameterValue>>,
  signal: AbortSignal,
): Promise<FakeTensor[]> {
  ensureReady(model, modelName);
  const produced = await model.run(inputs, { version, parameters, signal });
  if (requested.length === 0 || model.ignoresRequestedOutputs === true) return produced;
  return requested.map((name) => {
    const t = produced.find((p) => p.name === name);
    if (t === undefined) throw invalid(`unexpected inference output '${name}' for model '${modelName}'`);
    return t;
  });
}

function recordInput(
  name: string,
  datatype: string,
  shape: readonly number[],
  form: RecordedInput["form"],
  parameters: Record<string, ParameterValue>,
  extra: { rawByteLength?: number; values?: ElementValue[] },
): RecordedInput {
  return { name, datatype, shape, form, parameters, ...extra };
}

// ---------------------------------------------------------------------------------------------
// gRPC
// ---------------------------------------------------------------------------------------------

function grpcParameters(map: Readonly<Record<string, InferParameter>>): Record<string, ParameterValue> {
  const out: Record<string, ParameterValue> = {};
  for (const [k, p] of Object.entries(map)) {
    out[k] = p.parameterChoice.case === undefined ? null : p.parameterChoice.value;
  }
  return out;
}

function grpcMetadata(md: grpc.Metadata): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(md.getMap())) {
    out[k] = typeof v === "string" ? v : Buffer.from(v).toString("base64");
  }
  return out;
}

type UnaryCall = grpc.ServerUnaryCall<unknown, unknown>;

function grpcHandlers(requests: TritonRecordedRequest[], pending: Set<AbortController>): grpc.UntypedServiceImplementation {
  /** Records a call, runs `fn`, answers and fills in the record. */
  const unary =
    (
      method: TritonMethod,
      describeCall: (req: never) => Partial<TritonRecordedRequest>,
      fn: (req: never, rec: TritonRecordedRequest, signal: AbortSignal) => Promise<unknown> | unknown,
    ): grpc.handleUnaryCall<unknown, unknown> =>
    (call: UnaryCall, callback: grpc.sendUnaryData<unknown>) => {
      const receivedAt = Date.now();
      const d = call.getDeadline();
      const deadlineMs = d instanceof Date ? d.getTime() : d;
      const hasDeadline = Number.isFinite(deadlineMs);
      const base: TritonRecordedRequest = {
        protocol: "grpc",
        method,
        path: `/${GRPCInferenceService.typeName}/${method}`,
        parameters: {},
        inputs: [],
        requestedOutputs: [],
        metadata: grpcMetadata(call.metadata),
        ...(hasDeadline ? { deadline: deadlineMs, timeoutMs: deadlineMs - receivedAt } : {}),
        receivedAt,
      };
      let rec: TritonRecordedRequest = base;
      try {
        rec = { ...base, ...describeCall(call.request as never) };
      } catch {
        // Recorded as far as it could be; the handler reports the problem.
      }
      requests.push(rec);
      const controller = new AbortController();
      pending.add(controller);
      const onCancel = () => {
        if (rec.answeredAt === undefined && rec.abortedAt === undefined) rec.abortedAt = Date.now();
        controller.abort(new Aborted("cancelled"));
      };
      call.once("cancelled", onCancel);
      void (async () => {
        try {
          const res = await fn(call.request as never, rec, controller.signal);
          rec.status = grpc.status.OK;
          rec.answeredAt = Date.now();
          callback(null, res);
        } catch (err) {
          if (err instanceof Aborted) return;
          const fe = err instanceof FakeError ? err : new FakeError("internal", String(err));
          rec.status = grpcCode[fe.kind];
          rec.error = fe.message;
          rec.answeredAt = Date.now();
          callback({ code: grpcCode[fe.kind], details: fe.message });
        } finally {
          pending.delete(controller);
          call.off("cancelled", onCancel);
        }
      })();
    };

  const modelInfer = async (req: ModelInferRequest, rec: TritonRecordedRequest, signal: AbortSignal): Promise<ModelInferResponse> => {
    const { model, version } = resolveModel(req.modelName, req.modelVersion);
    rec.servedVersion = version;
    ensureReady(model, req.modelName);
    const tensors = decodeGrpcInputs(req);
    const outputs = await infer(
      model,
      req.modelName,
      version,
      tensors,
      req.outputs.map((o) => o.name),
      grpcParameters(req.parameters),
      signal,
    );
    const raw = tensors.some((t) => t.form === "raw") || outputs.some((t) => t.datatype === "FP16" || t.datatype === "BF16");
    return create(ModelInferResponseSchema, {
      modelName: req.modelName,
      modelVersion: version,
      id: req.id,
      outputs: outputs.map((t) => ({
        name: t.name,
        datatype: t.datatype,
        shape: t.shape.map((d) => BigInt(d)),
        ...(raw ? {} : { contents: toTyped(t) }),
      })),
      rawOutputContents: raw ? outputs.map(toRaw) : [],
    });
  };

  return {
    ServerLive: unary("ServerLive", () => ({}), () => create(ServerLiveResponseSchema, { live: true })),
    ServerReady: unary("ServerReady", () => ({}), () => create(ServerReadyResponseSchema, { ready: true })),
    ServerMetadata: unary("ServerMetadata", () => ({}), () =>
      create(ServerMetadataResponseSchema, { name: "triton-fake", version: "0.0.0", extensions: [] }),
    ),
    ModelReady: unary(
      "ModelReady",
      (req: ModelReadyRequest) => ({ model: req.name, version: req.version }),
      (req: ModelReadyRequest, rec) => {
        const { model, version } = resolveModel(req.name, req.version);
        rec.servedVersion = version;
        return create(ModelReadyResponseSchema, { ready: model.ready });
      },
    ),
    ModelMetadata: unary(
      "ModelMetadata",
      (req: ModelMetadataRequest) => ({ model: req.name, version: req.version }),
      (req: ModelMetadataRequest, rec) => {
        const { model, version } = resolveModel(req.name, req.version);
        rec.servedVersion = version;
        const meta = (t: TensorMeta) => ({ name: t.name, datatype: t.datatype, shape: t.shape.map((d) => BigInt(d)) });
        return create(ModelMetadataResponseSchema, {
          name: req.name,
          versions: [...model.versions],
          platform: model.platform,
          inputs: model.inputs.map(meta),
          outputs: model.outputs.map(meta),
        });
      },
    ),
    ModelInfer: unary(
      "ModelInfer",
      (req: ModelInferRequest) => ({
        model: req.modelName,
        version: req.modelVersion,
        id: req.id,
        parameters: grpcParameters(req.parameters),
        inputs: summarizeGrpcInputs(req),
        requestedOutputs: req.outputs.map((o) => o.name),
      }),
      modelInfer,
    ),
  };
}

/** Decodes the inputs of a ModelInferRequest (typed contents or raw_input_contents). */
function decodeGrpcInputs(req: ModelInferRequest): FakeTensor[] {
  let rawIndex = 0;
  const tensors = req.inputs.map((inp): FakeTensor => {
    const datatype = parseDatatype(inp.datatype);
    const shape = parseShape(inp.shape, inp.name);
    const count = elementCount(shape);
    if (inp.contents !== undefined) {
      return { name: inp.name, datatype, shape, data: fromTyped(inp.name, datatype, inp.contents, count), form: "typed" };
    }
    const raw = req.rawInputContents[rawIndex];
    if (raw === undefined) {
      if (count === 0) return { name: inp.name, datatype, shape, data: encodeElements(datatype, []), form: "typed" };
      throw invalid(`input '${inp.name}' has neither contents nor an entry in raw_input_contents`);
    }
    rawIndex += 1;
    return { name: inp.name, datatype, shape, data: fromRaw(inp.name, datatype, raw, count), form: "raw" };
  });
  if (rawIndex < req.rawInputContents.length) {
    throw invalid(`raw_input_contents has ${req.rawInputContents.length} entries, but only ${rawIndex} inputs have no contents`);
  }
  return tensors;
}

/** The record of the inputs of a ModelInferRequest, decoded where possible. */
function summarizeGrpcInputs(req: ModelInferRequest): RecordedInput[] {
  let rawIndex = 0;
  return req.inputs.map((inp) => {
    const shape = inp.shape.map((d) => Number(d));
    const params = grpcParameters(inp.parameters);
    const raw = inp.contents === undefined ? req.rawInputContents[rawIndex++] : undefined;
    let values: ElementValue[] | undefined;
    try {
      const datatype = parseDatatype(inp.datatype);
      const s = parseShape(inp.shape, inp.name);
      const count = elementCount(s);
      const data =
        inp.contents !== undefined
          ? fromTyped(inp.name, datatype, inp.contents, count)
          : raw !== undefined
            ? fromRaw(inp.name, datatype, raw, count)
            : undefined;
      values = data === undefined ? undefined : decodeElements({ name: inp.name, datatype, shape: s, data, form: "raw" });
    } catch {
      values = undefined;
    }
    return recordInput(inp.name, inp.datatype, shape, inp.contents !== undefined ? "typed" : "raw", params, {
      ...(raw !== undefined ? { rawByteLength: raw.length } : {}),
      ...(values !== undefined ? { values } : {}),
    });
  });
}

// ---------------------------------------------------------------------------------------------
// REST
// ---------------------------------------------------------------------------------------------

function restHeaders(req: http.IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) {
    if (v !== undefined) out[k] = Array.isArray(v) ? v.join(", ") : v;
  }
  return out;
}

async function readBody(req: http.IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

function send(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.destroyed || res.writableEnded) return;
  if (body === undefined) {
    res.writeHead(status, headers);
    res.end();
    return;
  }
  const text = stringifyJsonLossless(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": String(Buffer.byteLength(text)), ...headers });
  res.end(text);
}

const modelPath = /^\/v2\/models\/([^/]+)(?:\/versions\/([^/]+))?(\/ready|\/infer)?$/;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function jsonParameters(v: unknown, where: string): Record<string, ParameterValue> {
  if (v === undefined) return {};
  if (!isObject(v)) throw invalid(`${where} must be an object`);
  const out: Record<string, ParameterValue> = {};
  for (const [k, p] of Object.entries(v)) {
    if (p !== null && !["string", "number", "boolean", "bigint"].includes(typeof p)) {
      throw invalid(`${where}.${k} must be a string, number or boolean`);
    }
    out[k] = p as ParameterValue;
  }
  return out;
}

async function handleRest(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  requests: TritonRecordedRequest[],
  pending: Set<AbortController>,
): Promise<void> {
  const receivedAt = Date.now();
  const url = new URL(req.url ?? "/", "http://fake");
  const path = url.pathname;
  const verb = req.method ?? "GET";
  const m = modelPath.exec(path);
  const model = m?.[1] === undefined ? undefined : decodeURIComponent(m[1]);
  const version = m?.[2] === undefined ? "" : decodeURIComponent(m[2]);
  const suffix = m?.[3];
  const method: TritonMethod =
    path === "/v2/health/live"
      ? "ServerLive"
      : path === "/v2/health/ready"
        ? "ServerReady"
        : path === "/v2"
          ? "ServerMetadata"
          : m === null
            ? "Unknown"
            : suffix === "/ready"
              ? "ModelReady"
              : suffix === "/infer"
                ? "ModelInfer"
                : "ModelMetadata";
  const rec: TritonRecordedRequest = {
    protocol: "rest",
    method,
    path: `${verb} ${path}`,
    ...(model !== undefined ? { model, version } : {}),
    parameters: {},
    inputs: [],
    requestedOutputs: [],
    metadata: restHeaders(req),
    receivedAt,
  };
  let body: unknown;
  let text = "";
  try {
    text = await readBody(req);
  } catch {
    return;
  }
  if (method === "ModelInfer" && text !== "") {
    try {
      body = parseJsonLossless(text);
    } catch {
      body = undefined;
    }
  }
  const full: TritonRecordedRequest =
    body === undefined ? rec : { ...rec, body, ...summarizeRestInfer(body) };
  requests.push(full);

  const controller = new AbortController();
  pending.add(controller);
  res.once("close", () => {
    pending.delete(controller);
    if (!res.writableFinished) {
      if (full.answeredAt === undefined && full.abortedAt === undefined) full.abortedAt = Date.now();
      controller.abort(new Aborted("client went away"));
    }
  });
  const answer = (status: number, payload: unknown, headers?: Record<string, string>) => {
    full.status = status;
    full.answeredAt = Date.now();
    if (isObject(payload) && typeof payload["error"] === "string") full.error = payload["error"];
    send(res, status, payload, headers);
  };

  try {
    const wantVerb = method === "ModelInfer" ? "POST" : "GET";
    if (method === "Unknown") throw new FakeError("not_found", `no such endpoint: ${verb} ${path}`);
    if (verb !== wantVerb) {
      answer(405, { error: `${verb} is not allowed on ${path}` }, { allow: wantVerb });
      return;
    }
    switch (method) {
      case "ServerLive":
      case "ServerReady":
        answer(200, undefined);
        return;
      case "ServerMetadata":
        answer(200, { name: "triton-fake", version: "0.0.0", extensions: [] });
        return;
      case "ModelReady": {
        const r = resolveModel(model ?? "", version);
        full.servedVersion = r.version;
        answer(r.model.ready ? 200 : 400, undefined);
        return;
      }
      case "ModelMetadata": {
        const r = resolveModel(model ?? "", version);
        full.servedVersion = r.version;
        answer(200, {
          name: model,
          versions: r.model.versions,
          platform: r.model.platform,
          inputs: r.model.inputs,
          outputs: r.model.outputs,
        });
        return;
      }
      case "ModelInfer": {
        const r = resolveModel(model ?? "", version);
        full.servedVersion = r.version;
        ensureReady(r.model, model ?? "");
        if (req.headers["inference-header-content-length"] !== undefined) {
          throw invalid("the binary tensor data extension is not supported by this fake");
        }
        if (body === undefined) {
          if (text === "") throw invalid("empty request body");
          parseJsonLossless(text); // throws the parse error
        }
        if (!isObject(body)) throw invalid("the request body must be a JSON object");
        const tensors = decodeRestInputs(body);
        const requested = requestedRestOutputs(body);
        const outputs = await infer(r.model, model ?? "", r.version, tensors, requested, full.parameters, controller.signal);
        answer(200, {
          model_name: model,
          model_version: r.version,
          ...(typeof body["id"] === "string" && body["id"] !== "" ? { id: body["id"] } : {}),
          outputs: outputs.map((t) => ({ name: t.name, datatype: t.datatype, shape: t.shape, data: toJsonData(t) })),
        });
        return;
      }
    }
  } catch (err) {
    if (err instanceof Aborted) return;
    if (err instanceof SyntaxError) {
      answer(400, { error: `failed to parse the request JSON: ${err.message}` });
      return;
    }
    const fe = err instanceof FakeError ? err : new FakeError("internal", String(err));
    answer(httpStatus[fe.kind], { error: fe.message }, fe.kind === "exhausted" ? { "retry-after": "1" } : {});
  } finally {
    if (res.writableFinished) pending.delete(controller);
  }
}

/** The record fields of a REST inference body, as far as they can be read. */
function summarizeRestInfer(body: unknown): Partial<TritonRecordedRequest> {
  if (!isObject(body)) return {};
  const out: { -readonly [K in keyof TritonRecordedRequest]?: TritonRecordedRequest[K] } = {};
  if (typeof body["id"] === "string") out.id = body["id"];
  try {
    out.parameters = jsonParameters(body["parameters"], "parameters");
  } catch {
    // reported when the request is handled
  }
  try {
    out.requestedOutputs = requestedRestOutputs(body);
  } catch {
    // reported when the request is handled
  }
  if (Array.isArray(body["inputs"])) {
    out.inputs = body["inputs"].filter(isObject).map((inp) => {
      let values: ElementValue[] | undefined;
      try {
        values = decodeElements(decodeRestInput(inp));
      } catch {
        values = undefined;
      }
      let params: Record<string, ParameterValue> = {};
      try {
        params = jsonParameters(inp["parameters"], "parameters");
      } catch {
        // reported when the request is handled
      }
      return recordInput(
        String(inp["name"]),
        String(inp["datatype"]),
        Array.isArray(inp["shape"]) ? inp["shape"].map((d) => Number(d)) : [],
        "json",
        params,
        values !== undefined ? { values } : {},
      );
    });
  }
  return out;
}

function requestedRestOutputs(body: Record<string, unknown>): string[] {
  const outs = body["outputs"];
  if (outs === undefined) return [];
  if (!Array.isArray(outs)) throw invalid("'outputs' must be an array");
  return outs.map((o) => {
    if (!isObject(o) || typeof o["name"] !== "string") throw invalid("each requested output needs a string 'name'");
    return o["name"];
  });
}

function decodeRestInput(inp: Record<string, unknown>): FakeTensor {
  const name = inp["name"];
  if (typeof name !== "string") throw invalid("each input needs a string 'name'");
  if (typeof inp["datatype"] !== "string") throw invalid(`input '${name}' needs a string 'datatype'`);
  const datatype = parseDatatype(inp["datatype"]);
  const dims = inp["shape"];
  if (!Array.isArray(dims) || dims.some((d) => typeof d !== "number" && typeof d !== "bigint")) {
    throw invalid(`input '${name}' needs a 'shape' array of integers`);
  }
  const shape = parseShape(dims as (number | bigint)[], name);
  if (!("data" in inp)) throw invalid(`input '${name}' has no 'data'`);
  const values = flatten(inp["data"]);
  checkCount(name, values.length, elementCount(shape), "data");
  return { name, datatype, shape, data: encodeElements(datatype, values), form: "json" };
}

function decodeRestInputs(body: Record<string, unknown>): FakeTensor[] {
  jsonParameters(body["parameters"], "parameters");
  const inputs = body["inputs"];
  if (!Array.isArray(inputs)) throw invalid("the request needs an 'inputs' array");
  return inputs.map((inp) => {
    if (!isObject(inp)) throw invalid("each input must be an object");
    jsonParameters(inp["parameters"], "input parameters");
    return decodeRestInput(inp);
  });
}

// ---------------------------------------------------------------------------------------------
// Lossless JSON
// ---------------------------------------------------------------------------------------------

/**
 * JSON.parse, except that integer literals outside ±(2^53 − 1) become bigint (exact), so INT64 and
 * UINT64 extremes survive. Throws SyntaxError on malformed input.
 */
export function parseJsonLossless(text: string): unknown {
  let at = 0;
  const fail = (what: string): never => {
    throw new SyntaxError(`${what} at position ${at}`);
  };
  const ws = () => {
    while (at < text.length && " \t\n\r".includes(text[at] as string)) at++;
  };
  const numberRe = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
  const value = (): unknown => {
    ws();
    const c = text[at];
    if (c === "{") {
      at++;
      const obj: Record<string, unknown> = {};
      ws();
      if (text[at] === "}") {
        at++;
        return obj;
      }
      for (;;) {
        ws();
        if (text[at] !== '"') fail("expected a property name");
        const key = string();
        ws();
        if (text[at] !== ":") fail("expected ':'");
        at++;
        Object.defineProperty(obj, key, { value: value(), enumerable: true, writable: true, configurable: true });
        ws();
        if (text[at] === ",") {
          at++;
          continue;
        }
        if (text[at] === "}") {
          at++;
          return obj;
        }
        fail("expected ',' or '}'");
      }
    }
    if (c === "[") {
      at++;
      const arr: unknown[] = [];
      ws();
      if (text[at] === "]") {
        at++;
        return arr;
      }
      for (;;) {
        arr.push(value());
        ws();
        if (text[at] === ",") {
          at++;
          continue;
        }
        if (text[at] === "]") {
          at++;
          return arr;
        }
        fail("expected ',' or ']'");
      }
    }
    if (c === '"') return string();
    for (const [lit, v] of [["true", true], ["false", false], ["null", null]] as const) {
      if (text.startsWith(lit, at)) {
        at += lit.length;
        return v;
      }
    }
    numberRe.lastIndex = at;
    const m = numberRe.exec(text);
    if (m === null) return fail("unexpected token");
    at += m[0].length;
    const lit = m[0];
    if (/^-?\d+$/.test(lit)) {
      const n = Number(lit);
      return Number.isSafeInteger(n) ? n : BigInt(lit);
    }
    return Number(lit);
  };
  const string = (): string => {
    const start = at;
    at++;
    while (at < text.length && text[at] !== '"') {
      if (text[at] === "\\") at++;
      at++;
    }
    if (at >= text.length) fail("unterminated string");
    at++;
    return JSON.parse(text.slice(start, at)) as string;
  };
  const v = value();
  ws();
  if (at !== text.length) fail("unexpected data after the JSON value");
  return v;
}

/** JSON.stringify that writes bigint as a plain integer literal and non-finite numbers as null. */
export function stringifyJsonLossless(value: unknown): string {
  if (value === null || value === undefined) return "null";
  switch (typeof value) {
    case "bigint":
      return value.toString();
    case "number":
      return Number.isFinite(value) ? JSON.stringify(value) : "null";
    case "boolean":
    case "string":
      return JSON.stringify(value);
    case "object":
      if (Array.isArray(value)) return `[${value.map(stringifyJsonLossless).join(",")}]`;
      return `{${Object.entries(value)
        .filter(([, v]) => v !== undefined)
        .map(([k, v]) => `${JSON.stringify(k)}:${stringifyJsonLossless(v)}`)
        .join(",")}}`;
    default:
      return "null";
  }
}
