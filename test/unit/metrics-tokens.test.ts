/**
 * infergate_tokens_total's `kind` label (src/observability/metrics.ts): the kinds are disjoint,
 * so that summing a direction over its kinds gives the call's prompt or completion count.
 */
import { describe, expect, it } from "vitest";
import type { CallRecord } from "../../src/observability/call-record.js";
import { createMetrics } from "../../src/observability/metrics.js";
import { callRecord } from "../helpers/call-records.js";
import { parseMetrics } from "../helpers/metrics.js";

const record = callRecord;

/** The token counter's series after observing `records`: `direction/kind` → value. */
async function tokenSeries(...records: CallRecord[]): Promise<Record<string, number>> {
  const metrics = createMetrics({ models: ["m"], inFlight: () => 0, cache: undefined });
  for (const r of records) metrics.observe(r);
  const out: Record<string, number> = {};
  for (const [key, value] of parseMetrics(await metrics.registry.metrics())) {
    const m = /^infergate_tokens_total\{model="m",direction="(\w+)",kind="(\w+)"\}$/.exec(key);
    if (m !== null) out[`${m[1]}/${m[2]}`] = value;
  }
  return out;
}

describe("infergate_tokens_total", () => {
  it("splits prompt tokens into prompt, cached and cache_creation, completion tokens into completion and reasoning", async () => {
    expect(
      await tokenSeries(
        record({ promptTokens: 2106, completionTokens: 300, cachedPromptTokens: 1920, cacheCreationTokens: 100, reasoningTokens: 192 }),
        record({ promptTokens: 10, completionTokens: 5 }),
      ),
    ).toEqual({
      "prompt/prompt": 86 + 10,
      "prompt/cached": 1920,
      "prompt/cache_creation": 100,
      "completion/completion": 108 + 5,
      "completion/reasoning": 192,
    });
  });

  it("a direction's kinds sum to its total, so queries on direction alone count as before", async () => {
    const calls = [
      record({ promptTokens: 2106, completionTokens: 300, cachedPromptTokens: 1920, cacheCreationTokens: 100, reasoningTokens: 192 }),
      record({ promptTokens: 12, completionTokens: 6 }),
      record({ promptTokens: 7, completionTokens: 7, cachedPromptTokens: 7, reasoningTokens: 7 }),
    ];
    const series = await tokenSeries(...calls);
    const sum = (direction: string) => Object.entries(series).reduce((n, [k, v]) => (k.startsWith(`${direction}/`) ? n + v : n), 0);
    expect([sum("prompt"), sum("completion")]).toEqual([2106 + 12 + 7, 300 + 6 + 7]);
  });

  it("kinds with no tokens have no series; a call without usage counts nothing", async () => {
    expect(await tokenSeries(record({ promptTokens: 3, completionTokens: 2 }), record({}))).toEqual({ "prompt/prompt": 3, "completion/completion": 2 });
  });

  it("parts larger than their total are cut to it (a counter cannot go down)", async () => {
    expect(await tokenSeries(record({ promptTokens: 10, completionTokens: 4, cachedPromptTokens: 8, cacheCreationTokens: 8, reasoningTokens: 9 }))).toEqual({
      "prompt/cached": 8,
      "prompt/cache_creation": 2,
      "completion/reasoning": 4,
    });
  });
});
