import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Role } from "../../gen/infergate/v1/chat_pb.js";
import { InferenceService } from "../../gen/infergate/v1/inference_service_pb.js";
import { parseMetrics } from "../helpers/metrics.js";
import { type ServerProcess, startProcess } from "../helpers/servers.js";

let server: ServerProcess;
beforeAll(async () => {
  server = await startProcess();
});
afterAll(async () => {
  await server.stop();
});

const msg = (t: string) => [{ role: Role.USER, content: [{ part: { case: "text" as const, value: t } }] }];

describe("metrics, health endpoints and per-call logs", () => {
  it("counts a scripted run exactly, with bounded labels, and logs one line per call with the request id", async () => {
    const client = createClient(InferenceService, createGrpcTransport({ baseUrl: `http://${server.grpcAddress}` }));
    let echoed: string | null = null;
    await client.chat({ model: "mock-chat", messages: msg("a b c") }, { headers: { "x-request-id": "req-abc-123" }, onHeader: (h) => (echoed = h.get("x-request-id")) });
    expect(echoed).toBe("req-abc-123");
    await client.chat({ model: "mock-chat", messages: msg("d"), temperature: 0 });
    await client.chat({ model: "mock-chat", messages: msg("d"), temperature: 0 });
    for await (const _ of client.generate({ model: "mock-chat", messages: msg("one two") })) {
      // drain
    }
    for (const junk of ["nope-1", "nope-2", "nope-3"]) {
      const err = await client.chat({ model: junk, messages: msg("x") }).catch((e: unknown) => ConnectError.from(e));
      expect((err as ConnectError).code).toBe(Code.NotFound);
    }

    const res = await fetch(`http://${server.adminAddress}/metrics`);
    expect(res.status).toBe(200);
    const m = parseMetrics(await res.text());
    expect(m.get('infergate_requests_total{rpc="Chat",model="mock-chat",code="OK"}')).toBe(3);
    expect(m.get('infergate_requests_total{rpc="Generate",model="mock-chat",code="OK"}')).toBe(1);
    // Unknown model names share one label value: callers cannot grow the label set.
    expect(m.get('infergate_requests_total{rpc="Chat",model="other",code="NOT_FOUND"}')).toBe(3);
    expect([...m.keys()].some((k) => k.includes("nope-"))).toBe(false);
    // "You said: a b c" (5), "You said: d" twice, the hit included (3 + 3), "You said: one two" (4).
    // The mock reports no cached or reasoning tokens: every token is of the plain kind.
    expect(m.get('infergate_tokens_total{model="mock-chat",direction="completion",kind="completion"}')).toBe(5 + 3 + 3 + 4);
    expect([...m.keys()].filter((k) => k.startsWith("infergate_tokens_total{") && !/kind="(prompt|completion)"/.test(k))).toEqual([]);
    expect(m.get("infergate_cache_hits_total")).toBe(1);
    expect(m.get("infergate_cache_misses_total")).toBe(1);
    expect(m.get('infergate_time_to_first_token_seconds_count{model="mock-chat"}')).toBe(1);
    expect(m.get("infergate_in_flight_calls")).toBe(0);

    expect((await fetch(`http://${server.adminAddress}/healthz`)).status).toBe(200);
    expect((await fetch(`http://${server.adminAddress}/readyz`)).status).toBe(200);

    // Log lines are buffered (one write per 8 KiB or 25 ms): they arrive while the process runs
    // (it is stopped only after this test), though the seven lines are far from 8 KiB.
    const callLines = () => server.lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((r) => r["msg"] === "call");
    await expect.poll(() => callLines().length, { timeout: 10_000 }).toBe(7);
    const calls = callLines();
    expect(calls[0]).toMatchObject({ requestId: "req-abc-123", rpc: "Chat", model: "mock-chat", upstream: "mock", code: "OK", cache: "bypass", promptTokens: 3, completionTokens: 5 });
    // One upstream attempt; the mock runs in process, so there is no endpoint URL to name.
    expect(calls[0]!["attempts"]).toBe(1);
    expect(calls[0]!["endpoint"]).toBeUndefined();
    // A hit and an unknown model make no attempt.
    expect(calls[2]).toMatchObject({ cache: "hit", attempts: 0 });
    expect(calls[4]).toMatchObject({ code: "NOT_FOUND", attempts: 0 });
    // Prompts and completions are not logged by default.
    expect(server.lines.join("\n")).not.toContain("a b c");
  });
});

describe("a log reader that goes away", () => {
  it("does not take the process down: calls are still answered and SIGTERM still drains to exit 0", async () => {
    const own = await startProcess();
    try {
      // The reading end of stdout closes: every later write gets EPIPE.
      own.proc.stdout!.destroy();
      const client = createClient(InferenceService, createGrpcTransport({ baseUrl: `http://${own.grpcAddress}` }));
      for (let i = 0; i < 20; i++) {
        const res = await client.chat({ model: "mock-chat", messages: msg(`call ${i}`) });
        expect(res.message?.content[0]?.part.value).toBe(`You said: call ${i}`);
        // A warning (an unknown model) is written at once, not batched.
        await expect(client.chat({ model: "nope", messages: msg("x") })).rejects.toThrow();
      }
      await new Promise((r) => setTimeout(r, 100));
      expect(own.proc.exitCode).toBeNull();
    } finally {
      expect(await own.stop()).toBe(0);
    }
    expect(own.stderr).not.toMatch(/EPIPE|Error/);
  });

  it("a reader that stops reading does not freeze the process: calls go on being answered", async () => {
    const own = await startProcess();
    try {
      // The reader stops: the pipe (64 KiB) and the reader's buffer fill with log lines, and then
      // every write(2) to stdout finds it full.
      own.proc.stdout!.pause();
      const client = createClient(InferenceService, createGrpcTransport({ baseUrl: `http://${own.grpcAddress}` }));
      const started = Date.now();
      // Each call logs a line and each unknown model a warning, written at once: well over
      // 200 KiB of log lines in all.
      for (let i = 0; i < 400; i++) {
        const res = await client.chat({ model: "mock-chat", messages: msg(`call ${i} ${"y".repeat(200)}`) }, { timeoutMs: 5_000 });
        expect(res.message?.content[0]?.part.value).toContain(`call ${i}`);
        await expect(client.chat({ model: "nope", messages: msg("x") }, { timeoutMs: 5_000 })).rejects.toThrow(/nope/);
      }
      // At most one flush waited (a second), then the writer stopped waiting for this reader.
      expect(Date.now() - started).toBeLessThan(20_000);
    } finally {
      own.proc.stdout!.resume();
      expect(await own.stop()).toBe(0);
    }
    expect(own.stderr).not.toMatch(/Error/);
  }, 60_000);
});
