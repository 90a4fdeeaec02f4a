import type { UpstreamConfig } from "../config/schema.js";
import { mockKind } from "./mock/mock-upstream.js";
import { anthropicKind } from "./anthropic/anthropic-upstream.js";
import { openaiKind } from "./openai/openai-upstream.js";
import { tfservingKind } from "./tfserving/tfserving-upstream.js";
import { infergateKind } from "./infergate/infergate-upstream.js";
import { kserveKind } from "./kserve/kserve-upstream.js";
import type { Upstream, UpstreamKind } from "./upstream.js";
import { createResilientUpstream } from "../resilience/resilient-upstream.js";

/**
 * Every upstream kind this build can reach, by the name config uses. The config schema's
 * `upstreamKinds` lists the same names; a kind missing here is a compile error there.
 */
export const upstreamKindRegistry: Record<UpstreamConfig["kind"], UpstreamKind<unknown>> = {
  mock: mockKind as UpstreamKind<unknown>,
  anthropic: anthropicKind as UpstreamKind<unknown>,
  openai: openaiKind as UpstreamKind<unknown>,
  tfserving: tfservingKind as UpstreamKind<unknown>,
  infergate: infergateKind as UpstreamKind<unknown>,
  kserve: kserveKind as UpstreamKind<unknown>,
};

/** A model's options as its kind parses them (validated at config load). */
export function parseModelOptions(kind: UpstreamConfig["kind"], options: Record<string, unknown>): unknown {
  const schema = upstreamKindRegistry[kind].modelOptionsSchema;
  return schema === undefined ? options : schema.parse(options);
}

/**
 * Makes one configured upstream (its options validated at config load): one adapter instance per
 * endpoint behind the resilience wrapper (breakers, load balancing, retries; src/resilience).
 */
export function createUpstream(config: UpstreamConfig): Upstream {
  const kind = upstreamKindRegistry[config.kind];
  const options = kind.optionsSchema.parse(config.options);
  return createResilientUpstream(config, (one) => kind.create(one, options));
}
