/**
 * Cost arithmetic (src/observability/cost.ts) and the config it reads (pricing, models[].price):
 * every kind of token priced once at its own rate, exact decimal sums, the defaults of the parts.
 */
import { describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config/load-config.js";
import type { ModelPrice } from "../../src/config/schema.js";
import { callCost, callCostNanos, type CostUsage, formatCost } from "../../src/observability/cost.js";

/** A model's price as the config parses it (defaults applied), from its YAML fields. */
function price(fields: string): ModelPrice {
  const c = parseConfig(`upstreams: [{name: mock, kind: mock}]\nmodels: [{name: m, upstream: mock, price: {${fields}}}]\n`, "t", {});
  return c.models[0]!.price!;
}

const usage = (u: Partial<CostUsage>): CostUsage => ({
  promptTokens: 0,
  completionTokens: 0,
  cachedPromptTokens: 0,
  cacheCreationTokens: 0,
  reasoningTokens: 0,
  ...u,
});

describe("callCost", () => {
  // gpt-4o-like: 2.50 in, 1.25 cached, 10 out; an o-series model with reasoning; Claude with cache writes.
  const gpt = "inputPerMTok: 2.5, cachedInputPerMTok: 1.25, outputPerMTok: 10";
  it.each([
    // [what, price fields, usage, embed, expected cost]
    ["no tokens, no per-request price", gpt, {}, false, 0],
    ["plain input and output", gpt, { promptTokens: 1000, completionTokens: 500 }, false, 0.0075],
    // OpenAI's usage-details scenario (test/fakes/openai-fake.ts): 2006 prompt of which 1920 cached, 198 completion of which 192 reasoning.
    // 86 × 2.5 + 1920 × 1.25 + 198 × 10 (reasoning defaults to output) = 215 + 2400 + 1980 = 4595 µ-units.
    ["cached prompt tokens at the cached rate", gpt, { promptTokens: 2006, cachedPromptTokens: 1920, completionTokens: 198, reasoningTokens: 192 }, false, 0.004595],
    // 86 × 2.5 + 1920 × 1.25 + 6 × 10 + 192 × 40 = 215 + 2400 + 60 + 7680 = 10355.
    [
      "reasoning tokens at their own rate",
      `${gpt}, reasoningPerMTok: 40`,
      { promptTokens: 2006, cachedPromptTokens: 1920, completionTokens: 198, reasoningTokens: 192 },
      false,
      0.010355,
    ],
    // Anthropic's cache-usage scenario: 10 fresh + 2048 read + 1500 written prompt tokens, 40 out.
    // 10 × 3 + 2048 × 0.3 + 1500 × 3.75 + 40 × 15 = 30 + 614.4 + 5625 + 600 = 6869.4.
    [
      "Anthropic cache creation at the cache-write rate",
      "inputPerMTok: 3, cachedInputPerMTok: 0.3, cacheCreationPerMTok: 3.75, outputPerMTok: 15",
      { promptTokens: 3558, cachedPromptTokens: 2048, cacheCreationTokens: 1500, completionTokens: 40 },
      false,
      0.0068694,
    ],
    // The parts default to the whole they belong to: the same as 3558 fresh prompt tokens.
    ["cache parts default to the input price", "inputPerMTok: 3, outputPerMTok: 15", { promptTokens: 3558, cachedPromptTokens: 2048, cacheCreationTokens: 1500, completionTokens: 40 }, false, 0.011274],
    ["per request only", "perRequest: 0.002", { promptTokens: 1000, completionTokens: 1000 }, false, 0.002],
    ["per request on top of tokens", `${gpt}, perRequest: 0.001`, { promptTokens: 1000, completionTokens: 500 }, false, 0.0085],
    // Embed: per 1,000 tokens instead of per million input tokens.
    ["embeddings per 1k tokens", "inputPerMTok: 1000, embeddingPer1kTokens: 0.0001", { promptTokens: 2500 }, true, 0.00025],
    ["embeddings without a per-1k price use the input price", "inputPerMTok: 0.02", { promptTokens: 2500 }, true, 0.00005],
    ["the per-1k price is for Embed only", "inputPerMTok: 0.02, embeddingPer1kTokens: 5", { promptTokens: 2500 }, false, 0.00005],
    // A part larger than its total is cut to it: never a negative fresh count, never counted twice.
    // 8 cached × 0.5 + 2 (of 8) written × 1 + 4 (of 9) reasoning × 4 = 22.
    ["parts cut to their totals", "inputPerMTok: 1, cachedInputPerMTok: 0.5, outputPerMTok: 2, reasoningPerMTok: 4", { promptTokens: 10, cachedPromptTokens: 8, cacheCreationTokens: 8, completionTokens: 4, reasoningTokens: 9 }, false, 0.000022],
    // Exact decimals: 0.1 + 0.2 per token summed as whole pico-units, not as doubles.
    ["exact decimal sum", "inputPerMTok: 100000, outputPerMTok: 200000", { promptTokens: 1, completionTokens: 1 }, false, 0.3],
    // Below a nano-unit: 1 token at 0.0004 per MTok is 4e-10, rounded half up to 0; 2 tokens, 8e-10 → 1e-9.
    ["rounded to 1e-9 (down)", "inputPerMTok: 0.0004", { promptTokens: 1 }, false, 0],
    ["rounded to 1e-9 (up)", "inputPerMTok: 0.0004", { promptTokens: 2 }, false, 1e-9],
    ["a free model costs 0", "inputPerMTok: 0", { promptTokens: 5000, completionTokens: 5000 }, false, 0],
  ])("%s", (_what, fields, u, embed, expected) => {
    expect(callCost(price(fields), usage(u), embed)).toBe(expected);
  });

  it("stays exact at the largest counts a Usage can hold", () => {
    const max = 2 ** 32 - 1;
    const p = price("inputPerMTok: 1000000, outputPerMTok: 1000000");
    // (2^32 - 1) × 2 tokens at 1 per token.
    expect(callCostNanos(p, usage({ promptTokens: max, completionTokens: max }), false)).toBe(BigInt(max) * 2n * 1_000_000_000n);
  });
});

describe("formatCost", () => {
  it.each([
    [0.000123, "USD", "0.000123 USD"],
    [0, "EUR", "0 EUR"],
    [1e-9, "USD", "0.000000001 USD"],
    [12.5, "USD", "12.5 USD"],
    [100, "JPY", "100 JPY"],
    [undefined, "USD", "unpriced"],
  ])("%s %s → %s", (cost, currency, expected) => {
    expect(formatCost(cost, currency)).toBe(expected);
  });
});

describe("config", () => {
  const base = "upstreams: [{name: mock, kind: mock}]\n";
  it("defaults the currency to USD and leaves models unpriced", () => {
    const c = parseConfig(`${base}models: [{name: m, upstream: mock}]\n`, "t", {});
    expect(c.pricing.currency).toBe("USD");
    expect(c.models[0]!.price).toBeUndefined();
  });
  it("fills the parts' prices from the input and output prices", () => {
    expect(price("inputPerMTok: 3, outputPerMTok: 15")).toEqual({
      inputPerMTok: 3,
      cachedInputPerMTok: 3,
      cacheCreationPerMTok: 3,
      outputPerMTok: 15,
      reasoningPerMTok: 15,
      perRequest: 0,
      embeddingPer1kTokens: undefined,
    });
  });
  it.each([
    ["pricing: {currency: usd}", "pricing.currency:"],
    ["pricing: {currency: DOLLARS}", "pricing.currency:"],
    ["models: [{name: m, upstream: mock, price: {inputPerMTok: -1}}]", "models[0].price.inputPerMTok:"],
    ["models: [{name: m, upstream: mock, price: {perRequest: -0.01}}]", "models[0].price.perRequest:"],
    ["models: [{name: m, upstream: mock, price: {outputPerMTok: abc}}]", "models[0].price.outputPerMTok:"],
    ["models: [{name: m, upstream: mock, price: {embeddingPer1kTokens: 2000000}}]", "models[0].price.embeddingPer1kTokens:"],
    ["models: [{name: m, upstream: mock, price: {inputPerMtok: 1}}]", "models[0].price:"],
    ["models: [{name: m, upstream: mock, price: {}}]", "models[0].price:"],
  ])("refuses %s (naming %s)", (yaml, path) => {
    const models = yaml.startsWith("models") ? "" : "models: [{name: m, upstream: mock}]\n";
    expect(() => parseConfig(`${base}${models}${yaml}\n`, "t", {})).toThrow(path);
  });
});
