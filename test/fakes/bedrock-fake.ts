/**
 * A fake Amazon Bedrock Runtime for the `bedrock` kind's tests: a real HTTP/2 server (cleartext,
 * prior knowledge, as the AWS SDK's default handler speaks it) on 127.0.0.1 that speaks Bedrock's
 * REST wire and records every request.
 *
 * ```ts
 * const fake = await createBedrockFake();
 * // upstream: endpoints: [fake.url], options: { region: "us-east-1", credentials: BEDROCK_CREDENTIALS }
 * // per request: last user message text "scenario:tool-calls" (or fake.setScenario("tool-calls"))
 * // then: fake.requests[0].operation, .modelId, .body, .auth
 * await fake.close();
 * ```
 *
 * Routes: `POST /model/{modelId}/converse` (a JSON answer), `POST /model/{modelId}/converse-stream`
 * (`application/vnd.amazon.eventstream` frames encoded with @smithy/eventstream-codec: headers
 * `:message-type` event or exception, `:event-type` / `:exception-type`, `:content-type`
 * application/json; each event's JSON payload carries Bedrock's `p` padding field), `POST
 * /model/{modelId}/invoke` (Titan and Cohere embedding bodies). Errors are AWS-shaped: the status,
 * `x-amzn-errortype: <Name>:http://internal.amazon.com/coral/com.amazon.bedrock/`,
 * `x-amzn-requestid` and a JSON body `{"message": …}`.
 *
 * Authentication: every request must carry either `Authorization: Bearer <key>` with a key of
 * `apiKeys`, or a SigV4 `Authorization` header that the fake recomputes itself (canonical request,
 * string to sign, signing key, with node:crypto) from the secret of its access key id: an unknown
 * key id is 403 UnrecognizedClientException, a wrong signature (a wrong secret) 403
 * InvalidSignatureException, as Bedrock answers.
 */
import { createHash, createHmac } from "node:crypto";
import { EventEmitter } from "node:events";
import { createServer, type Http2ServerRequest, type Http2ServerResponse, type IncomingHttpHeaders } from "node:http2";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { EventStreamCodec } from "@smithy/eventstream-codec";
import { countWords, isObject, parseScenarioText, type ScenarioOptions, wordPieces } from "./fake-server.js";

/** The static credentials the fake knows (its one access key) and a Bedrock API key. */
export const BEDROCK_CREDENTIALS = { accessKeyId: "AKIAFAKEBEDROCK7EXMP", secretAccessKey: "fAkE/BedrockSecretKey+7f3a9c2e1b5d0e4a6c8b" } as const;
export const BEDROCK_API_KEY = "ABSKfakebedrockapikey0123456789abcdef";

/**
 * Every scenario of the Bedrock fake. Streams write one frame per write, a turn apart (`slow`:
 * `delayMs` apart).
 *
 * - `echo` (default): answers the last user message's text (its text blocks joined with "\n"),
 *   streamed one word per contentBlockDelta; stopReason end_turn; usage counts words (input: system
 *   and every text block; output: answer words).
 * - `text`: "Hello from the fake upstream." in 5 deltas; end_turn; usage 12 / 6.
 * - `tool-calls`: text block 0 "Let me check.", then toolUse block 1 `tooluse_weather`
 *   `get_weather` input `{"city": "Paris", "unit": "celsius"}` (4 deltas), toolUse block 2
 *   `tooluse_time` `get_time` with no input delta; stopReason tool_use; usage 40 / 30.
 * - `cache-usage`: the `text` answer with usage inputTokens 12, outputTokens 6,
 *   cacheReadInputTokens 2048, cacheWriteInputTokens 1500.
 * - `max-tokens`, `stop-sequence`, `guardrail`, `content-filtered`: the `text` answer with
 *   stopReason max_tokens, stop_sequence, guardrail_intervened, content_filtered.
 * - `slow`: `tokens` (default 40) deltas "t1 ", "t2 ", … with `delayMs` (default 100) between
 *   frames; unary waits `delayMs × tokens`.
 * - `mid-stream-exception`: messageStart, "Hello", " from", then a modelStreamErrorException frame
 *   (`:message-type` exception) and the end. Unary: 424 ModelStreamErrorException.
 * - `stream-throttled`: HTTP 200, then a throttlingException frame first of all. Unary: 429.
 * - `truncated`: messageStart, "Hello", " from", " the", then a clean end of the stream (no
 *   contentBlockStop, messageStop or metadata).
 * - `cut`: messageStart, "Hello", " from", then half of the next frame, and the connection
 *   (the HTTP/2 session's socket) destroyed.
 * - Errors (stream and unary): `throttled` 429 ThrottlingException, `validation` 400
 *   ValidationException, `server-error` 500 InternalServerException, `unavailable` 503
 *   ServiceUnavailableException, `not-found` 404 ResourceNotFoundException, `access-denied` 403
 *   AccessDeniedException, `model-error` 424 ModelErrorException, `quota` 400
 *   ServiceQuotaExceededException.
 * - `html-200`: HTTP 200 with `content-type: text/html` and the body `<html>oops` (Converse and
 *   ConverseStream): an answer the SDK cannot read.
 *
 * Invoke (embeddings) answers by the body it gets whatever the scenario, but the error ones.
 */
