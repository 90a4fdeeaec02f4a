/**
 * The resilience policy (src/resilience/): what counts as a failure and what is retried, backoff,
 * load balancing, outlier ejection, the retry budget, and the wrapper that puts them together
 * around scripted adapters (one per endpoint, as createUpstream makes them).
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { Role } from "../../gen/infergate/v1/chat_pb.js";
import {
  BreakerState,
  type ChatResponse,
  ChatResponseSchema,
  GenerateRequestSchema,
  type GenerateResponse,
  GenerateResponseSchema,
  InferenceService,
  PredictRequestSchema,
} from "../../gen/infergate/v1/inference_service_pb.js";
import { DataType } from "../../gen/infergate/v1/tensor_pb.js";
import { parseConfig } from "../../src/config/load-config.js";
import type { ResilienceConfig, UpstreamConfig } from "../../src/config/schema.js";
import { ConfigError } from "../../src/config/config-error.js";
import { GatewayError, Reason } from "../../src/core/gateway-error.js";
import { fullJitterBackoff } from "../../src/resilience/backoff.js";
import { allowsFallback, countsAsFailure, failureScope, isSlowFailure, retryVerdict } from "../../src/resilience/failure-policy.js";
import { createLoadBalancer } from "../../src/resilience/load-balancer.js";
import { OutlierDetector } from "../../src/resilience/outlier-detector.js";
import { createResilientUpstream, displayUrl, type ResilientCall, type ResilientUpstream } from "../../src/resilience/resilient-upstream.js";
import { RetryBudget } from "../../src/resilience/retry-budget.js";
import { errorFromNetwork, errorFromStatus } from "../../src/upstreams/http/http-errors.js";
import type { ChatInput, Upstream, UpstreamCall } from "../../src/core/upstream.js";
import { memoryClient } from "../helpers/memory.js";
import { createGateway } from "../../src/gateway/gateway.js";
import { createCallContext } from "../../src/core/call-context.js";
import { ResponseCache } from "../../src/cache/response-cache.js";
import type { CallRecord } from "../../src/observability/call-record.js";
import { createRouter } from "../../src/gateway/router.js";
import { inferenceRoutes } from "../../src/server/connect-routes.js";
import { createUpstream } from "../../src/gateway/create-upstream.js";

const status = (s: number, headers: Record<string, string> = {}) => errorFromStatus("u", s, headers, "{}", []);
const refused = errorFromNetwork("u", Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }));
const callerDeadline = new GatewayError(Code.DeadlineExceeded, "deadline", { reason: Reason.DeadlineExceeded });
const attemptTimeout = new GatewayError(Code.DeadlineExceeded, "upstream timeout", { reason: Reason.UpstreamTimeout });
const cancelled = new GatewayError(Code.Canceled, "cancelled");
const overloadedErr = new GatewayError(Code.ResourceExhausted, "overloaded", { reason: Reason.Overloaded, retryAfterMs: 1000 });
const truncated = new GatewayError(Code.Unavailable, "cut", { reason: Reason.StreamTruncated });

describe("failure policy", () => {
  it.each([
    ["connection refused", refused, true, true, true],
    ["HTTP 500", status(500), true, true, true],
    ["HTTP 502", status(502), true, true, true],
    ["HTTP 503", status(503), true, true, true],
    ["HTTP 504", status(504), true, true, true],
    ["HTTP 529 (Anthropic overloaded)", status(529), true, true, true],
    ["truncated stream", truncated, true, true, true],
    ["the upstream's own timeout", attemptTimeout, true, true, true],
    ["HTTP 408 (the upstream timed the request out)", status(408), true, true, true],
    ["HTTP 400", status(400), false, false, false],
    ["HTTP 404", status(404), false, false, false],
    ["HTTP 401 (our credentials: a config fault)", status(401), false, false, false],
    ["HTTP 409", status(409), false, false, false],
    ["HTTP 429 without Retry-After", status(429), false, false, true],
    ["HTTP 429 Retry-After: 1", status(429, { "retry-after": "1" }), false, true, true],
    ["HTTP 429 Retry-After: 30", status(429, { "retry-after": "30" }), false, false, true],
    ["the caller's deadline", callerDeadline, false, false, false],
    ["a cancel", cancelled, false, false, false],
    ["our own load shedding", overloadedErr, false, false, false],
    ["a non-GatewayError (a bug)", new TypeError("x"), true, false, false],
  ])("%s: counts %s, retried within 5 s %s, falls back %s", (_name, err, counts, retried, fallback) => {
    expect(countsAsFailure(err)).toBe(counts);
    expect(retryVerdict(err, 5_000).retry).toBe(retried);
    expect(allowsFallback(err)).toBe(fallback);
  });

  const reset = errorFromNetwork("u", Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" }));
  const serverUnavailable = new GatewayError(Code.Unavailable, "Triton: not ready", { reason: Reason.UpstreamUnavailable });
  const progress = (answered: boolean, connectionFailed = false) => ({ answered, connectionFailed });
  it.each([
    ["connection refused, nothing back", refused, progress(false), "endpoint"],
    ["a reset after the answer began", reset, progress(true, true), "endpoint"],
    ["a timeout with nothing back", attemptTimeout, progress(false), "endpoint"],
    ["a timeout after the answer began", attemptTimeout, progress(true), "model"],
    ["HTTP 503 (its cause says the upstream answered)", status(503), progress(false), "model"],
    ["HTTP 200 with garbage", errorFromStatus("u", 502, {}, "<html>", []), progress(true), "model"],
    ["HTTP 404: the model is not there", status(404), progress(true), "model"],
    ["a server's gRPC UNAVAILABLE", serverUnavailable, progress(true), "model"],
    ["a gRPC UNAVAILABLE made locally (no connection)", serverUnavailable, progress(false), "endpoint"],
    ["HTTP 400", status(400), progress(true), undefined],
    ["HTTP 429", status(429, { "retry-after": "1" }), progress(true), undefined],
    ["a non-GatewayError", new TypeError("x"), progress(false), "endpoint"],
  ])("the scope of a failure: %s", (_name, err, p, scope) => {
    expect(failureScope(err, p)).toBe(scope);
  });

  it("an attempt cut by the caller's deadline is a slow failure only with nothing back, after slowFailureMs", () => {
    expect(isSlowFailure(callerDeadline, progress(false), 500, 500)).toBe(true);
    expect(isSlowFailure(callerDeadline, progress(false), 499, 500)).toBe(false);
    expect(isSlowFailure(callerDeadline, progress(true), 5_000, 500)).toBe(false);
    expect(isSlowFailure(cancelled, progress(false), 5_000, 500)).toBe(false);
    expect(isSlowFailure(callerDeadline, progress(false), 0, 0)).toBe(true);
  });

  it("a 429 is retried no sooner than its Retry-After", () => {
    expect(retryVerdict(status(429, { "retry-after": "1" }), 5_000)).toEqual({ retry: true, minDelayMs: 1_000 });
    expect(retryVerdict(status(429, { "retry-after": "1" }), 999)).toEqual({ retry: false });
  });
});

describe("full-jitter backoff", () => {
  it.each([
    [1, 0.999, 24],
    [2, 0.999, 49],
    [3, 0.5, 50],
    [10, 0.999, 999],
    [1, 0, 0],
  ])("retry %i with random %f waits %i ms (base 25, max 1000)", (retry, r, expected) => {
    expect(fullJitterBackoff(retry, 25, 1_000, () => r)).toBe(expected);
  });
});

describe("load balancing", () => {
  it("weighted round robin interleaves by weight", () => {
    const lb = createLoadBalancer("roundRobin", [5, 1, 1]);
    const picks = Array.from({ length: 7 }, () => lb.pick([0, 1, 2], () => 0));
    expect(picks).toEqual([0, 0, 1, 0, 2, 0, 0]);
  });

  it("round robin over the candidates left (others excluded)", () => {
    const lb = createLoadBalancer("roundRobin", [1, 1, 1]);
    expect(Array.from({ length: 4 }, () => lb.pick([0, 2], () => 0))).toEqual([0, 2, 0, 2]);
  });

  it("least outstanding: of two random candidates, the one with fewer calls per weight", () => {
    const draws = [0.0, 0.99, 0.0, 0.0];
    const lb = createLoadBalancer("leastOutstanding", [1, 1, 2], () => draws.shift() ?? 0);
    const load = [5, 0, 9];
    // first draw: candidates 0 and 2 (the second draw skips the first): 5/1 vs 9/2 → 2
    expect(lb.pick([0, 1, 2], (i) => load[i]!)).toBe(2);
    // then 0 and 1: 5 vs 0 → 1
    expect(lb.pick([0, 1, 2], (i) => load[i]!)).toBe(1);
  });
});

describe("outlier ejection", () => {
  const od = (n: number, over: Partial<ResilienceConfig["outlierDetection"]> = {}, now = () => 0) =>
    new OutlierDetector(n, { consecutiveFailures: 3, baseEjectionMs: 1_000, maxEjectionMs: 2_500, maxEjectionPercent: 10, ...over }, now);

  it("ejects after N consecutive failures, for base × times ejected, capped; a success resets the count", () => {
    let t = 0;
    const d = od(3, {}, () => t);
    d.failure(0);
    d.failure(0);
    d.success(0);
    d.failure(0);
    d.failure(0);
    expect(d.isEjected(0)).toBe(false);
    d.failure(0);
    expect(d.isEjected(0)).toBe(true);
    t = 999;
    expect(d.isEjected(0)).toBe(true);
    t = 1_000;
    expect(d.isEjected(0)).toBe(false); // readmitted after 1 × base
    for (let i = 0; i < 3; i++) d.failure(0);
    t = 2_999;
    expect(d.isEjected(0)).toBe(true); // 2 × base (no decay: back for 0 ms)
    t = 3_000;
    expect(d.isEjected(0)).toBe(false);
    for (let i = 0; i < 3; i++) d.failure(0);
    t = 5_499;
    expect(d.isEjected(0)).toBe(true); // 3 × base capped at 2500
    t = 5_500;
    expect(d.isEjected(0)).toBe(false);
  });

  it("never ejects more than the allowed share (at least one of two or more, none of one)", () => {
    const d = od(3);
    for (const i of [0, 1]) for (let k = 0; k < 3; k++) d.failure(i);
    expect([d.isEjected(0), d.isEjected(1), d.ejectedCount(), d.maxEjected()]).toEqual([true, false, 1, 1]);
    const single = od(1);
    for (let k = 0; k < 10; k++) single.failure(0);
    expect(single.isEjected(0)).toBe(false);
    expect(od(10, { maxEjectionPercent: 50 }).maxEjected()).toBe(5);
  });
});

describe("retry budget", () => {
  it("allows max(minimum, percent of active) retries in flight", () => {
    const b = new RetryBudget(20, 3);
    for (let i = 0; i < 10; i++) b.enter();
    expect([b.tryRetry(), b.tryRetry(), b.tryRetry(), b.tryRetry()]).toEqual([true, true, true, false]);
    for (let i = 0; i < 10; i++) b.enter(); // 20 active → 4 allowed
    expect([b.tryRetry(), b.tryRetry()]).toEqual([true, false]);
    b.leave(2);
    expect(b.usage).toEqual({ active: 19, retries: 2 });
    expect(b.tryRetry()).toBe(true);
  });
});

// --- the wrapper ------------------------------------------------------------------------------

type Script = (call: UpstreamCall<ChatInput>, url: string) => Promise<ChatResponse>;
type StreamScript = (call: UpstreamCall<ChatInput>, url: string) => AsyncIterable<GenerateResponse>;

type Settings = { [k: string]: number | string | boolean | Settings };

/** Fast backoff and a breaker that does not open, unless `over` says otherwise (merged one level deep). */
function upstreamConfig(yamlEndpoints: string, over: Settings = {}): UpstreamConfig {
  const base: Settings = { retry: { backoffBaseMs: 1, backoffMaxMs: 2 }, breaker: { volumeThreshold: 1000 } };
  const merged: Settings = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = base[k];
    merged[k] = typeof v === "object" && typeof b === "object" ? { ...b, ...v } : v;
  }
  const config = parseConfig(
    `upstreams:
  - name: u
    kind: mock
    endpoints: ${yamlEndpoints}
    resilience: ${JSON.stringify(merged)}
models: [{name: m, upstream: u}]`,
    "(test)",
    {},
  );
  return config.upstreams[0]!;
}

