import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { FinishReason, Role } from "../../gen/infergate/v1/chat_pb.js";
import { ChatRequestSchema, type GenerateResponse } from "../../gen/infergate/v1/inference_service_pb.js";
import { GatewayError } from "../../src/core/gateway-error.js";
import { fromEmbedResponse, toGoogleEmbedRequest } from "../../src/upstreams/gemini/gemini-embed.js";
import {
  createStreamTranslator,
  finishReasonOf,
  fromGenerateContentResponse,
  isInvalidApiKey,
  retryDelayOf,
  thoughtSignatureOf,
  toGenerateContentRequest,
  usageOf,
} from "../../src/upstreams/gemini/gemini-translate.js";
import { geminiModelOptionsSchema, geminiOptionsSchema } from "../../src/upstreams/gemini/gemini-upstream.js";
import type { SseEvent } from "../../src/upstreams/sse/sse-decoder.js";

type ChatInit = MessageInitShape<typeof ChatRequestSchema>;

const ctx = { safetySettings: [], defaultMaxTokens: undefined, thinkingBudget: undefined, cachedContent: undefined, skipThoughtSignatureValidator: false };

function chat(init: Partial<ChatInit> = {}) {
  return create(ChatRequestSchema, {
    model: "gemini",
    messages: [{ role: Role.USER, content: [{ part: { case: "text", value: "hi" } }] }],
    ...init,
  } as ChatInit);
}

const event = (data: unknown): SseEvent => ({ event: "message", data: typeof data === "string" ? data : JSON.stringify(data), id: undefined });
const chunk = (parts: object[], extra: object = {}) => ({ candidates: [{ content: { role: "model", parts }, index: 0, ...extra }], responseId: "r1" });

function caught(f: () => unknown): GatewayError {
  try {
    f();
  } catch (err) {
    if (err instanceof GatewayError) return err;
    throw err;
  }
  throw new Error("did not throw");
}

describe("gemini request", () => {
  it("an assistant turn without content or calls is refused naming it", () => {
    const err = caught(() =>
      toGenerateContentRequest(chat({ messages: [{ role: Role.USER, content: [{ part: { case: "text", value: "hi" } }] }, { role: Role.ASSISTANT }] }), ctx),
    );
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.metadata).toEqual({ field: "messages[1].content" });
  });

  it("only system messages are refused: Gemini needs a turn", () => {
    const err = caught(() => toGenerateContentRequest(chat({ messages: [{ role: Role.SYSTEM, content: [{ part: { case: "text", value: "be nice" } }] }] }), ctx));
    expect(err.metadata).toEqual({ field: "messages" });
  });

  it("tool_choice without tools sends no toolConfig; NONE with tools sends mode NONE", () => {
    expect(toGenerateContentRequest(chat({ toolChoice: { choice: { case: "mode", value: 2 } } }), ctx).toolConfig).toBeUndefined();
    const body = toGenerateContentRequest(chat({ tools: [{ name: "f" }], toolChoice: { choice: { case: "mode", value: 2 } } }), ctx);
    expect(body.toolConfig).toEqual({ functionCallingConfig: { mode: "NONE" } });
    expect(body.tools).toEqual([{ functionDeclarations: [{ name: "f" }] }]);
  });
});

