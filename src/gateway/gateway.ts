import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import {
  Capability,
  type ChatRequest,
  type ChatResponse,
  type GenerateFinal,
  type GenerateRequest,
  type GenerateResponse,
  type ListModelsRequest,
  type ListModelsResponse,
  ListModelsResponseSchema,
  ModelState,
  type PredictRequest,
  type PredictResponse,
} from "../../gen/infergate/v1/inference_service_pb.js";
import type { CapabilityName } from "../config/schema.js";
import type { CallContext } from "../resilience/deadline.js";
import type { Upstream, UpstreamCall } from "../upstreams/upstream.js";
import type { CacheCaller, ResponseCache, UpstreamRun } from "../cache/response-cache.js";
import type { Logger } from "../observability/logger.js";
import { UpstreamFailure } from "../upstreams/http/http-errors.js";
import type { CallObserver, CallRecord } from "../observability/call-record.js";
import { GatewayError, Reason, toGatewayError } from "./gateway-error.js";
import type { ModelRoute, Router } from "./router.js";
import { validateChatInput, validatePredictRequest } from "./validate-request.js";

/**
 * The core both ingress servers call, with protobuf-es messages. Handlers only orchestrate:
 * route, validate, call the upstream with the caller's deadline and signal, stamp the answer.
 */
export interface Gateway {
  predict(req: PredictRequest, ctx: CallContext): Promise<PredictResponse>;
  chat(req: ChatRequest, ctx: CallContext): Promise<ChatResponse>;
  generate(req: GenerateRequest, ctx: CallContext): AsyncGenerator<GenerateResponse, void, undefined>;
  listModels(req: ListModelsRequest, ctx: CallContext): Promise<ListModelsResponse>;
  /** Refuses new calls from now on (UNAVAILABLE, reason SHUTTING_DOWN); calls in flight go on. */
  drain(): void;
  /** Calls and streams in flight. */
  inFlight(): number;
  /** Resolves when no call is in flight. */
  idle(): Promise<void>;
}

const serverSide = new Set([Code.Unavailable, Code.Internal, Code.Unknown, Code.DataLoss, Code.DeadlineExceeded]);

const capabilityEnum: Record<CapabilityName, Capability> = {
  predict: Capability.PREDICT,
  chat: Capability.CHAT,
  generate: Capability.GENERATE,
};

/** Makes the gateway core over a router. */
/** Response header that tells what the cache did: hit, miss, coalesced or bypass. */
export const cacheHeader = "infergate-cache";

export interface GatewayOptions {
  log?: Logger;
  /** The answer cache; without it every call goes upstream. */
  cache?: ResponseCache;
  /** Told of every finished call (per-call log line, metrics). */
  onCall?: CallObserver;
  /**
   * Authentication and admission (src/security): runs first in every call, before routing. It
   * sets `ctx.tenant`, and throws UNAUTHENTICATED / PERMISSION_DENIED / RESOURCE_EXHAUSTED to refuse.
   */
  admit?: Admission;
}

/** See GatewayOptions.admit. */
export type Admission = (call: { rpc: CallRecord["rpc"]; model: string; ctx: CallContext }) => void | Promise<void>;

