import { Code } from "@connectrpc/connect";
import { GatewayError, Reason } from "./gateway-error.js";

/**
 * The error of a stream that ended without its final event, which the upstream contract requires
 * last (Upstream.generate, src/core/upstream.ts): a truncated answer, never a complete one. Thrown
 * by the resilience wrapper for an attempt and by the gateway for a candidate model, with the same
 * words, so a log line reads alike from either.
 */
export function missingFinalEvent(upstream: string, sent: number): GatewayError {
  return new GatewayError(Code.Unavailable, `upstream "${upstream}" ended the stream without its final event after ${sent} events`, {
    reason: Reason.StreamTruncated,
    metadata: { upstream },
  });
}