describe("gemini answers", () => {
  it("finish reasons: STOP with calls is TOOL_CALLS; unknown values are UNSPECIFIED", () => {
    expect(finishReasonOf("STOP", false)).toBe(FinishReason.STOP);
    expect(finishReasonOf("STOP", true)).toBe(FinishReason.TOOL_CALLS);
    expect(finishReasonOf("MAX_TOKENS", false)).toBe(FinishReason.LENGTH);
    expect(finishReasonOf("PROHIBITED_CONTENT", false)).toBe(FinishReason.CONTENT_FILTER);
    expect(finishReasonOf("MALFORMED_FUNCTION_CALL", false)).toBe(FinishReason.UNSPECIFIED);
    expect(finishReasonOf("SOMETHING_NEW", false)).toBe(FinishReason.UNSPECIFIED);
  });

  it("usage: thoughts count in the completion and as reasoning; parts never exceed their totals", () => {
    expect(usageOf({ promptTokenCount: 10, cachedContentTokenCount: 4, candidatesTokenCount: 3, thoughtsTokenCount: 7 })).toMatchObject({
      promptTokens: 10,
      completionTokens: 10,
      totalTokens: 20,
      cachedPromptTokens: 4,
      reasoningTokens: 7,
    });
    expect(usageOf({ promptTokenCount: 2, cachedContentTokenCount: 9 })).toMatchObject({ promptTokens: 2, cachedPromptTokens: 2 });
  });

  it("a malformed answer is UNAVAILABLE UPSTREAM_BAD_RESPONSE", () => {
    for (const body of [[], { candidates: {} }, { candidates: [{ content: { parts: [{ functionCall: { args: {} } }] } }] }]) {
      const err = caught(() => fromGenerateContentResponse("g", body));
      expect([err.code, err.reason]).toEqual([Code.Unavailable, "UPSTREAM_BAD_RESPONSE"]);
    }
  });

  it("an error body in a 200 answer is the upstream's failure, with Google's status", () => {
    const err = caught(() => fromGenerateContentResponse("g", { error: { code: 500, message: "x", status: "INTERNAL" } }));
    expect(err.metadata).toEqual({ upstream: "g", upstream_error: "INTERNAL" });
  });
});

describe("gemini stream translator", () => {
  const kinds = (events: GenerateResponse[]) => events.map((e) => e.event.case);

  it("skips thought parts, keeps the last usage seen, and ends at the finish reason (later events ignored)", () => {
    const t = createStreamTranslator("g");
    expect(kinds(t.push(event(chunk([{ text: "hmm", thought: true }]))))).toEqual([]);
    expect(kinds(t.push(event({ ...chunk([{ text: "Hi" }]), usageMetadata: { promptTokenCount: 3, candidatesTokenCount: 1 } })))).toEqual(["textDelta"]);
    const last = t.push(event(chunk([{ text: "!" }], { finishReason: "STOP" })));
    expect(kinds(last)).toEqual(["textDelta", "final"]);
    const final = last[1]!.event;
    expect(final.case === "final" && [final.value.id, final.value.finishReason, final.value.usage?.promptTokens]).toEqual(["r1", FinishReason.STOP, 3]);
    expect(t.done).toBe(true);
    expect(t.push(event(chunk([{ text: "late" }])))).toEqual([]);
    expect(() => t.end()).not.toThrow();
  });

  it("a body that ends without a finish reason is STREAM_TRUNCATED", () => {
    const t = createStreamTranslator("g");
    t.push(event(chunk([{ text: "Hi" }])));
    const err = caught(() => t.end());
    expect([err.code, err.reason]).toEqual([Code.Unavailable, "STREAM_TRUNCATED"]);
  });

  it("a blocked prompt ends the stream with CONTENT_FILTER", () => {
    const t = createStreamTranslator("g");
    const events = t.push(event({ promptFeedback: { blockReason: "OTHER" } }));
    expect(events.map((e) => (e.event.case === "final" ? e.event.value.finishReason : undefined))).toEqual([FinishReason.CONTENT_FILTER]);
  });

  it("an error event names Google's status, a malformed one is refused", () => {
    expect(caught(() => createStreamTranslator("g").push(event({ error: { code: 429, status: "RESOURCE_EXHAUSTED" } }))).metadata).toEqual({
      upstream: "g",
      upstream_error: "RESOURCE_EXHAUSTED",
    });
    expect(caught(() => createStreamTranslator("g").push(event({ error: { status: "bad status with spaces" } }))).metadata["upstream_error"]).toBe("UNKNOWN");
    expect(caught(() => createStreamTranslator("g").push(event("{not json"))).reason).toBe("UPSTREAM_BAD_RESPONSE");
  });
});

