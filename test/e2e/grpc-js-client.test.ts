/**
 * infergate through a client that shares no code with it: grpc-js with the contract loaded from
 * proto/ at run time by proto-loader.
 */
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { App } from "../../src/server/app.js";
import {
  errorInfoOf,
  expectServiceError,
  inferenceClient,
  type ProtoClient,
  protoUsage,
  statusDetails,
} from "../helpers/proto-clients.js";
import { startInProcess } from "../helpers/servers.js";

/** A ChatRequest/GenerateRequest with one user message. */
function userTurn(model: string, text: string, metadata: Record<string, string> = {}) {
  return { model, messages: [{ role: "ROLE_USER", content: [{ text }] }], metadata };
}

/** A Tensor of typed values, as proto-loader takes it. */
function tensor(name: string, datatype: string, shape: number[], contents: Record<string, unknown>) {
  return { name, datatype, shape, contents };
}

/** The TensorContents proto-loader renders (with defaults: every repeated field present). */
function contents(set: Record<string, unknown[]>) {
  return {
    bool_contents: [],
    int_contents: [],
    int64_contents: [],
    uint_contents: [],
    uint64_contents: [],
    fp32_contents: [],
    fp64_contents: [],
    bytes_contents: [],
    ...set,
  };
}

function outputTensor(name: string, datatype: string, shape: string[], set: Record<string, unknown[]>) {
  return { name, datatype, shape, contents: contents(set), data: "contents", parameters: {} };
}

// The mock reports no cached, cache-creation or reasoning tokens.
const usage = (prompt: number, completion: number) => protoUsage(prompt, completion);

