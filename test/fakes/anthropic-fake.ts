/**
 * A fake Anthropic Messages API upstream for adapter tests: a real HTTP server on 127.0.0.1 that
 * speaks the public wire format byte for byte and records every request.
 *
 * ```ts
 * const fake = await createAnthropicFake();
 * // adapter base URL: fake.baseUrl (= fake.url; the adapter appends /v1/messages, as the SDK does)
 * // per request: last user message text "scenario:pings" (or fake.setScenario("pings"))
 * // then: fake.requests[0].headers["x-api-key"], …["anthropic-version"], fake.requests[0].body
 * await fake.close();
 * ```
 *
 * Routes: `POST /v1/messages` and `POST /v1/messages/count_tokens` (anything else: 404
 * `not_found_error`). As the real API, it answers 400 `invalid_request_error` when the
 * `anthropic-version` header is missing, or when `model`, `max_tokens` (messages only) or
 * `messages` is missing from the body; count_tokens refuses a key the API does not take there
 * (`max_tokens: Extra inputs are not permitted`) and answers `{"input_tokens": N}` with N the
 * words of `system` and of every message's text blocks, plus the words of each tool's JSON
 * (see {@link countTokensOf}); its error scenarios answer as on `/v1/messages`.
 *
 * Scenarios: see {@link ANTHROPIC_SCENARIOS}; selection and options: see fake-server.ts
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
 * Every scenario of the Anthropic fake. "Fixture" means test/fixtures/anthropic/<file> is sent
 * verbatim. Every stream has `event: <type>` and `data: <json>` lines, events ending "\n\n".
 *
 * - `echo` (default): answers with the last user message's text (its text blocks joined with
 *   "\n"; image and tool_result blocks ignored), streamed one word per `text_delta` (message_start,
 *   content_block_start, ping, deltas, content_block_stop, message_delta `end_turn`,
 *   message_stop) or unary. Usage counts words (input: `system` and every text block of every
 *   message; output: answer words). Requests with images use it.
 * - `text`: fixture text.sse / text.json — "Hello from the fake upstream." in 5 text_deltas,
 *   one ping after content_block_start, stop_reason `end_turn`, usage input 12 / output 6.
 * - `tool-calls`: fixture tool-calls.sse / tool-calls.json — text block 0 "Let me check.", then
 *   tool_use block 1 `toolu_fake_weather` `get_weather` input `{"city": "Paris", "unit":
 *   "celsius"}` (input_json_delta in 5 parts, the first ""), tool_use block 2 `toolu_fake_time`
 *   `get_time` input `{"tz": "Europe/Paris"}` (3 parts); stop_reason `tool_use`; usage 40/30.
 * - `usage`: fixture usage.sse — the `text` stream with cache token fields
 *   (`cache_creation_input_tokens` 100, `cache_read_input_tokens` 200) in message_start, and a
 *   cumulative message_delta usage that also has `input_tokens` 12; unary: text.json.
 * - `cache-usage`: fixture cache-usage.sse / cache-usage.json — the `text` stream and answer
 *   (id `msg_fake_cache_usage`) with prompt caching: `input_tokens` 12,
 *   `cache_creation_input_tokens` 1500, `cache_read_input_tokens` 2048 (and the `cache_creation`
 *   breakdown object) in message_start's usage and the unary body's; the stream's message_delta
 *   usage has `output_tokens` 6 only, as in older API versions.
 * - `pings`: fixture pings.sse — the `text` stream with a ping between every two events.
 *   Unary: text.json.
 * - `slow`: streams `tokens` (default 40) text_deltas "t1 ", "t2 ", … "tN" with `delayMs`
 *   (default 100) between writes, then the closing events; unary waits `delayMs × tokens`.
 * - `mid-stream-error`: fixture mid-stream-error.sse — HTTP 200 stream: message_start,
 *   content_block_start, ping, "Hello", " from", then `event: error` /
 *   `data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}` and the
 *   stream ends. Sent as SSE even when the request was unary.
 * - `truncated`: stream — fixture truncated.sse: message_start, content_block_start, ping,
 *   "Hello", " from", " the", then a clean end of the HTTP body, no content_block_stop,
 *   message_delta or message_stop. Unary — the head announces text.json's full Content-Length,
 *   half the body is sent, then the socket is destroyed.
 * - `crlf`: fixture crlf.sse — the same events as `text` but CRLF line endings, comment lines,
 *   JSON split over two `data:` lines, a `data:` without a space, written split after every CR
 *   (`delayMs` default 5). Unary: text.json.
 * - `malformed-event`: fixture malformed-event.sse — the `text` stream with the " from"
 *   content_block_delta's data cut mid-JSON. Sent as SSE even when unary.
 * - `rate-limited`: 429, `Retry-After: 2`, fixture rate-limited.json (`rate_limit_error`).
 * - `rate-limited-date`: 429, `Retry-After: <HTTP-date about 3 s ahead>`, same body.
 * - `server-error`: 500, fixture server-error.json (`api_error`).
 * - `overloaded`: 529, fixture overloaded.json (`overloaded_error`, "Overloaded").
 * - `unauthorized`: 401, fixture unauthorized.json (`authentication_error`).
 * - `bad-request`: 400, fixture bad-request.json (`invalid_request_error`, "prompt is too long: …").
 * - `garbage`: 200, `content-type: text/html; charset=utf-8`, body `<html>oops</html>`.
 * - `malformed-json`: 200, `content-type: application/json`, body {@link ANTHROPIC_MALFORMED_JSON}.
 *
 * Error, garbage and malformed-json answers are the same for stream and unary requests.
 */
