import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { FinishReason, Role } from "../../gen/infergate/v1/chat_pb.js";
import {
  type ChatResponse,
  ChatRequestSchema,
  type GenerateResponse,
} from "../../gen/infergate/v1/inference_service_pb.js";
import { GatewayError } from "../../src/core/gateway-error.js";
import {
  createStreamTranslator,
  finishReasonOf,
  fromMessagesResponse,
  toMessagesRequest,
  usageOf,
} from "../../src/upstreams/anthropic/anthropic-translate.js";
import { createSseDecoder } from "../../src/upstreams/sse/sse-decoder.js";
import { ConfigError } from "../../src/config/config-error.js";
import { parseConfig } from "../../src/config/load-config.js";
import { anthropicModelOptionsSchema, anthropicOptionsSchema } from "../../src/upstreams/anthropic/anthropic-upstream.js";

type ChatInit = MessageInitShape<typeof ChatRequestSchema>;

const ctx = { upstreamModel: "claude-sonnet-4-20250514", defaultMaxTokens: 321, stream: false };

/** A ChatRequest: one user turn "hi" unless `init` gives messages. */
function chat(init: Partial<ChatInit> = {}) {
  return create(ChatRequestSchema, {
    model: "claude",
    messages: [{ role: Role.USER, content: [{ part: { case: "text", value: "hi" } }] }],
    ...init,
  } as ChatInit);
}

const text = (value: string) => ({ part: { case: "text" as const, value } });
const user = (...content: ReturnType<typeof text>[]) => ({ role: 2, content });

/** The error a function throws, as a GatewayError. */
function errorOf(fn: () => unknown): GatewayError {
  try {
    fn();
  } catch (err) {
    if (err instanceof GatewayError) {
      return err;
    }
    throw err;
  }
  throw new Error("no error was thrown");
}

