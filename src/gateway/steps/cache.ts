import type { ChatRequest, ChatResponse, GenerateResponse, PredictRequest, PredictResponse } from "../../../gen/infergate/v1/inference_service_pb.js";
import type { CacheCaller, CacheOutcome, ResponseCache, UpstreamRun } from "../../cache/response-cache.js";
import { throwIfAborted } from "../../core/call-context.js";
import type { ModelRoute } from "../../core/model-route.js";
import type { GatewayCall } from "../gateway-call.js";
import type { Events, Interceptor, StreamCall, StreamNext } from "../interceptor.js";
import { originOf, servedByHeader } from "./provenance.js";

/** Response header that tells what the cache did: hit, miss, coalesced or bypass. */
export const cacheHeader = "infergate-cache";

/**
 * Cache, after sessions, for the model calls: an answer from the cache (src/cache/response-cache.ts),
 * or from the rest of the chain (fallbacks, upstream) run once for every identical call in flight
 * (`call.run`: the caller's signal and deadline, or a shared flight's). The answer's headers say
 * what the cache did and which model and upstream served it. Without a cache every call bypasses
 * it, and says so.
 */
export function cacheStep(cache: ResponseCache | undefined): Interceptor {
  /** A Generate through the cache; a hit's events are read through first (see below). */
  async function cachedStream(cache: ResponseCache, call: StreamCall, next: StreamNext): Promise<Events> {
    const { events, outcome } = await cache.generate(call.route, call.request, call, (run) => {
      call.run = run;
      return now(next(call));
    });
    call.ctx.responseHeaders[cacheHeader] = outcome;
    if (outcome !== "hit") return events;
    // A replay is in memory already: read it through to name, before the first event, the model
    // and upstream its final event says served it.
    const replayed: GenerateResponse[] = [];
    for await (const event of events) replayed.push(event);
    const last = replayed.at(-1)?.event;
    if (last?.case === "final") call.ctx.responseHeaders[servedByHeader] = `${last.value.model}/${last.value.upstream}`;
    return replayed;
  }

  return {
    name: "cache",
    unary: {
      Predict: (next) => throughCache(cache, predictLookup, next, false),
      // A caller that left meanwhile gets no Chat answer (nor is its session's turn recorded).
      Chat: (next) => throughCache(cache, chatLookup, next, true),
      // Embed is cached input by input per candidate model, by its handler (src/gateway/handlers.ts);
      // the caller's run is its own, and the headers say what the cache did.
      Embed: (next) => async (call) => {
        call.run = call.ctx;
        const value = await next(call);
        const headers = call.ctx.responseHeaders;
        headers[cacheHeader] = call.embedOutcome;
        headers[servedByHeader] = `${value.model}/${value.upstream}`;
        throwIfAborted(call.ctx);
        return value;
      },
    },
    stream: (next) => (call) => {
      if (cache !== undefined) return cachedStream(cache, call, next);
      call.run = call.ctx;
      call.ctx.responseHeaders[cacheHeader] = "bypass";
      return next(call);
    },
    event(call, event) {
      if (call.events !== 1) return;
      const origin = originOf(event);
      if (origin !== undefined) call.ctx.responseHeaders[servedByHeader] = origin;
    },
  };
}

/** A cache's lookup of one unary RPC (ResponseCache.predict, .chat). */
type Lookup<Req, Res> = (
  cache: ResponseCache,
  route: ModelRoute,
  req: Req,
  caller: CacheCaller,
  call: (run: UpstreamRun) => Promise<Res>,
) => Promise<{ value: Res; outcome: CacheOutcome }>;

/**
 * A unary call through the cache's `lookup`, or past it without a cache; the answer's headers.
 * With `callerLeft`, a caller that left while the answer came gets none.
 */
const predictLookup: Lookup<PredictRequest, PredictResponse> = (cache, route, req, caller, call) => cache.predict(route, req, caller, call);
const chatLookup: Lookup<ChatRequest, ChatResponse> = (cache, route, req, caller, call) => cache.chat(route, req, caller, call);

function throughCache<Req, Res extends { model: string; upstream: string }>(
  cache: ResponseCache | undefined,
  lookup: Lookup<Req, Res>,
  next: (call: GatewayCall<Req>) => Promise<Res>,
  callerLeft: boolean,
): (call: GatewayCall<Req>) => Promise<Res> {
  return async (call) => {
    let value: Res;
    let outcome: CacheOutcome;
    if (cache === undefined) {
      call.run = call.ctx;
      value = await next(call);
      outcome = "bypass";
    } else {
      ({ value, outcome } = await lookup(cache, call.route, call.request, call, (run) => {
        call.run = run;
        return next(call);
      }));
    }
    const headers = call.ctx.responseHeaders;
    headers[cacheHeader] = outcome;
    headers[servedByHeader] = `${value.model}/${value.upstream}`;
    if (callerLeft) throwIfAborted(call.ctx);
    return value;
  };
}

/** Events the cache can read at once (the steps after it give them so; this is for any other). */
function now(events: Events | Promise<Events>): AsyncIterable<GenerateResponse> {
  if (!(events instanceof Promise) && Symbol.asyncIterator in events) return events;
  return (async function* later() {
    yield* await events;
  })();
}
