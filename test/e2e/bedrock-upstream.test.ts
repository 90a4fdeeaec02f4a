/**
 * The `bedrock` kind end to end: a grpc-js client (contract loaded from proto/ at run time) and the
 * official `openai` SDK on the OpenAI-compatible API → infergate on loopback ports → the AWS SDK
 * (SigV4, HTTP/2, the binary event stream) → the Bedrock fake (test/fakes/bedrock-fake.ts), which
 * verifies each request's signature itself. Asserts what the clients get and the exact requests the
 * fake received.
 */
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { App } from "../../src/server/app.js";
import { BEDROCK_API_KEY, BEDROCK_CREDENTIALS, BEDROCK_TEXT, type BedrockFake, type BedrockScenario, createBedrockFake, fakeVector } from "../fakes/bedrock-fake.js";
import { parseMetrics } from "../helpers/metrics.js";
import { openaiSdk, rejection } from "../helpers/openai-sdk.js";
import { protoStruct as struct } from "../helpers/proto-struct.js";
import { errorInfoOf, expectServiceError, inferenceClient, type ProtoClient, protoUsage as usage, statusDetails } from "../helpers/proto-clients.js";
import { startInProcess } from "../helpers/servers.js";

const MODEL_ID = "anthropic.claude-3-5-sonnet-20240620-v1:0";
const PROFILE_ARN = "arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.anthropic.claude-3-5-sonnet-20240620-v1:0";

type Obj = Record<string, unknown>;

const text = (t: string) => ({ text: t });
const turn = (role: string, ...content: Obj[]) => ({ role: `ROLE_${role}`, content });
const userTurn = (t: string) => turn("USER", text(t));
const chatRequest = (messages: Obj[], extra: Obj = {}) => ({ model: "claude", messages, ...extra });
const stamped = { model: "claude", model_version: "1", upstream: "bedrock-up", cached: false, stop_sequence: "" };
const final = (id: string, finish: string, u: ReturnType<typeof usage>, model = "claude") => ({
  event: "final",
  final: { id, finish_reason: `FINISH_REASON_${finish}`, usage: u, ...stamped, model },
});
const textDelta = (t: string) => ({ event: "text_delta", text_delta: t });
const toolDelta = (index: number, args: string, id = "", name = "") => ({ event: "tool_call_delta", tool_call_delta: { index, id, name, arguments: args } });
const assistant = (content: Obj[], toolCalls: Obj[] = []) => ({
  role: "ROLE_ASSISTANT",
  content: content.map((p) => ({ cache_breakpoint: null, ...p })),
  tool_calls: toolCalls.map((c) => ({ cache_breakpoint: null, ...c })),
  tool_call_id: "",
  name: "",
});

