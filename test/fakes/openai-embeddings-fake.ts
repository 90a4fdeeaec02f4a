/**
 * A fake OpenAI embeddings upstream (`POST /v1/embeddings`) for adapter and end-to-end tests: a
 * real HTTP server on 127.0.0.1 (the shared machinery of fake-server.ts: recording, scenario queue,
 * delays) that answers in OpenAI's wire shape and records every request.
 *
 * ```ts
 * const fake = await createOpenAIEmbeddingsFake({ dimensions: 1536 });
 * // adapter base URL: fake.baseUrl (= `${fake.url}/v1`); Azure form: fake.url (+ options.azure)
 * fake.enqueueScenario("rate-limited", { retryAfter: "0" }); // one 429, then answers again
 * // then: embeddingInputs(fake), fake.requests[0].headers.authorization, fake.requests[0].body, …
 * await fake.close();
 * ```
 *
 * Routes (POST only; anything else is a 404 `Invalid URL (GET /v1/…)` error body):
 * - `/v1/embeddings` — `model` and `input` are required (400 otherwise, as OpenAI).
 * - `/openai/deployments/{deployment}/embeddings?api-version=…` (Azure) — needs `api-version`
 *   (404 `Resource not found` otherwise, as Azure); `model` optional; the deployment is recorded as
 *   `deployment`.
 *
 * Requests are checked as OpenAI does, each refusal a 400 in OpenAI's error shape
 * (`{"error":{"message","type":"invalid_request_error","param","code"}}`): `input` a non-empty
 * string, token list, or array of either (no empty string, no empty token list, all of one kind);
 * at most `settings.maxInputs` inputs (OpenAI: 2048); `encoding_format` "float" (the default) or
 * "base64"; `dimensions` an integer from 1 to `settings.dimensions`.
 *
 * Answers (scenario `embed`, the default): `{"object":"list","data":[{"object":"embedding",
 * "index":i,"embedding":…}],"model":…,"usage":{"prompt_tokens":n,"total_tokens":n}}`, compact
 * JSON. Each vector is {@link fakeEmbedding} of its input: deterministic, unit length, shortened to
 * `dimensions` (truncated and scaled back to unit length) when asked; sent as JSON numbers (each
 * FP32 value's shortest text, so that it parses back to the same FP32) or, with
 * `encoding_format: "base64"`, as the base64 of its little-endian FP32 bytes. `prompt_tokens`
 * counts whitespace-separated words of the texts, or the token ids.
 *
 * Scenarios: see {@link EMBEDDINGS_SCENARIOS}; chosen by {@link FakeUpstream.setScenario} or
 * {@link FakeUpstream.enqueueScenario} (there is no message text to select one); the delay before
 * answering is the scenario's `delayMs` or the `x-fake-delay-ms` request header.
 */
import {
  type Exchange,
  type FakeOptions,
  type FakeUpstream,
  JSON_CONTENT_TYPE,
  type RecordedRequest,
  countWords,
  isObject,
  startFake,
} from "./fake-server.js";
import { routeOpenAI, sendError } from "./openai-fake.js";

/**
 * Every scenario of the embeddings fake. Error scenarios answer before any check of the body.
 *
 * - `embed` (default): the answer described above.
 * - `out-of-order`: the same answer with `data` in reverse order (each item keeps its `index`).
 * - `missing-index`: the answer with `index` left out of the last item.
 * - `duplicate-index`: the answer with the last item's `index` the same as the first's.
 * - `wrong-count`: the answer without its last item (with one input: an empty `data`).
 * - `bad-base64`: the answer with the first item's `embedding` as text that is not base64 of
 *   FP32 values (whatever `encoding_format` asked).
 * - `mismatched-lengths`: the answer with the last item's vector one value shorter.
 * - `rate-limited`: 429, `Retry-After` the scenario's `retryAfter` (default "1"), OpenAI's
 *   rate-limit body (code `rate_limit_exceeded`).
 * - `server-error`: 500, OpenAI's `server_error` body.
 * - `bad-request`: 400, OpenAI's error body (param `input`, code `context_length_exceeded`).
 */
export const EMBEDDINGS_SCENARIOS = [
  "embed",
  "out-of-order",
  "missing-index",
  "duplicate-index",
  "wrong-count",
  "bad-base64",
  "mismatched-lengths",
  "rate-limited",
  "server-error",
  "bad-request",
] as const;

export type EmbeddingsScenario = (typeof EMBEDDINGS_SCENARIOS)[number];

