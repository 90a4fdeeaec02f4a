/**
 * Bedrock's failures as GatewayErrors: the exceptions the AWS SDK throws for an error answer
 * (`x-amzn-errortype` and the HTTP status; `$metadata.httpStatusCode`), the exceptions a
 * ConverseStream sends as `:message-type: exception` frames after HTTP 200, and the failures to
 * reach Bedrock or to get credentials. HTTP statuses go through the one mapping of the HTTP kinds
 * (errorFromStatus, src/upstreams/http/http-errors.ts); this adds what Bedrock's exception names
 * say beyond their status. Pure: docs/upstream-bedrock.md, "Errors", has the table.
 */
import { Code } from "@connectrpc/connect";
import { GatewayError, Reason } from "../../core/gateway-error.js";
import { badResponse, errorFromNetwork, errorFromStatus, redactSecrets, snippet, UpstreamFailure } from "../http/http-errors.js";

/** What the mapping needs beyond the error. */
export interface BedrockErrorContext {
  /** The configured upstream's name. */
  readonly upstream: string;
  /** Texts that must never reach a log or a client (the static secret key, the session token). */
  readonly secrets: readonly string[];
  /** The RetryInfo delay of a ThrottlingException that carries no Retry-After (option throttlingRetryAfterMs). */
  readonly throttlingRetryAfterMs: number;
}

/** The HTTP status each exception of a ConverseStream's stream stands for (Bedrock's API reference). */
const streamExceptionStatus: Readonly<Record<string, number>> = {
  ValidationException: 400,
  ThrottlingException: 429,
  ModelStreamErrorException: 424,
  InternalServerException: 500,
  ServiceUnavailableException: 503,
};

/**
 * Exceptions whose status says less than their name: the model failed to answer (ModelErrorException,
 * ModelStreamErrorException, both 424) or is not ready yet (ModelNotReadyException, 429; the AWS
 * SDKs retry it) — UNAVAILABLE, retried, as a 5xx.
 */
const modelUnavailable = new Set(["ModelErrorException", "ModelStreamErrorException", "ModelNotReadyException"]);

/** The parts of an AWS SDK exception read here (ServiceException of @smithy/smithy-client). */
interface SdkError {
  readonly name?: unknown;
  readonly message?: unknown;
  readonly $metadata?: { readonly httpStatusCode?: number | undefined } | undefined;
  readonly $response?: { readonly headers?: Readonly<Record<string, string>> | undefined } | undefined;
}

/**
 * A Bedrock error message without what AWS adds to an InvalidSignatureException: the canonical
 * request it expected ("The Canonical String for this request should have been …", which lists
 * every signed header, the session token's `x-amz-security-token:<token>` among them) and the
 * string to sign ("The String-to-Sign should have been …"), from the first of them to the end, and
 * any line that still carries `x-amz-security-token`.
 */
export function withoutSigningDetails(message: string): string {
  return message
    .replace(/\s*The (?:Canonical String for this request|String-to-Sign) should have been[\s\S]*$/i, "")
    .replace(/^.*x-amz-security-token.*$\n?/gim, "")
    .replace(/x-amz-security-token[:=]\S*/gi, "x-amz-security-token:[redacted]");
}

/** Whether `err` or one of its causes carries a Node errno-style `code` (ECONNRESET, ERR_HTTP2_…): a network failure. */
function hasErrnoCode(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; typeof e === "object" && e !== null && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && /^(E[A-Z0-9]+|ERR_[A-Z0-9_]+|UND_ERR_[A-Z0-9_]+)$/.test(code)) return true;
  }
  return false;
}

/** An exception name fit for a label: letters only, bounded. */
function label(name: unknown): string {
  return typeof name === "string" && /^[A-Za-z]{1,64}$/.test(name) ? name : "error";
}

/**
 * Maps what a Bedrock call threw. `inStream`: thrown while reading a ConverseStream after its
 * first event was handed on (an exception frame there is a failure the upstream declared mid-answer).
 */