const wrappers: ResilientUpstream[] = [];
afterEach(async () => {
  for (const w of wrappers.splice(0)) await w.close();
});

/** A wrapper over scripted adapters; `calls` records the endpoint of every attempt. */
function wrapped(config: UpstreamConfig, chat: Script, generate?: StreamScript) {
  const calls: string[] = [];
  const upstream = createResilientUpstream(config, (one) => {
    const url = one.endpoints[0] ?? "";
    const adapter: Upstream = {
      name: one.name,
      kind: "mock",
      chat: (call) => {
        calls.push(url);
        return chat(call, url);
      },
      ...(generate === undefined
        ? {}
        : {
            generate: (call: UpstreamCall<ChatInput>) => {
              calls.push(url);
              return generate(call, url);
            },
          }),
      close: async () => {},
    };
    return adapter;
  });
  wrappers.push(upstream);
  return { upstream, calls };
}

const request = create(GenerateRequestSchema, { model: "m", messages: [{ role: Role.USER, content: [{ part: { case: "text", value: "hi" } }] }] });

function call(timeoutMs = 5_000, signal = new AbortController().signal): ResilientCall<ChatInput> {
  return { request, upstreamModel: "m", modelOptions: {}, signal, deadline: Date.now() + timeoutMs, headers: {} };
}

