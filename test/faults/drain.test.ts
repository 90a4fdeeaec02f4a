/**
 * Fault scenarios 21 and 22 (issue 6): the real `infergate` process gets SIGTERM while Generate
 * streams from a real upstream are in flight. Streams that finish within the grace period finish
 * normally; a stream still open at its end gets UNAVAILABLE SHUTTING_DOWN (never a clean end, not a
 * dropped connection), its upstream request is aborted, and the process exits 0.
 */
import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { inferenceClient, type ProtoClient } from "../helpers/proto-clients.js";
import { type ServerProcess, startProcess } from "../helpers/servers.js";
import { chatRequest, closedAfterEach, deltas, seen } from "./helpers/harness.js";
import { tokens } from "./helpers/scripted-upstream.js";

const { later, scripted } = closedAfterEach();

/** Starts the infergate process with `yaml` as its config file. */
async function startWithConfig(yaml: string): Promise<{ server: ServerProcess; client: ProtoClient; exited: Promise<[number | null, NodeJS.Signals | null]> }> {
  const dir = await mkdtemp(join(tmpdir(), "infergate-drain-"));
  later(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, "config.yaml");
  await writeFile(path, yaml);
  const server = await startProcess(["--config", path]);
  const exited = once(server.proc, "exit") as Promise<[number | null, NodeJS.Signals | null]>;
  later(async () => {
    if (server.proc.exitCode === null && server.proc.signalCode === null) {
      server.proc.kill("SIGKILL");
      await exited;
    }
  });
  const client = inferenceClient(server.grpcAddress);
  later(async () => client.close());
  return { server, client, exited };
}

function config(upstreamUrl: string, graceMs: number): string {
  return `
server:
  shutdownGraceMs: ${graceMs}
upstreams:
  - name: llm
    kind: openai
    endpoints: ["${upstreamUrl}"]
models:
  - name: chat
    upstream: llm
`;
}

type Event = Record<string, unknown>;

describe("fault scenarios: drain on SIGTERM", () => {
  it("21. SIGTERM with 50 streams in flight: every stream completes, then the process exits 0", async () => {
    const up = await scripted(() => ({ kind: "answer", tokens: tokens(10), delayMs: 60 }));
    const { server, client, exited } = await startWithConfig(config(up.baseUrl, 10_000));
    const streams = Array.from({ length: 50 }, (_, i) =>
      client.serverStream<Event>("Generate", chatRequest("chat", `stream ${i}`), { timeoutMs: 20_000 }),
    );
    await Promise.all(streams.map((s) => s.waitFor(() => true, 10_000)));
    server.proc.kill("SIGTERM");
    const results = await Promise.all(streams.map((s) => s.done));
    for (const r of results) {
      expect(r.status.code).toBe(status.OK);
      expect(deltas(r.events)).toEqual(tokens(10));
      expect(r.events.at(-1)).toMatchObject({ event: "final", final: { model: "chat", upstream: "llm" } });
    }
    expect(await exited).toEqual([0, null]);
    expect(up.requests).toHaveLength(50);
    expect(up.requests.filter((r) => r.finishedAt !== undefined && r.abortedAt === undefined)).toHaveLength(50);
  });

  it("22. SIGTERM with a stream longer than the grace period: that stream ends UNAVAILABLE SHUTTING_DOWN", async () => {
    const up = await scripted((i) =>
      i === 0 ? { kind: "answer", tokens: tokens(200), delayMs: 50 } : { kind: "answer", tokens: tokens(3), delayMs: 50 },
    );
    const { server, client, exited } = await startWithConfig(config(up.baseUrl, 600));
    const long = client.serverStream<Event>("Generate", chatRequest("chat", "long"), { timeoutMs: 30_000 });
    await long.waitFor(() => true, 10_000);
    const short = client.serverStream<Event>("Generate", chatRequest("chat", "short"), { timeoutMs: 30_000 });
    await short.waitFor(() => true, 10_000);
    const signalled = Date.now();
    server.proc.kill("SIGTERM");

    const s = await short.done;
    expect([s.status.code, deltas(s.events)]).toEqual([status.OK, tokens(3)]);

    const r = await long.done;
    const ended = Date.now() - signalled;
    // The reason says what ended the stream: the drain, at the end of the grace period, and not
    // the upstream, which still had most of its 10 s answer to send.
    expect(r.status.code).toBe(status.UNAVAILABLE);
    expect(seen(r.error!)).toEqual({
      code: status.UNAVAILABLE,
      message: "the gateway shut down before the call finished; retry on another instance",
      reason: "SHUTTING_DOWN",
      metadata: {},
      retryAfterMs: undefined,
    });
    // The tokens that were sent are a prefix of the answer; there is no final event.
    const got = deltas(r.events);
    expect(got.length).toBeGreaterThan(5);
    expect(got).toEqual(tokens(200).slice(0, got.length));
    expect(r.events.some((e) => e["event"] === "final")).toBe(false);
    // A lower bound only: the grace period's timer never fires early.
    expect(ended).toBeGreaterThanOrEqual(550);

    expect(await exited).toEqual([0, null]);
    await up.waitIdle();
    expect(up.requests[0]!.abortedAt).toBeDefined();
    expect(up.requests[0]!.finishedAt).toBeUndefined();
    expect(up.requests[1]!.finishedAt).toBeDefined();
  });
});
