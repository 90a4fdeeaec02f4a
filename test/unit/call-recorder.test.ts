/**
 * The per-call log line's token counts (src/server/call-recorder.ts): prompt and completion
 * always, their parts (cached, cache-creation, reasoning) only when the upstream reported some.
 */
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import type { CallRecord } from "../../src/observability/call-record.js";
import { createMetrics } from "../../src/observability/metrics.js";
import { createCallRecorder } from "../../src/server/call-recorder.js";
import { callRecord } from "../helpers/call-records.js";

const record = callRecord;

/** The `call` lines written for `records`. */
function callLines(...records: CallRecord[]): Record<string, unknown>[] {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: "info" }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  const charged: CallRecord[] = [];
  const recorder = createCallRecorder({
    log,
    metrics: createMetrics({ models: ["m"], inFlight: () => 0, cache: undefined }),
    charge: (r) => void charged.push(r),
    refusalLogIntervalMs: 60_000,
  });
  for (const r of records) recorder.onCall(r);
  recorder.flush();
  expect(charged).toEqual(records);
  return lines.filter((l) => l["msg"] === "call");
}

const tokenKeys = ["promptTokens", "completionTokens", "cachedPromptTokens", "cacheCreationTokens", "reasoningTokens"];
const tokensOf = (line: Record<string, unknown>) => Object.fromEntries(Object.entries(line).filter(([k]) => tokenKeys.includes(k)));

describe("call log line", () => {
  it("carries the cached, cache-creation and reasoning counts when not 0, and leaves them out when 0", () => {
    const lines = callLines(
      record({ promptTokens: 2106, completionTokens: 300, cachedPromptTokens: 1920, cacheCreationTokens: 100, reasoningTokens: 192 }),
      record({ promptTokens: 12, completionTokens: 6, cachedPromptTokens: 4 }),
      record({ promptTokens: 12, completionTokens: 6 }),
    );
    expect(lines.map(tokensOf)).toEqual([
      { promptTokens: 2106, completionTokens: 300, cachedPromptTokens: 1920, cacheCreationTokens: 100, reasoningTokens: 192 },
      { promptTokens: 12, completionTokens: 6, cachedPromptTokens: 4 },
      { promptTokens: 12, completionTokens: 6 },
    ]);
  });
});