/** What the fake does; tests may change these at any time (each request reads them as it arrives). */
export interface EmbeddingsFakeSettings {
  /** The full vector length (default 1536, text-embedding-3-small's). */
  dimensions: number;
  /** The most inputs in one request; more are refused with a 400 as OpenAI does (default 2048). */
  maxInputs: number;
  /**
   * What the fake makes of `encoding_format: "base64"`: "answer" (default) in base64; "refuse" with
   * a 400 naming `encoding_format`, as servers without base64 do; "ignore" answering JSON numbers,
   * as servers that do not know the field do.
   */
  base64: "answer" | "refuse" | "ignore";
}

/** The embeddings fake; see {@link FakeUpstream}. `baseUrl` is `${url}/v1`. */
export interface OpenAIEmbeddingsFake extends FakeUpstream<EmbeddingsScenario> {
  readonly settings: EmbeddingsFakeSettings;
}

/** The message of OpenAI's 400 for an `input` it cannot take (empty, too many items, mixed). */
export const INVALID_INPUT_MESSAGE = "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.";

/**
 * Starts the fake on 127.0.0.1 with a free port. `options` are defaults for every scenario
 * (`delayMs`, `retryAfter`) and the initial {@link EmbeddingsFakeSettings}.
 */
export async function createOpenAIEmbeddingsFake(options: FakeOptions & Partial<EmbeddingsFakeSettings> = {}): Promise<OpenAIEmbeddingsFake> {
  const { dimensions = 1536, maxInputs = 2048, base64 = "answer", ...scenarioOptions } = options;
  const settings: EmbeddingsFakeSettings = { dimensions, maxInputs, base64 };
  const fake = await startFake<EmbeddingsScenario>({
    scenarios: EMBEDDINGS_SCENARIOS,
    defaultScenario: "embed",
    baseUrlSuffix: "/v1",
    options: scenarioOptions,
    commonHeaders: (rec) => ({ "x-request-id": `req_fake_${rec.index}`, "openai-processing-ms": "1" }),
    handle: (ex) => handle(ex, settings),
  });
  return Object.assign(fake, { settings });
}

/** The inputs of every embeddings request the fake received, in arrival order (texts or token lists). */
export function embeddingInputs(fake: FakeUpstream<string>): (string | number[])[][] {
  return fake.requests.filter((r) => r.method === "POST" && /\/embeddings$/.test(r.path)).map((r) => inputsOf(r) ?? []);
}

/** The inputs of one recorded request as a list (a single string or token list is one input). */
export function inputsOf(rec: RecordedRequest): (string | number[])[] | undefined {
  const input = isObject(rec.body) ? rec.body["input"] : undefined;
  if (typeof input === "string") return [input];
  if (!Array.isArray(input)) return undefined;
  if (input.length > 0 && input.every((v) => typeof v === "number")) return [input as number[]];
  return input as (string | number[])[];
}

/**
 * The fake's vector for one input: values from a generator seeded by a hash of the text (or of the
 * token ids), scaled to unit length, as FP32; with `dimensions` below `full`, its first
 * `dimensions` values scaled back to unit length (how text-embedding-3 shortens its vectors).
 */
export function fakeEmbedding(input: string | readonly number[], dimensions = 1536, full = Math.max(dimensions, 1536)): Float32Array {
  let h = 0x811c9dc5;
  const key = typeof input === "string" ? `t:${input}` : `i:${input.join(",")}`;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  // mulberry32
  let state = h >>> 0;
  const next = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const values = new Float64Array(full);
  for (let i = 0; i < full; i++) values[i] = next() * 2 - 1;
  const n = Math.min(dimensions, full);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += values[i]! * values[i]!;
  const norm = Math.sqrt(sum) || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = values[i]! / norm;
  return out;
}

/** The base64 of a vector's little-endian FP32 bytes (OpenAI's `encoding_format: "base64"`). */
export function base64Of(v: Float32Array): string {
  const bytes = Buffer.alloc(v.length * 4);
  for (let i = 0; i < v.length; i++) bytes.writeFloatLE(v[i]!, i * 4);
  return bytes.toString("base64");
}