describe("toMessagesRequest", () => {
  it("sends a user turn with the model's max_tokens default, nothing else", () => {
    expect(toMessagesRequest(chat(), ctx)).toEqual({
      model: "claude-sonnet-4-20250514",
      max_tokens: 321,
      messages: [{ role: "user", content: [{ type: "text", text: "hi" }] }],
      stream: false,
    });
  });

  it.each<[string, Partial<ChatInit>, Record<string, unknown>]>([
    ["max_tokens from the request", { maxTokens: 50 }, { max_tokens: 50 }],
    ["temperature 0 is kept (unset differs from zero)", { temperature: 0 }, { temperature: 0 }],
    ["temperature 1", { temperature: 1 }, { temperature: 1 }],
    ["top_p", { topP: 0.9 }, { top_p: 0.9 }],
    ["top_k", { topK: 40 }, { top_k: 40 }],
    ["stop → stop_sequences", { stop: ["\n\nHuman:", "END"] }, { stop_sequences: ["\n\nHuman:", "END"] }],
    ["zero penalties are no penalty", { presencePenalty: 0, frequencyPenalty: 0 }, {}],
    ["response_format TEXT", { responseFormat: { type: 1 } }, {}],
    ["response_format UNSPECIFIED", { responseFormat: { type: 0 } }, {}],
    [
      "response_format JSON_SCHEMA → output_config.format",
      { responseFormat: { type: 3, jsonSchema: { name: "answer", strict: false, schema: { type: "object", properties: { a: { type: "number" } } } } } },
      { output_config: { format: { type: "json_schema", schema: { type: "object", properties: { a: { type: "number" } } } } } },
    ],
    ["metadata, cache_policy and session_id stay in the gateway", { metadata: { k: "v" }, cachePolicy: 1, sessionId: "s1" }, {}],
  ])("%s", (_name, init, extra) => {
    expect(toMessagesRequest(chat(init), { ...ctx, stream: true })).toEqual({
      model: "claude-sonnet-4-20250514",
      max_tokens: 321,
      messages: [{ role: "user", content: [{ type: "text", text: "hi" }] }],
      stream: true,
      ...extra,
    });
  });

  it("puts system and developer messages, in order, into system; the rest into messages", () => {
    const body = toMessagesRequest(
      chat({
        messages: [
          { role: 1, content: [text("You are terse."), text("Answer in French.")] },
          user(text("Bonjour")),
          { role: 3, content: [text("Salut.")] },
          { role: 5, content: [text("Never apologise.")] },
          user(text("Ça va ?"), text("Vraiment ?")),
        ],
      }),
      ctx,
    );
    expect(body).toEqual({
      model: "claude-sonnet-4-20250514",
      max_tokens: 321,
      system: [
        { type: "text", text: "You are terse." },
        { type: "text", text: "Answer in French." },
        { type: "text", text: "Never apologise." },
      ],
      messages: [
        { role: "user", content: [{ type: "text", text: "Bonjour" }] },
        { role: "assistant", content: [{ type: "text", text: "Salut." }] },
        { role: "user", content: [{ type: "text", text: "Ça va ?" }, { type: "text", text: "Vraiment ?" }] },
      ],
      stream: false,
    });
  });

  it.each<[string, ChatInit["messages"], unknown[]]>([
    [
      "bytes → base64 source with media_type",
      [{ role: 2, content: [{ part: { case: "imageData", value: { data: new Uint8Array([0x89, 0x50, 0x4e, 0x47]), mimeType: "image/png" } } }] }],
      [{ type: "image", source: { type: "base64", media_type: "image/png", data: "iVBORw==" } }],
    ],
    [
      "a data: URL → base64 source (media type lower-cased)",
      [{ role: 2, content: [{ part: { case: "imageUrl", value: { url: "data:Image/JPEG;base64,/9j/4AAQ" } } }] }],
      [{ type: "image", source: { type: "base64", media_type: "image/jpeg", data: "/9j/4AAQ" } }],
    ],
    [
      "an https URL → url source",
      [{ role: 2, content: [text("What is this?"), { part: { case: "imageUrl", value: { url: "https://example.com/cat.webp" } } }] }],
      [{ type: "text", text: "What is this?" }, { type: "image", source: { type: "url", url: "https://example.com/cat.webp" } }],
    ],
  ])("images: %s", (_name, messages, content) => {
    expect(toMessagesRequest(chat({ messages }), ctx).messages).toEqual([{ role: "user", content }]);
  });

  it("sends assistant tool calls as tool_use and consecutive tool messages as one user turn of tool_result blocks", () => {
    const body = toMessagesRequest(
      chat({
        messages: [
          user(text("Weather and time in Paris?")),
          {
            role: 3,
            content: [text("Let me check.")],
            toolCalls: [
              { id: "toolu_1", name: "get_weather", arguments: '{"city":"Paris"}' },
              { id: "toolu_2", name: "get_time", arguments: "" },
            ],
          },
          { role: 4, toolCallId: "toolu_1", content: [text("18°C")] },
          {
            role: 4,
            toolCallId: "toolu_2",
            content: [text("14:05"), { part: { case: "imageData", value: { data: new Uint8Array([1, 2, 3]), mimeType: "image/gif" } } }],
          },
          user(text("Thanks")),
          { role: 3, content: [], toolCalls: [{ id: "toolu_3", name: "get_time", arguments: " {} " }] },
          { role: 4, toolCallId: "toolu_3", content: [text("14:06")] },
        ],
      }),
      ctx,
    );
    expect(body.messages).toEqual([
      { role: "user", content: [{ type: "text", text: "Weather and time in Paris?" }] },
      {
        role: "assistant",
        content: [
          { type: "text", text: "Let me check." },
          { type: "tool_use", id: "toolu_1", name: "get_weather", input: { city: "Paris" } },
          { type: "tool_use", id: "toolu_2", name: "get_time", input: {} },
        ],
      },
      {
        role: "user",
        content: [
          { type: "tool_result", tool_use_id: "toolu_1", content: [{ type: "text", text: "18°C" }] },
          {
            type: "tool_result",
            tool_use_id: "toolu_2",
            content: [
              { type: "text", text: "14:05" },
              { type: "image", source: { type: "base64", media_type: "image/gif", data: "AQID" } },
            ],
          },
        ],
      },
      { role: "user", content: [{ type: "text", text: "Thanks" }] },
      { role: "assistant", content: [{ type: "tool_use", id: "toolu_3", name: "get_time", input: {} }] },
      { role: "user", content: [{ type: "tool_result", tool_use_id: "toolu_3", content: [{ type: "text", text: "14:06" }] }] },
    ]);
  });

  it("sends cache breakpoints as cache_control on the blocks and tools they stand on; a bad ttl is refused naming it", () => {
    const body = toMessagesRequest(
      chat({
        messages: [
          { role: Role.SYSTEM, content: [{ part: { case: "text", value: "s" }, cacheBreakpoint: { ttl: "1h" } }] },
          { role: Role.USER, content: [{ part: { case: "text", value: "a" } }, { part: { case: "text", value: "b" }, cacheBreakpoint: {} }] },
          { role: Role.ASSISTANT, toolCalls: [{ id: "t1", name: "f", arguments: "{}", cacheBreakpoint: { ttl: "5m" } }] },
          { role: Role.TOOL, toolCallId: "t1", content: [{ part: { case: "text", value: "r" }, cacheBreakpoint: {} }] },
        ],
        tools: [{ name: "f", cacheBreakpoint: {} }],
      }),
      ctx,
    );
    expect(body.system).toEqual([{ type: "text", text: "s", cache_control: { type: "ephemeral", ttl: "1h" } }]);
    expect(body.messages).toEqual([
      { role: "user", content: [{ type: "text", text: "a" }, { type: "text", text: "b", cache_control: { type: "ephemeral" } }] },
      { role: "assistant", content: [{ type: "tool_use", id: "t1", name: "f", input: {}, cache_control: { type: "ephemeral", ttl: "5m" } }] },
      { role: "user", content: [{ type: "tool_result", tool_use_id: "t1", content: [{ type: "text", text: "r", cache_control: { type: "ephemeral" } }] }] },
    ]);
    expect(body.tools).toEqual([{ name: "f", input_schema: { type: "object", properties: {} }, cache_control: { type: "ephemeral" } }]);
    const err = errorOf(() => toMessagesRequest(chat({ messages: [{ role: Role.USER, content: [{ part: { case: "text", value: "a" }, cacheBreakpoint: { ttl: "2h" } }] }] }), ctx));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.metadata["field"]).toBe("messages[0].content[0].cache_breakpoint.ttl");
  });

  it("sends tools with input_schema, description and strict as given", () => {
    const body = toMessagesRequest(
      chat({
        tools: [
          { name: "get_weather", description: "Weather of a city", parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] }, strict: true },
          { name: "get_time" },
          { name: "ping", strict: false },
        ],
      }),
      ctx,
    );
    expect(body.tools).toEqual([
      {
        name: "get_weather",
        description: "Weather of a city",
        input_schema: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
        strict: true,
      },
      { name: "get_time", input_schema: { type: "object", properties: {} } },
      { name: "ping", input_schema: { type: "object", properties: {} }, strict: false },
    ]);
    expect(body.tool_choice).toBeUndefined();
  });

  const tools = [{ name: "get_weather" }];
  it.each<[string, Partial<ChatInit>, unknown]>([
    ["no choice", {}, undefined],
    ["mode UNSPECIFIED", { toolChoice: { choice: { case: "mode", value: 0 } } }, undefined],
    ["AUTO", { toolChoice: { choice: { case: "mode", value: 1 } } }, { type: "auto" }],
    ["NONE", { toolChoice: { choice: { case: "mode", value: 2 } } }, { type: "none" }],
    ["REQUIRED", { toolChoice: { choice: { case: "mode", value: 3 } } }, { type: "any" }],
    ["a function", { toolChoice: { choice: { case: "functionName", value: "get_weather" } } }, { type: "tool", name: "get_weather" }],
    ["parallel_tool_calls=false alone", { parallelToolCalls: false }, { type: "auto", disable_parallel_tool_use: true }],
    ["parallel_tool_calls=true alone (the default)", { parallelToolCalls: true }, undefined],
    ["AUTO, not parallel", { parallelToolCalls: false, toolChoice: { choice: { case: "mode", value: 1 } } }, { type: "auto", disable_parallel_tool_use: true }],
    ["REQUIRED, not parallel", { parallelToolCalls: false, toolChoice: { choice: { case: "mode", value: 3 } } }, { type: "any", disable_parallel_tool_use: true }],
    [
      "a function, not parallel",
      { parallelToolCalls: false, toolChoice: { choice: { case: "functionName", value: "get_weather" } } },
      { type: "tool", name: "get_weather", disable_parallel_tool_use: true },
    ],
    ["NONE, not parallel (no call at all)", { parallelToolCalls: false, toolChoice: { choice: { case: "mode", value: 2 } } }, { type: "none" }],
  ])("tool_choice: %s", (_name, init, expected) => {
    expect(toMessagesRequest(chat({ tools, ...init } as Partial<ChatInit>), ctx).tool_choice).toEqual(expected);
  });

  it.each<[string, Partial<ChatInit>]>([
    ["AUTO", { toolChoice: { choice: { case: "mode", value: 1 } } }],
    ["NONE", { toolChoice: { choice: { case: "mode", value: 2 } } }],
    ["parallel_tool_calls=false", { parallelToolCalls: false }],
  ])("without tools, %s sends no tool_choice (Anthropic refuses one without tools)", (_name, init) => {
    const body = toMessagesRequest(chat(init), ctx);
    expect(body.tool_choice).toBeUndefined();
    expect(body.tools).toBeUndefined();
  });

  it.each<[string, Partial<ChatInit>, string]>([
    ["seed", { seed: 42n }, "seed"],
    ["seed 0", { seed: 0n }, "seed"],
    ["presence penalty", { presencePenalty: 0.5 }, "presence_penalty"],
    ["frequency penalty", { frequencyPenalty: -1 }, "frequency_penalty"],
    ["temperature above 1", { temperature: 1.5 }, "temperature"],
    ["JSON_OBJECT", { responseFormat: { type: 2 } }, "response_format.type"],
    [
      "a JSON schema description",
      { responseFormat: { type: 3, jsonSchema: { name: "a", description: "the answer", schema: { type: "object" } } } },
      "response_format.json_schema.description",
    ],
    ["an author name", { messages: [{ role: 2, name: "alice", content: [text("hi")] }] }, "messages[0].name"],
    [
      "an image in a system message",
      { messages: [{ role: 1, content: [text("look"), { part: { case: "imageUrl", value: { url: "https://x/y.png" } } }] }, user(text("hi"))] },
      "messages[0].content[1]",
    ],
    [
      "image_url detail",
      { messages: [{ role: 2, content: [{ part: { case: "imageUrl", value: { url: "https://x/y.png", detail: 1 } } }] }] },
      "messages[0].content[0].image_url.detail",
    ],
    [
      "image_data detail",
      { messages: [{ role: 2, content: [{ part: { case: "imageData", value: { data: new Uint8Array([1]), mimeType: "image/png", detail: 2 } } }] }] },
      "messages[0].content[0].image_data.detail",
    ],
    [
      "an image type Anthropic does not take",
      { messages: [{ role: 2, content: [{ part: { case: "imageData", value: { data: new Uint8Array([1]), mimeType: "image/bmp" } } }] }] },
      "messages[0].content[0].image_data.mime_type",
    ],
    [
      "a data: URL that is not base64",
      { messages: [{ role: 2, content: [{ part: { case: "imageUrl", value: { url: "data:image/png,%89PNG" } } }] }] },
      "messages[0].content[0].image_url.url",
    ],
    [
      "a data: URL of another type",
      { messages: [{ role: 2, content: [{ part: { case: "imageUrl", value: { url: "data:image/svg+xml;base64,PHN2Zz4=" } } }] }] },
      "messages[0].content[0].image_url.url",
    ],
    [
      "tool call arguments that are not JSON",
      { messages: [user(text("hi")), { role: 3, toolCalls: [{ id: "a", name: "f", arguments: "{city: Paris}" }] }] },
      "messages[1].tool_calls[0].arguments",
    ],
    [
      "tool call arguments that are not an object",
      { messages: [user(text("hi")), { role: 3, toolCalls: [{ id: "a", name: "f", arguments: '"x"' }, { id: "b", name: "f", arguments: "[1]" }] }] },
      "messages[1].tool_calls[0].arguments",
    ],
    [
      "tool call arguments that are a JSON array",
      { messages: [user(text("hi")), { role: 3, toolCalls: [{ id: "b", name: "f", arguments: "[1]" }] }] },
      "messages[1].tool_calls[0].arguments",
    ],
    ["tool parameters that are not an object schema", { tools: [{ name: "f", parameters: { type: "string" } }] }, "tools[0].parameters"],
    ["only system messages", { messages: [{ role: 1, content: [text("be nice")] }] }, "messages"],
  ])("rejects %s with INVALID_ARGUMENT naming %s", (_name, init, field) => {
    const err = errorOf(() => toMessagesRequest(chat(init), ctx));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.reason).toBe("INVALID_ARGUMENT");
    expect(err.metadata).toEqual({ field });
    expect(err.message.startsWith(`${field}: `)).toBe(true);
  });
});