export const ANTHROPIC_SCENARIOS = [
  "echo",
  "text",
  "tool-calls",
  "usage",
  "cache-usage",
  "pings",
  "slow",
  "mid-stream-error",
  "truncated",
  "crlf",
  "malformed-event",
  "rate-limited",
  "rate-limited-date",
  "server-error",
  "overloaded",
  "unauthorized",
  "bad-request",
  "garbage",
  "malformed-json",
] as const;

export type AnthropicScenario = (typeof ANTHROPIC_SCENARIOS)[number];

/** The Anthropic fake; see {@link FakeUpstream}. `baseUrl` is `url` (requests go to `/v1/messages`). */
export type AnthropicFake = FakeUpstream<AnthropicScenario>;

/** The body of the `malformed-json` scenario (cut mid-string). */
export const ANTHROPIC_MALFORMED_JSON = '{"id":"msg_fake_malformed","type":"message","role":"assistant","content":[{"type":"text","text":"Hel';

/** The text the `text`, `usage`, `cache-usage`, `pings` and `crlf` scenarios answer with. */
export const ANTHROPIC_FIXTURE_TEXT = "Hello from the fake upstream.";

const RULES: Partial<Record<AnthropicScenario, FixtureRule>> = {
  text: { kind: "sse", stream: "text.sse", unary: "text.json" },
  "tool-calls": { kind: "sse", stream: "tool-calls.sse", unary: "tool-calls.json" },
  usage: { kind: "sse", stream: "usage.sse", unary: "text.json" },
  "cache-usage": { kind: "sse", stream: "cache-usage.sse", unary: "cache-usage.json" },
  pings: { kind: "sse", stream: "pings.sse", unary: "text.json" },
  truncated: { kind: "sse", stream: "truncated.sse", unary: "text.json", cutUnary: true },
  crlf: { kind: "sse", stream: "crlf.sse", unary: "text.json", crlfSplit: true, delayMs: 5 },
  "mid-stream-error": { kind: "sse-always", stream: "mid-stream-error.sse" },
  "malformed-event": { kind: "sse-always", stream: "malformed-event.sse" },
  "rate-limited": { kind: "error", status: 429, file: "rate-limited.json", retryAfter: "2s" },
  "rate-limited-date": { kind: "error", status: 429, file: "rate-limited.json", retryAfter: "date" },
  "server-error": { kind: "error", status: 500, file: "server-error.json" },
  overloaded: { kind: "error", status: 529, file: "overloaded.json" },
  unauthorized: { kind: "error", status: 401, file: "unauthorized.json" },
  "bad-request": { kind: "error", status: 400, file: "bad-request.json" },
  garbage: { kind: "raw", status: 200, contentType: GARBAGE_CONTENT_TYPE, body: GARBAGE_BODY },
  "malformed-json": { kind: "raw", status: 200, contentType: JSON_CONTENT_TYPE, body: ANTHROPIC_MALFORMED_JSON },
};

