/**
 * The `Usage` of an answer from the counts an upstream's JSON gives, for the translators of the
 * JSON wire formats (openai, anthropic): one definition of what a count is and of how the parts
 * (cached, cache-creation, reasoning) sit inside the totals (proto/infergate/v1/chat.proto, Usage).
 */
import { create } from "@bufbuild/protobuf";
import { type Usage, UsageSchema } from "../../gen/infergate/v1/chat_pb.js";

const maxUint32 = 0xffff_ffff;

/** A token count from JSON: a finite number above 0, floored and at most 2³²−1; anything else (missing, null, a string, NaN, negative) is 0. */
export function tokenCount(v: unknown): number {
  return typeof v === "number" && Number.isFinite(v) && v > 0 ? Math.min(Math.floor(v), maxUint32) : 0;
}

/** An answer's token counts, each already read with tokenCount (prompt may be a sum of such counts). */
export interface TokenCounts {
  readonly prompt: number;
  readonly completion: number;
  /** Of prompt, read from the provider's prompt cache. */
  readonly cachedPrompt?: number;
  /** Of prompt, written to the provider's prompt cache. */
  readonly cacheCreation?: number;
  /** Of completion, spent reasoning. */
  readonly reasoning?: number;
}

/**
 * The Usage of these counts. Prompt, completion and total (prompt + completion) are at most
 * 2³²−1, the most a uint32 holds. The parts are parts:
 * an upstream claiming more cached and cache-creation tokens than the prompt has, or more
 * reasoning tokens than the completion, is cut down to the total it is part of (cache reads
 * first), so that the counts of each kind (the metrics' `kind` label) never go below 0.
 */
export function usageFromCounts(c: TokenCounts): Usage {
  const promptTokens = Math.min(c.prompt, maxUint32);
  const completionTokens = Math.min(c.completion, maxUint32);
  const cachedPromptTokens = Math.min(c.cachedPrompt ?? 0, promptTokens);
  const cacheCreationTokens = Math.min(c.cacheCreation ?? 0, promptTokens - cachedPromptTokens);
  return create(UsageSchema, {
    promptTokens,
    completionTokens,
    totalTokens: Math.min(promptTokens + completionTokens, maxUint32),
    cachedPromptTokens,
    cacheCreationTokens,
    reasoningTokens: Math.min(c.reasoning ?? 0, completionTokens),
  });
}
