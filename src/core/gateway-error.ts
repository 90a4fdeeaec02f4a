import { Code } from "@connectrpc/connect";

/**
 * Stable error reasons, sent as `google.rpc.ErrorInfo.reason` (domain "infergate"). Clients in any
 * language branch on these, so a value once released never changes meaning.
 */
export const Reason = {
  InvalidArgument: "INVALID_ARGUMENT",
  /**
   * The request's bytes are not a message of the method's request type (broken protobuf wire
   * format, bad UTF-8 in a string, JSON that does not fit the schema): nothing of it was read.
   */
  MalformedRequest: "MALFORMED_REQUEST",
  ModelNotFound: "MODEL_NOT_FOUND",
  CapabilityNotSupported: "CAPABILITY_NOT_SUPPORTED",
  DeadlineExceeded: "DEADLINE_EXCEEDED",
  Cancelled: "CANCELLED",
  ShuttingDown: "SHUTTING_DOWN",
  UpstreamUnavailable: "UPSTREAM_UNAVAILABLE",
  UpstreamError: "UPSTREAM_ERROR",
  UpstreamAuth: "UPSTREAM_AUTH",
  UpstreamRateLimited: "UPSTREAM_RATE_LIMITED",
  UpstreamTimeout: "UPSTREAM_TIMEOUT",
  UpstreamBadResponse: "UPSTREAM_BAD_RESPONSE",
  /**
   * RESOURCE_EXHAUSTED: the upstream's answer (or the request sent to it) was over a message size
   * limit on the way — the upstream's `maxMessageBytes` (gRPC kinds), `http.maxResponseBytes`
   * (HTTP kinds), or the upstream's own limit. Not retried, not counted against the endpoint.
   */
  UpstreamMessageTooLarge: "UPSTREAM_MESSAGE_TOO_LARGE",
  /** RESOURCE_EXHAUSTED: the answer is larger than `server.maxMessageBytes`, so it cannot be sent to the client. */
  MessageTooLarge: "MESSAGE_TOO_LARGE",
  StreamTruncated: "STREAM_TRUNCATED",
  CircuitOpen: "CIRCUIT_OPEN",
  Overloaded: "OVERLOADED",
  RateLimited: "RATE_LIMITED",
  Unauthenticated: "UNAUTHENTICATED",
  ModelNotAllowed: "MODEL_NOT_ALLOWED",
  /** DeleteSession: no such session for this tenant (never existed, expired, or another tenant's). */
  SessionNotFound: "SESSION_NOT_FOUND",
  /** The shared session store (Redis) could not be reached: a session call cannot go on without its history. */
  SessionStoreUnavailable: "SESSION_STORE_UNAVAILABLE",
  /** The shared rate-limit store (Redis) could not be reached and `redis.rateLimits.onFailure` is `closed`. */
  RateLimiterUnavailable: "RATE_LIMITER_UNAVAILABLE",
  /**
   * RESOURCE_EXHAUSTED: the caller's key, or a group it is in, has spent a budget's limit (tokens
   * or money) for the current period (config `budgets`); metadata names the budget, the period and
   * the kind, RetryInfo the time until the period ends.
   */
  BudgetExceeded: "BUDGET_EXCEEDED",
  /** The shared budget store (Redis) could not be reached and `budgets.onRedisFailure` is `closed`. */
  BudgetStoreUnavailable: "BUDGET_STORE_UNAVAILABLE",
  Internal: "INTERNAL",
} as const;

/** One of the stable reasons above. */
export type Reason = (typeof Reason)[keyof typeof Reason];

/** The ErrorInfo domain of every infergate error. */
export const errorDomain = "infergate";

/**
 * The most characters of one caller-supplied value (a model name, a tensor or tool name, a field
 * path holding a caller's key) that infergate repeats in an error message, an error detail or a
 * log line: a longer value is cut by {@link echoed}. Issue 17: a 40,000-character model name
 * echoed whole into `grpc-message` and twice into `grpc-status-details-bin` made trailers too
 * large for HTTP/2 and wedged the caller's connection.
 */
export const maxEchoedChars = 200;

/**
 * The most characters of an error's client-facing message (a few echoed values and the text
 * around them); a GatewayError cuts a longer one. The renderers (src/server/error-rendering.ts)
 * bound the encoded error again, in bytes.
 */
export const maxErrorMessageChars = 1024;

/**
 * A caller's value as infergate repeats it: unchanged up to `max` characters (default
 * {@link maxEchoedChars}), else its start (never half a surrogate pair), "…" and its whole
 * length, `max` characters in all (so a value cut once is not cut again). The one cut of echoed
 * text: error messages and details, and the call log.
 */
export function echoed(value: string, max: number = maxEchoedChars): string {
  if (value.length <= max) return value;
  const mark = `… (${value.length} chars)`;
  let end = Math.max(0, max - mark.length);
  const code = value.charCodeAt(end - 1);
  if (code >= 0xd800 && code <= 0xdbff) end--;
  return `${value.slice(0, end)}${mark}`;
}

/** `metadata` with every value cut by {@link echoed}; the same object when none needs it. */
function echoedValues(metadata: Record<string, string>): Record<string, string> {
  let out: Record<string, string> | undefined;
  for (const k in metadata) {
    const v = metadata[k]!;
    if (v.length > maxEchoedChars) (out ??= { ...metadata })[k] = echoed(v);
  }
  return out ?? metadata;
}

