/**
 * The Anthropic Messages ingress's pure translations (src/ingress/anthropic/anthropic-ingress-translate.ts):
 * API requests → ours, our answers, streams and errors → the API's JSON. Where the anthropic
 * upstream kind has the forward direction (src/upstreams/anthropic/anthropic-translate.ts), the two
 * are run one after the other: the body the ingress reads, the adapter writes back the same; the
 * events the ingress streams, the adapter's stream translator reads back as the same events.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { FinishReason, Role, ToolChoiceMode, UsageSchema } from "../../gen/infergate/v1/chat_pb.js";
import { ChatResponseSchema, type GenerateResponse, GenerateResponseSchema } from "../../gen/infergate/v1/inference_service_pb.js";
import { GatewayError, Reason } from "../../src/core/gateway-error.js";
import {
  createEventEncoder,
  fromMessagesRequest,
  stopOf,
  toAnthropicError,
  toAnthropicField,
  toMessage,
  userIdMetadataKey,
  wireUsage,
} from "../../src/ingress/anthropic/anthropic-ingress-translate.js";
import { createStreamTranslator, toMessagesRequest } from "../../src/upstreams/anthropic/anthropic-translate.js";

const ev = (event: MessageInitShape<typeof GenerateResponseSchema>["event"]): GenerateResponse => create(GenerateResponseSchema, { event });

/** A stream's text and its tool calls (fragments joined by index), as a client assembles them. */
function joined(events: GenerateResponse[]): { text: string; calls: { id: string; name: string; arguments: string }[] } {
  let text = "";
  const calls: { id: string; name: string; arguments: string }[] = [];
  for (const { event: e } of events) {
    if (e.case === "textDelta") text += e.value;
    if (e.case === "toolCallDelta") {
      const c = (calls[e.value.index] ??= { id: "", name: "", arguments: "" });
      c.id += e.value.id;
      c.name += e.value.name;
      c.arguments += e.value.arguments;
    }
  }
  return { text, calls };
}