/** A ChatResponse as plain data, for exact comparison. */
function plainChat(r: ChatResponse) {
  return {
    id: r.id,
    text: r.message?.content.map((p) => (p.part.case === "text" ? p.part.value : `<${p.part.case}>`)),
    toolCalls: r.message?.toolCalls.map((c) => [c.id, c.name, c.arguments]),
    role: r.message?.role,
    finish: FinishReason[r.finishReason],
    usage: [r.usage?.promptTokens, r.usage?.completionTokens, r.usage?.totalTokens],
    ...(r.stopSequence === "" ? {} : { stop: r.stopSequence }),
  };
}

describe("fromMessagesResponse", () => {
  it.each<[string, unknown, ReturnType<typeof plainChat>]>([
    [
      "text",
      {
        id: "msg_1",
        type: "message",
        role: "assistant",
        model: "claude",
        content: [{ type: "text", text: "Hello " }, { type: "text", text: "there." }],
        stop_reason: "end_turn",
        stop_sequence: null,
        usage: { input_tokens: 12, output_tokens: 6 },
      },
      { id: "msg_1", text: ["Hello there."], toolCalls: [], role: 3, finish: "STOP", usage: [12, 6, 18] },
    ],
    [
      "ended by a stop sequence: the sequence kept",
      { id: "msg_s", type: "message", role: "assistant", content: [{ type: "text", text: "one" }], stop_reason: "stop_sequence", stop_sequence: "END", usage: { input_tokens: 1, output_tokens: 1 } },
      { id: "msg_s", text: ["one"], toolCalls: [], role: 3, finish: "STOP", usage: [1, 1, 2], stop: "END" },
    ],
    [
      "a stop_sequence without stop_reason stop_sequence is not one",
      { id: "msg_t", type: "message", role: "assistant", content: [{ type: "text", text: "one" }], stop_reason: "end_turn", stop_sequence: "END", usage: { input_tokens: 1, output_tokens: 1 } },
      { id: "msg_t", text: ["one"], toolCalls: [], role: 3, finish: "STOP", usage: [1, 1, 2] },
    ],
    [
      "tool calls after text, thinking skipped",
      {
        id: "msg_2",
        type: "message",
        role: "assistant",
        content: [
          { type: "thinking", thinking: "hmm", signature: "x" },
          { type: "text", text: "Let me check." },
          { type: "tool_use", id: "toolu_a", name: "get_weather", input: { city: "Paris", unit: "celsius" } },
          { type: "tool_use", id: "toolu_b", name: "get_time", input: {} },
        ],
        stop_reason: "tool_use",
        usage: { input_tokens: 40, output_tokens: 30 },
      },
      {
        id: "msg_2",
        text: ["Let me check."],
        toolCalls: [
          ["toolu_a", "get_weather", '{"city":"Paris","unit":"celsius"}'],
          ["toolu_b", "get_time", "{}"],
        ],
        role: 3,
        finish: "TOOL_CALLS",
        usage: [40, 30, 70],
      },
    ],
    [
      "only tool calls, cache tokens counted in the prompt",
      {
        id: "msg_3",
        content: [{ type: "tool_use", id: "t", name: "f", input: { a: [1, 2] } }],
        stop_reason: "tool_use",
        usage: { input_tokens: 5, cache_creation_input_tokens: 100, cache_read_input_tokens: 200, output_tokens: 9 },
      },
      { id: "msg_3", text: [], toolCalls: [["t", "f", '{"a":[1,2]}']], role: 3, finish: "TOOL_CALLS", usage: [305, 9, 314] },
    ],
    [
      "max_tokens, usage with nulls",
      { id: "msg_4", content: [{ type: "text", text: "cut" }], stop_reason: "max_tokens", usage: { input_tokens: 3, output_tokens: 2, cache_read_input_tokens: null } },
      { id: "msg_4", text: ["cut"], toolCalls: [], role: 3, finish: "LENGTH", usage: [3, 2, 5] },
    ],
  ])("%s", (_name, body, expected) => {
    expect(plainChat(fromMessagesResponse("claude-up", body))).toEqual(expected);
  });

  it.each<[string, unknown, string]>([
    ["not an object", "hello", "the answer has no content array"],
    ["no content", { id: "x", usage: {} }, "the answer has no content array"],
    ["a block that is not an object", { content: ["text"] }, "a content block is not an object"],
    ["a text block without text", { content: [{ type: "text" }] }, "a text block has no text"],
    ["a tool_use block without input", { content: [{ type: "tool_use", id: "a", name: "f" }] }, "a tool_use block lacks its id, name or input object"],
    ["usage that is not an object", { content: [], usage: 7 }, "usage is not an object"],
  ])("a malformed answer (%s) is UNAVAILABLE UPSTREAM_BAD_RESPONSE", (_name, body, problem) => {
    const err = errorOf(() => fromMessagesResponse("claude-up", body));
    expect(err.code).toBe(Code.Unavailable);
    expect(err.reason).toBe("UPSTREAM_BAD_RESPONSE");
    expect(err.message).toBe(`upstream "claude-up" sent an invalid response: ${problem}`);
  });
});

