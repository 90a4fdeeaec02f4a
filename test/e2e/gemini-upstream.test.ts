/**
 * The `gemini` kind end to end: a grpc-js client (contract loaded from proto/ at run time), the
 * openai SDK on /v1/chat/completions → infergate on loopback ports → the Gemini fake
 * (test/fakes/gemini-fake.ts) on its own port, in both auth modes: Google AI with an API key, and
 * Vertex AI with OAuth2 access tokens from a service-account key file whose token_uri is the
 * fake's token endpoint. Asserts what the clients get, the exact requests the fake received, and
 * that no key or token reaches the log.
 */
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import OpenAI from "openai";
import { pino } from "pino";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { App } from "../../src/server/app.js";
import { createGeminiFake, fakeVector, GEMINI_FIXTURE_TEXT, type GeminiFake, type GeminiScenario } from "../fakes/gemini-fake.js";
import { errorInfoOf, expectServiceError, inferenceClient, type ProtoClient, protoUsage as usage, statusDetails } from "../helpers/proto-clients.js";
import { protoStruct as struct } from "../helpers/proto-struct.js";
import { lineSink, setEnv } from "../helpers/process-env.js";
import { startInProcess } from "../helpers/servers.js";

const API_KEY = "AIzaSyFAKE-gemini-e2e-4d7a1c9b";
const WRONG_KEY = "AIzaSyWRONG-gemini-e2e-0000";
const MODEL = "gemini-2.5-flash";
const EMBED_MODEL = "gemini-embedding-001";

type Obj = Record<string, unknown>;

const text = (t: string) => ({ text: t });
const turn = (role: string, ...content: Obj[]) => ({ role: `ROLE_${role}`, content });
const userTurn = (t: string) => turn("USER", text(t));
const chatRequest = (model: string, messages: Obj[], extra: Obj = {}) => ({ model, messages, ...extra });

const textDelta = (t: string) => ({ event: "text_delta", text_delta: t });
const toolDelta = (index: number, args: string, id: string, name: string) => ({ event: "tool_call_delta", tool_call_delta: { index, id, name, arguments: args } });
const final = (model: string, upstream: string, id: string, finish: string, u: ReturnType<typeof usage>) => ({
  event: "final",
  final: { id, finish_reason: `FINISH_REASON_${finish}`, usage: u, model, model_version: "1", upstream, cached: false, stop_sequence: "" },
});
const assistant = (content: Obj[], toolCalls: Obj[] = []) => ({
  role: "ROLE_ASSISTANT",
  content: content.map((p) => ({ cache_breakpoint: null, ...p })),
  tool_calls: toolCalls.map((c) => ({ cache_breakpoint: null, ...c })),
  tool_call_id: "",
  name: "",
});

let fake: GeminiFake;
let app: App;
let client: ProtoClient;
let dir: string;
/** Every line infergate logged (JSON), at debug level and above. */
const logLines: string[] = [];

let restoreEnv: (() => void) | undefined;
/** The environment under which ADC finds the fake's metadata server (gcp-metadata's variables). */
function adcEnv(): Record<string, string | undefined> {
  return {
    GCE_METADATA_HOST: new URL(fake.url).host,
    METADATA_SERVER_DETECTION: "ping-only",
    CLOUDSDK_CONFIG: dir,
    GOOGLE_APPLICATION_CREDENTIALS: undefined,
  };
}

/** A service-account key file whose token_uri is the fake's token endpoint. */
function keyFile(name: string, privateKey: string): string {
  const file = join(dir, `${name}.json`);
  writeFileSync(
    file,
    JSON.stringify({
      type: "service_account",
      project_id: "infergate-test",
      private_key_id: `kid-${name}`,
      private_key: privateKey,
      client_email: `${name}@infergate-test.iam.gserviceaccount.com`,
      client_id: "1234567890",
      token_uri: fake.tokenUri,
    }),
  );
  return file;
}