export function errorFromBedrock(err: unknown, ctx: BedrockErrorContext, inStream = false): unknown {
  if (err instanceof GatewayError) return err;
  const e = (typeof err === "object" && err !== null ? err : {}) as SdkError;
  const name = label(e.name);
  // An exception frame read with the answer's first event comes with the answer's 200: no HTTP status of its own.
  const answered = e.$metadata?.httpStatusCode;
  const httpStatus = answered !== undefined && answered >= 300 ? answered : undefined;
  const streamStatus = httpStatus === undefined ? streamExceptionStatus[name] : undefined;
  if (httpStatus === undefined && streamStatus === undefined) {
    if (name === "CredentialsProviderError") {
      // No credentials from the chain (or a provider failed): the gateway's configuration.
      return new GatewayError(Code.Internal, `upstream "${ctx.upstream}" has no usable AWS credentials`, {
        reason: Reason.UpstreamAuth,
        metadata: { upstream: ctx.upstream },
        cause: err,
      });
    }
    // Bedrock answered (2xx) or the stream had begun, and no socket failed: the SDK could not read
    // the answer (not JSON, a frame with a bad CRC or without :message-type, an exception it does
    // not know): UPSTREAM_BAD_RESPONSE, not counted against the endpoint's connections. The raw SDK error (with its $response) stays out of the cause.
    // A frame cut short ("Truncated event message received.", @smithy/core's event-stream decoder)
    // is the connection's failure, not a bad answer, unless the answer was no event stream at all
    // (a 200 text/html page reads as one frame cut short).
    const type = e.$response?.headers?.["content-type"];
    const truncated =
      typeof e.message === "string" && /^Truncated event message/.test(e.message) && (type === undefined || type.toLowerCase().startsWith("application/vnd.amazon.eventstream"));
    if (((answered !== undefined && answered >= 200 && answered < 300) || inStream) && !truncated && !hasErrnoCode(err)) {
      return badResponse(ctx.upstream, `an answer the AWS SDK could not read (${name})`);
    }
    return errorFromNetwork(ctx.upstream, err);
  }
  const status = httpStatus ?? streamStatus!;
  const message = typeof e.message === "string" ? withoutSigningDetails(e.message) : "";
  const headers = e.$response?.headers ?? {};
  const mapped = errorFromStatus(ctx.upstream, modelUnavailable.has(name) ? 503 : status, headers, JSON.stringify({ message }), ctx.secrets);
  // http_status is the answer's own (none for a stream's exception frame); left out for the model's
  // failures, which are UNAVAILABLE whatever their 4xx (src/resilience/failure-policy.ts counts no 4xx).
  const metadata: Record<string, string> = { upstream: ctx.upstream, upstream_error: name };
  if (httpStatus !== undefined && !modelUnavailable.has(name)) metadata["http_status"] = String(httpStatus);
  const where = httpStatus === undefined ? "in its stream" : `(HTTP ${httpStatus})`;
  const cause = new UpstreamFailure(`upstream ${ctx.upstream} answered ${name} ${where}`, httpStatus ?? 200, snippet(redactSecrets(message, ctx.secrets)));
  if (name === "ServiceQuotaExceededException") {
    // A quota, not a rate: nothing says when it ends, so no retry.
    return new GatewayError(Code.ResourceExhausted, `upstream "${ctx.upstream}" refused the request over an account quota`, {
      reason: Reason.UpstreamRateLimited,
      metadata,
      cause,
    });
  }
  let retryAfterMs = mapped.retryAfterMs;
  // Bedrock's throttling answers carry no Retry-After: the configured delay stands in for it, so
  // that a retry waits and the caller's RetryInfo says when to come back.
  if (mapped.reason === Reason.UpstreamRateLimited && retryAfterMs === undefined) retryAfterMs = ctx.throttlingRetryAfterMs;
  const text = inStream && mapped.code === Code.Unavailable ? `upstream "${ctx.upstream}" failed during the stream (${name})` : mapped.message;
  return new GatewayError(mapped.code, text, {
    reason: mapped.reason,
    metadata,
    cause,
    ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
  });
}
