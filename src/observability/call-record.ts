import type { Rpc } from "../core/rpc.js";

/**
 * What happened in one call, reported once when it ends: the source of the per-call log line and
 * of the request metrics. Holds no prompt, completion or secret.
 */
export interface CallRecord {
  readonly rpc: Rpc;
  readonly requestId: string;
  readonly tenant: string;
  /** The model asked for ("" for ListModels). */
  readonly model: string;
  /** The configured upstream that served it, when one was reached. */
  readonly upstream: string | undefined;
  /** The endpoint of the last upstream attempt (URL without credentials), when there was one. */
  readonly endpoint: string | undefined;
  /** Upstream attempts this call made, retries and fallbacks included (0: cache hit, coalesced, refused). */
  readonly attempts: number;
  /** hit | miss | coalesced | bypass, when the cache was consulted. */
  readonly cache: string | undefined;
  /** The gRPC status code; 0 is OK. */
  readonly code: number;
  /** The stable reason of a failure. */
  readonly reason: string | undefined;
  readonly latencyMs: number;
  /** Generate only: time to the first event. */
  readonly ttftMs: number | undefined;
  /** The answer's usage (proto/infergate/v1/chat.proto, Usage); 0 when it has none. */
  readonly promptTokens: number;
  readonly completionTokens: number;
  /** Of promptTokens, those the provider read from its prompt cache. */
  readonly cachedPromptTokens: number;
  /** Of promptTokens, those the provider wrote to its prompt cache. */
  readonly cacheCreationTokens: number;
  /** Of completionTokens, those the model spent reasoning. */
  readonly reasoningTokens: number;
  /**
   * Refused from its bytes, before it was decoded and its key read: not a message of its method
   * (MALFORMED_REQUEST) or over server.requestLimits (INVALID_ARGUMENT). Anyone can send these
   * without a key, so their lines are sampled as the refusals at the door are (refusal-log.ts).
   */
  readonly undecoded?: true | undefined;
}

/** Receives every finished call (log, metrics). */
export type CallObserver = (record: CallRecord) => void;
