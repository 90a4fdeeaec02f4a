import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import {
  FinishReason,
  ResponseFormatType,
  Role,
  ToolChoiceMode,
} from "../../gen/infergate/v1/chat_pb.js";
import {
  Capability,
  ChatRequestSchema,
  type GenerateResponse,
  ModelState,
} from "../../gen/infergate/v1/inference_service_pb.js";
import { DataType, TensorContentsSchema } from "../../gen/infergate/v1/tensor_pb.js";
import { memoryClient } from "../helpers/memory.js";

const user = (text: string) => ({ role: Role.USER, content: [{ part: { case: "text" as const, value: text } }] });

async function errorOf(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("expected the call to fail");
}

async function collect(stream: AsyncIterable<GenerateResponse>): Promise<GenerateResponse[]> {
  const out: GenerateResponse[] = [];
  for await (const e of stream) out.push(e);
  return out;
}

describe("InferenceService in memory", () => {
  const { client } = memoryClient();

  it("Chat answers deterministically with usage and provenance", async () => {
    const req = { model: "mock-chat", messages: [{ role: Role.SYSTEM, content: [{ part: { case: "text" as const, value: "be brief" } }] }, user("hello big world")] };
    const a = await client.chat(req);
    const b = await client.chat(req);
    expect(a.message?.content[0]?.part).toEqual({ case: "text", value: "You said: hello big world" });
    expect(a.message?.role).toBe(Role.ASSISTANT);
    expect(a.finishReason).toBe(FinishReason.STOP);
    expect(a.usage).toMatchObject({ promptTokens: 5, completionTokens: 5, totalTokens: 10 });
    expect(a).toMatchObject({ model: "mock-chat", modelVersion: "1", upstream: "mock", cached: false });
    expect(b.message).toEqual(a.message);
    expect(b.id).toBe(a.id);
  });

  it("Generate streams the same answer word by word, final event last", async () => {
    const events = await collect(client.generate({ model: "mock-chat", messages: [user("hello big world")] }));
    const deltas = events.slice(0, -1).map((e) => (e.event.case === "textDelta" ? e.event.value : "?"));
    expect(deltas).toEqual(["You", " said:", " hello", " big", " world"]);
    const final = events.at(-1)!.event;
    expect(final.case).toBe("final");
    expect(final.value).toMatchObject({
      finishReason: FinishReason.STOP,
      usage: { promptTokens: 3, completionTokens: 5, totalTokens: 8 },
      model: "mock-chat",
      modelVersion: "1",
      upstream: "mock",
    });
  });

  it("max_tokens cuts the answer with finish LENGTH, stop sequences end it", async () => {
    const cut = await client.chat({ model: "mock-chat", messages: [user("one two three four")], maxTokens: 2 });
    expect(cut.message?.content[0]?.part.value).toBe("You said:");
    expect(cut.finishReason).toBe(FinishReason.LENGTH);
    const stopped = await client.chat({ model: "mock-chat", messages: [user("one two three")], stop: [" two"] });
    expect(stopped.message?.content[0]?.part.value).toBe("You said: one");
    expect(stopped.finishReason).toBe(FinishReason.STOP);
  });

  it("calls a tool when tool_choice demands it, streaming argument fragments by index", async () => {
    const req = {
      model: "mock-chat",
      messages: [user("weather in Oslo")],
      tools: [{ name: "get_weather", description: "weather by city" }],
      toolChoice: { choice: { case: "mode" as const, value: ToolChoiceMode.REQUIRED } },
    };
    const chat = await client.chat(req);
    expect(chat.finishReason).toBe(FinishReason.TOOL_CALLS);
    expect(chat.message?.toolCalls).toHaveLength(1);
    const call = chat.message!.toolCalls[0]!;
    expect(call.name).toBe("get_weather");
    expect(JSON.parse(call.arguments)).toEqual({ text: "weather in Oslo" });

    const events = await collect(client.generate(req));
    const deltas = events.filter((e) => e.event.case === "toolCallDelta").map((e) => e.event.value as { index: number; id: string; name: string; arguments: string });
    expect(deltas.length).toBe(2);
    expect(deltas[0]).toMatchObject({ index: 0, id: call.id, name: "get_weather" });
    expect(deltas[1]).toMatchObject({ index: 0, id: "", name: "" });
    expect(deltas.map((d) => d.arguments).join("")).toBe(call.arguments);
    expect(events.at(-1)?.event.value).toMatchObject({ finishReason: FinishReason.TOOL_CALLS });
  });

  it("answers in JSON when a JSON response format is asked for", async () => {
    const res = await client.chat({
      model: "mock-chat",
      messages: [user("hi")],
      responseFormat: { type: ResponseFormatType.JSON_OBJECT },
    });
    expect(JSON.parse(res.message!.content[0]!.part.value as string)).toEqual({ reply: "You said: hi" });
  });

  it("Predict adds and subtracts typed FP32 tensors", async () => {
    const res = await client.predict({
      model: "mock-predict",
      inputs: [
        { name: "INPUT0", datatype: DataType.FP32, shape: [2n], data: { case: "contents", value: { fp32Contents: [1, 2.5] } } },
        { name: "INPUT1", datatype: DataType.FP32, shape: [2n], data: { case: "contents", value: { fp32Contents: [10, 20] } } },
      ],
      id: "req-1",
    });
    expect(res).toMatchObject({ model: "mock-predict", modelVersion: "1", id: "req-1", upstream: "mock" });
    expect(res.outputs.map((o) => [o.name, o.shape, o.data.case === "contents" ? o.data.value.fp32Contents : null])).toEqual([
      ["OUTPUT0", [2n], [11, 22.5]],
      ["OUTPUT1", [2n], [-9, -17.5]],
    ]);
  });

  it("Predict answers raw inputs in raw form, integers wrapping at their width", async () => {
    const raw = (xs: number[]) => new Uint8Array(new Int8Array(xs).buffer);
    const res = await client.predict({
      model: "mock-predict",
      modelVersion: "2",
      inputs: [
        { name: "a", datatype: DataType.INT8, shape: [1n, 3n], data: { case: "rawContents", value: raw([100, -128, 5]) } },
        { name: "b", datatype: DataType.INT8, shape: [1n, 3n], data: { case: "rawContents", value: raw([100, 1, 5]) } },
      ],
      outputs: [{ name: "OUTPUT0" }],
    });
    expect(res.modelVersion).toBe("2");
    expect(res.outputs).toHaveLength(1);
    const out = res.outputs[0]!;
    expect(out.data.case).toBe("rawContents");
    expect([...new Int8Array((out.data.value as Uint8Array).slice().buffer)]).toEqual([-56, -127, 10]);
  });

  it("ListModels lists names, versions, kinds, capabilities and state", async () => {
    const res = await client.listModels({});
    expect(res.models.map((m) => [m.name, m.version, m.upstreamKind, m.upstream, m.capabilities, m.state])).toEqual([
      ["mock-chat", "1", "mock", "mock", [Capability.CHAT, Capability.GENERATE], ModelState.READY],
      ["mock-predict", "1", "mock", "mock", [Capability.PREDICT], ModelState.READY],
      ["mock-embed", "1", "mock", "mock", [Capability.EMBED], ModelState.READY],
    ]);
  });
});

