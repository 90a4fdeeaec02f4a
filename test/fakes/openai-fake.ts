/**
 * A fake OpenAI-compatible upstream (Chat Completions) for adapter tests: a real HTTP server on
 * 127.0.0.1 that speaks the public wire format byte for byte and records every request.
 *
 * ```ts
 * const fake = await createOpenAIFake();
 * // adapter base URL: fake.baseUrl (= `${fake.url}/v1`); Azure form: `${fake.url}/openai/deployments/<d>`
 * // per request: last user message text "scenario:tool-calls" (or fake.setScenario("tool-calls"))
 * // then: fake.requests[0].headers.authorization, fake.requests[0].body, …
 * await fake.close();
 * ```
 *
 * Routes (POST only; anything else is a 404 `Invalid URL (GET /v1/…)` error body):
 * - `/v1/chat/completions` — `model` and `messages` are required (400 otherwise, as OpenAI).
 * - `/openai/deployments/{deployment}/chat/completions?api-version=…` (Azure) — needs
 *   `api-version` (404 `Resource not found` otherwise, as Azure); `model` optional; the
 *   deployment is recorded as `deployment`.
 *
 * Scenarios: see {@link OPENAI_SCENARIOS}; selection and options: see fake-server.ts
 * ({@link FakeUpstream.setScenario}, `scenario:<name>` as the last user message's whole text).
 */
import {
  type Exchange,
  type FakeOptions,
  type FakeUpstream,
  type FixtureRule,
  GARBAGE_BODY,
  GARBAGE_CONTENT_TYPE,
  JSON_CONTENT_TYPE,
  type Selection,
  countWords,
  isObject,
  serveFixture,
  startFake,
  wordPieces,
} from "./fake-server.js";

/**
 * Every scenario of the OpenAI fake. "Fixture" means test/fixtures/openai/<file> is sent verbatim.
 *
 * - `echo` (default): answers with the last user message's text (its text parts joined with
 *   "\n"; image parts ignored), streamed one word per chunk or unary. finish_reason `stop`;
 *   usage counts words (prompt: every text part of every message; completion: answer words).
 *   With `stream_options.include_usage` every chunk carries `"usage":null` and a last chunk with
 *   `"choices":[]` and the usage precedes `[DONE]`, as OpenAI does. Requests with images use it.
 * - `text`: fixture text.sse / text.json — "Hello from the fake upstream.", 5 content chunks
 *   after a role chunk, finish_reason `stop`, no usage chunk; unary usage 12/6/18.
 * - `tool-calls`: fixture tool-calls.sse / tool-calls.json — two tool calls, index 0
 *   `call_fake_weather` `get_weather` `{"city": "Paris", "unit": "celsius"}` (arguments in 4
 *   chunks) and index 1 `call_fake_time` `get_time` `{"tz": "Europe/Paris"}` (2 chunks);
 *   content null; finish_reason `tool_calls`.
 * - `usage`: fixture usage.sse — the `text` stream with `"usage":null` on each chunk and a final
 *   `choices: []` chunk with usage 12/6/18 (with token details), then `[DONE]`; unary: text.json.
 * - `usage-details`: fixture usage-details.sse / usage-details.json — the `usage` stream and the
 *   `text` answer (id `chatcmpl-fake-usage-details`, a reasoning model's), usage 2006/198/2204 of
 *   which `prompt_tokens_details.cached_tokens` 1920 and `completion_tokens_details.reasoning_tokens`
 *   192 (in the final `choices: []` chunk of the stream, as `include_usage` gives it).
 * - `slow`: streams `tokens` (default 40) content chunks "t1 ", "t2 ", … "tN" with `delayMs`
 *   (default 100) between writes, then finish_reason `stop` and `[DONE]`; unary waits
 *   `delayMs × tokens` and answers the whole text.
 * - `mid-stream-error`: fixture mid-stream-error.sse — HTTP 200 stream, role chunk and "Hello",
 *   " from", then `data: {"error":{"message":"The server had an error…","type":"server_error",
 *   "param":null,"code":null}}` and the stream ends (no finish_reason, no `[DONE]`). Sent as
 *   SSE even when the request was unary.
 * - `truncated`: stream — fixture truncated.sse: role chunk, "Hello", " from", " the", then a
 *   clean end of the HTTP body without finish_reason or `[DONE]`. Unary — the head announces
 *   text.json's full Content-Length, half the body is sent, then the socket is destroyed.
 * - `crlf`: fixture crlf.sse — the same chunks as `text` but CRLF line endings, comment lines
 *   (`: …`), JSON split over two `data:` lines (joined with "\n" it parses), one `data:` without
 *   a space, and written split after every CR (so "\r" and "\n" arrive in different writes),
 *   `delayMs` default 5. Unary: text.json.
 * - `malformed-event`: fixture malformed-event.sse — role chunk, "Hello", then a `data:` line
 *   holding cut JSON, then the rest of the text and `[DONE]`. Sent as SSE even when unary.
 * - `rate-limited`: 429, `Retry-After: 2`, fixture rate-limited.json (code `rate_limit_exceeded`).
 * - `rate-limited-date`: 429, `Retry-After: <HTTP-date about 3 s ahead>`, same body.
 * - `server-error`: 500, fixture server-error.json (type `server_error`).
 * - `unauthorized`: 401, fixture unauthorized.json (code `invalid_api_key`).
 * - `bad-request`: 400, fixture bad-request.json (param `messages`, code `context_length_exceeded`).
 * - `garbage`: 200, `content-type: text/html; charset=utf-8`, body `<html>oops</html>`.
 * - `malformed-json`: 200, `content-type: application/json`, body {@link OPENAI_MALFORMED_JSON}.
 *
 * Error, garbage and malformed-json answers are the same for stream and unary requests (as
 * OpenAI answers errors with JSON even to `stream: true`).
 */