export const BEDROCK_SCENARIOS = [
  "echo",
  "text",
  "tool-calls",
  "cache-usage",
  "max-tokens",
  "stop-sequence",
  "guardrail",
  "content-filtered",
  "slow",
  "mid-stream-exception",
  "stream-throttled",
  "truncated",
  "cut",
  "throttled",
  "validation",
  "server-error",
  "unavailable",
  "not-found",
  "access-denied",
  "model-error",
  "quota",
  "html-200",
] as const;
export type BedrockScenario = (typeof BEDROCK_SCENARIOS)[number];

/** The text of the fixed answers. */
export const BEDROCK_TEXT = "Hello from the fake upstream.";

const errorScenarios: Partial<Record<BedrockScenario, [number, string, string]>> = {
  throttled: [429, "ThrottlingException", "Too many requests, please wait before trying again."],
  validation: [400, "ValidationException", "The model returned the following errors: prompt is too long"],
  "server-error": [500, "InternalServerException", "The server encountered an internal error."],
  unavailable: [503, "ServiceUnavailableException", "Bedrock is unable to process your request."],
  "not-found": [404, "ResourceNotFoundException", "Could not resolve the foundation model from the provided model identifier."],
  "access-denied": [403, "AccessDeniedException", "You don't have access to the model with the specified model ID."],
  "model-error": [424, "ModelErrorException", "The model failed to process the request."],
  quota: [400, "ServiceQuotaExceededException", "Your request exceeds the service quota for your account."],
};

const stopReasons: Partial<Record<BedrockScenario, string>> = {
  "max-tokens": "max_tokens",
  "stop-sequence": "stop_sequence",
  guardrail: "guardrail_intervened",
  "content-filtered": "content_filtered",
};

/** One request the fake received. */
export interface BedrockRequest {
  readonly index: number;
  readonly method: string;
  readonly path: string;
  /** converse, converse-stream or invoke; undefined for another path (answered 404). */
  readonly operation?: "converse" | "converse-stream" | "invoke";
  /** The `{modelId}` of the path, decoded (a model id or an inference-profile ARN). */
  readonly modelId?: string;
  readonly headers: IncomingHttpHeaders;
  readonly rawBody: string;
  readonly body: unknown;
  /** How it authenticated: a verified SigV4 signature, or a known bearer key; undefined when refused. */
  auth?: "sigv4" | "bearer";
  /** The region of the SigV4 credential scope. */
  region?: string;
  lastUserText?: string;
  scenario?: BedrockScenario;
  status?: number;
  readonly receivedAt: number;
  finishedAt?: number;
  /** When the client reset the stream or closed the connection before the answer was finished. */
  abortedAt?: number;
  /** When the fake cut the connection itself (`cut`). */
  cutAt?: number;
}

