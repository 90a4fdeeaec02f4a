/**
 * The one HTTP → gRPC error mapping of the HTTP upstream kinds (src/upstreams/http/http-errors.ts):
 * every status class, Retry-After in both forms, secrets scrubbed from what the client sees, and
 * socket failures found along the cause chain.
 */
import { Code } from "@connectrpc/connect";
import { afterEach, describe, expect, it, vi } from "vitest";
import { GatewayError } from "../../src/core/gateway-error.js";
import {
  badResponse,
  errorFromNetwork,
  errorFromStatus,
  parseRetryAfter,
  redactedError,
  scrub,
  snippet,
  UpstreamFailure,
  upstreamSecrets,
} from "../../src/upstreams/http/http-errors.js";

const KEY = "sk-live-0123456789abcdefXYZ";
const openaiError = (message: string) => JSON.stringify({ error: { message, type: "invalid_request_error", param: null, code: null } });

describe("errorFromStatus", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it.each<[number, string, Code, string, string]>([
    [400, openaiError("max_tokens is too large: 99999"), Code.InvalidArgument, "INVALID_ARGUMENT", 'upstream "up" rejected the request: max_tokens is too large: 99999'],
    [400, "<html>Bad Request</html>", Code.InvalidArgument, "INVALID_ARGUMENT", 'upstream "up" rejected the request'],
    [422, JSON.stringify({ message: "Input validation error: `inputs` must have less than 4096 tokens" }), Code.InvalidArgument, "INVALID_ARGUMENT", 'upstream "up" rejected the request: Input validation error: `inputs` must have less than 4096 tokens'],
    [400, JSON.stringify({ error: "model not loaded" }), Code.InvalidArgument, "INVALID_ARGUMENT", 'upstream "up" rejected the request: model not loaded'],
    [401, openaiError(`Incorrect API key provided: ${KEY}`), Code.Internal, "UPSTREAM_AUTH", `upstream "up" refused the gateway's credentials`],
    [403, "forbidden", Code.Internal, "UPSTREAM_AUTH", `upstream "up" refused the gateway's credentials`],
    [404, openaiError("The model `gpt-9` does not exist"), Code.NotFound, "MODEL_NOT_FOUND", 'upstream "up" does not know the model or path'],
    [408, "", Code.DeadlineExceeded, "UPSTREAM_TIMEOUT", 'upstream "up" timed out the request'],
    [429, openaiError("Rate limit reached"), Code.ResourceExhausted, "UPSTREAM_RATE_LIMITED", 'upstream "up" is rate limiting the gateway'],
    [500, openaiError("The server had an error"), Code.Unavailable, "UPSTREAM_UNAVAILABLE", 'upstream "up" is unavailable (HTTP 500)'],
    [502, "<html>Bad Gateway</html>", Code.Unavailable, "UPSTREAM_UNAVAILABLE", 'upstream "up" is unavailable (HTTP 502)'],
    [503, "", Code.Unavailable, "UPSTREAM_UNAVAILABLE", 'upstream "up" is unavailable (HTTP 503)'],
    [504, "", Code.Unavailable, "UPSTREAM_UNAVAILABLE", 'upstream "up" is unavailable (HTTP 504)'],
    [529, JSON.stringify({ type: "error", error: { type: "overloaded_error", message: "Overloaded" } }), Code.Unavailable, "UPSTREAM_UNAVAILABLE", 'upstream "up" is unavailable (HTTP 529)'],
    [409, "conflict", Code.Internal, "UPSTREAM_ERROR", 'upstream "up" failed the request (HTTP 409)'],
    [418, "", Code.Internal, "UPSTREAM_ERROR", 'upstream "up" failed the request (HTTP 418)'],
    [302, "", Code.Internal, "UPSTREAM_ERROR", 'upstream "up" failed the request (HTTP 302)'],
  ])("HTTP %i → code %i, reason %s", (status, body, code, reason, message) => {
    const err = errorFromStatus("up", status, {}, body, [KEY]);
    expect(err).toBeInstanceOf(GatewayError);
    expect([err.code, err.reason, err.message]).toEqual([code, reason, message]);
    expect(err.metadata).toEqual({ upstream: "up", http_status: String(status) });
    expect(err.retryAfterMs).toBeUndefined();
    // The raw body goes to the cause, for the log only, without the configured secrets.
    expect(err.cause).toBeInstanceOf(UpstreamFailure);
    expect((err.cause as UpstreamFailure).status).toBe(status);
    expect((err.cause as UpstreamFailure).bodySnippet).toBe(body.split(KEY).join("[redacted]"));
    expect(err.message).not.toContain(KEY);
  });

  it.each<[string, Record<string, string | string[] | undefined>, number | undefined]>([
    ["delay-seconds", { "retry-after": "2" }, 2000],
    ["delay-seconds 0", { "retry-after": "0" }, 0],
    ["an IMF-fixdate", { "retry-after": "Wed, 21 Oct 2015 07:28:03 GMT" }, 3000],
    ["a date in the past", { "retry-after": "Wed, 21 Oct 2015 07:27:00 GMT" }, 0],
    ["a repeated header (the first counts)", { "retry-after": ["5", "9"] }, 5000],
    ["no header", {}, undefined],
    ["an unreadable header", { "retry-after": "soon" }, undefined],
  ])("429 with %s → RetryInfo %s ms", (_name, headers, retryAfterMs) => {
    vi.useFakeTimers({ now: Date.parse("Wed, 21 Oct 2015 07:28:00 GMT") });
    const err = errorFromStatus("up", 429, headers, openaiError("Rate limit reached"), []);
    expect(err.code).toBe(Code.ResourceExhausted);
    expect(err.retryAfterMs).toBe(retryAfterMs);
  });

  it("scrubs the key and bearer tokens out of an upstream's 400 message", () => {
    const err = errorFromStatus("up", 400, {}, openaiError(`bad header Authorization: Bearer abc.def-ghi and key ${KEY}`), [KEY]);
    expect(err.message).toBe('upstream "up" rejected the request: bad header Authorization: Bearer [redacted] and key [redacted]');
  });
});