describe("finishReasonOf and usageOf", () => {
  it.each<[unknown, FinishReason]>([
    ["end_turn", FinishReason.STOP],
    ["stop_sequence", FinishReason.STOP],
    ["pause_turn", FinishReason.STOP],
    ["max_tokens", FinishReason.LENGTH],
    ["model_context_window_exceeded", FinishReason.LENGTH],
    ["tool_use", FinishReason.TOOL_CALLS],
    ["refusal", FinishReason.CONTENT_FILTER],
    [null, FinishReason.UNSPECIFIED],
    ["something_new", FinishReason.UNSPECIFIED],
  ])("stop_reason %s → %s", (stop, finish) => {
    expect(finishReasonOf(stop)).toBe(finish);
  });

  it.each<[Record<string, unknown>, [number, number, number]]>([
    [{ input_tokens: 12, output_tokens: 6 }, [12, 6, 18]],
    [{ input_tokens: 12, cache_creation_input_tokens: 100, cache_read_input_tokens: 200, output_tokens: 6 }, [312, 6, 318]],
    [{ input_tokens: 12, cache_creation_input_tokens: null, cache_read_input_tokens: null, output_tokens: 0 }, [12, 0, 12]],
    [{}, [0, 0, 0]],
  ])("usage %j → %j", (u, [p, c, t]) => {
    const usage = usageOf(u);
    expect([usage.promptTokens, usage.completionTokens, usage.totalTokens]).toEqual([p, c, t]);
  });

  // [prompt, completion, total, cached prompt (cache reads), cache creation (cache writes), reasoning]
  it.each<[Record<string, unknown>, number[]]>([
    [{ input_tokens: 12, cache_creation_input_tokens: 100, cache_read_input_tokens: 200, output_tokens: 6 }, [312, 6, 318, 200, 100, 0]],
    [{ input_tokens: 12, cache_creation_input_tokens: 0, cache_read_input_tokens: 2048, output_tokens: 6 }, [2060, 6, 2066, 2048, 0, 0]],
    [{ input_tokens: 12, cache_creation_input_tokens: null, cache_read_input_tokens: null, output_tokens: 6 }, [12, 6, 18, 0, 0, 0]],
    [{ input_tokens: 12, cache_creation_input_tokens: "100", cache_read_input_tokens: -5, output_tokens: 6 }, [12, 6, 18, 0, 0, 0]],
    [{ input_tokens: 12, cache_creation_input_tokens: 9.9, cache_read_input_tokens: Number.POSITIVE_INFINITY, output_tokens: 6 }, [21, 6, 27, 0, 9, 0]],
    [{ cache_read_input_tokens: 7 }, [7, 0, 7, 7, 0, 0]],
    // Counts past what a uint32 holds: the prompt stops at 2³²−1, the parts inside it.
    [{ input_tokens: 2 ** 32 - 10, cache_creation_input_tokens: 4, cache_read_input_tokens: 2 ** 32 - 1, output_tokens: 1 }, [2 ** 32 - 1, 1, 2 ** 32 - 1, 2 ** 32 - 1, 0, 0]],
  ])("usage with cache counts %j → %j", (u, expected) => {
    const usage = usageOf(u);
    expect([usage.promptTokens, usage.completionTokens, usage.totalTokens, usage.cachedPromptTokens, usage.cacheCreationTokens, usage.reasoningTokens]).toEqual(
      expected,
    );
  });
});

