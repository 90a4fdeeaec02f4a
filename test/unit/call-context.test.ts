/**
 * The call context the ingress servers make (createCallContext): its request id, caller headers
 * made only when something reads them, and a deadline whose timer is set only once something
 * holds the signal (checked on the clock until then).
 */
import { describe, expect, it } from "vitest";
import { GatewayError, Reason } from "../../src/core/gateway-error.js";
import { callerHeaders, createCallContext, DEADLINE_MARGIN_MS, throwIfAborted } from "../../src/core/call-context.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const base = { timeoutMs: undefined, maxTimeoutMs: 60_000, timeoutHeader: "grpc-timeout" };

describe("createCallContext", () => {
  it("keeps the caller's x-request-id from the headers, and makes one when it is missing or unfit", () => {
    const given = createCallContext({ ...base, headers: { "x-request-id": "req-1" } });
    expect(given.requestId).toBe("req-1");
    expect(given.responseHeaders["x-request-id"]).toBe("req-1");
    const made = createCallContext({ ...base, headers: {} });
    expect(made.requestId).toMatch(/^[0-9a-f-]{36}$/);
    const unfit = createCallContext({ ...base, headers: { "x-request-id": "has space" } });
    expect(unfit.requestId).toMatch(/^[0-9a-f-]{36}$/);
    for (const c of [given, made, unfit]) c.dispose();
  });

  it("with headers given as a function, builds them once, on the first read, and takes the id apart", () => {
    let built = 0;
    const ctx = createCallContext({
      ...base,
      headers: () => {
        built++;
        return callerHeaders(Object.entries({ authorization: "Bearer k", te: "trailers", "x-request-id": "req-2" }));
      },
      requestId: "req-2",
    });
    expect(ctx.requestId).toBe("req-2");
    expect(built).toBe(0);
    expect(ctx.headers).toEqual({ authorization: "Bearer k", "x-request-id": "req-2" });
    expect(ctx.headers).toBe(ctx.headers);
    expect(built).toBe(1);
    ctx.dispose();

    const unfit = createCallContext({ ...base, headers: () => ({}), requestId: "x".repeat(200) });
    expect(unfit.requestId).toMatch(/^[0-9a-f-]{36}$/);
    unfit.dispose();
  });

  it("header(name) reads one header with the listener's reader, without building them all; once built, from them", () => {
    let built = 0;
    const raw: Record<string, string> = { "anthropic-beta": "b1", authorization: "Bearer k" };
    const ctx = createCallContext({
      ...base,
      headers: () => {
        built++;
        return callerHeaders(Object.entries(raw));
      },
      header: (name) => raw[name],
    });
    expect(ctx.header?.("anthropic-beta")).toBe("b1");
    expect(ctx.header?.("x-other")).toBeUndefined();
    expect(built).toBe(0);
    expect(ctx.headers["authorization"]).toBe("Bearer k");
    raw["anthropic-beta"] = "changed after the build";
    expect(ctx.header?.("anthropic-beta")).toBe("b1");
    expect(built).toBe(1);
    ctx.dispose();

    const given = createCallContext({ ...base, headers: { "anthropic-beta": "b2" } });
    expect(given.header?.("anthropic-beta")).toBe("b2");
    given.dispose();
  });
});