beforeAll(async () => {
  const { publicKey, privateKey } = generateKeyPairSync("rsa", {
    modulusLength: 2048,
    publicKeyEncoding: { type: "spki", format: "pem" },
    privateKeyEncoding: { type: "pkcs8", format: "pem" },
  });
  fake = await createGeminiFake({ apiKey: API_KEY, publicKey });
  dir = mkdtempSync(join(tmpdir(), "gemini-e2e-"));
  // Application Default Credentials find the fake's metadata server, and no other credentials
  // (no key file in the environment, an empty gcloud configuration). This file's own process.
  restoreEnv = setEnv(adcEnv());
  // One attempt per call and no breaker, except where a test says otherwise: these tests watch
  // the adapter, whose every failure would otherwise be retried (docs/resilience.md).
  const vertexUpstream = (name: string, sa: string, extra = "") => `
  - name: ${name}
    kind: gemini
    resilience: { retry: { maxAttempts: 1 }, breaker: { enabled: false } }
    endpoints: ["${fake.url}"]
    timeoutMs: 10000
    options: { vertex: { project: infergate-test, location: us-central1, credentialsFile: "${keyFile(sa, privateKey)}"${extra} } }`;
  app = await startInProcess(
    `
upstreams:
  - name: gemini-up
    kind: gemini
    resilience: { retry: { maxAttempts: 1 }, breaker: { enabled: false } }
    endpoints: ["${fake.url}"]
    apiKey: "${API_KEY}"
    timeoutMs: 10000
  - name: gemini-retry-up
    kind: gemini
    resilience: { retry: { maxAttempts: 2 }, breaker: { enabled: false } }
    endpoints: ["${fake.url}"]
    apiKey: "${API_KEY}"
    timeoutMs: 10000
  - name: gemini-wrong-key
    kind: gemini
    resilience: { retry: { maxAttempts: 1 }, breaker: { enabled: false } }
    endpoints: ["${fake.url}"]
    apiKey: "${WRONG_KEY}"
    timeoutMs: 10000
${vertexUpstream("vertex-up", "sa-main")}
${vertexUpstream("vertex-refresh-up", "sa-refresh")}
${vertexUpstream("vertex-expiry-up", "sa-expiry", ", tokenRefreshMarginMs: 0")}
${vertexUpstream("vertex-hang-up", "sa-hang", ", tokenTimeoutMs: 500")}
  - name: vertex-adc-up
    kind: gemini
    resilience: { retry: { maxAttempts: 1 }, breaker: { enabled: false } }
    endpoints: ["${fake.url}"]
    timeoutMs: 10000
    options: { vertex: { project: infergate-test, location: us-central1 } }
  - name: gemini-breaker-up
    kind: gemini
    resilience: { retry: { maxAttempts: 1 }, breaker: { consecutiveFailures: 2, volumeThreshold: 2, resetTimeoutMs: 60000 } }
    endpoints: ["${fake.url}"]
    apiKey: "${API_KEY}"
    timeoutMs: 10000
models:
  - name: gemini
    upstream: gemini-up
    upstreamModel: ${MODEL}
    cache: { policy: "off" }
  - name: gemini-tuned
    upstream: gemini-up
    upstreamModel: ${MODEL}
    cache: { policy: "off" }
    options:
      maxTokens: 321
      thinkingBudget: 1024
      cachedContent: cachedContents/fake-cache-1
      safetySettings:
        - { category: HARM_CATEGORY_HARASSMENT, threshold: BLOCK_ONLY_HIGH }
        - { category: HARM_CATEGORY_DANGEROUS_CONTENT, threshold: BLOCK_NONE }
  - name: gemini-retry
    upstream: gemini-retry-up
    upstreamModel: ${MODEL}
    cache: { policy: "off" }
  - name: gemini-wrong-key
    upstream: gemini-wrong-key
    upstreamModel: ${MODEL}
  - name: gemini-embed
    upstream: gemini-up
    upstreamModel: ${EMBED_MODEL}
    capabilities: [embed]
    embedding: { maxBatch: 3, dimensions: 8 }
    options: { embeddingTaskType: RETRIEVAL_DOCUMENT }
  - name: vertex
    upstream: vertex-up
    upstreamModel: ${MODEL}
    cache: { policy: "off" }
  - name: vertex-embed
    upstream: vertex-up
    upstreamModel: text-embedding-005
    capabilities: [embed]
    embedding: { maxBatch: 5, dimensions: 8 }
  - name: vertex-refresh
    upstream: vertex-refresh-up
    upstreamModel: ${MODEL}
    cache: { policy: "off" }
  - name: vertex-expiry
    upstream: vertex-expiry-up
    upstreamModel: ${MODEL}
    cache: { policy: "off" }
  - name: vertex-hang
    upstream: vertex-hang-up
    upstreamModel: ${MODEL}
    cache: { policy: "off" }
  - name: vertex-adc
    upstream: vertex-adc-up
    upstreamModel: ${MODEL}
    cache: { policy: "off" }
  - name: gemini-breaker
    upstream: gemini-breaker-up
    upstreamModel: ${MODEL}
    cache: { policy: "off" }
`,
    pino({ level: "debug" }, lineSink(logLines)),
  );
  client = inferenceClient(app.grpcAddress);
});