async function handle(ex: Exchange<EmbeddingsScenario>, settings: EmbeddingsFakeSettings): Promise<void> {
  const { record } = ex;
  const route = routeOpenAI(ex, "embeddings");
  if (route === undefined) return;
  const selection = ex.selectScenario(undefined);
  if ("unknown" in selection) return; // never: no message text selects a scenario here
  if (!(await ex.pause(ex.delayMs(selection, 0)))) return;
  switch (selection.name) {
    case "rate-limited":
      sendError(
        ex,
        429,
        "Rate limit reached for text-embedding-3-small in organization org-fake on requests per min (RPM): Limit 3000, Used 3000, Requested 1. Please try again in 20ms.",
        "requests",
        null,
        "rate_limit_exceeded",
        { "retry-after": selection.options.retryAfter ?? "1" },
      );
      return;
    case "server-error":
      sendError(ex, 500, "The server had an error while processing your request. Sorry about that!", "server_error", null, null);
      return;
    case "bad-request":
      invalid(ex, "This model's maximum context length is 8192 tokens, however you requested 9000 tokens (9000 in your prompt; 0 for the completion). Please reduce your prompt; or completion length.", "input", "context_length_exceeded");
      return;
    default:
      break;
  }
  const body = record.body;
  if (!isObject(body)) {
    invalid(ex, "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)", null, null);
    return;
  }
  if (route === "openai" && typeof body["model"] !== "string") {
    invalid(ex, "you must provide a model parameter", null, null);
    return;
  }
  if (body["input"] === undefined) {
    invalid(ex, "Missing required parameter: 'input'.", "input", "missing_required_parameter");
    return;
  }
  const inputs = inputsOf(record);
  if (inputs === undefined || !validInputs(inputs) || inputs.length > settings.maxInputs) {
    invalid(ex, INVALID_INPUT_MESSAGE, null, null);
    return;
  }
  const format = body["encoding_format"] ?? "float";
  if (format !== "float" && format !== "base64") {
    invalid(ex, `Invalid value for 'encoding_format': ${JSON.stringify(format).slice(0, 40)}. Supported values are: 'float' and 'base64'.`, "encoding_format", "invalid_value");
    return;
  }
  if (format === "base64" && settings.base64 === "refuse") {
    invalid(ex, "encoding_format 'base64' is not supported by this server; use 'float'.", "encoding_format", "invalid_value");
    return;
  }
  const dims = body["dimensions"] ?? settings.dimensions;
  if (typeof dims !== "number" || !Number.isInteger(dims) || dims < 1 || dims > settings.dimensions) {
    invalid(ex, `Invalid value for 'dimensions' = ${String(dims).slice(0, 20)}. Must be an integer from 1 to ${settings.dimensions}.`, "dimensions", "invalid_value");
    return;
  }
  const asBase64 = format === "base64" && settings.base64 === "answer";
  const vectors = inputs.map((input) => fakeEmbedding(input, dims, settings.dimensions));
  if (selection.name === "mismatched-lengths") vectors[vectors.length - 1] = vectors[vectors.length - 1]!.subarray(0, -1);
  const data: Record<string, unknown>[] = vectors.map((v, index) => ({ object: "embedding", index, embedding: asBase64 ? base64Of(v) : Array.from(v) }));
  spoil(selection.name, data);
  const tokens = inputs.reduce<number>((n, i) => n + (typeof i === "string" ? countWords(i) : i.length), 0);
  const model = typeof body["model"] === "string" ? body["model"] : (record.deployment ?? "text-embedding-3-small");
  const answer = { object: "list", data, model, usage: { prompt_tokens: tokens, total_tokens: tokens } };
  ex.send(200, JSON_CONTENT_TYPE, JSON.stringify(answer), { "openai-model": model });
}

/** Non-empty texts, or non-empty lists of non-negative integer ids; one kind, as OpenAI takes them. */
function validInputs(inputs: readonly (string | number[])[]): boolean {
  if (inputs.length === 0) return false;
  const texts = inputs.every((i) => typeof i === "string" && i !== "");
  const ids = inputs.every((i) => Array.isArray(i) && i.length > 0 && i.every((t) => Number.isInteger(t) && t >= 0));
  return texts || ids;
}

/** Makes the answer of a malformed-answer scenario out of the good one (`mismatched-lengths`: see handle). */
function spoil(scenario: EmbeddingsScenario, data: Record<string, unknown>[]): void {
  const last = data[data.length - 1]!;
  switch (scenario) {
    case "out-of-order":
      data.reverse();
      return;
    case "missing-index":
      delete last["index"];
      return;
    case "duplicate-index":
      last["index"] = data[0]!["index"];
      return;
    case "wrong-count":
      data.pop();
      return;
    case "bad-base64":
      data[0]!["embedding"] = "not base64!";
      return;
    default:
      return;
  }
}

/** An `invalid_request_error` in OpenAI's shape. */
function invalid(ex: Exchange<EmbeddingsScenario>, message: string, param: string | null, code: string | null): void {
  sendError(ex, 400, message, "invalid_request_error", param, code);
}
