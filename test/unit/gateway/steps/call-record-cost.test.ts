/**
 * The call record step's cost (src/gateway/steps/call-record.ts): priced at the model that
 * answered, 0 when nothing went upstream or nothing came back, unpriced for a model without a
 * price, an estimate for a stream cut off after events; the `infergate-cost` header.
 */
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import type { ModelPrice } from "../../../../src/config/schema.js";
import type { ModelRoute } from "../../../../src/core/model-route.js";
import { GatewayError, Reason } from "../../../../src/core/gateway-error.js";
import type { GatewayCall } from "../../../../src/gateway/gateway-call.js";
import { composeStream, composeUnary } from "../../../../src/gateway/interceptor.js";
import { callRecordStep, costHeader } from "../../../../src/gateway/steps/call-record.js";
import type { CallRecord } from "../../../../src/observability/call-record.js";
import { callOf, chatAnswer, chatRequest, context, drain, events, generateRequest, route } from "../helpers.js";

/** 1 per million prompt tokens, 10 per million completion tokens, in EUR. */
const price: ModelPrice = {
  inputPerMTok: 1,
  cachedInputPerMTok: 1,
  cacheCreationPerMTok: 1,
  outputPerMTok: 10,
  reasoningPerMTok: 10,
  perRequest: 0,
  embeddingPer1kTokens: undefined,
};
const priced = (name: string): ModelRoute => ({ ...route(name, { name: "up" }), price, currency: "EUR" });
const unpriced = (name: string): ModelRoute => ({ ...route(name, { name: "up" }), price: undefined, currency: "EUR" });

function setup() {
  const records: CallRecord[] = [];
  const step = callRecordStep((r) => records.push(r), (err) => err, () => "JPY");
  return { records, step };
}

/** What the handler does as the fallbacks step and an upstream attempt would. */
function answered(call: GatewayCall, candidate: ModelRoute, attempts = 1): void {
  call.route = priced("asked");
  call.candidate = candidate;
  call.outer.trace.attempts = attempts;
}

describe("call record step: cost", () => {
  it("prices an answer at the model that answered (a fallback's price), in the header too", async () => {
    const { records, step } = setup();
    const ctx = context();
    // chatAnswer's usage: 3 prompt, 2 completion tokens → 3 × 1 + 2 × 10 = 23 millionths.
    const chat = composeUnary([step], "Chat", async (call) => (answered(call, priced("fallback")), chatAnswer()));
    await chat(callOf("Chat", chatRequest({ model: "asked" }), ctx));
    expect(records[0]).toMatchObject({ model: "asked", pricedModel: "fallback", cost: 0.000023, currency: "EUR" });
    expect(ctx.responseHeaders[costHeader]).toBe("0.000023 EUR");
  });

  it("costs 0 when nothing went upstream (a cache hit) and when nothing came back (a failure)", async () => {
    const { records, step } = setup();
    const hit = composeUnary([step], "Chat", async (call) => ((call.route = priced("m")), chatAnswer()));
    await hit(callOf("Chat", chatRequest({ model: "m" })));
    const failed = composeUnary([step], "Chat", (call) => {
      answered(call, priced("m"));
      throw new GatewayError(Code.Unavailable, "down", { reason: Reason.UpstreamUnavailable });
    });
    await expect(failed(callOf("Chat", chatRequest({ model: "m" })))).rejects.toThrow("down");
    expect(records.map((r) => [r.cost, r.currency])).toEqual([
      [0, "EUR"],
      [0, "EUR"],
    ]);
  });

  it("a model without a price is unpriced whatever happened: cost undefined, header unpriced", async () => {
    const { records, step } = setup();
    const ctx = context();
    const chat = composeUnary([step], "Chat", async (call) => (answered(call, unpriced("free-form")), chatAnswer()));
    await chat(callOf("Chat", chatRequest({ model: "asked" }), ctx));
    expect(records[0]).toMatchObject({ cost: undefined, pricedModel: "free-form" });
    expect(ctx.responseHeaders[costHeader]).toBe("unpriced");
  });

  it("a call refused before it had a model costs 0 in the configured currency", async () => {
    const { records, step } = setup();
    const chat = composeUnary([step], "Chat", () => {
      throw new GatewayError(Code.Unauthenticated, "no key", { reason: Reason.Unauthenticated });
    });
    await expect(chat(callOf("Chat", chatRequest({ model: "m" })))).rejects.toThrow("no key");
    expect(records[0]).toMatchObject({ cost: 0, currency: "JPY", pricedModel: undefined });
  });

  it("a stream's cost is from its final event's usage; one cut off after events has an estimate", async () => {
    const { records, step } = setup();
    const whole = composeStream([step], (call) => (answered(call, priced("m")), events("a", "b", "c")));
    await drain(whole(callOf("Generate", generateRequest({ model: "m" }))));
    // 1 prompt, 3 completion tokens: 1 + 30 millionths.
    expect(records[0]).toMatchObject({ cost: 0.000031, usageEstimated: undefined });

    const ctx = context();
    const cut = composeStream([step], (call) => (answered(call, priced("m")), events("a", "b", "c")));
    const it = cut(callOf("Generate", generateRequest({ model: "m" }), ctx));
    await it.next();
    await it.next();
    await it.return();
    // Two deltas given out: 2 completion tokens × 10 per million.
    expect(records[1]).toMatchObject({ code: Code.Canceled, usageEstimated: true, promptTokens: 0, completionTokens: 2, cost: 0.00002 });
    expect(ctx.responseHeaders[costHeader]).toBe("0.00002 EUR");
  });
});