export const OPENAI_SCENARIOS = [
  "echo",
  "text",
  "tool-calls",
  "usage",
  "usage-details",
  "slow",
  "mid-stream-error",
  "truncated",
  "crlf",
  "malformed-event",
  "rate-limited",
  "rate-limited-date",
  "server-error",
  "unauthorized",
  "bad-request",
  "garbage",
  "malformed-json",
] as const;

export type OpenAIScenario = (typeof OPENAI_SCENARIOS)[number];

/** The OpenAI fake; see {@link FakeUpstream}. `baseUrl` is `${url}/v1`. */
export type OpenAIFake = FakeUpstream<OpenAIScenario>;

/** The body of the `malformed-json` scenario (cut mid-string). */
export const OPENAI_MALFORMED_JSON = '{"id":"chatcmpl-fake-malformed","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hel';

/** The text the `text`, `usage`, `usage-details` and `crlf` scenarios answer with. */
export const OPENAI_FIXTURE_TEXT = "Hello from the fake upstream.";

const RULES: Partial<Record<OpenAIScenario, FixtureRule>> = {
  text: { kind: "sse", stream: "text.sse", unary: "text.json" },
  "tool-calls": { kind: "sse", stream: "tool-calls.sse", unary: "tool-calls.json" },
  usage: { kind: "sse", stream: "usage.sse", unary: "text.json" },
  "usage-details": { kind: "sse", stream: "usage-details.sse", unary: "usage-details.json" },
  truncated: { kind: "sse", stream: "truncated.sse", unary: "text.json", cutUnary: true },
  crlf: { kind: "sse", stream: "crlf.sse", unary: "text.json", crlfSplit: true, delayMs: 5 },
  "mid-stream-error": { kind: "sse-always", stream: "mid-stream-error.sse" },
  "malformed-event": { kind: "sse-always", stream: "malformed-event.sse" },
  "rate-limited": { kind: "error", status: 429, file: "rate-limited.json", retryAfter: "2s" },
  "rate-limited-date": { kind: "error", status: 429, file: "rate-limited.json", retryAfter: "date" },
  "server-error": { kind: "error", status: 500, file: "server-error.json" },
  unauthorized: { kind: "error", status: 401, file: "unauthorized.json" },
  "bad-request": { kind: "error", status: 400, file: "bad-request.json" },
  garbage: { kind: "raw", status: 200, contentType: GARBAGE_CONTENT_TYPE, body: GARBAGE_BODY },
  "malformed-json": { kind: "raw", status: 200, contentType: JSON_CONTENT_TYPE, body: OPENAI_MALFORMED_JSON },
};