const answer = (url: string) => create(ChatResponseSchema, { id: url });
const text = (v: string) => create(GenerateResponseSchema, { event: { case: "textDelta", value: v } });
const finalEvent = () => create(GenerateResponseSchema, { event: { case: "final", value: { id: "f" } } });

async function caught(p: Promise<unknown>): Promise<GatewayError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof GatewayError) return err;
    throw err;
  }
  throw new Error("expected a failure");
}

/**
 * A timer of `ms` set now; `fired` says whether it has run. Set before a call starts, it tells
 * whether the call waited `ms` or longer: such a wait sets its own timer later, and a timer never
 * fires before one due earlier or set earlier with the same delay. Event order, not the machine's
 * speed, decides.
 */
function timer(ms: number): { readonly fired: boolean; clear(): void } {
  let fired = false;
  const t = setTimeout(() => (fired = true), ms);
  return {
    get fired() {
      return fired;
    },
    clear: () => clearTimeout(t),
  };
}

describe("resilient upstream", () => {
  const A = "http://127.0.0.1:1/a";
  const B = "http://127.0.0.1:2/b";
  const C = "http://127.0.0.1:3/c";

  it("retries a connection refusal on the other endpoints, each once, and says how many attempts", async () => {
    const { upstream, calls } = wrapped(upstreamConfig(`[${A}, ${B}, ${C}]`), async () => {
      throw refused;
    });
    const err = await caught(upstream.chat!(call()));
    expect([err.code, err.reason, err.metadata["attempts"]]).toEqual([Code.Unavailable, Reason.UpstreamUnavailable, "3"]);
    expect([...calls].sort()).toEqual([A, B, C]);
  });

  it("a retry after a 503 succeeds on another endpoint", async () => {
    const { upstream, calls } = wrapped(upstreamConfig(`[${A}, ${B}]`), async (_c, url) => {
      if (url === A) throw status(503);
      return answer(url);
    });
    const results = [await upstream.chat!(call()), await upstream.chat!(call())];
    expect(results.map((r) => r.id)).toEqual([B, B]);
    expect(calls).toEqual([A, B, B]);
  });

  it("the call's trace counts its attempts and names the endpoint of the last one, for the log line", async () => {
    const { upstream } = wrapped(upstreamConfig(`[${A}, ${B}]`), async (_c, url) => {
      if (url === A) throw status(503);
      return answer(url);
    });
    const trace = { attempts: 0, endpoint: undefined as string | undefined };
    const traced: ResilientCall<ChatInput> = { ...call(), trace };
    await upstream.chat!(traced);
    expect(trace).toEqual({ attempts: 2, endpoint: B });
  });

  it.each([
    ["HTTP 400", status(400)],
    ["HTTP 401", status(401)],
    ["HTTP 429 without Retry-After", status(429)],
    ["a non-GatewayError", new TypeError("bug")],
  ])("%s is not retried", async (_name, failure) => {
    const { upstream, calls } = wrapped(upstreamConfig(`[${A}, ${B}]`), async () => {
      throw failure;
    });
    await expect(upstream.chat!(call())).rejects.toBe(failure);
    expect(calls).toHaveLength(1);
  });

  it("waits out a Retry-After that fits the deadline, and not one that does not", async () => {
    let n = 0;
    const { upstream, calls } = wrapped(upstreamConfig(`[${A}]`), async (_c, url) => {
      if (n++ === 0) throw status(429, { "retry-after": "1" });
      return answer(url);
    });
    const started = Date.now();
    expect((await upstream.chat!(call(3_000))).id).toBe(A);
    // A lower bound only: the wait's timer never fires early.
    expect(Date.now() - started).toBeGreaterThanOrEqual(990);
    expect(calls).toEqual([A, A]);

    n = 0;
    calls.length = 0;
    // Not waited out: the call fails before a timer of the Retry-After's 1 s, set first, fires.
    const retryAfter = timer(1_000);
    const err = await caught(upstream.chat!(call(800)));
    expect(retryAfter.fired).toBe(false);
    retryAfter.clear();
    expect([err.code, err.retryAfterMs]).toEqual([Code.ResourceExhausted, 1_000]);
    expect(calls).toEqual([A]);
  });

  it("retryDeadline (the caller's, in a coalesced flight) bounds retries", async () => {
    const { upstream, calls } = wrapped(upstreamConfig(`[${A}]`), async () => {
      throw status(429, { "retry-after": "1" });
    });
    const flight: ResilientCall<ChatInput> = { ...call(60_000), retryDeadline: Date.now() + 500 };
    const err = await caught(upstream.chat!(flight));
    expect(err.code).toBe(Code.ResourceExhausted);
    expect(calls).toEqual([A]);
  });

  it("an open breaker on every endpoint fails fast with CIRCUIT_OPEN and RetryInfo, without calling", async () => {
    const { upstream, calls } = wrapped(
      upstreamConfig(`[${A}]`, { breaker: { volumeThreshold: 2, resetTimeoutMs: 30000 }, retry: { maxAttempts: 1 } }),
      async () => {
        throw status(502);
      },
    );
    await caught(upstream.chat!(call()));
    await caught(upstream.chat!(call()));
    expect(calls).toHaveLength(2);
    // Fast: no attempt and no wait (the breaker stays open for 30 s). The call fails before a
    // 250 ms timer set first fires; it waits on nothing, so no load can reverse that order.
    const noWait = timer(250);
    const err = await caught(upstream.chat!(call()));
    expect(noWait.fired).toBe(false);
    noWait.clear();
    expect([err.code, err.reason]).toEqual([Code.Unavailable, Reason.CircuitOpen]);
    expect(err.retryAfterMs).toBeGreaterThan(29_000);
    expect(err.retryAfterMs).toBeLessThanOrEqual(30_000);
    expect(calls).toHaveLength(2);
    // A 502 is an answer: the model's breaker on the endpoint opened, not the endpoint's. Made at
    // the first failure (which began its run of two in a row), its window holds the second.
    expect(upstream.snapshot("m")[0]).toMatchObject({ state: "open", failures: 1 });
    expect(upstream.snapshot()[0]).toMatchObject({ state: "closed", failures: 0 });
  });

  it("the per-upstream concurrency limit refuses at once with OVERLOADED, no queue, breaker untouched", async () => {
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => (release = r));
    const { upstream, calls } = wrapped(upstreamConfig(`[${A}]`, { maxConcurrent: 2 }), async (_c, url) => {
      await gate;
      return answer(url);
    });
    const running = [upstream.chat!(call()), upstream.chat!(call())];
    const err = await caught(upstream.chat!(call()));
    expect([err.code, err.reason, err.retryAfterMs]).toEqual([Code.ResourceExhausted, Reason.Overloaded, 1_000]);
    expect(calls).toHaveLength(2);
    release();
    await Promise.all(running);
    expect(upstream.snapshot()[0]).toMatchObject({ state: "closed", failures: 0, inFlight: 0 });
    expect((await upstream.chat!(call())).id).toBe(A);
  });

  it("a stream that fails before its first event is retried elsewhere; the consumer sees one clean stream", async () => {
    const { upstream, calls } = wrapped(
      upstreamConfig(`[${A}, ${B}]`),
      async () => answer(""),
      async function* (_c, url) {
        if (url === A) throw refused;
        yield text("one");
        yield finalEvent();
      },
    );
    const events: GenerateResponse[] = [];
    for await (const e of upstream.generate!(call())) events.push(e);
    expect(events.map((e) => e.event.case)).toEqual(["textDelta", "final"]);
    expect(calls).toEqual([A, B]);
  });

  it("after the first event a failure passes through: no retry, no replay", async () => {
    const { upstream, calls } = wrapped(
      upstreamConfig(`[${A}, ${B}]`),
      async () => answer(""),
      async function* () {
        yield text("one");
        throw refused;
      },
    );
    const events: GenerateResponse[] = [];
    const err = await caught(
      (async () => {
        for await (const e of upstream.generate!(call())) events.push(e);
      })(),
    );
    // A connection that breaks after events went out is a truncated answer.
    expect([err.code, err.reason, err.message, err.cause]).toEqual([
      Code.Unavailable,
      Reason.StreamTruncated,
      'upstream "u" broke off the stream after 1 events',
      refused,
    ]);
    expect(events).toHaveLength(1);
    expect(calls).toHaveLength(1);
  });

  it("a stream that ends without its final event is STREAM_TRUNCATED (retried only with no event out)", async () => {
    let attempt = 0;
    const { upstream, calls } = wrapped(
      upstreamConfig(`[${A}]`, { retry: { maxAttempts: 2 } }),
      async () => answer(""),
      async function* () {
        attempt++;
        if (attempt === 2) yield text("partial");
      },
    );
    const err = await caught(
      (async () => {
        for await (const _ of upstream.generate!(call())) void _;
      })(),
    );
    expect([err.code, err.reason]).toEqual([Code.Unavailable, Reason.StreamTruncated]);
    expect(calls).toHaveLength(2);
  });

  it("a stream silent for streamIdleTimeoutMs after its first event fails with UNAVAILABLE and is aborted", async () => {
    let aborted: unknown;
    const { upstream } = wrapped(
      upstreamConfig(`[${A}]`, { streamIdleTimeoutMs: 100 }),
      async () => answer(""),
      async function* (c) {
        yield text("one");
        await new Promise((_, reject) => c.signal.addEventListener("abort", () => reject((aborted = c.signal.reason))));
      },
    );
    const started = Date.now();
    const err = await caught(
      (async () => {
        for await (const _ of upstream.generate!(call())) void _;
      })(),
    );
    expect([err.code, err.reason]).toEqual([Code.Unavailable, Reason.UpstreamTimeout]);
    expect(aborted).toBe(err);
    expect(Date.now() - started).toBeGreaterThanOrEqual(95);
  });

  it("ejects a failing endpoint of three: traffic moves to the others", async () => {
    const { upstream, calls } = wrapped(
      upstreamConfig(`[${A}, ${B}, ${C}]`, { retry: { maxAttempts: 1 }, outlierDetection: { consecutiveFailures: 2 } }),
      async (_c, url) => {
        if (url === B) throw status(500);
        return answer(url);
      },
    );
    for (let i = 0; i < 6; i++) await upstream.chat!(call()).catch(() => undefined);
    expect(calls).toEqual([A, B, C, A, B, C]);
    // A 500 is an answer: B is ejected for this model (the only one here), not for every model.
    expect(upstream.snapshot("m").map((s) => s.ejected)).toEqual([false, true, false]);
    expect(upstream.snapshot().map((s) => s.ejected)).toEqual([false, false, false]);
    calls.length = 0;
    for (let i = 0; i < 4; i++) await upstream.chat!(call());
    expect([...calls].sort()).toEqual([A, A, C, C]);
    expect(upstream.endpointStatus("m").map((s) => [s.endpoint, s.state, s.ejected, s.weight])).toEqual([
      [A, BreakerState.CLOSED, false, 1],
      [B, BreakerState.CLOSED, true, 1],
      [C, BreakerState.CLOSED, false, 1],
    ]);
  });

  it("endpoint weights from config steer round robin", async () => {
    const { upstream, calls } = wrapped(upstreamConfig(`[{url: "${A}", weight: 3}, ${B}]`), async (_c, url) => answer(url));
    for (let i = 0; i < 8; i++) await upstream.chat!(call());
    expect(calls.filter((u) => u === A)).toHaveLength(6);
    expect(upstream.snapshot().map((s) => s.weight)).toEqual([3, 1]);
  });

  it("the caller's cancel is never counted and never retried", async () => {
    const controller = new AbortController();
    const { upstream, calls } = wrapped(upstreamConfig(`[${A}, ${B}]`, { breaker: { volumeThreshold: 1 } }), (c) => {
      return new Promise((_, reject) => c.signal.addEventListener("abort", () => reject(c.signal.reason)));
    });
    const p = upstream.chat!(call(5_000, controller.signal));
    controller.abort(cancelled);
    await expect(p).rejects.toBe(cancelled);
    expect(calls).toHaveLength(1);
    expect(upstream.snapshot().map((s) => [s.state, s.failures])).toEqual([
      ["closed", 0],
      ["closed", 0],
    ]);
  });
});

