/**
 * The OpenAI-compatible ingress's pure translations (src/ingress/openai/openai-ingress-translate.ts):
 * API requests → ours, our answers, streams, model lists and errors → the API's JSON. Where a
 * mapping has a forward direction (the openai upstream kind), the two are also run one after the
 * other: what the ingress reads, the adapter writes back unchanged, and what the ingress streams,
 * the adapter's stream translator reads back as the same events.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { FinishReason, UsageSchema } from "../../gen/infergate/v1/chat_pb.js";
import {
  Capability,
  ChatRequestSchema,
  ChatResponseSchema,
  GenerateRequestSchema,
  type GenerateResponse,
  GenerateResponseSchema,
  ListModelsResponseSchema,
} from "../../gen/infergate/v1/inference_service_pb.js";
import { GatewayError, invalidArgument, Reason } from "../../src/core/gateway-error.js";
import {
  createChunkEncoder,
  fromChatCompletionRequest,
  toChatCompletion,
  toErrorAnswer,
  toModelList,
} from "../../src/ingress/openai/openai-ingress-translate.js";
import { createStreamTranslator, type RequestContext, toChatCompletionRequest } from "../../src/upstreams/openai/openai-translate.js";
import type { ChatCompletionChunk } from "../../src/upstreams/openai/openai-wire.js";

type Obj = Record<string, unknown>;
type ChatInit = MessageInitShape<typeof ChatRequestSchema>;

const ROLE = { SYSTEM: 1, USER: 2, ASSISTANT: 3, TOOL: 4, DEVELOPER: 5 } as const;
const hi = [{ role: "user", content: "hi" }];
const text = (value: string) => ({ part: { case: "text" as const, value } });
const userHi = { role: ROLE.USER, content: [text("hi")] };

/** Reads a unary request body and returns our ChatRequest. */
function read(body: Obj) {
  const r = fromChatCompletionRequest(body);
  if (r.stream) throw new Error("expected a unary request");
  return r.request;
}

/** The GatewayError a function throws. */
function errorOf(fn: () => unknown): GatewayError {
  try {
    fn();
  } catch (err) {
    if (err instanceof GatewayError) return err;
    throw err;
  }
  throw new Error("no error was thrown");
}

