import type {
  ChatRequest,
  ChatResponse,
  DeleteSessionRequest,
  DeleteSessionResponse,
  EmbedRequest,
  EmbedResponse,
  GenerateRequest,
  GenerateResponse,
  ListModelsRequest,
  ListModelsResponse,
  PredictRequest,
  PredictResponse,
} from "../../gen/infergate/v1/inference_service_pb.js";
import type { ResponseCache } from "../cache/response-cache.js";
import type { RequestLimits } from "../config/schema.js";
import type { CallContext } from "../core/call-context.js";
import type { GatewayError } from "../core/gateway-error.js";
import type { Admission, Rpc } from "../core/rpc.js";
import type { CallObserver } from "../observability/call-record.js";
import type { Logger } from "../observability/logger.js";
import type { Tracing } from "../observability/tracing.js";
import type { Sessions } from "../sessions/sessions.js";
import { GatewayCall, type Runtime } from "./gateway-call.js";
import { chatUpstream, countTokensUpstream, deleteSession, embedUpstream, generateUpstream, listModels, predictUpstream } from "./handlers.js";
import { composeStream, composeUnary, type Interceptor, type TokenCountAnswer, type UnaryNext, type UnaryRpc } from "./interceptor.js";
import { Lifecycle } from "./lifecycle.js";
import type { Router } from "./router.js";
import { admissionStep } from "./steps/admission.js";
import { cacheStep } from "./steps/cache.js";
import { callRecordStep } from "./steps/call-record.js";
import { drainStep } from "./steps/drain.js";
import { failureLog } from "./steps/failure-log.js";
import { fallbacksStep } from "./steps/fallbacks.js";
import { routeStep } from "./steps/route.js";
import { sessionsStep } from "./steps/sessions.js";

export type { Runtime } from "./gateway-call.js";
export type { Interceptor, TokenCountAnswer } from "./interceptor.js";
export { cacheHeader } from "./steps/cache.js";
export { servedByHeader } from "./steps/provenance.js";

/**
 * The core both ingress servers call, with protobuf-es messages: each call goes down one chain of
 * steps (src/gateway/steps/, composed in createGateway below) to its handler
 * (src/gateway/handlers.ts).
 */
export interface Gateway {
  predict(req: PredictRequest, ctx: CallContext): Promise<PredictResponse>;
  chat(req: ChatRequest, ctx: CallContext): Promise<ChatResponse>;
  generate(req: GenerateRequest, ctx: CallContext): AsyncGenerator<GenerateResponse, void, undefined>;
  embed(req: EmbedRequest, ctx: CallContext): Promise<EmbedResponse>;
  /** The input tokens of a Chat request's prompt at its model (src/core/rpc.ts, CountTokens). */
  countTokens(req: ChatRequest, ctx: CallContext): Promise<TokenCountAnswer>;
  listModels(req: ListModelsRequest, ctx: CallContext): Promise<ListModelsResponse>;
  /** Forgets one conversation session of the caller's tenant (NOT_FOUND when it has none). */
  deleteSession(req: DeleteSessionRequest, ctx: CallContext): Promise<DeleteSessionResponse>;
  /**
   * Serves the calls that start from now on with `next` (a configuration reload); each call in
   * flight keeps the runtime it started with, from admission to its last event. Resolves once no
   * call that started before is left.
   */
  swap(next: Runtime): Promise<void>;
  /** Refuses new calls from now on (UNAVAILABLE, reason SHUTTING_DOWN); calls in flight go on. */
  drain(): void;
  /**
   * Aborts every call in flight with `reason` (a GatewayError, which the callers then receive as
   * their status): the end of a drain whose grace period ran out.
   */
  abortInFlight(reason: GatewayError): void;
  /** Calls and streams in flight. */
  inFlight(): number;
  /** Resolves when no call is in flight. */
  idle(): Promise<void>;
  /**
   * Reports a call that a listener answered before the core saw it, its request not being a
   * message of the method (reason MALFORMED_REQUEST), as every finished call is reported (the
   * metrics and the call log line); returns `err`, for the listener to send.
   */
  refused(rpc: Rpc, ctx: CallContext, err: GatewayError): GatewayError;
}