/**
 * Starts the OpenAI fake on 127.0.0.1 with a free port. `options` are defaults for every
 * scenario (`delayMs`, `tokens`, `retryAfter`).
 */
export async function createOpenAIFake(options: FakeOptions = {}): Promise<OpenAIFake> {
  return startFake<OpenAIScenario>({
    scenarios: OPENAI_SCENARIOS,
    defaultScenario: "echo",
    baseUrlSuffix: "/v1",
    options,
    commonHeaders: (rec) => ({ "x-request-id": `req_fake_${rec.index}`, "openai-processing-ms": "1" }),
    handle,
  });
}

/**
 * Routes a request to `operation` (`chat/completions`, `embeddings`): "openai" for
 * `POST /v1/<operation>`, "azure" for `POST /openai/deployments/{deployment}/<operation>` with an
 * `api-version` (the deployment recorded); otherwise answers the 404 OpenAI or Azure gives and
 * returns undefined.
 */
export function routeOpenAI<S extends string>(ex: Exchange<S>, operation: string): "openai" | "azure" | undefined {
  const { record } = ex;
  const azure = record.path.startsWith("/openai/deployments/") ? /^\/openai\/deployments\/([^/]+)\/(.+)$/.exec(record.path) : null;
  if (record.method !== "POST" || (record.path !== `/v1/${operation}` && azure?.[2] !== operation)) {
    sendError(ex, 404, `Invalid URL (${record.method} ${record.path})`, "invalid_request_error", null, null);
    return undefined;
  }
  if (azure === null) return "openai";
  record.deployment = decodeURIComponent(azure[1]!);
  if (record.query["api-version"] === undefined) {
    ex.send(404, JSON_CONTENT_TYPE, JSON.stringify({ error: { code: "404", message: "Resource not found" } }));
    return undefined;
  }
  return "azure";
}

async function handle(ex: Exchange<OpenAIScenario>): Promise<void> {
  const { record } = ex;
  const route = routeOpenAI(ex, "chat/completions");
  if (route === undefined) return;
  const body = record.body;
  if (!isObject(body)) {
    sendError(
      ex,
      400,
      "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
      "invalid_request_error",
      null,
      null,
    );
    return;
  }
  if (route === "openai" && typeof body["model"] !== "string") {
    sendError(ex, 400, "you must provide a model parameter", "invalid_request_error", null, null);
    return;
  }
  if (!Array.isArray(body["messages"])) {
    sendError(ex, 400, "Missing required parameter: 'messages'.", "invalid_request_error", "messages", "missing_required_parameter");
    return;
  }
  const messages = body["messages"] as unknown[];
  const lastUser = [...messages].reverse().find((m) => isObject(m) && m["role"] === "user");
  if (lastUser !== undefined) {
    record.lastUserText = textOf((lastUser as Record<string, unknown>)["content"]);
  }
  const selection = ex.selectScenario(record.lastUserText);
  if ("unknown" in selection) {
    sendError(ex, 400, `fake upstream: unknown scenario "${selection.unknown}"`, "invalid_request_error", null, "unknown_scenario");
    return;
  }
  const rule = RULES[selection.name];
  if (rule !== undefined) {
    await serveFixture(ex, "openai", selection, rule);
    return;
  }
  const model = typeof body["model"] === "string" ? body["model"] : (record.deployment ?? "fake-model");
  const promptTokens = messages.reduce<number>((n, m) => n + (isObject(m) ? countWords(textOf(m["content"])) : 0), 0);
  const streamOptions = body["stream_options"];
  const includeUsage = isObject(streamOptions) && streamOptions["include_usage"] === true;
  const id = `chatcmpl-fake-${record.index}`;
  if (selection.name === "slow") {
    const tokens = Math.max(1, selection.options.tokens ?? 40);
    const pieces = Array.from({ length: tokens }, (_, i) => (i + 1 < tokens ? `t${i + 1} ` : `t${i + 1}`));
    await answerText(ex, selection, { id, model, pieces, promptTokens, includeUsage, delayMs: 100, unaryDelayFactor: tokens });
    return;
  }
  // echo
  await answerText(ex, selection, { id, model, pieces: wordPieces(record.lastUserText ?? ""), promptTokens, includeUsage, delayMs: 0, unaryDelayFactor: 1 });
}

