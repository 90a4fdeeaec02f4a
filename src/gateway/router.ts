import { Code } from "@connectrpc/connect";
import type { CapabilityName, Config } from "../config/schema.js";
import { parseModelOptions, upstreamKindRegistry } from "../upstreams/registry.js";
import type { Upstream } from "../core/upstream.js";
import { echoed, GatewayError, invalidArgument, Reason } from "../core/gateway-error.js";
import type { ModelRoute } from "../core/model-route.js";

const rpcNames: Record<CapabilityName, string> = { predict: "Predict", chat: "Chat", generate: "Generate", embed: "Embed" };

/** Maps model names to routes; built once from config. */
export interface Router {
  /** Finds the route for a call, or throws INVALID_ARGUMENT / NOT_FOUND / UNIMPLEMENTED. */
  resolve(model: string, capability: CapabilityName): ModelRoute;
  /** All routes, in configuration order. */
  routes(): readonly ModelRoute[];
}

/** Builds the router from validated config and the adapters made for its upstreams. */
export function createRouter(config: Config, upstreams: ReadonlyMap<string, Upstream>): Router {
  const byName = new Map<string, ModelRoute & { fallbacks: ModelRoute[] }>();
  for (const m of config.models) {
    const upstream = upstreams.get(m.upstream);
    const upstreamConfig = config.upstreams.find((u) => u.name === m.upstream);
    if (upstream === undefined || upstreamConfig === undefined) {
      throw new Error(`model ${m.name}: no upstream ${m.upstream}`);
    }
    byName.set(m.name, {
      name: m.name,
      version: m.version,
      upstream,
      upstreamModel: m.upstreamModel ?? m.name,
      capabilities: m.capabilities ?? upstreamKindRegistry[upstreamConfig.kind].defaultCapabilities,
      modelOptions: parseModelOptions(upstreamConfig.kind, m.options),
      cache: m.cache,
      embedding: m.embedding,
      price: m.price,
      currency: config.pricing.currency,
      fallbacks: [],
    });
  }
  for (const m of config.models) {
    const route = byName.get(m.name)!;
    for (const f of m.fallbacks) {
      const fallback = byName.get(f);
      if (fallback === undefined) {
        throw new Error(`model ${m.name}: no fallback model ${f}`);
      }
      route.fallbacks.push(fallback);
    }
  }
  const all = [...byName.values()];
  return {
    resolve(model, capability) {
      if (model === "") {
        throw invalidArgument("model", "required");
      }
      const route = byName.get(model);
      if (route === undefined) {
        // The message names the model the caller asked for and nothing of the configuration.
        throw new GatewayError(Code.NotFound, `model "${echoed(model)}" is not served by this gateway (see ListModels)`, {
          reason: Reason.ModelNotFound,
          metadata: { model: echoed(model) },
        });
      }
      if (!route.capabilities.includes(capability)) {
        throw new GatewayError(Code.Unimplemented, `model "${echoed(model)}" does not support ${rpcNames[capability]}`, {
          reason: Reason.CapabilityNotSupported,
          metadata: { model: echoed(model), rpc: rpcNames[capability] },
        });
      }
      return route;
    },
    routes: () => all,
  };
}