export interface GatewayOptions {
  log?: Logger;
  /** The answer cache; without it every call goes upstream. */
  cache?: ResponseCache;
  /** Told of every finished call (per-call log line, metrics). */
  onCall?: CallObserver;
  /** Authentication and admission (src/security); see Admission. */
  admit?: Admission;
  /**
   * Predict, Chat and Generate calls in flight at most (`server.maxConcurrentCalls`); one more is
   * refused at once with RESOURCE_EXHAUSTED, reason OVERLOADED. Undefined: no limit.
   */
  maxConcurrentCalls?: number | undefined;
  /**
   * Conversation sessions (`session_id`): history prepended before routing and caching, the turn
   * recorded once the call succeeded. Without it, `session_id` is ignored.
   */
  sessions?: Sessions;
  /** Element counts of one request (`server.requestLimits`); default: the schema's defaults. */
  requestLimits?: RequestLimits;
  /**
   * Steps of the app's own, outermost first, around the gateway's (before the call record: they
   * see each call as the listener does, and its record is made inside them; server.logContent's,
   * src/server/content-log.ts).
   */
  interceptors?: readonly Interceptor[];
  /** OpenTelemetry tracing (`tracing:`); undefined when off: the calls then make no span at all. */
  tracing?: Tracing | undefined;
}

/** Makes the gateway core over a router. */
export function createGateway(router: Router, options: GatewayOptions = {}): Gateway {
  const { log, cache, onCall, admit, sessions, requestLimits } = options;
  const lifecycle = new Lifecycle({ router, admit }, options.maxConcurrentCalls);
  const logFailure = failureLog(log);
  // The currency of a call that never got a model (the routes carry their own): the config's now.
  let routes = router;
  const record = callRecordStep(onCall, logFailure, () => routes.routes()[0]?.currency ?? "USD", options.tracing);
  // Every call's chain, outermost first: the order matters for what is counted and logged. The
  // call record's clock starts first and its report comes last, so refusals (draining, overload,
  // admission, routing, validation) are reported as calls; the drain step refuses before anything
  // else runs (not logged as failures), and registers the call for abortInFlight; admission
  // comes before the model is looked up; the session's history goes in before the cache keys the
  // request; the cache runs fallbacks and upstream once for identical calls in flight.
  const steps: readonly Interceptor[] = [
    record,
    drainStep(lifecycle, logFailure),
    admissionStep,
    routeStep(requestLimits),
    ...(sessions === undefined ? [] : [sessionsStep(sessions)]),
    cacheStep(cache),
    fallbacksStep,
  ];
  // The app's steps go around the gateway's composed chain, so that the call is recorded inside
  // them (its end hooks have run by the time their wrappers see the answer).
  const outer = options.interceptors ?? [];
  const unary = <R extends UnaryRpc>(rpc: R, handler: UnaryNext<R>) => composeUnary(outer, rpc, composeUnary(steps, rpc, handler));
  // Composed once here: a call costs one GatewayCall and the steps that take part in its RPC.
  const predict = unary("Predict", predictUpstream);
  const chat = unary("Chat", chatUpstream);
  const embed = unary("Embed", embedUpstream(cache));
  const countTokens = unary("CountTokens", countTokensUpstream);
  const models = unary("ListModels", listModels);
  const forget = unary("DeleteSession", deleteSession(sessions));
  const generate = composeStream([...outer, ...steps], generateUpstream);

  return {
    predict: (req, ctx) => predict(new GatewayCall("Predict", req.model, req, ctx)),
    chat: (req, ctx) => chat(new GatewayCall("Chat", req.model, req, ctx)),
    generate: (req, ctx) => generate(new GatewayCall("Generate", req.model, req, ctx)),
    embed: (req, ctx) => embed(new GatewayCall("Embed", req.model, req, ctx)),
    countTokens: (req, ctx) => countTokens(new GatewayCall("CountTokens", req.model, req, ctx)),
    listModels: (req, ctx) => models(new GatewayCall("ListModels", "", req, ctx)),
    deleteSession: (req, ctx) => forget(new GatewayCall("DeleteSession", "", req, ctx)),
    swap: (next) => {
      routes = next.router;
      return lifecycle.swap(next);
    },
    drain: () => lifecycle.drain(),
    abortInFlight: (reason) => lifecycle.abortInFlight(reason),
    inFlight: () => lifecycle.inFlight(),
    idle: () => lifecycle.idle(),
    refused: record.refused,
  };
}
