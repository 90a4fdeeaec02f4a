import { describe, expect, it } from "vitest";
import { defaultHeapGrowingPercent, tuneHeap } from "../../src/server/heap-tuning.js";

describe("tuneHeap (INFERGATE_HEAP_GROWING_PERCENT)", () => {
  it("keeps V8's own heuristics for 0 (the default)", () => {
    expect(tuneHeap({ INFERGATE_HEAP_GROWING_PERCENT: "0" })).toBe(0);
  });

  it("applies the default when unset or empty, and a whole number when given", () => {
    expect(tuneHeap({})).toBe(defaultHeapGrowingPercent);
    expect(tuneHeap({ INFERGATE_HEAP_GROWING_PERCENT: "" })).toBe(defaultHeapGrowingPercent);
    expect(defaultHeapGrowingPercent).toBe(0);
    expect(tuneHeap({ INFERGATE_HEAP_GROWING_PERCENT: "40" })).toBe(40);
  });

  it.each(["abc", "-1", "2.5", "1001"])("refuses %j with a message naming the variable", (v) => {
    expect(tuneHeap({ INFERGATE_HEAP_GROWING_PERCENT: v })).toMatch(/^INFERGATE_HEAP_GROWING_PERCENT must be a whole number from 0 to 1000/);
  });
});
