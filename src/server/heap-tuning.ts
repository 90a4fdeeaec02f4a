import { setFlagsFromString } from "node:v8";

/**
 * How much V8 lets its old generation grow past what the last full collection left, in percent,
 * when INFERGATE_HEAP_GROWING_PERCENT sets it; by default (0) V8's own heuristics apply.
 *
 * A held stream allocates a little per event that waits out the gap to the next event (the
 * pending reads and writes of one event): it outlives the young generation's collections and is
 * promoted, to die in the old generation. With V8's own growing factor (1.5× to 4× the live
 * heap) that garbage piles up between rare full collections: 10,000 held streams at 10,000
 * events/s reached 1.1 GB of RSS with about 300 MB live. A smaller factor (25) keeps them near
 * 500 MB, but its frequent full collections of that live heap hold the event loop: loop delay p99
 * 36 ms → 131 ms, maximum 0.5 s → 3.9 s (docs/benchmarks.md, "Issue 16: held streams' memory").
 * So it is the operator's trade, for a process short of memory rather than of latency.
 */
export const defaultHeapGrowingPercent = 0;

/**
 * Sets V8's heap growing factor for this process from `env` (read once at start; V8 applies it
 * from its next collection on). Returns the percent set, 0 when V8's default is kept, or an
 * error message for a value that is not a whole number from 0 to 1000.
 */
export function tuneHeap(env: NodeJS.ProcessEnv): number | string {
  const given = env["INFERGATE_HEAP_GROWING_PERCENT"];
  const percent = given === undefined || given === "" ? defaultHeapGrowingPercent : Number(given);
  if (!Number.isInteger(percent) || percent < 0 || percent > 1000) {
    return "INFERGATE_HEAP_GROWING_PERCENT must be a whole number from 0 to 1000 (0: V8's default)";
  }
  if (percent > 0) setFlagsFromString(`--heap-growing-percent=${percent}`);
  return percent;
}
