import { createHash } from "node:crypto";
import { type DescMessage, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { CachePolicy } from "../../gen/infergate/v1/chat_pb.js";
import { ChatRequestSchema, type PredictRequest, PredictRequestSchema } from "../../gen/infergate/v1/inference_service_pb.js";
import { TensorForm } from "../../gen/infergate/v1/tensor_pb.js";
import type { ChatInput } from "../core/upstream.js";
import { isSharedRequest, receivedDigest } from "../wire/fast-paths.js";

/** What a key is computed for: the answer kinds are stored apart. */
export type CacheRpc = "predict" | "chat" | "generate" | "embed";

/** The parts of a key besides the request. */
export interface KeyScope {
  rpc: CacheRpc;
  model: string;
  /** The model version from config: bumping it makes old entries unreachable. */
  version: string;
  /** The caller's tenant when authentication is on and the model is not shared; "" otherwise. */
  tenant: string;
  /** Request metadata entries the model keys on (config `cache.keyMetadata`), by name. */
  keyMetadata: readonly string[];
}

/**
 * Rebuilds every map (a plain object in protobuf-es) with its keys in sorted order, recursively,
 * so that toBinary, which writes map entries in key order of the object, gives the same bytes for
 * the same request however its maps were filled. Messages, oneofs, arrays and bytes are walked,
 * not reordered: their order is part of their meaning.
 */
function sortMaps(v: unknown): unknown {
  if (v === null || typeof v !== "object" || v instanceof Uint8Array) {
    return v;
  }
  if (Array.isArray(v)) {
    // An array without objects (a tensor's numbers, strings) has no maps to sort: passed as it is,
    // not copied value by value (the key of a 1M-element typed FP32 tensor: 48–53 → 30–33 ms; a
    // default-cached Predict of it in the gateway, 138 → 52 ms; docs/benchmarks.md).
    for (const x of v) if (x !== null && typeof x === "object") return v.map(sortMaps);
    return v;
  }
  const o = v as Record<string, unknown>;
  if ("$typeName" in o) {
    // A shallow copy: the caller's request is never changed.
    const m: Record<string, unknown> = {};
    for (const k of Object.keys(o)) {
      m[k] = k === "$typeName" || k === "$unknown" ? o[k] : sortMaps(o[k]);
    }
    return m;
  }
  if ("case" in o && "value" in o && Object.keys(o).length === 2) {
    return { case: o["case"], value: sortMaps(o["value"]) };
  }
  const sorted: Record<string, unknown> = {};
  for (const k of Object.keys(o).sort()) {
    sorted[k] = sortMaps(o[k]);
  }
  return sorted;
}

function keyOf<D extends DescMessage>(schema: D, message: MessageShape<D>, scope: KeyScope, metadata: Record<string, string>): string {
  const h = createHash("sha256");
  // Length-prefixed scope fields: no two different scopes can produce the same byte string.
  for (const part of [scope.rpc, scope.model, scope.version, scope.tenant]) {
    h.update(`${Buffer.byteLength(part)}:${part};`);
  }
  for (const name of [...scope.keyMetadata].sort()) {
    const value = metadata[name];
    h.update(value === undefined ? `m${name.length}:${name}-;` : `m${name.length}:${name}=${Buffer.byteLength(value)}:${value};`);
  }
  h.update(toBinary(schema, sortMaps(message) as MessageShape<D>));
  return h.digest("hex");
}

/**
 * Keys of requests seen lately, by their scope and a digest of the bytes they were received as
 * (receivedDigest, src/wire/fast-paths.ts): the same bytes decode to the same request, hence the
 * same key. A repeated request (the kind a cache hit is made of) then costs the SHA-256 of its
 * bytes instead of a canonical re-encoding (toBinary, map sorting and the hash: 9 of a hit's µs).
 * Bounded; the oldest entry goes first.
 */
const recentKeys = new Map<string, string>();
const maxRecentKeys = 4096;

/** The last key of each shared request, with the scope it was taken in (see keyFor). */
const lastKeys = new WeakMap<object, { scope: KeyScope; key: string }>();

function sameScope(a: KeyScope, b: KeyScope): boolean {
  return a.rpc === b.rpc && a.model === b.model && a.version === b.version && a.tenant === b.tenant && a.keyMetadata === b.keyMetadata;
}

function keyFor(req: object, scope: KeyScope, compute: () => string): string {
  // A shared request asked again in the scope of its last key (a repeated call to the same model):
  // that key, without building the id below.
  const last = lastKeys.get(req);
  if (last !== undefined && sameScope(last.scope, scope)) return last.key;
  const key = keyByDigest(req, scope, compute);
  if (isSharedRequest(req)) lastKeys.set(req, { scope, key });
  return key;
}

function keyByDigest(req: object, scope: KeyScope, compute: () => string): string {
  const digest = receivedDigest(req);
  if (digest === undefined) return compute();
  // Length-prefixed parts: no two different scopes give the same id.
  let id = digest;
  for (const part of [scope.rpc, scope.model, scope.version, scope.tenant, ...scope.keyMetadata]) id += `${part.length}:${part}`;
  let key = recentKeys.get(id);
  if (key === undefined) {
    key = compute();
    if (recentKeys.size >= maxRecentKeys) recentKeys.delete(recentKeys.keys().next().value!);
    recentKeys.set(id, key);
  }
  return key;
}

/**
 * The cache key of a Chat or Generate request: SHA-256 over the scope and the canonical binary
 * form of the request without its non-semantic fields (cache_policy, metadata, session_id — a
 * session's history is already in `messages` when the key is taken). Everything else changes the
 * key, and proto3 `optional` keeps "unset" apart from 0 on the wire.
 */
export function chatCacheKey(req: ChatInput, scope: KeyScope): string {
  return keyFor(req, scope, () => canonicalChatKey(req, scope));
}

function canonicalChatKey(req: ChatInput, scope: KeyScope): string {
  // GenerateRequest has the same fields and numbers as ChatRequest: one canonical form for both.
  const c = {
    ...req,
    $typeName: ChatRequestSchema.typeName,
    cachePolicy: CachePolicy.UNSPECIFIED,
    metadata: {},
    sessionId: "",
    model: "",
  } as MessageShape<typeof ChatRequestSchema>;
  return keyOf(ChatRequestSchema, c, scope, req.metadata);
}

/**
 * The cache key of a Predict request (without cache_policy, metadata, the caller's id and
 * output_form: the cache keeps the upstream's form and the gateway converts after it).
 */
export function predictCacheKey(req: PredictRequest, scope: KeyScope): string {
  return keyFor(req, scope, () => canonicalPredictKey(req, scope));
}

function canonicalPredictKey(req: PredictRequest, scope: KeyScope): string {
  const c = { ...req, cachePolicy: CachePolicy.UNSPECIFIED, metadata: {}, id: "", model: "", outputForm: TensorForm.UNSPECIFIED };
  return keyOf(PredictRequestSchema, c, scope, req.metadata);
}