// --- streams ------------------------------------------------------------------------------------

type Plain =
  | ["text", string]
  | ["tool", { index: number; id: string; name: string; arguments: string }]
  | ["final", { id: string; finish: string; usage: number[]; stop?: string }];

function plain(e: GenerateResponse): Plain {
  switch (e.event.case) {
    case "textDelta":
      return ["text", e.event.value];
    case "toolCallDelta": {
      const { index, id, name, arguments: args } = e.event.value;
      return ["tool", { index, id, name, arguments: args }];
    }
    case "final": {
      const { id, finishReason, usage, stopSequence } = e.event.value;
      const stop = stopSequence === "" ? {} : { stop: stopSequence };
      return ["final", { id, finish: FinishReason[finishReason], usage: [usage!.promptTokens, usage!.completionTokens, usage!.totalTokens], ...stop }];
    }
    default:
      throw new Error("empty event");
  }
}

/** Runs an SSE body through the decoder and a translator: the events, then how it ended. */
function translate(sse: string): { events: Plain[]; error: GatewayError | undefined } {
  const decoder = createSseDecoder({ maxEventSize: 1 << 20 });
  const t = createStreamTranslator("claude-up");
  const events: Plain[] = [];
  try {
    for (const ev of [...decoder.push(new TextEncoder().encode(sse)), ...decoder.end()]) {
      events.push(...t.push(ev).map(plain));
      if (t.done) {
        return { events, error: undefined };
      }
    }
    t.end();
  } catch (err) {
    if (err instanceof GatewayError) {
      return { events, error: err };
    }
    throw err;
  }
  return { events, error: undefined };
}

