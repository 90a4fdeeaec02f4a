import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import type { CallContext } from "../../../src/core/call-context.js";
import { GatewayError, Reason } from "../../../src/core/gateway-error.js";
import { Lifecycle, LinkedContext } from "../../../src/gateway/lifecycle.js";
import { plainContext, runtime } from "./helpers.js";

const shuttingDown = new GatewayError(Code.Unavailable, "shutting down", { reason: Reason.ShuttingDown });

describe("Lifecycle", () => {
  it("refuses while draining, and over the concurrency limit only calls that count against it", () => {
    const life = new Lifecycle(runtime([]), 1);
    const g = life.enter(true);
    expect(() => life.enter(true)).toThrow(expect.objectContaining({ code: Code.ResourceExhausted, reason: Reason.Overloaded }));
    const unlimited = life.enter(false);
    expect(life.inFlight()).toBe(2);
    life.leave(false, unlimited);
    life.leave(true, g);
    life.drain();
    expect(() => life.enter(false)).toThrow(expect.objectContaining({ code: Code.Unavailable, reason: Reason.ShuttingDown }));
    expect(life.inFlight()).toBe(0);
  });

  it("idle resolves once the last call has left", async () => {
    const life = new Lifecycle(runtime([]), undefined);
    await life.idle();
    const g = life.enter(true);
    let idle = false;
    const waiting = life.idle().then(() => (idle = true));
    await Promise.resolve();
    expect(idle).toBe(false);
    life.leave(true, g);
    await waiting;
    expect(idle).toBe(true);
  });

  it("swap: calls that start after it get the new runtime; it resolves when the old one's calls have left", async () => {
    const first = runtime([]);
    const second = runtime([]);
    const life = new Lifecycle(first, undefined);
    const old = life.enter(true);
    let swapped = false;
    const done = life.swap(second).then(() => (swapped = true));
    const fresh = life.enter(true);
    expect([old.runtime, fresh.runtime]).toEqual([first, second]);
    life.leave(true, fresh);
    await Promise.resolve();
    expect(swapped).toBe(false);
    life.leave(true, old);
    await done;
    expect(swapped).toBe(true);
  });

  it("abortInFlight aborts what is registered, and nothing unregistered; slots are reused", () => {
    const life = new Lifecycle(runtime([]), undefined);
    const reasons: unknown[] = [];
    const a = life.register({ abort: (r) => reasons.push(["a", r]) });
    const b = life.register({ abort: (r) => reasons.push(["b", r]) });
    life.unregister(a);
    expect(life.register({ abort: (r) => reasons.push(["c", r]) })).toBe(a);
    life.unregister(b);
    life.abortInFlight(shuttingDown);
    expect(reasons).toEqual([["c", shuttingDown]]);
  });
});

describe("LinkedContext", () => {
  it("aborts with the listener's signal, and on its own without touching the listener's", () => {
    const outer = plainContext();
    const view = new LinkedContext(outer);
    outer.controller.abort(shuttingDown);
    expect([view.signal.aborted, view.signal.reason]).toEqual([true, shuttingDown]);

    const other = plainContext();
    const own = new LinkedContext(other);
    own.abort(shuttingDown);
    expect([own.signal.aborted, other.signal.aborted]).toEqual([true, false]);
    own.dispose();
  });

  it("reads and writes through to the listener's context (admission's tenant, the response headers)", () => {
    const outer = plainContext();
    const view = new LinkedContext(outer);
    view.tenant = "alice";
    view.responseHeaders["x-a"] = "1";
    expect([outer.tenant, outer.responseHeaders["x-a"], view.requestId, view.deadline, view.trace]).toEqual(["alice", "1", "r1", outer.deadline, outer.trace]);
    expect((view as CallContext).isAborted).toBeUndefined();
    view.dispose();
  });

  it("once disposed, no longer follows the listener's signal", () => {
    const outer = plainContext();
    const view = new LinkedContext(outer);
    view.dispose();
    outer.controller.abort(shuttingDown);
    expect(view.signal.aborted).toBe(false);
  });
});
