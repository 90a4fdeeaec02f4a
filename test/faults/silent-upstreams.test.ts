/**
 * Issue 17, defect 5: upstreams that accept a connection and never answer. Attempts cut by the
 * caller's deadline while the upstream sent nothing count as failures of the endpoint (slow
 * failures); failures in a row open a breaker however long they took; connect and first-byte
 * timeouts, per upstream or per endpoint, end a silent attempt early so that it is retried
 * elsewhere and its endpoint ejected (docs/resilience.md, "Silent upstreams").
 *
 * Real loopback ports throughout: an HTTP server that reads each request and never answers
 * (scripted upstream, behaviour `hang`), and a TCP server that accepts and never says anything
 * (no HTTP/2 settings for a gRPC channel). No assertion reads a clock: what counts is the order
 * of events, what the upstreams received, ListModels and the metrics.
 */
import { status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { closedAfterEach, chatRequest, failure, type Gateway, unaryWithHeaders } from "./helpers/harness.js";
import { type ScriptedUpstream, startBlackhole, startScriptedUpstream } from "./helpers/scripted-upstream.js";

const { gateway, later, scripted } = closedAfterEach();
const silentHttp = (): Promise<ScriptedUpstream> => scripted(() => ({ kind: "hang" }));

interface ModelsList {
  models: { name: string; state: string; endpoints: { endpoint: string; state: string; ejected: boolean }[] }[];
}

async function listed(g: Gateway, model: string): Promise<ModelsList["models"][number]> {
  const res = await g.client.unary<ModelsList>("ListModels", {});
  return res.models.find((m) => m.name === model)!;
}

/**
 * The status code of a call that must fail. For calls cut by their deadline: on a busy machine the
 * client's own timer may fire before the gateway's answer arrives (src/core/call-context.ts,
 * DEADLINE_MARGIN_MS), with the same code and without the gateway's ErrorInfo.
 */
async function codeOf(call: Promise<unknown>): Promise<number> {
  try {
    await call;
  } catch (err) {
    return (err as { code: number }).code;
  }
  throw new Error("the call succeeded; an error status was expected");
}

/** One counter of infergate_requests_total from the admin listener's /metrics (0 when absent). */
async function requestsTotal(g: Gateway, rpc: string, model: string, code: string): Promise<number> {
  const text = await (await fetch(`http://${g.app.adminAddress}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`infergate_requests_total{rpc="${rpc}",model="${model}",code="${code}"} `));
  return line === undefined ? 0 : Number(line.split(" ").at(-1));
}

describe("silent upstreams (issue 17, defect 5)", () => {
  it("callers with 2 s deadlines against an HTTP upstream that never answers (timeoutMs 60 s): the breaker opens at the volume threshold, then calls fail fast or fall back", async () => {
    const up = await silentHttp();
    // Every resilience setting at its default but the volume threshold and the reset timeout.
    const g = await gateway(`
upstreams:
  - name: silent
    kind: openai
    endpoints: ["${up.baseUrl}"]
    resilience: { breaker: { volumeThreshold: 3, resetTimeoutMs: 60000 } }
  - { name: local, kind: mock }
models:
  - { name: chat, upstream: silent, cache: { policy: "off" } }
  - { name: chat-with-backup, upstream: silent, upstreamModel: other, fallbacks: [backup], cache: { policy: "off" } }
  - { name: backup, upstream: local, capabilities: [chat, generate] }
`);
    for (let i = 0; i < 3; i++) {
      expect(await codeOf(g.client.unary("Chat", chatRequest("chat", `call ${i}`), { timeoutMs: 2_000 }))).toBe(status.DEADLINE_EXCEEDED);
      // Each attempt reached the upstream, which read it and said nothing.
      expect(up.requests).toHaveLength(i + 1);
    }
    await up.waitIdle();
    expect(up.requests.every((r) => r.abortedAt !== undefined && r.finishedAt === undefined)).toBe(true);

    // Three slow failures: the endpoint's breaker is open, for every model it serves.
    const chat = await listed(g, "chat");
    expect([chat.state, chat.endpoints.map((e) => e.state)]).toEqual(["MODEL_STATE_NOT_READY", ["BREAKER_STATE_OPEN"]]);
    expect((await listed(g, "chat-with-backup")).endpoints.map((e) => e.state)).toEqual(["BREAKER_STATE_OPEN"]);

    // The next call fails at once with the breaker's error; the upstream sees nothing of it.
    const open = await failure(g.client.unary("Chat", chatRequest("chat", "after"), { timeoutMs: 5_000 }));
    expect([open.code, open.reason, open.metadata]).toEqual([status.UNAVAILABLE, "CIRCUIT_OPEN", { upstream: "silent" }]);
    expect(open.retryAfterMs).toBeGreaterThan(0);
    // A model with a fallback is served by it at once.
    const served = await unaryWithHeaders<{ model: string; upstream: string }>(g.client, "Chat", chatRequest("chat-with-backup", "to the backup"), 5_000);
    expect([served.response.model, served.response.upstream, served.headers["infergate-served-by"]]).toEqual(["backup", "local", "backup/local"]);
    expect(up.requests).toHaveLength(3);

    // The metrics say the same: three deadlines, then the breaker's UNAVAILABLE.
    expect(await requestsTotal(g, "Chat", "chat", "DEADLINE_EXCEEDED")).toBe(3);
    expect(await requestsTotal(g, "Chat", "chat", "UNAVAILABLE")).toBe(1);
    expect(await requestsTotal(g, "Chat", "chat-with-backup", "OK")).toBe(1);
  });

  it("sequential attempts each ended by timeoutMs, too slow to fill the window, open the breaker after volumeThreshold failures in a row", async () => {
    const up = await silentHttp();
    // Each attempt takes 400 ms: at most two or three of them are ever in the 1 s window, never
    // the four of the volume threshold.
    const g = await gateway(`
upstreams:
  - name: silent
    kind: openai
    endpoints: ["${up.baseUrl}"]
    timeoutMs: 400
    resilience: { retry: { maxAttempts: 1 }, breaker: { volumeThreshold: 4, windowMs: 1000, resetTimeoutMs: 60000 } }
models:
  - { name: chat, upstream: silent, cache: { policy: "off" } }
`);
    for (let i = 0; i < 4; i++) {
      const err = await failure(g.client.unary("Chat", chatRequest("chat", `call ${i}`), { timeoutMs: 10_000 }));
      expect([err.code, err.reason]).toEqual([status.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT"]);
    }
    expect((await listed(g, "chat")).endpoints.map((e) => e.state)).toEqual(["BREAKER_STATE_OPEN"]);
    const err = await failure(g.client.unary("Chat", chatRequest("chat", "after"), { timeoutMs: 10_000 }));
    expect([err.code, err.reason]).toEqual([status.UNAVAILABLE, "CIRCUIT_OPEN"]);
    expect(up.requests).toHaveLength(4);
  });

  it("a first-byte timeout on one endpoint: its silent attempts are retried on the other at once, and it is ejected", async () => {
    const silent = await silentHttp();
    const healthy = await startScriptedUpstream();
    later(() => healthy.close());
    const g = await gateway(`
upstreams:
  - name: pool
    kind: openai
    endpoints: ["${healthy.baseUrl}", { url: "${silent.baseUrl}", firstByteTimeoutMs: 200 }]
    resilience: { retry: { backoffBaseMs: 5 }, outlierDetection: { consecutiveFailures: 2 } }
models:
  - { name: chat, upstream: pool, cache: { policy: "off" } }
`);
    for (let i = 0; i < 8; i++) {
      // A deadline far longer than the first-byte timeout: only that timeout can end the silent attempts.
      const res = await g.client.unary<{ message: { content: { text: string }[] } }>("Chat", chatRequest("chat", `call ${i}`), { timeoutMs: 20_000 });
      expect(res.message.content).toEqual([{ text: "scripted answer", part: "text", cache_breakpoint: null }]);
    }
    // Two silent attempts in a row ejected it (for every model: nothing came back, the endpoint's
    // fault); every call was answered by the healthy endpoint.
    expect(silent.requests).toHaveLength(2);
    expect(healthy.requests).toHaveLength(8);
    await silent.waitIdle();
    expect(silent.requests.every((r) => r.abortedAt !== undefined)).toBe(true);
    expect((await listed(g, "chat")).endpoints.map((e) => [e.endpoint, e.ejected])).toEqual([
      [healthy.baseUrl, false],
      [silent.baseUrl, true],
    ]);
  });

  describe("gRPC (kind kserve) against a TCP server that accepts and never speaks", () => {
    const predict = (model: string) => ({
      model,
      inputs: [{ name: "INPUT0", datatype: "DATA_TYPE_FP32", shape: ["1"], contents: { fp32_contents: [1] } }],
    });

    async function blackholeGateway(extra: string): Promise<{ g: Gateway; hole: Awaited<ReturnType<typeof startBlackhole>> }> {
      const hole = await startBlackhole();
      later(() => hole.close());
      const g = await gateway(`
upstreams:
  - name: triton
    kind: kserve
    endpoints: ["${hole.url}"]
    ${extra}
models:
  - { name: m, upstream: triton, upstreamModel: simple, cache: { policy: "off" } }
`);
      return { g, hole };
    }

    it("calls with 2 s deadlines: slow failures open the breaker", async () => {
      const { g, hole } = await blackholeGateway("resilience: { breaker: { volumeThreshold: 2, resetTimeoutMs: 60000 } }");
      for (let i = 0; i < 2; i++) {
        expect(await codeOf(g.client.unary("Predict", predict("m"), { timeoutMs: 2_000 }))).toBe(status.DEADLINE_EXCEEDED);
      }
      expect((await listed(g, "m")).endpoints.map((e) => e.state)).toEqual(["BREAKER_STATE_OPEN"]);
      const err = await failure(g.client.unary("Predict", predict("m"), { timeoutMs: 5_000 }));
      expect([err.code, err.reason]).toEqual([status.UNAVAILABLE, "CIRCUIT_OPEN"]);
      expect(hole.connections).toBeGreaterThan(0);
    });

    it("a connect timeout ends each attempt (UNAVAILABLE, retried); the breaker opens after them", async () => {
      const { g } = await blackholeGateway(
        "connectTimeoutMs: 200\n    resilience: { retry: { maxAttempts: 2, backoffBaseMs: 5 }, breaker: { volumeThreshold: 4, resetTimeoutMs: 60000 } }",
      );
      for (let i = 0; i < 2; i++) {
        // The deadline is far away: the connect timeout ended both attempts of each call.
        const err = await failure(g.client.unary("Predict", predict("m"), { timeoutMs: 20_000 }));
        expect(err).toMatchObject({
          code: status.UNAVAILABLE,
          reason: "UPSTREAM_UNAVAILABLE",
          message: 'upstream "triton" could not be reached: not connected within its connect timeout of 200ms',
          metadata: { upstream: "triton", attempts: "2" },
        });
      }
      expect((await listed(g, "m")).endpoints.map((e) => e.state)).toEqual(["BREAKER_STATE_OPEN"]);
    });
  });
});
