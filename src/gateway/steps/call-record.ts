import { Code } from "@connectrpc/connect";
import type { Usage } from "../../../gen/infergate/v1/chat_pb.js";
import type { CallContext } from "../../core/call-context.js";
import { GatewayError, toGatewayError } from "../../core/gateway-error.js";
import type { CallObserver } from "../../observability/call-record.js";
import type { Rpc } from "../../core/rpc.js";
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
export function callRecordStep(onCall: CallObserver | undefined, logFailure: (err: unknown) => unknown): CallRecordStep {
  function report(
    rpc: Rpc,
    ctx: CallContext,
    model: string,
    started: number,
    err: unknown,
    answer: Reported | undefined,
    ttftMs: number | undefined,
    undecoded: true | undefined,
  ): void {
    if (onCall === undefined) return;
    const e = err === undefined ? undefined : toGatewayError(err);
    onCall({
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
      undecoded,
    });
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
      return next(call);
    }),
    stream: (next) => (call) => {
      call.started = performance.now();
      return next(call);
    },
    event(call, event) {
      if (call.ttftMs === undefined) call.ttftMs = performance.now() - call.started;
      if (event.event.case === "final") call.final = event.event.value;
    },
    end(call, err, answer) {
      if (call.rpc !== "Generate") {
        const failure = err ?? (answer === undefined ? undefined : encodeFailure(call.outer, answer));
        report(call.rpc, call.outer, call.model, call.started, failure, answer as Reported | undefined, undefined, undefined);
        return failure;
      }
      const final = call.final;
      // A consumer that stopped reading early (the client went away) is a cancel.
      const outcome = err ?? (final === undefined ? call.outer.signal.reason ?? new GatewayError(Code.Canceled, "the client cancelled the call") : undefined);
      report("Generate", call.outer, call.model, call.started, outcome, final, call.ttftMs, undefined);
      return err;
    },
    refused(rpc, ctx, err) {
      report(rpc, ctx, "", performance.now(), err, undefined, undefined, true);
      return err;
    },
  };
}
