/**
 * Pure parts of the `infergate` kind (chaining to another infergate over its own gRPC contract):
 * the forwarded request, the forwarded metadata, the readiness read from the far gateway's
 * ListModels, and the one error it does not pass through as is. No I/O.
 *
 * The far side speaks our contract, so every field of a request maps to itself: the message is
 * forwarded whole, its `metadata` map included (so `mock.*` fault-injection keys reach a mock
 * model behind the far gateway), with only `model` replaced by the upstream model name (and an
 * Embed's `encoding`, see forwardedEmbed).
 */
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import {
  type ChatRequest,
  type EmbedRequest,
  type EmbedResponse,
  EmbedResponseSchema,
  EmbeddingEncoding,
  EmbeddingSchema,
  type GenerateRequest,
  type ListModelsResponse,
  ModelState,
  type PredictRequest,
} from "../../../gen/infergate/v1/inference_service_pb.js";
import { GatewayError, Reason } from "../../core/gateway-error.js";
import type { ChatInput } from "../../core/upstream.js";
import { fp32FromNumbers } from "../../wire/fp32.js";
import { badResponse } from "../http/http-errors.js";

/**
 * The Predict request the far gateway receives: the caller's, with `model` = the upstream model.
 * A shallow copy: the caller's message (which the cache may key on) is not changed.
 */
export function forwardedPredict(req: PredictRequest, upstreamModel: string): PredictRequest {
  return { ...req, model: upstreamModel };
}

/** The Chat request the far gateway receives (from a Chat or a Generate request: same fields). */
export function forwardedChat(req: ChatInput, upstreamModel: string): ChatRequest {
  return { ...req, $typeName: "infergate.v1.ChatRequest", model: upstreamModel };
}

/** The Generate request the far gateway receives. */
export function forwardedGenerate(req: ChatInput, upstreamModel: string): GenerateRequest {
  return { ...req, $typeName: "infergate.v1.GenerateRequest", model: upstreamModel };
}

/**
 * The Embed request the far gateway receives: the caller's, with `model` = the upstream model and
 * `encoding` = EMBEDDING_ENCODING_FP32_BYTES whatever the caller asked for (the packed form is the
 * cheapest on the wire and the one this gateway keeps; it gives the caller the encoding asked for).
 */
export function forwardedEmbed(req: EmbedRequest, upstreamModel: string): EmbedRequest {
  return { ...req, model: upstreamModel, encoding: EmbeddingEncoding.FP32_BYTES };
}

/**
 * The far gateway's Embed answer as an adapter's (src/core/upstream.ts, Upstream.embed): one
 * embedding per input of the forwarded request, `index` its position, the packed vector copied out
 * of the received message (each cached vector then holds only its own bytes); `values` are packed
 * if a far side sent numbers instead. Its `dimensions` and `usage` pass whole. Its per-item and
 * whole `cached` flags, model, version and upstream are its own business: this gateway sets its
 * own. A count, index or vector length that does not fit is UNAVAILABLE UPSTREAM_BAD_RESPONSE.
 */
export function embedAnswer(upstream: string, res: EmbedResponse, count: number): EmbedResponse {
  if (res.embeddings.length !== count) throw badResponse(upstream, `${res.embeddings.length} embeddings for ${count} inputs`);
  const bytes = res.dimensions * 4;
  const embeddings = res.embeddings.map((e, i) => {
    if (e.index !== i) throw badResponse(upstream, `embeddings[${i}] has index ${e.index}`);
    const fp32 = e.fp32.byteLength === 0 && e.values.length > 0 ? fp32FromNumbers(e.values) : Uint8Array.prototype.slice.call(e.fp32);
    if (fp32.byteLength !== bytes || bytes === 0) {
      throw badResponse(upstream, `embeddings[${i}] has ${fp32.byteLength / 4} values where dimensions is ${res.dimensions}`);
    }
    return create(EmbeddingSchema, { index: i, fp32 });
  });
  return create(EmbedResponseSchema, { embeddings, dimensions: res.dimensions, ...(res.usage === undefined ? {} : { usage: res.usage }) });
}

/** What goes into the metadata of each forwarded call. */
export interface MetadataPolicy {
  /** gRPC metadata names (lower case) copied from the caller's headers when present. */
  readonly forwardHeaders: readonly string[];
  /** The upstream's configured `headers`, sent on every call. */
  readonly headers: Readonly<Record<string, string>>;
  /** The upstream's `apiKey`, sent as `authorization: Bearer …`. */
  readonly apiKey: string | undefined;
}

/**
 * The gRPC metadata of a forwarded call. Later sources win: the caller's allowlisted headers,
 * then the configured `headers` (the operator's choice beats the caller's), then the configured
 * apiKey's `authorization`. Names are lower-cased, as gRPC metadata names are.
 */
export function forwardedMetadata(callerHeaders: Readonly<Record<string, string>>, policy: MetadataPolicy): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of policy.forwardHeaders) {
    const v = callerHeaders[name];
    if (v !== undefined) out[name] = v;
  }
  for (const [k, v] of Object.entries(policy.headers)) out[k.toLowerCase()] = v;
  if (policy.apiKey !== undefined) out["authorization"] = `Bearer ${policy.apiKey}`;
  return out;
}

/**
 * A model's readiness from the far gateway's last ListModels: its own state for the model when it
 * lists it; NOT_READY when it does not list it (it would answer NOT_FOUND) or did not answer
 * (`listing` undefined after a failed refresh); UNSPECIFIED before the first refresh ended.
 */
export function modelStateOf(listing: ListModelsResponse | undefined | "pending", upstreamModel: string): ModelState {
  if (listing === "pending") return ModelState.UNSPECIFIED;
  const model = listing?.models.find((m) => m.name === upstreamModel);
  return model === undefined ? ModelState.NOT_READY : model.state;
}

/** The far gateway's reasons for refusing a credential (its admission, src/security). */
const credentialReasons = new Set<string>([Reason.Unauthenticated, Reason.ModelNotAllowed]);

/**
 * The far gateway's errors keep their code, message, reason and metadata (trusted mode), except
 * one: when this upstream presents its own credential (`apiKey`) and the far side's admission
 * refuses it (UNAUTHENTICATED, or PERMISSION_DENIED with reason MODEL_NOT_ALLOWED), the fault is
 * this gateway's configuration, not the caller's: INTERNAL, reason UPSTREAM_AUTH, as an HTTP
 * upstream's 401/403 is. The same codes with other reasons (an upstream's own answer, passed on
 * by the far gateway) are left as they are.
 */
export function ownCredentialRefused(err: unknown, upstream: string, hasApiKey: boolean): unknown {
  if (
    !hasApiKey ||
    !(err instanceof GatewayError) ||
    (err.code !== Code.Unauthenticated && err.code !== Code.PermissionDenied) ||
    !credentialReasons.has(err.reason)
  ) {
    return err;
  }
  return new GatewayError(Code.Internal, `upstream "${upstream}" refused the gateway's credentials`, {
    reason: Reason.UpstreamAuth,
    metadata: { upstream },
    cause: err,
  });
}
