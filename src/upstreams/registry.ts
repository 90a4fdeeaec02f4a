import type { z } from "zod";
import type { CapabilityName, UpstreamConfig } from "../config/schema.js";
import type { Upstream, UpstreamKind } from "../core/upstream.js";
import { mockKind } from "./mock/mock-upstream.js";
import { anthropicKind } from "./anthropic/anthropic-upstream.js";
import { openaiKind } from "./openai/openai-upstream.js";
import { tfservingKind } from "./tfserving/tfserving-upstream.js";
import { infergateKind } from "./infergate/infergate-upstream.js";
import { kserveKind } from "./kserve/kserve-upstream.js";
import { geminiKind } from "./gemini/gemini-upstream.js";
import { bedrockKind } from "./bedrock/bedrock-upstream.js";

/**
 * An upstream kind as the registry lists it, its option types hidden (the kinds differ in them;
 * one record holds one type). Made by `registered`, which keeps each kind's parsed options with
 * that kind's own adapter.
 */
export interface RegisteredKind {
  readonly capabilities: readonly CapabilityName[];
  /** The calls of a model whose config lists none (UpstreamKind.defaultCapabilities). */
  readonly defaultCapabilities: readonly CapabilityName[];
  readonly needsEndpoints: boolean;
  readonly optionsSchema: z.ZodType<unknown>;
  readonly modelOptionsSchema: z.ZodType<unknown> | undefined;
  /**
   * Parses one configured upstream's `options` (validated at config load) and gives the maker of
   * its adapters, called once per endpoint with that endpoint's config.
   */
  adapters(config: UpstreamConfig): (endpoint: UpstreamConfig) => Upstream;
}

/**
 * Hides a kind's option types: the one place they are erased. The adapter, an
 * `Upstream<ModelOptions>`, is handed on as an `Upstream` of unknown model options; its calls
 * still get only what its own kind parsed, since the router pairs each model's parsed options
 * with the upstream of the same configured kind (parseModelOptions, src/gateway/router.ts).
 */
function registered<Options, ModelOptions>(kind: UpstreamKind<Options, ModelOptions>): RegisteredKind {
  return {
    capabilities: kind.capabilities,
    defaultCapabilities: kind.defaultCapabilities ?? kind.capabilities.filter((c) => c !== "embed"),
    needsEndpoints: kind.needsEndpoints,
    optionsSchema: kind.optionsSchema,
    modelOptionsSchema: kind.modelOptionsSchema,
    adapters(config) {
      const options = kind.optionsSchema.parse(config.options);
      return (endpoint) => {
        const adapter: Upstream = kind.create(endpoint, options);
        return adapter;
      };
    },
  };
}

/**
 * Every upstream kind this build can reach, by the name config uses. The config schema's
 * `upstreamKinds` lists the same names; a kind missing here is a compile error there.
 */
export const upstreamKindRegistry: Readonly<Record<UpstreamConfig["kind"], RegisteredKind>> = {
  mock: registered(mockKind),
  anthropic: registered(anthropicKind),
  openai: registered(openaiKind),
  tfserving: registered(tfservingKind),
  infergate: registered(infergateKind),
  kserve: registered(kserveKind),
  gemini: registered(geminiKind),
  bedrock: registered(bedrockKind),
};

/** A model's options as its kind parses them (validated at config load). */
export function parseModelOptions(kind: UpstreamConfig["kind"], options: Record<string, unknown>): unknown {
  const schema = upstreamKindRegistry[kind].modelOptionsSchema;
  return schema === undefined ? options : schema.parse(options);
}
