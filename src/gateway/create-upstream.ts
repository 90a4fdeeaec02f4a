import type { UpstreamConfig } from "../config/schema.js";
import type { Upstream } from "../core/upstream.js";
import { createResilientUpstream } from "../resilience/resilient-upstream.js";
import { upstreamKindRegistry } from "../upstreams/registry.js";

/**
 * Makes one configured upstream (its options validated at config load): one adapter per endpoint,
 * made by its kind (src/upstreams/registry.ts), behind the resilience wrapper (breakers, load
 * balancing, retries; src/resilience/resilient-upstream.ts). Composed here, above both, since
 * resilience wraps adapters and so sits above src/upstreams/ (docs/architecture.md, "Layers").
 */
export function createUpstream(config: UpstreamConfig): Upstream {
  return createResilientUpstream(config, upstreamKindRegistry[config.kind].adapters(config));
}
