import { throwIfAborted } from "../../core/call-context.js";
import type { GatewayCall } from "../gateway-call.js";
import { everyUnary, type Interceptor } from "../interceptor.js";

/**
 * Admission (auth, rate limits, budgets), after the drain step: a call whose caller already left
 * goes no further; then the runtime's admission (src/security/admission.ts, followed by the budget
 * check of src/security/budgets.ts when budgets are configured) sets the tenant or refuses
 * (UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED), before the call is routed. It gives a
 * promise only when it has something to wait for: otherwise the call goes on in the same turn.
 */
export const admissionStep: Interceptor = {
  name: "admission",
  unary: everyUnary((next) => (call) => {
    const wait = admit(call);
    return wait === undefined ? next(call) : admitted(wait, next, call);
  }),
  stream: (next) => (call) => {
    const wait = admit(call);
    return wait === undefined ? next(call) : admitted(wait, next, call);
  },
};

function admit(call: GatewayCall): void | Promise<void> {
  throwIfAborted(call.ctx);
  return call.runtime.admit?.(call);
}

/** The rest of the chain once admission has waited (an async function: no closure per call). */
async function admitted<C, T>(wait: Promise<void>, next: (call: C) => T, call: C): Promise<Awaited<T>> {
  await wait;
  return await next(call);
}
