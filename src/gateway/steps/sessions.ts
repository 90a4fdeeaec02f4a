import { throwIfAborted } from "../../core/call-context.js";
import { AnswerAssembler, type Sessions } from "../../sessions/sessions.js";
import type { Interceptor, StreamCall, StreamNext, UnaryCall, UnaryNext } from "../interceptor.js";

/**
 * Sessions, after the route step, for Chat and Generate calls that name a `session_id` (the
 * gateway leaves the step out without a session store: the id is then ignored): the session's
 * history goes in front of the request before the cache or an upstream sees it, so the cache key
 * covers the whole conversation; the turn is recorded only once the call has succeeded, so a
 * failed, cut-off or cancelled call leaves the session as it was.
 */
export function sessionsStep(sessions: Sessions): Interceptor {
  /** A Chat with a session: its turn recorded once the answer is back. */
  async function chatTurn(call: UnaryCall<"Chat">, next: UnaryNext<"Chat">) {
    const turn = await sessions.open(call.request, call.ctx.tenant);
    if (turn !== undefined) call.request = turn.request;
    const res = await next(call);
    // The cache step has checked that the caller is still there: one that left gets no answer,
    // and its turn is not recorded either.
    if (turn !== undefined) await turn.commit(res.message);
    return res;
  }

  /** A Generate with a session: its answer assembled from the events (see `event`). */
  async function streamTurn(call: StreamCall, next: StreamNext) {
    const turn = await sessions.open(call.request, call.ctx.tenant);
    if (turn !== undefined) {
      call.request = turn.request;
      call.turn = turn;
      call.answer = new AnswerAssembler();
    }
    return next(call);
  }

  return {
    name: "sessions",
    unary: {
      Chat: (next) => (call) => (call.request.sessionId === "" ? next(call) : chatTurn(call, next)),
    },
    stream: (next) => (call) => (call.request.sessionId === "" ? next(call) : streamTurn(call, next)),
    event(call, event) {
      const turn = call.turn;
      if (turn === undefined) return;
      if (event.event.case !== "final") {
        call.answer!.add(event);
        return;
      }
      // The turn is recorded before the final event goes out: a stream that ends without it
      // (this one, if recording fails) has failed, and failures leave the session alone.
      throwIfAborted(call.ctx);
      return turn.commit(call.answer!.message());
    },
  };
}