describe("gemini error bodies", () => {
  it("reads RetryInfo's delay, whole seconds or fractions, from a body whole or cut", () => {
    expect(retryDelayOf('{"error":{"details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay": "37s"}]}}')).toBe(37_000);
    expect(retryDelayOf('…"retryDelay":"1.5s"')).toBe(1_500);
    expect(retryDelayOf('{"error":{"code":429}}')).toBeUndefined();
    expect(retryDelayOf('"retryDelay":"soon"')).toBeUndefined();
  });

  it("knows API_KEY_INVALID", () => {
    expect(isInvalidApiKey('{"error":{"details":[{"reason": "API_KEY_INVALID"}]}}')).toBe(true);
    expect(isInvalidApiKey('{"error":{"message":"API_KEY_INVALID in text only"}}')).toBe(false);
  });
});

describe("gemini embeddings", () => {
  it("one text is an embedContent body, several a batch naming the model in each request", () => {
    expect(toGoogleEmbedRequest(["a"], "m", undefined, 3)).toEqual({ content: { parts: [{ text: "a" }] }, outputDimensionality: 3 });
    expect(toGoogleEmbedRequest(["a", "b"], "m", "RETRIEVAL_QUERY", undefined)).toEqual({
      requests: [
        { model: "models/m", content: { parts: [{ text: "a" }] }, taskType: "RETRIEVAL_QUERY" },
        { model: "models/m", content: { parts: [{ text: "b" }] }, taskType: "RETRIEVAL_QUERY" },
      ],
    });
  });

  it("refuses answers that are not one vector per input of one length", () => {
    for (const [body, inputs, dims] of [
      [{ embeddings: [{ values: [1, 2] }] }, 2, undefined],
      [{ embeddings: [{ values: [1, 2] }, { values: [1] }] }, 2, undefined],
      [{ embedding: { values: [1, "2"] } }, 1, undefined],
      [{ embedding: { values: [1, 2] } }, 1, 3],
      [{ nothing: true }, 1, undefined],
    ] as const) {
      const err = caught(() => fromEmbedResponse("g", body, inputs, dims));
      expect(err.reason).toBe("UPSTREAM_BAD_RESPONSE");
    }
  });
});

describe("gemini options", () => {
  it("Vertex needs a project and location; safety settings name a harm category", () => {
    expect(geminiOptionsSchema.safeParse({ vertex: { project: "p" } }).success).toBe(false);
    expect(geminiOptionsSchema.safeParse({ vertex: { project: "p/../x", location: "l" } }).success).toBe(false);
    expect(geminiOptionsSchema.parse({ vertex: { project: "p", location: "global" } }).vertex?.tokenRefreshMarginMs).toBe(300_000);
    expect(geminiModelOptionsSchema.safeParse({ safetySettings: [{ category: "VIOLENCE", threshold: "BLOCK_NONE" }] }).success).toBe(false);
  });
});