describe("fromChatCompletionRequest", () => {
  it("reads model and messages; everything else stays unset", () => {
    expect(read({ model: "gpt", messages: hi })).toEqual(create(ChatRequestSchema, { model: "gpt", messages: [userHi] }));
  });

  it.each<[string, Obj, Partial<ChatInit>]>([
    ["temperature 0 is kept (unset differs from zero)", { temperature: 0 }, { temperature: 0 }],
    ["top_p", { top_p: 0.25 }, { topP: 0.25 }],
    ["max_tokens", { max_tokens: 50 }, { maxTokens: 50 }],
    ["max_completion_tokens", { max_completion_tokens: 60 }, { maxTokens: 60 }],
    ["seed", { seed: 42 }, { seed: 42n }],
    ["a negative seed", { seed: -7 }, { seed: -7n }],
    ["the largest safe seed", { seed: 9007199254740991 }, { seed: 9007199254740991n }],
    ["presence and frequency penalties", { presence_penalty: -1.5, frequency_penalty: 0.5 }, { presencePenalty: -1.5, frequencyPenalty: 0.5 }],
    ["stop as a string", { stop: "END" }, { stop: ["END"] }],
    ["stop as an array", { stop: ["\n\n", "END"] }, { stop: ["\n\n", "END"] }],
    ["response_format text", { response_format: { type: "text" } }, { responseFormat: { type: 1 } }],
    ["response_format json_object", { response_format: { type: "json_object" } }, { responseFormat: { type: 2 } }],
    [
      "response_format json_schema",
      { response_format: { type: "json_schema", json_schema: { name: "a", description: "d", schema: { type: "object" }, strict: true } } },
      { responseFormat: { type: 3, jsonSchema: { name: "a", description: "d", schema: { type: "object" }, strict: true } } },
    ],
    ["tool_choice auto", { tool_choice: "auto" }, { toolChoice: { choice: { case: "mode", value: 1 } } }],
    ["tool_choice none", { tool_choice: "none" }, { toolChoice: { choice: { case: "mode", value: 2 } } }],
    ["tool_choice required", { tool_choice: "required" }, { toolChoice: { choice: { case: "mode", value: 3 } } }],
    [
      "tool_choice a function",
      { tool_choice: { type: "function", function: { name: "f" } } },
      { toolChoice: { choice: { case: "functionName", value: "f" } } },
    ],
    ["parallel_tool_calls", { parallel_tool_calls: false }, { parallelToolCalls: false }],
    [
      "tools",
      { tools: [{ type: "function", function: { name: "f", description: "does f", parameters: { type: "object" }, strict: false } }, { type: "function", function: { name: "g" } }] },
      { tools: [{ name: "f", description: "does f", parameters: { type: "object" }, strict: false }, { name: "g" }] },
    ],
    ["metadata (the mock model's fault switches live there)", { metadata: { "mock.token_delay_ms": "5" } }, { metadata: { "mock.token_delay_ms": "5" } }],
    ["null is unset", { temperature: null, stop: null, tools: null, user: null, n: null, stream: null }, {}],
    ["values that ask for nothing are accepted", { n: 1, logprobs: false, store: false, logit_bias: {}, modalities: ["text"], service_tier: "auto", top_logprobs: 0 }, {}],
  ])("%s", (_name, extra, init) => {
    expect(read({ model: "gpt", messages: hi, ...extra })).toEqual(create(ChatRequestSchema, { model: "gpt", messages: [userHi], ...init } as ChatInit));
  });

  it.each<[string, Obj, ChatInit["messages"]]>([
    ["system, developer, named user", { messages: [{ role: "system", content: "S" }, { role: "developer", content: "D" }, { role: "user", content: "U", name: "ann" }] }, [
      { role: ROLE.SYSTEM, content: [text("S")] },
      { role: ROLE.DEVELOPER, content: [text("D")] },
      { role: ROLE.USER, content: [text("U")], name: "ann" },
    ]],
    ["system content as text parts, one part each", { messages: [{ role: "system", content: [{ type: "text", text: "a" }, { type: "text", text: "b" }] }] }, [
      { role: ROLE.SYSTEM, content: [text("a"), text("b")] },
    ]],
    [
      "user image by URL, with detail",
      { messages: [{ role: "user", content: [{ type: "text", text: "what?" }, { type: "image_url", image_url: { url: "https://x.test/a.png", detail: "high" } }] }] },
      [{ role: ROLE.USER, content: [text("what?"), { part: { case: "imageUrl", value: { url: "https://x.test/a.png", detail: 2 } } }] }],
    ],
    [
      "detail auto is the default (unset)",
      { messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "https://x.test/a.png", detail: "auto" } }] }] },
      [{ role: ROLE.USER, content: [{ part: { case: "imageUrl", value: { url: "https://x.test/a.png", detail: 0 } } }] }],
    ],
    [
      "a data: URI becomes bytes and MIME type",
      { messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "data:image/PNG;base64,AQID", detail: "low" } }] }] },
      [{ role: ROLE.USER, content: [{ part: { case: "imageData", value: { data: new Uint8Array([1, 2, 3]), mimeType: "image/png", detail: 1 } } }] }],
    ],
    [
      "assistant with tool calls and content null, then the tool's result",
      {
        messages: [
          { role: "user", content: "weather?" },
          { role: "assistant", content: null, tool_calls: [{ id: "c1", type: "function", function: { name: "w", arguments: '{"c":"P"}' } }] },
          { role: "tool", tool_call_id: "c1", content: "sunny" },
        ],
      },
      [
        { role: ROLE.USER, content: [text("weather?")] },
        { role: ROLE.ASSISTANT, content: [], toolCalls: [{ id: "c1", name: "w", arguments: '{"c":"P"}' }] },
        { role: ROLE.TOOL, toolCallId: "c1", content: [text("sunny")] },
      ],
    ],
    [
      "assistant content \"\" is no text; a refusal is text",
      { messages: [{ role: "assistant", content: "", tool_calls: [{ id: "c", type: "function", function: { name: "w", arguments: "" } }] }, { role: "assistant", content: "a", refusal: "no" }] },
      [
        { role: ROLE.ASSISTANT, content: [], toolCalls: [{ id: "c", name: "w", arguments: "" }] },
        { role: ROLE.ASSISTANT, content: [text("a"), text("no")] },
      ],
    ],
    ["tool content as text parts", { messages: [{ role: "tool", tool_call_id: "c", content: [{ type: "text", text: "r" }] }] }, [
      { role: ROLE.TOOL, toolCallId: "c", content: [text("r")] },
    ]],
  ])("messages: %s", (_name, body, messages) => {
    expect(read({ model: "gpt", ...body })).toEqual(create(ChatRequestSchema, { model: "gpt", messages }));
  });

  it("user and safety_identifier become request metadata (they do not change the answer)", () => {
    const r = read({ model: "gpt", messages: hi, user: "u-1", safety_identifier: "s-9", metadata: { team: "a" } });
    expect(r.metadata).toEqual({ team: "a", "openai.user": "u-1", "openai.safety_identifier": "s-9" });
  });

  it("stream: true is a GenerateRequest; include_usage is read", () => {
    const r = fromChatCompletionRequest({ model: "gpt", messages: hi, stream: true, stream_options: { include_usage: true, include_obfuscation: false } });
    expect(r).toEqual({ stream: true, includeUsage: true, request: create(GenerateRequestSchema, { model: "gpt", messages: [userHi] }) });
    const plain = fromChatCompletionRequest({ model: "gpt", messages: hi, stream: true });
    expect(plain.stream && plain.includeUsage).toBe(false);
  });

  it.each<[string, unknown, string | undefined, string]>([
    ["a body that is not an object", [1], undefined, "JSON object"],
    ["no model", { model: undefined }, "model", "required"],
    ["an empty model", { model: "" }, "model", "required"],
    ["no messages", { messages: undefined }, "messages", "required"],
    ["n > 1", { n: 2 }, "n", "only 1"],
    ["logprobs", { logprobs: true }, "logprobs", "not supported"],
    ["logit_bias", { logit_bias: { "50256": -100 } }, "logit_bias", "not supported"],
    ["audio output", { modalities: ["text", "audio"] }, "modalities", "text"],
    ["a vendor extension", { top_k: 40 }, "top_k", "not supported"],
    ["deprecated functions", { functions: [{ name: "f" }] }, "functions", "not supported"],
    ["stream_options without stream", { stream_options: { include_usage: true } }, "stream_options", "only allowed when stream is true"],
    ["an unknown stream option", { stream: true, stream_options: { x: 1 } }, "stream_options.x", "not supported"],
    ["both token limits", { max_tokens: 1, max_completion_tokens: 2 }, "max_tokens", "not both"],
    ["max_tokens 0", { max_tokens: 0 }, "max_tokens", "from 1"],
    ["a fractional max_completion_tokens", { max_completion_tokens: 1.5 }, "max_completion_tokens", "whole number"],
    ["an unsafe seed", { seed: 2 ** 60 }, "seed", "integer"],
    ["temperature as text", { temperature: "hot" }, "temperature", "number"],
    ["stop with a number", { stop: ["a", 1] }, "stop[1]", "string"],
    ["the function role", { messages: [{ role: "function", name: "f", content: "x" }] }, "messages[0].role", "use tool"],
    ["no role", { messages: [{ content: "x" }] }, "messages[0].role", "one of system"],
    ["no content", { messages: [{ role: "user" }] }, "messages[0].content", "required"],
    ["a name on a tool message", { messages: [{ role: "tool", tool_call_id: "c", content: "r", name: "n" }] }, "messages[0].name", "not supported"],
    ["a tool message without tool_call_id", { messages: [{ role: "tool", content: "r" }] }, "messages[0].tool_call_id", "string"],
    ["an audio part", { messages: [{ role: "user", content: [{ type: "input_audio", input_audio: { data: "", format: "wav" } }] }] }, "messages[0].content[0].type", "input_audio"],
    ["an image in a system message", { messages: [{ role: "system", content: [{ type: "image_url", image_url: { url: "https://x" } }] }] }, "messages[0].content[0].type", "user messages only"],
    ["an unknown image detail", { messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "https://x", detail: "max" } }] }] }, "messages[0].content[0].image_url.detail", "auto, low, high"],
    ["a data: URI that is not base64", { messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "data:image/png,%01" } }] }] }, "messages[0].content[0].image_url.url", "base64"],
    ["a data: URI with broken base64", { messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "data:image/png;base64,A*==" } }] }] }, "messages[0].content[0].image_url.url", "base64"],
    ["a data: URI that is not an image", { messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "data:text/plain;base64,AQID" } }] }] }, "messages[0].content[0].image_url.url", "image/"],
    ["deprecated function_call on an assistant turn", { messages: [{ role: "assistant", content: "x", function_call: { name: "f", arguments: "" } }] }, "messages[0].function_call", "not supported"],
    ["a tool call without id", { messages: [{ role: "assistant", tool_calls: [{ type: "function", function: { name: "f", arguments: "" } }] }] }, "messages[0].tool_calls[0].id", "string"],
    ["a custom tool", { tools: [{ type: "custom", custom: { name: "c" } }] }, "tools[0].type", "function"],
    ["tool parameters that are not an object", { tools: [{ type: "function", function: { name: "f", parameters: [] } }] }, "tools[0].function.parameters", "object"],
    ["an unknown tool_choice", { tool_choice: "any" }, "tool_choice", '"auto", "none", "required"'],
    ["tool_choice allowed_tools", { tool_choice: { type: "allowed_tools", allowed_tools: {} } }, "tool_choice.type", "function"],
    ["an unknown response_format", { response_format: { type: "grammar" } }, "response_format.type", "json_schema"],
    ["json_schema without its object", { response_format: { type: "json_schema" } }, "response_format.json_schema", "object"],
    ["metadata with a number", { metadata: { a: 1 } }, "metadata.a", "string"],
  ])("refuses %s with INVALID_ARGUMENT naming the field", (_name, extra, field, problem) => {
    const body = Array.isArray(extra) ? extra : { model: "gpt", messages: hi, ...(extra as Obj) };
    const err = errorOf(() => fromChatCompletionRequest(body));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.metadata["field"]).toBe(field);
    expect(err.message).toContain(problem);
  });
});

