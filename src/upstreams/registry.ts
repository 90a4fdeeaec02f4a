import type { UpstreamConfig } from "../config/schema.js";
import { mockKind } from "./mock/mock-upstream.js";
import { anthropicKind } from "./anthropic/anthropic-upstream.js";
import type { Upstream, UpstreamKind } from "./upstream.js";

/**
 * Every upstream kind this build can reach, by the name config uses. The config schema's
 * `upstreamKinds` lists the same names; a kind missing here is a compile error there.
 */
export const upstreamKindRegistry: Record<UpstreamConfig["kind"], UpstreamKind<unknown>> = {
  mock: mockKind as UpstreamKind<unknown>,
  anthropic: anthropicKind as UpstreamKind<unknown>,
};

/** A model's options as its kind parses them (validated at config load). */
export function parseModelOptions(kind: UpstreamConfig["kind"], options: Record<string, unknown>): unknown {
  const schema = upstreamKindRegistry[kind].modelOptionsSchema;
  return schema === undefined ? options : schema.parse(options);
}

/** Makes the adapter for one configured upstream (its options validated at config load). */
export function createUpstream(config: UpstreamConfig): Upstream {
  const kind = upstreamKindRegistry[config.kind];
  return kind.create(config, kind.optionsSchema.parse(config.options));
}