/**
 * Starts the Anthropic fake on 127.0.0.1 with a free port. `options` are defaults for every
 * scenario (`delayMs`, `tokens`, `retryAfter`).
 */
export async function createAnthropicFake(options: FakeOptions = {}): Promise<AnthropicFake> {
  return startFake<AnthropicScenario>({
    scenarios: ANTHROPIC_SCENARIOS,
    defaultScenario: "echo",
    baseUrlSuffix: "",
    options,
    commonHeaders: (rec) => ({ "request-id": `req_fake_${rec.index}` }),
    handle,
  });
}

async function handle(ex: Exchange<AnthropicScenario>): Promise<void> {
  const { record } = ex;
  const counting = record.path === "/v1/messages/count_tokens";
  if (record.method !== "POST" || (record.path !== "/v1/messages" && !counting)) {
    sendError(ex, 404, "not_found_error", "Not Found");
    return;
  }
  if (typeof record.headers["anthropic-version"] !== "string") {
    sendError(ex, 400, "invalid_request_error", "anthropic-version: header is required");
    return;
  }
  const body = record.body;
  if (!isObject(body)) {
    sendError(ex, 400, "invalid_request_error", "There was an issue with the request body: it is not valid JSON");
    return;
  }
  if (counting) {
    const extra = Object.keys(body).find((k) => !countTokensKeys.has(k));
    if (extra !== undefined) {
      sendError(ex, 400, "invalid_request_error", `${extra}: Extra inputs are not permitted`);
      return;
    }
  }
  for (const field of counting ? ["model", "messages"] : ["model", "max_tokens", "messages"]) {
    if (body[field] === undefined) {
      sendError(ex, 400, "invalid_request_error", `${field}: Field required`);
      return;
    }
  }
  if (!Array.isArray(body["messages"])) {
    sendError(ex, 400, "invalid_request_error", "messages: Input should be a valid list");
    return;
  }
  const messages = body["messages"] as unknown[];
  const lastUser = [...messages].reverse().find((m) => isObject(m) && m["role"] === "user");
  if (lastUser !== undefined) {
    record.lastUserText = textOf((lastUser as Record<string, unknown>)["content"]);
  }
  const selection = ex.selectScenario(record.lastUserText);
  if ("unknown" in selection) {
    sendError(ex, 400, "invalid_request_error", `fake upstream: unknown scenario "${selection.unknown}"`);
    return;
  }
  const rule = RULES[selection.name];
  if (counting) {
    if (rule?.kind === "error") await serveFixture(ex, "anthropic", selection, rule);
    else ex.send(200, JSON_CONTENT_TYPE, JSON.stringify({ input_tokens: countTokensOf(body) }));
    return;
  }
  if (rule !== undefined) {
    await serveFixture(ex, "anthropic", selection, rule);
    return;
  }
  const model = typeof body["model"] === "string" ? body["model"] : "fake-model";
  const inputTokens = promptWords(body);
  const id = `msg_fake_${record.index}`;
  if (selection.name === "slow") {
    const tokens = Math.max(1, selection.options.tokens ?? 40);
    const pieces = Array.from({ length: tokens }, (_, i) => (i + 1 < tokens ? `t${i + 1} ` : `t${i + 1}`));
    await answerText(ex, selection, { id, model, pieces, inputTokens, delayMs: 100, unaryDelayFactor: tokens });
    return;
  }
  // echo
  await answerText(ex, selection, { id, model, pieces: wordPieces(record.lastUserText ?? ""), inputTokens, delayMs: 0, unaryDelayFactor: 1 });
}

