/**
 * A fake Gemini API upstream for adapter tests: a real HTTP server on 127.0.0.1 that speaks the
 * public wire format (Google AI's and Vertex AI's paths, JSON bodies in camelCase, SSE for
 * `streamGenerateContent?alt=sse` with CRLF line endings as Google sends them, Google's error
 * body `{"error": {"code", "message", "status", "details"}}`) and an OAuth2 token endpoint for the
 * Vertex mode. It records every request.
 *
 * ```ts
 * const fake = await createGeminiFake({ apiKey: "k", publicKey });
 * // Google AI: endpoint fake.url, requests to /v1beta/models/{m}:generateContent with x-goog-api-key
 * // Vertex AI: endpoint fake.url, the key file's token_uri fake.tokenUri, requests with a Bearer token
 * ```
 *
 * Routes (POST): `/{v}/models/{m}:{method}` (Google AI: needs `x-goog-api-key` equal to the
 * fake's key, else 400 INVALID_ARGUMENT with reason API_KEY_INVALID),
 * `/{v}/projects/{p}/locations/{l}/publishers/google/models/{m}:{method}` (Vertex AI: needs
 * `Authorization: Bearer <a token this fake issued, not expired>`, else 401 UNAUTHENTICATED), with
 * method generateContent, streamGenerateContent (needs `alt=sse`), embedContent and
 * batchEmbedContents (Google AI), predict (Vertex AI); `/token` (the OAuth2 JWT-bearer grant: the
 * assertion must be an RS256 JWT signed by the fake's `publicKey`'s private key, else 400
 * invalid_grant; answers `{"access_token": "ya29.fake-<n>", "expires_in": tokenLifetimeSeconds,
 * "token_type": "Bearer"}`); and GET `/computeMetadata/v1/…`, a VM's metadata server for
 * Application Default Credentials (see `metadata`). Anything else: 404 NOT_FOUND. A token request
 * may be left unanswered (`hangTokenRequests`).
 *
 * Scenarios ({@link GEMINI_SCENARIOS}) are chosen as in fake-server.ts: the last user turn's text
 * `scenario:<name>`, or setScenario / enqueueScenario.
 */
import { createPublicKey, createVerify, type KeyObject } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";
import {
  type Exchange,
  type FakeOptions,
  type FakeUpstream,
  GARBAGE_BODY,
  GARBAGE_CONTENT_TYPE,
  JSON_CONTENT_TYPE,
  type Selection,
  countWords,
  isObject,
  startFake,
  wordPieces,
} from "./fake-server.js";

/**
 * Every scenario of the Gemini fake. Streams send one `data: <GenerateContentResponse>\r\n\r\n`
 * per chunk; the last chunk carries the candidate's finishReason and the usageMetadata.
 *
 * - `echo` (default): answers with the last user turn's text parts joined with "\n", streamed one
 *   word per chunk, finishReason STOP; usage: prompt = words of every text part (system included),
 *   candidates = answer words. Embedding requests use it.
 * - `text`: "Hello from the fake upstream." in 5 chunks, STOP, usage 12/6 (total 18).
 * - `tool-calls`: text "Let me check." then two functionCall parts `get_weather` {"city":
 *   "Paris"} and `get_time` {"tz": "Europe/Paris"} (streamed: the text, then one chunk with both
 *   calls), finishReason STOP, usage 40/30.
 * - `usage`: the `text` answer with usage promptTokenCount 2060, cachedContentTokenCount 2048,
 *   candidatesTokenCount 6, thoughtsTokenCount 50, toolUsePromptTokenCount 4, total 2120; a thought
 *   part "thinking…" before the text.
 * - `max-tokens`, `safety`, `recitation`: "Hello from" then finishReason MAX_TOKENS / SAFETY
 *   (with safetyRatings) / RECITATION.
 * - `blocked-prompt`: no candidates, promptFeedback.blockReason SAFETY, usage 12/0.
 * - `slow`: `tokens` (default 40) chunks "t1 ", "t2 ", … "tN" with `delayMs` (default 100)
 *   between writes; unary waits `delayMs × tokens`.
 * - `mid-stream-error`: HTTP 200 stream "Hello", " from", then a `data: {"error": {"code": 503,
 *   "message": "The model is overloaded.", "status": "UNAVAILABLE"}}` event and the end.
 * - `truncated`: stream "Hello", " from", " the", then a clean end without a finish reason. Unary:
 *   the head announces the full Content-Length, half the body is sent, the socket destroyed.
 * - `split`: the `text` stream written in 7-character pieces (lines, CRLFs and JSON cut
 *   anywhere), `delayMs` (default 2) apart.
 * - `malformed-event`: the `text` stream with the second chunk's JSON cut short.
 * - `rate-limited`: 429 RESOURCE_EXHAUSTED with a QuotaFailure and a RetryInfo `"retryDelay":
 *   "2s"` detail (no Retry-After header).
 * - `rate-limited-verbose`: the same 429 as Google writes it for a free-tier quota, pretty-printed
 *   and over 2 KB: a Help detail with its links, a QuotaFailure of four violations, and RetryInfo
 *   `"retryDelay": "7s"` last.
 * - `server-error`: 500 INTERNAL. `unavailable`: 503 UNAVAILABLE. `bad-request`: 400
 *   INVALID_ARGUMENT "Request contains an invalid argument.". `not-found`: 404 NOT_FOUND.
 * - `garbage`: 200, `content-type: text/html; charset=utf-8`, body `<html>oops</html>`.
 */
