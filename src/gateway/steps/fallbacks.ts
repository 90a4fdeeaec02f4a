import { Code } from "@connectrpc/connect";
import type { ChatResponse, GenerateResponse } from "../../../gen/infergate/v1/inference_service_pb.js";
import type { UpstreamRun } from "../../cache/response-cache.js";
import type { CapabilityName } from "../../config/schema.js";
import type { CallContext } from "../../core/call-context.js";
import { missingFinalEvent } from "../../core/final-event.js";
import { GatewayError, Reason } from "../../core/gateway-error.js";
import type { ModelRoute } from "../../core/model-route.js";
import { allowsFallback } from "../../resilience/failure-policy.js";
import type { Interceptor, StreamCall, StreamNext, UnaryCall, UnaryMessages, UnaryNext } from "../interceptor.js";
import { markOrigin, stampProvenance } from "./provenance.js";

/**
 * Fallbacks, the last step before the upstream: the call goes to its model (`call.candidate`),
 * then, when that one's upstream fails with a fault its retries could not fix (allowsFallback),
 * to the model's fallbacks that serve the call, in order, while the caller is there and its
 * deadline not passed. Anything else, or the caller leaving, ends the call with that error. The
 * answer is stamped with the model and upstream that gave it. A stream is committed to a model by
 * its first event: after it, the stream's failure is the call's (tokens are never replayed from
 * another model).
 */
export const fallbacksStep: Interceptor = {
  name: "fallbacks",
  unary: {
    Predict: (next) => (call) => {
      const route = call.route;
      // A Predict that pins a model version names one model exactly: no fallback.
      if (call.request.modelVersion !== undefined || route.fallbacks.length === 0) return pinnedFrom(route, call, next);
      return firstAnswer(candidates(route, "predict"), call, next, pinnedFrom);
    },
    Chat: (next) => (call) => {
      const route = call.route;
      if (route.fallbacks.length === 0) return chatFrom(route, call, next);
      return firstAnswer(candidates(route, "chat"), call, next, chatFrom);
    },
    Embed: (next) => (call) => {
      const route = call.route;
      // A pinned model version names one model exactly: no fallback (as Predict).
      if (call.request.modelVersion !== undefined || route.fallbacks.length === 0) return pinnedFrom(route, call, next);
      return firstAnswer(candidates(route, "embed"), call, next, pinnedFrom);
    },
  },
  stream: (next) => (call) => firstStream(candidates(call.route, "generate"), call, call.run, next),
};

/** The route, then its fallbacks that serve the call. */
function candidates(route: ModelRoute, capability: CapabilityName): readonly ModelRoute[] {
  if (route.fallbacks.length === 0) return [route];
  return [route, ...route.fallbacks.filter((f) => f.capabilities.includes(capability))];
}

/**
 * One candidate's Predict or Embed answer, stamped with the model and upstream that gave it and
 * the version the caller pinned, if it did (both requests can pin one).
 */
async function pinnedFrom<R extends "Predict" | "Embed">(candidate: ModelRoute, call: UnaryCall<R>, next: UnaryNext<R>): Promise<UnaryMessages[R][1]> {
  call.candidate = candidate;
  const res = await next(call);
  res.model = candidate.name;
  res.modelVersion = (call.request as UnaryMessages[R][0]).modelVersion ?? candidate.version;
  res.upstream = candidate.upstream.name;
  return res;
}

/** One candidate's Chat answer, stamped with the model and upstream that gave it. */
async function chatFrom(candidate: ModelRoute, call: UnaryCall<"Chat">, next: UnaryNext<"Chat">): Promise<ChatResponse> {
  call.candidate = candidate;
  return stampProvenance(candidate, await next(call));
}

/** The answer of the first candidate that gives one. */
async function firstAnswer<C extends UnaryCall<"Predict"> | UnaryCall<"Chat"> | UnaryCall<"Embed">, N, Res>(
  list: readonly ModelRoute[],
  call: C,
  next: N,
  from: (candidate: ModelRoute, call: C, next: N) => Promise<Res>,
): Promise<Res> {
  const run = call.run;
  const failures: Failure[] = [];
  for (const route of list) {
    if (failures.length > 0 && !timeLeft(run, call.ctx)) break;
    try {
      return await from(route, call, next);
    } catch (err) {
      if (run.signal.aborted || !allowsFallback(err)) throw err;
      failures.push({ route, err });
    }
  }
  throw exhausted(list[0]!, failures);
}

/**
 * The stream of the first candidate that gets its first event out. Each candidate's stream is
 * stamped, cut at its final event, and a stream that ends without one is STREAM_TRUNCATED. One
 * generator for all of it (a generator per candidate inside it was a layer of promises per
 * event), and the run's signal read once.
 */
async function* firstStream(list: readonly ModelRoute[], call: StreamCall, run: UpstreamRun, next: StreamNext): AsyncGenerator<GenerateResponse> {
  const failures: Failure[] = [];
  const signal = run.signal;
  for (const route of list) {
    if (failures.length > 0 && !timeLeft(run, call.ctx)) break;
    let sent = 0;
    try {
      call.candidate = route;
      const ready = next(call);
      const events = ready instanceof Promise ? await ready : ready;
      for await (const event of events) {
        if (signal.aborted) signal.throwIfAborted();
        if (sent === 0) markOrigin(event, route);
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
      throw missingFinalEvent(route.upstream.name, sent);
    } catch (err) {
      if (sent > 0 || signal.aborted || !allowsFallback(err)) throw err;
      failures.push({ route, err });
    }
  }
  throw exhausted(list[0]!, failures);
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