/** A generated text answer, streamed or unary, in Anthropic's format. */
async function answerText(
  ex: Exchange<AnthropicScenario>,
  selection: Selection<AnthropicScenario>,
  a: { id: string; model: string; pieces: string[]; inputTokens: number; delayMs: number; unaryDelayFactor: number },
): Promise<void> {
  const delay = ex.delayMs(selection, a.delayMs);
  if (ex.record.stream) {
    const event = (data: { type: string } & Record<string, unknown>): string => `event: ${data.type}\ndata: ${JSON.stringify(data)}\n\n`;
    const events = [
      event({
        type: "message_start",
        message: {
          id: a.id,
          type: "message",
          role: "assistant",
          model: a.model,
          content: [],
          stop_reason: null,
          stop_sequence: null,
          usage: { input_tokens: a.inputTokens, output_tokens: 1 },
        },
      }),
      event({ type: "content_block_start", index: 0, content_block: { type: "text", text: "" } }),
      'event: ping\ndata: {"type": "ping"}\n\n',
      ...a.pieces.map((text) => event({ type: "content_block_delta", index: 0, delta: { type: "text_delta", text } })),
      event({ type: "content_block_stop", index: 0 }),
      event({ type: "message_delta", delta: { stop_reason: "end_turn", stop_sequence: null }, usage: { output_tokens: a.pieces.length } }),
      event({ type: "message_stop" }),
    ];
    await ex.stream(events, delay);
    return;
  }
  if (!(await ex.pause(delay * a.unaryDelayFactor))) {
    return;
  }
  const message = {
    id: a.id,
    type: "message",
    role: "assistant",
    model: a.model,
    content: [{ type: "text", text: a.pieces.join("") }],
    stop_reason: "end_turn",
    stop_sequence: null,
    usage: { input_tokens: a.inputTokens, output_tokens: a.pieces.length },
  };
  ex.send(200, JSON_CONTENT_TYPE, JSON.stringify(message));
}

/** The keys count_tokens takes (the API's; others are "Extra inputs are not permitted"). */
const countTokensKeys = new Set(["model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers"]);

/**
 * The fake's token count of a count_tokens body: the words of `system` and of every message's
 * text blocks (as the echo scenario's usage), plus the words of each tool's JSON, so that a test
 * can tell tools were sent.
 */
export function countTokensOf(body: Record<string, unknown>): number {
  const tools = Array.isArray(body["tools"]) ? (body["tools"] as unknown[]) : [];
  return promptWords(body) + tools.reduce<number>((n, t) => n + countWords(JSON.stringify(t).replace(/[{}[\]":,]/g, " ")), 0);
}

/** The words of `system` and of every message's text blocks: the echo scenario's input tokens. */
function promptWords(body: Record<string, unknown>): number {
  const messages = Array.isArray(body["messages"]) ? (body["messages"] as unknown[]) : [];
  return countWords(textOf(body["system"])) + messages.reduce<number>((n, m) => n + (isObject(m) ? countWords(textOf(m["content"])) : 0), 0);
}

function sendError(ex: Exchange<AnthropicScenario>, status: number, type: string, message: string): void {
  ex.send(status, JSON_CONTENT_TYPE, JSON.stringify({ type: "error", error: { type, message } }));
}

/** The text of `content` (or `system`): a string, or the `text` of its `{type:"text"}` blocks joined with "\n". */
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
