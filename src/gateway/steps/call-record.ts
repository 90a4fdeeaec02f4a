import { Code } from "@connectrpc/connect";
import type { Usage } from "../../../gen/infergate/v1/chat_pb.js";
import type { CallContext } from "../../core/call-context.js";
import { GatewayError, toGatewayError } from "../../core/gateway-error.js";
import type { ModelRoute } from "../../core/model-route.js";
import type { CallObserver, CallRecord } from "../../observability/call-record.js";
import type { ServerSpan, Tracing } from "../../observability/tracing.js";
import { callCost, formatCost } from "../../observability/cost.js";
import type { Rpc } from "../../core/rpc.js";
import type { GatewayCall } from "../gateway-call.js";
import { everyUnary, type Interceptor } from "../interceptor.js";
import { cacheHeader } from "./cache.js";

/**
 * An answer's fields the record reads: every answer that has a `usage` has this one (Chat, a
 * Generate stream's final event, Embed's prompt tokens); ListModels and DeleteSession have neither.
 */
interface Reported {
  readonly upstream?: string;
  readonly usage?: Usage | undefined;
}

/**
 * The response header (a unary call's) and trailer (Generate's) with the call's cost: the amount
 * and the currency (`0.000123 USD`), or `unpriced` (src/observability/cost.ts, formatCost).
 */
export const costHeader = "infergate-cost";

/** What a call cost, at the price of which model (see CallRecord). */
interface Priced {
  readonly cost: number | undefined;
  readonly currency: string;
  readonly pricedModel: string | undefined;
}

/** The call record step, and the report of a call refused before the gateway saw it. */
export interface CallRecordStep extends Interceptor {
  /** See Gateway.refused. */
  refused(rpc: Rpc, ctx: CallContext, err: GatewayError): GatewayError;
}

/**
 * Call record (log + metrics), the outermost step: the clock starts before the drain step admits
 * the call, and every call is reported once it has ended (`onCall`: the per-call log line and the
 * metrics), also those refused at the door (draining, overloaded, unauthenticated). A unary
 * answer is encoded (CallContext.encodeAnswer) before it is reported, so that the latency includes
 * the encoding and an answer the listener cannot send is reported and answered as the failure it
 * is (issue 17: over the listener's message size limit, RESOURCE_EXHAUSTED MESSAGE_TOO_LARGE).
 * A stream is reported with its time to first event, and as cancelled when its consumer stopped
 * reading before the final event (the client went away).
 */
