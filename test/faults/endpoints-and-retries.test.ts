/**
 * Fault scenarios 1, 2, 3, 12, 19 and 29 (issue 6), end to end: grpc-js client → infergate →
 * OpenAI-compatible upstreams on loopback that refuse, fail, hang or answer slowly. Each checks
 * what the client saw, what the upstreams saw, and that nothing was cached.
 */
import { status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { parseMetrics } from "../helpers/metrics.js";
import { chatRequest, closedAfterEach, failure, type Gateway, sleep } from "./helpers/harness.js";
import { refusingUrl, startBlackhole } from "./helpers/scripted-upstream.js";

const { later, scripted, gateway: gatewayFrom } = closedAfterEach();

function gateway(endpoints: string[], resilience: string, timeoutMs = 10_000): Promise<Gateway> {
  return gatewayFrom(`
upstreams:
  - name: llm
    kind: openai
    endpoints: [${endpoints.map((e) => `"${e}"`).join(", ")}]
    timeoutMs: ${timeoutMs}
    resilience: ${resilience}
models:
  - name: chat
    upstream: llm
`);
}

/** How many Chat calls to model `chat` the gateway itself ended with `code` (infergate_requests_total), whatever the client saw. */
async function endedWith(g: Gateway, code: string): Promise<number> {
  const metrics = parseMetrics(await (await fetch(`http://${g.app.adminAddress}/metrics`)).text());
  return metrics.get(`infergate_requests_total{rpc="Chat",model="chat",code="${code}"}`) ?? 0;
}

interface ModelsList {
  models: { endpoints: { endpoint: string; state: string; ejected: boolean }[] }[];
}

describe("fault scenarios: endpoints and retries", () => {
  it("1. connections refused: retried on the other endpoints, then UNAVAILABLE; a healthy endpoint takes over", async () => {
    const down = [await refusingUrl(), await refusingUrl(), await refusingUrl()];
    const g = await gateway(down, "{ retry: { backoffBaseMs: 5 } }");
    const err = await failure(g.client.unary("Chat", chatRequest("chat")));
    expect(err.code).toBe(status.UNAVAILABLE);
    expect(err.reason).toBe("UPSTREAM_UNAVAILABLE");
    expect(err.metadata).toEqual({ upstream: "llm", attempts: "3" });
    expect(err.message).toBe('upstream "llm" could not be reached (ECONNREFUSED)');

    const good = await scripted();
    const mixed = await gateway([await refusingUrl(), good.baseUrl], "{ retry: { backoffBaseMs: 5 } }");
    for (let i = 0; i < 6; i++) {
      const res = await mixed.client.unary<{ message: { content: { text: string }[] } }>("Chat", chatRequest("chat", `call ${i}`));
      expect(res.message.content).toEqual([{ text: "scripted answer", part: "text", cache_breakpoint: null }]);
    }
    // Every call reached the healthy endpoint exactly once.
    expect(good.requests.map((r) => r.lastUserText)).toEqual(["call 0", "call 1", "call 2", "call 3", "call 4", "call 5"]);
    expect(g.app.cache.stats.stores).toBe(0);
  });

  it.each([502, 503, 504])("2. HTTP %i: retried on the other endpoint, then UNAVAILABLE", async (code) => {
    const a = await scripted(() => ({ kind: "status", status: code }));
    const b = await scripted(() => ({ kind: "status", status: code }));
    const g = await gateway([a.baseUrl, b.baseUrl], "{ retry: { backoffBaseMs: 5 } }");
    const err = await failure(g.client.unary("Chat", chatRequest("chat")));
    expect(err.code).toBe(status.UNAVAILABLE);
    expect(err.reason).toBe("UPSTREAM_UNAVAILABLE");
    expect(err.metadata).toEqual({ upstream: "llm", http_status: String(code), attempts: "3" });
    // Three attempts: the first two on different endpoints (a retry goes to another one).
    const order = [...a.requests.map((r) => ["a", r.receivedAt] as const), ...b.requests.map((r) => ["b", r.receivedAt] as const)]
      .sort((x, y) => x[1] - y[1])
      .map(([name]) => name);
    expect(order).toHaveLength(3);
    expect(order.slice(0, 2).sort()).toEqual(["a", "b"]);
    expect(g.app.cache.stats.stores).toBe(0);

    // A 503 followed by an answer is invisible to the client.
    a.script(() => ({ kind: "answer" }));
    b.script(() => ({ kind: "status", status: code }));
    const ok = await g.client.unary<{ upstream: string }>("Chat", chatRequest("chat", "second"));
    expect(ok.upstream).toBe("llm");
    expect(g.app.cache.stats.stores).toBe(1);
  });

  it("3. HTTP 500 on one of three endpoints: traffic moves to the others; the endpoint is ejected, then readmitted", async () => {
    const [a, b, c] = [await scripted(), await scripted(() => ({ kind: "status", status: 500 })), await scripted()];
    const g = await gateway(
      [a.baseUrl, b.baseUrl, c.baseUrl],
      "{ retry: { maxAttempts: 2, backoffBaseMs: 5 }, breaker: { enabled: false }, outlierDetection: { consecutiveFailures: 2, baseEjectionMs: 600, maxEjectionPercent: 34 } }",
    );
    for (let i = 0; i < 12; i++) {
      await g.client.unary("Chat", chatRequest("chat", `call ${i}`));
    }
    // b failed twice in a row, was ejected, and saw nothing more; every call succeeded.
    expect(b.requests.length).toBe(2);
    expect(a.requests.length + c.requests.length).toBe(12);
    expect(Math.abs(a.requests.length - c.requests.length)).toBeLessThanOrEqual(1);
    const before = await g.client.unary<ModelsList>("ListModels", {});
    expect(before.models[0]!.endpoints.map((e) => [e.endpoint, e.ejected])).toEqual([
      [a.baseUrl, false],
      [b.baseUrl, true],
      [c.baseUrl, false],
    ]);

    // b recovers; once its ejection time is over it gets its share again.
    b.script(() => ({ kind: "answer" }));
    await sleep(650);
    const after = await g.client.unary<ModelsList>("ListModels", {});
    expect(after.models[0]!.endpoints.map((e) => e.ejected)).toEqual([false, false, false]);
    for (let i = 0; i < 6; i++) {
      await g.client.unary("Chat", chatRequest("chat", `later ${i}`));
    }
    expect(b.requests.length).toBe(4);
    expect(b.requests.slice(2).map((r) => r.lastUserText.startsWith("later"))).toEqual([true, true]);
  });

  it("12. a slow upstream with retries never runs past the caller's deadline", async () => {
    const a = await scripted(() => ({ kind: "answer", delayMs: 10_000 }));
    const b = await scripted(() => ({ kind: "answer", delayMs: 10_000 }));
    const g = await gateway([a.baseUrl, b.baseUrl], "{ retry: { backoffBaseMs: 5 } }", 400);
    const started = Date.now();
    // The code only: on a busy machine the client's own timer may fire before the gateway's answer
    // arrives (src/core/call-context.ts, DEADLINE_MARGIN_MS), with the same code and no ErrorInfo.
    const err = await g.client.unary("Chat", chatRequest("chat"), { timeoutMs: 1_000 }).then(
      () => undefined,
      (e: { code: number }) => e,
    );
    expect(err?.code).toBe(status.DEADLINE_EXCEEDED);
    // A lower bound only: the gateway's deadline timer (1 s less its 50 ms margin) never fires early.
    expect(Date.now() - started).toBeGreaterThanOrEqual(948);
    // Since grpc-js ends the call at its deadline whatever the gateway does, the client's status
    // cannot tell; the gateway's own count can. It ended the call at the caller's deadline: not
    // when the client went away (CANCELLED), and not after a third 400 ms attempt ran out.
    await expect.poll(() => endedWith(g, "DEADLINE_EXCEEDED")).toBe(1);
    expect(await endedWith(g, "CANCELLED")).toBe(0);
    // Two attempts timed out after 400 ms each; the third was cut by the caller's deadline. None
    // was answered: each upstream holds its answer for 10 s, and waitIdle gives up after 5 s.
    await a.waitIdle();
    await b.waitIdle();
    const attempts = [...a.requests, ...b.requests].sort((x, y) => x.receivedAt - y.receivedAt);
    expect(attempts).toHaveLength(3);
    for (const r of attempts) {
      expect(r.finishedAt).toBeUndefined();
      expect(r.abortedAt).toBeDefined();
    }
    expect(g.app.cache.stats.stores).toBe(0);
  });

  it("19. retry budget: 200 concurrent calls against failing endpoints make at most 1.2 × 200 + 3 attempts", async () => {
    // The failures come after 150 ms, so that the 200 calls are in flight together.
    const a = await scripted(() => ({ kind: "status", status: 503, delayMs: 150 }));
    const b = await scripted(() => ({ kind: "status", status: 503, delayMs: 150 }));
    const g = await gateway(
      [a.baseUrl, b.baseUrl],
      "{ retry: { backoffBaseMs: 5 }, breaker: { enabled: false }, outlierDetection: { consecutiveFailures: 1000 } }",
    );
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) => failure(g.client.unary("Chat", chatRequest("chat", `call ${i}`), { timeoutMs: 10_000 }))),
    );
    expect(new Set(results.map((r) => `${r.code} ${r.reason}`))).toEqual(new Set([`${status.UNAVAILABLE} UPSTREAM_UNAVAILABLE`]));
    const attempts = a.requests.length + b.requests.length;
    expect(attempts).toBeGreaterThan(200);
    expect(attempts).toBeLessThanOrEqual(1.2 * 200 + 3);
    expect(g.app.cache.stats.stores).toBe(0);
  });

  it("29. an upstream that accepts the connection and never answers: the attempt times out, the retry goes elsewhere", async () => {
    const hole = await startBlackhole();
    later(() => hole.close());
    const good = await scripted();
    const g = await gateway([hole.url + "/v1", good.baseUrl], "{ retry: { backoffBaseMs: 5 } }", 300);
    const started = Date.now();
    // An answer at all shows the attempt's own 300 ms timeout ended the first attempt: the black
    // hole never answers, so without it the call would have run into its 5 s deadline.
    const res = await g.client.unary<{ upstream: string }>("Chat", chatRequest("chat"), { timeoutMs: 5_000 });
    expect(res.upstream).toBe("llm");
    // A lower bound only: the attempt's timer never fires early.
    expect(Date.now() - started).toBeGreaterThanOrEqual(298);
    // The first attempt went to the black hole (undici may open a spare connection after the abort).
    expect(hole.connections).toBeGreaterThanOrEqual(1);
    expect(good.requests).toHaveLength(1);
    expect(g.app.cache.stats.stores).toBe(1);
  });
});
