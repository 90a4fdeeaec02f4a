import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import {
  ChatResponseSchema,
  EmbedRequestSchema,
  EmbedResponseSchema,
  GenerateResponseSchema,
  ListModelsRequestSchema,
  ListModelsResponseSchema,
} from "../../../../gen/infergate/v1/inference_service_pb.js";
import { GatewayError, Reason } from "../../../../src/core/gateway-error.js";
import { composeStream, composeUnary } from "../../../../src/gateway/interceptor.js";
import { callRecordStep } from "../../../../src/gateway/steps/call-record.js";
import type { CallRecord } from "../../../../src/observability/call-record.js";
import { callOf, chatAnswer, chatRequest, context, drain, events, generateRequest } from "../helpers.js";

function setup() {
  const records: CallRecord[] = [];
  const logged: unknown[] = [];
  const step = callRecordStep((r) => records.push(r), (err) => (logged.push(err), err));
  return { records, logged, step };
}

describe("call record step", () => {
  it("reports a unary answer: its upstream, tokens, the cache header and the call's ids", async () => {
    const { records, step } = setup();
    const ctx = context();
    const chat = composeUnary([step], "Chat", async (call) => {
      call.ctx.tenant = "alice";
      call.ctx.responseHeaders["infergate-cache"] = "miss";
      return Object.assign(chatAnswer(), { upstream: "up" });
    });
    await chat(callOf("Chat", chatRequest({ model: "m" }), ctx));
    expect(records).toEqual([
      expect.objectContaining({ rpc: "Chat", model: "m", tenant: "alice", requestId: ctx.requestId, upstream: "up", cache: "miss", code: 0, promptTokens: 3, completionTokens: 2 }),
    ]);
    expect(records[0]!.latencyMs).toBeGreaterThanOrEqual(0);
  });

  it("reports a failure with its code and reason, and rejects with the same error", async () => {
    const { records, step } = setup();
    const err = new GatewayError(Code.NotFound, "no model", { reason: Reason.ModelNotFound });
    const chat = composeUnary([step], "Chat", () => {
      throw err;
    });
    await expect(chat(callOf("Chat", chatRequest()))).rejects.toBe(err);
    expect(records[0]).toMatchObject({ code: Code.NotFound, reason: Reason.ModelNotFound, upstream: undefined });
  });

  it("encodes the answer for the listener before the report; what that throws is the call's failure, logged", async () => {
    const { records, logged, step } = setup();
    const tooLarge = new GatewayError(Code.ResourceExhausted, "too large", { reason: Reason.MessageTooLarge });
    const ctx = context();
    const order: string[] = [];
    ctx.encodeAnswer = () => {
      order.push("encode");
      throw tooLarge;
    };
    const chat = composeUnary([step], "Chat", async () => chatAnswer());
    await expect(chat(callOf("Chat", chatRequest(), ctx))).rejects.toBe(tooLarge);
    expect([records[0]?.code, records[0]?.reason, logged, order]).toEqual([Code.ResourceExhausted, Reason.MessageTooLarge, [tooLarge], ["encode"]]);
  });

  it("reports a stream with its time to first event and its final event's usage", async () => {
    const { records, step } = setup();
    const stream = composeStream([step], () => events("a", "b"));
    await drain(stream(callOf("Generate", generateRequest())));
    expect(records).toEqual([expect.objectContaining({ rpc: "Generate", code: 0, completionTokens: 2 })]);
    expect(records[0]!.ttftMs).toBeGreaterThanOrEqual(0);
  });

  it("reports every count of a Chat answer's usage: the cached, cache-creation and reasoning parts too", async () => {
    const { records, step } = setup();
    const usage = { promptTokens: 2106, completionTokens: 300, totalTokens: 2406, cachedPromptTokens: 1920, cacheCreationTokens: 100, reasoningTokens: 192 };
    const chat = composeUnary([step], "Chat", async () => create(ChatResponseSchema, { usage }));
    await chat(callOf("Chat", chatRequest()));
    expect(records[0]).toMatchObject({ promptTokens: 2106, completionTokens: 300, cachedPromptTokens: 1920, cacheCreationTokens: 100, reasoningTokens: 192 });
  });

  it("reports the parts of a stream's final usage", async () => {
    const { records, step } = setup();
    const final = create(GenerateResponseSchema, {
      event: { case: "final", value: { usage: { promptTokens: 50, completionTokens: 40, cachedPromptTokens: 30, cacheCreationTokens: 20, reasoningTokens: 10 } } },
    });
    await drain(composeStream([step], () => [final])(callOf("Generate", generateRequest())));
    expect(records[0]).toMatchObject({ promptTokens: 50, completionTokens: 40, cachedPromptTokens: 30, cacheCreationTokens: 20, reasoningTokens: 10 });
  });

  it("reports an Embed answer's usage (prompt tokens only), and zeros for an answer without usage", async () => {
    const { records, step } = setup();
    const embed = composeUnary([step], "Embed", async () => create(EmbedResponseSchema, { upstream: "up", usage: { promptTokens: 12, totalTokens: 12 } }));
    await embed(callOf("Embed", create(EmbedRequestSchema, { model: "m", texts: ["a b"] })));
    const list = composeUnary([step], "ListModels", async () => create(ListModelsResponseSchema));
    await list(callOf("ListModels", create(ListModelsRequestSchema)));
    expect(records.map((r) => [r.rpc, r.upstream, r.promptTokens, r.completionTokens, r.cachedPromptTokens, r.cacheCreationTokens, r.reasoningTokens])).toEqual([
      ["Embed", "up", 12, 0, 0, 0, 0],
      ["ListModels", undefined, 0, 0, 0, 0, 0],
    ]);
  });

  it("a stream whose consumer stopped before the final event is reported as cancelled", async () => {
    const { records, step } = setup();
    const it = composeStream([step], () => events("a", "b"))(callOf("Generate", generateRequest()));
    await it.next();
    await it.return();
    expect(records[0]).toMatchObject({ code: Code.Canceled });
  });

  it("refused: a call the listener answered from its bytes, reported as undecoded", () => {
    const { records, step } = setup();
    const err = new GatewayError(Code.InvalidArgument, "not a message", { reason: Reason.MalformedRequest });
    expect(step.refused("Chat", context(), err)).toBe(err);
    expect(records[0]).toMatchObject({ rpc: "Chat", model: "", code: Code.InvalidArgument, undecoded: true });
  });
});
