import { Code } from "@connectrpc/connect";
import { GatewayError } from "../../core/gateway-error.js";
import type { Logger } from "../../observability/logger.js";
import { UpstreamFailure } from "../../upstreams/http/http-errors.js";

/** The codes that mean the gateway or an upstream failed, not the caller. */
const serverSide = new Set([Code.Unavailable, Code.Internal, Code.Unknown, Code.DataLoss, Code.DeadlineExceeded]);

/**
 * What the drain and call record steps do with a call's failure besides answering with it:
 * server-side failures go to the log with their internal cause (upstream status and body, which
 * the caller never sees); anything that is not a GatewayError is a bug, logged as one. Returns the
 * error, to be thrown on.
 */
export function failureLog(log: Logger | undefined): (err: unknown) => unknown {
  if (log === undefined) return (err) => err;
  return (err) => {
    if (err instanceof GatewayError && serverSide.has(err.code)) {
      const cause = err.cause;
      log.warn(
        {
          code: Code[err.code],
          reason: err.reason,
          ...err.metadata,
          cause: cause instanceof Error ? cause.message : cause === undefined ? undefined : String(cause),
          upstreamStatus: cause instanceof UpstreamFailure ? cause.status : undefined,
          upstreamBody: cause instanceof UpstreamFailure ? cause.bodySnippet : undefined,
        },
        err.message,
      );
    } else if (!(err instanceof GatewayError)) {
      log.error({ err }, "unexpected error");
    }
    return err;
  };
}