const sse = (...events: [string, string][]): string => events.map(([name, data]) => `event: ${name}\ndata: ${data}\n\n`).join("");
const start = (usage = '{"input_tokens":12,"output_tokens":1}', id = "msg_s") =>
  ["message_start", `{"type":"message_start","message":{"id":"${id}","type":"message","role":"assistant","model":"claude","content":[],"stop_reason":null,"stop_sequence":null,"usage":${usage}}}`] as [string, string];
const blockStart = (i: number, block: string) => ["content_block_start", `{"type":"content_block_start","index":${i},"content_block":${block}}`] as [string, string];
const textDelta = (i: number, t: string) => ["content_block_delta", `{"type":"content_block_delta","index":${i},"delta":{"type":"text_delta","text":${JSON.stringify(t)}}}`] as [string, string];
const jsonDelta = (i: number, t: string) =>
  ["content_block_delta", `{"type":"content_block_delta","index":${i},"delta":{"type":"input_json_delta","partial_json":${JSON.stringify(t)}}}`] as [string, string];
const blockStop = (i: number) => ["content_block_stop", `{"type":"content_block_stop","index":${i}}`] as [string, string];
const messageDelta = (stop: string, usage = '{"output_tokens":6}') =>
  ["message_delta", `{"type":"message_delta","delta":{"stop_reason":"${stop}","stop_sequence":null},"usage":${usage}}`] as [string, string];
const messageStop: [string, string] = ["message_stop", '{"type":"message_stop"}'];
const ping: [string, string] = ["ping", '{"type": "ping"}'];