export const GEMINI_SCENARIOS = [
  "echo",
  "text",
  "tool-calls",
  "usage",
  "max-tokens",
  "safety",
  "recitation",
  "blocked-prompt",
  "slow",
  "mid-stream-error",
  "truncated",
  "split",
  "malformed-event",
  "rate-limited",
  "rate-limited-verbose",
  "server-error",
  "unavailable",
  "bad-request",
  "not-found",
  "garbage",
] as const;

export type GeminiScenario = (typeof GEMINI_SCENARIOS)[number];

/** The text the `text`, `usage` and `split` scenarios answer with. */
export const GEMINI_FIXTURE_TEXT = "Hello from the fake upstream.";

export interface GeminiFakeOptions extends FakeOptions {
  /** The Google AI API key the fake accepts. */
  readonly apiKey?: string;
  /** The public key that signs the service account's JWT assertions (PEM); no Vertex without it. */
  readonly publicKey?: string;
}

/** One token the fake's token endpoint issued. */
export interface IssuedToken {
  readonly token: string;
  /** The assertion's `iss`: the service account's email. */
  readonly serviceAccount: string;
  /** The assertion's `scope`. */
  readonly scope: string;
  /** `Date.now()` when it stops being accepted. */
  readonly expiresAt: number;
}

export interface GeminiFake extends FakeUpstream<GeminiScenario> {
  /** The OAuth2 token endpoint, for a key file's `token_uri`. */
  readonly tokenUri: string;
  /** Every token issued, in order. */
  readonly tokens: readonly IssuedToken[];
  /** The `expires_in` of the tokens issued next, in seconds (default 3600). */
  tokenLifetimeSeconds: number;
  /**
   * How many of the next token requests (`/token`, the metadata server's token) get no answer at
   * all: the fake reads the request and holds it until the client leaves or the fake closes.
   * Default 0.
   */
  hangTokenRequests: number;
}

const SSE_LINE_END = "\r\n";

/** Starts the Gemini fake on 127.0.0.1 with a free port. */
export async function createGeminiFake(options: GeminiFakeOptions = {}): Promise<GeminiFake> {
  const tokens: IssuedToken[] = [];
  const publicKey: KeyObject | undefined = options.publicKey === undefined ? undefined : createPublicKey(options.publicKey);
  const state = { tokenLifetimeSeconds: 3600, hangTokenRequests: 0 };
  const fake = await startFake<GeminiScenario>({
    scenarios: GEMINI_SCENARIOS,
    defaultScenario: "echo",
    baseUrlSuffix: "",
    options,
    commonHeaders: () => ({ "x-goog-fake": "1" }),
    handle: (ex) =>
      handle(ex, {
        apiKey: options.apiKey,
        publicKey,
        tokens,
        lifetime: () => state.tokenLifetimeSeconds,
        hang: () => state.hangTokenRequests > 0 && state.hangTokenRequests-- > 0,
      }),
  });
  // Accessors, not values: Object.assign would copy the getter's value once.
  return Object.defineProperties(fake, {
    tokenUri: { value: `${fake.url}/token`, enumerable: true },
    tokens: { value: tokens, enumerable: true },
    tokenLifetimeSeconds: {
      get: () => state.tokenLifetimeSeconds,
      set: (v: number) => {
        state.tokenLifetimeSeconds = v;
      },
      enumerable: true,
    },
    hangTokenRequests: {
      get: () => state.hangTokenRequests,
      set: (n: number) => {
        state.hangTokenRequests = n;
      },
      enumerable: true,
    },
  }) as GeminiFake;
}

