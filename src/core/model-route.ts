import type { CapabilityName, ModelCacheConfig, ModelEmbeddingConfig, ModelPrice } from "../config/schema.js";
import type { Upstream } from "./upstream.js";

/**
 * Everything the gateway needs to serve one model name; made from config by the router
 * (src/gateway/router.ts).
 */
export interface ModelRoute {
  readonly name: string;
  readonly version: string;
  readonly upstream: Upstream;
  readonly upstreamModel: string;
  readonly capabilities: readonly CapabilityName[];
  /** The model's options, parsed by its upstream kind: what `upstream`'s calls get. */
  readonly modelOptions: unknown;
  /** How its answers are cached. */
  readonly cache: ModelCacheConfig;
  /** The limits of its Embed calls (config `embedding`). */
  readonly embedding: ModelEmbeddingConfig;
  /** What its calls cost (config `price`); undefined: unpriced (src/observability/cost.ts). */
  readonly price: ModelPrice | undefined;
  /** The currency of `price` (config `pricing.currency`). */
  readonly currency: string;
  /**
   * The models tried in order when this one's upstream fails with a retryable error (config
   * `fallbacks`); their own fallbacks are not followed.
   */
  readonly fallbacks: readonly ModelRoute[];
}
