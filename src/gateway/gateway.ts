import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import {
  Capability,
  type ChatRequest,
  type ChatResponse,
  type DeleteSessionRequest,
  type DeleteSessionResponse,
  DeleteSessionResponseSchema,
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
import type { CapabilityName, RequestLimits } from "../config/schema.js";
import { type AttemptTrace, type CallContext, throwIfAborted } from "../core/call-context.js";
import { ConcurrencyLimit } from "../resilience/concurrency-limit.js";
import { allowsFallback } from "../resilience/failure-policy.js";
import { type LinkedAbort, linkedAbort } from "../resilience/linked-abort.js";
import type { ResilientCall } from "../resilience/resilient-upstream.js";
import type { ChatInput, Upstream } from "../core/upstream.js";
import type { CacheCaller, ResponseCache, UpstreamRun } from "../cache/response-cache.js";
import { AnswerAssembler, type Sessions } from "../sessions/sessions.js";
import type { Logger } from "../observability/logger.js";
import { UpstreamFailure } from "../upstreams/http/http-errors.js";
import type { CallObserver, CallRecord } from "../observability/call-record.js";
import { GatewayError, Reason, toGatewayError } from "../core/gateway-error.js";
import type { ModelRoute } from "../core/model-route.js";
import { type Admission, isModelCall } from "../core/rpc.js";
import type { Router } from "./router.js";
import { validateChatInput, validatePredictRequest } from "./validate-request.js";
import { applyOutputForm } from "../upstreams/tensor-bulk.js";

/**
 * The core both ingress servers call, with protobuf-es messages. Handlers only orchestrate:
 * route, validate, call the upstream with the caller's deadline and signal, stamp the answer.
 */
export interface Gateway {
  predict(req: PredictRequest, ctx: CallContext): Promise<PredictResponse>;
  chat(req: ChatRequest, ctx: CallContext): Promise<ChatResponse>;
  generate(req: GenerateRequest, ctx: CallContext): AsyncGenerator<GenerateResponse, void, undefined>;
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
  refused(rpc: CallRecord["rpc"], ctx: CallContext, err: GatewayError): GatewayError;
}

const serverSide = new Set([Code.Unavailable, Code.Internal, Code.Unknown, Code.DataLoss, Code.DeadlineExceeded]);

const capabilityEnum: Record<CapabilityName, Capability> = {
  predict: Capability.PREDICT,
  chat: Capability.CHAT,
  generate: Capability.GENERATE,
};

/** Response header that tells what the cache did: hit, miss, coalesced or bypass. */
export const cacheHeader = "infergate-cache";

/** Response header naming the model and upstream that served the answer: `<model>/<upstream>`. */
export const servedByHeader = "infergate-served-by";

/**
 * The first event of each live stream → `<model>/<upstream>` that produced it. Joiners of a
 * coalesced stream receive the very same event objects, so they learn it too.
 */
const streamOrigin = new WeakMap<GenerateResponse, string>();

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
}

/**
 * What a configuration reload replaces in the core: the routes (with the upstreams they hold) and
 * the admission in front of them. One reference, swapped in one assignment.
 */
export interface Runtime {
  readonly router: Router;
  readonly admit?: Admission | undefined;
}

/** A runtime and the calls in flight that started under it. */
interface Generation {
  readonly runtime: Runtime;
  calls: number;
  /** Set by swap once replaced: called when its last call has left. */
  drained?: () => void;
}