describe("stream translator", () => {
  it.each<[string, string, Plain[]]>([
    [
      "text with a ping",
      sse(start(), blockStart(0, '{"type":"text","text":""}'), ping, textDelta(0, "Hello"), textDelta(0, " from"), textDelta(0, " the fake."), blockStop(0), messageDelta("end_turn"), messageStop),
      [
        ["text", "Hello"],
        ["text", " from"],
        ["text", " the fake."],
        ["final", { id: "msg_s", finish: "STOP", usage: [12, 6, 18] }],
      ],
    ],
    [
      "text, then two tool calls indexed by position among tool calls, not by block",
      sse(
        start('{"input_tokens":40,"output_tokens":1}', "msg_t"),
        blockStart(0, '{"type":"text","text":""}'),
        textDelta(0, "Let me check."),
        blockStop(0),
        blockStart(1, '{"type":"tool_use","id":"toolu_w","name":"get_weather","input":{}}'),
        jsonDelta(1, ""),
        jsonDelta(1, '{"ci'),
        jsonDelta(1, 'ty": "Paris"}'),
        blockStop(1),
        ping,
        blockStart(2, '{"type":"tool_use","id":"toolu_t","name":"get_time","input":{}}'),
        jsonDelta(2, '{"tz": "UTC"}'),
        blockStop(2),
        messageDelta("tool_use", '{"output_tokens":30}'),
        messageStop,
      ),
      [
        ["text", "Let me check."],
        ["tool", { index: 0, id: "toolu_w", name: "get_weather", arguments: "" }],
        ["tool", { index: 0, id: "", name: "", arguments: '{"ci' }],
        ["tool", { index: 0, id: "", name: "", arguments: 'ty": "Paris"}' }],
        ["tool", { index: 1, id: "toolu_t", name: "get_time", arguments: "" }],
        ["tool", { index: 1, id: "", name: "", arguments: '{"tz": "UTC"}' }],
        ["final", { id: "msg_t", finish: "TOOL_CALLS", usage: [40, 30, 70] }],
      ],
    ],
    [
      "a tool call whose input streams nothing gets {} at its end",
      sse(
        start(),
        blockStart(0, '{"type":"tool_use","id":"toolu_n","name":"now","input":{}}'),
        jsonDelta(0, ""),
        blockStop(0),
        messageDelta("tool_use", '{"output_tokens":3}'),
        messageStop,
      ),
      [
        ["tool", { index: 0, id: "toolu_n", name: "now", arguments: "" }],
        ["tool", { index: 0, id: "", name: "", arguments: "{}" }],
        ["final", { id: "msg_s", finish: "TOOL_CALLS", usage: [12, 3, 15] }],
      ],
    ],
    [
      "cache tokens from message_start, cumulative usage from message_delta",
      sse(
        start('{"input_tokens":12,"cache_creation_input_tokens":100,"cache_read_input_tokens":200,"output_tokens":1,"service_tier":"standard"}'),
        blockStart(0, '{"type":"text","text":""}'),
        textDelta(0, "Hi"),
        blockStop(0),
        messageDelta("max_tokens", '{"input_tokens":12,"cache_creation_input_tokens":null,"cache_read_input_tokens":200,"output_tokens":6}'),
        messageStop,
      ),
      [
        ["text", "Hi"],
        ["final", { id: "msg_s", finish: "LENGTH", usage: [312, 6, 318] }],
      ],
    ],
    [
      "unknown events, thinking blocks and their deltas are ignored",
      sse(
        start(),
        ["future_event", '{"type":"future_event","x":1}'],
        blockStart(0, '{"type":"thinking","thinking":"","signature":""}'),
        ["content_block_delta", '{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}'],
        ["content_block_delta", '{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"sig"}}'],
        blockStop(0),
        blockStart(1, '{"type":"text","text":"Hi"}'),
        textDelta(1, ""),
        textDelta(1, "!"),
        ["content_block_delta", '{"type":"content_block_delta","index":1,"delta":{"type":"citations_delta","citation":{}}}'],
        blockStop(1),
        messageDelta("refusal", '{"output_tokens":2}'),
        messageStop,
      ),
      [
        ["text", "Hi"],
        ["text", "!"],
        ["final", { id: "msg_s", finish: "CONTENT_FILTER", usage: [12, 2, 14] }],
      ],
    ],
    [
      "events after message_stop are not read",
      sse(start(), messageDelta("end_turn", '{"output_tokens":0}'), messageStop, blockStart(0, '{"type":"text","text":"late"}')),
      [["final", { id: "msg_s", finish: "STOP", usage: [12, 0, 12] }]],
    ],
    [
      "CRLF, comments and data split over two lines",
      ': hi\r\n\r\nevent: message_start\r\ndata: {"type":"message_start",\r\ndata: "message":{"id":"msg_c","usage":{"input_tokens":1,"output_tokens":1}}}\r\n\r\n' +
        'event: content_block_start\r\ndata:{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\r\n\r\n' +
        'event: content_block_delta\r\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"ok"}}\r\n\r\n' +
        'event: message_delta\r\ndata: {"type":"message_delta","delta":{"stop_reason":"stop_sequence","stop_sequence":"END"},"usage":{"output_tokens":1}}\r\n\r\n' +
        'event: message_stop\r\ndata: \r\ndata: {"type":"message_stop"}\r\n\r\n',
      [
        ["text", "ok"],
        ["final", { id: "msg_c", finish: "STOP", usage: [1, 1, 2], stop: "END" }],
      ],
    ],
  ])("%s", (_name, body, expected) => {
    const { events, error } = translate(body);
    expect(error).toBeUndefined();
    expect(events).toEqual(expected);
  });

  it.each<[string, string, Plain[], { code: Code; reason: string; message: string }]>([
    [
      "an overloaded_error event after deltas",
      sse(start(), blockStart(0, '{"type":"text","text":""}'), ping, textDelta(0, "Hello"), textDelta(0, " from"), ["error", '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}']),
      [
        ["text", "Hello"],
        ["text", " from"],
      ],
      { code: Code.Unavailable, reason: "UPSTREAM_UNAVAILABLE", message: 'upstream "claude-up" failed during the stream (overloaded_error)' },
    ],
    [
      "an error event before anything else",
      sse(["error", '{"type":"error","error":{"type":"api_error","message":"Internal server error"}}']),
      [],
      { code: Code.Unavailable, reason: "UPSTREAM_UNAVAILABLE", message: 'upstream "claude-up" failed during the stream (api_error)' },
    ],
    [
      "the end of the body without message_stop",
      sse(start(), blockStart(0, '{"type":"text","text":""}'), textDelta(0, "Hello"), textDelta(0, " the")),
      [
        ["text", "Hello"],
        ["text", " the"],
      ],
      { code: Code.Unavailable, reason: "STREAM_TRUNCATED", message: 'upstream "claude-up" ended the stream before message_stop' },
    ],
    [
      "a stream that ends after message_delta",
      sse(start(), messageDelta("end_turn")),
      [],
      { code: Code.Unavailable, reason: "STREAM_TRUNCATED", message: 'upstream "claude-up" ended the stream before message_stop' },
    ],
    [
      "an empty body",
      "",
      [],
      { code: Code.Unavailable, reason: "STREAM_TRUNCATED", message: 'upstream "claude-up" ended the stream before message_stop' },
    ],
    [
      "malformed JSON in an event",
      sse(start(), blockStart(0, '{"type":"text","text":""}'), textDelta(0, "Hello"), ["content_block_delta", '{"type":"content_block_delta","index":0,"delta":{"'], textDelta(0, " the")),
      [["text", "Hello"]],
      { code: Code.Unavailable, reason: "UPSTREAM_BAD_RESPONSE", message: 'upstream "claude-up" sent an invalid response: malformed JSON in a "content_block_delta" event' },
    ],
    [
      "malformed JSON in a ping",
      sse(start(), ["ping", "{"]),
      [],
      { code: Code.Unavailable, reason: "UPSTREAM_BAD_RESPONSE", message: 'upstream "claude-up" sent an invalid response: malformed JSON in a "ping" event' },
    ],
    [
      "a delta before message_start",
      sse(blockStart(0, '{"type":"text","text":""}')),
      [],
      { code: Code.Unavailable, reason: "UPSTREAM_BAD_RESPONSE", message: 'upstream "claude-up" sent an invalid response: content_block_start before message_start' },
    ],
    [
      "a delta of a block never started",
      sse(start(), textDelta(3, "x")),
      [],
      { code: Code.Unavailable, reason: "UPSTREAM_BAD_RESPONSE", message: 'upstream "claude-up" sent an invalid response: a content_block_delta event for a content block that was not started' },
    ],
    [
      "an input_json_delta on a text block",
      sse(start(), blockStart(0, '{"type":"text","text":""}'), jsonDelta(0, "{")),
      [],
      { code: Code.Unavailable, reason: "UPSTREAM_BAD_RESPONSE", message: 'upstream "claude-up" sent an invalid response: an input_json_delta that does not fit its block' },
    ],
    [
      "an event without a type",
      sse(start(), ["content_block_delta", '{"index":0}']),
      [],
      { code: Code.Unavailable, reason: "UPSTREAM_BAD_RESPONSE", message: 'upstream "claude-up" sent an invalid response: a "content_block_delta" event without a type' },
    ],
  ])("%s fails after the events before it", (_name, body, expected, want) => {
    const { events, error } = translate(body);
    expect(events).toEqual(expected);
    expect(error).toBeDefined();
    expect({ code: error!.code, reason: error!.reason, message: error!.message }).toEqual(want);
    expect(error!.metadata["upstream"]).toBe("claude-up");
  });

  it("keeps the upstream's error message out of the client's status and in the cause", () => {
    const { error } = translate(sse(start(), ["error", '{"type":"error","error":{"type":"overloaded_error","message":"secret-ish detail"}}']));
    expect(error!.message).not.toContain("secret-ish");
    expect(error!.metadata).toEqual({ upstream: "claude-up", upstream_error: "overloaded_error" });
    expect(String((error!.cause as { bodySnippet?: string }).bodySnippet)).toContain("secret-ish detail");
  });
});

