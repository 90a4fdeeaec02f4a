/**
 * Fault scenarios 4, 5, 6, 7, 20 and 28 (issue 6), end to end: the per-endpoint circuit breaker
 * and load shedding, seen from a grpc-js client, with the upstream's own record of what reached it.
 */
import { status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { closedAfterEach, chatRequest, failure, type Gateway, sleep } from "./helpers/harness.js";

const { gateway, scripted } = closedAfterEach();

function oneUpstream(url: string, resilience: string): string {
  return `
upstreams:
  - name: llm
    kind: openai
    endpoints: ["${url}"]
    timeoutMs: 10000
    resilience: ${resilience}
models:
  - name: chat
    upstream: llm
`;
}

interface ModelsList {
  models: { name: string; state: string; endpoints: { state: string; ejected: boolean; in_flight: number }[] }[];
}

async function breakerStates(g: Gateway): Promise<string[]> {
  const res = await g.client.unary<ModelsList>("ListModels", {});
  return res.models.flatMap((m) => m.endpoints.map((e) => e.state));
}

describe("fault scenarios: circuit breakers and load shedding", () => {
  it("4. the breaker opens after the configured failures, then fails fast without calling the upstream", async () => {
    const up = await scripted(() => ({ kind: "status", status: 503 }));
    const g = await gateway(oneUpstream(up.baseUrl, "{ retry: { maxAttempts: 1 }, breaker: { volumeThreshold: 4, resetTimeoutMs: 60000 } }"));
    for (let i = 0; i < 4; i++) {
      const err = await failure(g.client.unary("Chat", chatRequest("chat", `call ${i}`)));
      expect([err.code, err.reason]).toEqual([status.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"]);
    }
    expect(await breakerStates(g)).toEqual(["BREAKER_STATE_OPEN"]);
    // Fails fast: without calling the upstream (its count below stays at 4).
    const err = await failure(g.client.unary("Chat", chatRequest("chat", "after")));
    expect(err.code).toBe(status.UNAVAILABLE);
    expect(err.reason).toBe("CIRCUIT_OPEN");
    expect(err.metadata).toEqual({ upstream: "llm" });
    expect(err.message).toMatch(/^upstream "llm" is failing: its circuit breaker is open; next probe in \d+ms$/);
    expect(err.retryAfterMs).toBeGreaterThan(59_000);
    expect(err.retryAfterMs).toBeLessThanOrEqual(60_000);
    expect(up.requests).toHaveLength(4);
    const models = await g.client.unary<ModelsList>("ListModels", {});
    expect(models.models[0]!.state).toBe("MODEL_STATE_NOT_READY");
    expect(g.app.cache.stats.stores).toBe(0);
  });

  it("the call during which the breaker opened says how many attempts it made (issue 17, defect 10)", async () => {
    const up = await scripted(() => ({ kind: "status", status: 503 }));
    const g = await gateway(
      oneUpstream(up.baseUrl, "{ retry: { maxAttempts: 2, backoffBaseMs: 1, backoffMaxMs: 2 }, breaker: { volumeThreshold: 3, resetTimeoutMs: 60000 } }"),
    );
    // Two attempts, two failures: the breaker stays closed.
    const first = await failure(g.client.unary("Chat", chatRequest("chat", "first")));
    expect([first.reason, first.metadata["attempts"]]).toEqual(["UPSTREAM_UNAVAILABLE", "2"]);
    // Its first attempt is the third failure: the breaker opens, and the retry it wanted finds no
    // endpoint. The call fails with its attempt's error, saying it made one.
    const during = await failure(g.client.unary("Chat", chatRequest("chat", "during")));
    expect([during.reason, during.metadata["attempts"]]).toEqual(["UPSTREAM_UNAVAILABLE", "1"]);
    expect(up.requests).toHaveLength(3);
    const after = await failure(g.client.unary("Chat", chatRequest("chat", "after")));
    expect([after.reason, after.metadata["attempts"]]).toEqual(["CIRCUIT_OPEN", undefined]);
  });

  it("5. half-open: exactly one probe goes through; its success closes the breaker, its failure reopens it", async () => {
    const up = await scripted(() => ({ kind: "status", status: 503 }));
    const g = await gateway(oneUpstream(up.baseUrl, "{ retry: { maxAttempts: 1 }, breaker: { volumeThreshold: 2, resetTimeoutMs: 300 } }"));
    const openIt = async () => {
      up.script(() => ({ kind: "status", status: 503 }));
      for (let i = 0; i < 2; i++) await failure(g.client.unary("Chat", chatRequest("chat", `fail ${up.requests.length}`)));
      expect(await breakerStates(g)).toEqual(["BREAKER_STATE_OPEN"]);
    };

    await openIt();
    await sleep(350);
    expect(await breakerStates(g)).toEqual(["BREAKER_STATE_HALF_OPEN"]);
    up.script(() => ({ kind: "answer", delayMs: 200 }));
    const before = up.requests.length;
    const calls = Array.from({ length: 5 }, (_, i) => g.client.unary<{ upstream: string }>("Chat", chatRequest("chat", `probe ${i}`)).then(
      (res) => ({ ok: true as const, res }),
      (err: unknown) => ({ ok: false as const, err }),
    ));
    const outcomes = await Promise.all(calls);
    expect(up.requests.length - before).toBe(1);
    expect(outcomes.filter((o) => o.ok)).toHaveLength(1);
    const refused = await Promise.all(outcomes.filter((o) => !o.ok).map((o) => failure(Promise.reject((o as { err: unknown }).err))));
    expect(refused.map((e) => [e.code, e.reason, e.retryAfterMs])).toEqual(
      Array.from({ length: 4 }, () => [status.UNAVAILABLE, "CIRCUIT_OPEN", 300]),
    );
    expect(await breakerStates(g)).toEqual(["BREAKER_STATE_CLOSED"]);

    await openIt();
    await sleep(350);
    const probeCount = up.requests.length;
    const probe = await failure(g.client.unary("Chat", chatRequest("chat", "failing probe")));
    expect([probe.code, probe.reason]).toEqual([status.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"]);
    expect(await breakerStates(g)).toEqual(["BREAKER_STATE_OPEN"]);
    const next = await failure(g.client.unary("Chat", chatRequest("chat", "after the probe")));
    expect(next.reason).toBe("CIRCUIT_OPEN");
    expect(next.retryAfterMs).toBeGreaterThan(200);
    expect(next.retryAfterMs).toBeLessThanOrEqual(300);
    expect(up.requests.length).toBe(probeCount + 1);
    // Only the successful probe's answer was stored.
    expect(g.app.cache.stats.stores).toBe(1);
  });

  it("6. HTTP 400 from the upstream 1000 times: the breaker stays closed, nothing is retried", async () => {
    const up = await scripted(() => ({ kind: "status", status: 400 }));
    const g = await gateway(oneUpstream(up.baseUrl, "{ breaker: { volumeThreshold: 5 } }"));
    for (let batch = 0; batch < 20; batch++) {
      const errors = await Promise.all(
        Array.from({ length: 50 }, (_, i) => failure(g.client.unary("Chat", chatRequest("chat", `call ${batch}.${i}`)))),
      );
      for (const e of errors) expect([e.code, e.reason]).toEqual([status.INVALID_ARGUMENT, "INVALID_ARGUMENT"]);
    }
    expect(up.requests).toHaveLength(1000);
    expect(await breakerStates(g)).toEqual(["BREAKER_STATE_CLOSED"]);
    expect(g.app.cache.stats.stores).toBe(0);
  });

  it("7. the client cancels 1000 times: the breaker stays closed, every upstream request is aborted", async () => {
    const up = await scripted(() => ({ kind: "answer", delayMs: 10_000 }));
    const g = await gateway(oneUpstream(up.baseUrl, "{ breaker: { volumeThreshold: 5 } }"));
    for (let batch = 0; batch < 20; batch++) {
      const streams = Array.from({ length: 50 }, (_, i) =>
        g.client.serverStream<Record<string, unknown>>("Generate", chatRequest("chat", `call ${batch}.${i}`)),
      );
      await up.waitForRequests((batch + 1) * 50);
      for (const s of streams) s.call.cancel();
      const results = await Promise.all(streams.map((s) => s.done));
      for (const r of results) expect([r.status.code, r.events]).toEqual([status.CANCELLED, []]);
      await up.waitIdle();
    }
    expect(up.requests).toHaveLength(1000);
    expect(up.requests.filter((r) => r.abortedAt !== undefined)).toHaveLength(1000);
    expect(await breakerStates(g)).toEqual(["BREAKER_STATE_CLOSED"]);
    expect(g.app.cache.stats.stores).toBe(0);
  });

  it("20. concurrency limits: over the limit is RESOURCE_EXHAUSTED / OVERLOADED at once, no queue, breakers untouched", async () => {
    // The held calls take 1.5 s: "at once" is checked as order (refused before they end).
    const a = await scripted(() => ({ kind: "answer", delayMs: 1500 }));
    const b = await scripted(() => ({ kind: "answer", delayMs: 1500 }));
    const g = await gateway(`
server:
  maxConcurrentCalls: 4
upstreams:
  - name: llm-a
    kind: openai
    endpoints: ["${a.baseUrl}"]
    resilience: { maxConcurrent: 2, breaker: { volumeThreshold: 1 } }
  - name: llm-b
    kind: openai
    endpoints: ["${b.baseUrl}"]
    resilience: { breaker: { volumeThreshold: 1 } }
models:
  - { name: model-a, upstream: llm-a }
  - { name: model-b, upstream: llm-b }
`);
    const running = [
      g.client.unary("Chat", chatRequest("model-a", "a1")),
      g.client.unary("Chat", chatRequest("model-a", "a2")),
    ];
    await a.waitForRequests(2);
    // Refused at once: while the two calls it waits behind are still held by the upstream.
    let settledA = 0;
    for (const r of running) void r.then(() => settledA++, () => settledA++);
    const perUpstream = await failure(g.client.unary("Chat", chatRequest("model-a", "a3")));
    expect(settledA).toBe(0);
    expect(perUpstream).toEqual({
      code: status.RESOURCE_EXHAUSTED,
      message: 'upstream "llm-a" is at its limit of 2 concurrent calls; retry later',
      reason: "OVERLOADED",
      metadata: { limit: "2" },
      retryAfterMs: 1_000,
    });
    running.push(g.client.unary("Chat", chatRequest("model-b", "b1")), g.client.unary("Chat", chatRequest("model-b", "b2")));
    await b.waitForRequests(2);
    let settledB = 0;
    for (const r of running.slice(2)) void r.then(() => settledB++, () => settledB++);
    const global = await failure(g.client.unary("Chat", chatRequest("model-b", "b3")));
    expect(settledB).toBe(0);
    expect(global).toEqual({
      code: status.RESOURCE_EXHAUSTED,
      message: "the gateway is at its limit of 4 concurrent calls; retry later",
      reason: "OVERLOADED",
      metadata: { limit: "4" },
      retryAfterMs: 1_000,
    });
    // ListModels is not a model call: it is served at the limit.
    expect(await breakerStates(g)).toEqual(["BREAKER_STATE_CLOSED", "BREAKER_STATE_CLOSED"]);
    await Promise.all(running);
    expect([a.requests.length, b.requests.length]).toEqual([2, 2]);
    // Nothing waited in a queue: the refused calls never reached an upstream, even later.
    await sleep(50);
    expect([a.requests.length, b.requests.length]).toEqual([2, 2]);
    await g.client.unary("Chat", chatRequest("model-a", "a4"));
    expect(await breakerStates(g)).toEqual(["BREAKER_STATE_CLOSED", "BREAKER_STATE_CLOSED"]);
    expect(g.app.cache.stats.stores).toBe(5);
  });

  it("28. a flapping endpoint (every other call fails) does not open a breaker set at 50% with a volume threshold", async () => {
    const up = await scripted((i) => (i % 2 === 1 ? { kind: "status", status: 503 } : { kind: "answer" }));
    const g = await gateway(oneUpstream(up.baseUrl, "{ retry: { maxAttempts: 1 }, breaker: { errorThresholdPercent: 50, volumeThreshold: 4 } }"));
    const outcomes: string[] = [];
    for (let i = 0; i < 40; i++) {
      outcomes.push(
        await g.client.unary("Chat", chatRequest("chat", `call ${i}`)).then(
          () => "ok",
          (err: { details: string }) => (err.details.includes("circuit breaker") ? "open" : "failed"),
        ),
      );
    }
    expect(outcomes).toEqual(Array.from({ length: 40 }, (_, i) => (i % 2 === 1 ? "failed" : "ok")));
    expect(up.requests).toHaveLength(40);
    expect(await breakerStates(g)).toEqual(["BREAKER_STATE_CLOSED"]);
    expect(g.app.cache.stats.stores).toBe(20);

    // The same breaker does open when failures are more than half: two of every three.
    up.script((i) => (i % 3 === 0 ? { kind: "answer" } : { kind: "status", status: 503 }));
    let opened = false;
    for (let i = 0; i < 12 && !opened; i++) {
      opened = await g.client.unary("Chat", chatRequest("chat", `more ${i}`)).then(
        () => false,
        (err: { details: string }) => err.details.includes("circuit breaker"),
      );
    }
    expect(opened).toBe(true);
  });
});