/** Makes the gateway core over a router. */
export function createGateway(router: Router, options: GatewayOptions = {}): Gateway {
  const { log, cache, onCall, admit, sessions, requestLimits } = options;
  const callLimit = new ConcurrencyLimit("the gateway", options.maxConcurrentCalls);

  let generation: Generation = { runtime: { router, admit }, calls: 0 };

  /** Reports a finished call to the observer. */
  function report(
    rpc: CallRecord["rpc"],
    ctx: CallContext,
    model: string,
    started: number,
    outcome: { err?: unknown; upstream?: string; usage?: { promptTokens: number; completionTokens: number } | undefined; ttftMs?: number; undecoded?: true },
  ): void {
    if (onCall === undefined) return;
    const e = outcome.err === undefined ? undefined : toGatewayError(outcome.err);
    onCall({
      rpc,
      requestId: ctx.requestId,
      tenant: ctx.tenant,
      model,
      upstream: outcome.upstream,
      endpoint: ctx.trace.endpoint,
      attempts: ctx.trace.attempts,
      cache: ctx.responseHeaders[cacheHeader],
      code: e?.code ?? 0,
      reason: e?.reason,
      latencyMs: performance.now() - started,
      ttftMs: outcome.ttftMs,
      promptTokens: outcome.usage?.promptTokens ?? 0,
      completionTokens: outcome.usage?.completionTokens ?? 0,
      undecoded: outcome.undecoded,
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
  // One abort link per call in flight, for abortInFlight: a slot each in an array with a list of
  // free slots, not a Set (adding to and deleting from a Set was the largest cost of registering a
  // call: 0.5% of a proxied Chat's profile at c=64).
  const live: (Pick<LinkedAbort, "abort"> | undefined)[] = [];
  const freeSlots: number[] = [];
  function register(entry: Pick<LinkedAbort, "abort">): number {
    const i = freeSlots.length > 0 ? freeSlots.pop()! : live.length;
    live[i] = entry;
    return i;
  }
  function unregister(i: number): void {
    live[i] = undefined;
    freeSlots.push(i);
  }

  /**
   * Admits a call: refused while draining, and, for model calls (`limited`), over the global
   * concurrency limit (load shedding, before any other work).
   */
  function enter(limited: boolean): Generation {
    if (draining) {
      throw new GatewayError(Code.Unavailable, "the gateway is shutting down; retry on another instance", {
        reason: Reason.ShuttingDown,
      });
    }
    if (limited) callLimit.acquire();
    inFlight++;
    const g = generation;
    g.calls++;
    return g;
  }
  function leave(limited: boolean, g: Generation): void {
    if (limited) callLimit.release();
    inFlight--;
    if (--g.calls === 0) g.drained?.();
    if (inFlight === 0) {
      const waiters = idleWaiters;
      idleWaiters = [];
      waiters.forEach((w) => w());
    }
  }

  /**
   * The call's context as the core uses it, registered for abortInFlight until `end()`. A context
   * that can abort its own signal (createCallContext's) is used as it is; any other gets a view
   * whose signal also aborts when abortInFlight does.
   */
  function scoped(ctx: CallContext): { ctx: CallContext; end(): void } {
    if (ctx.abort !== undefined) {
      // The context itself is the entry (its abort is a method); no AbortSignal, listener or
      // Proxy of its own (about 10 µs a call).
      const entry = ctx as Pick<LinkedAbort, "abort">;
      const slot = register(entry);
      return { ctx, end: () => unregister(slot) };
    }
    const link = linkedAbort(ctx.signal);
    const slot = register(link);
    // A Proxy rather than a copy: admission writes ctx.tenant, which the ingress and the call
    // report read on the original.
    // isAborted would not see the link's abort: the view has none (its signal is read instead).
    const view = new Proxy(ctx, {
      get: (target, key) => (key === "signal" ? link.signal : key === "isAborted" ? undefined : Reflect.get(target, key)),
    });
    return {
      ctx: view,
      end() {
        unregister(slot);
        link.dispose();
      },
    };
  }

  /** Runs an upstream operation; failures after an abort answer with the abort's reason. */
  async function guarded<T>(
    outer: CallContext,
    rpc: CallRecord["rpc"],
    model: string,
    op: (ctx: CallContext, router: Router) => Promise<T>,
  ): Promise<T> {
    const limited = isModelCall(rpc);
    const g = enter(limited);
    const { ctx, end } = scoped(outer);
    try {
      throwIfAborted(ctx);
      // Admission gives a promise only when it has something to wait for.
      const admitted = g.runtime.admit?.({ rpc, model, ctx });
      if (admitted !== undefined) await admitted;
      return await op(ctx, g.runtime.router);
    } catch (err) {
      throw failed(abortReasonOr(ctx, err));
    } finally {
      end();
      leave(limited, g);
    }
  }

  /**
   * One upstream call for a route. `retryDeadline` is the deadline of the caller that started the
   * run: a coalesced flight's own deadline is longer, but retries are for this caller.
   */
  function upstreamCall<Req>(
    route: ModelRoute,
    request: Req,
    run: UpstreamRun,
    ctx: CallContext,
  ): ResilientCall<Req> {
    return {
      request,
      upstreamModel: route.upstreamModel,
      modelOptions: route.modelOptions,
      signal: run.signal,
      deadline: run.deadline,
      retryDeadline: Math.min(run.deadline, ctx.deadline),
      headers: ctx.headers,
      trace: ctx.trace,
    };
  }

  /**
   * The models to try for a call, in order: the route, then its fallbacks that serve the call.
   * A Predict that pins a model version names one model exactly: no fallback.
   */
  function candidates(route: ModelRoute, capabilityName: CapabilityName, pinnedVersion = false): readonly ModelRoute[] {
    if (pinnedVersion || route.fallbacks.length === 0) return [route];
    return [route, ...route.fallbacks.filter((f) => f.capabilities.includes(capabilityName))];
  }

  /**
   * A unary answer from the first candidate that gives one. A candidate's failure moves on to the
   * next only when it is an upstream fault after its retries (see allowsFallback); anything else,
   * or the caller leaving, ends the call with that error.
   */
  async function firstAnswer<Req, Res>(
    list: readonly ModelRoute[],
    request: Req,
    run: UpstreamRun,
    ctx: CallContext,
    invoke: (route: ModelRoute, call: ResilientCall<Req>) => Promise<Res>,
  ): Promise<Res> {
    // One candidate (no fallbacks): its answer or its own error, as the loop below would give.
    if (list.length === 1) return invoke(list[0]!, new UnaryUpstreamCall(list[0]!, request, run, ctx));
    const failures: Failure[] = [];
    for (const route of list) {
      if (failures.length > 0 && !timeLeft(run, ctx)) break;
      try {
        return await invoke(route, new UnaryUpstreamCall(route, request, run, ctx));
      } catch (err) {
        if (run.signal.aborted || !allowsFallback(err)) throw err;
        failures.push({ route, err });
      }
    }
    throw exhausted(list[0]!, failures);
  }

  /**
   * The stream of the first candidate that gets its first event out; after that event the stream
   * is committed and its failure is the call's (tokens are never replayed from another model).
   * Each candidate's stream is stamped, cut at its final event, and a stream that ends without
   * one is STREAM_TRUNCATED. One generator for all of it (the upstream's events were a generator
   * of their own inside this one: a layer of promises per event), and the run's signal read once.
   */
  async function* firstStream(
    list: readonly ModelRoute[],
    req: GenerateRequest,
    run: UpstreamRun,
    ctx: CallContext,
  ): AsyncGenerator<GenerateResponse> {
    const failures: Failure[] = [];
    const signal = run.signal;
    for (const route of list) {
      if (failures.length > 0 && !timeLeft(run, ctx)) break;
      let sent = 0;
      try {
        const events = capability(route.upstream, "generate")(upstreamCall(route, req, run, ctx));
        for await (const event of events) {
          if (signal.aborted) signal.throwIfAborted();
          if (sent === 0) streamOrigin.set(event, `${route.name}/${route.upstream.name}`);
          sent++;
          if (event.event.case === "final") {
            stampProvenance(route, event.event.value);
            yield event;
            // The final event is the last one by contract; anything the upstream sends after it
            // is not forwarded.
            return;
          }
          yield event;
        }
        throw new GatewayError(
          Code.Unavailable,
          `upstream "${route.upstream.name}" ended the stream without its final event after ${sent} events`,
          { reason: Reason.StreamTruncated, metadata: { upstream: route.upstream.name } },
        );
      } catch (err) {
        if (sent > 0 || signal.aborted || !allowsFallback(err)) throw err;
        failures.push({ route, err });
      }
    }
    throw exhausted(list[0]!, failures);
  }

  // The signal is read only when the cache goes upstream (a hit never needs it; see isAborted).
  const caller = (ctx: CallContext): CacheCaller => new CallerView(ctx);

  /**
   * Runs a unary call and reports it when it settles. The clock starts before the call does: a
   * call that needs no wait (a cache hit without admission) runs its whole work synchronously.
   */
  function observed<T extends object>(
    rpc: CallRecord["rpc"],
    ctx: CallContext,
    model: string,
    run: () => Promise<T>,
  ): Promise<T> {
    const started = performance.now();
    return run().then(
      (res) => {
        const r = res as { upstream?: string; usage?: { promptTokens: number; completionTokens: number } };
        const err = encodeFailure(ctx, res);
        report(rpc, ctx, model, started, { err, upstream: r.upstream, usage: r.usage });
        if (err !== undefined) throw err;
        return res;
      },
      (err: unknown) => {
        report(rpc, ctx, model, started, { err });
        throw err;
      },
    );
  }

  /**
   * observed and guarded in one async function, for Chat: admission, the operation, and the
   * report once the call has left (the clock starts before admission). The same steps in the same
   * order, without their closures and the promise between them.
   */
  async function unaryCall<Req, T extends object>(
    rpc: CallRecord["rpc"],
    outer: CallContext,
    model: string,
    req: Req,
    op: (req: Req, ctx: CallContext, router: Router) => Promise<T>,
  ): Promise<T> {
    const started = performance.now();
    let res: T;
    try {
      const g = enter(true);
      const { ctx, end } = scoped(outer);
      try {
        throwIfAborted(ctx);
        // Admission gives a promise only when it has something to wait for.
        const admitted = g.runtime.admit?.({ rpc, model, ctx });
        if (admitted !== undefined) await admitted;
        res = await op(req, ctx, g.runtime.router);
      } catch (err) {
        throw failed(abortReasonOr(ctx, err));
      } finally {
        end();
        leave(true, g);
      }
    } catch (err) {
      report(rpc, outer, model, started, { err });
      throw err;
    }
    const r = res as { upstream?: string; usage?: { promptTokens: number; completionTokens: number } };
    const err = encodeFailure(outer, res);
    report(rpc, outer, model, started, { err, upstream: r.upstream, usage: r.usage });
    if (err !== undefined) throw err;
    return res;
  }

  /**
   * Encodes a unary answer for a listener that writes its bytes itself (CallContext.encodeAnswer),
   * before the call is reported; what that throws fails the call, and is what the call is reported
   * and answered with (issue 17: an answer over the listener's message size limit is RESOURCE_EXHAUSTED
   * MESSAGE_TOO_LARGE in the log and the metrics too, not OK). Undefined when it encoded.
   */
  function encodeFailure(ctx: CallContext, res: object): unknown {
    if (ctx.encodeAnswer === undefined) return undefined;
    try {
      ctx.encodeAnswer(res);
      return undefined;
    } catch (err) {
      return failed(err);
    }
  }

  /** One candidate's Chat answer, stamped with the model and upstream that gave it. */
  async function chatFrom(candidate: ModelRoute, call: ResilientCall<ChatInput>): Promise<ChatResponse> {
    return stampProvenance(candidate, await capability(candidate.upstream, "chat")(call));
  }

  async function chatOp(req: ChatRequest, ctx: CallContext, router: Router): Promise<ChatResponse> {
    const route = router.resolve(req.model, "chat");
    validateChatInput(req, requestLimits);
    // With a session, the history goes in front before anything else sees the request.
    const turn = req.sessionId === "" ? undefined : await sessions?.open(req, ctx.tenant);
    const input = turn?.request ?? req;
    const call = (run: UpstreamRun) => firstAnswer(candidates(route, "chat"), input, run, ctx, chatFrom);
    const { value, outcome } = cache === undefined ? { value: await call(ctx), outcome: "bypass" } : await cache.chat(route, input, caller(ctx), call);
    ctx.responseHeaders[cacheHeader] = outcome;
    ctx.responseHeaders[servedByHeader] = `${value.model}/${value.upstream}`;
    // A caller that left meanwhile gets no answer: its turn is not recorded either.
    throwIfAborted(ctx);
    if (turn !== undefined) await turn.commit(value.message);
    return value;
  }

  return {
    predict(req, outer) {
      return observed("Predict", outer, req.model, () => guarded(outer, "Predict", req.model, async (ctx, router) => {
        const route = router.resolve(req.model, "predict");
        validatePredictRequest(req, requestLimits);
        const pinned = req.modelVersion !== undefined;
        const call = (run: UpstreamRun) =>
          firstAnswer(candidates(route, "predict", pinned), req, run, ctx, async (candidate, upstreamCall) => {
            const res = await capability(candidate.upstream, "predict")(upstreamCall);
            res.model = candidate.name;
            res.modelVersion = req.modelVersion ?? candidate.version;
            res.upstream = candidate.upstream.name;
            return res;
          });
        const { value: res, outcome } = cache === undefined ? { value: await call(ctx), outcome: "bypass" } : await cache.predict(route, req, caller(ctx), call);
        ctx.responseHeaders[cacheHeader] = outcome;
        ctx.responseHeaders[servedByHeader] = `${res.model}/${res.upstream}`;
        // The id belongs to this request, not to the answer that may be shared or stored.
        res.id = req.id !== "" ? req.id : randomUUID();
        // The form the caller asked for, converted in bulk after the cache (which keeps the
        // upstream's form for every caller: output_form is not in the key).
        return applyOutputForm(res, req.outputForm);
      }));
    },

    chat(req, outer) {
      return unaryCall("Chat", outer, req.model, req, chatOp);
    },

    async *generate(req, outer) {
      const started = performance.now();
      let ttftMs: number | undefined;
      let final: GenerateFinal | undefined;
      let failure: unknown;
      let scope: ReturnType<typeof scoped> | undefined;
      let g: Generation | undefined;
      try {
        g = enter(true);
        scope = scoped(outer);
        const ctx = scope.ctx;
        throwIfAborted(ctx);
        const admitted = g.runtime.admit?.({ rpc: "Generate", model: req.model, ctx });
        if (admitted !== undefined) await admitted;
        const route = g.runtime.router.resolve(req.model, "generate");
        validateChatInput(req, requestLimits);
        const turn = req.sessionId === "" ? undefined : await sessions?.open(req, ctx.tenant);
        const input = turn?.request ?? req;
        const answer = turn === undefined ? undefined : new AnswerAssembler();
        const list = candidates(route, "generate");
        const { events, outcome } =
          cache === undefined
            ? { events: firstStream(list, input, ctx, ctx), outcome: "bypass" }
            : await cache.generate(route, input, caller(ctx), (run) => firstStream(list, input, run, ctx));
        ctx.responseHeaders[cacheHeader] = outcome;
        let source: AsyncIterable<GenerateResponse> | Iterable<GenerateResponse> = events;
        if (outcome === "hit") {
          // A replay is in memory already: read it through to name, before the first event, the
          // model and upstream its final event says served it.
          const replayed: GenerateResponse[] = [];
          for await (const event of events) replayed.push(event);
          const last = replayed.at(-1)?.event;
          if (last?.case === "final") ctx.responseHeaders[servedByHeader] = `${last.value.model}/${last.value.upstream}`;
          source = replayed;
        }
        for await (const event of source) {
          throwIfAborted(ctx);
          if (ttftMs === undefined) {
            ttftMs = performance.now() - started;
            const origin = streamOrigin.get(event);
            if (origin !== undefined) ctx.responseHeaders[servedByHeader] = origin;
          }
          if (event.event.case === "final") {
            // The turn is recorded before the final event goes out: a stream that ends without
            // it (this one, if recording fails) has failed, and failures leave the session alone.
            if (turn !== undefined) {
              throwIfAborted(ctx);
              await turn.commit(answer?.message());
            }
            final = event.event.value;
          } else {
            answer?.add(event);
          }
          yield event;
        }
      } catch (err) {
        failure = failed(abortReasonOr(scope?.ctx ?? outer, err));
        throw failure;
      } finally {
        if (scope !== undefined && g !== undefined) {
          scope.end();
          leave(true, g);
        }
        // A consumer that stopped reading early (the client went away) is a cancel.
        const err = failure ?? (final === undefined ? outer.signal.reason ?? new GatewayError(Code.Canceled, "the client cancelled the call") : undefined);
        report("Generate", outer, req.model, started, { err, upstream: final?.upstream, usage: final?.usage, ...(ttftMs === undefined ? {} : { ttftMs }) });
      }
    },

    listModels(_req, outer) {
      return observed("ListModels", outer, "", () => guarded(outer, "ListModels", "", async (_ctx, router) => create(ListModelsResponseSchema, {
        models: router.routes().map((r) => ({
          name: r.name,
          version: r.version,
          upstreamKind: r.upstream.kind,
          upstream: r.upstream.name,
          capabilities: r.capabilities.map((c) => capabilityEnum[c]),
          state: r.upstream.modelState?.(r.upstreamModel) ?? ModelState.UNSPECIFIED,
          endpoints: r.upstream.endpointStatus?.(r.upstreamModel) ?? [],
        })),
      })));
    },

    deleteSession(req, outer) {
      return observed("DeleteSession", outer, "", () => guarded(outer, "DeleteSession", "", async (ctx) => {
        if (sessions === undefined) {
          throw new GatewayError(Code.NotFound, "no such session (it may have expired)", { reason: Reason.SessionNotFound });
        }
        await sessions.delete(ctx.tenant, req.sessionId);
        return create(DeleteSessionResponseSchema, {});
      }));
    },

    swap(next) {
      const old = generation;
      generation = { runtime: next, calls: 0 };
      return old.calls === 0 ? Promise.resolve() : new Promise((resolve) => (old.drained = resolve));
    },
    drain() {
      draining = true;
    },
    abortInFlight(reason) {
      for (const link of live) link?.abort(reason);
    },
    inFlight: () => inFlight,
    idle() {
      return inFlight === 0 ? Promise.resolve() : new Promise((resolve) => idleWaiters.push(resolve));
    },
    refused(rpc, ctx, err) {
      report(rpc, ctx, "", performance.now(), { err, undecoded: true });
      return err;
    },
  };
}

/**
 * One unary upstream call, as upstreamCall makes it for a stream, but a class: the caller's
 * headers are built from the request's metadata (about 2.5 µs of a call at concurrency 1) only if
 * the upstream's kind reads them (those that forward some); the others never do. Streams keep the
 * plain object: the resilience wrapper copies theirs per attempt with a spread, which would drop a
 * getter of the prototype.
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

/**
 * The cache's side of a call. A class: an object literal with a getter is built by the runtime
 * property by property (about 1 µs a call); here the getter lives on the prototype.
 */
class CallerView implements CacheCaller {
  readonly deadline: number;
  readonly tenant: string;
  constructor(private readonly ctx: CallContext) {
    this.deadline = ctx.deadline;
    this.tenant = ctx.tenant;
  }
  /** Read only when the cache goes upstream (a hit never needs it; see isAborted). */
  get signal(): AbortSignal {
    return this.ctx.signal;
  }
}

/** One candidate model that failed, for the summary when all have. */
interface Failure {
  readonly route: ModelRoute;
  readonly err: unknown;
}

/** Whether a fallback may still start: the caller is there and its deadline not passed. */
function timeLeft(run: UpstreamRun, ctx: CallContext): boolean {
  return !run.signal.aborted && Date.now() < Math.min(run.deadline, ctx.deadline);
}

/**
 * The error when no candidate served the call. With one candidate, its own error (unchanged: the
 * caller sees what the upstream did). With fallbacks, one UNAVAILABLE naming every model tried,
 * with its upstream and the reason it failed (names only, nothing of the configuration's URLs),
 * and the shortest RetryInfo any of them gave.
 */
function exhausted(requested: ModelRoute, failures: readonly Failure[]): unknown {
  if (failures.length === 1) return failures[0]!.err;
  const reasons = failures.map((f) => ({ route: f.route, reason: f.err instanceof GatewayError ? f.err.reason : Reason.Internal }));
  const delays = failures.flatMap((f) => (f.err instanceof GatewayError && f.err.retryAfterMs !== undefined ? [f.err.retryAfterMs] : []));
  return new GatewayError(
    Code.Unavailable,
    `model "${requested.name}" could not be served; tried ${reasons.map((r) => `${r.route.name} (upstream "${r.route.upstream.name}": ${r.reason})`).join(", ")}`,
    {
      reason: Reason.UpstreamUnavailable,
      metadata: { model: requested.name, tried: failures.map((f) => `${f.route.name}/${f.route.upstream.name}`).join(",") },
      ...(delays.length === 0 ? {} : { retryAfterMs: Math.min(...delays) }),
      cause: new AggregateError(failures.map((f) => f.err), "every candidate model failed"),
    },
  );
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