export interface BedrockFake {
  /** `http://127.0.0.1:<port>`: the upstream's endpoint. */
  readonly url: string;
  readonly requests: readonly BedrockRequest[];
  setScenario(name: BedrockScenario | null, options?: ScenarioOptions): void;
  enqueueScenario(name: BedrockScenario, options?: ScenarioOptions): void;
  /** Resolves with `requests[index]` once its answer is over (finished, aborted or cut); rejects after 5 s. */
  settled(index: number): Promise<BedrockRequest>;
  reset(): void;
  close(): Promise<void>;
  /** The most InvokeModel requests answered at once (authenticated, not yet answered) since the last reset. */
  readonly peakInvokesInFlight: number;
  /** Holds each InvokeModel answer `ms` before it is sent (0: none), so that requests overlap. */
  setInvokeHold(ms: number): void;
}

const utf8 = {
  encode: (s: string): Uint8Array => new TextEncoder().encode(s),
  decode: (b: Uint8Array): string => new TextDecoder().decode(b),
};
const codec = new EventStreamCodec(utf8.decode, utf8.encode);
const errorTypeSuffix = ":http://internal.amazon.com/coral/com.amazon.bedrock/";
const eventStreamType = "application/vnd.amazon.eventstream";

/** One event-stream frame: an event (`:event-type`) or an exception (`:exception-type`). */
export function frame(kind: "event" | "exception", type: string, payload: Record<string, unknown>): Uint8Array {
  return codec.encode({
    headers: {
      [kind === "event" ? ":event-type" : ":exception-type"]: { type: "string", value: type },
      ":content-type": { type: "string", value: "application/json" },
      ":message-type": { type: "string", value: kind },
    },
    // Bedrock pads every event's JSON with a `p` field of varying length.
    body: utf8.encode(JSON.stringify(kind === "event" ? { ...payload, p: "abcdefghijklmnopqrstuvwxyzABCDEF".slice(0, 3 + (JSON.stringify(payload).length % 29)) } : payload)),
  });
}

