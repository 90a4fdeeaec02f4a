import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import {
  Capability,
  DeleteSessionResponseSchema,
  type EmbedRequest,
  type EmbedResponse,
  ListModelsResponseSchema,
  ModelState,
  type ChatResponse,
  type DeleteSessionResponse,
  type GenerateResponse,
  type ListModelsResponse,
  type PredictResponse,
} from "../../gen/infergate/v1/inference_service_pb.js";
import type { ResponseCache, UpstreamRun } from "../cache/response-cache.js";
import type { CapabilityName } from "../config/schema.js";
import type { AttemptTrace, CallContext } from "../core/call-context.js";
import { echoed, GatewayError, Reason } from "../core/gateway-error.js";
import type { ModelRoute } from "../core/model-route.js";
import type { Upstream } from "../core/upstream.js";
import type { ResilientCall } from "../resilience/resilient-upstream.js";
import type { Sessions } from "../sessions/sessions.js";
import { embedInBatches } from "./embed-batches.js";
import type { StreamCall, TokenCountAnswer, UnaryCall } from "./interceptor.js";

/**
 * The handlers at the end of each RPC's chain (src/gateway/gateway.ts composes the steps around
 * them): the model calls' upstream call for the candidate the fallbacks step chose, with the
 * caller's deadline and the run's signal; ListModels and DeleteSession, which have no upstream.
 */

export function predictUpstream(call: UnaryCall<"Predict">): Promise<PredictResponse> {
  const candidate = call.candidate;
  const upstream = candidate.upstream;
  if (upstream.predict === undefined) throw unimplemented(upstream, "predict");
  return upstream.predict(new UnaryUpstreamCall(candidate, call.request, call.run, call.ctx));
}

export function chatUpstream(call: UnaryCall<"Chat">): Promise<ChatResponse> {
  const candidate = call.candidate;
  const upstream = candidate.upstream;
  if (upstream.chat === undefined) throw unimplemented(upstream, "chat");
  return upstream.chat(new UnaryUpstreamCall(candidate, call.request, call.run, call.ctx));
}

/** A prompt's token count at the model asked for, when its upstream kind can count (Upstream.countTokens). */
export async function countTokensUpstream(call: UnaryCall<"CountTokens">): Promise<TokenCountAnswer> {
  const candidate = call.candidate;
  const upstream = candidate.upstream;
  if (upstream.countTokens === undefined) {
    throw new GatewayError(
      Code.Unimplemented,
      `model "${echoed(call.model)}" cannot count tokens: its upstream kind (${upstream.kind}) has no token count (docs/anthropic-ingress.md)`,
      { reason: Reason.CapabilityNotSupported, metadata: { model: echoed(call.model), rpc: "CountTokens" } },
    );
  }
  // No cache step on this RPC: the upstream call runs on the caller's own signal and deadline.
  const ctx = call.ctx;
  const count = await upstream.countTokens(new UnaryUpstreamCall(candidate, call.request, ctx, ctx));
  return { ...count, upstream: upstream.name };
}

export function generateUpstream(call: StreamCall): AsyncIterable<GenerateResponse> {
  const candidate = call.candidate;
  const upstream = candidate.upstream;
  if (upstream.generate === undefined) throw unimplemented(upstream, "generate");
  const run = call.run;
  const ctx = call.ctx;
  const upstreamCall: ResilientCall<StreamCall["request"]> = {
    request: call.request,
    upstreamModel: candidate.upstreamModel,
    modelOptions: candidate.modelOptions,
    signal: run.signal,
    deadline: run.deadline,
    // Retries are for this caller: a coalesced flight's own deadline is longer.
    retryDeadline: Math.min(run.deadline, ctx.deadline),
    headers: ctx.headers,
    trace: ctx.trace,
  };
  return upstream.generate(upstreamCall);
}

/**
 * Embed's upstream call for the candidate the fallbacks step chose, through the cache input by
 * input when there is one (src/cache/embedding-cache.ts: keyed by the candidate, so a fallback's
 * vectors are never mixed with its model's), the inputs left split into the model's batches.
 */
