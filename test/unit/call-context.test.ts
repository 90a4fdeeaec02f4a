/**
 * The call context the ingress servers make (createCallContext): its request id, and caller
 * headers made only when something reads them.
 */
import { describe, expect, it } from "vitest";
import { callerHeaders, createCallContext } from "../../src/resilience/deadline.js";

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
    // A copy of the context (as a spread makes) carries the headers too.
    expect({ ...ctx }.headers).toEqual({ authorization: "Bearer k", "x-request-id": "req-2" });
    ctx.dispose();

    const unfit = createCallContext({ ...base, headers: () => ({}), requestId: "x".repeat(200) });
    expect(unfit.requestId).toMatch(/^[0-9a-f-]{36}$/);
    unfit.dispose();
  });
});