describe("parseRetryAfter", () => {
  const now = Date.parse("Sun, 06 Nov 1994 08:49:30 GMT");
  it.each<[string | undefined, number | undefined]>([
    ["120", 120_000],
    [" 7 ", 7000],
    ["0", 0],
    // IMF-fixdate and the obsolete RFC 850 form (RFC 9110 §5.6.7).
    ["Sun, 06 Nov 1994 08:49:37 GMT", 7000],
    ["Sunday, 06-Nov-94 08:49:37 GMT", 7000],
    ["Sun, 06 Nov 1994 08:00:00 GMT", 0],
    [undefined, undefined],
    ["", undefined],
    ["   ", undefined],
    ["soon", undefined],
    ["2s", undefined],
    // A negative delay is a moment already past; other numbers that are not delay-seconds are
    // ignored, never read as a date.
    ["-1", 0],
    ["1.5", undefined],
    ["+3", undefined],
  ])("%j → %s", (value, expected) => {
    expect(parseRetryAfter(value, now)).toBe(expected);
  });
});

describe("scrub", () => {
  it.each<[string, string, readonly string[], string]>([
    ["a configured secret", `the key ${KEY} is wrong`, [KEY], "the key [redacted] is wrong"],
    ["every occurrence of it", `k=tok3n k=tok3n`, ["tok3n"], "k=[redacted] k=[redacted]"],
    ["a bearer token", "Authorization: Bearer eyJhbGciOi.J9.x-y_z~+/=", [], "Authorization: Bearer [redacted]"],
    ["a basic credential", "basic dXNlcjpwYXNz was refused", [], "basic [redacted] was refused"],
    ["an OpenAI-style key", "Incorrect API key provided: sk-proj-AbC123xyz789.", [], "Incorrect API key provided: [redacted]."],
    ["an api_key-shaped string", "api_key-abcdef123456 is revoked", [], "[redacted] is revoked"],
    ["a long token-shaped string", "id 0123456789abcdef0123456789abcdef ok", [], "id [redacted] ok"],
    ["secrets shorter than 4 characters are not searched for", "abc abc", ["abc"], "abc abc"],
    ["plain text stays", "max_tokens is too large: 99999", [KEY], "max_tokens is too large: 99999"],
  ])("removes %s", (_name, input, secrets, expected) => {
    expect(scrub(input, secrets)).toBe(expected);
  });

  it("cuts long text to 300 characters", () => {
    const out = scrub("word ".repeat(100), []);
    expect(out).toBe(`${"word ".repeat(60)}…`);
  });
});

