import type { CallContext } from "./call-context.js";

/**
 * A method of infergate.v1.InferenceService (proto/infergate/v1/inference_service.proto), by name,
 * or CountTokens: the token count of a Chat request's prompt, which only the Anthropic Messages
 * API's `POST /v1/messages/count_tokens` asks for (src/ingress/anthropic/anthropic-ingress.ts; no
 * gRPC method). It goes through the gateway's steps as a model call (keys, model globs, rate
 * limits, the call record) but no cache, session or fallback.
 */
export type Rpc = "Predict" | "Chat" | "Generate" | "Embed" | "CountTokens" | "ListModels" | "DeleteSession";

/**
 * Whether a call names a model and goes to its upstream (Predict, Chat, Generate, Embed). Only these
 * count against `server.maxConcurrentCalls` and are checked against a caller's model globs;
 * ListModels and DeleteSession name no model.
 */
export function isModelCall(rpc: Rpc): boolean {
  return rpc !== "ListModels" && rpc !== "DeleteSession";
}

/**
 * Authentication and admission, run first in every call (src/security/admission.ts makes it; the
 * gateway calls it). It sets `ctx.tenant`, and throws UNAUTHENTICATED / PERMISSION_DENIED /
 * RESOURCE_EXHAUSTED to refuse; it gives a promise only when it has something to wait for.
 */
export type Admission = (call: { rpc: Rpc; model: string; ctx: CallContext }) => void | Promise<void>;
