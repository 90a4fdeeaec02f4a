/**
 * The `bedrock` kind's pure parts from fixtures: the Converse request, the stream's event machine,
 * the error mapping and the embedding answers. The end-to-end test (test/e2e/bedrock-upstream.test.ts)
 * runs them through the AWS SDK against the fake; these cover what a well-behaved fake never sends.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { FinishReason, ResponseFormatType, Role } from "../../gen/infergate/v1/chat_pb.js";
import { ChatRequestSchema, EmbedRequestSchema, type GenerateResponse } from "../../gen/infergate/v1/inference_service_pb.js";
import { GatewayError, Reason } from "../../src/core/gateway-error.js";
import { fromEmbedAnswers, toEmbedBodies } from "../../src/upstreams/bedrock/bedrock-embed.js";
import { errorFromBedrock } from "../../src/upstreams/bedrock/bedrock-errors.js";
import { createConverseStreamTranslator, finishReasonOf, toConverseRequest, usageOf } from "../../src/upstreams/bedrock/bedrock-translate.js";
import type { ConverseStreamOutput } from "@aws-sdk/client-bedrock-runtime";

type ChatInit = MessageInitShape<typeof ChatRequestSchema>;

const ctx = { stream: false };
const chat = (init: Partial<ChatInit> = {}) =>
  create(ChatRequestSchema, { model: "m", messages: [{ role: Role.USER, content: [{ part: { case: "text", value: "hi" } }] }], ...init } as ChatInit);

/** What `fn` throws, as a GatewayError. */
function errorOf(fn: () => unknown): GatewayError {
  try {
    fn();
  } catch (err) {
    if (err instanceof GatewayError) return err;
    throw err;
  }
  throw new Error("nothing was thrown");
}

describe("toConverseRequest", () => {
  it("a JSON schema response format becomes outputConfig.textFormat, the schema as JSON text", () => {
    const body = toConverseRequest(
      chat({ responseFormat: { type: ResponseFormatType.JSON_SCHEMA, jsonSchema: { name: "answer", schema: { type: "object" }, description: "" } } }),
      ctx,
    );
    expect(body.outputConfig).toEqual({ textFormat: { type: "json_schema", structure: { jsonSchema: { schema: '{"type":"object"}', name: "answer" } } } });
  });

  it.each<[string, Partial<ChatInit>, string]>([
    ["a data: URL that is not base64", { messages: [{ role: Role.USER, content: [{ part: { case: "imageUrl", value: { url: "data:image/png,abc" } } }] }] }, "messages[0].content[0].image_url.url"],
    ["an image type Converse does not take", { messages: [{ role: Role.USER, content: [{ part: { case: "imageData", value: { data: new Uint8Array([1]), mimeType: "image/tiff" } } }] }] }, "messages[0].content[0].image_data.mime_type"],
    ["tool arguments that are not an object", { messages: [{ role: Role.ASSISTANT, toolCalls: [{ id: "1", name: "f", arguments: "[1]" }] }] }, "messages[0].tool_calls[0].arguments"],
    ["only a system message", { messages: [{ role: Role.SYSTEM, content: [{ part: { case: "text", value: "s" } }] }] }, "messages"],
    ["a tool schema that is not an object", { tools: [{ name: "f", parameters: { type: "string" } }] }, "tools[0].parameters"],
  ])("refuses %s, naming the field", (_what, init, field) => {
    const err = errorOf(() => toConverseRequest(chat(init), ctx));
    expect([err.code, err.metadata["field"]]).toEqual([Code.InvalidArgument, field]);
  });

  it("sends no maxTokens when neither the request nor the model sets one", () => {
    expect(toConverseRequest(chat(), ctx)).toEqual({ messages: [{ role: "user", content: [{ text: "hi" }] }] });
  });
});