describe("errorFromNetwork", () => {
  const withCode = (message: string, code: string, cause?: unknown): Error =>
    Object.assign(new Error(message, cause === undefined ? undefined : { cause }), { code });

  it.each<[string, unknown, Code, string, string]>([
    ["a refused connection", withCode("connect ECONNREFUSED 127.0.0.1:1", "ECONNREFUSED"), Code.Unavailable, "UPSTREAM_UNAVAILABLE", 'upstream "up" could not be reached (ECONNREFUSED)'],
    ["a reset deep in the cause chain", new TypeError("fetch failed", { cause: new Error("other side closed", { cause: withCode("read ECONNRESET", "ECONNRESET") }) }), Code.Unavailable, "UPSTREAM_UNAVAILABLE", 'upstream "up" could not be reached (ECONNRESET)'],
    ["undici's socket error", withCode("other side closed", "UND_ERR_SOCKET"), Code.Unavailable, "UPSTREAM_UNAVAILABLE", 'upstream "up" could not be reached (UND_ERR_SOCKET)'],
    ["an unknown host", withCode("getaddrinfo ENOTFOUND nope.invalid", "ENOTFOUND"), Code.Unavailable, "UPSTREAM_UNAVAILABLE", 'upstream "up" could not be reached (ENOTFOUND)'],
    ["a headers timeout", withCode("Headers Timeout Error", "UND_ERR_HEADERS_TIMEOUT"), Code.DeadlineExceeded, "UPSTREAM_TIMEOUT", 'upstream "up" did not answer in time'],
    ["a body timeout", withCode("Body Timeout Error", "UND_ERR_BODY_TIMEOUT"), Code.DeadlineExceeded, "UPSTREAM_TIMEOUT", 'upstream "up" did not answer in time'],
    ["an unknown error", new Error("something odd"), Code.Unavailable, "UPSTREAM_UNAVAILABLE", 'upstream "up" failed'],
    ["a thrown string", "boom", Code.Unavailable, "UPSTREAM_UNAVAILABLE", 'upstream "up" failed'],
  ])("%s → %s", (_name, err, code, reason, message) => {
    const mapped = errorFromNetwork("up", err);
    expect([mapped.code, mapped.reason, mapped.message, mapped.metadata]).toEqual([code, reason, message, { upstream: "up" }]);
    expect(mapped.cause).toBe(err);
  });

  it("passes a GatewayError through unchanged", () => {
    const err = new GatewayError(Code.Unavailable, "x", { reason: "STREAM_TRUNCATED" });
    expect(errorFromNetwork("up", err)).toBe(err);
  });
});

describe("badResponse and snippet", () => {
  it("is UNAVAILABLE UPSTREAM_BAD_RESPONSE with the body in the cause only", () => {
    const err = badResponse("up", "malformed JSON", '{"id":"x","cho');
    expect([err.code, err.reason, err.message, err.metadata]).toEqual([
      Code.Unavailable,
      "UPSTREAM_BAD_RESPONSE",
      'upstream "up" sent an invalid response: malformed JSON',
      { upstream: "up" },
    ]);
    expect(err.cause).toBeInstanceOf(UpstreamFailure);
    expect((err.cause as UpstreamFailure).bodySnippet).toBe('{"id":"x","cho');
  });

  it.each<[string, string]>([
    ["short", "short"],
    ["x".repeat(2048), "x".repeat(2048)],
    ["x".repeat(3000), `${"x".repeat(2048)}… (3000 chars)`],
  ])("snippet keeps at most 2048 characters", (body, expected) => {
    expect(snippet(body)).toBe(expected);
  });
});

describe("redactedError (issue 17, defect 7)", () => {
  const secret = "zq.0123.abcd";

  it("redacts a 200 answer's body, the problem quoting it, the reason and the metadata", () => {
    const bad = badResponse("up", `outputs[0] has unknown datatype "${secret}"`, `{"datatype": "${secret}"`);
    const err = new GatewayError(Code.Internal, `echo ${secret}`, { reason: secret, metadata: { key: secret, upstream: "up" }, retryAfterMs: 5, cause: bad });
    const out = redactedError(err, [secret]) as GatewayError;
    expect(out).toBeInstanceOf(GatewayError);
    expect([out.code, out.message, out.reason, out.metadata, out.retryAfterMs]).toEqual([Code.Internal, "echo [redacted]", "[redacted]", { key: "[redacted]", upstream: "up" }, 5]);
    const inner = out.cause as GatewayError;
    expect(inner.message).toBe('upstream "up" sent an invalid response: outputs[0] has unknown datatype "[redacted]"');
    expect(inner.cause).toBeInstanceOf(UpstreamFailure);
    expect((inner.cause as UpstreamFailure).bodySnippet).toBe('{"datatype": "[redacted]"');
    expect((inner.cause as UpstreamFailure).status).toBe(200);
  });

  it("keeps an error's class and fields (a gRPC error), and an error without secrets as it is", () => {
    const grpcErr = Object.assign(new Error(`13 INTERNAL: key ${secret}`), { code: 13, details: `key ${secret}`, metadata: "kept" });
    const out = redactedError(new AggregateError([grpcErr], "all failed"), [secret]) as AggregateError;
    expect(out).toBeInstanceOf(AggregateError);
    const inner = out.errors[0] as Error & { code: number; details: string; metadata: string };
    expect([inner.message, inner.details, inner.code, inner.metadata]).toEqual(["13 INTERNAL: key [redacted]", "key [redacted]", 13, "kept"]);
    expect(JSON.stringify(inner.stack)).not.toContain(secret);
    const clean = new GatewayError(Code.Unavailable, "no secret here", { cause: new UpstreamFailure("x", 500, "body") });
    expect(redactedError(clean, [secret])).toBe(clean);
    expect(redactedError("a string", [secret])).toBe("a string");
  });

  it("upstreamSecrets: the apiKey and credential headers' values, not other headers", () => {
    expect(upstreamSecrets({ apiKey: "k1", headers: { "api-key": "k2", Authorization: "Bearer k3", "X-Team": "vision" } })).toEqual(["k1", "k2", "k3"]);
    expect(upstreamSecrets({})).toEqual([]);
  });
});