describe("config", () => {
  it("shows endpoints without credentials, query or fragment", () => {
    expect(displayUrl("https://user:secret@api.example.com/v1?key=abc#x")).toBe("https://api.example.com/v1");
    expect(displayUrl("http://127.0.0.1:8000/")).toBe("http://127.0.0.1:8000");
  });

  it("defaults of the resilience settings", () => {
    const u = upstreamConfig("[]");
    const config = parseConfig("upstreams: [{name: u, kind: mock}]\nmodels: [{name: m, upstream: u}]", "(t)", {});
    expect(u.endpointWeights).toEqual([]);
    expect(config.server.maxConcurrentCalls).toBeUndefined();
    expect(config.models[0]!.fallbacks).toEqual([]);
    expect(config.upstreams[0]!.resilience).toEqual({
      loadBalancing: "roundRobin",
      streamIdleTimeoutMs: 60_000,
      slowFailureMs: 500,
      retry: { maxAttempts: 3, backoffBaseMs: 25, backoffMaxMs: 1_000, budgetPercent: 20, minRetryConcurrency: 3 },
      breaker: { enabled: true, errorThresholdPercent: 50, volumeThreshold: 10, windowMs: 10_000, resetTimeoutMs: 10_000 },
      outlierDetection: { consecutiveFailures: 5, baseEjectionMs: 30_000, maxEjectionMs: 300_000, maxEjectionPercent: 10 },
    });
  });

  it.each([
    ["unknown fallback", "[{name: a, upstream: u, fallbacks: [nope]}]", 'models[0].fallbacks[0]: no model named "nope"'],
    ["self", "[{name: a, upstream: u, fallbacks: [a]}]", "models[0].fallbacks[0]: a model cannot be its own fallback"],
    [
      "twice",
      "[{name: a, upstream: u, fallbacks: [b, b]}, {name: b, upstream: u}]",
      'models[0].fallbacks[1]: fallback "b" is listed twice',
    ],
    [
      "missing capability",
      "[{name: a, upstream: u, fallbacks: [b]}, {name: b, upstream: u, capabilities: [chat]}]",
      'models[0].fallbacks[0]: fallback "b" cannot serve predict, generate, which "a" serves',
    ],
  ])("rejects a fallback: %s", (_name, models, message) => {
    let err: unknown;
    try {
      parseConfig(`upstreams: [{name: u, kind: mock}]\nmodels: ${models}`, "(t)", {});
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).issues.map((i) => `${i.path}: ${i.message}`)).toEqual([message]);
  });

  it("rejects a bad endpoint weight", () => {
    expect(() =>
      parseConfig(`upstreams: [{name: u, kind: mock, endpoints: [{url: "http://x", weight: 0}]}]\nmodels: [{name: m, upstream: u}]`, "(t)", {}),
    ).toThrow(/upstreams\[0\]\.endpoints\[0\]/);
  });
});

