import type { ModelPrice } from "../config/schema.js";

/**
 * The token counts a call's cost is computed from: an answer's complete usage
 * (proto/infergate/v1/chat.proto, Usage). The cached and cache-creation tokens are parts of
 * `promptTokens`, the reasoning tokens a part of `completionTokens`.
 */
export interface CostUsage {
  readonly promptTokens: number;
  readonly completionTokens: number;
  readonly cachedPromptTokens: number;
  readonly cacheCreationTokens: number;
  readonly reasoningTokens: number;
}

/**
 * What one call answered by the upstream cost at `price`, in its currency, rounded to 1e-9 (a
 * nano-unit). Each kind of token is priced once, at its own rate: the prompt tokens neither read
 * from nor written to the provider's prompt cache at `inputPerMTok`, the cached ones at
 * `cachedInputPerMTok`, those written to the cache at `cacheCreationPerMTok`, the completion
 * tokens that are not reasoning at `outputPerMTok` and the reasoning ones at `reasoningPerMTok`;
 * plus `perRequest`. An Embed (`embed`) with `embeddingPer1kTokens` prices all its prompt tokens
 * at that rate instead. A part larger than the total it belongs to is cut to it (as the tokens
 * metric does, src/observability/metrics.ts), so no token is counted twice.
 *
 * The arithmetic is exact: each rate is taken as a whole number of pico-units (1e-12 of the
 * currency) per token — a price per million tokens to 1e-6, per 1,000 tokens to 1e-9, per
 * request to 1e-12, finer digits rounded — the products are summed as BigInts, and the sum is
 * rounded half up to nano-units once, at the end (so the cost of a call does not depend on the
 * order of its parts, and 0.1 + 0.2 is 0.3).
 */
export function callCost(price: ModelPrice, usage: CostUsage, embed: boolean): number {
  return nanosToNumber(callCostNanos(price, usage, embed));
}

/** callCost in whole nano-units (1e-9 of the currency), for sums without rounding errors. */
export function callCostNanos(price: ModelPrice, usage: CostUsage, embed: boolean): bigint {
  const prompt = whole(usage.promptTokens);
  let picos = picosPerToken(price.perRequest, 1e12);
  if (embed && price.embeddingPer1kTokens !== undefined) {
    picos += BigInt(prompt) * picosPerToken(price.embeddingPer1kTokens, 1e9);
  } else {
    const cached = Math.min(whole(usage.cachedPromptTokens), prompt);
    const creation = Math.min(whole(usage.cacheCreationTokens), prompt - cached);
    picos += BigInt(prompt - cached - creation) * picosPerToken(price.inputPerMTok, 1e6);
    picos += BigInt(cached) * picosPerToken(price.cachedInputPerMTok, 1e6);
    picos += BigInt(creation) * picosPerToken(price.cacheCreationPerMTok, 1e6);
  }
  const completion = whole(usage.completionTokens);
  const reasoning = Math.min(whole(usage.reasoningTokens), completion);
  picos += BigInt(completion - reasoning) * picosPerToken(price.outputPerMTok, 1e6);
  picos += BigInt(reasoning) * picosPerToken(price.reasoningPerMTok, 1e6);
  // Half up: picos are never negative.
  return (picos + 500n) / 1000n;
}

/** A price in pico-units (1e-12 of the currency) per token; `scale` is 1e12 over its unit's tokens. */
function picosPerToken(amount: number, scale: number): bigint {
  return BigInt(Math.round(amount * scale));
}

/** A token count as a whole number ≥ 0 (usage counts are uint32; anything else is read as 0). */
function whole(n: number): number {
  return Number.isSafeInteger(n) && n > 0 ? n : 0;
}

/** Nano-units as a number of the currency: the double nearest to the exact decimal. */
export function nanosToNumber(nanos: bigint): number {
  return Number(nanos) / 1e9;
}

/**
 * A cost as the `infergate-cost` header and trailer give it: the amount in plain decimal notation,
 * at most nine decimals and no trailing zeros, then the currency (`0.000123 USD`, `0 USD`), or
 * `unpriced` when the model has no price.
 */
export function formatCost(cost: number | undefined, currency: string): string {
  if (cost === undefined) return "unpriced";
  return `${decimal(cost)} ${currency}`;
}

/** A cost (≥ 0, at most nine decimals) in plain decimal notation, never exponential. */
export function decimal(cost: number): string {
  const fixed = cost.toFixed(9);
  const trimmed = fixed.replace(/\.?0+$/, "");
  return trimmed === "" ? "0" : trimmed;
}