describe("fromMessagesRequest", () => {
  it("a body the anthropic kind writes back unchanged (system, images, tool_use, tool_result, tools, tool_choice)", () => {
    const body = {
      model: "claude",
      max_tokens: 300,
      system: [
        { type: "text", text: "one" },
        { type: "text", text: "two" },
      ],
      messages: [
        {
          role: "user",
          content: [
            { type: "image", source: { type: "base64", media_type: "image/png", data: "aGVsbG8=" } },
            { type: "image", source: { type: "url", url: "https://example.com/x.png" } },
            { type: "text", text: "hi" },
          ],
        },
        { role: "assistant", content: [{ type: "text", text: "calling" }, { type: "tool_use", id: "toolu_1", name: "f", input: { a: 1 } }] },
        { role: "user", content: [{ type: "tool_result", tool_use_id: "toolu_1", content: [{ type: "text", text: "done" }] }] },
      ],
      temperature: 0.5,
      top_p: 0.9,
      stop_sequences: ["END"],
      tools: [{ name: "f", description: "does f", input_schema: { type: "object", properties: { a: { type: "number" } } } }],
      tool_choice: { type: "tool", name: "f", disable_parallel_tool_use: true },
      stream: false,
    };
    const call = fromMessagesRequest(body);
    expect(call.stream).toBe(false);
    // The forward adapter sends the system blocks of one SYSTEM message as they were.
    const back = toMessagesRequest(call.request, { upstreamModel: "claude", defaultMaxTokens: 1, stream: false });
    expect(back).toEqual(body);
  });

  it("strings for system and content, tool_choice modes, metadata.user_id", () => {
    const call = fromMessagesRequest({
      model: "m",
      max_tokens: 5,
      system: "sys",
      messages: [{ role: "user", content: "hello" }],
      tools: [{ name: "f", input_schema: { type: "object" } }],
      tool_choice: { type: "any" },
      metadata: { user_id: "u-1" },
      stream: true,
    });
    expect(call.stream).toBe(true);
    const r = call.request;
    expect(r.messages.map((m) => m.role)).toEqual([Role.SYSTEM, Role.USER]);
    expect(r.toolChoice?.choice).toEqual({ case: "mode", value: ToolChoiceMode.REQUIRED });
    expect(r.metadata).toEqual({ [userIdMetadataKey]: "u-1" });
    const none = fromMessagesRequest({ model: "m", max_tokens: 5, messages: [{ role: "user", content: "x" }], tool_choice: { type: "none" } });
    expect(none.request.toolChoice?.choice).toEqual({ case: "mode", value: ToolChoiceMode.NONE });
    const auto = fromMessagesRequest({ model: "m", max_tokens: 5, messages: [{ role: "user", content: "x" }], tool_choice: { type: "auto", disable_parallel_tool_use: true } });
    expect(auto.request.toolChoice?.choice).toEqual({ case: "mode", value: ToolChoiceMode.AUTO });
    expect(auto.request.parallelToolCalls).toBe(false);
  });

  it("a user turn's tool results come first as TOOL messages, its other blocks after them", () => {
    const call = fromMessagesRequest({
      model: "m",
      max_tokens: 5,
      messages: [{ role: "user", content: [{ type: "text", text: "and" }, { type: "tool_result", tool_use_id: "t1", content: "r1" }, { type: "tool_result", tool_use_id: "t2" }] }],
    });
    expect(call.request.messages.map((m) => [m.role, m.toolCallId])).toEqual([
      [Role.TOOL, "t1"],
      [Role.TOOL, "t2"],
      [Role.USER, ""],
    ]);
  });

  it.each([
    [{}, "max_tokens"],
    [{ max_tokens: 0 }, "max_tokens"],
    [{ top_k: 1.5 }, "top_k"],
    [{ model: "" }, "model"],
    [{ messages: "hi" }, "messages"],
    [{ container: "x" }, "container"],
    [{ thinking: { type: "enabled", budget_tokens: 2000 } }, "thinking"],
    [{ messages: [{ role: "system", content: "x" }] }, "messages[0].role"],
    [{ messages: [{ role: "assistant", content: [{ type: "image", source: { type: "url", url: "u" } }] }] }, "messages[0].content[0].type"],
    [{ messages: [{ role: "user", content: [{ type: "image", source: { type: "base64", media_type: "image/png", data: "not base64!" } }] }] }, "messages[0].content[0].source.data"],
    [{ messages: [{ role: "user", content: [{ type: "image", source: { type: "file", file_id: "f" } }] }] }, "messages[0].content[0].source.type"],
    [{ tool_choice: { type: "function" } }, "tool_choice.type"],
    [{ tools: [{ name: "f" }] }, "tools[0].input_schema"],
    [{ metadata: { user_id: 5 } }, "metadata.user_id"],
  ])("refuses %j naming %s", (patch, field) => {
    const body = { model: "m", messages: [{ role: "user", content: "x" }], ...(field === "max_tokens" ? {} : { max_tokens: 5 }), ...patch };
    let err: unknown;
    try {
      fromMessagesRequest(body);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(GatewayError);
    expect((err as GatewayError).code).toBe(Code.InvalidArgument);
    expect((err as GatewayError).metadata["field"]).toBe(field);
  });

  it("cache_control markers become cache breakpoints where they stand; a tool_result's on its last part", () => {
    const marker = { cache_control: { type: "ephemeral", ttl: "1h" } };
    const call = fromMessagesRequest({
      model: "m",
      max_tokens: 5,
      system: [{ type: "text", text: "s", ...marker }],
      messages: [
        { role: "user", content: [{ type: "text", text: "x" }, { type: "text", text: "y", cache_control: { type: "ephemeral" } }] },
        { role: "assistant", content: [{ type: "tool_use", id: "t1", name: "f", input: {}, ...marker }] },
        { role: "user", content: [{ type: "tool_result", tool_use_id: "t1", content: [{ type: "text", text: "a" }, { type: "text", text: "b" }], ...marker }] },
      ],
      tools: [{ name: "f", input_schema: { type: "object" }, ...marker }],
    });
    const [system, user, assistant, tool] = call.request.messages;
    expect(system!.content[0]!.cacheBreakpoint?.ttl).toBe("1h");
    expect(user!.content.map((p) => p.cacheBreakpoint?.ttl)).toEqual([undefined, ""]);
    expect(assistant!.toolCalls[0]!.cacheBreakpoint?.ttl).toBe("1h");
    expect(tool!.content.map((p) => p.cacheBreakpoint?.ttl)).toEqual([undefined, "1h"]);
    expect(call.request.tools[0]!.cacheBreakpoint?.ttl).toBe("1h");
  });

  it.each([
    [{ type: "persistent" }, "messages[0].content[0].cache_control.type"],
    [{ type: "ephemeral", ttl: "10m" }, "messages[0].content[0].cache_control.ttl"],
    [{ type: "ephemeral", scope: "x" }, "messages[0].content[0].cache_control.scope"],
  ])("a cache_control the API does not have (%j) is refused naming %s", (cacheControl, field) => {
    let err: unknown;
    try {
      fromMessagesRequest({ model: "m", max_tokens: 5, messages: [{ role: "user", content: [{ type: "text", text: "x", cache_control: cacheControl }] }] });
    } catch (e) {
      err = e;
    }
    expect((err as GatewayError).code).toBe(Code.InvalidArgument);
    expect((err as GatewayError).metadata["field"]).toBe(field);
  });
});

describe("answers", () => {
  it("stopOf: stop_sequence with the sequence when the answer names one and ended by it, else the finish reason's", () => {
    expect(stopOf(FinishReason.STOP, "END", false)).toEqual({ stop_reason: "stop_sequence", stop_sequence: "END" });
    expect(stopOf(FinishReason.UNSPECIFIED, "END", false)).toEqual({ stop_reason: "stop_sequence", stop_sequence: "END" });
    expect(stopOf(FinishReason.STOP, "", false)).toEqual({ stop_reason: "end_turn", stop_sequence: null });
    expect(stopOf(FinishReason.LENGTH, "END", false)).toEqual({ stop_reason: "max_tokens", stop_sequence: null });
    expect(stopOf(FinishReason.STOP, "END", true)).toEqual({ stop_reason: "tool_use", stop_sequence: null });
  });

  it("a stream's message_delta and a message carry the stop sequence", () => {
    const msg = toMessage(create(ChatResponseSchema, { model: "m", message: { role: Role.ASSISTANT, content: [{ part: { case: "text", value: "a" } }] }, finishReason: FinishReason.STOP, stopSequence: "\n\nHuman:" }), "msg_1");
    expect([msg.stop_reason, msg.stop_sequence]).toEqual(["stop_sequence", "\n\nHuman:"]);
    const encoder = createEventEncoder({ id: "msg_2", model: "m" });
    const events = encoder.push(create(GenerateResponseSchema, { event: { case: "final", value: { finishReason: FinishReason.STOP, stopSequence: "END" } } }));
    expect(events.find((e) => e.type === "message_delta")).toMatchObject({ delta: { stop_reason: "stop_sequence", stop_sequence: "END" } });
  });

  it("usage: input_tokens is the prompt less its cache reads and writes", () => {
    expect(wireUsage(create(UsageSchema, { promptTokens: 3560, completionTokens: 6, totalTokens: 3566, cachedPromptTokens: 2048, cacheCreationTokens: 1500 }))).toEqual({
      input_tokens: 12,
      output_tokens: 6,
      cache_read_input_tokens: 2048,
      cache_creation_input_tokens: 1500,
    });
  });

  it("a message: text block, tool_use blocks with parsed input, stop reasons", () => {
    const res = create(ChatResponseSchema, {
      id: "x",
      model: "m",
      message: { role: Role.ASSISTANT, content: [{ part: { case: "text", value: "a" } }, { part: { case: "text", value: "b" } }], toolCalls: [{ id: "c1", name: "f", arguments: '{"k":[1]}' }] },
      finishReason: FinishReason.TOOL_CALLS,
    });
    expect(toMessage(res, "msg_1")).toMatchObject({
      id: "msg_1",
      content: [
        { type: "text", text: "ab" },
        { type: "tool_use", id: "c1", name: "f", input: { k: [1] } },
      ],
      stop_reason: "tool_use",
    });
    for (const [reason, stop] of [
      [FinishReason.STOP, "end_turn"],
      [FinishReason.LENGTH, "max_tokens"],
      [FinishReason.CONTENT_FILTER, "refusal"],
      [FinishReason.UNSPECIFIED, "end_turn"],
    ] as const) {
      expect(toMessage(create(ChatResponseSchema, { finishReason: reason }), "i").stop_reason).toBe(stop);
    }
  });

  it("a stream of text then two tool calls: blocks in order, read back by the anthropic kind as the same events", () => {
    const events = [
      ev({ case: "textDelta", value: "Let me" }),
      ev({ case: "textDelta", value: " check." }),
      ev({ case: "toolCallDelta", value: { index: 0, id: "c1", name: "f", arguments: '{"a":' } }),
      ev({ case: "toolCallDelta", value: { index: 0, arguments: "1}" } }),
      ev({ case: "toolCallDelta", value: { index: 1, id: "c2", name: "g", arguments: "{}" } }),
      ev({ case: "final", value: { id: "", finishReason: FinishReason.TOOL_CALLS, usage: create(UsageSchema, { promptTokens: 10, completionTokens: 4, totalTokens: 14 }) } }),
    ];
    const encoder = createEventEncoder({ id: "msg_1", model: "m" });
    const out = events.flatMap((e) => encoder.push(e));
    expect(out.map((e) => `${e.type}${"index" in e ? e.index : ""}`)).toEqual([
      "message_start",
      "content_block_start0",
      "content_block_delta0",
      "content_block_delta0",
      "content_block_stop0",
      "content_block_start1",
      "content_block_delta1",
      "content_block_delta1",
      "content_block_stop1",
      "content_block_start2",
      "content_block_delta2",
      "content_block_stop2",
      "message_delta",
      "message_stop",
    ]);
    const back = createStreamTranslator("up");
    const read = out.flatMap((e) => back.push({ event: e.type, data: JSON.stringify(e), id: undefined }));
    // The same text and the same calls (the kind sends a call's id and name in a fragment of their own).
    expect(joined(read)).toEqual(joined(events));
    const final = read.at(-1)!.event;
    expect(final.case).toBe("final");
    expect(final.value).toMatchObject({ finishReason: FinishReason.TOOL_CALLS, usage: { promptTokens: 10, completionTokens: 4 } });
    expect(encoder.push(ev({ case: "textDelta", value: "late" }))).toEqual([]);
  });

  /** The tool_use blocks of a stream: id, name and the JSON of their input_json_deltas, by block. */
  function toolBlocks(events: readonly object[]): { id: string; name: string; json: string }[] {
    const blocks = new Map<number, { id: string; name: string; json: string }>();
    for (const e of events as { type: string; [k: string]: unknown }[]) {
      if (e.type === "content_block_start") {
        const b = e["content_block"] as { type: string; id: string; name: string };
        if (b.type === "tool_use") blocks.set(e["index"] as number, { id: b.id, name: b.name, json: "" });
      }
      if (e.type === "content_block_delta") {
        const d = e["delta"] as { type: string; partial_json?: string };
        const b = blocks.get(e["index"] as number);
        if (b !== undefined && d.type === "input_json_delta") b.json += d.partial_json;
      }
    }
    return [...blocks.values()];
  }

  it("parallel calls whose fragments interleave: the first streams, the other is sent whole when the calls end", () => {
    const encoder = createEventEncoder({ id: "msg_3", model: "m" });
    const out = [
      ev({ case: "toolCallDelta", value: { index: 0, id: "c0", name: "f", arguments: '{"x":' } }),
      ev({ case: "toolCallDelta", value: { index: 1, id: "c1", name: "g", arguments: '{"y":' } }),
      ev({ case: "toolCallDelta", value: { index: 1, arguments: "2}" } }),
      ev({ case: "toolCallDelta", value: { index: 0, arguments: "1}" } }),
      ev({ case: "final", value: { id: "", finishReason: FinishReason.TOOL_CALLS } }),
    ].flatMap((e) => encoder.push(e));
    expect(toolBlocks(out)).toEqual([
      { id: "c0", name: "f", json: '{"x":1}' },
      { id: "c1", name: "g", json: '{"y":2}' },
    ]);
    // Blocks are contiguous: each starts after the one before it stopped.
    expect(out.filter((e) => e.type.startsWith("content_block_s")).map((e) => `${e.type}${"index" in e ? e.index : ""}`)).toEqual([
      "content_block_start0",
      "content_block_stop0",
      "content_block_start1",
      "content_block_stop1",
    ]);
  });

  it("a call whose name comes in a later fragment than its id starts its block with both", () => {
    const encoder = createEventEncoder({ id: "msg_4", model: "m" });
    const out = [
      ev({ case: "toolCallDelta", value: { index: 0, id: "c0" } }),
      ev({ case: "toolCallDelta", value: { index: 0, name: "f", arguments: "{}" } }),
      ev({ case: "final", value: { id: "", finishReason: FinishReason.TOOL_CALLS } }),
    ].flatMap((e) => encoder.push(e));
    expect(toolBlocks(out)).toEqual([{ id: "c0", name: "f", json: "{}" }]);
  });

  it("a call that never gets a name: UNAVAILABLE, UPSTREAM_BAD_RESPONSE", () => {
    const encoder = createEventEncoder({ id: "msg_5", model: "m" });
    encoder.push(ev({ case: "toolCallDelta", value: { index: 0, id: "c0", arguments: "{}" } }));
    let thrown: unknown;
    try {
      encoder.push(ev({ case: "final", value: { id: "", finishReason: FinishReason.TOOL_CALLS } }));
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(GatewayError);
    expect(thrown).toMatchObject({ code: Code.Unavailable, reason: Reason.UpstreamBadResponse });
  });

  it("an empty answer: message_start, message_delta, message_stop", () => {
    const encoder = createEventEncoder({ id: "msg_1", model: "m" });
    expect(encoder.push(ev({ case: "final", value: { id: "", finishReason: FinishReason.STOP } })).map((e) => e.type)).toEqual(["message_start", "message_delta", "message_stop"]);
  });
});

describe("toAnthropicError", () => {
  it.each([
    [new GatewayError(Code.InvalidArgument, "bad"), 400, "invalid_request_error"],
    [new GatewayError(Code.Unauthenticated, "who"), 401, "authentication_error"],
    [new GatewayError(Code.PermissionDenied, "no"), 403, "permission_error"],
    [new GatewayError(Code.NotFound, "none", { reason: Reason.ModelNotFound }), 404, "not_found_error"],
    [new GatewayError(Code.ResourceExhausted, "slow down", { reason: Reason.RateLimited, retryAfterMs: 1500 }), 429, "rate_limit_error"],
    [new GatewayError(Code.ResourceExhausted, "busy", { reason: Reason.Overloaded, retryAfterMs: 1000 }), 529, "overloaded_error"],
    [new GatewayError(Code.Unavailable, "open", { reason: Reason.CircuitOpen, retryAfterMs: 2500 }), 529, "overloaded_error"],
    [new GatewayError(Code.Unavailable, "down", { reason: Reason.UpstreamUnavailable }), 503, "api_error"],
    [new GatewayError(Code.DeadlineExceeded, "late", { reason: Reason.DeadlineExceeded }), 504, "timeout_error"],
    [new Error("secret detail"), 500, "api_error"],
  ])("%s → %i %s", (err, status, type) => {
    const a = toAnthropicError(err);
    expect(a.status).toBe(status);
    expect(a.body).toEqual({ type: "error", error: { type, message: expect.any(String) } });
    expect(a.body.error.message).not.toContain("secret");
    if (err instanceof GatewayError && err.retryAfterMs !== undefined) {
      expect(a.headers["retry-after"]).toBe(String(Math.ceil(err.retryAfterMs / 1000)));
    } else {
      expect(a.headers).toEqual({});
    }
  });
});

describe("toAnthropicField: the core's field names in the Messages API's", () => {
  const { origins } = fromMessagesRequest({
    model: "m",
    max_tokens: 5,
    system: [{ type: "text", text: "a" }, { type: "text", text: "b" }],
    messages: [
      { role: "user", content: [{ type: "tool_result", tool_use_id: "t1", content: [{ type: "text", text: "r" }] }, { type: "text", text: "q" }] },
      { role: "assistant", content: [{ type: "text", text: "x" }, { type: "tool_use", id: "t2", name: "f", input: {} }] },
    ],
  });
  it.each([
    ["messages[0].content[1]", "system[1]"],
    ["messages[1].tool_call_id", "messages[0].content[0].tool_use_id"],
    ["messages[1].content[0].text", "messages[0].content[0].content[0].text"],
    ["messages[2].content[0]", "messages[0].content[1]"],
    ["messages[3].content[0]", "messages[1].content[0]"],
    ["messages[3].tool_calls[0].arguments", "messages[1].content[1].input"],
    ["messages[3].tool_calls[0].id", "messages[1].content[1].id"],
    ["messages[9]", "messages"],
    ["stop[2]", "stop_sequences[2]"],
    ["tool_choice.function_name", "tool_choice.name"],
    ["tools[0].parameters", "tools[0].parameters"],
  ])("%s → %s", (core, api) => {
    expect(toAnthropicField(core, origins)).toBe(api);
  });
});

