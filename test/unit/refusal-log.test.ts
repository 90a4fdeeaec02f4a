/**
 * Issue 17, defect 4: refusals are logged once per caller and reason per interval, then summed up
 * (src/observability/refusal-log.ts). Fake timers: no real time passes.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { CallRecord } from "../../src/observability/call-record.js";
import { createRefusalLog, type RefusalSummary } from "../../src/observability/refusal-log.js";
import { callRecord } from "../helpers/call-records.js";

const record = (reason: string | undefined, tenant = "alpha", code = reason === undefined ? 0 : 8): CallRecord =>
  callRecord({ tenant, model: "mock-chat", upstream: undefined, attempts: 0, code, reason, latencyMs: 0 });

describe("refusal log", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("logs the first refusal of a caller and reason, counts the rest, and sums them up when the interval ends", () => {
    const summaries: RefusalSummary[] = [];
    const log = createRefusalLog(10_000, (s) => summaries.push(s));
    const logged = Array.from({ length: 1000 }, () => log.shouldLog(record("RATE_LIMITED")));
    expect(logged.filter(Boolean)).toHaveLength(1);
    expect(logged[0]).toBe(true);
    expect(summaries).toEqual([]);
    vi.advanceTimersByTime(10_000);
    expect(summaries).toEqual([{ tenant: "alpha", code: 8, reason: "RATE_LIMITED", suppressed: 999, intervalMs: 10_000 }]);
    // The flood goes on: still no line of its own, one summary per interval.
    for (let i = 0; i < 5; i++) expect(log.shouldLog(record("RATE_LIMITED"))).toBe(false);
    vi.advanceTimersByTime(10_000);
    expect(summaries.at(-1)).toMatchObject({ suppressed: 5 });
    // An interval without refusals ends it: the next one is logged again.
    vi.advanceTimersByTime(10_000);
    expect(summaries).toHaveLength(2);
    expect(log.shouldLog(record("RATE_LIMITED"))).toBe(true);
  });

  it("keeps callers and reasons apart, and never samples other calls", () => {
    const log = createRefusalLog(10_000, () => {});
    expect(log.shouldLog(record("RATE_LIMITED", "alpha"))).toBe(true);
    expect(log.shouldLog(record("RATE_LIMITED", "beta"))).toBe(true);
    expect(log.shouldLog(record("UNAUTHENTICATED", "", 16))).toBe(true);
    expect(log.shouldLog(record("MODEL_NOT_ALLOWED", "alpha", 7))).toBe(true);
    expect(log.shouldLog(record("OVERLOADED", "alpha"))).toBe(true);
    for (let i = 0; i < 10; i++) {
      expect(log.shouldLog(record(undefined))).toBe(true);
      expect(log.shouldLog(record("MODEL_NOT_FOUND", "alpha", 5))).toBe(true);
      expect(log.shouldLog(record("UPSTREAM_UNAVAILABLE", "alpha", 14))).toBe(true);
    }
  });

  it("flush() writes what is owed at once; interval 0 logs every refusal", () => {
    const summaries: RefusalSummary[] = [];
    const log = createRefusalLog(10_000, (s) => summaries.push(s));
    log.shouldLog(record("UNAUTHENTICATED", "", 16));
    log.shouldLog(record("UNAUTHENTICATED", "", 16));
    log.shouldLog(record("RATE_LIMITED"));
    log.flush();
    expect(summaries).toEqual([{ tenant: "", code: 16, reason: "UNAUTHENTICATED", suppressed: 1, intervalMs: 10_000 }]);
    vi.advanceTimersByTime(60_000);
    expect(summaries).toHaveLength(1);

    const every = createRefusalLog(0, () => {});
    for (let i = 0; i < 10; i++) expect(every.shouldLog(record("RATE_LIMITED"))).toBe(true);
  });
});