describe("answers", () => {
  it("finish reasons", () => {
    expect(["end_turn", "stop_sequence", "max_tokens", "model_context_window_exceeded", "tool_use", "guardrail_intervened", "content_filtered", "malformed_tool_use", undefined].map(finishReasonOf)).toEqual([
      FinishReason.STOP,
      FinishReason.STOP,
      FinishReason.LENGTH,
      FinishReason.LENGTH,
      FinishReason.TOOL_CALLS,
      FinishReason.CONTENT_FILTER,
      FinishReason.CONTENT_FILTER,
      FinishReason.UNSPECIFIED,
      FinishReason.UNSPECIFIED,
    ]);
  });

  it("usage: the cache reads and writes are parts of the prompt; nonsense counts are 0", () => {
    expect(usageOf({ inputTokens: 10, outputTokens: 5, cacheReadInputTokens: 100, cacheWriteInputTokens: 50 })).toMatchObject({
      promptTokens: 160,
      completionTokens: 5,
      totalTokens: 165,
      cachedPromptTokens: 100,
      cacheCreationTokens: 50,
    });
    expect(usageOf({ inputTokens: -3, outputTokens: Number.NaN })).toMatchObject({ promptTokens: 0, completionTokens: 0, totalTokens: 0 });
  });
});

describe("the ConverseStream translator", () => {
  const start: ConverseStreamOutput = { messageStart: { role: "assistant" } };
  const delta = (text: string, index = 0): ConverseStreamOutput => ({ contentBlockDelta: { contentBlockIndex: index, delta: { text } } });
  const kinds = (events: GenerateResponse[]) => events.map((e) => e.event.case);

  it("ignores events it does not know, and gives the final event at metadata", () => {
    const t = createConverseStreamTranslator("up", "rid");
    const events: ConverseStreamOutput[] = [
      start,
      { $unknown: ["future", {}] },
      delta("a"),
      { messageStop: { stopReason: "end_turn" } },
      { metadata: { usage: { inputTokens: 1, outputTokens: 2, totalTokens: 3 }, metrics: { latencyMs: 1 } } },
    ];
    const out = events.flatMap((e) => t.push(e));
    expect(kinds(out)).toEqual(["textDelta", "final"]);
    expect(t.done).toBe(true);
    expect(t.push(delta("late"))).toEqual([]);
  });

  it("messageStop without metadata ends with a final event of usage 0", () => {
    const t = createConverseStreamTranslator("up", "rid");
    const events: ConverseStreamOutput[] = [start, delta("a"), { messageStop: { stopReason: "max_tokens" } }];
    events.forEach((e) => t.push(e));
    const [final] = t.end();
    expect(final?.event.case === "final" && [final.event.value.finishReason, final.event.value.usage?.totalTokens, final.event.value.id]).toEqual([FinishReason.LENGTH, 0, "rid"]);
  });

  it.each<[string, ConverseStreamOutput[]]>([
    ["a delta before messageStart", [delta("a")]],
    ["a second messageStart", [start, start]],
    ["metadata before messageStop", [start, { metadata: { usage: undefined, metrics: undefined } }]],
    ["a toolUse delta in a text block", [start, delta("a"), { contentBlockDelta: { contentBlockIndex: 0, delta: { toolUse: { input: "{}" } } } }]],
    ["a block started twice", [start, { contentBlockStart: { contentBlockIndex: 1, start: { toolUse: { toolUseId: "t", name: "f" } } } }, { contentBlockStart: { contentBlockIndex: 1, start: { toolUse: { toolUseId: "t", name: "f" } } } }]],
  ])("%s is UNAVAILABLE UPSTREAM_BAD_RESPONSE", (_what, events) => {
    const t = createConverseStreamTranslator("up", "rid");
    const err = errorOf(() => events.forEach((e) => t.push(e)));
    expect([err.code, err.reason]).toEqual([Code.Unavailable, Reason.UpstreamBadResponse]);
  });

  it("a stream that ends before messageStop is STREAM_TRUNCATED", () => {
    const t = createConverseStreamTranslator("up", "rid");
    [start, delta("a")].forEach((e) => t.push(e));
    const err = errorOf(() => t.end());
    expect([err.code, err.reason, err.message]).toEqual([Code.Unavailable, Reason.StreamTruncated, 'upstream "up" ended the stream before messageStop']);
  });
});

