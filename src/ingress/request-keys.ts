/**
 * The first check of every foreign API's request body (src/ingress/openai, anthropic, responses):
 * each key is one the ingress maps onto the core, or an inert one sent with the value that asks for
 * nothing; any other key is a 400 naming it, never dropped silently (docs/architecture.md,
 * "Adding an ingress").
 */
import { Code } from "@connectrpc/connect";
import { GatewayError, invalidArgument } from "../core/gateway-error.js";
import { isObject } from "../upstreams/json-value.js";

/**
 * Keys of an API that the contract cannot carry, accepted only with the value that asks for
 * nothing (what the API does without them), so that clients which always send them still work.
 */
export type InertKeys = ReadonlyMap<string, { accepts(v: unknown): boolean; problem: string }>;

/**
 * The body as an object whose keys are all `mapped`, null, or inert with an accepted value; else
 * INVALID_ARGUMENT naming the first other key, with its inert problem or `notSupported`.
 */
export function checkedKeys(body: unknown, mapped: ReadonlySet<string>, inert: InertKeys, notSupported: string): Record<string, unknown> {
  if (!isObject(body)) {
    throw new GatewayError(Code.InvalidArgument, "the body must be a JSON object");
  }
  for (const [key, v] of Object.entries(body)) {
    if (mapped.has(key) || v === null || v === undefined) continue;
    const rule = inert.get(key);
    if (rule?.accepts(v) === true) continue;
    throw invalidArgument(key, rule?.problem ?? notSupported);
  }
  return body;
}