describe("anthropic kind options", () => {
  it("defaults: version 2023-06-01, 1 MiB events, no http overrides; maxTokens 4096", () => {
    expect(anthropicOptionsSchema.parse({})).toEqual({ anthropicVersion: "2023-06-01", maxEventBytes: 1048576 });
    expect(anthropicModelOptionsSchema.parse({})).toEqual({ maxTokens: 4096 });
    expect(anthropicOptionsSchema.parse({ http: { connections: 4 } })).toEqual({
      anthropicVersion: "2023-06-01",
      maxEventBytes: 1048576,
      http: { connections: 4 },
    });
  });

  const config = (upstreamOptions: string, modelOptions: string, endpoints = '["https://api.anthropic.com"]') => `
upstreams:
  - name: claude-up
    kind: anthropic
    endpoints: ${endpoints}
    apiKey: "k"
    options: ${upstreamOptions}
models:
  - name: claude
    upstream: claude-up
    options: ${modelOptions}
`;

  it.each<[string, string, string, string | undefined, string[]]>([
    ["maxTokens 0", "{}", "{ maxTokens: 0 }", undefined, ["models[0].options.maxTokens"]],
    ["maxTokens not a whole number", "{}", "{ maxTokens: 1.5 }", undefined, ["models[0].options.maxTokens"]],
    ["an unknown model option", "{}", "{ max_tokens: 10 }", undefined, ["models[0].options"]],
    ["an unknown upstream option", "{ version: x }", "{}", undefined, ["upstreams[0].options"]],
    ["an unknown http option", "{ http: { keepAlive: 1 } }", "{}", undefined, ["upstreams[0].options.http"]],
    ["maxEventBytes 0", "{ maxEventBytes: 0 }", "{}", undefined, ["upstreams[0].options.maxEventBytes"]],
    ["no endpoint", "{}", "{}", "[]", ["upstreams[0].endpoints"]],
  ])("refuses %s at its path", (_name, up, model, endpoints, paths) => {
    let err: unknown;
    try {
      parseConfig(config(up, model, endpoints), "(test)", {});
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).issues.map((i) => i.path)).toEqual(paths);
  });

  it("accepts a full configuration", () => {
    const c = parseConfig(
      config('{ anthropicVersion: "2023-06-01", maxEventBytes: 65536, http: { connections: 8, connectTimeoutMs: 1000, headersTimeoutMs: 30000, maxResponseBytes: 1048576 } }', "{ maxTokens: 1024 }"),
      "(test)",
      {},
    );
    expect(c.upstreams[0]!.kind).toBe("anthropic");
    expect(c.models[0]!.options).toEqual({ maxTokens: 1024 });
  });
});

describe("stream translator: cache counts", () => {
  /** The final event's usage of a stream, all six counts. */
  function finalUsage(body: string): number[] {
    const decoder = createSseDecoder({ maxEventSize: 1 << 20 });
    const t = createStreamTranslator("claude-up");
    const events = [...decoder.push(new TextEncoder().encode(body)), ...decoder.end()].flatMap((ev) => t.push(ev));
    const last = events.at(-1)?.event;
    if (last?.case !== "final") throw new Error(`no final event: ${last?.case}`);
    const u = last.value.usage!;
    return [u.promptTokens, u.completionTokens, u.totalTokens, u.cachedPromptTokens, u.cacheCreationTokens, u.reasoningTokens];
  }
  const stream = (startUsage: string, deltaUsage: string) =>
    sse(start(startUsage), blockStart(0, '{"type":"text","text":""}'), textDelta(0, "Hi"), blockStop(0), messageDelta("end_turn", deltaUsage), messageStop);
  const startUsage = '{"input_tokens":12,"cache_creation_input_tokens":100,"cache_read_input_tokens":2000,"output_tokens":1,"service_tier":"standard"}';

  it.each<[string, string, number[]]>([
    ["message_delta with output_tokens only keeps message_start's cache counts", '{"output_tokens":6}', [2112, 6, 2118, 2000, 100, 0]],
    ["message_delta with the cache counts null keeps message_start's", '{"input_tokens":null,"cache_creation_input_tokens":null,"cache_read_input_tokens":null,"output_tokens":6}', [2112, 6, 2118, 2000, 100, 0]],
    [
      "message_delta's cumulative cache counts win where it has them",
      '{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":2100,"output_tokens":6}',
      [2112, 6, 2118, 2100, 0, 0],
    ],
  ])("%s", (_name, deltaUsage, expected) => {
    expect(finalUsage(stream(startUsage, deltaUsage))).toEqual(expected);
  });
});
