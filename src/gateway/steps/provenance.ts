import { randomUUID } from "node:crypto";
import type { GenerateResponse } from "../../../gen/infergate/v1/inference_service_pb.js";
import type { ModelRoute } from "../../core/model-route.js";

/** Response header naming the model and upstream that served the answer: `<model>/<upstream>`. */
export const servedByHeader = "infergate-served-by";

/** Fills in which model, version and upstream answered; adapters leave these to the gateway. */
export function stampProvenance<T extends { id: string; model: string; modelVersion: string; upstream: string }>(route: ModelRoute, answer: T): T {
  answer.model = route.name;
  answer.modelVersion = route.version;
  answer.upstream = route.upstream.name;
  if (answer.id === "") {
    answer.id = randomUUID();
  }
  return answer;
}

/**
 * The first event of each live stream → `<model>/<upstream>` that produced it. Joiners of a
 * coalesced stream receive the very same event objects, so they learn it too: the fallbacks step
 * marks the event, the cache step (outside the flight every joiner shares) reads it.
 */
const streamOrigin = new WeakMap<GenerateResponse, string>();

/** Marks `event` as the first of a stream served by `route`. */
export function markOrigin(event: GenerateResponse, route: ModelRoute): void {
  streamOrigin.set(event, `${route.name}/${route.upstream.name}`);
}

/** `<model>/<upstream>` of the stream `event` began, if it began one. */
export function originOf(event: GenerateResponse): string | undefined {
  return streamOrigin.get(event);
}