describe("bedrock upstream, end to end", () => {
  let fake: BedrockFake;
  let app: App;
  let client: ProtoClient;

  beforeAll(async () => {
    fake = await createBedrockFake();
    // The first upstream makes one attempt without a breaker (these tests watch the adapter); the
    // second retries (throttling), the third signs with a wrong secret, the fourth uses an API key.
    app = await startInProcess(`
upstreams:
  - name: bedrock-up
    kind: bedrock
    resilience: { retry: { maxAttempts: 1 }, breaker: { enabled: false } }
    endpoints: ["${fake.url}"]
    headers: { x-team: search }
    timeoutMs: 10000
    options:
      region: us-east-1
      credentials: { accessKeyId: "${BEDROCK_CREDENTIALS.accessKeyId}", secretAccessKey: "${BEDROCK_CREDENTIALS.secretAccessKey}" }
  - name: bedrock-retry
    kind: bedrock
    resilience: { retry: { maxAttempts: 3, backoffBaseMs: 1, backoffMaxMs: 5 }, breaker: { enabled: false } }
    endpoints: ["${fake.url}"]
    options:
      region: us-east-1
      throttlingRetryAfterMs: 20
      credentials: { accessKeyId: "${BEDROCK_CREDENTIALS.accessKeyId}", secretAccessKey: "${BEDROCK_CREDENTIALS.secretAccessKey}" }
  - name: bedrock-wrong-secret
    kind: bedrock
    resilience: { retry: { maxAttempts: 1 } }
    endpoints: ["${fake.url}"]
    options:
      region: us-east-1
      credentials: { accessKeyId: "${BEDROCK_CREDENTIALS.accessKeyId}", secretAccessKey: "not-the-secret-0123456789abcdef" }
  - name: bedrock-key
    kind: bedrock
    resilience: { retry: { maxAttempts: 1 } }
    endpoints: ["${fake.url}"]
    apiKey: "${BEDROCK_API_KEY}"
    options: { region: us-west-2 }
models:
  - name: claude
    upstream: bedrock-up
    upstreamModel: ${MODEL_ID}
    options: { maxTokens: 321 }
  - name: claude-eu
    upstream: bedrock-up
    upstreamModel: "${PROFILE_ARN}"
    options:
      region: eu-west-1
      topKField: top_k
      additionalModelRequestFields: { anthropic_beta: ["x"] }
      guardrail: { identifier: gr-123, version: "2", trace: enabled, streamProcessingMode: async }
  - name: claude-retry
    upstream: bedrock-retry
    upstreamModel: ${MODEL_ID}
  - name: claude-wrong-secret
    upstream: bedrock-wrong-secret
    upstreamModel: ${MODEL_ID}
  - name: claude-key
    upstream: bedrock-key
    upstreamModel: ${MODEL_ID}
  - name: titan
    upstream: bedrock-up
    upstreamModel: amazon.titan-embed-text-v2:0
    capabilities: [embed]
  - name: cohere
    upstream: bedrock-up
    upstreamModel: cohere.embed-english-v3
    capabilities: [embed]
    options: { embeddings: { inputType: search_query } }
`);
    client = inferenceClient(app.grpcAddress);
  });

  afterAll(async () => {
    client?.close();
    await app?.shutdown();
    await fake?.close();
  });

  beforeEach(() => {
    fake.reset();
  });

  it("ListModels reports the kind and its capabilities: chat and generate by default, embed where config says", async () => {
    const res = await client.unary<{ models: Obj[] }>("ListModels", {});
    const byName = new Map(res.models.map((m) => [m["name"], m]));
    expect(byName.get("claude")).toMatchObject({ upstream_kind: "bedrock", upstream: "bedrock-up", capabilities: ["CAPABILITY_CHAT", "CAPABILITY_GENERATE"] });
    expect(byName.get("titan")).toMatchObject({ upstream_kind: "bedrock", capabilities: ["CAPABILITY_EMBED"] });
  });

  it("Chat: system messages, max_tokens from the model's options; signed with SigV4 the fake verified", async () => {
    const res = await client.unary<Obj>("Chat", chatRequest([turn("SYSTEM", text("You are terse.")), turn("DEVELOPER", text("English.")), userTurn("Hello there")]));
    expect(res).toMatchObject({ id: "fake-req-0", message: assistant([{ part: "text", text: "Hello there" }]), finish_reason: "FINISH_REASON_STOP", usage: usage(6, 2), ...stamped });
    expect(fake.requests).toHaveLength(1);
    const req = fake.requests[0]!;
    expect([req.operation, req.modelId, req.auth, req.region]).toEqual(["converse", MODEL_ID, "sigv4", "us-east-1"]);
    expect(req.headers["x-team"]).toBe("search");
    expect(req.headers["authorization"]).toMatch(/^AWS4-HMAC-SHA256 Credential=AKIAFAKEBEDROCK7EXMP\/\d{8}\/us-east-1\/bedrock\/aws4_request, SignedHeaders=[a-z0-9;:-]*x-team[a-z0-9;:-]*, Signature=[0-9a-f]{64}$/);
    expect(req.body).toEqual({
      messages: [{ role: "user", content: [{ text: "Hello there" }] }],
      system: [{ text: "You are terse." }, { text: "English." }],
      inferenceConfig: { maxTokens: 321 },
    });
  });

  it("Chat: max_tokens, temperature, top_p and stop go to inferenceConfig", async () => {
    await client.unary<Obj>("Chat", chatRequest([userTurn("Hi")], { max_tokens: 77, temperature: 0.5, top_p: 0.9, stop: ["END", "\n\n"], presence_penalty: 0 }));
    expect(fake.requests[0]!.body).toEqual({
      messages: [{ role: "user", content: [{ text: "Hi" }] }],
      inferenceConfig: { maxTokens: 77, temperature: 0.5, topP: 0.9, stopSequences: ["END", "\n\n"] },
    });
  });

  it("a model by inference-profile ARN in its own region: guardrailConfig, additionalModelRequestFields and top_k from its options", async () => {
    const request = { ...chatRequest([userTurn("Hi")]), model: "claude-eu", top_k: 5 };
    await client.unary<Obj>("Chat", request);
    const { status: st } = await client.serverStream<Obj>("Generate", request).done;
    expect(st.code).toBe(status.OK);
    const [unary, stream] = fake.requests;
    expect([unary!.operation, unary!.modelId, unary!.region, unary!.auth]).toEqual(["converse", PROFILE_ARN, "eu-west-1", "sigv4"]);
    expect(unary!.path).toBe(`/model/${encodeURIComponent(PROFILE_ARN)}/converse`);
    expect(unary!.body).toEqual({
      messages: [{ role: "user", content: [{ text: "Hi" }] }],
      additionalModelRequestFields: { anthropic_beta: ["x"], top_k: 5 },
      guardrailConfig: { guardrailIdentifier: "gr-123", guardrailVersion: "2", trace: "enabled" },
    });
    expect([stream!.operation, stream!.modelId]).toEqual(["converse-stream", PROFILE_ARN]);
    expect((stream!.body as Obj)["guardrailConfig"]).toEqual({ guardrailIdentifier: "gr-123", guardrailVersion: "2", trace: "enabled", streamProcessingMode: "async" });
  });

  it("Generate streams the text deltas, then the final event with the request id and usage", async () => {
    fake.setScenario("text");
    const { events, status: st, error } = await client.serverStream<Obj>("Generate", chatRequest([userTurn("Say hello")])).done;
    expect(error).toBeUndefined();
    expect(st.code).toBe(status.OK);
    expect(events).toEqual([textDelta("Hello"), textDelta(" from"), textDelta(" the"), textDelta(" fake"), textDelta(" upstream."), final("fake-req-0", "STOP", usage(12, 6))]);
    const req = fake.requests[0]!;
    expect([req.operation, req.auth]).toEqual(["converse-stream", "sigv4"]);
    expect(req.body).toEqual({ messages: [{ role: "user", content: [{ text: "Say hello" }] }], inferenceConfig: { maxTokens: 321 } });
  });

  it("prompt caching: the cache reads and writes are parts of the prompt, unary and streamed, and the token metric counts them by kind", async () => {
    fake.setScenario("cache-usage");
    const cached = usage(12 + 2048 + 1500, 6, { cached: 2048, creation: 1500 });
    const res = await client.unary<Obj>("Chat", chatRequest([userTurn("Say hello")]));
    expect(res).toMatchObject({ message: assistant([{ part: "text", text: BEDROCK_TEXT }]), usage: cached });
    const { events } = await client.serverStream<Obj>("Generate", chatRequest([userTurn("Say hello")])).done;
    expect(events.at(-1)).toEqual(final("fake-req-1", "STOP", cached));
    const tokens = async (direction: string, kind: string) => {
      const m = parseMetrics(await (await fetch(`http://${app.adminAddress}/metrics`)).text());
      return m.get(`infergate_tokens_total{model="claude",direction="${direction}",kind="${kind}"}`);
    };
    await expect.poll(() => tokens("prompt", "cached"), { timeout: 10_000 }).toBeGreaterThanOrEqual(2 * 2048);
    expect(await tokens("prompt", "cache_creation")).toBeGreaterThanOrEqual(2 * 1500);
  });

  describe("stop reasons map to the finish reason", () => {
    it.each<[BedrockScenario, string]>([
      ["text", "STOP"],
      ["stop-sequence", "STOP"],
      ["max-tokens", "LENGTH"],
      ["guardrail", "CONTENT_FILTER"],
      ["content-filtered", "CONTENT_FILTER"],
    ])("%s → %s, unary and streamed", async (scenario, finish) => {
      fake.setScenario(scenario);
      const res = await client.unary<Obj>("Chat", chatRequest([userTurn("hi")]));
      expect(res["finish_reason"]).toBe(`FINISH_REASON_${finish}`);
      const { events } = await client.serverStream<Obj>("Generate", chatRequest([userTurn("hi")])).done;
      expect((events.at(-1)!["final"] as Obj)["finish_reason"]).toBe(`FINISH_REASON_${finish}`);
    });
  });

  const weatherTools = [
    {
      name: "get_weather",
      description: "Current weather of a city",
      parameters: struct({ type: "object", properties: { city: { type: "string" } }, required: ["city"] }),
      strict: true,
    },
    { name: "get_time" },
  ];
  const wireTools = [
    { toolSpec: { name: "get_weather", description: "Current weather of a city", inputSchema: { json: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } }, strict: true } },
    { toolSpec: { name: "get_time", inputSchema: { json: { type: "object", properties: {} } } } },
  ];

  it("Generate streams tool calls by their position among tool calls; a call without input gets {}", async () => {
    fake.setScenario("tool-calls");
    const { events, status: st } = await client.serverStream<Obj>(
      "Generate",
      chatRequest([userTurn("Weather and time in Paris?")], { tools: weatherTools, tool_choice: { mode: "TOOL_CHOICE_MODE_REQUIRED" } }),
    ).done;
    expect(st.code).toBe(status.OK);
    expect(events).toEqual([
      textDelta("Let me"),
      textDelta(" check."),
      toolDelta(0, "", "tooluse_weather", "get_weather"),
      toolDelta(0, '{"ci'),
      toolDelta(0, 'ty": "Pa'),
      toolDelta(0, 'ris", "unit": "c'),
      toolDelta(0, 'elsius"}'),
      toolDelta(1, "", "tooluse_time", "get_time"),
      toolDelta(1, "{}"),
      final("fake-req-0", "TOOL_CALLS", usage(40, 30)),
    ]);
    expect(fake.requests[0]!.body).toEqual({
      messages: [{ role: "user", content: [{ text: "Weather and time in Paris?" }] }],
      inferenceConfig: { maxTokens: 321 },
      toolConfig: { tools: wireTools, toolChoice: { any: {} } },
    });
  });

  it("Chat returns the tool calls; the next turn sends them back as toolUse and the results with the user's words as one user turn", async () => {
    fake.setScenario("tool-calls");
    const res = await client.unary<Obj>("Chat", chatRequest([userTurn("Weather and time in Paris?")], { tools: weatherTools, tool_choice: { function_name: "get_weather" } }));
    const calls = [
      { id: "tooluse_weather", name: "get_weather", arguments: '{"city":"Paris","unit":"celsius"}' },
      { id: "tooluse_time", name: "get_time", arguments: "{}" },
    ];
    expect(res).toMatchObject({ message: assistant([{ part: "text", text: "Let me check." }], calls), finish_reason: "FINISH_REASON_TOOL_CALLS", usage: usage(40, 30) });
    expect((fake.requests[0]!.body as Obj)["toolConfig"]).toEqual({ tools: wireTools, toolChoice: { tool: { name: "get_weather" } } });

    fake.setScenario("echo");
    await client.unary<Obj>(
      "Chat",
      chatRequest(
        [
          userTurn("Weather and time in Paris?"),
          { role: "ROLE_ASSISTANT", content: [text("Let me check.")], tool_calls: calls },
          { role: "ROLE_TOOL", tool_call_id: "tooluse_weather", content: [text("18°C, sunny")] },
          { role: "ROLE_TOOL", tool_call_id: "tooluse_time", content: [text("14:05")] },
          userTurn("Thanks!"),
        ],
        { tools: weatherTools, tool_choice: { mode: "TOOL_CHOICE_MODE_AUTO" } },
      ),
    );
    expect(fake.requests[1]!.body).toEqual({
      messages: [
        { role: "user", content: [{ text: "Weather and time in Paris?" }] },
        {
          role: "assistant",
          content: [
            { text: "Let me check." },
            { toolUse: { toolUseId: "tooluse_weather", name: "get_weather", input: { city: "Paris", unit: "celsius" } } },
            { toolUse: { toolUseId: "tooluse_time", name: "get_time", input: {} } },
          ],
        },
        {
          role: "user",
          content: [
            { toolResult: { toolUseId: "tooluse_weather", content: [{ text: "18°C, sunny" }] } },
            { toolResult: { toolUseId: "tooluse_time", content: [{ text: "14:05" }] } },
            { text: "Thanks!" },
          ],
        },
      ],
      inferenceConfig: { maxTokens: 321 },
      toolConfig: { tools: wireTools, toolChoice: { auto: {} } },
    });
  });

  it("sends images as bytes (image_data and data: URLs) and S3 locations", async () => {
    const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    await client.unary<Obj>(
      "Chat",
      chatRequest([
        turn(
          "USER",
          text("Compare these"),
          { image_data: { data: png, mime_type: "image/png" } },
          { image_url: { url: "data:image/jpeg;base64,/9j/4AAQSkZJRg==" } },
          { image_url: { url: "s3://my-bucket/cats/cat.webp" } },
        ),
      ]),
    );
    // The REST JSON carries the bytes as base64.
    expect((fake.requests[0]!.body as { messages: Obj[] }).messages).toEqual([
      {
        role: "user",
        content: [
          { text: "Compare these" },
          { image: { format: "png", source: { bytes: png.toString("base64") } } },
          { image: { format: "jpeg", source: { bytes: "/9j/4AAQSkZJRg==" } } },
          { image: { format: "webp", source: { s3Location: { uri: "s3://my-bucket/cats/cat.webp" } } } },
        ],
      },
    ]);
  });

  describe("Bedrock's errors", () => {
    const cases: [BedrockScenario, number, string, string, string][] = [
      ["throttled", status.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED", 'upstream "bedrock-up" is rate limiting the gateway', "ThrottlingException"],
      ["quota", status.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED", 'upstream "bedrock-up" refused the request over an account quota', "ServiceQuotaExceededException"],
      ["server-error", status.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", 'upstream "bedrock-up" is unavailable (HTTP 500)', "InternalServerException"],
      ["unavailable", status.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", 'upstream "bedrock-up" is unavailable (HTTP 503)', "ServiceUnavailableException"],
      ["model-error", status.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", 'upstream "bedrock-up" is unavailable (HTTP 503)', "ModelErrorException"],
      ["not-found", status.NOT_FOUND, "MODEL_NOT_FOUND", 'upstream "bedrock-up" does not know the model or path', "ResourceNotFoundException"],
      ["access-denied", status.INTERNAL, "UPSTREAM_AUTH", `upstream "bedrock-up" refused the gateway's credentials`, "AccessDeniedException"],
      ["validation", status.INVALID_ARGUMENT, "INVALID_ARGUMENT", 'upstream "bedrock-up" rejected the request: The model returned the following errors: prompt is too long', "ValidationException"],
    ];

    it.each(cases)("Chat and Generate: %s → %s %s", async (scenario, code, reason, message, exception) => {
      fake.setScenario(scenario);
      const err = await expectServiceError(client.unary("Chat", chatRequest([userTurn("hi")])));
      expect([err.code, err.details]).toEqual([code, message]);
      const details = statusDetails(err);
      expect(errorInfoOf(details)).toMatchObject({ reason, metadata: { upstream: "bedrock-up", upstream_error: exception } });
      const retry = details.details.find((d) => d.type_url === "type.googleapis.com/google.rpc.RetryInfo");
      // A ThrottlingException has no Retry-After: the upstream's throttlingRetryAfterMs (default 1 s) stands in.
      expect(retry?.message).toEqual(scenario === "throttled" ? { retry_delay: { seconds: "1", nanos: 0 } } : undefined);
      const { events, error } = await client.serverStream<Obj>("Generate", chatRequest([userTurn("hi")])).done;
      expect(events).toEqual([]);
      expect([error?.code, error?.details]).toEqual([code, message]);
      expect(fake.requests.map((r) => r.operation)).toEqual(["converse", "converse-stream"]);
    });

    it("a ThrottlingException is retried after the configured delay, and the retry succeeds", async () => {
      fake.enqueueScenario("throttled");
      fake.enqueueScenario("text");
      const res = await client.unary<Obj>("Chat", { ...chatRequest([userTurn("hi")]), model: "claude-retry" });
      expect(res).toMatchObject({ message: assistant([{ part: "text", text: BEDROCK_TEXT }]), upstream: "bedrock-retry" });
      expect(fake.requests.map((r) => r.status)).toEqual([429, 200]);
      expect(fake.requests[1]!.receivedAt - fake.requests[0]!.receivedAt).toBeGreaterThanOrEqual(20);
    });

    it("a throttlingException frame before any event is retried too", async () => {
      fake.enqueueScenario("stream-throttled");
      fake.enqueueScenario("text");
      const { events, status: st } = await client.serverStream<Obj>("Generate", { ...chatRequest([userTurn("hi")]), model: "claude-retry" }).done;
      expect(st.code).toBe(status.OK);
      expect(events).toHaveLength(6);
      expect(fake.requests.map((r) => r.scenario)).toEqual(["stream-throttled", "text"]);
    });

    it("a wrong secret: the fake's own SigV4 check refuses the signature (403), the call fails INTERNAL UPSTREAM_AUTH, and no secret is shown", async () => {
      const err = await expectServiceError(client.unary("Chat", { ...chatRequest([userTurn("hi")]), model: "claude-wrong-secret" }));
      expect([err.code, err.details]).toEqual([status.INTERNAL, `upstream "bedrock-wrong-secret" refused the gateway's credentials`]);
      expect(errorInfoOf(statusDetails(err))).toMatchObject({ reason: "UPSTREAM_AUTH", metadata: { upstream_error: "InvalidSignatureException", http_status: "403" } });
      expect(fake.requests[0]!.status).toBe(403);
      expect(fake.requests[0]!.auth).toBeUndefined();
      const seen = JSON.stringify([err.details, statusDetails(err), err.metadata.getMap()]);
      expect(seen).not.toContain("not-the-secret");
      expect(seen).not.toContain(BEDROCK_CREDENTIALS.secretAccessKey);
    });

    it("a Bedrock API key goes as a bearer token instead of a signature", async () => {
      const res = await client.unary<Obj>("Chat", { ...chatRequest([userTurn("key please")]), model: "claude-key" });
      expect(res["message"]).toMatchObject({ content: [{ text: "key please" }] });
      expect(fake.requests[0]!.auth).toBe("bearer");
      expect(fake.requests[0]!.headers["authorization"]).toBe(`Bearer ${BEDROCK_API_KEY}`);
    });
  });

  describe("failures after HTTP 200", () => {
    it("a modelStreamErrorException frame mid-stream ends the stream UNAVAILABLE after the deltas already sent", async () => {
      fake.setScenario("mid-stream-exception");
      const { events, status: st, error } = await client.serverStream<Obj>("Generate", chatRequest([userTurn("hi")])).done;
      expect(events).toEqual([textDelta("Hello"), textDelta(" from")]);
      expect(st.code).toBe(status.UNAVAILABLE);
      expect(error?.details).toBe('upstream "bedrock-up" failed during the stream (ModelStreamErrorException)');
      expect(errorInfoOf(statusDetails(error!))).toEqual({
        reason: "UPSTREAM_UNAVAILABLE",
        domain: "infergate",
        metadata: { upstream: "bedrock-up", upstream_error: "ModelStreamErrorException" },
      });
    });

    it("a stream that ends without messageStop is UNAVAILABLE STREAM_TRUNCATED, never OK", async () => {
      fake.setScenario("truncated");
      const { events, status: st, error } = await client.serverStream<Obj>("Generate", chatRequest([userTurn("hi")])).done;
      expect(events).toEqual([textDelta("Hello"), textDelta(" from"), textDelta(" the")]);
      expect(st.code).toBe(status.UNAVAILABLE);
      expect(error?.details).toBe('upstream "bedrock-up" ended the stream before messageStop');
      expect(errorInfoOf(statusDetails(error!))).toEqual({ reason: "STREAM_TRUNCATED", domain: "infergate", metadata: { upstream: "bedrock-up" } });
    });

    it("a connection cut mid-frame is UNAVAILABLE STREAM_TRUNCATED after the events already sent", async () => {
      fake.setScenario("cut");
      const { events, status: st, error } = await client.serverStream<Obj>("Generate", chatRequest([userTurn("hi")])).done;
      expect(events).toEqual([textDelta("Hello"), textDelta(" from")]);
      expect(st.code).toBe(status.UNAVAILABLE);
      expect(error?.details).toBe('upstream "bedrock-up" broke off the stream after 2 events');
      expect(errorInfoOf(statusDetails(error!))).toMatchObject({ reason: "STREAM_TRUNCATED", metadata: { upstream: "bedrock-up" } });
      expect(fake.requests[0]!.cutAt).toBeDefined();
    });
  });

  it("cancelling Generate mid-stream aborts the SDK request: the fake sees its stream reset before the next event", async () => {
    fake.setScenario("slow", { delayMs: 300, tokens: 200 });
    const stream = client.serverStream<Obj>("Generate", chatRequest([userTurn("hi")]));
    await stream.waitFor((e) => e["text_delta"] === "t1 ");
    const cancelledAt = Date.now();
    stream.call.cancel();
    const { status: st, events } = await stream.done;
    expect(st.code).toBe(status.CANCELLED);
    const rec = await fake.settled(0);
    expect(rec.abortedAt).toBeDefined();
    expect(rec.finishedAt).toBeUndefined();
    expect(rec.abortedAt!).toBeGreaterThanOrEqual(cancelledAt);
    expect(events.length).toBeLessThan(200);
  });

  it("the caller's deadline ends the upstream request: DEADLINE_EXCEEDED, and the fake sees the abort", async () => {
    fake.setScenario("slow", { delayMs: 100, tokens: 100 });
    const { events, status: st } = await client.serverStream<Obj>("Generate", chatRequest([userTurn("hi")]), { timeoutMs: 450 }).done;
    expect(st.code).toBe(status.DEADLINE_EXCEEDED);
    expect(events.every((e) => e["event"] === "text_delta")).toBe(true);
    const rec = await fake.settled(0);
    expect(rec.abortedAt).toBeDefined();
    expect(rec.finishedAt).toBeUndefined();
  });

  describe("embeddings through InvokeModel", () => {
    it("Titan: one request per text (inputText, dimensions), vectors in input order, tokens summed", async () => {
      const res = await client.unary<Obj>("Embed", { model: "titan", texts: ["first text", "the second one"], dimensions: 4 });
      expect((res["embeddings"] as Obj[]).map((e) => e["values"])).toEqual(
        ["first text", "the second one"].map((t) => fakeVector(t, 4).map((v) => Math.fround(v))),
      );
      expect(res).toMatchObject({ dimensions: 4, usage: { prompt_tokens: 5, total_tokens: 5 }, model: "titan", upstream: "bedrock-up" });
      expect(fake.requests.map((r) => [r.operation, r.modelId, r.auth])).toEqual([
        ["invoke", "amazon.titan-embed-text-v2:0", "sigv4"],
        ["invoke", "amazon.titan-embed-text-v2:0", "sigv4"],
      ]);
      expect(fake.requests.map((r) => r.body).sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)))).toEqual([
        { inputText: "first text", dimensions: 4 },
        { inputText: "the second one", dimensions: 4 },
      ]);
    });

    it("Cohere: one request for the batch (texts, input_type from the model's options); tokens from Bedrock's header", async () => {
      const res = await client.unary<Obj>("Embed", { model: "cohere", texts: ["alpha beta", "gamma"] });
      expect((res["embeddings"] as Obj[]).map((e) => e["values"])).toEqual(["alpha beta", "gamma"].map((t) => fakeVector(t, 6).map((v) => Math.fround(v))));
      expect(res).toMatchObject({ dimensions: 6, usage: { prompt_tokens: 3 } });
      expect(fake.requests.map((r) => r.body)).toEqual([{ texts: ["alpha beta", "gamma"], input_type: "search_query" }]);
    });

    it("Cohere refuses dimensions before any request", async () => {
      const err = await expectServiceError(client.unary("Embed", { model: "cohere", texts: ["x"], dimensions: 3 }));
      expect(err.code).toBe(status.INVALID_ARGUMENT);
      expect(err.details.startsWith("dimensions: ")).toBe(true);
      expect(fake.requests).toHaveLength(0);
    });
  });

  describe("the OpenAI-compatible API in front of a Bedrock model", () => {
    it("/v1/chat/completions unary and streamed, through the openai SDK", async () => {
      fake.setScenario("text");
      const sdk = openaiSdk(app);
      const res = await sdk.chat.completions.create({ model: "claude", messages: [{ role: "user", content: "hi" }] });
      expect(res.choices[0]!.message.content).toBe(BEDROCK_TEXT);
      expect(res.choices[0]!.finish_reason).toBe("stop");
      expect(res.usage).toMatchObject({ prompt_tokens: 12, completion_tokens: 6 });
      const stream = await sdk.chat.completions.create({ model: "claude", messages: [{ role: "user", content: "hi" }], stream: true });
      let joined = "";
      let finish: string | null = null;
      for await (const chunk of stream) {
        joined += chunk.choices[0]?.delta.content ?? "";
        finish = chunk.choices[0]?.finish_reason ?? finish;
      }
      expect([joined, finish]).toEqual([BEDROCK_TEXT, "stop"]);
      expect(fake.requests.map((r) => r.operation)).toEqual(["converse", "converse-stream"]);
    });

    it("a throttled Bedrock is HTTP 429 there", async () => {
      fake.setScenario("throttled");
      const err = (await rejection(openaiSdk(app).chat.completions.create({ model: "claude", messages: [{ role: "user", content: "hi" }] }))) as { status?: number };
      expect(err.status).toBe(429);
    });
  });

  describe("fields Converse cannot carry are refused before any upstream call", () => {
    it.each<[string, Obj, string]>([
      ["seed", { seed: "42" }, "seed"],
      ["presence_penalty", { presence_penalty: 0.5 }, "presence_penalty"],
      ["frequency_penalty", { frequency_penalty: -0.5 }, "frequency_penalty"],
      ["top_k without the model's topKField", { top_k: 5 }, "top_k"],
      ["a JSON object response format", { response_format: { type: "RESPONSE_FORMAT_TYPE_JSON_OBJECT" } }, "response_format.type"],
      ["tool choice none", { tools: [{ name: "f" }], tool_choice: { mode: "TOOL_CHOICE_MODE_NONE" } }, "tool_choice.mode"],
      ["parallel_tool_calls false", { tools: [{ name: "f" }], parallel_tool_calls: false }, "parallel_tool_calls"],
      ["an image by web URL", { messages: [turn("USER", { image_url: { url: "https://example.com/a.png" } })] }, "messages[0].content[0].image_url.url"],
      ["an image detail", { messages: [turn("USER", { image_url: { url: "s3://b/a.png", detail: "IMAGE_DETAIL_HIGH" } })] }, "messages[0].content[0].image_url.detail"],
      ["an author name", { messages: [{ role: "ROLE_USER", name: "alice", content: [text("hi")] }] }, "messages[0].name"],
    ])("%s", async (_name, extra, field) => {
      const request = chatRequest([userTurn("hi")], extra);
      const err = await expectServiceError(client.unary("Chat", request));
      expect(err.code).toBe(status.INVALID_ARGUMENT);
      expect(err.details.startsWith(`${field}: `)).toBe(true);
      expect(errorInfoOf(statusDetails(err))).toEqual({ reason: "INVALID_ARGUMENT", domain: "infergate", metadata: { field } });
      const { events, error } = await client.serverStream<Obj>("Generate", request).done;
      expect(events).toEqual([]);
      expect(error?.code).toBe(status.INVALID_ARGUMENT);
      expect(fake.requests).toHaveLength(0);
    });
  });
});
