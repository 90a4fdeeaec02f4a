import { randomUUID } from "node:crypto";
import type { RequestLimits } from "../../config/schema.js";
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
        return next(call);
      },
    },
    stream: (next) => (call) => {
      call.route = call.runtime.router.resolve(call.model, "generate");
      validateChatInput(call.request, limits);
      return next(call);
    },
  };
}
