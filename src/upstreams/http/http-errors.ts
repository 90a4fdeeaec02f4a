import { Code } from "@connectrpc/connect";
import { GatewayError, Reason } from "../../core/gateway-error.js";

/**
 * Detail of an upstream failure for logs: status and the start of the raw body. It travels as
 * the GatewayError's `cause`, which never reaches the client.
 */
export class UpstreamFailure extends Error {
  override readonly name = "UpstreamFailure";
  /**
   * The whole error body as read (at most 64 KiB, secrets redacted), for an adapter to read its
   * upstream's details from before the error leaves it (Google's RetryInfo comes after 2 KB of
   * other details). Not enumerable, so never logged; redacted copies (redactedError) leave it out.
   */
  declare readonly body: string | undefined;
  constructor(
    message: string,
    readonly status: number | undefined,
    readonly bodySnippet: string | undefined,
    body?: string,
  ) {
    super(message);
    Object.defineProperty(this, "body", { value: body, enumerable: false, writable: false, configurable: false });
  }
}

const maxLoggedBody = 2048;
const maxClientMessage = 300;

/** Cuts a body for the log. */
export function snippet(body: string): string {
  return body.length > maxLoggedBody ? `${body.slice(0, maxLoggedBody)}… (${body.length} chars)` : body;
}

/**
 * Replaces the configured secrets and bearer/basic credentials in text an upstream wrote, keeping
 * the rest whole: what the log may keep of an upstream's body (it may echo the key back).
 */
export function redactSecrets(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of secrets) {
    if (s.length >= 4) {
      out = out.split(s).join("[redacted]");
    }
  }
  return out.replace(/\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+/gi, "$1 [redacted]");
}

/** Header names whose values are credentials (an upstream's extra `headers` may hold its key). */
const credentialHeader = /auth|key|token|secret|passw|cookie|signature/i;

/**
 * The secrets of one configured upstream that its answers may echo back: its `apiKey`, and the
 * values of its extra `headers` whose names say they carry a credential (`api-key`,
 * `x-goog-api-key`, `authorization`, …).
 */
export function upstreamSecrets(config: { readonly apiKey?: string | undefined; readonly headers?: Readonly<Record<string, string>> | undefined }): string[] {
  const out = config.apiKey === undefined ? [] : [config.apiKey];
  for (const [name, value] of Object.entries(config.headers ?? {})) {
    if (credentialHeader.test(name)) out.push(value.replace(/^(Bearer|Basic)\s+/i, ""));
  }
  return out;
}

/**
 * `err` with redactSecrets applied to every text in it that an upstream may have written: a
 * GatewayError's message, reason and metadata values, and down its cause chain (an
 * UpstreamFailure's message and body snippet, any other error's message, stack and gRPC
 * `details`, an AggregateError's errors). The same object when nothing needed it. Issue 17: the
 * resilience wrapper (CallAttempts.failed, src/resilience/call-attempts.ts) applies it to every error an adapter
 * throws, whatever the status, so that neither the log, nor the client, nor a metric label gets
 * the key of an upstream that echoes it, in an error body or in a 200 answer that does not parse.
 */
export function redactedError(err: unknown, secrets: readonly string[]): unknown {
  return redactDeep(err, secrets, 0);
}

/** The deepest cause redactedError follows (cause chains here are two or three long). */
const maxRedactedDepth = 8;

