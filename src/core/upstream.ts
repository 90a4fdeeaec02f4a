import type { z } from "zod";
import type {
  ChatRequest,
  ChatResponse,
  EmbedRequest,
  EmbedResponse,
  EndpointStatus,
  GenerateRequest,
  GenerateResponse,
  ModelState,
  PredictRequest,
  PredictResponse,
} from "../../gen/infergate/v1/inference_service_pb.js";
import type { CapabilityName, UpstreamConfig } from "../config/schema.js";

/** Chat and Generate carry the same fields (same numbers), so adapters take either. */
export type ChatInput = ChatRequest | GenerateRequest;

/** A prompt's token count (Upstream.countTokens), the model's own. */
export interface TokenCount {
  readonly inputTokens: number;
}

/**
 * One upstream call as an adapter sees it. The gateway has validated the request; the adapter
 * only translates and does I/O. It must stop when `signal` aborts (the caller went away or the
 * deadline passed) and never wait past `deadline`.
 */
export interface UpstreamCall<Req, ModelOptions = unknown> {
  /** The validated request; `model` still holds the name the caller gave. */
  readonly request: Req;
  /** The model's name at the upstream. */
  readonly upstreamModel: string;
  /** The model's `options` from config, as the kind's `modelOptionsSchema` parsed them. */
  readonly modelOptions: ModelOptions;
  /** Aborted when the caller cancels or the deadline passes. */
  readonly signal: AbortSignal;
  /** The caller's deadline, in epoch milliseconds. */
  readonly deadline: number;
  /** The caller's own request headers (see CallContext.headers); forward only an allowlist. */
  readonly headers: Readonly<Record<string, string>>;
}

/**
 * The one interface every upstream kind implements. Adapters know nothing of
 * breakers, caches or retries; those wrap them in src/resilience and src/cache. Answers leave
 * `model`, `model_version`, `upstream` and `cached` to the gateway, which fills them in.
 * `ModelOptions` is what the kind's `modelOptionsSchema` parses; above the registry
 * (src/upstreams/registry.ts) every upstream is an `Upstream` of unknown model options.
 */
export interface Upstream<ModelOptions = unknown> {
  /** The configured name of this upstream. */
  readonly name: string;
  /** The upstream kind, e.g. "mock" or "openai". */
  readonly kind: string;
  predict?(call: UpstreamCall<PredictRequest, ModelOptions>): Promise<PredictResponse>;
  chat?(call: UpstreamCall<ChatInput, ModelOptions>): Promise<ChatResponse>;
  /**
   * Streams the answer: text and tool-call deltas, then exactly one final event last. A stream
   * that ends without a final event, or throws, has failed.
   */
  generate?(call: UpstreamCall<ChatInput, ModelOptions>): AsyncIterable<GenerateResponse>;
  /**
   * Embeds the request's inputs (`texts` or `tokens`, never both, never empty): the gateway has
   * validated them, taken out the ones its cache answers and split the rest into batches of at
   * most the model's `embedding.maxBatch`. The answer has one embedding per input, in input order,
   * each with `index` its position in this request and its vector in `fp32` (packed little-endian
   * FP32; src/wire/fp32.ts), `values` left empty; `dimensions` the vectors' length; `usage` the
   * upstream's token count (prompt_tokens, 0 when it tells none). The gateway gives the caller the
   * encoding it asked for.
   */
  embed?(call: UpstreamCall<EmbedRequest, ModelOptions>): Promise<EmbedResponse>;
  /**
   * The number of input tokens the request's prompt (messages, tools, tool choice) comes to at
   * this model, without generating, as the model itself counts them (the anthropic kind asks its
   * count_tokens endpoint; the mock's count is the one its answers report). Kinds that cannot
   * count exactly leave it out (no estimate: docs/anthropic-ingress.md); the gateway then answers
   * UNIMPLEMENTED.
   */
  countTokens?(call: UpstreamCall<ChatInput, ModelOptions>): Promise<TokenCount>;
  /**
   * What the adapter last knew of a model's readiness, from a cached probe; never a probe per
   * call. Kinds that cannot tell leave it out (reported as MODEL_STATE_UNSPECIFIED).
   */
  modelState?(upstreamModel: string): ModelState;
  /**
   * Each endpoint's circuit breaker state and ejection, for ListModels; with `upstreamModel`, as
   * that model sees them (its own breaker there included). The resilience wrapper
   * (src/resilience/resilient-upstream.ts) implements it; adapters leave it out.
   */
  endpointStatus?(upstreamModel?: string): EndpointStatus[];
  /** Releases connections and timers; called once at shutdown. */
  close(): Promise<void>;
}

/**
 * What the registry knows of one upstream kind: its config schemas and the adapter they type.
 * `Options` is what `optionsSchema` parses, `ModelOptions` what `modelOptionsSchema` parses; the
 * adapter's calls get the latter as `UpstreamCall.modelOptions`, typed, without a cast.
 */
export interface UpstreamKind<Options, ModelOptions = unknown> {
  /** The calls this kind can answer. */
  readonly capabilities: readonly CapabilityName[];
  /**
   * The calls a model of this kind answers when its config lists none; default `capabilities`
   * without `embed` (an embedding model is one the config says is: capabilities: [embed]).
   */
  readonly defaultCapabilities?: readonly CapabilityName[];
  /** Whether config must list at least one endpoint. */
  readonly needsEndpoints: boolean;
  /** The schema of the kind's `options` block in config. */
  readonly optionsSchema: z.ZodType<Options>;
  /**
   * The schema of a model's `options` block; kinds without per-model options leave it out (config
   * load then refuses a model's non-empty `options`, src/config/load-config.ts).
   */
  readonly modelOptionsSchema?: z.ZodType<ModelOptions>;
  /** Makes the adapter for one configured upstream. */
  create(config: UpstreamConfig, options: Options): Upstream<ModelOptions>;
}