export function createGateway(router: Router, options: GatewayOptions = {}): Gateway {
  const { log, cache, onCall, admit } = options;

  async function admitCall(rpc: CallRecord["rpc"], model: string, ctx: CallContext): Promise<void> {
    if (admit !== undefined) {
      await admit({ rpc, model, ctx });
    }
  }

  /** Reports a finished call to the observer. */
  function report(
    rpc: CallRecord["rpc"],
    ctx: CallContext,
    model: string,
    started: number,
    outcome: { err?: unknown; upstream?: string; usage?: { promptTokens: number; completionTokens: number } | undefined; ttftMs?: number },
  ): void {
    if (onCall === undefined) return;
    const e = outcome.err === undefined ? undefined : toGatewayError(outcome.err);
    onCall({
      rpc,
      requestId: ctx.requestId,
      tenant: ctx.tenant,
      model,
      upstream: outcome.upstream,
      cache: ctx.responseHeaders[cacheHeader],
      code: e?.code ?? 0,
      reason: e?.reason,
      latencyMs: performance.now() - started,
      ttftMs: outcome.ttftMs,
      promptTokens: outcome.usage?.promptTokens ?? 0,
      completionTokens: outcome.usage?.completionTokens ?? 0,
    });
  }
  /** Server-side failures go to the log with their internal cause (upstream status and body). */
  function failed(err: unknown): unknown {
    if (log !== undefined && err instanceof GatewayError && serverSide.has(err.code)) {
      const cause = err.cause;
      log.warn(
        {
          code: Code[err.code],
          reason: err.reason,
          ...err.metadata,
          cause: cause instanceof Error ? cause.message : cause === undefined ? undefined : String(cause),
          upstreamStatus: cause instanceof UpstreamFailure ? cause.status : undefined,
          upstreamBody: cause instanceof UpstreamFailure ? cause.bodySnippet : undefined,
        },
        err.message,
      );
    } else if (log !== undefined && !(err instanceof GatewayError)) {
      log.error({ err }, "unexpected error");
    }
    return err;
  }

  let draining = false;
  let inFlight = 0;
  let idleWaiters: (() => void)[] = [];

  function enter(): void {
    if (draining) {
      throw new GatewayError(Code.Unavailable, "the gateway is shutting down; retry on another instance", {
        reason: Reason.ShuttingDown,
      });
    }
    inFlight++;
  }
  function leave(): void {
    inFlight--;
    if (inFlight === 0) {
      const waiters = idleWaiters;
      idleWaiters = [];
      waiters.forEach((w) => w());
    }
  }

  /** Runs an upstream operation; failures after an abort answer with the abort's reason. */
  async function guarded<T>(ctx: CallContext, rpc: CallRecord["rpc"], model: string, op: () => Promise<T>): Promise<T> {
    enter();
    try {
      ctx.signal.throwIfAborted();
      await admitCall(rpc, model, ctx);
      return await op();
    } catch (err) {
      throw failed(abortReasonOr(ctx, err));
    } finally {
      leave();
    }
  }

  function upstreamCall<Req>(
    route: ModelRoute,
    request: Req,
    run: UpstreamRun,
    headers: Readonly<Record<string, string>>,
  ): UpstreamCall<Req> {
    return {
      request,
      upstreamModel: route.upstreamModel,
      modelOptions: route.modelOptions,
      signal: run.signal,
      deadline: run.deadline,
      headers,
    };
  }


  const caller = (ctx: CallContext): CacheCaller => ({ signal: ctx.signal, deadline: ctx.deadline, tenant: ctx.tenant });

  /** The upstream's stream for one run: stamped, cut at the final event, truncation an error. */
  async function* upstreamEvents(
    route: ModelRoute,
    req: GenerateRequest,
    run: UpstreamRun,
    headers: Readonly<Record<string, string>>,
  ): AsyncGenerator<GenerateResponse> {
    const events = capability(route.upstream, "generate")(upstreamCall(route, req, run, headers));
    let sent = 0;
    for await (const event of events) {
      run.signal.throwIfAborted();
      if (event.event.case === "final") {
        stampProvenance(route, event.event.value);
        yield event;
        // The final event is the last one by contract; anything the upstream sends after it is
        // not forwarded.
        return;
      }
      sent++;
      yield event;
    }
    throw new GatewayError(
      Code.Unavailable,
      `upstream "${route.upstream.name}" ended the stream without its final event after ${sent} events`,
      { reason: Reason.StreamTruncated, metadata: { upstream: route.upstream.name } },
    );
  }

  /** Reports a unary call when its promise settles. */
  function observed<T extends object>(
    rpc: CallRecord["rpc"],
    ctx: CallContext,
    model: string,
    p: Promise<T>,
  ): Promise<T> {
    const started = performance.now();
    return p.then(
      (res) => {
        const r = res as { upstream?: string; usage?: { promptTokens: number; completionTokens: number } };
        report(rpc, ctx, model, started, { ...(r.upstream === undefined ? {} : { upstream: r.upstream }), usage: r.usage });
        return res;
      },
      (err: unknown) => {
        report(rpc, ctx, model, started, { err });
        throw err;
      },
    );
  }

  return {
    predict(req, ctx) {
      return observed("Predict", ctx, req.model, guarded(ctx, "Predict", req.model, async () => {
        const route = router.resolve(req.model, "predict");
        validatePredictRequest(req);
        const call = async (run: UpstreamRun) => {
          const res = await capability(route.upstream, "predict")(upstreamCall(route, req, run, ctx.headers));
          res.model = route.name;
          res.modelVersion = req.modelVersion ?? route.version;
          res.upstream = route.upstream.name;
          return res;
        };
        const { value: res, outcome } = cache === undefined ? { value: await call(ctx), outcome: "bypass" } : await cache.predict(route, req, caller(ctx), call);
        ctx.responseHeaders[cacheHeader] = outcome;
        // The id belongs to this request, not to the answer that may be shared or stored.
        res.id = req.id !== "" ? req.id : randomUUID();
        return res;
      }));
    },

    chat(req, ctx) {
      return observed("Chat", ctx, req.model, guarded(ctx, "Chat", req.model, async () => {
        const route = router.resolve(req.model, "chat");
        validateChatInput(req);
        const call = async (run: UpstreamRun) =>
          stampProvenance(route, await capability(route.upstream, "chat")(upstreamCall(route, req, run, ctx.headers)));
        const { value, outcome } = cache === undefined ? { value: await call(ctx), outcome: "bypass" } : await cache.chat(route, req, caller(ctx), call);
        ctx.responseHeaders[cacheHeader] = outcome;
        return value;
      }));
    },

    async *generate(req, ctx) {
      enter();
      const started = performance.now();
      let ttftMs: number | undefined;
      let final: GenerateFinal | undefined;
      let failure: unknown;
      try {
        ctx.signal.throwIfAborted();
        await admitCall("Generate", req.model, ctx);
        const route = router.resolve(req.model, "generate");
        validateChatInput(req);
        const { events, outcome } =
          cache === undefined
            ? { events: upstreamEvents(route, req, ctx, ctx.headers), outcome: "bypass" }
            : cache.generate(route, req, caller(ctx), (run) => upstreamEvents(route, req, run, ctx.headers));
        ctx.responseHeaders[cacheHeader] = outcome;
        for await (const event of events) {
          ctx.signal.throwIfAborted();
          ttftMs ??= performance.now() - started;
          if (event.event.case === "final") final = event.event.value;
          yield event;
        }
      } catch (err) {
        failure = failed(abortReasonOr(ctx, err));
        throw failure;
      } finally {
        leave();
        // A consumer that stopped reading early (the client went away) is a cancel.
        const err = failure ?? (final === undefined ? ctx.signal.reason ?? new GatewayError(Code.Canceled, "the client cancelled the call") : undefined);
        report("Generate", ctx, req.model, started, { err, upstream: final?.upstream, usage: final?.usage, ...(ttftMs === undefined ? {} : { ttftMs }) });
      }
    },

    listModels(_req, ctx) {
      return observed("ListModels", ctx, "", guarded(ctx, "ListModels", "", async () => create(ListModelsResponseSchema, {
        models: router.routes().map((r) => ({
          name: r.name,
          version: r.version,
          upstreamKind: r.upstream.kind,
          upstream: r.upstream.name,
          capabilities: r.capabilities.map((c) => capabilityEnum[c]),
          state: r.upstream.modelState?.(r.upstreamModel) ?? ModelState.UNSPECIFIED,
        })),
      })));
    },

    drain() {
      draining = true;
    },
    inFlight: () => inFlight,
    idle() {
      return inFlight === 0 ? Promise.resolve() : new Promise((resolve) => idleWaiters.push(resolve));
    },
  };
}

/** Fills in which model, version and upstream answered; adapters leave these to the gateway. */
function stampProvenance<T extends { id: string; model: string; modelVersion: string; upstream: string }>(route: ModelRoute, answer: T): T {
  answer.model = route.name;
  answer.modelVersion = route.version;
  answer.upstream = route.upstream.name;
  if (answer.id === "") {
    answer.id = randomUUID();
  }
  return answer;
}

function capability<K extends CapabilityName>(upstream: Upstream, k: K): NonNullable<Upstream[K]> {
  const fn = upstream[k];
  if (fn === undefined) {
    // The router only routes capabilities the kind declares; this is a kind that lies.
    throw new GatewayError(Code.Internal, "internal error", {
      cause: new Error(`upstream kind ${upstream.kind} declares ${k} but does not implement it`),
    });
  }
  return fn.bind(upstream) as NonNullable<Upstream[K]>;
}

/** After the call was aborted, whatever the upstream threw is a consequence: report the cause. */
function abortReasonOr(ctx: CallContext, err: unknown): unknown {
  if (ctx.signal.aborted && ctx.signal.reason instanceof GatewayError) {
    return ctx.signal.reason;
  }
  return err;
}
