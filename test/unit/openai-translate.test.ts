import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { type ContentPartSchema, FinishReason, type ResponseFormatType, type ToolChoiceMode } from "../../gen/infergate/v1/chat_pb.js";
import { type ChatResponse, ChatRequestSchema, type GenerateResponse } from "../../gen/infergate/v1/inference_service_pb.js";
import { ConfigError } from "../../src/config/config-error.js";
import { parseConfig } from "../../src/config/load-config.js";
import { GatewayError } from "../../src/core/gateway-error.js";
import {
  createStreamTranslator,
  finishReasonOf,
  fromChatCompletion,
  type RequestContext,
  toChatCompletionRequest,
  usageOf,
} from "../../src/upstreams/openai/openai-translate.js";
import { openaiOptionsSchema } from "../../src/upstreams/openai/openai-upstream.js";
import { createSseDecoder } from "../../src/upstreams/sse/sse-decoder.js";

type ChatInit = MessageInitShape<typeof ChatRequestSchema>;
type Obj = Record<string, unknown>;

const ctx: RequestContext = { model: "gpt-4o-mini", developerRole: "system", maxTokensField: "max_tokens", stream: false };
const answers = { upstream: "gpt-up", secrets: ["sk-test-secret-0123456789"] };

const ROLE = { SYSTEM: 1, USER: 2, ASSISTANT: 3, TOOL: 4, DEVELOPER: 5 } as const;

/** A ChatRequest: one user turn "hi" unless `init` gives messages. */
function chat(init: Partial<ChatInit> = {}) {
  return create(ChatRequestSchema, {
    model: "gpt",
    messages: [{ role: ROLE.USER, content: [{ part: { case: "text", value: "hi" } }] }],
    ...init,
  } as ChatInit);
}

const text = (value: string) => ({ part: { case: "text" as const, value } });
const imageUrl = (url: string, detail = 0) => ({ part: { case: "imageUrl" as const, value: { url, detail } } });
const imageData = (data: number[], mimeType: string, detail = 0) => ({
  part: { case: "imageData" as const, value: { data: new Uint8Array(data), mimeType, detail } },
});
const user = (...content: MessageInitShape<typeof ContentPartSchema>[]) => ({ role: ROLE.USER, content });

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

const hi = [{ role: "user", content: "hi" }];

