/**
 * The real `infergate` process: grpc.health.v1 while serving, and a graceful stop on SIGTERM —
 * health turns NOT_SERVING, new calls are refused, the call in flight finishes, exit code 0.
 * The client is grpc-js with proto/ loaded at run time; it shares no code with the server.
 */
import { once } from "node:events";
import { status } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import {
  errorInfoOf,
  expectServiceError,
  healthClient,
  inferenceClient,
  type ProtoClient,
  statusDetails,
} from "../helpers/proto-clients.js";
import { type ServerProcess, startProcess } from "../helpers/servers.js";

interface HealthCheckResponse {
  status: string;
}

describe("health and graceful shutdown of the infergate process", () => {
  let server: ServerProcess | undefined;
  const clients: ProtoClient[] = [];

  function track(client: ProtoClient): ProtoClient {
    clients.push(client);
    return client;
  }

  afterEach(async () => {
    for (const c of clients.splice(0)) {
      c.close();
    }
    const s = server;
    server = undefined;
    if (s !== undefined && s.proc.exitCode === null && s.proc.signalCode === null) {
      const exited = once(s.proc, "exit");
      s.proc.kill("SIGKILL");
      await exited;
    }
  });

  it("answers Check for the server and the service, NOT_FOUND for others", async () => {
    server = await startProcess();
    const health = track(healthClient(server.grpcAddress));

    expect(await health.unary<HealthCheckResponse>("Check", { service: "" })).toEqual({ status: "SERVING" });
    expect(await health.unary<HealthCheckResponse>("Check", { service: "infergate.v1.InferenceService" })).toEqual({
      status: "SERVING",
    });
    const err = await expectServiceError(health.unary("Check", { service: "no.such.Service" }));
    expect(err.code).toBe(status.NOT_FOUND);

    const watch = health.serverStream<HealthCheckResponse>("Watch", { service: "infergate.v1.InferenceService" });
    expect(await watch.waitFor(() => true, 5_000)).toEqual({ status: "SERVING" });
    watch.call.cancel();
    expect((await watch.done).status.code).toBe(status.CANCELLED);
  });

  it("on SIGTERM turns NOT_SERVING, refuses new calls, finishes the stream in flight and exits 0", async () => {
    const s = await startProcess();
    server = s;
    const exited = once(s.proc, "exit") as Promise<[number | null, NodeJS.Signals | null]>;
    const health = track(healthClient(s.grpcAddress));
    const inference = track(inferenceClient(s.grpcAddress));

    const watch = health.serverStream<HealthCheckResponse>("Watch", { service: "" }, { timeoutMs: 25_000 });
    expect(await watch.waitFor(() => true, 5_000)).toEqual({ status: "SERVING" });

    const words = "one two three four five six seven eight nine ten";
    const generate = inference.serverStream<Record<string, unknown>>(
      "Generate",
      {
        model: "mock-chat",
        messages: [{ role: "ROLE_USER", content: [{ text: words }] }],
        metadata: { "mock.token_delay_ms": "100" },
      },
      { timeoutMs: 20_000 },
    );
    expect(await generate.waitFor(() => true, 5_000)).toEqual({ text_delta: "You", event: "text_delta" });

    s.proc.kill("SIGTERM");

    expect(await watch.waitFor((e) => e.status === "NOT_SERVING", 5_000)).toEqual({ status: "NOT_SERVING" });
    // The stream (12 words, 100 ms apart) is still going: the stop really happened mid-stream.
    expect(generate.finished).toBe(false);
    expect(generate.events.length).toBeLessThan(12);

    // New calls after SIGTERM are refused: on the connection the server is closing (GOAWAY) and on
    // a brand-new one (the listener is closed).
    for (const client of [inference, track(inferenceClient(s.grpcAddress, { "grpc.use_local_subchannel_pool": 1 }))]) {
      const err = await expectServiceError(
        client.unary("Chat", { model: "mock-chat", messages: [{ role: "ROLE_USER", content: [{ text: "late" }] }] }, { timeoutMs: 5_000 }),
      );
      expect(err.code).toBe(status.UNAVAILABLE);
      // Either the connection was refused (no details), or the gateway answered SHUTTING_DOWN.
      if (err.metadata.get("grpc-status-details-bin").length > 0) {
        expect(errorInfoOf(statusDetails(err))).toEqual({ reason: "SHUTTING_DOWN", domain: "infergate", metadata: {} });
      }
    }

    // The call in flight finishes with every word, the final event last, and status OK.
    const result = await generate.done;
    expect(result.error).toBeUndefined();
    expect(result.status.code).toBe(status.OK);
    const expectedDeltas = `You said: ${words}`.match(/\s*\S+/g)!;
    expect(expectedDeltas).toHaveLength(12);
    expect(result.events).toEqual([
      ...expectedDeltas.map((text_delta) => ({ text_delta, event: "text_delta" })),
      {
        event: "final",
        final: {
          id: expect.stringMatching(/^mock-[0-9a-f]{16}$/),
          finish_reason: "FINISH_REASON_STOP",
          usage: { prompt_tokens: 10, completion_tokens: 12, total_tokens: 22, cached_prompt_tokens: 0, cache_creation_tokens: 0, reasoning_tokens: 0 },
          model: "mock-chat",
          model_version: "1",
          upstream: "mock",
          cached: false,
          stop_sequence: "",
        },
      },
    ]);

    // The process exits by itself, with code 0 (no second signal is sent).
    const [code, signal] = await exited;
    expect(signal).toBeNull();
    expect(code).toBe(0);
    expect(s.lines.some((l) => l.includes('"msg":"stopped"'))).toBe(true);

    // The Watch stream ends when the server goes away; it never saw SERVING again.
    const watched = await watch.done;
    expect(watched.status.code).not.toBe(status.OK);
    expect(watched.events).toEqual([{ status: "SERVING" }, { status: "NOT_SERVING" }]);
  });
});