describe("grpc-js + proto-loader client", () => {
  let app: App;
  let client: ProtoClient;

  beforeAll(async () => {
    app = await startInProcess();
    client = inferenceClient(app.grpcAddress);
  });

  afterAll(async () => {
    client?.close();
    await app?.shutdown();
  });

  it("Predict adds and subtracts INT32 tensors", async () => {
    const res = await client.unary<Record<string, unknown>>("Predict", {
      model: "mock-predict",
      id: "req-32",
      inputs: [
        tensor("INPUT0", "DATA_TYPE_INT32", [2, 2], { int_contents: [1, 2, 3, 4] }),
        tensor("INPUT1", "DATA_TYPE_INT32", [2, 2], { int_contents: [10, 20, 30, 40] }),
        tensor("INPUT2", "DATA_TYPE_INT32", [2, 2], { int_contents: [100, -200, 300, -400] }),
      ],
    });
    expect(res).toEqual({
      model: "mock-predict",
      model_version: "1",
      id: "req-32",
      outputs: [
        outputTensor("OUTPUT0", "DATA_TYPE_INT32", ["2", "2"], { int_contents: [111, -178, 333, -356] }),
        outputTensor("OUTPUT1", "DATA_TYPE_INT32", ["2", "2"], { int_contents: [-109, 182, -327, 364] }),
      ],
      parameters: {},
      upstream: "mock",
      cached: false,
    });
  });

  it("Predict keeps 64-bit integers exact (longs as strings) and honours requested outputs", async () => {
    const res = await client.unary<Record<string, unknown>>("Predict", {
      model: "mock-predict",
      inputs: [
        tensor("A", "DATA_TYPE_INT64", [3], { int64_contents: ["9007199254740993", "-5", "0"] }),
        tensor("B", "DATA_TYPE_INT64", [3], { int64_contents: ["1", "5", "-9223372036854775808"] }),
      ],
      outputs: [{ name: "OUTPUT0" }],
    });
    expect(res.outputs).toEqual([
      outputTensor("OUTPUT0", "DATA_TYPE_INT64", ["3"], {
        int64_contents: ["9007199254740994", "0", "-9223372036854775808"],
      }),
    ]);
    // No id given: the gateway makes one.
    expect(res.id).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("Chat answers with the whole completion", async () => {
    const res = await client.unary<Record<string, unknown>>("Chat", userTurn("mock-chat", "hello there, gateway"));
    expect(res).toEqual({
      id: expect.stringMatching(/^mock-[0-9a-f]{16}$/),
      message: {
        role: "ROLE_ASSISTANT",
        content: [{ text: "You said: hello there, gateway", part: "text", cache_breakpoint: null }],
        tool_calls: [],
        tool_call_id: "",
        name: "",
      },
      finish_reason: "FINISH_REASON_STOP",
      usage: usage(3, 5),
      model: "mock-chat",
      model_version: "1",
      upstream: "mock",
      cached: false,
      stop_sequence: "",
    });
  });

  it("Generate streams one word per event, then the final event last, agreeing with Chat", async () => {
    const request = userTurn("mock-chat", "hello there, gateway");
    const stream = client.serverStream<Record<string, unknown>>("Generate", request);
    const { events, status: st, error } = await stream.done;
    expect(error).toBeUndefined();
    expect(st.code).toBe(status.OK);
    const final = {
      id: expect.stringMatching(/^mock-[0-9a-f]{16}$/),
      finish_reason: "FINISH_REASON_STOP",
      usage: usage(3, 5),
      model: "mock-chat",
      model_version: "1",
      upstream: "mock",
      cached: false,
      stop_sequence: "",
    };
    expect(events).toEqual([
      { text_delta: "You", event: "text_delta" },
      { text_delta: " said:", event: "text_delta" },
      { text_delta: " hello", event: "text_delta" },
      { text_delta: " there,", event: "text_delta" },
      { text_delta: " gateway", event: "text_delta" },
      { final, event: "final" },
    ]);
    // Exactly one final event, and it is the last one.
    expect(events.filter((e) => e.event === "final")).toHaveLength(1);
    expect(events.at(-1)?.event).toBe("final");

    const chat = await client.unary<{ id: string }>("Chat", request);
    expect((events.at(-1)?.final as { id: string }).id).toBe(chat.id);
  });

  it("ListModels lists the configured models in order", async () => {
    const res = await client.unary<Record<string, unknown>>("ListModels", {});
    expect(res).toEqual({
      models: [
        {
          name: "mock-chat",
          version: "1",
          upstream_kind: "mock",
          upstream: "mock",
          capabilities: ["CAPABILITY_CHAT", "CAPABILITY_GENERATE"],
          state: "MODEL_STATE_READY",
          endpoints: [{ endpoint: "", state: "BREAKER_STATE_CLOSED", ejected: false, weight: 1, in_flight: 0 }],
        },
        {
          name: "mock-predict",
          version: "1",
          upstream_kind: "mock",
          upstream: "mock",
          capabilities: ["CAPABILITY_PREDICT"],
          state: "MODEL_STATE_READY",
          endpoints: [{ endpoint: "", state: "BREAKER_STATE_CLOSED", ejected: false, weight: 1, in_flight: 0 }],
        },
        {
          name: "mock-embed",
          version: "1",
          upstream_kind: "mock",
          upstream: "mock",
          capabilities: ["CAPABILITY_EMBED"],
          state: "MODEL_STATE_READY",
          endpoints: [{ endpoint: "", state: "BREAKER_STATE_CLOSED", ejected: false, weight: 1, in_flight: 0 }],
        },
      ],
    });
  });

  it("an unknown model is NOT_FOUND with ErrorInfo MODEL_NOT_FOUND in grpc-status-details-bin", async () => {
    const err = await expectServiceError(client.unary("Chat", userTurn("no-such-model", "hi")));
    expect(err.code).toBe(status.NOT_FOUND);
    expect(err.details).toBe('model "no-such-model" is not served by this gateway (see ListModels)');
    const st = statusDetails(err);
    expect(st).toEqual({
      code: status.NOT_FOUND,
      message: err.details,
      details: [
        {
          type_url: "type.googleapis.com/google.rpc.ErrorInfo",
          message: { reason: "MODEL_NOT_FOUND", domain: "infergate", metadata: { model: "no-such-model" } },
        },
      ],
    });
  });

  it("Generate on an unknown model ends the stream with NOT_FOUND and no events", async () => {
    const { events, status: st, error } = await client.serverStream("Generate", userTurn("no-such-model", "hi")).done;
    expect(events).toEqual([]);
    expect(st.code).toBe(status.NOT_FOUND);
    expect(error?.code).toBe(status.NOT_FOUND);
    expect(errorInfoOf(statusDetails(error!))).toEqual({
      reason: "MODEL_NOT_FOUND",
      domain: "infergate",
      metadata: { model: "no-such-model" },
    });
  });

  it("a model without the capability is UNIMPLEMENTED with CAPABILITY_NOT_SUPPORTED", async () => {
    const err = await expectServiceError(client.unary("Chat", userTurn("mock-predict", "hi")));
    expect(err.code).toBe(status.UNIMPLEMENTED);
    expect(errorInfoOf(statusDetails(err))).toEqual({
      reason: "CAPABILITY_NOT_SUPPORTED",
      domain: "infergate",
      metadata: { model: "mock-predict", rpc: "Chat" },
    });
  });

  it("an injected upstream failure mid-request arrives as its code with UPSTREAM_UNAVAILABLE, after its retries", async () => {
    const err = await expectServiceError(
      client.unary("Chat", userTurn("mock-chat", "hi", { "mock.fail_code": "UNAVAILABLE" })),
    );
    expect(err.code).toBe(status.UNAVAILABLE);
    expect(err.details).toBe("mock upstream: injected UNAVAILABLE");
    // UNAVAILABLE is retried (docs/resilience.md): the default is 3 attempts.
    expect(errorInfoOf(statusDetails(err))).toEqual({ reason: "UPSTREAM_UNAVAILABLE", domain: "infergate", metadata: { attempts: "3" } });
  });

  it("a stream cut by the upstream ends with UNAVAILABLE STREAM_TRUNCATED, never OK", async () => {
    const { events, status: st, error } = await client.serverStream<Record<string, unknown>>(
      "Generate",
      userTurn("mock-chat", "one two three four", { "mock.cut_after_tokens": "2" }),
    ).done;
    expect(events).toEqual([
      { text_delta: "You", event: "text_delta" },
      { text_delta: " said:", event: "text_delta" },
    ]);
    expect(st.code).toBe(status.UNAVAILABLE);
    expect(errorInfoOf(statusDetails(error!))).toEqual({
      reason: "STREAM_TRUNCATED",
      domain: "infergate",
      metadata: { upstream: "mock" },
    });
  });
});