interface Auth {
  readonly apiKey: string | undefined;
  readonly publicKey: KeyObject | undefined;
  readonly tokens: IssuedToken[];
  lifetime(): number;
  /** Whether this token request is one to leave unanswered (counts it). */
  hang(): boolean;
}

const googleAiPath = /^\/(v1beta|v1)\/models\/([^/:]+):([A-Za-z]+)$/;
const vertexPath = /^\/(v1beta1|v1)\/projects\/([^/]+)\/locations\/([^/]+)\/publishers\/google\/models\/([^/:]+):([A-Za-z]+)$/;

async function handle(ex: Exchange<GeminiScenario>, auth: Auth): Promise<void> {
  const { record } = ex;
  const isTokenRequest = (record.method === "POST" && record.path === "/token") || (record.method === "GET" && record.path.endsWith("/token"));
  if (isTokenRequest && auth.hang()) {
    await new Promise<void>((resolve) => {
      if (ex.signal.aborted) resolve();
      else ex.signal.addEventListener("abort", () => resolve(), { once: true });
    });
    return;
  }
  if (record.method === "POST" && record.path === "/token") {
    token(ex, auth);
    return;
  }
  if (record.method === "GET" && record.path.startsWith("/computeMetadata/v1/")) {
    metadata(ex, auth);
    return;
  }
  const google = googleAiPath.exec(record.path);
  const vertex = vertexPath.exec(record.path);
  if (record.method !== "POST" || (google === null && vertex === null)) {
    sendError(ex, 404, "NOT_FOUND", `The requested URL ${record.path} was not found on this server.`);
    return;
  }
  const method = google !== null ? google[3]! : vertex![5]!;
  const model = google !== null ? google[2]! : vertex![4]!;
  if (google !== null) {
    if (auth.apiKey === undefined || record.headers["x-goog-api-key"] !== auth.apiKey) {
      sendError(ex, 400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", [
        { "@type": "type.googleapis.com/google.rpc.ErrorInfo", reason: "API_KEY_INVALID", domain: "googleapis.com" },
      ]);
      return;
    }
  } else if (!bearerValid(record.headers, auth.tokens)) {
    sendError(ex, 401, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 access token.");
    return;
  }
  const body = record.body;
  if (!isObject(body)) {
    sendError(ex, 400, "INVALID_ARGUMENT", "Invalid JSON payload received.");
    return;
  }
  const allowed = google !== null ? ["generateContent", "streamGenerateContent", "embedContent", "batchEmbedContents"] : ["generateContent", "streamGenerateContent", "predict"];
  if (!allowed.includes(method)) {
    sendError(ex, 404, "NOT_FOUND", `Method ${method} is not found for model ${model}.`);
    return;
  }
  if (method === "embedContent" || method === "batchEmbedContents" || method === "predict") {
    embed(ex, method, body, model);
    return;
  }
  record.stream = method === "streamGenerateContent";
  if (record.stream && record.query["alt"] !== "sse") {
    sendError(ex, 400, "INVALID_ARGUMENT", "this fake streams SSE only (alt=sse)");
    return;
  }
  if (!Array.isArray(body["contents"]) || body["contents"].length === 0) {
    sendError(ex, 400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: contents is not specified");
    return;
  }
  const contents = body["contents"] as unknown[];
  const lastUser = [...contents].reverse().find((c) => isObject(c) && c["role"] === "user" && textOf(c).length > 0);
  if (lastUser !== undefined) record.lastUserText = textOf(lastUser);
  const selection = ex.selectScenario(record.lastUserText);
  if ("unknown" in selection) {
    sendError(ex, 400, "INVALID_ARGUMENT", `fake upstream: unknown scenario "${selection.unknown}"`);
    return;
  }
  const promptWords = countWords(textOf(body["systemInstruction"])) + contents.reduce<number>((n, c) => n + countWords(textOf(c)), 0);
  await answer(ex, selection, model, promptWords);
}

/** The text parts of a Content, joined with "\n". */
function textOf(content: unknown): string {
  if (!isObject(content) || !Array.isArray(content["parts"])) return "";
  return (content["parts"] as unknown[])
    .filter((p): p is Record<string, unknown> => isObject(p) && typeof p["text"] === "string")
    .map((p) => p["text"] as string)
    .join("\n");
}

function bearerValid(headers: IncomingHttpHeaders, tokens: readonly IssuedToken[]): boolean {
  const m = /^Bearer (\S+)$/.exec(headers["authorization"] ?? "");
  const issued = m === null ? undefined : tokens.find((t) => t.token === m[1]);
  return issued !== undefined && issued.expiresAt > Date.now();
}

/** The JWT-bearer grant (RFC 7523): checks the assertion's RS256 signature and issues a token. */
function token(ex: Exchange<GeminiScenario>, auth: Auth): void {
  const form = new URLSearchParams(ex.record.rawBody);
  const oauthError = (error: string, description: string): void =>
    ex.send(400, JSON_CONTENT_TYPE, JSON.stringify({ error, error_description: description }));
  if (form.get("grant_type") !== "urn:ietf:params:oauth:grant-type:jwt-bearer") {
    oauthError("unsupported_grant_type", "Invalid grant_type");
    return;
  }
  const parts = (form.get("assertion") ?? "").split(".");
  if (parts.length !== 3 || auth.publicKey === undefined) {
    oauthError("invalid_grant", "Invalid JWT");
    return;
  }
  const verifier = createVerify("RSA-SHA256");
  verifier.update(`${parts[0]}.${parts[1]}`);
  if (!verifier.verify(auth.publicKey, Buffer.from(parts[2]!, "base64url"))) {
    oauthError("invalid_grant", "Invalid JWT Signature.");
    return;
  }
  const claims = JSON.parse(Buffer.from(parts[1]!, "base64url").toString("utf8")) as Record<string, unknown>;
  const lifetime = auth.lifetime();
  const issued: IssuedToken = {
    token: `ya29.fake-${auth.tokens.length + 1}`,
    serviceAccount: String(claims["iss"]),
    scope: String(claims["scope"]),
    expiresAt: Date.now() + lifetime * 1000,
  };
  auth.tokens.push(issued);
  ex.send(200, JSON_CONTENT_TYPE, JSON.stringify({ access_token: issued.token, expires_in: lifetime, token_type: "Bearer" }));
}

/**
 * The metadata server of a Google Cloud VM, as far as credentials go: `GET
 * /computeMetadata/v1/instance` (the presence check) and `GET
 * /computeMetadata/v1/instance/service-accounts/default/token` (an access token of the VM's
 * service account, here "default@metadata", scopes as asked), both needing the header
 * `Metadata-Flavor: Google` and answering with it.
 */
function metadata(ex: Exchange<GeminiScenario>, auth: Auth): void {
  const flavor = { "metadata-flavor": "Google" };
  if (ex.record.headers["metadata-flavor"] !== "Google") {
    ex.send(403, "text/html", "Missing Metadata-Flavor:Google header.", flavor);
    return;
  }
  if (ex.record.path === "/computeMetadata/v1/instance" || ex.record.path === "/computeMetadata/v1/instance/") {
    ex.send(200, "application/text", "attributes/\nservice-accounts/\n", flavor);
    return;
  }
  if (ex.record.path !== "/computeMetadata/v1/instance/service-accounts/default/token") {
    ex.send(404, "text/html", "Not Found", flavor);
    return;
  }
  const lifetime = auth.lifetime();
  const issued: IssuedToken = {
    token: `ya29.fake-${auth.tokens.length + 1}`,
    serviceAccount: "default@metadata",
    scope: ex.record.query["scopes"] ?? "",
    expiresAt: Date.now() + lifetime * 1000,
  };
  auth.tokens.push(issued);
  ex.send(200, JSON_CONTENT_TYPE, JSON.stringify({ access_token: issued.token, expires_in: lifetime, token_type: "Bearer" }), flavor);
}

/** The fake's embedding of a text: `dims` (default 8) deterministic values in [0, 1). */
export function fakeVector(text: string, dims: number): number[] {
  let seed = 0;
  for (const ch of text) seed = (seed * 31 + ch.codePointAt(0)!) % 9973;
  return Array.from({ length: dims }, (_, j) => ((seed + j * 37) % 100) / 100);
}

function embed(ex: Exchange<GeminiScenario>, method: string, body: Record<string, unknown>, model: string): void {
  ex.record.scenario = "echo";
  const dimsOf = (v: unknown): number => (typeof v === "number" ? v : 8);
  if (method === "embedContent") {
    const text = textOf(body["content"]);
    ex.send(200, JSON_CONTENT_TYPE, JSON.stringify({ embedding: { values: fakeVector(text, dimsOf(body["outputDimensionality"])) } }));
    return;
  }
  if (method === "batchEmbedContents") {
    const requests = Array.isArray(body["requests"]) ? (body["requests"] as unknown[]) : [];
    const wrong = requests.find((r) => !isObject(r) || r["model"] !== `models/${model}`);
    if (requests.length === 0 || wrong !== undefined) {
      sendError(ex, 400, "INVALID_ARGUMENT", "* BatchEmbedContentsRequest.requests[0].model: the model of each request must be the batch's");
      return;
    }
    const embeddings = requests.map((r) => ({ values: fakeVector(textOf((r as Record<string, unknown>)["content"]), dimsOf((r as Record<string, unknown>)["outputDimensionality"])) }));
    ex.send(200, JSON_CONTENT_TYPE, JSON.stringify({ embeddings }));
    return;
  }
  const instances = Array.isArray(body["instances"]) ? (body["instances"] as unknown[]) : [];
  const parameters = isObject(body["parameters"]) ? body["parameters"] : {};
  const predictions = instances.map((i) => {
    const text = isObject(i) && typeof i["content"] === "string" ? i["content"] : "";
    return { embeddings: { values: fakeVector(text, dimsOf(parameters["outputDimensionality"])), statistics: { truncated: false, token_count: countWords(text) } } };
  });
  ex.send(200, JSON_CONTENT_TYPE, JSON.stringify({ predictions, metadata: { billableCharacterCount: 10 } }));
}

type Obj = Record<string, unknown>;

/** A GenerateContentResponse with one candidate of these parts. */
function chunk(model: string, id: string, parts: Obj[], extra: { finishReason?: string; usage?: Obj; candidate?: Obj } = {}): Obj {
  return {
    candidates: [
      {
        content: { role: "model", parts },
        ...(extra.finishReason === undefined ? {} : { finishReason: extra.finishReason }),
        index: 0,
        ...extra.candidate,
      },
    ],
    ...(extra.usage === undefined ? {} : { usageMetadata: extra.usage }),
    modelVersion: model,
    responseId: id,
  };
}

const usageOf = (prompt: number, candidates: number): Obj => ({ promptTokenCount: prompt, candidatesTokenCount: candidates, totalTokenCount: prompt + candidates });
const sse = (data: unknown): string => `data: ${typeof data === "string" ? data : JSON.stringify(data)}${SSE_LINE_END}${SSE_LINE_END}`;

/** The pieces of an answer: text pieces, then the last chunk's parts, finish reason and usage. */
interface Script {
  readonly pieces: readonly Obj[][];
  readonly finishReason?: string;
  readonly usage: Obj;
  readonly candidate?: Obj;
  /** Unary body instead of the joined pieces. */
  readonly unary?: Obj;
}

const textParts = (...texts: string[]): Obj[][] => texts.map((text) => [{ text }]);

function scriptOf(name: GeminiScenario, words: string[], promptWords: number, tokens: number): Script {
  const fixtureWords = wordPieces(GEMINI_FIXTURE_TEXT);
  switch (name) {
    case "text":
    case "split":
    case "malformed-event":
      return { pieces: textParts(...fixtureWords), finishReason: "STOP", usage: usageOf(12, 6) };
    case "tool-calls":
      return {
        pieces: [
          [{ text: "Let me check." }],
          [{ functionCall: { name: "get_weather", args: { city: "Paris" } } }, { functionCall: { name: "get_time", args: { tz: "Europe/Paris" } } }],
        ],
        finishReason: "STOP",
        usage: usageOf(40, 30),
      };
    case "usage":
      return {
        pieces: [[{ text: "thinking…", thought: true }], ...textParts(...fixtureWords)],
        finishReason: "STOP",
        usage: { promptTokenCount: 2060, cachedContentTokenCount: 2048, candidatesTokenCount: 6, thoughtsTokenCount: 50, toolUsePromptTokenCount: 4, totalTokenCount: 2120 },
      };
    case "max-tokens":
      return { pieces: textParts("Hello", " from"), finishReason: "MAX_TOKENS", usage: usageOf(12, 2) };
    case "safety":
      return {
        pieces: textParts("Hello", " from"),
        finishReason: "SAFETY",
        usage: usageOf(12, 2),
        candidate: { safetyRatings: [{ category: "HARM_CATEGORY_DANGEROUS_CONTENT", probability: "HIGH", blocked: true }] },
      };
    case "recitation":
      return { pieces: textParts("Hello", " from"), finishReason: "RECITATION", usage: usageOf(12, 2) };
    case "slow":
      return { pieces: textParts(...Array.from({ length: tokens }, (_, i) => (i + 1 < tokens ? `t${i + 1} ` : `t${i + 1}`))), finishReason: "STOP", usage: usageOf(promptWords, tokens) };
    default:
      return { pieces: words.map((w) => [{ text: w }]), finishReason: "STOP", usage: usageOf(promptWords, words.length) };
  }
}

async function answer(ex: Exchange<GeminiScenario>, selection: Selection<GeminiScenario>, model: string, promptWords: number): Promise<void> {
  const name = selection.name;
  const id = `resp-fake-${ex.record.index}`;
  switch (name) {
    case "rate-limited":
      sendError(ex, 429, "RESOURCE_EXHAUSTED", "You exceeded your current quota, please check your plan and billing details.", [
        {
          "@type": "type.googleapis.com/google.rpc.QuotaFailure",
          violations: [{ quotaMetric: "generativelanguage.googleapis.com/generate_content_free_tier_requests", quotaId: "GenerateRequestsPerMinutePerProjectPerModel-FreeTier" }],
        },
        { "@type": "type.googleapis.com/google.rpc.RetryInfo", retryDelay: "2s" },
      ]);
      return;
    case "rate-limited-verbose": {
      const metric = "generativelanguage.googleapis.com/generate_content_free_tier";
      const dims = { location: "global", model };
      sendError(ex, 429, "RESOURCE_EXHAUSTED", "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. To monitor your current usage, head to: https://ai.dev/usage?tab=rate-limit.", [
        {
          "@type": "type.googleapis.com/google.rpc.Help",
          links: [
            { description: "Learn more about Gemini API quotas", url: "https://ai.google.dev/gemini-api/docs/rate-limits" },
            { description: "Monitor your current usage and request a quota increase", url: "https://ai.dev/usage?tab=rate-limit" },
          ],
        },
        {
          "@type": "type.googleapis.com/google.rpc.QuotaFailure",
          violations: [
            { quotaMetric: `${metric}_requests`, quotaId: "GenerateRequestsPerDayPerProjectPerModel-FreeTier", quotaDimensions: dims, quotaValue: "250" },
            { quotaMetric: `${metric}_requests`, quotaId: "GenerateRequestsPerMinutePerProjectPerModel-FreeTier", quotaDimensions: dims, quotaValue: "10" },
            { quotaMetric: `${metric}_input_token_count`, quotaId: "GenerateContentInputTokensPerModelPerMinute-FreeTier", quotaDimensions: dims, quotaValue: "250000" },
            { quotaMetric: `${metric}_input_token_count`, quotaId: "GenerateContentInputTokensPerModelPerDay-FreeTier", quotaDimensions: dims, quotaValue: "1000000" },
          ],
        },
        { "@type": "type.googleapis.com/google.rpc.RetryInfo", retryDelay: "7s" },
      ]);
      return;
    }
    case "server-error":
      sendError(ex, 500, "INTERNAL", "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting");
      return;
    case "unavailable":
      sendError(ex, 503, "UNAVAILABLE", "The model is overloaded. Please try again later.");
      return;
    case "bad-request":
      sendError(ex, 400, "INVALID_ARGUMENT", "Request contains an invalid argument.");
      return;
    case "not-found":
      sendError(ex, 404, "NOT_FOUND", `models/${model} is not found for API version v1beta, or is not supported for generateContent.`);
      return;
    case "garbage":
      ex.send(200, GARBAGE_CONTENT_TYPE, GARBAGE_BODY);
      return;
    case "blocked-prompt": {
      const body = { promptFeedback: { blockReason: "SAFETY", safetyRatings: [{ category: "HARM_CATEGORY_HARASSMENT", probability: "HIGH" }] }, usageMetadata: usageOf(12, 0), modelVersion: model, responseId: id };
      if (ex.record.stream) await ex.stream([sse(body)], 0);
      else ex.send(200, JSON_CONTENT_TYPE, JSON.stringify(body));
      return;
    }
    default:
      break;
  }
  const tokens = Math.max(1, selection.options.tokens ?? 40);
  const script = scriptOf(name, wordPieces(ex.record.lastUserText ?? ""), promptWords, tokens);
  const delay = ex.delayMs(selection, name === "slow" ? 100 : name === "split" ? 2 : 0);
  if (ex.record.stream) {
    const events = script.pieces.map((parts, i) =>
      i + 1 < script.pieces.length
        ? sse(chunk(model, id, parts))
        : sse(chunk(model, id, parts, { finishReason: script.finishReason ?? "STOP", usage: script.usage, ...(script.candidate === undefined ? {} : { candidate: script.candidate }) })),
    );
    if (name === "mid-stream-error") {
      await ex.stream([sse(chunk(model, id, [{ text: "Hello" }])), sse(chunk(model, id, [{ text: " from" }])), sse({ error: { code: 503, message: "The model is overloaded.", status: "UNAVAILABLE" } })], delay);
      return;
    }
    if (name === "truncated") {
      await ex.stream(textParts("Hello", " from", " the").map((p) => sse(chunk(model, id, p))), delay);
      return;
    }
    if (name === "malformed-event") {
      events[1] = events[1]!.slice(0, 30) + SSE_LINE_END + SSE_LINE_END;
      await ex.stream(events, delay);
      return;
    }
    if (name === "split") {
      const whole = events.join("");
      await ex.stream(whole.match(/[^]{1,7}/g) ?? [], delay);
      return;
    }
    await ex.stream(events, delay);
    return;
  }
  if (name === "mid-stream-error") {
    sendError(ex, 503, "UNAVAILABLE", "The model is overloaded.");
    return;
  }
  const parts = script.pieces.flat();
  const joined: Obj[] = [];
  for (const p of parts) {
    const last = joined.at(-1);
    if (typeof p["text"] === "string" && p["thought"] === undefined && last !== undefined && typeof last["text"] === "string" && last["thought"] === undefined) {
      joined[joined.length - 1] = { text: (last["text"] as string) + p["text"] };
    } else {
      joined.push(p);
    }
  }
  const body = chunk(model, id, joined, { finishReason: script.finishReason ?? "STOP", usage: script.usage, ...(script.candidate === undefined ? {} : { candidate: script.candidate }) });
  if (!(await ex.pause(name === "slow" ? delay * tokens : delay))) return;
  if (name === "truncated") {
    ex.cut(200, JSON_CONTENT_TYPE, JSON.stringify(body));
    return;
  }
  ex.send(200, JSON_CONTENT_TYPE, JSON.stringify(body));
}

/** Google's error body. */
function sendError(ex: Exchange<GeminiScenario>, code: number, status: string, message: string, details?: Obj[]): void {
  ex.send(code, JSON_CONTENT_TYPE, JSON.stringify({ error: { code, message, status, ...(details === undefined ? {} : { details }) } }, null, 2));
}