describe("toChatCompletionRequest", () => {
  it("sends model, messages and stream: false, nothing else", () => {
    expect(toChatCompletionRequest(chat(), ctx)).toEqual({ model: "gpt-4o-mini", messages: hi, stream: false });
  });

  it("asks a stream for its usage chunk", () => {
    expect(toChatCompletionRequest(chat(), { ...ctx, stream: true })).toEqual({
      model: "gpt-4o-mini",
      messages: hi,
      stream: true,
      stream_options: { include_usage: true },
    });
  });

  it("leaves model out when the context gives none (Azure: the deployment names it)", () => {
    expect(toChatCompletionRequest(chat(), { ...ctx, model: undefined })).toEqual({ messages: hi, stream: false });
  });

  it.each<[string, Partial<ChatInit>, Partial<RequestContext>, Obj]>([
    ["temperature 0 is kept (unset differs from zero)", { temperature: 0 }, {}, { temperature: 0 }],
    ["temperature 1.5", { temperature: 1.5 }, {}, { temperature: 1.5 }],
    ["top_p", { topP: 0.25 }, {}, { top_p: 0.25 }],
    ["max_tokens", { maxTokens: 50 }, {}, { max_tokens: 50 }],
    ["max_tokens as max_completion_tokens", { maxTokens: 50 }, { maxTokensField: "max_completion_tokens" }, { max_completion_tokens: 50 }],
    ["seed", { seed: 42n }, {}, { seed: 42 }],
    ["seed 0", { seed: 0n }, {}, { seed: 0 }],
    ["a negative seed", { seed: -7n }, {}, { seed: -7 }],
    ["the largest safe seed", { seed: 9007199254740991n }, {}, { seed: 9007199254740991 }],
    ["presence penalty", { presencePenalty: -1.5 }, {}, { presence_penalty: -1.5 }],
    ["presence penalty 0", { presencePenalty: 0 }, {}, { presence_penalty: 0 }],
    ["frequency penalty", { frequencyPenalty: 0.5 }, {}, { frequency_penalty: 0.5 }],
    ["stop", { stop: ["\n\n", "END"] }, {}, { stop: ["\n\n", "END"] }],
    ["response_format UNSPECIFIED", { responseFormat: { type: 0 } }, {}, {}],
    ["response_format TEXT (free text is the default; TGI refuses the key)", { responseFormat: { type: 1 } }, {}, {}],
    ["response_format JSON_OBJECT", { responseFormat: { type: 2 } }, {}, { response_format: { type: "json_object" } }],
    [
      "response_format JSON_SCHEMA, all fields",
      { responseFormat: { type: 3, jsonSchema: { name: "answer", description: "The answer", schema: { type: "object", properties: { a: { type: "number" } } }, strict: true } } },
      {},
      {
        response_format: {
          type: "json_schema",
          json_schema: { name: "answer", description: "The answer", schema: { type: "object", properties: { a: { type: "number" } } }, strict: true },
        },
      },
    ],
    [
      "response_format JSON_SCHEMA, strict false, no description",
      { responseFormat: { type: 3, jsonSchema: { name: "a", schema: { type: "object" }, strict: false } } },
      {},
      { response_format: { type: "json_schema", json_schema: { name: "a", schema: { type: "object" }, strict: false } } },
    ],
    ["tool_choice AUTO without tools is not sent (OpenAI refuses it without tools)", { toolChoice: { choice: { case: "mode", value: 1 } } }, {}, {}],
    ["tool_choice NONE without tools is not sent", { toolChoice: { choice: { case: "mode", value: 2 } } }, {}, {}],
    ["parallel_tool_calls without tools is not sent", { parallelToolCalls: false }, {}, {}],
    ["metadata, cache_policy and session_id stay in the gateway", { metadata: { k: "v" }, cachePolicy: 1, sessionId: "s1" }, {}, {}],
  ])("%s", (_name, init, context, extra) => {
    expect(toChatCompletionRequest(chat(init), { ...ctx, ...context })).toEqual({ model: "gpt-4o-mini", messages: hi, stream: false, ...extra });
  });

  it("maps a request with every field set", () => {
    const body = toChatCompletionRequest(
      chat({
        messages: [
          { role: ROLE.SYSTEM, content: [text("Be brief.")] },
          { role: ROLE.DEVELOPER, content: [text("JSON only.")] },
          user(text("Weather in Paris?")),
        ],
        tools: [
          {
            name: "get_weather",
            description: "Weather of a city",
            parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
            strict: true,
          },
        ],
        toolChoice: { choice: { case: "functionName", value: "get_weather" } },
        parallelToolCalls: false,
        temperature: 0.2,
        topP: 0.9,
        maxTokens: 128,
        seed: 1234n,
        presencePenalty: 0.1,
        frequencyPenalty: 0.3,
        stop: ["END"],
        responseFormat: { type: 2 },
        cachePolicy: 2,
        sessionId: "sess",
        metadata: { trace: "t1" },
      }),
      { ...ctx, stream: true, developerRole: "developer" },
    );
    expect(body).toEqual({
      model: "gpt-4o-mini",
      messages: [
        { role: "system", content: "Be brief." },
        { role: "developer", content: "JSON only." },
        { role: "user", content: "Weather in Paris?" },
      ],
      tools: [
        {
          type: "function",
          function: {
            name: "get_weather",
            description: "Weather of a city",
            parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
            strict: true,
          },
        },
      ],
      tool_choice: { type: "function", function: { name: "get_weather" } },
      parallel_tool_calls: false,
      temperature: 0.2,
      top_p: 0.9,
      max_tokens: 128,
      seed: 1234,
      presence_penalty: 0.1,
      frequency_penalty: 0.3,
      stop: ["END"],
      response_format: { type: "json_object" },
      stream: true,
      stream_options: { include_usage: true },
    });
  });

  it.each<[string, ChatInit["messages"], "system" | "developer", unknown[]]>([
    [
      "system and developer (sent as system by default), text parts joined with newlines",
      [
        { role: ROLE.SYSTEM, content: [text("You are terse."), text("Answer in French.")] },
        { role: ROLE.DEVELOPER, content: [text("Never apologise.")] },
        user(text("Bonjour"), text("Ça va ?")),
      ],
      "system",
      [
        { role: "system", content: "You are terse.\nAnswer in French." },
        { role: "system", content: "Never apologise." },
        { role: "user", content: "Bonjour\nÇa va ?" },
      ],
    ],
    [
      "developer as developer when configured",
      [{ role: ROLE.DEVELOPER, content: [text("Never apologise.")] }, user(text("hi"))],
      "developer",
      [{ role: "developer", content: "Never apologise." }, { role: "user", content: "hi" }],
    ],
    [
      "author names on system, user and assistant messages",
      [
        { role: ROLE.SYSTEM, name: "ops", content: [text("s")] },
        { role: ROLE.USER, name: "alice", content: [text("u")] },
        { role: ROLE.ASSISTANT, name: "bot", content: [text("a")] },
      ],
      "system",
      [
        { role: "system", content: "s", name: "ops" },
        { role: "user", content: "u", name: "alice" },
        { role: "assistant", content: "a", name: "bot" },
      ],
    ],
    [
      "assistant tool calls (content null without text), then tool results",
      [
        user(text("Weather and time in Paris?")),
        {
          role: ROLE.ASSISTANT,
          content: [],
          toolCalls: [
            { id: "call_1", name: "get_weather", arguments: '{"city":"Paris"}' },
            { id: "call_2", name: "get_time", arguments: "" },
          ],
        },
        { role: ROLE.TOOL, toolCallId: "call_1", content: [text("18°C")] },
        { role: ROLE.TOOL, toolCallId: "call_2", content: [text("14:05"), text("CET")] },
        { role: ROLE.ASSISTANT, content: [text("Let me check again.")], toolCalls: [{ id: "call_3", name: "get_time", arguments: "{}" }] },
      ],
      "system",
      [
        { role: "user", content: "Weather and time in Paris?" },
        {
          role: "assistant",
          content: null,
          tool_calls: [
            { id: "call_1", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris"}' } },
            { id: "call_2", type: "function", function: { name: "get_time", arguments: "" } },
          ],
        },
        { role: "tool", tool_call_id: "call_1", content: "18°C" },
        { role: "tool", tool_call_id: "call_2", content: "14:05\nCET" },
        {
          role: "assistant",
          content: "Let me check again.",
          tool_calls: [{ id: "call_3", type: "function", function: { name: "get_time", arguments: "{}" } }],
        },
      ],
    ],
  ])("messages: %s", (_name, messages, developerRole, expected) => {
    expect(toChatCompletionRequest(chat({ messages }), { ...ctx, developerRole }).messages).toEqual(expected);
  });

  it.each<[string, ChatInit["messages"], unknown]>([
    [
      "bytes → a data: URI",
      [user(text("What is this?"), imageData([0x89, 0x50, 0x4e, 0x47], "image/png"))],
      [
        { type: "text", text: "What is this?" },
        { type: "image_url", image_url: { url: "data:image/png;base64,iVBORw==" } },
      ],
    ],
    [
      "a URL as given",
      [user(imageUrl("https://example.com/cat.webp"), text("and this?"))],
      [
        { type: "image_url", image_url: { url: "https://example.com/cat.webp" } },
        { type: "text", text: "and this?" },
      ],
    ],
    [
      "a data: URL as given",
      [user(imageUrl("data:image/jpeg;base64,/9j/4AAQ"))],
      [{ type: "image_url", image_url: { url: "data:image/jpeg;base64,/9j/4AAQ" } }],
    ],
    [
      "detail LOW and HIGH",
      [user(imageUrl("https://example.com/a.png", 1), imageData([1, 2, 3], "image/gif", 2))],
      [
        { type: "image_url", image_url: { url: "https://example.com/a.png", detail: "low" } },
        { type: "image_url", image_url: { url: "data:image/gif;base64,AQID", detail: "high" } },
      ],
    ],
  ])("images in user messages use the array form: %s", (_name, messages, content) => {
    expect(toChatCompletionRequest(chat({ messages }), ctx).messages).toEqual([{ role: "user", content }]);
  });

  it("sends tools as functions: description, parameters and strict only when given", () => {
    const body = toChatCompletionRequest(
      chat({
        tools: [
          { name: "get_weather", description: "Weather of a city", parameters: { type: "object", properties: { city: { type: "string" } } }, strict: true },
          { name: "get_time" },
          { name: "ping", strict: false },
        ],
      }),
      ctx,
    );
    expect(body.tools).toEqual([
      {
        type: "function",
        function: { name: "get_weather", description: "Weather of a city", parameters: { type: "object", properties: { city: { type: "string" } } }, strict: true },
      },
      { type: "function", function: { name: "get_time" } },
      { type: "function", function: { name: "ping", strict: false } },
    ]);
    expect(body.tool_choice).toBeUndefined();
    expect(body.parallel_tool_calls).toBeUndefined();
  });

  const tools = [{ name: "get_weather" }];
  it.each<[string, Partial<ChatInit>, Obj]>([
    ["no choice", {}, {}],
    ["mode UNSPECIFIED", { toolChoice: { choice: { case: "mode", value: 0 } } }, {}],
    ["AUTO", { toolChoice: { choice: { case: "mode", value: 1 } } }, { tool_choice: "auto" }],
    ["NONE", { toolChoice: { choice: { case: "mode", value: 2 } } }, { tool_choice: "none" }],
    ["REQUIRED", { toolChoice: { choice: { case: "mode", value: 3 } } }, { tool_choice: "required" }],
    ["a function", { toolChoice: { choice: { case: "functionName", value: "get_weather" } } }, { tool_choice: { type: "function", function: { name: "get_weather" } } }],
    ["parallel_tool_calls false", { parallelToolCalls: false }, { parallel_tool_calls: false }],
    ["parallel_tool_calls true", { parallelToolCalls: true }, { parallel_tool_calls: true }],
  ])("tool_choice with tools: %s", (_name, init, extra) => {
    expect(toChatCompletionRequest(chat({ tools, ...init } as Partial<ChatInit>), ctx)).toEqual({
      model: "gpt-4o-mini",
      messages: hi,
      stream: false,
      tools: [{ type: "function", function: { name: "get_weather" } }],
      ...extra,
    });
  });

  it.each<[string, Partial<ChatInit>, string]>([
    ["a seed above 2^53-1", { seed: 9007199254740992n }, "seed"],
    ["top_k (no top-k in the API)", { topK: 40 }, "top_k"],
    ["a seed below -(2^53-1)", { seed: -9007199254740992n }, "seed"],
    ["an image in a system message", { messages: [{ role: ROLE.SYSTEM, content: [text("look"), imageUrl("https://x/y.png")] }, user(text("hi"))] }, "messages[0].content[1]"],
    ["an image in a developer message", { messages: [{ role: ROLE.DEVELOPER, content: [imageData([1], "image/png")] }] }, "messages[0].content[0]"],
    ["an image in an assistant message", { messages: [user(text("hi")), { role: ROLE.ASSISTANT, content: [imageUrl("https://x/y.png")] }] }, "messages[1].content[0]"],
    ["an image in a tool message", { messages: [user(text("hi")), { role: ROLE.TOOL, toolCallId: "c", content: [text("a"), imageData([1], "image/png")] }] }, "messages[1].content[1]"],
    ["an author name on a tool message", { messages: [{ role: ROLE.TOOL, toolCallId: "c", name: "weather", content: [text("18°C")] }] }, "messages[0].name"],
    ["an unknown image_url detail", { messages: [user(imageUrl("https://x/y.png", 9))] }, "messages[0].content[0].image_url.detail"],
    ["an unknown image_data detail", { messages: [user(text("a"), imageData([1], "image/png", 7))] }, "messages[0].content[1].image_data.detail"],
    ["an empty part next to an image", { messages: [user(imageUrl("https://x/y.png")), { role: ROLE.USER, content: [imageUrl("https://x/y.png"), { part: { case: undefined } }] }] } as Partial<ChatInit>, "messages[1].content[1]"],
    ["an empty part in a text message", { messages: [{ role: ROLE.USER, content: [{ part: { case: undefined } }] }] } as Partial<ChatInit>, "messages[0].content[0]"],
    ["a role left unspecified", { messages: [{ role: 0, content: [text("hi")] }] }, "messages[0].role"],
    ["an unknown tool_choice mode", { tools, toolChoice: { choice: { case: "mode", value: 9 as ToolChoiceMode } } }, "tool_choice.mode"],
    ["an unknown response_format type", { responseFormat: { type: 9 as ResponseFormatType } }, "response_format.type"],
  ])("rejects %s with INVALID_ARGUMENT naming %s", (_name, init, field) => {
    const err = errorOf(() => toChatCompletionRequest(chat(init), ctx));
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
  };
}

const completion = (message: Obj, finish: string | null = "stop", usage: unknown = { prompt_tokens: 12, completion_tokens: 6, total_tokens: 18 }) => ({
  id: "chatcmpl-1",
  object: "chat.completion",
  created: 1730000000,
  model: "gpt-4o-mini",
  choices: [{ index: 0, message: { role: "assistant", ...message }, logprobs: null, finish_reason: finish }],
  ...(usage === "absent" ? {} : { usage }),
});

describe("fromChatCompletion", () => {
  it.each<[string, unknown, ReturnType<typeof plainChat>]>([
    [
      "text",
      completion({ content: "Hello there.", refusal: null, annotations: [] }),
      { id: "chatcmpl-1", text: ["Hello there."], toolCalls: [], role: 3, finish: "STOP", usage: [12, 6, 18] },
    ],
    [
      "tool calls as returned, content null",
      completion(
        {
          content: null,
          tool_calls: [
            { id: "call_a", type: "function", function: { name: "get_weather", arguments: '{"city": "Paris"}' } },
            { id: "call_b", type: "function", function: { name: "get_time", arguments: "{}" } },
          ],
        },
        "tool_calls",
      ),
      {
        id: "chatcmpl-1",
        text: [],
        toolCalls: [
          ["call_a", "get_weather", '{"city": "Paris"}'],
          ["call_b", "get_time", "{}"],
        ],
        role: 3,
        finish: "TOOL_CALLS",
        usage: [12, 6, 18],
      },
    ],
    [
      "text and a tool call whose arguments are an object, no type",
      completion({ content: "Checking.", tool_calls: [{ id: "c1", function: { name: "f", arguments: { a: 1 } } }] }, "tool_calls"),
      { id: "chatcmpl-1", text: ["Checking."], toolCalls: [["c1", "f", '{"a":1}']], role: 3, finish: "TOOL_CALLS", usage: [12, 6, 18] },
    ],
    [
      "the deprecated function_call",
      completion({ content: null, function_call: { name: "f", arguments: '{"x":1}' } }, "function_call"),
      { id: "chatcmpl-1", text: [], toolCalls: [["", "f", '{"x":1}']], role: 3, finish: "TOOL_CALLS", usage: [12, 6, 18] },
    ],
    [
      "a refusal is the text, finish CONTENT_FILTER",
      completion({ content: null, refusal: "I can't help with that." }, "stop"),
      { id: "chatcmpl-1", text: ["I can't help with that."], toolCalls: [], role: 3, finish: "CONTENT_FILTER", usage: [12, 6, 18] },
    ],
    [
      "length, no usage (zero)",
      completion({ content: "cut" }, "length", "absent"),
      { id: "chatcmpl-1", text: ["cut"], toolCalls: [], role: 3, finish: "LENGTH", usage: [0, 0, 0] },
    ],
    [
      "TGI's eos_token, usage null, empty content",
      completion({ content: "" }, "eos_token", null),
      { id: "chatcmpl-1", text: [], toolCalls: [], role: 3, finish: "STOP", usage: [0, 0, 0] },
    ],
    [
      "content_filter; total is always prompt + completion",
      completion({ content: "" }, "content_filter", { prompt_tokens: 5, completion_tokens: 0, total_tokens: 99 }),
      { id: "chatcmpl-1", text: [], toolCalls: [], role: 3, finish: "CONTENT_FILTER", usage: [5, 0, 5] },
    ],
  ])("%s", (_name, body, expected) => {
    expect(plainChat(fromChatCompletion(answers, body))).toEqual(expected);
  });

  it.each<[string, unknown, string]>([
    ["not an object", "hello", "the answer has no choices array"],
    ["no choices", { id: "x" }, "the answer has no choices array"],
    ["empty choices", { id: "x", choices: [] }, "the answer has no choice"],
    ["a choice without message", { choices: [{ index: 0, finish_reason: "stop" }] }, "the choice has no message"],
    ["content that is a number", completion({ content: 5 }), "the message content is neither text nor null"],
    ["content that is an array", completion({ content: [{ type: "text", text: "x" }] }), "the message content is neither text nor null"],
    ["tool_calls that is an object", completion({ content: null, tool_calls: { id: "a" } }), "tool_calls is not an array"],
    ["a tool call without id", completion({ content: null, tool_calls: [{ type: "function", function: { name: "f", arguments: "{}" } }] }), "a tool call is not a function call with an id"],
    ["a tool call of another type", completion({ content: null, tool_calls: [{ id: "a", type: "custom", custom: { name: "f", input: "x" } }] }), "a tool call is not a function call with an id"],
    ["a tool call without name", completion({ content: null, tool_calls: [{ id: "a", type: "function", function: { arguments: "{}" } }] }), "a tool call has no function name"],
    ["usage that is a number", completion({ content: "x" }, "stop", 7), "usage is not an object"],
  ])("a malformed answer (%s) is UNAVAILABLE UPSTREAM_BAD_RESPONSE", (_name, body, problem) => {
    const err = errorOf(() => fromChatCompletion(answers, body));
    expect(err.code).toBe(Code.Unavailable);
    expect(err.reason).toBe("UPSTREAM_BAD_RESPONSE");
    expect(err.message).toBe(`upstream "gpt-up" sent an invalid response: ${problem}`);
  });

  it.each<[string, unknown, Code, string, string]>([
    [
      "server_error",
      { error: { message: "The server had an error", type: "server_error", param: null, code: null } },
      Code.Unavailable,
      "UPSTREAM_UNAVAILABLE",
      'upstream "gpt-up" answered with an error (server_error)',
    ],
    [
      "a string error",
      { error: "something broke" },
      Code.Unavailable,
      "UPSTREAM_UNAVAILABLE",
      'upstream "gpt-up" answered with an error (error)',
    ],
    [
      "vLLM's numeric code 400",
      { error: { object: "error", message: "max_tokens is too large", type: "BadRequestError", param: null, code: 400 } },
      Code.InvalidArgument,
      "INVALID_ARGUMENT",
      'upstream "gpt-up" rejected the request: max_tokens is too large',
    ],
    [
      "a rate limit code",
      { error: { message: "slow down", type: "requests", code: "rate_limit_exceeded" } },
      Code.ResourceExhausted,
      "UPSTREAM_RATE_LIMITED",
      'upstream "gpt-up" is rate limiting the gateway',
    ],
  ])("an error object in a 200 answer (%s) is an error", (_name, body, code, reason, message) => {
    const err = errorOf(() => fromChatCompletion(answers, body));
    expect([err.code, err.reason, err.message]).toEqual([code, reason, message]);
  });
});

describe("finishReasonOf and usageOf", () => {
  it.each<[unknown, FinishReason]>([
    ["stop", FinishReason.STOP],
    ["eos_token", FinishReason.STOP],
    ["stop_sequence", FinishReason.STOP],
    ["length", FinishReason.LENGTH],
    ["tool_calls", FinishReason.TOOL_CALLS],
    ["function_call", FinishReason.TOOL_CALLS],
    ["content_filter", FinishReason.CONTENT_FILTER],
    [null, FinishReason.UNSPECIFIED],
    ["abort", FinishReason.UNSPECIFIED],
  ])("finish_reason %s → %s", (finish, expected) => {
    expect(finishReasonOf(finish)).toBe(expected);
  });

  it.each<[Obj, [number, number, number]]>([
    [{ prompt_tokens: 12, completion_tokens: 6, total_tokens: 18 }, [12, 6, 18]],
    [{ prompt_tokens: 12, completion_tokens: 6 }, [12, 6, 18]],
    [{ prompt_tokens: null, completion_tokens: 3.7, total_tokens: 3 }, [0, 3, 3]],
    [{ prompt_tokens: -1, completion_tokens: "9" }, [0, 0, 0]],
    [{ prompt_tokens: 2 ** 40, completion_tokens: 1 }, [4294967295, 1, 4294967295]],
    [{}, [0, 0, 0]],
  ])("usage %j → %j", (u, expected) => {
    const usage = usageOf(u);
    expect([usage.promptTokens, usage.completionTokens, usage.totalTokens]).toEqual(expected);
  });

  // [prompt, completion, total, cached prompt, cache creation, reasoning]
  it.each<[Obj, number[]]>([
    [
      {
        prompt_tokens: 2006,
        completion_tokens: 300,
        total_tokens: 2306,
        prompt_tokens_details: { cached_tokens: 1920, audio_tokens: 0 },
        completion_tokens_details: { reasoning_tokens: 192, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
      },
      [2006, 300, 2306, 1920, 0, 192],
    ],
    [{ prompt_tokens: 10, completion_tokens: 5, prompt_tokens_details: null, completion_tokens_details: null }, [10, 5, 15, 0, 0, 0]],
    [{ prompt_tokens: 10, completion_tokens: 5, prompt_tokens_details: {}, completion_tokens_details: { reasoning_tokens: null } }, [10, 5, 15, 0, 0, 0]],
    [{ prompt_tokens: 10, completion_tokens: 5, prompt_tokens_details: { cached_tokens: "8" }, completion_tokens_details: { reasoning_tokens: -2 } }, [10, 5, 15, 0, 0, 0]],
    [{ prompt_tokens: 10, completion_tokens: 5, prompt_tokens_details: 8, completion_tokens_details: [3] }, [10, 5, 15, 0, 0, 0]],
    [{ prompt_tokens: 10, completion_tokens: 5, prompt_tokens_details: { cached_tokens: 4.9 }, completion_tokens_details: { reasoning_tokens: Number.NaN } }, [10, 5, 15, 4, 0, 0]],
    // A part is never more than the total it is part of.
    [{ prompt_tokens: 10, completion_tokens: 5, prompt_tokens_details: { cached_tokens: 11 }, completion_tokens_details: { reasoning_tokens: 6 } }, [10, 5, 15, 10, 0, 5]],
    [{ prompt_tokens_details: { cached_tokens: 3 }, completion_tokens_details: { reasoning_tokens: 3 } }, [0, 0, 0, 0, 0, 0]],
  ])("usage with details %j → %j", (u, expected) => {
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
  | ["final", { id: string; finish: string; usage: number[] }];

function plain(e: GenerateResponse): Plain {
  switch (e.event.case) {
    case "textDelta":
      return ["text", e.event.value];
    case "toolCallDelta": {
      const { index, id, name, arguments: args } = e.event.value;
      return ["tool", { index, id, name, arguments: args }];
    }
    case "final": {
      const { id, finishReason, usage } = e.event.value;
      return ["final", { id, finish: FinishReason[finishReason], usage: [usage!.promptTokens, usage!.completionTokens, usage!.totalTokens] }];
    }
    default:
      throw new Error("empty event");
  }
}

/** Runs an SSE body through the decoder and a translator: the events, then how it ended. */
function translate(body: string): { events: Plain[]; error: GatewayError | undefined } {
  const decoder = createSseDecoder({ maxEventSize: 1 << 20 });
  const t = createStreamTranslator(answers);
  const events: Plain[] = [];
  try {
    for (const ev of [...decoder.push(new TextEncoder().encode(body)), ...decoder.end()]) {
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

const sse = (...data: string[]): string => data.map((d) => `data: ${d}\n\n`).join("");
const chunk = (delta: Obj, finish: string | null = null, extra: Obj = {}) =>
  JSON.stringify({
    id: "chatcmpl-s",
    object: "chat.completion.chunk",
    created: 1730000000,
    model: "gpt-4o-mini",
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
    ...extra,
  });
const usageChunk = (p: number, c: number) =>
  JSON.stringify({ id: "chatcmpl-s", object: "chat.completion.chunk", created: 1730000000, model: "gpt-4o-mini", choices: [], usage: { prompt_tokens: p, completion_tokens: c, total_tokens: p + c } });
const DONE = "[DONE]";
const tc = (index: number | undefined, fn: Obj, id?: string) => ({
  ...(index === undefined ? {} : { index }),
  ...(id === undefined ? {} : { id, type: "function" }),
  function: fn,
});
const tool = (index: number, args: string, id = "", name = ""): Plain => ["tool", { index, id, name, arguments: args }];
const final = (finish: string, usage: number[], id = "chatcmpl-s"): Plain => ["final", { id, finish, usage }];

describe("stream translator", () => {
  it.each<[string, string, Plain[]]>([
    [
      "text, then the usage chunk before [DONE]",
      sse(
        chunk({ role: "assistant", content: "", refusal: null }, null, { usage: null }),
        chunk({ content: "Hello" }, null, { usage: null }),
        chunk({ content: " world" }, null, { usage: null }),
        chunk({}, "stop", { usage: null }),
        usageChunk(12, 6),
        DONE,
      ),
      [["text", "Hello"], ["text", " world"], final("STOP", [12, 6, 18])],
    ],
    [
      "no usage chunk: usage zero",
      sse(chunk({ role: "assistant", content: "" }), chunk({ content: "Hi" }), chunk({}, "length"), DONE),
      [["text", "Hi"], final("LENGTH", [0, 0, 0])],
    ],
    [
      "usage on every chunk (cumulative): the last wins",
      sse(
        chunk({ content: "a" }, null, { usage: { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 } }),
        chunk({ content: "b" }, "stop", { usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 } }),
        DONE,
      ),
      [["text", "a"], ["text", "b"], final("STOP", [3, 2, 5])],
    ],
    [
      "tool calls split across chunks pass through with their index; arguments join by index",
      sse(
        chunk({ role: "assistant", content: null, tool_calls: [tc(0, { name: "get_weather", arguments: "" }, "call_w")] }),
        chunk({ tool_calls: [tc(0, { arguments: '{"ci' })] }),
        chunk({ tool_calls: [tc(0, { arguments: 'ty":"Paris"}' })] }),
        chunk({ tool_calls: [tc(1, { name: "get_time", arguments: '{"tz"' }, "call_t")] }),
        chunk({ tool_calls: [tc(1, { arguments: ':"CET"}' })] }),
        chunk({}, "tool_calls"),
        usageChunk(40, 30),
        DONE,
      ),
      [
        tool(0, "", "call_w", "get_weather"),
        tool(0, '{"ci'),
        tool(0, 'ty":"Paris"}'),
        tool(1, '{"tz"', "call_t", "get_time"),
        tool(1, ':"CET"}'),
        final("TOOL_CALLS", [40, 30, 70]),
      ],
    ],
    [
      "two calls in one chunk, fragments interleaved",
      sse(
        chunk({ tool_calls: [tc(0, { name: "a", arguments: "{" }, "c0"), tc(1, { name: "b", arguments: "[" }, "c1")] }),
        chunk({ tool_calls: [tc(1, { arguments: "]" }), tc(0, { arguments: "}" })] }),
        chunk({}, "tool_calls"),
        DONE,
      ),
      [tool(0, "{", "c0", "a"), tool(1, "[", "c1", "b"), tool(1, "]"), tool(0, "}"), final("TOOL_CALLS", [0, 0, 0])],
    ],
    [
      "repeated ids and names are not forwarded again; empty fragments are skipped",
      sse(
        chunk({ tool_calls: [tc(0, { name: "f", arguments: "" }, "c0")] }),
        chunk({ tool_calls: [tc(0, { name: "f", arguments: '{"a":' }, "c0")] }),
        chunk({ tool_calls: [tc(0, { name: null, arguments: null })] }),
        chunk({ tool_calls: [tc(0, { arguments: "1}" })] }),
        chunk({}, "tool_calls"),
        DONE,
      ),
      [tool(0, "", "c0", "f"), tool(0, '{"a":'), tool(0, "1}"), final("TOOL_CALLS", [0, 0, 0])],
    ],
    [
      "fragments without index follow their id",
      sse(
        chunk({ tool_calls: [tc(undefined, { name: "a", arguments: "{}" }, "c0")] }),
        chunk({ tool_calls: [tc(undefined, { name: "b", arguments: "{" }, "c1")] }),
        chunk({ tool_calls: [tc(undefined, { arguments: "}" })] }),
        chunk({}, "tool_calls"),
        DONE,
      ),
      [tool(0, "{}", "c0", "a"), tool(1, "{", "c1", "b"), tool(1, "}"), final("TOOL_CALLS", [0, 0, 0])],
    ],
    [
      "whole tool calls with object arguments",
      sse(chunk({ tool_calls: [tc(0, { name: "f", arguments: { x: 1 } }, "c0")] }), chunk({}, "tool_calls"), DONE),
      [tool(0, '{"x":1}', "c0", "f"), final("TOOL_CALLS", [0, 0, 0])],
    ],
    [
      "the deprecated function_call: index 0, no id",
      sse(chunk({ function_call: { name: "f", arguments: "" } }), chunk({ function_call: { arguments: "{}" } }), chunk({}, "function_call"), DONE),
      [tool(0, "", "", "f"), tool(0, "{}"), final("TOOL_CALLS", [0, 0, 0])],
    ],
    [
      "a refusal streams as text and ends CONTENT_FILTER",
      sse(chunk({ refusal: "I can't" }), chunk({ refusal: " help." }), chunk({}, "stop"), DONE),
      [["text", "I can't"], ["text", " help."], final("CONTENT_FILTER", [0, 0, 0])],
    ],
    [
      "TGI's finish reason, a chunk without delta, no id",
      sse('{"choices":[{"index":0,"delta":{"content":"ok"}}]}', '{"choices":[{"index":0,"finish_reason":"eos_token"}]}', DONE),
      [["text", "ok"], final("STOP", [0, 0, 0], "")],
    ],
    ["[DONE] alone", sse(DONE), [final("UNSPECIFIED", [0, 0, 0], "")]],
    [
      "events after [DONE] are ignored",
      sse(chunk({ content: "a" }), chunk({}, "stop"), DONE, chunk({ content: "late" }), "not json"),
      [["text", "a"], final("STOP", [0, 0, 0])],
    ],
  ])("%s", (_name, body, expected) => {
    expect(translate(body)).toEqual({ events: expected, error: undefined });
  });

  it("reads CRLF framing, comments, split data lines and a data line without a space", () => {
    const he = chunk({ content: "He" });
    // Split between two JSON tokens: the decoder joins the lines with "\n", which JSON allows there.
    const at = he.indexOf('"object"');
    const body = [
      ": keep-alive\r\n",
      `data: ${he.slice(0, at)}\r\ndata: ${he.slice(at)}\r\n\r\n`,
      `data:${chunk({ content: "llo" })}\r\n\r\n`,
      `data: ${chunk({}, "stop")}\r\n\r\n`,
      "data: [DONE]\r\n\r\n",
    ].join("");
    expect(translate(body)).toEqual({ events: [["text", "He"], ["text", "llo"], final("STOP", [0, 0, 0])], error: undefined });
  });

  it.each<[string, string, Plain[], Code, string, string, Obj]>([
    [
      "a body that ends without [DONE]",
      sse(chunk({ content: "Hello" }), chunk({ content: " from" })),
      [["text", "Hello"], ["text", " from"]],
      Code.Unavailable,
      "STREAM_TRUNCATED",
      'upstream "gpt-up" ended the stream before data: [DONE]',
      { upstream: "gpt-up" },
    ],
    [
      "a finish reason and usage, but no [DONE]",
      sse(chunk({ content: "Hello" }), chunk({}, "stop"), usageChunk(1, 1)),
      [["text", "Hello"]],
      Code.Unavailable,
      "STREAM_TRUNCATED",
      'upstream "gpt-up" ended the stream before data: [DONE]',
      { upstream: "gpt-up" },
    ],
    [
      "malformed JSON in an event",
      sse(chunk({ content: "Hello" }), '{"id":"x","choices":[{"delta":{"cont', chunk({ content: " more" }), DONE),
      [["text", "Hello"]],
      Code.Unavailable,
      "UPSTREAM_BAD_RESPONSE",
      'upstream "gpt-up" sent an invalid response: malformed JSON in an event',
      { upstream: "gpt-up" },
    ],
    [
      "an error object mid-stream",
      sse(chunk({ content: "Hello" }), '{"error":{"message":"The server had an error","type":"server_error","param":null,"code":null}}'),
      [["text", "Hello"]],
      Code.Unavailable,
      "UPSTREAM_UNAVAILABLE",
      'upstream "gpt-up" failed during the stream (server_error)',
      { upstream: "gpt-up", upstream_error: "server_error" },
    ],
    [
      "an error event named error",
      `event: error\ndata: {"message":"overloaded","type":"overloaded_error"}\n\n`,
      [],
      Code.Unavailable,
      "UPSTREAM_UNAVAILABLE",
      'upstream "gpt-up" failed during the stream (overloaded_error)',
      { upstream: "gpt-up", upstream_error: "overloaded_error" },
    ],
    [
      "vLLM's error with an HTTP status in code",
      sse(chunk({ content: "a" }), '{"error":{"object":"error","message":"bad sk-test-secret-0123456789 input","type":"BadRequestError","param":null,"code":400}}'),
      [["text", "a"]],
      Code.InvalidArgument,
      "INVALID_ARGUMENT",
      'upstream "gpt-up" rejected the request: bad [redacted] input',
      { upstream: "gpt-up", http_status: "400" },
    ],
    [
      "a rate limit error mid-stream",
      sse('{"error":{"message":"Rate limit reached","type":"tokens","code":"rate_limit_exceeded"}}'),
      [],
      Code.ResourceExhausted,
      "UPSTREAM_RATE_LIMITED",
      'upstream "gpt-up" is rate limiting the gateway',
      { upstream: "gpt-up", http_status: "429" },
    ],
    [
      "a chunk for a second choice",
      sse(chunk({ content: "a" }), '{"choices":[{"index":1,"delta":{"content":"b"}}]}', DONE),
      [["text", "a"]],
      Code.Unavailable,
      "UPSTREAM_BAD_RESPONSE",
      'upstream "gpt-up" sent an invalid response: a chunk for choice 1; only one was asked for',
      { upstream: "gpt-up" },
    ],
    [
      "a tool call that changes its id",
      sse(chunk({ tool_calls: [tc(0, { name: "f", arguments: "" }, "c0")] }), chunk({ tool_calls: [tc(0, { arguments: "{}" }, "c9")] }), DONE),
      [tool(0, "", "c0", "f")],
      Code.Unavailable,
      "UPSTREAM_BAD_RESPONSE",
      'upstream "gpt-up" sent an invalid response: tool call 0 changed its id',
      { upstream: "gpt-up" },
    ],
    [
      "a first tool fragment without index or id",
      sse(chunk({ tool_calls: [{ function: { arguments: "{}" } }] }), DONE),
      [],
      Code.Unavailable,
      "UPSTREAM_BAD_RESPONSE",
      'upstream "gpt-up" sent an invalid response: a tool call fragment without index or id',
      { upstream: "gpt-up" },
    ],
    [
      "content that is not text",
      sse(chunk({ content: 42 }), DONE),
      [],
      Code.Unavailable,
      "UPSTREAM_BAD_RESPONSE",
      "upstream \"gpt-up\" sent an invalid response: a delta's content is not text",
      { upstream: "gpt-up" },
    ],
    [
      "an event that is a JSON array",
      sse("[1,2]", DONE),
      [],
      Code.Unavailable,
      "UPSTREAM_BAD_RESPONSE",
      'upstream "gpt-up" sent an invalid response: an event that is not a JSON object',
      { upstream: "gpt-up" },
    ],
  ])("%s fails after the events already translated", (_name, body, events, code, reason, message, metadata) => {
    const { events: got, error } = translate(body);
    expect(got).toEqual(events);
    expect(error).toBeDefined();
    expect([error!.code, error!.reason, error!.message, error!.metadata]).toEqual([code, reason, message, metadata]);
  });

  it("never puts the upstream's message of a generic error in the client's message", () => {
    const { error } = translate(sse('{"error":{"message":"internal detail: db host 10.0.0.7","type":"server_error"}}'));
    expect(error!.message).toBe('upstream "gpt-up" failed during the stream (server_error)');
    expect(JSON.stringify([error!.message, error!.metadata])).not.toContain("10.0.0.7");
  });
});

describe("openai options", () => {
  it("applies the documented defaults", () => {
    expect(openaiOptionsSchema.parse({})).toEqual({ developerRole: "system", maxTokensField: "max_tokens", maxEventBytes: 1048576 });
    expect(openaiOptionsSchema.parse({ azure: { apiVersion: "2024-10-21" }, http: { connections: 4 } })).toEqual({
      azure: { apiVersion: "2024-10-21" },
      developerRole: "system",
      maxTokensField: "max_tokens",
      maxEventBytes: 1048576,
      http: { connections: 4 },
    });
  });

  const config = (options: string, modelOptions = "{}", endpoints = '["https://api.openai.com/v1"]') => `
upstreams:
  - name: gpt-up
    kind: openai
    endpoints: ${endpoints}
    apiKey: "k"
    options: ${options}
models:
  - name: gpt
    upstream: gpt-up
    options: ${modelOptions}
`;

  it.each<[string, string, string, string | undefined, string[]]>([
    ["an unknown option", "{ model: gpt-4o }", "{}", undefined, ["upstreams[0].options"]],
    ["azure without apiVersion", "{ azure: { deployment: d } }", "{}", undefined, ["upstreams[0].options.azure.apiVersion"]],
    ["an unknown azure option", '{ azure: { apiVersion: "2024-10-21", resource: r } }', "{}", undefined, ["upstreams[0].options.azure"]],
    ["a developerRole that is not system or developer", "{ developerRole: user }", "{}", undefined, ["upstreams[0].options.developerRole"]],
    ["an unknown maxTokensField", "{ maxTokensField: max_new_tokens }", "{}", undefined, ["upstreams[0].options.maxTokensField"]],
    ["maxEventBytes 0", "{ maxEventBytes: 0 }", "{}", undefined, ["upstreams[0].options.maxEventBytes"]],
    ["an unknown http option", "{ http: { keepAlive: true } }", "{}", undefined, ["upstreams[0].options.http"]],
    ["model options (the kind takes none)", "{}", "{ maxTokens: 5 }", undefined, ["models[0].options"]],
    ["no endpoint", "{}", "{}", "[]", ["upstreams[0].endpoints"]],
  ])("refuses %s", (_name, options, modelOptions, endpoints, paths) => {
    let err: unknown;
    try {
      parseConfig(config(options, modelOptions, endpoints), "(test)", {});
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).issues.map((i) => i.path)).toEqual(paths);
  });

  it("accepts a full configuration", () => {
    const c = parseConfig(
      config(
        '{ azure: { apiVersion: "2024-10-21", deployment: gpt4o-prod }, developerRole: developer, maxTokensField: max_completion_tokens, maxEventBytes: 65536, http: { connections: 8, connectTimeoutMs: 1000, headersTimeoutMs: 30000, maxResponseBytes: 1048576 } }',
      ),
      "(test)",
      {},
    );
    expect(c.upstreams[0]!.kind).toBe("openai");
    expect(openaiOptionsSchema.parse(c.upstreams[0]!.options)).toEqual({
      azure: { apiVersion: "2024-10-21", deployment: "gpt4o-prod" },
      developerRole: "developer",
      maxTokensField: "max_completion_tokens",
      maxEventBytes: 65536,
      http: { connections: 8, connectTimeoutMs: 1000, headersTimeoutMs: 30000, maxResponseBytes: 1048576 },
    });
  });
});

describe("stream translator: usage details", () => {
  /** The final event's usage of a stream, all six counts. */
  function finalUsage(body: string): number[] {
    const decoder = createSseDecoder({ maxEventSize: 1 << 20 });
    const t = createStreamTranslator(answers);
    const events = [...decoder.push(new TextEncoder().encode(body)), ...decoder.end()].flatMap((ev) => t.push(ev));
    const last = events.at(-1)?.event;
    if (last?.case !== "final") throw new Error(`no final event: ${last?.case}`);
    const u = last.value.usage!;
    return [u.promptTokens, u.completionTokens, u.totalTokens, u.cachedPromptTokens, u.cacheCreationTokens, u.reasoningTokens];
  }
  const detailedUsage = (cached: unknown, reasoning: unknown) => ({
    prompt_tokens: 2006,
    completion_tokens: 300,
    total_tokens: 2306,
    prompt_tokens_details: { cached_tokens: cached, audio_tokens: 0 },
    completion_tokens_details: { reasoning_tokens: reasoning, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
  });

  it("reads the cached and reasoning tokens of the include_usage chunk", () => {
    const body = sse(
      chunk({ role: "assistant", content: "" }, null, { usage: null }),
      chunk({ content: "Hi" }, "stop", { usage: null }),
      JSON.stringify({ id: "chatcmpl-s", object: "chat.completion.chunk", created: 1730000000, model: "o3-mini", choices: [], usage: detailedUsage(1920, 192) }),
      DONE,
    );
    expect(finalUsage(body)).toEqual([2006, 300, 2306, 1920, 0, 192]);
  });

  it("counts that are null or not numbers in the usage chunk are 0", () => {
    const body = sse(
      chunk({ content: "Hi" }, "stop", { usage: null }),
      JSON.stringify({ id: "chatcmpl-s", object: "chat.completion.chunk", created: 1730000000, model: "m", choices: [], usage: detailedUsage(null, "7") }),
      DONE,
    );
    expect(finalUsage(body)).toEqual([2006, 300, 2306, 0, 0, 0]);
  });
});
