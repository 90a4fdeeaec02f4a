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
import type { TokenCount } from "../core/upstream.js";
import type { GatewayCall } from "./gateway-call.js";

/** CountTokens' answer: the prompt's count and the upstream that counted it. */
export interface TokenCountAnswer extends TokenCount {
  readonly upstream: string;
}

/** The unary RPCs, each with its request and answer. */
export interface UnaryMessages {
  Predict: [PredictRequest, PredictResponse];
  Chat: [ChatRequest, ChatResponse];
  Embed: [EmbedRequest, EmbedResponse];
  CountTokens: [ChatRequest, TokenCountAnswer];
  ListModels: [ListModelsRequest, ListModelsResponse];
  DeleteSession: [DeleteSessionRequest, DeleteSessionResponse];
}
export type UnaryRpc = keyof UnaryMessages;
export type UnaryCall<R extends UnaryRpc> = GatewayCall<UnaryMessages[R][0]>;

/**
 * The rest of a unary call's chain. It may throw at once rather than reject (routing and
 * validation do): composeUnary's function turns that into the call's rejection.
 */
export type UnaryNext<R extends UnaryRpc> = (call: UnaryCall<R>) => Promise<UnaryMessages[R][1]>;

/** A Generate call (the one streaming RPC). */
export type StreamCall = GatewayCall<GenerateRequest>;
/** A stream's events: an upstream's, a flight's, or a cache hit's read into an array. */
export type Events = AsyncIterable<GenerateResponse> | Iterable<GenerateResponse>;
/** The rest of a stream's chain: what runs before its events, then the events. */
export type StreamNext = (call: StreamCall) => Events | Promise<Events>;

/**
 * One step of the gateway's chain (src/gateway/steps/), in the spirit of connect's
 * `(next) => (req) => …`: the gateway composes the steps once at creation, for each RPC, into
 * one function (src/gateway/gateway.ts), never per call.
 *
 * Unary calls: `unary[rpc]` wraps the rest of the chain of that RPC; a step leaves out the RPCs
 * it has no part in, and is then not in their chain at all (no call through it).
 *
 * Streams: `stream` wraps what runs before the events (it may refuse, wait, change the call or
 * replace the events); a step's work on the events themselves is `event`, which the one loop that
 * carries the events calls for every step. Steps do not wrap the events in a generator each:
 * every layer an event crosses costs a promise and a wait per event, and what a held stream keeps
 * alive (docs/benchmarks.md, "Issue 16: streams").
 *
 * Both: a step's work once the call has ended (release it, report it) is `end`, run by the one
 * async function (unary) or loop (stream) the chain composes into, not by an async function of
 * the step's own around the rest: each such layer costs a promise and a turn per call, and the
 * steps that only act before and after a call (call record, drain) need none.
 */
export interface Interceptor {
  /** What the step is, for tests and the order in src/gateway/gateway.ts. */
  readonly name: string;
  readonly unary?: { readonly [R in UnaryRpc]?: (next: UnaryNext<R>) => UnaryNext<R> };
  readonly stream?: (next: StreamNext) => StreamNext;
  /**
   * Each event of a stream this step took part in, before it goes out; innermost step first (as
   * if each wrapped the events). Throws to fail the stream; returns a promise only to hold the
   * event (a session's turn is recorded before the final event goes out).
   */
  event?(call: StreamCall, event: GenerateResponse): void | Promise<void>;
  /**
   * Once a call has ended, however it ended; innermost step first, after the chain has settled.
   * `err` is its failure (undefined when it succeeded, or when a stream's consumer stopped
   * reading), `answer` a unary call's answer; returns the failure to go on with (the same, none,
   * or another: encoding the answer may fail). Called for every call of the RPCs the step takes
   * part in, also one refused before it reached the step: a step tells from its own state on the
   * call what it did.
   */
  end?(call: GatewayCall, err: unknown, answer: object | undefined): unknown;
}

