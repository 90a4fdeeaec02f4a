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
   * The usage is infergate's estimate, not the upstream's: a Generate stream cut off after events
   * (by the client, a failure or an oversized event) has no final event and so no usage; its
   * completionTokens are then the text and tool-call deltas given out (about a token each) and its
   * promptTokens 0, so that what it spent is charged and priced rather than nothing.
   */
  readonly usageEstimated?: true | undefined;
  /**
   * What the call cost in `currency` (src/observability/cost.ts), at the price of the model that
   * answered it (a fallback's when one did, `pricedModel`): from the usage when the upstream
   * answered (the answer's, or the estimate of a stream cut off after events), 0 when nothing went
   * upstream (a cache hit, a coalesced call, a refusal) or nothing came back (a failure). undefined:
   * that model has no price ("unpriced", never 0).
   */
  readonly cost: number | undefined;
  /** The gateway's currency (config `pricing.currency`). */
  readonly currency: string;
  /** The configured model whose price `cost` is at; undefined when the call never got a model. */
  readonly pricedModel: string | undefined;
  /**
   * Refused from its bytes, before it was decoded and its key read: not a message of its method
   * (MALFORMED_REQUEST) or over server.requestLimits (INVALID_ARGUMENT). Anyone can send these
   * without a key, so their lines are sampled as the refusals at the door are (refusal-log.ts).
   */
  readonly undecoded?: true | undefined;
  /**
   * The call's trace id (32 hex digits) when tracing is on (src/observability/tracing.ts): the
   * caller's when it sent a traceparent, also when the call was not sampled.
   */
  readonly traceId?: string | undefined;
}

/** Receives every finished call (log, metrics). */
export type CallObserver = (record: CallRecord) => void;