function redactDeep(e: unknown, secrets: readonly string[], depth: number): unknown {
  if (typeof e === "string") return redactSecrets(e, secrets);
  if (!(e instanceof Error) || depth >= maxRedactedDepth) return e;
  const r = (text: string): string => redactSecrets(text, secrets);
  if (e instanceof GatewayError) {
    const message = r(e.message);
    const reason = r(e.reason);
    let metadata: Record<string, string> | undefined;
    for (const [k, v] of Object.entries(e.metadata)) {
      const red = r(v);
      if (red !== v) (metadata ??= { ...e.metadata })[k] = red;
    }
    const cause = redactDeep(e.cause, secrets, depth + 1);
    if (message === e.message && reason === e.reason && metadata === undefined && cause === e.cause) return e;
    return new GatewayError(e.code, message, {
      reason,
      metadata: metadata ?? { ...e.metadata },
      ...(e.retryAfterMs === undefined ? {} : { retryAfterMs: e.retryAfterMs }),
      ...(e.cause === undefined ? {} : { cause }),
    });
  }
  if (e instanceof UpstreamFailure) {
    const message = r(e.message);
    const body = e.bodySnippet === undefined ? undefined : r(e.bodySnippet);
    return message === e.message && body === e.bodySnippet ? e : new UpstreamFailure(message, e.status, body);
  }
  const message = r(e.message);
  const stack = e.stack === undefined ? undefined : r(e.stack);
  const details = (e as { details?: unknown }).details;
  const redDetails = typeof details === "string" ? r(details) : details;
  const cause = redactDeep(e.cause, secrets, depth + 1);
  const errors = e instanceof AggregateError ? e.errors.map((x: unknown) => redactDeep(x, secrets, depth + 1)) : undefined;
  if (message === e.message && stack === e.stack && redDetails === details && cause === e.cause && (errors === undefined || errors.every((x, i) => x === (e as AggregateError).errors[i]))) {
    return e;
  }
  // A copy of the same class and own fields (a gRPC error's code and metadata), its texts redacted.
  const copy = Object.assign(Object.create(Object.getPrototypeOf(e) as object) as Error, e);
  const hidden = (value: unknown) => ({ value, writable: true, configurable: true, enumerable: false });
  Object.defineProperty(copy, "message", hidden(message));
  Object.defineProperty(copy, "stack", hidden(stack));
  if (typeof details === "string") (copy as { details?: unknown }).details = redDetails;
  if (e.cause !== undefined) Object.defineProperty(copy, "cause", hidden(cause));
  if (errors !== undefined) Object.defineProperty(copy, "errors", hidden(errors));
  return copy;
}

/**
 * Removes what could be a secret from text an upstream wrote (it may echo a key back): the
 * configured secrets themselves, bearer tokens, and strings shaped like API keys.
 */
export function scrub(text: string, secrets: readonly string[]): string {
  const out = redactSecrets(text, secrets)
    .replace(/\b(sk|rk|pk|key|api[-_]?key)[-_][A-Za-z0-9_-]{6,}/gi, "[redacted]")
    .replace(/\b[A-Za-z0-9_-]{32,}\b/g, "[redacted]");
  return out.length > maxClientMessage ? `${out.slice(0, maxClientMessage)}…` : out;
}

/**
 * `Retry-After` in milliseconds: delay-seconds or an HTTP-date (RFC 9110 §10.2.3); undefined when
 * absent or unreadable.
 */