/** Starts the fake on 127.0.0.1, a free port. */
export async function createBedrockFake(secrets: Readonly<Record<string, string>> = { [BEDROCK_CREDENTIALS.accessKeyId]: BEDROCK_CREDENTIALS.secretAccessKey }, apiKeys: readonly string[] = [BEDROCK_API_KEY]): Promise<BedrockFake> {
  const requests: BedrockRequest[] = [];
  const settled = new Map<number, Promise<void>>();
  const arrivals = new EventEmitter();
  const queue: { name: BedrockScenario; options: ScenarioOptions }[] = [];
  let sticky: { name: BedrockScenario; options: ScenarioOptions } | undefined;
  let closing = false;
  let invokesInFlight = 0;
  let peakInvokes = 0;
  let invokeHoldMs = 0;

  const server = createServer((req, res) => {
    const url = new URL(req.url, "http://fake.invalid");
    const rec: BedrockRequest = { index: requests.length, method: req.method, path: url.pathname, headers: req.headers, rawBody: "", body: undefined, receivedAt: Date.now() };
    requests.push(rec);
    let cut = false;
    settled.set(
      rec.index,
      new Promise<void>((resolve) => {
        // The compatibility API emits "finish" on every close; writableEnded says whether the fake
        // ended the answer itself.
        res.once("close", () => {
          if (res.writableEnded) rec.finishedAt = Date.now();
          else if (!cut && !closing) rec.abortedAt = Date.now();
          resolve();
        });
      }),
    );
    arrivals.emit("request", rec.index);
    void (async () => {
      const chunks: Buffer[] = [];
      try {
        for await (const c of req) chunks.push(c as Buffer);
      } catch {
        return;
      }
      const raw = Buffer.concat(chunks);
      Object.assign(rec, { rawBody: raw.toString("utf8") });
      try {
        Object.assign(rec, { body: JSON.parse(rec.rawBody) as unknown });
      } catch {
        // not JSON: the route answers 400
      }
      await handle(req, res, rec, raw, () => (cut = true));
    })().catch(() => res.stream.destroy());
  });

  function choose(text: string | undefined): { name: BedrockScenario; options: ScenarioOptions } | { unknown: string } {
    const fromText = parseScenarioText(text);
    if (fromText !== undefined) {
      return (BEDROCK_SCENARIOS as readonly string[]).includes(fromText.name) ? { name: fromText.name as BedrockScenario, options: fromText.options } : { unknown: fromText.name };
    }
    return queue.shift() ?? sticky ?? { name: "echo", options: {} };
  }

  async function handle(req: Http2ServerRequest, res: Http2ServerResponse, rec: BedrockRequest, raw: Buffer, markCut: () => void): Promise<void> {
    const requestId = `fake-req-${rec.index}`;
    const sendError = (status: number, type: string, message: string): void => {
      rec.status = status;
      res.writeHead(status, { "content-type": "application/json", "x-amzn-requestid": requestId, "x-amzn-errortype": `${type}${errorTypeSuffix}` });
      res.end(JSON.stringify({ message }));
    };
    const route = /^\/model\/([^/]+)\/(converse|converse-stream|invoke)$/.exec(rec.path);
    if (req.method !== "POST" || route === null) {
      sendError(404, "UnknownOperationException", "Unknown operation");
      return;
    }
    Object.assign(rec, { operation: route[2], modelId: decodeURIComponent(route[1]!) });
    const refusal = authenticate(req, rec, raw);
    if (refusal !== undefined) {
      sendError(403, refusal[0], refusal[1]);
      return;
    }
    if (!isObject(rec.body)) {
      sendError(400, "ValidationException", "Malformed input request, please reformat your input and try again.");
      return;
    }
    const body = rec.body;
    const messages = Array.isArray(body["messages"]) ? (body["messages"] as unknown[]) : [];
    const lastUser = [...messages].reverse().find((m) => isObject(m) && m["role"] === "user");
    if (isObject(lastUser)) rec.lastUserText = textOf(lastUser["content"]);
    const chosen = choose(rec.lastUserText);
    if ("unknown" in chosen) {
      sendError(400, "ValidationException", `fake upstream: unknown scenario "${chosen.unknown}"`);
      return;
    }
    rec.scenario = chosen.name;
    const delayMs = chosen.options.delayMs ?? (chosen.name === "slow" ? 100 : 0);
    const error = errorScenarios[chosen.name];
    if (error !== undefined) {
      sendError(...error);
      return;
    }
    if (rec.operation === "invoke") {
      invokesInFlight++;
      peakInvokes = Math.max(peakInvokes, invokesInFlight);
      try {
        if (invokeHoldMs > 0 && !(await pause(res, invokeHoldMs))) return;
        invoke(res, rec, requestId, body);
      } finally {
        invokesInFlight--;
      }
      return;
    }
    if (chosen.name === "html-200") {
      rec.status = 200;
      res.writeHead(200, { "content-type": "text/html", "x-amzn-requestid": requestId });
      res.end("<html>oops");
      return;
    }
    const stream = rec.operation === "converse-stream";
    if (!stream && chosen.name === "mid-stream-exception") return sendError(424, "ModelStreamErrorException", "The model stream failed.");
    if (!stream && chosen.name === "stream-throttled") return sendError(...errorScenarios.throttled!);
    const answer = answerOf(chosen.name, chosen.options, body, rec.lastUserText ?? "");
    if (!stream) {
      if (delayMs > 0 && !(await pause(res, delayMs * answer.pieces.length))) return;
      rec.status = 200;
      res.writeHead(200, { "content-type": "application/json", "x-amzn-requestid": requestId });
      res.end(JSON.stringify(unaryBody(answer)));
      return;
    }
    rec.status = 200;
    res.writeHead(200, { "content-type": eventStreamType, "x-amzn-requestid": requestId });
    const frames = streamFrames(chosen.name, answer);
    for (let i = 0; i < frames.length; i++) {
      if (i > 0 && !(await pause(res, delayMs))) return;
      const f = frames[i]!;
      if (f === "cut") {
        const next = frame("event", "contentBlockDelta", { contentBlockIndex: 0, delta: { text: " the" } });
        res.write(next.subarray(0, next.length >> 1), () => {
          markCut();
          rec.cutAt = Date.now();
          res.stream.session?.destroy();
        });
        return;
      }
      if (res.stream.destroyed) return;
      res.write(f);
    }
    res.end();
  }

  function authenticate(req: Http2ServerRequest, rec: BedrockRequest, raw: Buffer): [string, string] | undefined {
    const auth = req.headers["authorization"];
    if (typeof auth !== "string") return ["MissingAuthenticationTokenException", "Missing Authentication Token"];
    if (auth.startsWith("Bearer ")) {
      if (!apiKeys.includes(auth.slice(7))) return ["UnrecognizedClientException", "Invalid API Key format: Must start with pre-defined prefix"];
      rec.auth = "bearer";
      return undefined;
    }
    const m = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})$/.exec(auth);
    if (m === null) return ["IncompleteSignatureException", "Authorization header requires Credential, SignedHeaders and Signature."];
    const [, keyId, date, region, service, signedHeaders, signature] = m as unknown as [string, string, string, string, string, string, string];
    const secret = secrets[keyId];
    if (secret === undefined) return ["UnrecognizedClientException", "The security token included in the request is invalid."];
    const amzDate = req.headers["x-amz-date"];
    if (typeof amzDate !== "string" || !amzDate.startsWith(date) || service !== "bedrock") return ["InvalidSignatureException", "Credential should be scoped to a valid date, region and service."];
    const parts = sigV4Parts({ method: req.method, path: rec.path, headers: req.headers, signedHeaders: signedHeaders.split(";"), body: raw, amzDate, scope: `${date}/${region}/${service}/aws4_request`, secret });
    if (parts.signature !== signature) {
      // As AWS words it: the canonical request (with every signed header, x-amz-security-token
      // among them) and the string to sign it expected.
      return [
        "InvalidSignatureException",
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.\n\n" +
          `The Canonical String for this request should have been\n'${parts.canonicalRequest}'\n\nThe String-to-Sign should have been\n'${parts.stringToSign}'\n`,
      ];
    }
    rec.auth = "sigv4";
    rec.region = region;
    return undefined;
  }

  server.on("sessionError", () => {});
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  const sessions = new Set<import("node:http2").ServerHttp2Session>();
  server.on("session", (s) => {
    sessions.add(s);
    s.once("close", () => sessions.delete(s));
  });

  const arrived = (index: number): Promise<BedrockRequest> =>
    new Promise((resolve) => {
      const check = (): void => {
        const r = requests[index];
        if (r !== undefined) {
          arrivals.off("request", check);
          resolve(r);
        }
      };
      arrivals.on("request", check);
      check();
    });

  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    setScenario(name, options = {}) {
      sticky = name === null ? undefined : { name, options };
    },
    enqueueScenario(name, options = {}) {
      queue.push({ name, options });
    },
    settled(index) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`bedrock fake: request #${index} not settled after 5 s`)), 5000);
        void arrived(index).then(async (r) => {
          await settled.get(r.index);
          clearTimeout(timer);
          resolve(r);
        });
      });
    },
    get peakInvokesInFlight() {
      return peakInvokes;
    },
    setInvokeHold(ms) {
      invokeHoldMs = ms;
    },
    reset() {
      peakInvokes = invokesInFlight;
      invokeHoldMs = 0;
      requests.length = 0;
      settled.clear();
      queue.length = 0;
      sticky = undefined;
    },
    async close() {
      closing = true;
      for (const s of sessions) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * The SigV4 signature of a request (AWS Signature Version 4, "Create a signed AWS API request"):
 * the canonical request (method; the path with each segment URI-encoded once more, as every
 * service but S3 wants; the empty query; the signed headers' lower-case names and trimmed values;
 * their names; the body's SHA-256), the string to sign (algorithm, time, scope, the canonical
 * request's SHA-256), and the HMAC chain of the signing key (date, region, service,
 * "aws4_request").
 */
export function sigV4Signature(r: SigV4Input): string {
  return sigV4Parts(r).signature;
}

/** What sigV4Signature signs. */
export interface SigV4Input {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  signedHeaders: readonly string[];
  body: Uint8Array;
  amzDate: string;
  scope: string;
  secret: string;
}

/** sigV4Signature's canonical request, string to sign and signature. */
export function sigV4Parts(r: SigV4Input): { canonicalRequest: string; stringToSign: string; signature: string } {
  const sha256 = (data: string | Uint8Array): string => createHash("sha256").update(data).digest("hex");
  const hmac = (key: string | Buffer, data: string): Buffer => createHmac("sha256", key).update(data).digest();
  const rfc3986 = (s: string): string => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  const canonicalPath = r.path.split("/").map(rfc3986).join("/");
  const headerValue = (name: string): string => {
    const v = name === "host" ? (r.headers["host"] ?? r.headers[":authority"]) : r.headers[name];
    return (Array.isArray(v) ? v.join(",") : (v ?? "")).trim().replace(/\s+/g, " ");
  };
  const canonicalHeaders = r.signedHeaders.map((h) => `${h}:${headerValue(h)}\n`).join("");
  const canonicalRequest = [r.method, canonicalPath, "", canonicalHeaders, r.signedHeaders.join(";"), sha256(r.body)].join("\n");
  const stringToSign = ["AWS4-HMAC-SHA256", r.amzDate, r.scope, sha256(canonicalRequest)].join("\n");
  const [date, region, service] = r.scope.split("/") as [string, string, string];
  const key = hmac(hmac(hmac(hmac(`AWS4${r.secret}`, date), region), service), "aws4_request");
  return { canonicalRequest, stringToSign, signature: createHmac("sha256", key).update(stringToSign).digest("hex") };
}

/** What a scenario answers. */
interface Answer {
  pieces: string[];
  toolCalls: boolean;
  stopReason: string;
  usage: Record<string, number>;
}

function answerOf(name: BedrockScenario, options: ScenarioOptions, body: Record<string, unknown>, lastUserText: string): Answer {
  const fixed = (stopReason: string, usage: Record<string, number> = { inputTokens: 12, outputTokens: 6, totalTokens: 18 }): Answer => ({
    pieces: ["Hello", " from", " the", " fake", " upstream."],
    toolCalls: false,
    stopReason,
    usage,
  });
  switch (name) {
    case "text":
    case "mid-stream-exception":
    case "truncated":
    case "cut":
      return fixed("end_turn");
    case "cache-usage":
      return fixed("end_turn", { inputTokens: 12, outputTokens: 6, totalTokens: 12 + 6 + 2048 + 1500, cacheReadInputTokens: 2048, cacheWriteInputTokens: 1500 });
    case "tool-calls":
      return { pieces: ["Let me", " check."], toolCalls: true, stopReason: "tool_use", usage: { inputTokens: 40, outputTokens: 30, totalTokens: 70 } };
    case "slow": {
      const n = Math.max(1, options.tokens ?? 40);
      const pieces = Array.from({ length: n }, (_, i) => (i + 1 < n ? `t${i + 1} ` : `t${i + 1}`));
      return { pieces, toolCalls: false, stopReason: "end_turn", usage: { inputTokens: 1, outputTokens: n, totalTokens: n + 1 } };
    }
    default: {
      const stop = stopReasons[name];
      if (stop !== undefined) return fixed(stop);
      const input = countWords(textOf(body["system"])) + (Array.isArray(body["messages"]) ? (body["messages"] as unknown[]) : []).reduce<number>((n, m) => n + (isObject(m) ? countWords(textOf(m["content"])) : 0), 0);
      const pieces = wordPieces(lastUserText);
      return { pieces, toolCalls: false, stopReason: "end_turn", usage: { inputTokens: input, outputTokens: pieces.length, totalTokens: input + pieces.length } };
    }
  }
}

const weatherInput = ['{"ci', 'ty": "Pa', 'ris", "unit": "c', 'elsius"}'];

function unaryBody(a: Answer): Record<string, unknown> {
  const content: unknown[] = [{ text: a.pieces.join("") }];
  if (a.toolCalls) {
    content.push({ toolUse: { toolUseId: "tooluse_weather", name: "get_weather", input: JSON.parse(weatherInput.join("")) as unknown } });
    content.push({ toolUse: { toolUseId: "tooluse_time", name: "get_time", input: {} } });
  }
  return { output: { message: { role: "assistant", content } }, stopReason: a.stopReason, usage: a.usage, metrics: { latencyMs: 42 } };
}

function streamFrames(name: BedrockScenario, a: Answer): (Uint8Array | "cut")[] {
  const ev = (type: string, payload: Record<string, unknown>): Uint8Array => frame("event", type, payload);
  if (name === "stream-throttled") return [frame("exception", "throttlingException", { message: "Too many requests, please wait before trying again." })];
  const frames: (Uint8Array | "cut")[] = [ev("messageStart", { role: "assistant" })];
  const text = a.pieces.map((t) => ev("contentBlockDelta", { contentBlockIndex: 0, delta: { text: t } }));
  if (name === "mid-stream-exception") return [...frames, ...text.slice(0, 2), frame("exception", "modelStreamErrorException", { message: "The model stream failed.", originalStatusCode: 500 })];
  if (name === "truncated") return [...frames, ...text.slice(0, 3)];
  if (name === "cut") return [...frames, ...text.slice(0, 2), "cut"];
  frames.push(...text, ev("contentBlockStop", { contentBlockIndex: 0 }));
  if (a.toolCalls) {
    frames.push(ev("contentBlockStart", { contentBlockIndex: 1, start: { toolUse: { toolUseId: "tooluse_weather", name: "get_weather" } } }));
    for (const input of weatherInput) frames.push(ev("contentBlockDelta", { contentBlockIndex: 1, delta: { toolUse: { input } } }));
    frames.push(ev("contentBlockStop", { contentBlockIndex: 1 }));
    frames.push(ev("contentBlockStart", { contentBlockIndex: 2, start: { toolUse: { toolUseId: "tooluse_time", name: "get_time" } } }));
    frames.push(ev("contentBlockStop", { contentBlockIndex: 2 }));
  }
  frames.push(ev("messageStop", { stopReason: a.stopReason }), ev("metadata", { usage: a.usage, metrics: { latencyMs: 42 } }));
  return frames;
}

/** A deterministic vector of `n` values for a text. */
export function fakeVector(text: string, n: number): number[] {
  return Array.from({ length: n }, (_, i) => ((text.charCodeAt(i % Math.max(1, text.length)) || 0) + i) / 128);
}

function invoke(res: Http2ServerResponse, rec: BedrockRequest, requestId: string, body: Record<string, unknown>): void {
  const send = (answer: unknown, headers: Record<string, string> = {}): void => {
    rec.status = 200;
    res.writeHead(200, { "content-type": "application/json", "x-amzn-requestid": requestId, ...headers });
    res.end(JSON.stringify(answer));
  };
  if (typeof body["inputText"] === "string") {
    const dims = typeof body["dimensions"] === "number" ? body["dimensions"] : 8;
    send({ embedding: fakeVector(body["inputText"], dims), inputTextTokenCount: countWords(body["inputText"]) });
    return;
  }
  if (Array.isArray(body["texts"]) && typeof body["input_type"] === "string") {
    const texts = body["texts"] as string[];
    send(
      { id: `emb-${rec.index}`, embeddings: texts.map((t) => fakeVector(t, 6)), response_type: "embeddings_floats", texts },
      { "x-amzn-bedrock-input-token-count": String(texts.reduce((n, t) => n + countWords(t), 0)) },
    );
    return;
  }
  rec.status = 400;
  res.writeHead(400, { "content-type": "application/json", "x-amzn-errortype": `ValidationException${errorTypeSuffix}` });
  res.end(JSON.stringify({ message: "Malformed input request: required key [inputText] not found" }));
}

/** Waits `ms` (a turn at least); false when the answer closed meanwhile. */
async function pause(res: Http2ServerResponse, ms: number): Promise<boolean> {
  await sleep(ms);
  return !res.stream.destroyed && !res.stream.closed;
}

/** The text of Converse content blocks (`{"text"}` ones joined with "\n"). */
function textOf(content: unknown): string {
  if (!Array.isArray(content)) return "";
  return (content as unknown[])
    .filter((p): p is Record<string, unknown> => isObject(p) && typeof p["text"] === "string")
    .map((p) => p["text"] as string)
    .join("\n");
}