describe("gemini thought signatures", () => {
  const signature = Buffer.from([0xfb, 0xff, 0x01, 0x02, 0x03, 0x3e, 0x3f]).toString("base64"); // "+/" in base64
  const callAnswer = {
    candidates: [{ content: { role: "model", parts: [{ functionCall: { name: "f", args: { a: 1 } }, thoughtSignature: signature }, { functionCall: { name: "g", args: {} } }] }, finishReason: "STOP", index: 0 }],
    responseId: "r1",
  };

  it("a unary answer's call carries its signature in the id, and the next turn sends it back on that call only", () => {
    const answer = fromGenerateContentResponse("g", callAnswer);
    const [first, second] = answer.message!.toolCalls;
    expect(first!.id).toMatch(/^call_0__ts_[A-Za-z0-9_-]+$/);
    expect(second!.id).toBe("call_1");
    expect(thoughtSignatureOf(first!.id)).toBe(signature);
    const next = toGenerateContentRequest(
      chat({
        messages: [
          { role: Role.USER, content: [{ part: { case: "text", value: "hi" } }] },
          { role: Role.ASSISTANT, toolCalls: answer.message!.toolCalls },
          { role: Role.TOOL, toolCallId: first!.id, content: [{ part: { case: "text", value: "1" } }] },
          { role: Role.TOOL, toolCallId: second!.id, content: [{ part: { case: "text", value: "2" } }] },
        ],
      }),
      ctx,
    );
    expect(next.contents[1]!.parts).toEqual([{ functionCall: { name: "f", args: { a: 1 } }, thoughtSignature: signature }, { functionCall: { name: "g", args: {} } }]);
    expect(next.contents[2]!.parts.map((p) => p.functionResponse?.name)).toEqual(["f", "g"]);
  });

  it("two calls of one function answered in reverse order: the responses follow the calls, with the ids Gemini gave", () => {
    const answer = fromGenerateContentResponse("g", {
      candidates: [
        {
          content: {
            role: "model",
            parts: [
              { functionCall: { id: "a1b2c3d4", name: "get_weather", args: { city: "Paris" } }, thoughtSignature: signature },
              { functionCall: { id: "e5f6g7h8", name: "get_weather", args: { city: "Rome" } } },
              { functionCall: { name: "get_time", args: {} } },
            ],
          },
          finishReason: "STOP",
          index: 0,
        },
      ],
      responseId: "r1",
    });
    const [paris, rome, time] = answer.message!.toolCalls;
    const toolMessage = (id: string, value: string) => ({ role: Role.TOOL, toolCallId: id, content: [{ part: { case: "text" as const, value } }] });
    const messages = [
      { role: Role.USER, content: [{ part: { case: "text" as const, value: "weather?" } }] },
      { role: Role.ASSISTANT, toolCalls: answer.message!.toolCalls },
      toolMessage(time!.id, '"12:00"'),
      toolMessage(rome!.id, '{"temp": 20}'),
      toolMessage(paris!.id, '{"temp": 10}'),
    ];
    const next = toGenerateContentRequest(chat({ messages }), ctx);
    expect(next.contents[1]!.parts).toEqual([
      { functionCall: { id: "a1b2c3d4", name: "get_weather", args: { city: "Paris" } }, thoughtSignature: signature },
      { functionCall: { id: "e5f6g7h8", name: "get_weather", args: { city: "Rome" } } },
      { functionCall: { name: "get_time", args: {} } },
    ]);
    expect(next.contents[2]!.parts).toEqual([
      { functionResponse: { id: "a1b2c3d4", name: "get_weather", response: { temp: 10 } } },
      { functionResponse: { id: "e5f6g7h8", name: "get_weather", response: { temp: 20 } } },
      { functionResponse: { name: "get_time", response: { output: "12:00" } } },
    ]);
    // Vertex AI gives no ids and is sent none; the order is the calls' all the same.
    const vertex = toGenerateContentRequest(chat({ messages }), { ...ctx, sendCallIds: false });
    expect(vertex.contents[1]!.parts.map((p) => p.functionCall?.id)).toEqual([undefined, undefined, undefined]);
    expect(vertex.contents[2]!.parts.map((p) => [p.functionResponse?.id, p.functionResponse?.response])).toEqual([
      [undefined, { temp: 10 }],
      [undefined, { temp: 20 }],
      [undefined, { output: "12:00" }],
    ]);
  });

  it("a streamed call carries its signature in the id of its delta", () => {
    const t = createStreamTranslator("g");
    const out = t.push(event(callAnswer));
    const ids = out.filter((e) => e.event.case === "toolCallDelta").map((e) => (e.event.value as { id: string }).id);
    expect(ids.map(thoughtSignatureOf)).toEqual([signature, undefined]);
  });

  it("calls that lost their signatures get Google's sentinel on the first call only when the model asks for it", () => {
    const history = chat({
      messages: [
        { role: Role.USER, content: [{ part: { case: "text", value: "hi" } }] },
        { role: Role.ASSISTANT, toolCalls: [{ id: "x", name: "f", arguments: "{}" }, { id: "y", name: "g", arguments: "{}" }] },
      ],
    });
    expect(toGenerateContentRequest(history, ctx).contents[1]!.parts.map((p) => p.thoughtSignature)).toEqual([undefined, undefined]);
    const skipping = toGenerateContentRequest(history, { ...ctx, skipThoughtSignatureValidator: true });
    expect(skipping.contents[1]!.parts.map((p) => p.thoughtSignature)).toEqual(["skip_thought_signature_validator", undefined]);
  });

  it("an id with a mark but no valid base64url after it carries no signature", () => {
    expect(thoughtSignatureOf("call_0__ts_not+valid")).toBeUndefined();
    expect(thoughtSignatureOf("call_0")).toBeUndefined();
  });
});