describe("createCallContext deadline", () => {
  const deadlineMessage = "deadline exceeded: the call's grpc-timeout of 40ms ran out";

  it("aborts a held signal at the deadline (less the margin), with the gateway's reason", async () => {
    const started = Date.now();
    const ctx = createCallContext({ ...base, timeoutMs: 40 });
    const signal = ctx.signal;
    const reason = await new Promise<unknown>((resolve) => signal.addEventListener("abort", () => resolve(signal.reason)));
    const elapsed = Date.now() - started;
    expect(reason).toBeInstanceOf(GatewayError);
    expect((reason as GatewayError).reason).toBe(Reason.DeadlineExceeded);
    expect((reason as GatewayError).message).toBe(deadlineMessage);
    // 40 ms less its 10% margin: 36 ms. A lower bound only (a timer never fires early), less 2 ms
    // for the clocks' millisecond rounding.
    expect(elapsed).toBeGreaterThanOrEqual(34);
    expect(ctx.isAborted!()).toBe(true);
    ctx.dispose();
  });

  it("gives up at most DEADLINE_MARGIN_MS (50 ms) before a long client deadline", async () => {
    expect(DEADLINE_MARGIN_MS).toBe(50);
    const started = Date.now();
    const ctx = createCallContext({ ...base, timeoutMs: 1000 });
    const signal = ctx.signal;
    await new Promise((resolve) => signal.addEventListener("abort", resolve));
    // Due at 950 ms (10% would be 100 ms; the cap applies). A timer never fires early; 2 ms less
    // for the clocks' millisecond rounding.
    expect(Date.now() - started).toBeGreaterThanOrEqual(948);
    expect((signal.reason as GatewayError).message).toBe("deadline exceeded: the call's grpc-timeout of 1000ms ran out");
    ctx.dispose();
  });

  it("without a held signal, sees the deadline on the clock: isAborted, throwIfAborted and a late signal", async () => {
    const ctx = createCallContext({ ...base, timeoutMs: 40 });
    expect(ctx.isAborted!()).toBe(false);
    expect(() => throwIfAborted(ctx)).not.toThrow();
    await sleep(60);
    expect(ctx.isAborted!()).toBe(true);
    expect(() => throwIfAborted(ctx)).toThrow(deadlineMessage);
    expect(ctx.signal.aborted).toBe(true);
    expect((ctx.signal.reason as GatewayError).message).toBe(deadlineMessage);
    ctx.dispose();

    // A signal first asked for after the deadline has passed is aborted already.
    const late = createCallContext({ ...base, timeoutMs: 20 });
    await sleep(40);
    expect(late.signal.aborted).toBe(true);
    expect((late.signal.reason as GatewayError).reason).toBe(Reason.DeadlineExceeded);
    late.dispose();
  });

  it("never aborts once disposed, held signal or not", async () => {
    const held = createCallContext({ ...base, timeoutMs: 20 });
    const signal = held.signal;
    held.dispose();
    const idle = createCallContext({ ...base, timeoutMs: 20 });
    idle.dispose();
    await sleep(50);
    expect(signal.aborted).toBe(false);
    expect(held.isAborted!()).toBe(false);
    expect(idle.isAborted!()).toBe(false);
    expect(idle.signal.aborted).toBe(false);
  });

  it("a cancel or an abort comes first when it comes before the deadline", () => {
    const cancelled = createCallContext({ ...base, timeoutMs: 1000 });
    cancelled.cancel();
    expect(cancelled.isAborted!()).toBe(true);
    expect((cancelled.signal.reason as GatewayError).reason).toBe(Reason.Cancelled);
    cancelled.dispose();
    const aborted = createCallContext({ ...base, timeoutMs: 1000 });
    const why = new Error("drained");
    aborted.abort!(why);
    expect(aborted.signal.reason).toBe(why);
    aborted.dispose();
  });
});

describe("createCallContext with an ingress's clientGone", () => {
  it("listens for the client going away only once the signal is asked for, and then aborts it", () => {
    let gone = false;
    const watchers: (() => void)[] = [];
    const ctx = createCallContext({ ...base, clientGone: { cancelled: () => gone, watch: (cancel) => watchers.push(cancel) } });
    expect(ctx.isAborted!()).toBe(false);
    expect(watchers).toHaveLength(0);
    const signal = ctx.signal;
    void ctx.signal;
    expect(watchers).toHaveLength(1);
    gone = true;
    watchers[0]!();
    expect(signal.aborted).toBe(true);
    expect((signal.reason as GatewayError).reason).toBe(Reason.Cancelled);
    ctx.dispose();
  });

  it("before anything holds the signal, a client that went away is seen by the checks", () => {
    let gone = false;
    let watched = 0;
    const ctx = createCallContext({ ...base, clientGone: { cancelled: () => gone, watch: () => watched++ } });
    expect(() => throwIfAborted(ctx)).not.toThrow();
    gone = true;
    expect(() => throwIfAborted(ctx)).toThrow("the client cancelled the call");
    expect(ctx.signal.aborted).toBe(true);
    expect((ctx.signal.reason as GatewayError).reason).toBe(Reason.Cancelled);
    // Aborted already: nothing left to listen for.
    expect(watched).toBe(0);
    ctx.dispose();
  });

  it("a client gone after the call is over changes nothing", () => {
    let gone = false;
    const ctx = createCallContext({ ...base, clientGone: { cancelled: () => gone, watch: () => {} } });
    ctx.dispose();
    gone = true;
    expect(ctx.isAborted!()).toBe(false);
    ctx.cancel();
    expect(ctx.signal.aborted).toBe(false);
  });
});