describe("bad input, in memory", () => {
  const { client } = memoryClient();
  const chat = (over: MessageInitShape<typeof ChatRequestSchema>) =>
    client.chat(create(ChatRequestSchema, { model: "mock-chat", messages: [user("x")], ...over }));

  it.each([
    ["unknown model", { model: "nope" }, Code.NotFound, 'model "nope" is not served by this gateway (see ListModels)', undefined],
    ["empty model", { model: "" }, Code.InvalidArgument, "model: required", "model"],
    ["empty messages", { messages: [] }, Code.InvalidArgument, "messages: at least one message is required", "messages"],
    ["a message without role", { messages: [{ content: [{ part: { case: "text", value: "x" } }] }] }, Code.InvalidArgument, "messages[0].role: required (one of the ROLE_* values)", "messages[0].role"],
    ["a tool message without call id", { messages: [{ role: Role.TOOL, content: [{ part: { case: "text", value: "x" } }] }] }, Code.InvalidArgument, "messages[0].tool_call_id: required for tool messages", "messages[0].tool_call_id"],
    ["an image without MIME type", { messages: [{ role: Role.USER, content: [{ part: { case: "imageData", value: { data: new Uint8Array([1]) } } }] }] }, Code.InvalidArgument, "messages[0].content[0].image_data.mime_type: required, an image MIME type such as image/png", "messages[0].content[0].image_data.mime_type"],
    ["temperature out of range", { temperature: 3 }, Code.InvalidArgument, "temperature: must be between 0 and 2, got 3", "temperature"],
    ["too many stop sequences", { stop: ["a", "b", "c", "d", "e"] }, Code.InvalidArgument, "stop: at most 4 sequences, got 5", "stop"],
    ["a forced tool that is not given", { toolChoice: { choice: { case: "functionName", value: "f" } } }, Code.InvalidArgument, 'tool_choice.function_name: "f" is not in tools', "tool_choice.function_name"],
    ["a JSON schema format without schema", { responseFormat: { type: ResponseFormatType.JSON_SCHEMA } }, Code.InvalidArgument, "response_format.json_schema: required when type is RESPONSE_FORMAT_TYPE_JSON_SCHEMA", "response_format.json_schema"],
    ["a chat model asked to predict", { model: "mock-predict" }, Code.Unimplemented, 'model "mock-predict" does not support Chat', undefined],
  ] as const)("%s", async (_name, over, code, message, field) => {
    const err = await errorOf(chat(over as MessageInitShape<typeof ChatRequestSchema>));
    expect(err.code).toBe(code);
    expect(err.rawMessage).toBe(message);
    const info = err.findDetails(ErrorInfoSchema)[0];
    expect(info?.domain).toBe("infergate");
    if (field !== undefined) {
      expect(info?.metadata["field"]).toBe(field);
    }
  });

  it.each([
    ["no inputs", [], "inputs: at least one input tensor is required"],
    [
      "shape vs. typed content length",
      [{ name: "a", datatype: DataType.FP32, shape: [2n, 2n], data: { case: "contents", value: create(TensorContentsSchema, { fp32Contents: [1, 2, 3] }) } }],
      "inputs[0].contents.fp32_contents: 3 values, but shape [2, 2] has 4 elements",
    ],
    [
      "shape vs. raw length",
      [{ name: "a", datatype: DataType.INT32, shape: [3n], data: { case: "rawContents", value: new Uint8Array(8) } }],
      "inputs[0].raw_contents: 8 bytes, but shape [3] of INT32 needs 12",
    ],
    [
      "values in the wrong typed field",
      [{ name: "a", datatype: DataType.INT64, shape: [1n], data: { case: "contents", value: create(TensorContentsSchema, { intContents: [1] }) } }],
      "inputs[0].contents.int_contents: not allowed for INT64; use int64_contents",
    ],
    [
      "a negative dimension",
      [{ name: "a", datatype: DataType.FP32, shape: [-1n], data: { case: "contents", value: create(TensorContentsSchema, {}) } }],
      "inputs[0].shape[0]: dimension -1 is negative",
    ],
    ["no datatype", [{ name: "a", shape: [1n] }], "inputs[0].datatype: required (one of the DATA_TYPE_* values)"],
    ["no data", [{ name: "a", datatype: DataType.FP32, shape: [1n] }], "inputs[0].contents: no data: set contents or raw_contents"],
    [
      "a truncated BYTES element",
      [{ name: "a", datatype: DataType.BYTES, shape: [1n], data: { case: "rawContents", value: new Uint8Array([5, 0, 0, 0, 1]) } }],
      "inputs[0].raw_contents: element 0 runs past the end (5 bytes at byte 4)",
    ],
    [
      "FP16 in typed form",
      [{ name: "a", datatype: DataType.FP16, shape: [1n], data: { case: "contents", value: create(TensorContentsSchema, { fp32Contents: [1] }) } }],
      "inputs[0].contents: FP16 tensors must use raw_contents",
    ],
  ] as const)("Predict rejects %s", async (_name, inputs, message) => {
    const err = await errorOf(client.predict({ model: "mock-predict", inputs: inputs as never }));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toBe(message);
  });

  it("injected upstream failures keep their code; a cut stream fails, never ends OK", async () => {
    const fail = await errorOf(client.chat({ model: "mock-chat", messages: [user("x")], metadata: { "mock.fail_code": "UNAVAILABLE" } }));
    expect(fail.code).toBe(Code.Unavailable);
    expect(fail.findDetails(ErrorInfoSchema)[0]?.reason).toBe("UPSTREAM_UNAVAILABLE");

    const seen: GenerateResponse[] = [];
    const err = await errorOf(
      (async () => {
        for await (const e of client.generate({ model: "mock-chat", messages: [user("a b c d")], metadata: { "mock.cut_after_tokens": "2" } })) {
          seen.push(e);
        }
      })(),
    );
    expect(seen.map((e) => e.event.case)).toEqual(["textDelta", "textDelta"]);
    expect(err.code).toBe(Code.Unavailable);
    expect(err.findDetails(ErrorInfoSchema)[0]?.reason).toBe("STREAM_TRUNCATED");
  });

  it("a bad fault-injection value names the metadata key", async () => {
    const err = await errorOf(client.chat({ model: "mock-chat", messages: [user("x")], metadata: { "mock.fail_code": "BROKEN" } }));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage).toBe('metadata["mock.fail_code"]: not a gRPC code name such as UNAVAILABLE');
  });

  it("a cancelled Generate stops producing tokens", async () => {
    const controller = new AbortController();
    const got: string[] = [];
    const err = await errorOf(
      (async () => {
        for await (const e of client.generate(
          { model: "mock-chat", messages: [user("a b c d e f g h i j")], metadata: { "mock.token_delay_ms": "20" } },
          { signal: controller.signal },
        )) {
          got.push(e.event.case ?? "");
          if (got.length === 2) controller.abort();
        }
      })(),
    );
    expect(err.code).toBe(Code.Canceled);
    expect(got).toHaveLength(2);
  });
});

describe("draining, in memory", () => {
  it("refuses every RPC with UNAVAILABLE / SHUTTING_DOWN once draining", async () => {
    const { client, gateway } = memoryClient();
    gateway.drain();
    const calls = [
      client.listModels({}),
      client.chat({ model: "mock-chat", messages: [user("x")] }),
      client.predict({ model: "mock-predict", inputs: [] }),
      (async () => {
        for await (const _ of client.generate({ model: "mock-chat", messages: [user("x")] })) {
          // no event may arrive
        }
      })(),
    ];
    for (const call of calls) {
      const err = await errorOf(call);
      expect(err.code).toBe(Code.Unavailable);
      expect(err.findDetails(ErrorInfoSchema)[0]?.reason).toBe("SHUTTING_DOWN");
    }
    expect(gateway.inFlight()).toBe(0);
  });
});
