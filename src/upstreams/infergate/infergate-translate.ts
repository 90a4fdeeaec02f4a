/**
 * Pure parts of the `infergate` kind (chaining to another infergate over its own gRPC contract):
 * the forwarded request, the forwarded metadata, the readiness read from the far gateway's
 * ListModels, and the one error it does not pass through as is. No I/O.
 *
 * The far side speaks our contract, so every field of a request maps to itself: the message is
 * forwarded whole, its `metadata` map included (so `mock.*` fault-injection keys reach a mock
 * model behind the far gateway), with only `model` replaced by the upstream model name.
 */
import { Code } from "@connectrpc/connect";
import {
  type ChatRequest,
  type GenerateRequest,
  type ListModelsResponse,
  ModelState,
  type PredictRequest,
} from "../../../gen/infergate/v1/inference_service_pb.js";
import { GatewayError, Reason } from "../../core/gateway-error.js";
import type { ChatInput } from "../../core/upstream.js";

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
