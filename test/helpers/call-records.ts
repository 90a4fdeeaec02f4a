import type { CallRecord } from "../../src/observability/call-record.js";

/**
 * A finished call's record as the gateway's call-record step makes it: a successful Chat of model
 * "m" with no tokens and no cost, with `over` for what a test looks at.
 */
export function callRecord(over: Partial<CallRecord> = {}): CallRecord {
  return {
    rpc: "Chat",
    requestId: "r",
    tenant: "",
    model: "m",
    upstream: "up",
    endpoint: undefined,
    attempts: 1,
    cache: undefined,
    code: 0,
    reason: undefined,
    latencyMs: 1,
    ttftMs: undefined,
    promptTokens: 0,
    completionTokens: 0,
    cachedPromptTokens: 0,
    cacheCreationTokens: 0,
    reasoningTokens: 0,
    cost: undefined,
    currency: "USD",
    pricedModel: undefined,
    ...over,
  };
}