export function embedUpstream(cache: ResponseCache | undefined): (call: UnaryCall<"Embed">) => Promise<EmbedResponse> {
  return async (call) => {
    const candidate = call.candidate;
    const upstream = candidate.upstream;
    const embed = upstream.embed;
    if (embed === undefined) throw unimplemented(upstream, "embed");
    const send = (req: EmbedRequest, run: UpstreamRun) =>
      embedInBatches(candidate, req, run.signal, (part, signal) =>
        embed.call(upstream, new UnaryUpstreamCall(candidate, part, { signal, deadline: run.deadline }, call.ctx)),
      );
    if (cache === undefined) {
      call.embedOutcome = "bypass";
      return send(call.request, call.run);
    }
    const { value, outcome } = await cache.embed(candidate, call.request, call, send);
    call.embedOutcome = outcome;
    return value;
  };
}

const capabilityEnum: Record<CapabilityName, Capability> = {
  predict: Capability.PREDICT,
  chat: Capability.CHAT,
  generate: Capability.GENERATE,
  embed: Capability.EMBED,
};

/** The models of the runtime the call runs under, with each one's upstream state. */
export async function listModels(call: UnaryCall<"ListModels">): Promise<ListModelsResponse> {
  return create(ListModelsResponseSchema, {
    models: call.runtime.router.routes().map((r) => ({
      name: r.name,
      version: r.version,
      upstreamKind: r.upstream.kind,
      upstream: r.upstream.name,
      capabilities: r.capabilities.map((c) => capabilityEnum[c]),
      state: r.upstream.modelState?.(r.upstreamModel) ?? ModelState.UNSPECIFIED,
      endpoints: r.upstream.endpointStatus?.(r.upstreamModel) ?? [],
    })),
  });
}

/** Forgets one session of the caller's tenant (NOT_FOUND without a session store). */
export function deleteSession(sessions: Sessions | undefined): (call: UnaryCall<"DeleteSession">) => Promise<DeleteSessionResponse> {
  return async (call) => {
    if (sessions === undefined) {
      throw new GatewayError(Code.NotFound, "no such session (it may have expired)", { reason: Reason.SessionNotFound });
    }
    await sessions.delete(call.ctx.tenant, call.request.sessionId);
    return create(DeleteSessionResponseSchema, {});
  };
}

/** The router only routes capabilities the kind declares; this is a kind that lies. */
function unimplemented(upstream: Upstream, k: CapabilityName): GatewayError {
  return new GatewayError(Code.Internal, "internal error", {
    cause: new Error(`upstream kind ${upstream.kind} declares ${k} but does not implement it`),
  });
}

/**
 * One unary upstream call, as generateUpstream makes a stream's, but a class: the caller's
 * headers are built from the request's metadata (about 2.5 µs of a call at concurrency 1) only if
 * the upstream's kind reads them (those that forward some); the others never do. Streams keep the
 * plain object: the resilience wrapper copies theirs per attempt with a spread, which would drop a
 * getter of the prototype. `retryDeadline` is the deadline of the caller that started the run: a
 * coalesced flight's own deadline is longer, but retries are for this caller.
 */
class UnaryUpstreamCall<Req> implements ResilientCall<Req> {
  readonly upstreamModel: string;
  readonly modelOptions: unknown;
  readonly signal: AbortSignal;
  readonly deadline: number;
  readonly retryDeadline: number;
  readonly trace: AttemptTrace;
  constructor(
    route: ModelRoute,
    readonly request: Req,
    run: UpstreamRun,
    private readonly ctx: CallContext,
  ) {
    this.upstreamModel = route.upstreamModel;
    this.modelOptions = route.modelOptions;
    this.signal = run.signal;
    this.deadline = run.deadline;
    this.retryDeadline = Math.min(run.deadline, ctx.deadline);
    this.trace = ctx.trace;
  }
  get headers(): Readonly<Record<string, string>> {
    return this.ctx.headers;
  }
}
