/**
 * Full-jitter exponential backoff (AWS Architecture Blog, "Exponential Backoff And Jitter"): the
 * n-th retry (n from 1) waits a uniformly random time in [0, min(maxMs, baseMs × 2^(n-1))), which
 * spreads the retries of many callers that failed together.
 */
export function fullJitterBackoff(retry: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.max(0, retry - 1));
  return Math.floor(random() * ceiling);
}