export function callRecordStep(
  onCall: CallObserver | undefined,
  logFailure: (err: unknown) => unknown,
  /** The configured currency (of the configuration now in force): that of a call without a model. */
  currency: () => string = () => "USD",
  /** Tracing, when on: each call's server span (src/observability/tracing.ts). */
  tracing?: Tracing,
): CallRecordStep {
  /** Starts the call's server span, continuing the caller's trace; the layers below find it on ctx.trace. */
  function startSpan(call: GatewayCall): void {
    const ctx = call.outer;
    ctx.trace.span = tracing!.startCall(call.rpc, ctx);
  }

  /** Whether the call's request names a conversation session (Chat, Generate), for its span. */
  function hasSession(call: GatewayCall): boolean {
    const id = (call.request as { sessionId?: unknown }).sessionId;
    return typeof id === "string" && id !== "";
  }

  /**
   * A call's cost at the price of the model that answered it: the fallbacks step's candidate (the
   * last one tried), else the model asked for (an answer from the cache: nothing was tried). Only
   * what went upstream and came back costs: no attempt (cache hit, coalesced, refused) or no usage
   * (a failure) is 0. The cost goes into the `infergate-cost` header (the listeners send a
   * Generate's as a trailer, as it is set once the stream has ended).
   */
  function priced(call: GatewayCall, usage: Usage | undefined): Priced {
    const route = (call.candidate as ModelRoute | undefined) ?? (call.route as ModelRoute | undefined);
    let p: Priced;
    if (route === undefined) p = { cost: 0, currency: currency(), pricedModel: undefined };
    else if (route.price === undefined) p = { cost: undefined, currency: route.currency, pricedModel: route.name };
    else {
      const billed = usage !== undefined && call.outer.trace.attempts > 0;
      p = { cost: billed ? callCost(route.price, usage, call.rpc === "Embed") : 0, currency: route.currency, pricedModel: route.name };
    }
    call.outer.responseHeaders[costHeader] = formatCost(p.cost, p.currency);
    return p;
  }

  function report(
    rpc: Rpc,
    ctx: CallContext,
    model: string,
    started: number,
    err: unknown,
    answer: Reported | undefined,
    ttftMs: number | undefined,
    undecoded: true | undefined,
    price: Priced,
    usageEstimated: true | undefined,
    call?: GatewayCall,
  ): void {
    // Set by this step only (startSpan, refused): the server span tracing.startCall made.
    const span = ctx.trace.span as ServerSpan | undefined;
    if (onCall === undefined && span === undefined) return;
    const e = err === undefined ? undefined : toGatewayError(err);
    const record: CallRecord = {
      rpc,
      requestId: ctx.requestId,
      tenant: ctx.tenant,
      model,
      upstream: answer?.upstream,
      endpoint: ctx.trace.endpoint,
      attempts: ctx.trace.attempts,
      cache: ctx.responseHeaders[cacheHeader],
      code: e?.code ?? 0,
      reason: e?.reason,
      latencyMs: performance.now() - started,
      ttftMs,
      promptTokens: answer?.usage?.promptTokens ?? 0,
      completionTokens: answer?.usage?.completionTokens ?? 0,
      cachedPromptTokens: answer?.usage?.cachedPromptTokens ?? 0,
      cacheCreationTokens: answer?.usage?.cacheCreationTokens ?? 0,
      reasoningTokens: answer?.usage?.reasoningTokens ?? 0,
      usageEstimated,
      cost: price.cost,
      currency: price.currency,
      pricedModel: price.pricedModel,
      undecoded,
      traceId: span?.traceId,
    };
    onCall?.(record);
    span?.end(record, answer, call !== undefined && hasSession(call));
  }

  /** What encoding a unary answer for the listener threw (logged), or undefined when it encoded. */
  function encodeFailure(ctx: CallContext, res: object): unknown {
    if (ctx.encodeAnswer === undefined) return undefined;
    try {
      ctx.encodeAnswer(res);
      return undefined;
    } catch (err) {
      return logFailure(err);
    }
  }

  return {
    name: "call record",
    unary: everyUnary((next) => (call) => {
      call.started = performance.now();
      if (tracing !== undefined) startSpan(call);
      return next(call);
    }),
    stream: (next) => (call) => {
      call.started = performance.now();
      if (tracing !== undefined) startSpan(call);
      return next(call);
    },
    event(call, event) {
      if (call.ttftMs === undefined) call.ttftMs = performance.now() - call.started;
      if (event.event.case === "final") call.final = event.event.value;
    },
    end(call, err, answer) {
      if (call.rpc !== "Generate") {
        const reported = answer as Reported | undefined;
        // Priced before the answer is encoded: the header goes out with it.
        const price = priced(call, reported?.usage);
        const failure = err ?? (answer === undefined ? undefined : encodeFailure(call.outer, answer));
        report(call.rpc, call.outer, call.model, call.started, failure, reported, undefined, undefined, price, undefined, call);
        return failure;
      }
      let final: Reported | undefined = call.final;
      // A stream cut off after events has no usage: an estimate instead (CallRecord.usageEstimated).
      const estimated = final === undefined && call.events > 0 ? true : undefined;
      if (estimated) final = { usage: estimatedUsage(call.events) };
      // A consumer that stopped reading early (the client went away) is a cancel.
      const outcome = err ?? (call.final === undefined ? call.outer.signal.reason ?? new GatewayError(Code.Canceled, "the client cancelled the call") : undefined);
      report("Generate", call.outer, call.model, call.started, outcome, final, call.ttftMs, undefined, priced(call, final?.usage), estimated, call);
      return err;
    },
    refused(rpc, ctx, err) {
      if (tracing !== undefined) ctx.trace.span = tracing.startCall(rpc, ctx);
      const price: Priced = { cost: 0, currency: currency(), pricedModel: undefined };
      ctx.responseHeaders[costHeader] = formatCost(price.cost, price.currency);
      report(rpc, ctx, "", performance.now(), err, undefined, undefined, true, price, undefined);
      return err;
    },
  };
}

/**
 * The usage of a stream cut off after `events` text and tool-call deltas (its final event never
 * came): a token per delta, as the upstream kinds give about one a delta, and no prompt tokens,
 * which only the upstream knows.
 */
function estimatedUsage(events: number): Usage {
  return { promptTokens: 0, completionTokens: events, totalTokens: events, cachedPromptTokens: 0, cacheCreationTokens: 0, reasoningTokens: 0 } as Usage;
}
