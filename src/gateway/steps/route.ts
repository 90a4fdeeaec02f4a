import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { CachePolicy } from "../../../gen/infergate/v1/chat_pb.js";
import { ChatRequestSchema, GenerateRequestSchema } from "../../../gen/infergate/v1/inference_service_pb.js";
import type { ChatInput } from "../../core/upstream.js";
import type { CapabilityName, RequestLimits } from "../../config/schema.js";
import { echoed, invalidArgument } from "../../core/gateway-error.js";
import type { GatewayCall } from "../gateway-call.js";
import { applyOutputForm } from "../../upstreams/tensor-bulk.js";
import type { Interceptor } from "../interceptor.js";
import { applyEncoding } from "../embed-batches.js";
import { validateEmbedRequest } from "../validate-embed.js";
import { validateChatInput, validatePredictRequest } from "../validate-request.js";

/**
 * Route, after admission, for the model calls: the model's route in the runtime the call runs
 * under (NOT_FOUND, UNIMPLEMENTED), then the request's checks (`server.requestLimits`), before a
 * session, the cache or an upstream sees it. A Predict's answer then gets what belongs to this
 * request rather than to an answer that may be shared or stored: its id and the output form asked
 * for.
 */
export function routeStep(limits: RequestLimits | undefined): Interceptor {
  return {
    name: "route",
    unary: {
      Predict: (next) => async (call) => {
        const req = call.request;
        call.route = call.runtime.router.resolve(call.model, "predict");
        validatePredictRequest(req, limits);
        const res = await next(call);
        res.id = req.id !== "" ? req.id : randomUUID();
        // Converted in bulk after the cache, which keeps the upstream's form for every caller
        // (output_form is not in the key).
        return applyOutputForm(res, req.outputForm);
      },
      Embed: (next) => async (call) => {
        const route = (call.route = call.runtime.router.resolve(call.model, "embed"));
        validateEmbedRequest(call.request, route, limits);
        // The caller's encoding, after the cache (which keeps the packed form for every caller).
        return applyEncoding(await next(call), call.request.encoding);
      },
      Chat: (next) => (call) => {
        call.route = call.runtime.router.resolve(call.model, "chat");
        validateChatInput(call.request, limits);
        checkAnthropicBeta(call, "chat");
        return next(call);
      },
      // A prompt is counted at the model asked for (no fallback counts for it): a Chat model's.
      CountTokens: (next) => (call) => {
        call.route = call.candidate = call.runtime.router.resolve(call.model, "chat");
        validateChatInput(call.request, limits);
        checkAnthropicBeta(call, "chat");
        return next(call);
      },
    },
    stream: (next) => (call) => {
      call.route = call.runtime.router.resolve(call.model, "generate");
      validateChatInput(call.request, limits);
      checkAnthropicBeta(call, "generate");
      return next(call);
    },
  };
}

/** The caller header that turns on Anthropic beta features; the anthropic kind forwards it. */
const anthropicBeta = "anthropic-beta";

/**
 * A caller's `anthropic-beta` header changes the request or the answer, and only the anthropic
 * upstream kind sends it on (src/upstreams/anthropic/anthropic-upstream.ts). So it is accepted
 * only when the model and every fallback that could answer the call are of that kind, and refused
 * otherwise (INVALID_ARGUMENT naming the header) before the cache or an upstream sees the call,
 * rather than ignored by whichever candidate answers. The response cache does not key on caller
 * headers, so a call with the header bypasses it (neither a non-beta answer read nor a beta
 * answer stored). docs/anthropic-ingress.md.
 */
function checkAnthropicBeta(call: GatewayCall<ChatInput>, capability: CapabilityName): void {
  const ctx = call.ctx;
  // Every Chat and Generate asks: one header, not all of them built (CallContext.header).
  const beta = ctx.header !== undefined ? ctx.header(anthropicBeta) : ctx.headers[anthropicBeta];
  if (beta === undefined || beta.trim() === "") return;
  const route = call.route;
  const candidates = [route, ...route.fallbacks.filter((f) => f.capabilities.includes(capability))];
  const other = candidates.find((c) => c.upstream.kind !== "anthropic");
  if (other !== undefined) {
    throw invalidArgument(
      anthropicBeta,
      `beta features (got "${echoed(beta, 100)}") are passed only to an anthropic upstream, and model ${other.name} is served by a ${other.upstream.kind} upstream; send the request without the header`,
    );
  }
  // A copy: the request may be a shared, frozen one (isSharedRequest, src/wire/fast-paths.ts).
  const req = call.request;
  call.request = create(req.$typeName === ChatRequestSchema.typeName ? ChatRequestSchema : GenerateRequestSchema, { ...req, cachePolicy: CachePolicy.BYPASS });
}
