/**
 * infergate through the real `buf curl`: on the gRPC listener with nothing but server reflection
 * for the schema, and on the HTTP listener (which has no reflection) with the Connect protocol and
 * the schema from proto/.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { App } from "../../src/server/app.js";
import { decodeRpcMessage, parseJsonSequence, runBuf } from "../helpers/proto-clients.js";
import { startInProcess } from "../helpers/servers.js";

const chatBody = JSON.stringify({
  model: "mock-chat",
  messages: [{ role: "ROLE_USER", content: [{ text: "hello from buf curl" }] }],
});

const usage = { promptTokens: 4, completionTokens: 6, totalTokens: 10 };

describe("buf curl", () => {
  let app: App;
  let grpcBase: string;
  /** Flags of every call on the gRPC listener: gRPC over h2c, schema by reflection. */
  const grpcFlags = ["--protocol", "grpc", "--http2-prior-knowledge"];

  beforeAll(async () => {
    app = await startInProcess();
    grpcBase = `http://${app.grpcAddress}`;
  });

  afterAll(async () => {
    await app?.shutdown();
  });

  it("lists the services by reflection", async () => {
    const run = await runBuf(["curl", ...grpcFlags, "--list-services", grpcBase]);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    expect(run.stdout.split("\n").filter((l) => l !== "").sort()).toEqual([
      "grpc.health.v1.Health",
      "infergate.v1.InferenceService",
    ]);
  });

  it("lists the methods by reflection", async () => {
    const run = await runBuf(["curl", ...grpcFlags, "--list-methods", grpcBase]);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    expect(run.stdout.split("\n").filter((l) => l !== "").sort()).toEqual([
      "grpc.health.v1.Health/Check",
      "grpc.health.v1.Health/Watch",
      "infergate.v1.InferenceService/Chat",
      "infergate.v1.InferenceService/DeleteSession",
      "infergate.v1.InferenceService/Embed",
      "infergate.v1.InferenceService/Generate",
      "infergate.v1.InferenceService/ListModels",
      "infergate.v1.InferenceService/Predict",
    ]);
  });

  it("calls Chat", async () => {
    const run = await runBuf(["curl", ...grpcFlags, "-d", chatBody, `${grpcBase}/infergate.v1.InferenceService/Chat`]);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    const values = parseJsonSequence(run.stdout);
    expect(values).toEqual([
      {
        id: expect.stringMatching(/^mock-[0-9a-f]{16}$/),
        message: { role: "ROLE_ASSISTANT", content: [{ text: "You said: hello from buf curl" }] },
        finishReason: "FINISH_REASON_STOP",
        usage,
        model: "mock-chat",
        modelVersion: "1",
        upstream: "mock",
      },
    ]);
  });

  it("calls Generate and prints one JSON object per event, the final one last", async () => {
    const run = await runBuf(["curl", ...grpcFlags, "-d", chatBody, `${grpcBase}/infergate.v1.InferenceService/Generate`]);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    const events = parseJsonSequence(run.stdout);
    expect(events).toEqual([
      { textDelta: "You" },
      { textDelta: " said:" },
      { textDelta: " hello" },
      { textDelta: " from" },
      { textDelta: " buf" },
      { textDelta: " curl" },
      {
        final: {
          id: expect.stringMatching(/^mock-[0-9a-f]{16}$/),
          finishReason: "FINISH_REASON_STOP",
          usage,
          model: "mock-chat",
          modelVersion: "1",
          upstream: "mock",
        },
      },
    ]);
  });

  it("calls Embed: unit vectors in input order, the packed form the same numbers", async () => {
    const url = `${grpcBase}/infergate.v1.InferenceService/Embed`;
    const floats = await runBuf(["curl", ...grpcFlags, "-d", JSON.stringify({ model: "mock-embed", texts: ["buf", "curl"], dimensions: 4 }), url]);
    expect(floats.stderr).toBe("");
    expect(floats.code).toBe(0);
    const [res] = parseJsonSequence(floats.stdout) as [{ embeddings: { index?: number; values: number[] }[]; model: string; dimensions: number }];
    expect(res).toMatchObject({ model: "mock-embed", dimensions: 4 });
    // proto JSON leaves out a zero index.
    expect(res.embeddings.map((e) => e.index ?? 0)).toEqual([0, 1]);
    for (const e of res.embeddings) expect(Math.hypot(...e.values)).toBeCloseTo(1, 5);
    const packed = await runBuf([
      "curl",
      ...grpcFlags,
      "-d",
      JSON.stringify({ model: "mock-embed", texts: ["buf", "curl"], dimensions: 4, encoding: "EMBEDDING_ENCODING_FP32_BYTES" }),
      url,
    ]);
    expect(packed.code).toBe(0);
    const [bytes] = parseJsonSequence(packed.stdout) as [{ embeddings: { fp32: string; cached: boolean }[]; cached: boolean }];
    expect(bytes.cached).toBe(true);
    const unpacked = bytes.embeddings.map((e) => {
      const b = Buffer.from(e.fp32, "base64");
      return Array.from({ length: b.length / 4 }, (_, i) => b.readFloatLE(i * 4));
    });
    // buf curl prints a float as its shortest FP32 text: the same FP32 value once read back.
    expect(unpacked).toEqual(res.embeddings.map((e) => e.values.map(Math.fround)));
  });

  it("calls ListModels", async () => {
    const run = await runBuf(["curl", ...grpcFlags, "-d", "{}", `${grpcBase}/infergate.v1.InferenceService/ListModels`]);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    expect(parseJsonSequence(run.stdout)).toEqual([
      {
        models: [
          {
            name: "mock-chat",
            version: "1",
            upstreamKind: "mock",
            upstream: "mock",
            capabilities: ["CAPABILITY_CHAT", "CAPABILITY_GENERATE"],
            state: "MODEL_STATE_READY",
            endpoints: [{ state: "BREAKER_STATE_CLOSED", weight: 1 }],
          },
          {
            name: "mock-predict",
            version: "1",
            upstreamKind: "mock",
            upstream: "mock",
            capabilities: ["CAPABILITY_PREDICT"],
            state: "MODEL_STATE_READY",
            endpoints: [{ state: "BREAKER_STATE_CLOSED", weight: 1 }],
          },
          {
            name: "mock-embed",
            version: "1",
            upstreamKind: "mock",
            upstream: "mock",
            capabilities: ["CAPABILITY_EMBED"],
            state: "MODEL_STATE_READY",
            endpoints: [{ state: "BREAKER_STATE_CLOSED", weight: 1 }],
          },
        ],
      },
    ]);
  });

  it("reports an unknown model as not_found with its ErrorInfo, exit code NOT_FOUND << 3", async () => {
    const body = JSON.stringify({ model: "no-such-model", messages: [{ role: "ROLE_USER", content: [{ text: "hi" }] }] });
    const run = await runBuf(["curl", ...grpcFlags, "-d", body, `${grpcBase}/infergate.v1.InferenceService/Chat`]);
    expect(run.code).toBe(5 << 3);
    expect(run.stdout).toBe("");
    const [error] = parseJsonSequence(run.stderr) as [{ code: string; message: string; details: { type: string; value: string }[] }];
    expect(error.code).toBe("not_found");
    expect(error.message).toBe('model "no-such-model" is not served by this gateway (see ListModels)');
    expect(error.details.map((d) => d.type)).toEqual(["google.rpc.ErrorInfo"]);
    // buf prints the detail's bytes in (unpadded) base64.
    expect(decodeRpcMessage("google.rpc.ErrorInfo", Buffer.from(error.details[0]!.value, "base64"))).toEqual({
      reason: "MODEL_NOT_FOUND",
      domain: "infergate",
      metadata: { model: "no-such-model" },
    });
  });

  it("calls Chat on the HTTP listener with the Connect protocol and the schema from proto/", async () => {
    const run = await runBuf([
      "curl",
      "--protocol",
      "connect",
      "--schema",
      "proto",
      "-d",
      chatBody,
      `http://${app.httpAddress}/infergate.v1.InferenceService/Chat`,
    ]);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    expect(parseJsonSequence(run.stdout)).toEqual([
      {
        id: expect.stringMatching(/^mock-[0-9a-f]{16}$/),
        message: { role: "ROLE_ASSISTANT", content: [{ text: "You said: hello from buf curl" }] },
        finishReason: "FINISH_REASON_STOP",
        usage,
        model: "mock-chat",
        modelVersion: "1",
        upstream: "mock",
      },
    ]);
  });

  it("calls Generate on the HTTP listener with the Connect protocol over h2c", async () => {
    const run = await runBuf([
      "curl",
      "--protocol",
      "connect",
      "--http2-prior-knowledge",
      "--schema",
      "proto",
      "-d",
      chatBody,
      `http://${app.httpAddress}/infergate.v1.InferenceService/Generate`,
    ]);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    const events = parseJsonSequence(run.stdout) as Record<string, unknown>[];
    expect(events.slice(0, -1)).toEqual(
      ["You", " said:", " hello", " from", " buf", " curl"].map((textDelta) => ({ textDelta })),
    );
    expect(events.at(-1)).toEqual({
      final: {
        id: expect.stringMatching(/^mock-[0-9a-f]{16}$/),
        finishReason: "FINISH_REASON_STOP",
        usage,
        model: "mock-chat",
        modelVersion: "1",
        upstream: "mock",
      },
    });
  });

  it("finds no reflection on the HTTP listener", async () => {
    const run = await runBuf(["curl", "--protocol", "connect", "--list-services", `http://${app.httpAddress}`]);
    // The reflection request itself fails (a 404): a usage-level error, exit code below 8.
    expect(run.code).toBeGreaterThan(0);
    expect(run.code).toBeLessThan(8);
    expect(run.stdout).toBe("");
    expect(run.stderr).toMatch(/unimplemented/);
  });
});