describe("errorFromBedrock", () => {
  const ctx = { upstream: "up", secrets: ["s3cr3t-session-token"], throttlingRetryAfterMs: 700 };
  const sdkError = (name: string, status: number | undefined, message = "m", headers: Record<string, string> = {}) =>
    Object.assign(new Error(message), { name, $metadata: { httpStatusCode: status }, $response: { headers } });

  it("a ThrottlingException's Retry-After wins over the configured delay, which stands in when there is none", () => {
    expect((errorFromBedrock(sdkError("ThrottlingException", 429, "m", { "retry-after": "3" }), ctx) as GatewayError).retryAfterMs).toBe(3000);
    expect((errorFromBedrock(sdkError("ThrottlingException", 429), ctx) as GatewayError).retryAfterMs).toBe(700);
  });

  it("an exception frame read with the answer's 200 maps by its name", () => {
    const err = errorFromBedrock(sdkError("ServiceUnavailableException", 200), ctx, true) as GatewayError;
    expect([err.code, err.message, err.metadata]).toEqual([Code.Unavailable, 'upstream "up" failed during the stream (ServiceUnavailableException)', { upstream: "up", upstream_error: "ServiceUnavailableException" }]);
  });

  it("no credentials is INTERNAL UPSTREAM_AUTH; a socket failure UNAVAILABLE", () => {
    const creds = errorFromBedrock(Object.assign(new Error("Could not load credentials from any providers"), { name: "CredentialsProviderError" }), ctx) as GatewayError;
    expect([creds.code, creds.reason]).toEqual([Code.Internal, Reason.UpstreamAuth]);
    const refused = errorFromBedrock(Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }), ctx) as GatewayError;
    expect([refused.code, refused.reason]).toEqual([Code.Unavailable, Reason.UpstreamUnavailable]);
  });

  it("a ValidationException's message reaches the client without a configured secret", () => {
    const err = errorFromBedrock(sdkError("ValidationException", 400, "bad token s3cr3t-session-token here"), ctx) as GatewayError;
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.message).toBe('upstream "up" rejected the request: bad token [redacted] here');
  });
});

describe("embeddings", () => {
  const req = (texts: string[], dimensions?: number) => create(EmbedRequestSchema, { model: "e", texts, ...(dimensions === undefined ? {} : { dimensions }) });

  it("Titan: one body per text; Cohere: one for the batch", () => {
    expect(toEmbedBodies(req(["a", "b"], 256), { format: "titan", inputType: "search_document" })).toEqual([{ inputText: "a", dimensions: 256 }, { inputText: "b", dimensions: 256 }]);
    expect(toEmbedBodies(req(["a", "b"]), { format: "cohere", inputType: "clustering", truncate: "END" })).toEqual([{ texts: ["a", "b"], input_type: "clustering", truncate: "END" }]);
  });

  it.each<[string, { body: unknown }[]]>([
    ["a count that differs", [{ body: { embeddings: [[1, 2]] } }]],
    ["vectors of different lengths", [{ body: { embeddings: [[1, 2], [1]] } }]],
    ["a value that is not a number", [{ body: { embeddings: [[1, "2"], [1, 2]] } }]],
    ["no embeddings array", [{ body: { embedding: [1, 2] } }]],
  ])("an answer with %s is UNAVAILABLE UPSTREAM_BAD_RESPONSE", (_what, answers) => {
    const err = errorOf(() => fromEmbedAnswers("up", "cohere", answers, 2));
    expect([err.code, err.reason]).toEqual([Code.Unavailable, Reason.UpstreamBadResponse]);
  });

  it("Titan: a vector of another length than the dimensions asked for is refused", () => {
    const err = errorOf(() => fromEmbedAnswers("up", "titan", [{ body: { embedding: [1, 2, 3], inputTextTokenCount: 1 } }], 1, 2));
    expect(err.reason).toBe(Reason.UpstreamBadResponse);
  });
});