/** Options of a GatewayError beyond its code and client-facing message. */
export interface GatewayErrorOptions {
  /**
   * Stable reason for ErrorInfo; defaults to the one that fits the code. Another infergate may
   * send a reason this build does not know; it passes through as a string.
   */
  reason?: Reason | (string & {});
  /** ErrorInfo metadata, e.g. `{ field: "messages[0].role" }`. Never secrets. */
  metadata?: Record<string, string>;
  /** When a retry may succeed, in milliseconds (sent as RetryInfo). */
  retryAfterMs?: number;
  /** Internal detail for logs (an upstream body, a socket error); never sent to the client. */
  cause?: unknown;
}

/**
 * The one error type of the core. Its message is safe to show the client; internal detail goes in
 * `cause`. Both ingress servers render it through `toStatus()`, so gRPC and Connect callers see the
 * same code, message and details.
 */
export class GatewayError extends Error {
  override readonly name = "GatewayError";
  readonly code: Code;
  readonly reason: Reason | (string & {});
  readonly metadata: Readonly<Record<string, string>>;
  readonly retryAfterMs: number | undefined;

  /**
   * The message is cut at {@link maxErrorMessageChars} and each metadata value at
   * {@link maxEchoedChars}, whatever the call site echoed into them (issue 17): a caller's
   * value can never make an error too large to send.
   */
  constructor(code: Code, message: string, options: GatewayErrorOptions = {}) {
    super(echoed(message, maxErrorMessageChars), options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.reason = options.reason ?? defaultReason(code);
    this.metadata = options.metadata === undefined ? {} : echoedValues(options.metadata);
    this.retryAfterMs = options.retryAfterMs;
  }
}

/**
 * An INVALID_ARGUMENT error naming the field at fault by its proto path (`inputs[0].shape`). A
 * path may hold a caller's map key (`metadata["…"]`): it is cut by {@link echoed}.
 */
export function invalidArgument(field: string, problem: string): GatewayError {
  const path = echoed(field);
  return new GatewayError(Code.InvalidArgument, `${path}: ${problem}`, {
    reason: Reason.InvalidArgument,
    metadata: { field: path },
  });
}

function defaultReason(code: Code): Reason {
  switch (code) {
    case Code.InvalidArgument:
    case Code.OutOfRange:
      return Reason.InvalidArgument;
    case Code.NotFound:
      return Reason.ModelNotFound;
    case Code.Unimplemented:
      return Reason.CapabilityNotSupported;
    case Code.DeadlineExceeded:
      return Reason.DeadlineExceeded;
    case Code.Canceled:
      return Reason.Cancelled;
    case Code.Unavailable:
      return Reason.UpstreamUnavailable;
    case Code.ResourceExhausted:
      return Reason.RateLimited;
    case Code.Internal:
    case Code.Unknown:
      return Reason.Internal;
    default:
      return Reason.UpstreamError;
  }
}

/** The status an error leaves the gateway with, independent of the ingress protocol. */
export interface ErrorStatus {
  code: Code;
  message: string;
  reason: Reason | (string & {});
  metadata: Readonly<Record<string, string>>;
  retryAfterMs: number | undefined;
}

/**
 * The single mapping from anything thrown in the core to a status. Unknown errors become INTERNAL
 * with a generic message: their text may hold internal detail and is kept for logs only.
 */
export function toStatus(err: unknown): ErrorStatus {
  const e = toGatewayError(err);
  return {
    code: e.code,
    message: e.message,
    reason: e.reason,
    metadata: e.metadata,
    retryAfterMs: e.retryAfterMs,
  };
}

/** Wraps a thrown value in a GatewayError (see toStatus). */
export function toGatewayError(err: unknown): GatewayError {
  if (err instanceof GatewayError) {
    return err;
  }
  return new GatewayError(Code.Internal, "internal error", { cause: err });
}

/** The canonical gRPC code names (as in grpc/status.h), by code. */
export const grpcCodeNames: Readonly<Record<string, Code>> = {
  CANCELLED: Code.Canceled,
  UNKNOWN: Code.Unknown,
  INVALID_ARGUMENT: Code.InvalidArgument,
  DEADLINE_EXCEEDED: Code.DeadlineExceeded,
  NOT_FOUND: Code.NotFound,
  ALREADY_EXISTS: Code.AlreadyExists,
  PERMISSION_DENIED: Code.PermissionDenied,
  RESOURCE_EXHAUSTED: Code.ResourceExhausted,
  FAILED_PRECONDITION: Code.FailedPrecondition,
  ABORTED: Code.Aborted,
  OUT_OF_RANGE: Code.OutOfRange,
  UNIMPLEMENTED: Code.Unimplemented,
  INTERNAL: Code.Internal,
  UNAVAILABLE: Code.Unavailable,
  DATA_LOSS: Code.DataLoss,
  UNAUTHENTICATED: Code.Unauthenticated,
};

/**
 * `err` with the field it names (metadata `field`, and the message's leading `field:`) renamed by
 * `rename`: an ingress naming a field by its path in its own API rather than the gateway's
 * request. Anything else, or a name `rename` keeps, is returned as it is.
 */
export function withFieldRenamed(err: unknown, rename: (field: string) => string): unknown {
  if (!(err instanceof GatewayError)) return err;
  const field = err.metadata["field"];
  if (field === undefined) return err;
  const api = rename(field);
  if (api === field) return err;
  const message = err.message.startsWith(`${field}:`) ? `${echoed(api)}${err.message.slice(field.length)}` : err.message;
  return new GatewayError(err.code, message, { reason: err.reason, metadata: { ...err.metadata, field: echoed(api) }, retryAfterMs: err.retryAfterMs, cause: err });
}