describe("one mapping, both ways: the openai kind writes back what the ingress read", () => {
  const forward: RequestContext = { model: "gpt", developerRole: "developer", maxTokensField: "max_tokens", stream: false };
  it.each<[string, Obj]>([
    ["plain text", { messages: hi }],
    [
      "every role, tools, sampling",
      {
        messages: [
          { role: "system", content: "Be brief.", name: "s" },
          { role: "developer", content: "JSON." },
          { role: "user", content: [{ type: "text", text: "look" }, { type: "image_url", image_url: { url: "https://x.test/i.png", detail: "low" } }, { type: "image_url", image_url: { url: "data:image/jpeg;base64,/9j/" } }] },
          { role: "assistant", content: null, tool_calls: [{ id: "c1", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris"}' } }] },
          { role: "tool", tool_call_id: "c1", content: "sunny" },
          { role: "assistant", content: "It is sunny.", name: "bot" },
        ],
        tools: [{ type: "function", function: { name: "get_weather", description: "Weather", parameters: { type: "object", properties: { city: { type: "string" } } }, strict: true } }],
        tool_choice: { type: "function", function: { name: "get_weather" } },
        parallel_tool_calls: true,
        temperature: 0.5,
        top_p: 0.9,
        max_tokens: 100,
        seed: 7,
        presence_penalty: 0.1,
        frequency_penalty: -0.1,
        stop: ["END"],
        response_format: { type: "json_schema", json_schema: { name: "a", description: "d", schema: { type: "object" }, strict: false } },
      },
    ],
    ["json_object", { messages: hi, response_format: { type: "json_object" } }],
    ["tool_choice required", { messages: hi, tools: [{ type: "function", function: { name: "f" } }], tool_choice: "required" }],
  ])("%s", (_name, body) => {
    const wire = { model: "gpt", stream: false, ...body };
    expect(toChatCompletionRequest(read(wire), forward)).toEqual(wire);
  });
});

// Cache-creation tokens have no field in the API: they stay inside prompt_tokens.
const usage = { promptTokens: 3, completionTokens: 4, totalTokens: 7, cachedPromptTokens: 2, cacheCreationTokens: 1, reasoningTokens: 3 };
const wireUsage = {
  prompt_tokens: 3,
  completion_tokens: 4,
  total_tokens: 7,
  prompt_tokens_details: { cached_tokens: 2 },
  completion_tokens_details: { reasoning_tokens: 3 },
};

describe("toChatCompletion", () => {
  it("a text answer", () => {
    const res = create(ChatResponseSchema, {
      id: "chatcmpl-1",
      model: "gpt",
      message: { role: ROLE.ASSISTANT, content: [text("Hello"), text(" there")] },
      finishReason: FinishReason.STOP,
      usage,
    });
    expect(toChatCompletion(res, 1700000000)).toEqual({
      id: "chatcmpl-1",
      object: "chat.completion",
      created: 1700000000,
      model: "gpt",
      choices: [{ index: 0, message: { role: "assistant", content: "Hello there", refusal: null }, finish_reason: "stop", logprobs: null }],
      usage: wireUsage,
    });
  });

  it("tool calls only: content null, finish tool_calls", () => {
    const res = create(ChatResponseSchema, {
      id: "x",
      model: "gpt",
      message: { role: ROLE.ASSISTANT, toolCalls: [{ id: "c1", name: "f", arguments: "{}" }, { id: "c2", name: "g", arguments: '{"a":1}' }] },
      finishReason: FinishReason.TOOL_CALLS,
    });
    const out = toChatCompletion(res, 1);
    expect(out.choices[0]!.message).toEqual({
      role: "assistant",
      content: null,
      refusal: null,
      tool_calls: [
        { id: "c1", type: "function", function: { name: "f", arguments: "{}" } },
        { id: "c2", type: "function", function: { name: "g", arguments: '{"a":1}' } },
      ],
    });
    // No usage: zeros, the details too (OpenAI always sends them).
    expect(out.usage).toEqual({
      prompt_tokens: 0,
      completion_tokens: 0,
      total_tokens: 0,
      prompt_tokens_details: { cached_tokens: 0 },
      completion_tokens_details: { reasoning_tokens: 0 },
    });
  });

  it.each<[FinishReason, boolean, string]>([
    [FinishReason.STOP, false, "stop"],
    [FinishReason.LENGTH, false, "length"],
    [FinishReason.TOOL_CALLS, true, "tool_calls"],
    [FinishReason.CONTENT_FILTER, false, "content_filter"],
    [FinishReason.UNSPECIFIED, false, "stop"],
    [FinishReason.UNSPECIFIED, true, "tool_calls"],
  ])("finish reason %s (tool calls: %s) → %s", (finishReason, calls, wire) => {
    const res = create(ChatResponseSchema, {
      message: { role: ROLE.ASSISTANT, content: [text("t")], toolCalls: calls ? [{ id: "c", name: "f", arguments: "" }] : [] },
      finishReason,
    });
    expect(toChatCompletion(res, 1).choices[0]!.finish_reason).toBe(wire);
  });

  it("an image part in an answer is an internal error, not dropped", () => {
    const res = create(ChatResponseSchema, { message: { role: ROLE.ASSISTANT, content: [{ part: { case: "imageUrl", value: { url: "https://x" } } }] } });
    expect(errorOf(() => toChatCompletion(res, 1)).code).toBe(Code.Internal);
  });
});

const ev = {
  text: (value: string) => create(GenerateResponseSchema, { event: { case: "textDelta", value } }),
  tool: (index: number, args: string, id = "", name = "") =>
    create(GenerateResponseSchema, { event: { case: "toolCallDelta", value: { index, id, name, arguments: args } } }),
  final: (finishReason: FinishReason, id = "") => create(GenerateResponseSchema, { event: { case: "final", value: { id, finishReason, usage } } }),
};

function encode(events: GenerateResponse[], includeUsage: boolean): ChatCompletionChunk[] {
  const enc = createChunkEncoder({ id: "chatcmpl-s", created: 5, model: "gpt", includeUsage });
  return events.flatMap((e) => enc.push(e));
}

describe("createChunkEncoder", () => {
  const head = { id: "chatcmpl-s", object: "chat.completion.chunk", created: 5, model: "gpt" };
  const choice = (delta: Obj, finish: string | null = null) => ({ index: 0, delta, finish_reason: finish, logprobs: null });

  it("text: role on the first chunk, then deltas, a finish chunk, and the usage chunk", () => {
    expect(encode([ev.text("Hel"), ev.text("lo"), ev.final(FinishReason.STOP)], true)).toEqual([
      { ...head, choices: [choice({ role: "assistant", content: "Hel" })], usage: null },
      { ...head, choices: [choice({ content: "lo" })], usage: null },
      { ...head, choices: [choice({}, "stop")], usage: null },
      { ...head, choices: [], usage: wireUsage },
    ]);
  });

  it("without include_usage: no usage key and no usage chunk", () => {
    expect(encode([ev.text("a"), ev.final(FinishReason.LENGTH)], false)).toEqual([
      { ...head, choices: [choice({ role: "assistant", content: "a" })] },
      { ...head, choices: [choice({}, "length")] },
    ]);
  });

  it("tool calls by index: id, type and name on the first fragment only", () => {
    expect(encode([ev.tool(0, '{"c"', "c1", "f"), ev.tool(0, ':1}'), ev.tool(1, "{}", "c2", "g"), ev.final(FinishReason.UNSPECIFIED)], false)).toEqual([
      { ...head, choices: [choice({ role: "assistant", tool_calls: [{ index: 0, id: "c1", type: "function", function: { name: "f", arguments: '{"c"' } }] })] },
      { ...head, choices: [choice({ tool_calls: [{ index: 0, function: { arguments: ":1}" } }] })] },
      { ...head, choices: [choice({ tool_calls: [{ index: 1, id: "c2", type: "function", function: { name: "g", arguments: "{}" } }] })] },
      { ...head, choices: [choice({}, "tool_calls")] },
    ]);
  });

  it("an empty answer still opens with the role", () => {
    expect(encode([ev.final(FinishReason.STOP)], false)).toEqual([{ ...head, choices: [choice({ role: "assistant", content: "" }, "stop")] }]);
  });

  it("nothing after the final event", () => {
    expect(encode([ev.final(FinishReason.STOP), ev.text("late")], false)).toHaveLength(1);
  });

  it.each<[string, GenerateResponse[]]>([
    ["text", [ev.text("Hello"), ev.text(" world"), ev.final(FinishReason.STOP)]],
    ["tool calls", [ev.tool(0, '{"a":', "c1", "f"), ev.tool(0, "1}"), ev.tool(1, "", "c2", "g"), ev.tool(1, "{}"), ev.final(FinishReason.TOOL_CALLS)]],
    ["length", [ev.text("cut"), ev.final(FinishReason.LENGTH)]],
  ])("the openai kind's stream translator reads back the same events: %s", (_name, events) => {
    const back = createStreamTranslator({ upstream: "u", secrets: [] });
    const data = [...encode(events, true).map((c) => JSON.stringify(c)), "[DONE]"];
    const read = data.flatMap((d) => back.push({ event: "", data: d, id: undefined }));
    back.end();
    // The cached prompt and reasoning tokens come back; cache-creation tokens have no field in the API.
    const expected = events.map((e) =>
      e.event.case === "final"
        ? create(GenerateResponseSchema, { event: { case: "final", value: { ...e.event.value, id: "chatcmpl-s", usage: create(UsageSchema, { ...usage, cacheCreationTokens: 0 }) } } })
        : e,
    );
    expect(read).toEqual(expected);
  });
});

describe("toModelList", () => {
  it("lists the models that serve Chat or Generate, in OpenAI's list shape", () => {
    const res = create(ListModelsResponseSchema, {
      models: [
        { name: "chat", upstream: "u1", capabilities: [Capability.CHAT, Capability.GENERATE] },
        { name: "stream-only", upstream: "u2", capabilities: [Capability.GENERATE] },
        { name: "tensors", upstream: "u3", capabilities: [Capability.PREDICT] },
      ],
    });
    expect(toModelList(res, 9)).toEqual({
      object: "list",
      data: [
        { id: "chat", object: "model", created: 9, owned_by: "u1" },
        { id: "stream-only", object: "model", created: 9, owned_by: "u2" },
      ],
    });
  });
});

describe("toErrorAnswer", () => {
  it.each<[string, unknown, number, string, string, string | null]>([
    ["a bad field", invalidArgument("messages[0].role", "required"), 400, "invalid_request_error", "invalid_argument", "messages[0].role"],
    ["an unknown model", new GatewayError(Code.NotFound, "no", { reason: Reason.ModelNotFound, metadata: { model: "m" } }), 404, "invalid_request_error", "model_not_found", "model"],
    ["a model without the capability", new GatewayError(Code.Unimplemented, "no", { reason: Reason.CapabilityNotSupported, metadata: { model: "m", rpc: "Generate" } }), 400, "invalid_request_error", "capability_not_supported", "model"],
    ["no key", new GatewayError(Code.Unauthenticated, "no", { reason: Reason.Unauthenticated }), 401, "authentication_error", "unauthenticated", null],
    ["a model not allowed", new GatewayError(Code.PermissionDenied, "no", { reason: Reason.ModelNotAllowed }), 403, "permission_error", "model_not_allowed", null],
    ["overload", new GatewayError(Code.ResourceExhausted, "no", { reason: Reason.Overloaded }), 429, "rate_limit_error", "overloaded", null],
    ["a deadline", new GatewayError(Code.DeadlineExceeded, "no", { metadata: { field: "infergate-timeout-ms" } }), 504, "server_error", "deadline_exceeded", null],
    ["an upstream down", new GatewayError(Code.Unavailable, "no", { reason: Reason.UpstreamUnavailable }), 503, "server_error", "upstream_unavailable", null],
    ["upstream auth", new GatewayError(Code.Internal, "no", { reason: Reason.UpstreamAuth }), 500, "server_error", "upstream_auth", null],
    ["anything else", new Error("secret detail sk-123"), 500, "server_error", "internal", null],
  ])("%s", (_name, err, status, type, code, param) => {
    const a = toErrorAnswer(err);
    expect(a.status).toBe(status);
    expect(a.body.error).toMatchObject({ type, code, param });
    expect(a.headers).toEqual({});
  });

  it("never shows an unknown error's text", () => {
    expect(toErrorAnswer(new Error("secret detail sk-123")).body.error.message).toBe("internal error");
  });

  it.each<[number, string, string]>([
    [2000, "2", "2000"],
    [1001, "2", "1001"],
    [250, "1", "250"],
  ])("a rate limit with a retry delay of %i ms: Retry-After %s s, retry-after-ms %s", (ms, seconds, millis) => {
    const a = toErrorAnswer(new GatewayError(Code.ResourceExhausted, "slow down", { reason: Reason.RateLimited, retryAfterMs: ms }));
    expect(a.status).toBe(429);
    expect(a.headers).toEqual({ "retry-after": seconds, "retry-after-ms": millis });
  });

  it.each<[string, GatewayError]>([
    ["an open circuit", new GatewayError(Code.Unavailable, "failing", { reason: Reason.CircuitOpen, retryAfterMs: 4200 })],
    ["the rate limiter failing closed", new GatewayError(Code.Unavailable, "down", { reason: Reason.RateLimiterUnavailable, retryAfterMs: 4200 })],
  ])("%s (503 with a known delay): Retry-After and retry-after-ms, so the SDKs wait for it", (_name, err) => {
    const a = toErrorAnswer(err);
    expect(a.status).toBe(503);
    expect(a.headers).toEqual({ "retry-after": "5", "retry-after-ms": "4200" });
  });
});