describe("gateway: fallbacks, provenance, shedding and abort (in memory)", () => {
  const yaml = `
server: { maxConcurrentCalls: 2 }
upstreams:
  - { name: broken, kind: mock, options: { failCode: UNAVAILABLE }, resilience: { retry: { maxAttempts: 2, backoffBaseMs: 1 } } }
  - { name: ok, kind: mock }
models:
  - { name: a, upstream: broken, fallbacks: [b], capabilities: [chat, generate] }
  - { name: b, upstream: ok, capabilities: [chat, generate] }
  - { name: solo, upstream: broken, capabilities: [chat, generate] }
`;
  const user = (text: string) => [{ role: Role.USER, content: [{ part: { case: "text" as const, value: text } }] }];

  it("a failing model's fallback answers, and the answer and the header name it", async () => {
    const { client } = memoryClient(yaml);
    let served: string | null = null;
    const res = await client.chat({ model: "a", messages: user("hi") }, { onHeader: (h) => (served = h.get("infergate-served-by")) });
    expect([res.model, res.upstream, served]).toEqual(["b", "ok", "b/ok"]);

    const headers: (string | null)[] = [];
    for (let i = 0; i < 2; i++) {
      const events: GenerateResponse[] = [];
      for await (const e of client.generate({ model: "a", messages: user("x y"), temperature: 0 }, { onHeader: (h) => headers.push(h.get("infergate-served-by")) })) {
        events.push(e);
      }
      const last = events.at(-1)!.event;
      expect(last.case === "final" && [last.value.model, last.value.upstream, last.value.cached]).toEqual(["b", "ok", i === 1]);
    }
    // The second stream is a cache hit: the header still names who served the stored answer.
    expect(headers).toEqual(["b/ok", "b/ok"]);
  });

  it("without fallbacks, the upstream's own error after its retries", async () => {
    const { client } = memoryClient(yaml);
    const err = await client.chat({ model: "solo", messages: user("hi") }).then(() => undefined, (e: unknown) => ConnectError.from(e));
    expect([err?.code, err?.rawMessage]).toEqual([Code.Unavailable, "mock upstream: injected UNAVAILABLE"]);
  });

  it("the global concurrency limit sheds at once with OVERLOADED; abortInFlight ends streams with its reason", async () => {
    const config = parseConfig(yaml, "(test)", {});
    const gateway = createGateway(createRouter(config, new Map(config.upstreams.map((u) => [u.name, createUpstream(u)]))), {
      maxConcurrentCalls: config.server.maxConcurrentCalls,
    });
    const client = createClient(InferenceService, createRouterTransport(inferenceRoutes(gateway, 60_000)));
    const slow = { model: "b", messages: user("one two three four five six"), metadata: { "mock.token_delay_ms": "200" } };
    const streams = [client.generate(slow)[Symbol.asyncIterator](), client.generate(slow)[Symbol.asyncIterator]()];
    await Promise.all(streams.map((s) => s.next()));
    const shed = await client.chat({ model: "b", messages: user("hi") }).then(() => undefined, (e: unknown) => ConnectError.from(e));
    expect([shed?.code, shed?.rawMessage]).toEqual([Code.ResourceExhausted, "the gateway is at its limit of 2 concurrent calls; retry later"]);
    gateway.abortInFlight(new GatewayError(Code.Unavailable, "shutting down", { reason: Reason.ShuttingDown }));
    for (const s of streams) {
      const e = await s.next().then(() => undefined, (x: unknown) => ConnectError.from(x));
      expect([e?.code, e?.rawMessage]).toEqual([Code.Unavailable, "shutting down"]);
    }
    await gateway.idle();
    expect(gateway.inFlight()).toBe(0);
  });

  it("a listener's encoding of the answer is done before the call is reported, and counts in its latency", async () => {
    const config = parseConfig("upstreams: [{ name: mock, kind: mock }]\nmodels: [{ name: b, upstream: mock }]\n", "(test)", {});
    const order: string[] = [];
    const records: CallRecord[] = [];
    const gateway = createGateway(createRouter(config, new Map(config.upstreams.map((u) => [u.name, createUpstream(u)]))), {
      onCall: (r) => {
        order.push("report");
        records.push(r);
      },
    });
    const ctx = createCallContext({ timeoutMs: undefined, maxTimeoutMs: 60_000, timeoutHeader: "grpc-timeout" });
    ctx.encodeAnswer = () => {
      order.push("encode");
      // An encoding that takes 30 ms, as a big tensor's could.
      const until = performance.now() + 30;
      while (performance.now() < until);
    };
    const input = (name: string) => ({ name, datatype: DataType.INT32, shape: [2n], data: { case: "contents" as const, value: { intContents: [1, 2] } } });
    const res = await gateway.predict(create(PredictRequestSchema, { model: "b", inputs: [input("x"), input("y")] }), ctx);
    ctx.dispose();
    expect(res.outputs.length).toBeGreaterThan(0);
    expect(order).toEqual(["encode", "report"]);
    expect(records[0]!.latencyMs).toBeGreaterThanOrEqual(30);
  });

  it("a call's reported latency covers the work it does before its first wait (a cache hit without admission)", async () => {
    const config = parseConfig(yaml, "(test)", {});
    const cache = new ResponseCache(config.cache, 60_000);
    const records: CallRecord[] = [];
    const gateway = createGateway(createRouter(config, new Map(config.upstreams.map((u) => [u.name, createUpstream(u)]))), {
      cache,
      onCall: (r) => records.push(r),
    });
    const client = createClient(InferenceService, createRouterTransport(inferenceRoutes(gateway, 60_000)));
    const req = { model: "b", messages: user("hi"), temperature: 0 };
    await client.chat(req);
    // The hit's lookup takes 30 ms here, all of it synchronous, as a large request's key would.
    const chat = cache.chat.bind(cache);
    cache.chat = (...args) => {
      const until = performance.now() + 30;
      while (performance.now() < until);
      return chat(...args);
    };
    const hit = await client.chat(req);
    expect(hit.cached).toBe(true);
    expect(records).toHaveLength(2);
    expect(records[1]!.cache).toBe("hit");
    expect(records[1]!.latencyMs).toBeGreaterThanOrEqual(30);
  });
});
