import { throwIfAborted, type CallContext } from "../../core/call-context.js";
import { GatewayError } from "../../core/gateway-error.js";
import { isModelCall } from "../../core/rpc.js";
import type { GatewayCall } from "../gateway-call.js";
import { everyUnary, type Interceptor } from "../interceptor.js";
import { type Lifecycle, LinkedContext } from "../lifecycle.js";

/**
 * Drain, the first step after the call record: refuses calls while the gateway drains and, for
 * model calls, over `server.maxConcurrentCalls` (src/gateway/lifecycle.ts); pins the runtime
 * (routes, admission) the call runs under until it leaves; registers it for abortInFlight; and
 * checks before each event of a stream that the call is still wanted. The refusals here are not
 * the call's failures: reported by the call record, not logged. Whatever fails once the call is
 * in is answered with the abort's reason if the call was aborted (what the upstream threw then is
 * a consequence), and logged when server-side (steps/failure-log.ts).
 */
export function drainStep(lifecycle: Lifecycle, logFailure: (err: unknown) => unknown): Interceptor {
  function enter(call: GatewayCall, limited: boolean): void {
    const g = lifecycle.enter(limited);
    call.generation = g;
    call.runtime = g.runtime;
    const ctx = call.outer;
    if (ctx.abort !== undefined) {
      // The context itself is the entry (its abort is a method): no AbortSignal, listener or
      // view of its own (about 10 µs a call).
      call.slot = lifecycle.register(ctx);
    } else {
      const view = new LinkedContext(ctx);
      call.ctx = view;
      call.slot = lifecycle.register(view);
    }
  }

  function release(call: GatewayCall, limited: boolean, g: NonNullable<GatewayCall["generation"]>): void {
    lifecycle.unregister(call.slot);
    if (call.ctx instanceof LinkedContext) call.ctx.dispose();
    lifecycle.leave(limited, g);
  }

  function failure(ctx: CallContext, err: unknown): unknown {
    return logFailure(ctx.signal.aborted && ctx.signal.reason instanceof GatewayError ? ctx.signal.reason : err);
  }

  return {
    name: "drain",
    unary: everyUnary((next, rpc) => {
      const limited = isModelCall(rpc);
      return (call) => {
        enter(call, limited);
        return next(call);
      };
    }),
    stream: (next) => (call) => {
      enter(call, true);
      return next(call);
    },
    event(call) {
      throwIfAborted(call.ctx);
    },
    end(call, err) {
      const g = call.generation;
      // Refused here (or never reached): nothing to release, nothing of the call's to log.
      if (g === undefined) return err;
      const e = err === undefined ? undefined : failure(call.ctx, err);
      release(call, isModelCall(call.rpc), g);
      return e;
    },
  };
}
