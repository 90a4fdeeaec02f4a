import type { ResilienceConfig } from "../config/schema.js";

/** Chooses one endpoint (by index) among the candidates of one attempt. */
export interface LoadBalancer {
  /**
   * Picks one of `candidates` (indexes into the endpoint list, non-empty). `inFlight(i)` is the
   * number of attempts endpoint i is serving now.
   */
  pick(candidates: readonly number[], inFlight: (i: number) => number): number;
}

/**
 * Makes the balancer of one upstream. `roundRobin` is smooth weighted round robin (as nginx): over
 * any run of picks among the same candidates, each gets its weight's share, interleaved rather than
 * in bursts. `leastOutstanding` is the power of two choices: two distinct candidates drawn at
 * random, the one with fewer attempts in flight per unit of weight wins (Envoy's least request).
 */
export function createLoadBalancer(
  policy: ResilienceConfig["loadBalancing"],
  weights: readonly number[],
  random: () => number = Math.random,
): LoadBalancer {
  if (policy === "leastOutstanding") {
    return {
      pick(candidates, inFlight) {
        if (candidates.length === 1) return candidates[0]!;
        const a = Math.floor(random() * candidates.length);
        let b = Math.floor(random() * (candidates.length - 1));
        if (b >= a) b++;
        const ia = candidates[a]!;
        const ib = candidates[b]!;
        const la = inFlight(ia) / (weights[ia] ?? 1);
        const lb = inFlight(ib) / (weights[ib] ?? 1);
        return lb < la ? ib : ia;
      },
    };
  }
  const current = weights.map(() => 0);
  return {
    pick(candidates) {
      let total = 0;
      let best = candidates[0]!;
      for (const i of candidates) {
        const w = weights[i] ?? 1;
        current[i] = (current[i] ?? 0) + w;
        total += w;
        if (current[i]! > current[best]!) best = i;
      }
      current[best] = current[best]! - total;
      return best;
    },
  };
}