afterAll(async () => {
  restoreEnv?.();
  client?.close();
  await app?.shutdown();
  await fake?.close();
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

beforeEach(() => {
  fake.reset();
  fake.tokenLifetimeSeconds = 3600;
  fake.hangTokenRequests = 0;
});

const googlePath = (method: string, model = MODEL) => `/v1beta/models/${model}:${method}`;
const vertexPath = (method: string, model = MODEL) => `/v1/projects/infergate-test/locations/us-central1/publishers/google/models/${model}:${method}`;

describe("Google AI (API key)", () => {
  it("ListModels reports the kind and its capabilities", async () => {
    const res = await client.unary<{ models: Obj[] }>("ListModels", {});
    const byName = Object.fromEntries(res.models.map((m) => [m["name"], m]));
    expect(byName["gemini"]).toMatchObject({ upstream_kind: "gemini", upstream: "gemini-up", capabilities: ["CAPABILITY_CHAT", "CAPABILITY_GENERATE"] });
    expect(byName["gemini-embed"]).toMatchObject({ upstream_kind: "gemini", capabilities: ["CAPABILITY_EMBED"] });
  });

  it("Chat: system and developer messages become systemInstruction, the key goes in x-goog-api-key, the answer and usage come back", async () => {
    const res = await client.unary<Obj>(
      "Chat",
      chatRequest("gemini", [turn("SYSTEM", text("You are terse.")), turn("DEVELOPER", text("Answer in English.")), userTurn("Hello there")]),
    );
    expect(res).toMatchObject({
      id: "resp-fake-0",
      message: assistant([{ part: "text", text: "Hello there" }]),
      finish_reason: "FINISH_REASON_STOP",
      // Every word of the prompt, system instruction included.
      usage: usage(8, 2),
      model: "gemini",
      model_version: "1",
      upstream: "gemini-up",
      cached: false,
      stop_sequence: "",
    });
    const rec = fake.requests[0]!;
    expect(rec.path).toBe(googlePath("generateContent"));
    expect(rec.headers["x-goog-api-key"]).toBe(API_KEY);
    expect(rec.headers["authorization"]).toBeUndefined();
    expect(rec.body).toEqual({
      contents: [{ role: "user", parts: [{ text: "Hello there" }] }],
      systemInstruction: { parts: [{ text: "You are terse." }, { text: "Answer in English." }] },
    });
  });

  it("Chat: sampling, stop, seed, the response schema and the model's options (safety settings, thinking budget, cached content, max tokens) reach generationConfig", async () => {
    const schema = { type: "object", properties: { answer: { type: "string" } }, required: ["answer"] };
    await client.unary<Obj>(
      "Chat",
      chatRequest("gemini-tuned", [userTurn("hi")], {
        temperature: 0.4,
        top_p: 0.9,
        top_k: 32,
        stop: ["END", "STOP"],
        seed: "42",
        presence_penalty: 0.5,
        response_format: { type: "RESPONSE_FORMAT_TYPE_JSON_SCHEMA", json_schema: { name: "answer", schema: struct(schema) } },
      }),
    );
    expect(fake.requests[0]!.body).toEqual({
      contents: [{ role: "user", parts: [{ text: "hi" }] }],
      safetySettings: [
        { category: "HARM_CATEGORY_HARASSMENT", threshold: "BLOCK_ONLY_HIGH" },
        { category: "HARM_CATEGORY_DANGEROUS_CONTENT", threshold: "BLOCK_NONE" },
      ],
      generationConfig: {
        temperature: 0.4,
        topP: 0.9,
        topK: 32,
        maxOutputTokens: 321,
        stopSequences: ["END", "STOP"],
        seed: 42,
        presencePenalty: 0.5,
        responseMimeType: "application/json",
        responseJsonSchema: schema,
        thinkingConfig: { thinkingBudget: 1024 },
      },
      cachedContent: "cachedContents/fake-cache-1",
    });
    // The request's own max_tokens wins over the model's.
    await client.unary<Obj>("Chat", chatRequest("gemini-tuned", [userTurn("hi")], { max_tokens: 7, response_format: { type: "RESPONSE_FORMAT_TYPE_JSON_OBJECT" } }));
    expect((fake.requests[1]!.body as Obj)["generationConfig"]).toEqual({ maxOutputTokens: 7, responseMimeType: "application/json", thinkingConfig: { thinkingBudget: 1024 } });
  });

  it("Generate streams the answer chunk by chunk from streamGenerateContent?alt=sse", async () => {
    const { events, status: st } = await client.serverStream<Obj>("Generate", chatRequest("gemini", [userTurn("one two three")])).done;
    expect(st.code).toBe(status.OK);
    expect(events).toEqual([textDelta("one "), textDelta("two "), textDelta("three"), final("gemini", "gemini-up", "resp-fake-0", "STOP", usage(3, 3))]);
    const rec = fake.requests[0]!;
    expect(rec.path).toBe(googlePath("streamGenerateContent"));
    expect(rec.query).toEqual({ alt: "sse" });
    expect(rec.headers["accept"]).toBe("text/event-stream");
  });

  it("Generate reads a CRLF stream written in 7-character pieces (lines and JSON split anywhere)", async () => {
    fake.setScenario("split");
    const { events, status: st } = await client.serverStream<Obj>("Generate", chatRequest("gemini", [userTurn("hi")])).done;
    expect(st.code).toBe(status.OK);
    expect(events.filter((e) => e["event"] === "text_delta").map((e) => e["text_delta"]).join("")).toBe(GEMINI_FIXTURE_TEXT);
    expect(events.at(-1)).toEqual(final("gemini", "gemini-up", "resp-fake-0", "STOP", usage(12, 6)));
  });

  it("usage: cached content and thinking tokens, unary and streamed; thought parts are not answer text", async () => {
    fake.setScenario("usage");
    // prompt 2060 + tool-use prompt 4; completion 6 + thoughts 50.
    const expected = usage(2064, 56, { cached: 2048, reasoning: 50 });
    const res = await client.unary<Obj>("Chat", chatRequest("gemini", [userTurn("hi")]));
    expect(res["usage"]).toEqual(expected);
    expect(res["message"]).toMatchObject(assistant([{ part: "text", text: GEMINI_FIXTURE_TEXT }]));
    const { events } = await client.serverStream<Obj>("Generate", chatRequest("gemini", [userTurn("hi")])).done;
    expect(events.filter((e) => e["event"] === "text_delta").map((e) => e["text_delta"]).join("")).toBe(GEMINI_FIXTURE_TEXT);
    expect(events.at(-1)).toEqual(final("gemini", "gemini-up", "resp-fake-1", "STOP", expected));
  });

  it("tools: functionDeclarations with JSON Schema, tool_choice as functionCallingConfig; parallel calls come back as tool calls with TOOL_CALLS", async () => {
    fake.setScenario("tool-calls");
    const weather = { type: "object", properties: { city: { type: "string" } }, required: ["city"] };
    const tools = [
      { name: "get_weather", description: "Weather of a city", parameters: struct(weather) },
      { name: "get_time", description: "", parameters: struct({ type: "object", properties: { tz: { type: "string" } } }) },
    ];
    const res = await client.unary<Obj>("Chat", chatRequest("gemini", [userTurn("weather and time in Paris?")], { tools, tool_choice: { function_name: "get_weather" } }));
    expect(res["message"]).toMatchObject(
      assistant(
        [{ part: "text", text: "Let me check." }],
        [
          { id: "call_0", name: "get_weather", arguments: '{"city":"Paris"}' },
          { id: "call_1", name: "get_time", arguments: '{"tz":"Europe/Paris"}' },
        ],
      ),
    );
    expect(res["finish_reason"]).toBe("FINISH_REASON_TOOL_CALLS");
    expect(res["usage"]).toEqual(usage(40, 30));
    const body = fake.requests[0]!.body as Obj;
    expect(body["tools"]).toEqual([
      {
        functionDeclarations: [
          { name: "get_weather", description: "Weather of a city", parametersJsonSchema: weather },
          { name: "get_time", parametersJsonSchema: { type: "object", properties: { tz: { type: "string" } } } },
        ],
      },
    ]);
    expect(body["toolConfig"]).toEqual({ functionCallingConfig: { mode: "ANY", allowedFunctionNames: ["get_weather"] } });

    const { events } = await client.serverStream<Obj>("Generate", chatRequest("gemini", [userTurn("again")], { tools, tool_choice: { mode: "TOOL_CHOICE_MODE_REQUIRED" } })).done;
    expect(events).toEqual([
      textDelta("Let me check."),
      toolDelta(0, '{"city":"Paris"}', "call_0", "get_weather"),
      toolDelta(1, '{"tz":"Europe/Paris"}', "call_1", "get_time"),
      final("gemini", "gemini-up", "resp-fake-1", "TOOL_CALLS", usage(40, 30)),
    ]);
    expect((fake.requests[1]!.body as Obj)["toolConfig"]).toEqual({ functionCallingConfig: { mode: "ANY" } });
  });

  it("the next turn sends the calls back as functionCall parts and the results as functionResponse parts of one user turn, named by their call", async () => {
    await client.unary<Obj>(
      "Chat",
      chatRequest("gemini", [
        userTurn("weather and time in Paris?"),
        {
          role: "ROLE_ASSISTANT",
          content: [text("Let me check.")],
          tool_calls: [
            { id: "call_0", name: "get_weather", arguments: '{"city":"Paris"}' },
            { id: "call_1", name: "get_time", arguments: "" },
          ],
        },
        { role: "ROLE_TOOL", tool_call_id: "call_0", content: [text('{"temp_c": 21}')] },
        { role: "ROLE_TOOL", tool_call_id: "call_1", content: [text("14:05")] },
        userTurn("thanks"),
      ]),
    );
    expect((fake.requests[0]!.body as Obj)["contents"]).toEqual([
      { role: "user", parts: [{ text: "weather and time in Paris?" }] },
      { role: "model", parts: [{ text: "Let me check." }, { functionCall: { name: "get_weather", args: { city: "Paris" } } }, { functionCall: { name: "get_time", args: {} } }] },
      {
        role: "user",
        parts: [{ functionResponse: { name: "get_weather", response: { temp_c: 21 } } }, { functionResponse: { name: "get_time", response: { output: "14:05" } } }],
      },
      { role: "user", parts: [{ text: "thanks" }] },
    ]);
  });

  it("images: bytes and data: URLs as inlineData, other URLs as fileData with the type their extension names", async () => {
    const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 1, 2, 3]);
    await client.unary<Obj>(
      "Chat",
      chatRequest("gemini", [
        turn(
          "USER",
          text("What is in these?"),
          { image_data: { data: png, mime_type: "image/png" } },
          { image_url: { url: "data:image/jpeg;base64,/9j/AAAA" } },
          { image_url: { url: "gs://bucket/cat.webp" } },
          { image_url: { url: "https://example.com/dog.JPG?size=large" } },
        ),
      ]),
    );
    expect((fake.requests[0]!.body as Obj)["contents"]).toEqual([
      {
        role: "user",
        parts: [
          { text: "What is in these?" },
          { inlineData: { mimeType: "image/png", data: png.toString("base64") } },
          { inlineData: { mimeType: "image/jpeg", data: "/9j/AAAA" } },
          { fileData: { mimeType: "image/webp", fileUri: "gs://bucket/cat.webp" } },
          { fileData: { mimeType: "image/jpeg", fileUri: "https://example.com/dog.JPG?size=large" } },
        ],
      },
    ]);
  });

  describe("finish reasons", () => {
    it.each<[GeminiScenario, string, string]>([
      ["max-tokens", "LENGTH", "Hello from"],
      ["safety", "CONTENT_FILTER", "Hello from"],
      ["recitation", "CONTENT_FILTER", "Hello from"],
      ["blocked-prompt", "CONTENT_FILTER", ""],
    ])("%s → %s, unary and streamed", async (scenario, finish, answer) => {
      fake.setScenario(scenario);
      const res = await client.unary<Obj>("Chat", chatRequest("gemini", [userTurn("hi")]));
      expect(res["finish_reason"]).toBe(`FINISH_REASON_${finish}`);
      expect(res["message"]).toMatchObject(assistant(answer === "" ? [] : [{ part: "text", text: answer }]));
      const { events, status: st } = await client.serverStream<Obj>("Generate", chatRequest("gemini", [userTurn("hi")])).done;
      expect(st.code).toBe(status.OK);
      expect(events.filter((e) => e["event"] === "text_delta").map((e) => e["text_delta"]).join("")).toBe(answer);
      expect((events.at(-1)!["final"] as Obj)["finish_reason"]).toBe(`FINISH_REASON_${finish}`);
    });
  });

  describe("upstream errors", () => {
    const cases: [GeminiScenario, number, string, string][] = [
      ["rate-limited", status.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED", 'upstream "gemini-up" is rate limiting the gateway'],
      ["server-error", status.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", 'upstream "gemini-up" is unavailable (HTTP 500)'],
      ["unavailable", status.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", 'upstream "gemini-up" is unavailable (HTTP 503)'],
      ["bad-request", status.INVALID_ARGUMENT, "INVALID_ARGUMENT", 'upstream "gemini-up" rejected the request: Request contains an invalid argument.'],
      ["not-found", status.NOT_FOUND, "MODEL_NOT_FOUND", 'upstream "gemini-up" does not know the model or path'],
    ];

    it.each(cases)("Chat and Generate: %s → %s %s", async (scenario, code, reason, message) => {
      fake.setScenario(scenario);
      const err = await expectServiceError(client.unary("Chat", chatRequest("gemini", [userTurn("hi")])));
      expect(err.code).toBe(code);
      expect(err.details).toBe(message);
      const details = statusDetails(err);
      expect(errorInfoOf(details)?.["reason"]).toBe(reason);
      if (scenario === "rate-limited") {
        // Google's RetryInfo detail (no Retry-After header) becomes the caller's RetryInfo.
        const retry = details.details.find((d) => d.type_url === "type.googleapis.com/google.rpc.RetryInfo");
        expect(retry?.message).toEqual({ retry_delay: { seconds: "2", nanos: 0 } });
      }
      expect(JSON.stringify([err.details, details, err.metadata.getMap()])).not.toContain(API_KEY);
      const { events, error } = await client.serverStream<Obj>("Generate", chatRequest("gemini", [userTurn("hi")])).done;
      expect(events).toEqual([]);
      expect(error?.code).toBe(code);
      expect(errorInfoOf(statusDetails(error!))?.["reason"]).toBe(reason);
      expect(fake.requests).toHaveLength(2);
    });

    it("a 429 pretty-printed past 2 KB with RetryInfo last (after Help and QuotaFailure) still gives the caller its RetryInfo", async () => {
      fake.setScenario("rate-limited-verbose");
      const err = await expectServiceError(client.unary("Chat", chatRequest("gemini", [userTurn("hi")])));
      const rec = await fake.settled(0);
      expect(rec.status).toBe(429);
      expect(rec.scenario).toBe("rate-limited-verbose");
      expect(err.code).toBe(status.RESOURCE_EXHAUSTED);
      const details = statusDetails(err);
      expect(errorInfoOf(details)?.["reason"]).toBe("UPSTREAM_RATE_LIMITED");
      const retry = details.details.find((d) => d.type_url === "type.googleapis.com/google.rpc.RetryInfo");
      expect(retry?.message).toEqual({ retry_delay: { seconds: "7", nanos: 0 } });
      // The body is as the scenario says: RetryInfo only after the 2048 characters the log keeps.
      const direct = await fetch(`${fake.url}${googlePath("generateContent")}`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-goog-api-key": API_KEY },
        body: JSON.stringify({ contents: [{ role: "user", parts: [{ text: "scenario:rate-limited-verbose" }] }] }),
      });
      const body = await direct.text();
      expect(direct.status).toBe(429);
      expect(body.indexOf('"type.googleapis.com/google.rpc.RetryInfo"')).toBeGreaterThan(2048);
    });

    it("a key Google refuses (400 API_KEY_INVALID) is INTERNAL UPSTREAM_AUTH, and neither key is in what the client sees", async () => {
      const err = await expectServiceError(client.unary("Chat", chatRequest("gemini-wrong-key", [userTurn("hi")])));
      expect(err.code).toBe(status.INTERNAL);
      expect(err.details).toBe(`upstream "gemini-wrong-key" refused the gateway's credentials`);
      expect(errorInfoOf(statusDetails(err))?.["reason"]).toBe("UPSTREAM_AUTH");
      expect(fake.requests[0]!.headers["x-goog-api-key"]).toBe(WRONG_KEY);
      const seen = JSON.stringify([err.details, statusDetails(err), err.metadata.getMap()]);
      expect(seen).not.toContain(WRONG_KEY);
      expect(seen).not.toContain(API_KEY);
    });

    it("Generate: an HTML answer is UNAVAILABLE UPSTREAM_BAD_RESPONSE", async () => {
      fake.setScenario("garbage");
      const { events, error } = await client.serverStream<Obj>("Generate", chatRequest("gemini", [userTurn("hi")])).done;
      expect(events).toEqual([]);
      expect(error?.code).toBe(status.UNAVAILABLE);
      expect(errorInfoOf(statusDetails(error!))?.["reason"]).toBe("UPSTREAM_BAD_RESPONSE");
    });

    it("Chat: an answer cut mid-body is UNAVAILABLE", async () => {
      fake.setScenario("truncated");
      const err = await expectServiceError(client.unary("Chat", chatRequest("gemini", [userTurn("hi")])));
      expect(err.code).toBe(status.UNAVAILABLE);
    });
  });

  describe("failures after HTTP 200", () => {
    it("an error event mid-stream ends the stream UNAVAILABLE after the deltas already sent", async () => {
      fake.setScenario("mid-stream-error");
      const { events, status: st, error } = await client.serverStream<Obj>("Generate", chatRequest("gemini", [userTurn("hi")])).done;
      expect(events).toEqual([textDelta("Hello"), textDelta(" from")]);
      expect(st.code).toBe(status.UNAVAILABLE);
      expect(error?.details).toBe('upstream "gemini-up" failed during the stream (UNAVAILABLE)');
      expect(errorInfoOf(statusDetails(error!))).toEqual({
        reason: "UPSTREAM_UNAVAILABLE",
        domain: "infergate",
        metadata: { upstream: "gemini-up", upstream_error: "UNAVAILABLE" },
      });
    });

    it("a stream that ends without a finish reason is UNAVAILABLE STREAM_TRUNCATED, never OK", async () => {
      fake.setScenario("truncated");
      const { events, status: st, error } = await client.serverStream<Obj>("Generate", chatRequest("gemini", [userTurn("hi")])).done;
      expect(events).toEqual([textDelta("Hello"), textDelta(" from"), textDelta(" the")]);
      expect(st.code).toBe(status.UNAVAILABLE);
      expect(error?.details).toBe('upstream "gemini-up" ended the stream before a finish reason');
      expect(errorInfoOf(statusDetails(error!))).toEqual({ reason: "STREAM_TRUNCATED", domain: "infergate", metadata: { upstream: "gemini-up" } });
    });

    it("malformed JSON in an event is UNAVAILABLE UPSTREAM_BAD_RESPONSE, not skipped", async () => {
      fake.setScenario("malformed-event");
      const { events, status: st, error } = await client.serverStream<Obj>("Generate", chatRequest("gemini", [userTurn("hi")])).done;
      expect(events).toEqual([textDelta("Hello ")]);
      expect(st.code).toBe(status.UNAVAILABLE);
      expect(error?.details).toBe('upstream "gemini-up" sent an invalid response: malformed JSON in an event');
    });
  });

  it("throttling: a 429 with RetryInfo is retried after its delay, and the retry answers", async () => {
    fake.enqueueScenario("rate-limited");
    fake.enqueueScenario("text");
    const res = await client.unary<Obj>("Chat", chatRequest("gemini-retry", [userTurn("hi")]), { timeoutMs: 20_000 });
    expect(res["message"]).toMatchObject(assistant([{ part: "text", text: GEMINI_FIXTURE_TEXT }]));
    expect(fake.requests.map((r) => r.status)).toEqual([429, 200]);
    // Not before the delay Google asked for.
    expect(fake.requests[1]!.receivedAt - fake.requests[0]!.receivedAt).toBeGreaterThanOrEqual(2000);
  });

  it("breakers: failing calls open the endpoint's breaker, and the next call fails fast with CIRCUIT_OPEN without reaching Google", async () => {
    fake.setScenario("server-error");
    for (let i = 0; i < 2; i++) {
      const err = await expectServiceError(client.unary("Chat", chatRequest("gemini-breaker", [userTurn("hi")])));
      expect(errorInfoOf(statusDetails(err))?.["reason"]).toBe("UPSTREAM_UNAVAILABLE");
    }
    const err = await expectServiceError(client.unary("Chat", chatRequest("gemini-breaker", [userTurn("hi")])));
    expect(err.code).toBe(status.UNAVAILABLE);
    expect(errorInfoOf(statusDetails(err))?.["reason"]).toBe("CIRCUIT_OPEN");
    expect(fake.requests).toHaveLength(2);
  });

  it("cancelling Generate mid-stream aborts the upstream request", async () => {
    fake.setScenario("slow", { delayMs: 300, tokens: 200 });
    const stream = client.serverStream<Obj>("Generate", chatRequest("gemini", [userTurn("hi")]));
    await stream.waitFor((e) => e["text_delta"] === "t1 ");
    const cancelledAt = Date.now();
    stream.call.cancel();
    const { status: st } = await stream.done;
    expect(st.code).toBe(status.CANCELLED);
    const rec = await fake.settled(0);
    expect(rec.abortedAt).toBeDefined();
    expect(rec.finishedAt).toBeUndefined();
    expect(rec.abortedAt!).toBeGreaterThanOrEqual(cancelledAt);
  });

  it("the caller's deadline ends the upstream request: DEADLINE_EXCEEDED, and the fake sees the abort", async () => {
    fake.setScenario("slow", { delayMs: 100, tokens: 100 });
    const { events, status: st } = await client.serverStream<Obj>("Generate", chatRequest("gemini", [userTurn("hi")]), { timeoutMs: 450 }).done;
    expect(st.code).toBe(status.DEADLINE_EXCEEDED);
    expect(events.every((e) => e["event"] === "text_delta")).toBe(true);
    const rec = await fake.settled(0);
    expect(rec.abortedAt).toBeDefined();
    expect(rec.finishedAt).toBeUndefined();
  });

  describe("fields Gemini cannot carry are refused before any upstream call", () => {
    it.each<[string, Obj, string]>([
      ["parallel_tool_calls false", { parallel_tool_calls: false }, "parallel_tool_calls"],
      ["a strict tool", { tools: [{ name: "f", strict: true }] }, "tools[0].strict"],
      ["an image detail", { messages: [turn("USER", { image_url: { url: "https://example.com/a.png", detail: "IMAGE_DETAIL_HIGH" } })] }, "messages[0].content[0].image_url.detail"],
      ["an image URL without a known type", { messages: [turn("USER", { image_url: { url: "https://example.com/image" } })] }, "messages[0].content[0].image_url.url"],
      ["an author name", { messages: [{ role: "ROLE_USER", name: "alice", content: [text("hi")] }] }, "messages[0].name"],
      ["a tool result for no call", { messages: [userTurn("hi"), { role: "ROLE_TOOL", tool_call_id: "nope", content: [text("1")] }] }, "messages[1].tool_call_id"],
      ["a seed beyond 32 bits", { seed: "4294967296" }, "seed"],
    ])("%s", async (_name, extra, field) => {
      const request = chatRequest("gemini", [userTurn("hi")], extra);
      const err = await expectServiceError(client.unary("Chat", request));
      expect(err.code).toBe(status.INVALID_ARGUMENT);
      expect(err.details.startsWith(`${field}: `)).toBe(true);
      expect(errorInfoOf(statusDetails(err))).toEqual({ reason: "INVALID_ARGUMENT", domain: "infergate", metadata: { field } });
      expect(fake.requests).toHaveLength(0);
    });
  });

  describe("Embed", () => {
    interface EmbedResponse {
      embeddings: { index: number; values: number[] }[];
      dimensions: number;
      usage: { prompt_tokens: number };
    }
    const embed = (request: object) => client.unary<EmbedResponse>("Embed", request, { timeoutMs: 20_000 });
    const f32 = (v: number[]) => Array.from(Float32Array.from(v));

    it("one text goes through embedContent, several through batchEmbedContents (batches of the model's maxBatch), in input order", async () => {
      const one = await embed({ model: "gemini-embed", texts: ["solo text"], encoding: "EMBEDDING_ENCODING_FLOAT" });
      expect(one.embeddings.map((e) => e.values)).toEqual([f32(fakeVector("solo text", 8))]);
      expect(fake.requests[0]!.path).toBe(googlePath("embedContent", EMBED_MODEL));
      expect(fake.requests[0]!.body).toEqual({ content: { parts: [{ text: "solo text" }] }, taskType: "RETRIEVAL_DOCUMENT" });
      fake.reset();
      const texts = ["a one", "b two", "c three", "d four"];
      const res = await embed({ model: "gemini-embed", texts, encoding: "EMBEDDING_ENCODING_FLOAT" });
      expect(res.embeddings.map((e) => e.values)).toEqual(texts.map((t) => f32(fakeVector(t, 8))));
      expect(res.dimensions).toBe(8);
      const paths = fake.requests.map((r) => r.path).sort();
      expect(paths).toEqual([googlePath("batchEmbedContents", EMBED_MODEL), googlePath("embedContent", EMBED_MODEL)].sort());
      const batch = fake.requests.find((r) => r.path.endsWith(":batchEmbedContents"))!.body as { requests: Obj[] };
      for (const r of batch.requests) expect(r).toMatchObject({ model: `models/${EMBED_MODEL}`, taskType: "RETRIEVAL_DOCUMENT" });
      expect(batch.requests).toHaveLength(3);
    });

    it("token-id inputs are refused naming tokens", async () => {
      const err = await expectServiceError(embed({ model: "gemini-embed", tokens: [{ ids: [1, 2, 3] }] }));
      expect(err.code).toBe(status.INVALID_ARGUMENT);
      expect(err.details.startsWith("tokens: ")).toBe(true);
      expect(fake.requests).toHaveLength(0);
    });
  });
});

describe("Vertex AI (service-account key, OAuth2 access tokens)", () => {
  it("Chat and Generate go to the publisher model's path with a Bearer token from the key's token_uri; the token is reused while fresh", async () => {
    const res = await client.unary<Obj>("Chat", chatRequest("vertex", [userTurn("hello vertex")]));
    expect(res["message"]).toMatchObject(assistant([{ part: "text", text: "hello vertex" }]));
    expect(res["upstream"]).toBe("vertex-up");
    const { events } = await client.serverStream<Obj>("Generate", chatRequest("vertex", [userTurn("and streamed")])).done;
    const calls = fake.requests.filter((r) => r.path !== "/token");
    expect(events.at(-1)).toEqual(final("vertex", "vertex-up", `resp-fake-${calls[1]!.index}`, "STOP", usage(2, 2)));
    expect(calls.map((r) => r.path)).toEqual([vertexPath("generateContent"), vertexPath("streamGenerateContent")]);
    const issued = fake.tokens.filter((t) => t.serviceAccount === "sa-main@infergate-test.iam.gserviceaccount.com");
    expect(issued).toHaveLength(1);
    expect(issued[0]!.scope).toBe("https://www.googleapis.com/auth/cloud-platform");
    for (const r of calls) {
      expect(r.headers["authorization"]).toBe(`Bearer ${issued[0]!.token}`);
      expect(r.headers["x-goog-api-key"]).toBeUndefined();
    }
  });

  it("a token within the refresh margin of its expiry (expires_in 200 s, margin 5 min) is replaced before the next call", async () => {
    fake.tokenLifetimeSeconds = 200;
    await client.unary<Obj>("Chat", chatRequest("vertex-refresh", [userTurn("first")]));
    await client.unary<Obj>("Chat", chatRequest("vertex-refresh", [userTurn("second")]));
    const issued = fake.tokens.filter((t) => t.serviceAccount.startsWith("sa-refresh@"));
    expect(issued).toHaveLength(2);
    const calls = fake.requests.filter((r) => r.path !== "/token");
    expect(calls.map((r) => r.headers["authorization"])).toEqual([`Bearer ${issued[0]!.token}`, `Bearer ${issued[1]!.token}`]);
    // Event order: each call's token was issued before the call arrived.
    const tokenRequests = fake.requests.filter((r) => r.path === "/token");
    expect(tokenRequests[1]!.index).toBeGreaterThan(calls[0]!.index);
    expect(tokenRequests[1]!.index).toBeLessThan(calls[1]!.index);
  });

  it("an expired token (expires_in 1 s, no margin) is not used: the call after its expiry fetches a new one", async () => {
    fake.tokenLifetimeSeconds = 1;
    await client.unary<Obj>("Chat", chatRequest("vertex-expiry", [userTurn("first")]));
    const first = fake.tokens.filter((t) => t.serviceAccount.startsWith("sa-expiry@"));
    expect(first).toHaveLength(1);
    // Wait until the fake itself would refuse the first token.
    await expect.poll(() => Date.now() > first[0]!.expiresAt, { timeout: 5_000, interval: 50 }).toBe(true);
    fake.tokenLifetimeSeconds = 3600;
    const res = await client.unary<Obj>("Chat", chatRequest("vertex-expiry", [userTurn("second")]));
    expect(res["message"]).toMatchObject(assistant([{ part: "text", text: "second" }]));
    const issued = fake.tokens.filter((t) => t.serviceAccount.startsWith("sa-expiry@"));
    expect(issued).toHaveLength(2);
    const calls = fake.requests.filter((r) => r.path !== "/token");
    expect(calls.map((r) => r.status)).toEqual([200, 200]);
    expect(calls[1]!.headers["authorization"]).toBe(`Bearer ${issued[1]!.token}`);
  });

  it("a token request that is never answered fails its callers after tokenTimeoutMs, and a later call fetches a new token and succeeds", async () => {
    fake.hangTokenRequests = 1;
    const first = await expectServiceError(client.unary("Chat", chatRequest("vertex-hang", [userTurn("first")]), { timeoutMs: 3_000 }));
    expect([status.UNAVAILABLE, status.DEADLINE_EXCEEDED]).toContain(first.code);
    // Without a bound on the fetch every later call would wait on the unanswered request.
    await expect
      .poll(
        async () => {
          try {
            const res = await client.unary<Obj>("Chat", chatRequest("vertex-hang", [userTurn("later")]), { timeoutMs: 3_000 });
            return res["message"];
          } catch {
            return undefined;
          }
        },
        { timeout: 12_000, interval: 100 },
      )
      .toMatchObject(assistant([{ part: "text", text: "later" }]));
    const tokenRequests = fake.requests.filter((r) => r.path === "/token");
    expect(tokenRequests.length).toBeGreaterThanOrEqual(2);
    expect(tokenRequests[0]!.status).toBeUndefined();
    const issued = fake.tokens.filter((t) => t.serviceAccount.startsWith("sa-hang@"));
    expect(issued).toHaveLength(1);
    const call = fake.requests.filter((r) => r.path === vertexPath("generateContent")).at(-1)!;
    expect(call.headers["authorization"]).toBe(`Bearer ${issued[0]!.token}`);
    // Tokens stay out of the log.
    expect(logLines.filter((l) => l.includes(issued[0]!.token))).toEqual([]);
  });

  it("without a key file, Application Default Credentials get the token from the metadata server", async () => {
    const res = await client.unary<Obj>("Chat", chatRequest("vertex-adc", [userTurn("from the vm")]));
    expect(res["message"]).toMatchObject(assistant([{ part: "text", text: "from the vm" }]));
    const issued = fake.tokens.filter((t) => t.serviceAccount === "default@metadata");
    expect(issued).toHaveLength(1);
    expect(issued[0]!.scope).toBe("https://www.googleapis.com/auth/cloud-platform");
    const tokenRequest = fake.requests.find((r) => r.path === "/computeMetadata/v1/instance/service-accounts/default/token")!;
    expect(tokenRequest.headers["metadata-flavor"]).toBe("Google");
    const call = fake.requests.find((r) => r.path === vertexPath("generateContent"))!;
    expect(call.headers["authorization"]).toBe(`Bearer ${issued[0]!.token}`);
  });

  it("Embed goes through the publisher model's predict; its token counts are the usage", async () => {
    const texts = ["vertex one", "vertex two words"];
    const res = await client.unary<{ embeddings: { values: number[] }[]; usage: { prompt_tokens: number } }>("Embed", {
      model: "vertex-embed",
      texts,
      encoding: "EMBEDDING_ENCODING_FLOAT",
    });
    expect(res.embeddings.map((e) => e.values)).toEqual(texts.map((t) => Array.from(Float32Array.from(fakeVector(t, 8)))));
    expect(res.usage.prompt_tokens).toBe(5);
    const call = fake.requests.find((r) => r.path !== "/token")!;
    expect(call.path).toBe(vertexPath("predict", "text-embedding-005"));
    expect(call.body).toEqual({ instances: [{ content: "vertex one" }, { content: "vertex two words" }] });
  });
});

describe("/v1/chat/completions through the openai SDK", () => {
  const openai = () => new OpenAI({ baseURL: `http://${app.httpAddress}/v1`, apiKey: "unused-when-auth-is-off", maxRetries: 0 });

  it("unary and streamed, against both auth modes", async () => {
    for (const model of ["gemini", "vertex"]) {
      const res = await openai().chat.completions.create({ model, messages: [{ role: "user", content: "hi from the sdk" }] });
      expect(res.choices[0]!.message.content).toBe("hi from the sdk");
      expect(res.choices[0]!.finish_reason).toBe("stop");
      const stream = await openai().chat.completions.create({ model, messages: [{ role: "user", content: "streamed words" }], stream: true });
      let content = "";
      for await (const chunk of stream) content += chunk.choices[0]?.delta.content ?? "";
      expect(content).toBe("streamed words");
    }
  });

  it("tool calls come back in OpenAI's shape", async () => {
    fake.setScenario("tool-calls");
    const res = await openai().chat.completions.create({
      model: "gemini",
      messages: [{ role: "user", content: "weather?" }],
      tools: [{ type: "function", function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } } } } }],
    });
    expect(res.choices[0]!.finish_reason).toBe("tool_calls");
    expect(res.choices[0]!.message.tool_calls?.map((c) => (c.type === "function" ? [c.id, c.function.name, c.function.arguments] : []))).toEqual([
      ["call_0", "get_weather", '{"city":"Paris"}'],
      ["call_1", "get_time", '{"tz":"Europe/Paris"}'],
    ]);
  });
});

describe("secrets", () => {
  it("neither the API key nor an access token is in the log", async () => {
    fake.setScenario("rate-limited");
    await expectServiceError(client.unary("Chat", chatRequest("gemini", [userTurn("hi")])));
    await expectServiceError(client.unary("Chat", chatRequest("gemini-wrong-key", [userTurn("hi")])));
    fake.setScenario("server-error");
    await expectServiceError(client.unary("Chat", chatRequest("vertex", [userTurn("hi")])));
    expect(fake.tokens.length).toBeGreaterThan(0);
    const log = logLines.join("\n");
    expect(log).toContain("gemini-wrong-key");
    expect(log).not.toContain(API_KEY);
    expect(log).not.toContain(WRONG_KEY);
    for (const t of fake.tokens) expect(log).not.toContain(t.token);
  });
});