/** A generated text answer, streamed or unary, in OpenAI's format. */
async function answerText(
  ex: Exchange<OpenAIScenario>,
  selection: Selection<OpenAIScenario>,
  a: { id: string; model: string; pieces: string[]; promptTokens: number; includeUsage: boolean; delayMs: number; unaryDelayFactor: number },
): Promise<void> {
  const created = Math.floor(Date.now() / 1000);
  const usage = {
    prompt_tokens: a.promptTokens,
    completion_tokens: a.pieces.length,
    total_tokens: a.promptTokens + a.pieces.length,
  };
  const delay = ex.delayMs(selection, a.delayMs);
  if (ex.record.stream) {
    const extra = a.includeUsage ? { usage: null } : {};
    const chunk = (delta: Record<string, unknown>, finish: string | null): string =>
      `data: ${JSON.stringify({
        id: a.id,
        object: "chat.completion.chunk",
        created,
        model: a.model,
        system_fingerprint: "fp_fake0001",
        choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
        ...extra,
      })}\n\n`;
    const events = [
      chunk({ role: "assistant", content: "", refusal: null }, null),
      ...a.pieces.map((p) => chunk({ content: p }, null)),
      chunk({}, "stop"),
    ];
    if (a.includeUsage) {
      events.push(
        `data: ${JSON.stringify({ id: a.id, object: "chat.completion.chunk", created, model: a.model, system_fingerprint: "fp_fake0001", choices: [], usage })}\n\n`,
      );
    }
    events.push("data: [DONE]\n\n");
    await ex.stream(events, delay);
    return;
  }
  if (!(await ex.pause(delay * a.unaryDelayFactor))) {
    return;
  }
  const completion = {
    id: a.id,
    object: "chat.completion",
    created,
    model: a.model,
    choices: [
      {
        index: 0,
        message: { role: "assistant", content: a.pieces.join(""), refusal: null, annotations: [] },
        logprobs: null,
        finish_reason: "stop",
      },
    ],
    usage,
    system_fingerprint: "fp_fake0001",
  };
  ex.send(200, JSON_CONTENT_TYPE, `${JSON.stringify(completion, null, 2)}\n`);
}

/** An error answer in OpenAI's shape (`{"error":{"message","type","param","code"}}`), with extra headers. */
export function sendError<S extends string>(
  ex: Exchange<S>,
  status: number,
  message: string,
  type: string,
  param: string | null,
  code: string | null,
  headers: Record<string, string> = {},
): void {
  ex.send(status, JSON_CONTENT_TYPE, `${JSON.stringify({ error: { message, type, param, code } }, null, 2)}\n`, headers);
}

/** The text of a message `content`: a string, or the `text` of its `{type:"text"}` parts joined with "\n". */
function textOf(content: unknown): string {
  if (typeof content === "string") {
    return content;
  }
  if (Array.isArray(content)) {
    return content
      .filter((p): p is Record<string, unknown> => isObject(p) && p["type"] === "text" && typeof p["text"] === "string")
      .map((p) => p["text"] as string)
      .join("\n");
  }
  return "";
}
