import type { GenerateFinal } from "../../gen/infergate/v1/inference_service_pb.js";
import type { CacheCaller, EmbedOutcome, UpstreamRun } from "../cache/response-cache.js";
import type { CallContext } from "../core/call-context.js";
import type { ChatInput } from "../core/upstream.js";
import type { ModelRoute } from "../core/model-route.js";
import type { Admission, Rpc } from "../core/rpc.js";
import type { AnswerAssembler, SessionTurn } from "../sessions/sessions.js";
import type { Router } from "./router.js";

/**
 * What a configuration reload replaces in the core: the routes (with the upstreams they hold) and
 * the admission in front of them. One reference, swapped in one assignment.
 */
export interface Runtime {
  readonly router: Router;
  readonly admit?: Admission | undefined;
}

/** A runtime and the calls in flight that started under it (src/gateway/lifecycle.ts). */
export interface Generation {
  readonly runtime: Runtime;
  calls: number;
  /** Set by swap once replaced: called when its last call has left. */
  drained?: () => void;
}

/**
 * One call as the interceptors (src/gateway/steps/) see it: made once per call by the gateway's
 * method, then handed down the chain. It holds each step's state of the call in a field of its
 * own, set by that step, rather than an object or closure per step and call (a Chat's
 * allocations are what its CPU goes to beside the two stacks: docs/benchmarks.md). It is also the
 * cache's view of the caller (CacheCaller): getters on the prototype, no view object per call.
 */
export class GatewayCall<Req = unknown> implements CacheCaller {
  /**
   * The context the steps use: the listener's (`outer`), or, for one that cannot abort itself, the
   * drain step's view of it that abortInFlight can abort (src/gateway/lifecycle.ts).
   */
  ctx: CallContext;
  /** The request as it goes on: the sessions step puts the session's history in front. */
  request: Req;

  /** Drain step: the generation the call entered, undefined until admitted or when refused there. */
  generation: Generation | undefined = undefined;
  /** Drain step: the routes and admission of that generation. */
  runtime!: Runtime;
  /** Drain step: the call's slot in the abortInFlight registry. */
  slot = -1;
  /** Route step: the model the call asked for (model calls only). */
  route!: ModelRoute;
  /** Sessions step: a stream's turn in its session, when it names one. */
  turn: SessionTurn<ChatInput> | undefined = undefined;
  /** Sessions step: the answer of that stream, assembled from its events. */
  answer: AnswerAssembler | undefined = undefined;
  /** Cache step: where the upstream call runs (the caller's signal, or a shared flight's). */
  run!: UpstreamRun;
  /** Embed's handler: what the cache did for the inputs (hit, miss, partial, coalesced, bypass). */
  embedOutcome: EmbedOutcome = "bypass";
  /** Fallbacks step: the model tried now (the route, or one of its fallbacks). */
  candidate!: ModelRoute;
  /** Call record step: when the call started (performance.now()). */
  started = 0;
  /** Call record step: a stream's time to its first event. */
  ttftMs: number | undefined = undefined;
  /** Call record step: a stream's final event, once it has passed. */
  final: GenerateFinal | undefined = undefined;
  /** The stream loop (src/gateway/interceptor.ts): events given out so far. */
  events = 0;

  constructor(
    readonly rpc: Rpc,
    /** The model asked for ("" for ListModels and DeleteSession). */
    readonly model: string,
    request: Req,
    /** The listener's context: the one the call record reads and the listener sends headers from. */
    readonly outer: CallContext,
  ) {
    this.request = request;
    this.ctx = outer;
  }

  /** CacheCaller: read only when the cache goes upstream (a hit never needs it; see isAborted). */
  get signal(): AbortSignal {
    return this.ctx.signal;
  }

  get deadline(): number {
    return this.ctx.deadline;
  }

  get tenant(): string {
    return this.ctx.tenant;
  }
}
