import { createHash } from "node:crypto";
import { type DescMessage, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { CachePolicy } from "../../gen/infergate/v1/chat_pb.js";
import { ChatRequestSchema, type PredictRequest, PredictRequestSchema } from "../../gen/infergate/v1/inference_service_pb.js";
import type { ChatInput } from "../upstreams/upstream.js";

/** What a key is computed for: the answer kinds are stored apart. */
export type CacheRpc = "predict" | "chat" | "generate";

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
    return v.map(sortMaps);
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
 * The cache key of a Chat or Generate request: SHA-256 over the scope and the canonical binary
 * form of the request without its non-semantic fields (cache_policy, metadata, session_id — a
 * session's history is already in `messages` when the key is taken). Everything else changes the
 * key, and proto3 `optional` keeps "unset" apart from 0 on the wire.
 */
export function chatCacheKey(req: ChatInput, scope: KeyScope): string {
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

/** The cache key of a Predict request (without cache_policy, metadata and the caller's id). */
export function predictCacheKey(req: PredictRequest, scope: KeyScope): string {
  const c = { ...req, cachePolicy: CachePolicy.UNSPECIFIED, metadata: {}, id: "", model: "" };
  return keyOf(PredictRequestSchema, c, scope, req.metadata);
}