export function parseRetryAfter(value: string | undefined, now: number = Date.now()): number | undefined {
  if (value === undefined || value.trim() === "") {
    return undefined;
  }
  const v = value.trim();
  if (/^\d+$/.test(v)) {
    return Number(v) * 1000;
  }
  // Not valid HTTP, but seen: a negative delay is a moment already past.
  if (/^-\d+$/.test(v)) {
    return 0;
  }
  // RFC 9110: delay-seconds or an HTTP-date (which names a weekday); anything else is ignored.
  if (!/^[A-Za-z]{3,9},?\s/.test(v)) {
    return undefined;
  }
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** The error message an upstream put in its JSON error body (OpenAI and Anthropic shapes). */
function upstreamMessage(body: string): string | undefined {
  try {
    const j = JSON.parse(body) as { error?: { message?: unknown } | string; message?: unknown };
    if (typeof j.error === "string") return j.error;
    if (typeof j.error?.message === "string") return j.error.message;
    if (typeof j.message === "string") return j.message;
  } catch {
    // not JSON
  }
  return undefined;
}

/**
 * The one mapping of an upstream HTTP error status to a gRPC status. The raw body goes to the
 * cause (logs); the client sees at most the upstream's own error message, scrubbed, for 400/422.
 */
export function errorFromStatus(
  upstream: string,
  status: number,
  headers: Readonly<Record<string, string | string[] | undefined>>,
  body: string,
  secrets: readonly string[],
): GatewayError {
  const redacted = redactSecrets(body, secrets);
  const cause = new UpstreamFailure(`upstream ${upstream} answered HTTP ${status}`, status, snippet(redacted), redacted);
  const metadata = { upstream, http_status: String(status) };
  if (status === 400 || status === 422) {
    const m = upstreamMessage(body);
    return new GatewayError(
      Code.InvalidArgument,
      `upstream "${upstream}" rejected the request${m === undefined ? "" : `: ${scrub(m, secrets)}`}`,
      { reason: Reason.InvalidArgument, metadata, cause },
    );
  }
  if (status === 401 || status === 403) {
    return new GatewayError(Code.Internal, `upstream "${upstream}" refused the gateway's credentials`, {
      reason: Reason.UpstreamAuth,
      metadata,
      cause,
    });
  }
  if (status === 404) {
    return new GatewayError(Code.NotFound, `upstream "${upstream}" does not know the model or path`, {
      reason: Reason.ModelNotFound,
      metadata,
      cause,
    });
  }
  if (status === 408) {
    return new GatewayError(Code.DeadlineExceeded, `upstream "${upstream}" timed out the request`, {
      reason: Reason.UpstreamTimeout,
      metadata,
      cause,
    });
  }
  if (status === 429) {
    const h = headers["retry-after"];
    const retryAfterMs = parseRetryAfter(Array.isArray(h) ? h[0] : h);
    return new GatewayError(Code.ResourceExhausted, `upstream "${upstream}" is rate limiting the gateway`, {
      reason: Reason.UpstreamRateLimited,
      metadata,
      cause,
      ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
    });
  }
  if (status >= 500 || status === 529) {
    return new GatewayError(Code.Unavailable, `upstream "${upstream}" is unavailable (HTTP ${status})`, {
      reason: Reason.UpstreamUnavailable,
      metadata,
      cause,
    });
  }
  return new GatewayError(Code.Internal, `upstream "${upstream}" failed the request (HTTP ${status})`, {
    reason: Reason.UpstreamError,
    metadata,
    cause,
  });
}

const unavailableCodes = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ETIMEDOUT",
  "UND_ERR_SOCKET",
  "UND_ERR_CLOSED",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_DESTROYED",
  "UND_ERR_RES_CONTENT_LENGTH_MISMATCH",
]);
const timeoutCodes = new Set(["UND_ERR_HEADERS_TIMEOUT", "UND_ERR_BODY_TIMEOUT"]);

/**
 * Maps a failure to reach or read an upstream (socket errors, undici timeouts) by walking the
 * cause chain, as connect-node does for Node's socket errors. Unknown failures are UNAVAILABLE
 * too: the upstream did not give an answer we can use.
 */
export function errorFromNetwork(upstream: string, err: unknown): GatewayError {
  if (err instanceof GatewayError) {
    return err;
  }
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== undefined && timeoutCodes.has(code)) {
      return new GatewayError(Code.DeadlineExceeded, `upstream "${upstream}" did not answer in time`, {
        reason: Reason.UpstreamTimeout,
        metadata: { upstream },
        cause: err,
      });
    }
    if (code !== undefined && unavailableCodes.has(code)) {
      return new GatewayError(Code.Unavailable, `upstream "${upstream}" could not be reached (${code})`, {
        reason: Reason.UpstreamUnavailable,
        metadata: { upstream },
        cause: err,
      });
    }
  }
  return new GatewayError(Code.Unavailable, `upstream "${upstream}" failed`, {
    reason: Reason.UpstreamUnavailable,
    metadata: { upstream },
    cause: err,
  });
}

/** An upstream answered 200 with something that is not the promised format. */
export function badResponse(upstream: string, problem: string, body?: string): GatewayError {
  return new GatewayError(Code.Unavailable, `upstream "${upstream}" sent an invalid response: ${problem}`, {
    reason: Reason.UpstreamBadResponse,
    metadata: { upstream },
    cause: new UpstreamFailure(problem, 200, body === undefined ? undefined : snippet(body)),
  });
}