/**
 * A step's `unary` for every unary RPC, from one wrapper that is told which RPC it wraps (at
 * creation, not per call).
 */
export function everyUnary(wrap: <R extends UnaryRpc>(next: UnaryNext<R>, rpc: R) => UnaryNext<R>): NonNullable<Interceptor["unary"]> {
  return {
    Predict: (next) => wrap(next, "Predict"),
    Chat: (next) => wrap(next, "Chat"),
    Embed: (next) => wrap(next, "Embed"),
    CountTokens: (next) => wrap(next, "CountTokens"),
    ListModels: (next) => wrap(next, "ListModels"),
    DeleteSession: (next) => wrap(next, "DeleteSession"),
  };
}

/**
 * The chain of one unary RPC: `steps` (outermost first) around `handler`, in one async function
 * that then runs the `end` of the steps that take part in the RPC: whatever a step throws, at
 * once or later, becomes the call's rejection. Without any `end`, the chain as it is.
 */
export function composeUnary<R extends UnaryRpc>(steps: readonly Interceptor[], rpc: R, handler: UnaryNext<R>): UnaryNext<R> {
  let chain = handler;
  const onEnd: ((call: GatewayCall, err: unknown, answer: object | undefined) => unknown)[] = [];
  for (let i = steps.length - 1; i >= 0; i--) {
    const step = steps[i]!;
    const wrap = step.unary?.[rpc];
    if (wrap === undefined) continue;
    chain = wrap(chain);
    if (step.end !== undefined) onEnd.push(step.end.bind(step));
  }
  if (onEnd.length === 0) return chain;
  const start = chain;
  return async function unary(call) {
    let answer: UnaryMessages[R][1] | undefined;
    let failure: unknown;
    let failed = false;
    try {
      answer = await start(call);
    } catch (err) {
      failure = err;
      failed = true;
    }
    for (let i = 0; i < onEnd.length; i++) failure = onEnd[i]!(call, failure, answer);
    if (failed || failure !== undefined) throw failure;
    return answer!;
  };
}

/** The events of a stream, as the listener reads them; what a stream's chain composes into. */
export type StreamHandler = (call: StreamCall) => AsyncGenerator<GenerateResponse, void, undefined>;

/**
 * The chain of Generate: `steps` (outermost first, those with a `stream`) around `handler`, and
 * the one loop that carries the events through their `event` hooks and ends with their `end`
 * hooks. A consumer that stops reading (`return()`) ends the stream without a failure; one that
 * throws into it (`throw(err)`: an event too large for the listener) fails it with `err`.
 */
export function composeStream(steps: readonly Interceptor[], handler: StreamNext): StreamHandler {
  let setup = handler;
  const onEvent: ((call: StreamCall, event: GenerateResponse) => void | Promise<void>)[] = [];
  const onEnd: ((call: GatewayCall, err: unknown, answer: object | undefined) => unknown)[] = [];
  for (let i = steps.length - 1; i >= 0; i--) {
    const step = steps[i]!;
    if (step.stream === undefined) continue;
    setup = step.stream(setup);
    if (step.event !== undefined) onEvent.push(step.event.bind(step));
    if (step.end !== undefined) onEnd.push(step.end.bind(step));
  }
  const start = setup;
  return async function* stream(call) {
    let failure: unknown;
    let failed = false;
    try {
      const ready = start(call);
      const events = ready instanceof Promise ? await ready : ready;
      for await (const event of events) {
        call.events++;
        for (let i = 0; i < onEvent.length; i++) {
          const held = onEvent[i]!(call, event);
          if (held !== undefined) await held;
        }
        yield event;
      }
    } catch (err) {
      failure = err;
      failed = true;
    } finally {
      // Also after return(): the stream's end is told to every step before the generator closes.
      for (let i = 0; i < onEnd.length; i++) failure = onEnd[i]!(call, failure, undefined);
    }
    if (failed) throw failure;
  };
}
