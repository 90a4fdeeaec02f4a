/**
 * The `openai` kind end to end: a grpc-js client (contract loaded from proto/ at run time) →
 * infergate on loopback ports → the OpenAI fake (test/fakes/openai-fake.ts) on its own port.
 * Asserts what the client gets and the exact request the fake received.
 */
import { Metadata, type ServiceError, status } from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { App } from "../../src/server/app.js";
import { createOpenAIFake, OPENAI_FIXTURE_TEXT, type OpenAIFake, type OpenAIScenario } from "../fakes/openai-fake.js";
import { parseMetrics } from "../helpers/metrics.js";
import { errorInfoOf, expectServiceError, inferenceClient, loaderOptions, type ProtoClient, protoUsage, statusDetails } from "../helpers/proto-clients.js";
import { startInProcess } from "../helpers/servers.js";

const API_KEY = "sk-test-openai-4f9c2a7e1b8d";
const AZURE_KEY = "azure-test-key-93b1c0d2e4f6";
const UPSTREAM_MODEL = "gpt-4o-mini";

type Obj = Record<string, unknown>;

const text = (t: string) => ({ text: t });
const turn = (role: string, ...content: Obj[]) => ({ role: `ROLE_${role}`, content });
const userTurn = (t: string) => turn("USER", text(t));
const chatRequest = (messages: Obj[], extra: Obj = {}, model = "gpt") => ({ model, messages, ...extra });

/**
 * A JSON value as a google.protobuf.Struct field value, as proto-loader takes it (protobufjs
 * bundles struct.proto with camelCase field names, whatever keepCase says).
 */
function value(v: unknown): Obj {
  if (v === null) return { nullValue: "NULL_VALUE" };
  if (typeof v === "number") return { numberValue: v };
  if (typeof v === "string") return { stringValue: v };
  if (typeof v === "boolean") return { boolValue: v };
  if (Array.isArray(v)) return { listValue: { values: v.map(value) } };
  return { structValue: struct(v as Obj) };
}
function struct(o: Obj): Obj {
  return { fields: Object.fromEntries(Object.entries(o).map(([k, v]) => [k, value(v)])) };
}

const usage = protoUsage;
const final = (id: string, finish: string, u: ReturnType<typeof usage>, model = "gpt", upstream = "gpt-up") => ({
  event: "final",
  final: { id, finish_reason: `FINISH_REASON_${finish}`, usage: u, model, model_version: "1", upstream, cached: false, stop_sequence: "" },
});
const textDelta = (t: string) => ({ event: "text_delta", text_delta: t });
const toolDelta = (index: number, args: string, id = "", name = "") => ({
  event: "tool_call_delta",
  tool_call_delta: { index, id, name, arguments: args },
});
/** An answer's message as proto-loader renders it (an unset cache_breakpoint is null). */
const assistant = (content: Obj[], toolCalls: Obj[] = []) => ({
  role: "ROLE_ASSISTANT",
  content: content.map((p) => ({ cache_breakpoint: null, ...p })),
  tool_calls: toolCalls.map((c) => ({ cache_breakpoint: null, ...c })),
  tool_call_id: "",
  name: "",
});
/** The Chat method as proto-loader defines it, for a unary call the test can cancel. */
function chatMethod(): protoLoader.MethodDefinition<object, object> {
  const def = protoLoader.loadSync("infergate/v1/inference_service.proto", loaderOptions)["infergate.v1.InferenceService"];
  return (def as protoLoader.ServiceDefinition)["Chat"]!;
}

const fixtureDeltas = [textDelta("Hello"), textDelta(" from"), textDelta(" the"), textDelta(" fake"), textDelta(" upstream.")];

describe("openai upstream, end to end", () => {
  let fake: OpenAIFake;
  let app: App;
  let client: ProtoClient;

  beforeAll(async () => {
    fake = await createOpenAIFake();
    // One attempt per call and no breaker: these tests watch the adapter, whose every failure
    // would otherwise be retried and, repeated, open the endpoint's breaker (docs/resilience.md).
    app = await startInProcess(`
upstreams:
  - name: gpt-up
    kind: openai
    resilience: { retry: { maxAttempts: 1 }, breaker: { enabled: false } }
    endpoints: ["${fake.baseUrl}"]
    apiKey: "${API_KEY}"
    headers: { x-team: search }
    timeoutMs: 10000
  - name: azure-up
    kind: openai
    resilience: { retry: { maxAttempts: 1 }, breaker: { enabled: false } }
    endpoints: ["${fake.url}"]
    apiKey: "${AZURE_KEY}"
    options: { azure: { apiVersion: "2024-10-21" } }
  - name: azure-fixed-up
    kind: openai
    resilience: { retry: { maxAttempts: 1 }, breaker: { enabled: false } }
    endpoints: ["${fake.url}/"]
    apiKey: "${AZURE_KEY}"
    options: { azure: { apiVersion: "2025-01-01-preview", deployment: "prod deployment" } }
  - name: reasoning-up
    kind: openai
    resilience: { retry: { maxAttempts: 1 }, breaker: { enabled: false } }
    endpoints: ["${fake.baseUrl}/"]
    apiKey: "${API_KEY}"
    options: { developerRole: developer, maxTokensField: max_completion_tokens }
models:
  - name: gpt
    upstream: gpt-up
    upstreamModel: ${UPSTREAM_MODEL}
    cache: { policy: "off" }
  - name: azure-gpt
    upstream: azure-up
    upstreamModel: gpt4o-deployment
    cache: { policy: "off" }
  - name: azure-fixed
    upstream: azure-fixed-up
    upstreamModel: ignored-by-azure
    cache: { policy: "off" }
  - name: o3
    upstream: reasoning-up
    upstreamModel: o3-mini
    cache: { policy: "off" }
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

  it("ListModels reports the kind and its capabilities", async () => {
    const res = await client.unary<{ models: Obj[] }>("ListModels", {});
    expect(res.models.map((m) => [m["name"], m["upstream_kind"], m["upstream"], m["capabilities"], m["state"]])).toEqual([
      ["gpt", "openai", "gpt-up", ["CAPABILITY_CHAT", "CAPABILITY_GENERATE"], "MODEL_STATE_UNSPECIFIED"],
      ["azure-gpt", "openai", "azure-up", ["CAPABILITY_CHAT", "CAPABILITY_GENERATE"], "MODEL_STATE_UNSPECIFIED"],
      ["azure-fixed", "openai", "azure-fixed-up", ["CAPABILITY_CHAT", "CAPABILITY_GENERATE"], "MODEL_STATE_UNSPECIFIED"],
      ["o3", "openai", "reasoning-up", ["CAPABILITY_CHAT", "CAPABILITY_GENERATE"], "MODEL_STATE_UNSPECIFIED"],
    ]);
  });

  it("Chat: plain text, with the bearer key, the extra header and nothing unset in the body", async () => {
    const res = await client.unary<Obj>("Chat", chatRequest([turn("SYSTEM", text("Be terse.")), userTurn("Hello there")]));
    expect(res).toEqual({
      id: "chatcmpl-fake-0",
      message: assistant([{ part: "text", text: "Hello there" }]),
      finish_reason: "FINISH_REASON_STOP",
      usage: usage(4, 2),
      model: "gpt",
      model_version: "1",
      upstream: "gpt-up",
      cached: false,
      stop_sequence: "",
    });
    expect(fake.requests).toHaveLength(1);
    const req = fake.requests[0]!;
    expect(req.method).toBe("POST");
    expect(req.url).toBe("/v1/chat/completions");
    expect(req.headers["authorization"]).toBe(`Bearer ${API_KEY}`);
    expect(req.headers["api-key"]).toBeUndefined();
    expect(req.headers["content-type"]).toBe("application/json");
    expect(req.headers["accept"]).toBe("application/json");
    expect(req.headers["x-team"]).toBe("search");
    expect(JSON.parse(req.rawBody)).toEqual({
      model: UPSTREAM_MODEL,
      messages: [
        { role: "system", content: "Be terse." },
        { role: "user", content: "Hello there" },
      ],
      stream: false,
    });
  });

  it("Generate: text deltas as they arrive, then the final event with usage from the usage chunk", async () => {
    const { events, status: st, error } = await client.serverStream<Obj>("Generate", chatRequest([userTurn("Say hello please")])).done;
    expect(error).toBeUndefined();
    expect(st.code).toBe(status.OK);
    expect(events).toEqual([textDelta("Say "), textDelta("hello "), textDelta("please"), final("chatcmpl-fake-0", "STOP", usage(3, 3))]);
    const req = fake.requests[0]!;
    expect(req.headers["authorization"]).toBe(`Bearer ${API_KEY}`);
    expect(req.headers["accept"]).toBe("text/event-stream");
    expect(JSON.parse(req.rawBody)).toEqual({
      model: UPSTREAM_MODEL,
      messages: [{ role: "user", content: "Say hello please" }],
      stream: true,
      stream_options: { include_usage: true },
    });
  });

  it.each<[OpenAIScenario, ReturnType<typeof usage>]>([
    ["usage", usage(12, 6)],
    // A server that sends no usage chunk: usage stays zero.
    ["text", usage(0, 0)],
    // CRLF line endings, comments, JSON split over two data lines, "\r" and "\n" in different writes.
    ["crlf", usage(0, 0)],
  ])("Generate: the %s scenario streams the fixture text", async (scenario, u) => {
    fake.setScenario(scenario);
    const { events, status: st } = await client.serverStream<Obj>("Generate", chatRequest([userTurn("Say hello")])).done;
    expect(st.code).toBe(status.OK);
    const id = scenario === "usage" ? "chatcmpl-fake-usage" : "chatcmpl-fake-text";
    expect(events).toEqual([...fixtureDeltas, final(id, "STOP", u)]);
    expect(fixtureDeltas.map((d) => d.text_delta).join("")).toBe(OPENAI_FIXTURE_TEXT);
  });

  it("cached and reasoning tokens: unary Chat and the include_usage chunk of Generate fill them, and the token metric counts them by kind", async () => {
    // A reasoning model whose prompt hit OpenAI's prompt cache: 2006 prompt tokens, 1920 of them
    // cached; 198 completion tokens, 192 of them reasoning (test/fixtures/openai/usage-details.*).
    fake.setScenario("usage-details");
    const detailed = usage(2006, 198, { cached: 1920, reasoning: 192 });
    const res = await client.unary<Obj>("Chat", chatRequest([userTurn("Say hello")], {}, "o3"));
    expect(res).toEqual({
      id: "chatcmpl-fake-usage-details",
      message: assistant([{ part: "text", text: OPENAI_FIXTURE_TEXT }]),
      finish_reason: "FINISH_REASON_STOP",
      usage: detailed,
      model: "o3",
      model_version: "1",
      upstream: "reasoning-up",
      cached: false,
      stop_sequence: "",
    });
    const { events, status: st } = await client.serverStream<Obj>("Generate", chatRequest([userTurn("Say hello")], {}, "o3")).done;
    expect(st.code).toBe(status.OK);
    expect(events).toEqual([...fixtureDeltas, final("chatcmpl-fake-usage-details", "STOP", detailed, "o3", "reasoning-up")]);
    expect(JSON.parse(fake.requests[1]!.rawBody)).toMatchObject({ stream: true, stream_options: { include_usage: true } });

    // The metric's kinds are disjoint: prompt = 2006 - 1920 uncached, completion = 198 - 192 not
    // reasoning. Only this test's calls have cached or reasoning tokens.
    const tokens = async (direction: string, kind: string) => {
      const m = parseMetrics(await (await fetch(`http://${app.adminAddress}/metrics`)).text());
      return m.get(`infergate_tokens_total{model="o3",direction="${direction}",kind="${kind}"}`);
    };
    await expect.poll(() => tokens("prompt", "cached"), { timeout: 10_000 }).toBe(2 * 1920);
    expect(await tokens("completion", "reasoning")).toBe(2 * 192);
    expect(await tokens("prompt", "cache_creation")).toBeUndefined();
  });

  const weatherTools = [
    {
      name: "get_weather",
      description: "Current weather of a city",
      parameters: struct({ type: "object", properties: { city: { type: "string" }, unit: { type: "string" } }, required: ["city"] }),
      strict: true,
    },
    { name: "get_time" },
  ];
  const wireTools = [
    {
      type: "function",
      function: {
        name: "get_weather",
        description: "Current weather of a city",
        parameters: { type: "object", properties: { city: { type: "string" }, unit: { type: "string" } }, required: ["city"] },
        strict: true,
      },
    },
    { type: "function", function: { name: "get_time" } },
  ];

  it("Generate: tool-call deltas pass through with their index, id, name and argument fragments", async () => {
    fake.setScenario("tool-calls");
    const { events, status: st } = await client.serverStream<Obj>(
      "Generate",
      chatRequest([userTurn("Weather and time in Paris?")], {
        tools: weatherTools,
        tool_choice: { mode: "TOOL_CHOICE_MODE_REQUIRED" },
        parallel_tool_calls: true,
      }),
    ).done;
    expect(st.code).toBe(status.OK);
    expect(events).toEqual([
      toolDelta(0, "", "call_fake_weather", "get_weather"),
      toolDelta(0, '{"ci'),
      toolDelta(0, 'ty": "Pa'),
      toolDelta(0, 'ris", "unit": "c'),
      toolDelta(0, 'elsius"}'),
      toolDelta(1, "", "call_fake_time", "get_time"),
      toolDelta(1, '{"tz": "Eu'),
      toolDelta(1, 'rope/Paris"}'),
      final("chatcmpl-fake-tools", "TOOL_CALLS", usage(0, 0)),
    ]);
    const joined = (index: number) =>
      events
        .filter((e) => e["event"] === "tool_call_delta" && (e["tool_call_delta"] as Obj)["index"] === index)
        .map((e) => (e["tool_call_delta"] as Obj)["arguments"])
        .join("");
    expect(joined(0)).toBe('{"city": "Paris", "unit": "celsius"}');
    expect(joined(1)).toBe('{"tz": "Europe/Paris"}');
    expect(JSON.parse(fake.requests[0]!.rawBody)).toEqual({
      model: UPSTREAM_MODEL,
      messages: [{ role: "user", content: "Weather and time in Paris?" }],
      tools: wireTools,
      tool_choice: "required",
      parallel_tool_calls: true,
      stream: true,
      stream_options: { include_usage: true },
    });
  });

  it("Chat returns the tool calls as joined by the upstream; the next turn sends them back with the results", async () => {
    fake.setScenario("tool-calls");
    const res = await client.unary<Obj>(
      "Chat",
      chatRequest([userTurn("Weather and time in Paris?")], { tools: weatherTools, tool_choice: { function_name: "get_weather" } }),
    );
    const calls = [
      { id: "call_fake_weather", name: "get_weather", arguments: '{"city": "Paris", "unit": "celsius"}' },
      { id: "call_fake_time", name: "get_time", arguments: '{"tz": "Europe/Paris"}' },
    ];
    expect(res).toEqual({
      id: "chatcmpl-fake-tools",
      message: assistant([], calls),
      finish_reason: "FINISH_REASON_TOOL_CALLS",
      usage: usage(12, 6),
      model: "gpt",
      model_version: "1",
      upstream: "gpt-up",
      cached: false,
      stop_sequence: "",
    });
    expect(JSON.parse(fake.requests[0]!.rawBody)).toEqual({
      model: UPSTREAM_MODEL,
      messages: [{ role: "user", content: "Weather and time in Paris?" }],
      tools: wireTools,
      tool_choice: { type: "function", function: { name: "get_weather" } },
      stream: false,
    });

    fake.setScenario("echo");
    const next = await client.unary<Obj>(
      "Chat",
      chatRequest(
        [
          userTurn("Weather and time in Paris?"),
          { role: "ROLE_ASSISTANT", content: [], tool_calls: calls },
          { role: "ROLE_TOOL", tool_call_id: "call_fake_weather", content: [text("18°C, sunny")] },
          { role: "ROLE_TOOL", tool_call_id: "call_fake_time", content: [text("14:05")] },
          userTurn("Thanks!"),
        ],
        { tools: weatherTools },
      ),
    );
    expect((next["message"] as Obj)["content"]).toEqual([{ part: "text", text: "Thanks!", cache_breakpoint: null }]);
    expect(JSON.parse(fake.requests[1]!.rawBody)).toEqual({
      model: UPSTREAM_MODEL,
      messages: [
        { role: "user", content: "Weather and time in Paris?" },
        {
          role: "assistant",
          content: null,
          tool_calls: [
            { id: "call_fake_weather", type: "function", function: { name: "get_weather", arguments: '{"city": "Paris", "unit": "celsius"}' } },
            { id: "call_fake_time", type: "function", function: { name: "get_time", arguments: '{"tz": "Europe/Paris"}' } },
          ],
        },
        { role: "tool", tool_call_id: "call_fake_weather", content: "18°C, sunny" },
        { role: "tool", tool_call_id: "call_fake_time", content: "14:05" },
        { role: "user", content: "Thanks!" },
      ],
      tools: wireTools,
      stream: false,
    });
  });

  it("sends images as parts: bytes as a data: URI, URLs as given, with their detail", async () => {
    const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    const res = await client.unary<Obj>(
      "Chat",
      chatRequest([
        turn(
          "USER",
          text("Compare these"),
          { image_data: { data: png, mime_type: "image/png", detail: "IMAGE_DETAIL_HIGH" } },
          { image_url: { url: "https://example.com/cat.webp" } },
          { image_url: { url: "data:image/jpeg;base64,/9j/4AAQSkZJRg==", detail: "IMAGE_DETAIL_LOW" } },
        ),
      ]),
    );
    expect((res["message"] as Obj)["content"]).toEqual([{ part: "text", text: "Compare these", cache_breakpoint: null }]);
    expect(JSON.parse(fake.requests[0]!.rawBody)).toEqual({
      model: UPSTREAM_MODEL,
      messages: [
        {
          role: "user",
          content: [
            { type: "text", text: "Compare these" },
            { type: "image_url", image_url: { url: `data:image/png;base64,${png.toString("base64")}`, detail: "high" } },
            { type: "image_url", image_url: { url: "https://example.com/cat.webp" } },
            { type: "image_url", image_url: { url: "data:image/jpeg;base64,/9j/4AAQSkZJRg==", detail: "low" } },
          ],
        },
      ],
      stream: false,
    });
    expect(fake.requests[0]!.rawBody).toContain('"url":"data:image/png;base64,iVBORw0KGgo="');
  });

  it("sends every sampling field exactly as set, and gateway-only fields not at all", async () => {
    const { status: st } = await client.serverStream<Obj>(
      "Generate",
      chatRequest([turn("DEVELOPER", text("Reply in JSON.")), { role: "ROLE_USER", name: "alice", content: [text("Hi")] }], {
        temperature: 0,
        top_p: 0.5,
        max_tokens: 64,
        seed: "-9007199254740991",
        presence_penalty: -0.25,
        frequency_penalty: 1.5,
        stop: ["END", "\n\n"],
        response_format: {
          type: "RESPONSE_FORMAT_TYPE_JSON_SCHEMA",
          json_schema: { name: "reply", description: "The reply", schema: struct({ type: "object", properties: { text: { type: "string" } } }), strict: true },
        },
        cache_policy: "CACHE_POLICY_BYPASS",
        session_id: "session-1",
        metadata: { trace: "abc" },
      }),
    ).done;
    expect(st.code).toBe(status.OK);
    const body = JSON.parse(fake.requests[0]!.rawBody) as Obj;
    expect(body).toEqual({
      model: UPSTREAM_MODEL,
      messages: [
        { role: "system", content: "Reply in JSON." },
        { role: "user", content: "Hi", name: "alice" },
      ],
      temperature: 0,
      top_p: 0.5,
      max_tokens: 64,
      seed: -9007199254740991,
      presence_penalty: -0.25,
      frequency_penalty: 1.5,
      stop: ["END", "\n\n"],
      response_format: {
        type: "json_schema",
        json_schema: { name: "reply", description: "The reply", schema: { type: "object", properties: { text: { type: "string" } } }, strict: true },
      },
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(Object.keys(body).sort()).toEqual(
      ["frequency_penalty", "max_tokens", "messages", "model", "presence_penalty", "response_format", "seed", "stop", "stream", "stream_options", "temperature", "top_p"],
    );
  });

  it("leaves every unset field out of the body", async () => {
    await client.unary<Obj>("Chat", chatRequest([userTurn("Hi")], { tool_choice: { mode: "TOOL_CHOICE_MODE_AUTO" }, parallel_tool_calls: false }));
    const raw = fake.requests[0]!.rawBody;
    expect(JSON.parse(raw)).toEqual({ model: UPSTREAM_MODEL, messages: [{ role: "user", content: "Hi" }], stream: false });
    for (const key of ["temperature", "top_p", "max_tokens", "max_completion_tokens", "seed", "presence_penalty", "frequency_penalty", "stop", "tools", "tool_choice", "parallel_tool_calls", "response_format", "stream_options", "metadata", "user"]) {
      expect(raw).not.toContain(`"${key}":`);
    }
  });

  it("options: ROLE_DEVELOPER as developer, max_tokens as max_completion_tokens", async () => {
    await client.unary<Obj>("Chat", chatRequest([turn("DEVELOPER", text("Be brief.")), userTurn("Hi")], { max_tokens: 100 }, "o3"));
    const req = fake.requests[0]!;
    expect(req.url).toBe("/v1/chat/completions");
    expect(JSON.parse(req.rawBody)).toEqual({
      model: "o3-mini",
      messages: [
        { role: "developer", content: "Be brief." },
        { role: "user", content: "Hi" },
      ],
      max_completion_tokens: 100,
      stream: false,
    });
  });

  describe("Azure OpenAI", () => {
    it("Chat: deployment path from upstreamModel, api-version query, api-key header, no model in the body", async () => {
      const res = await client.unary<Obj>("Chat", chatRequest([userTurn("Hello Azure")], {}, "azure-gpt"));
      expect((res["message"] as Obj)["content"]).toEqual([{ part: "text", text: "Hello Azure", cache_breakpoint: null }]);
      expect(res["upstream"]).toBe("azure-up");
      const req = fake.requests[0]!;
      expect(req.url).toBe("/openai/deployments/gpt4o-deployment/chat/completions?api-version=2024-10-21");
      expect(req.deployment).toBe("gpt4o-deployment");
      expect(req.query).toEqual({ "api-version": "2024-10-21" });
      expect(req.headers["api-key"]).toBe(AZURE_KEY);
      expect(req.headers["authorization"]).toBeUndefined();
      expect(JSON.parse(req.rawBody)).toEqual({ messages: [{ role: "user", content: "Hello Azure" }], stream: false });
    });

    it("Generate: the configured deployment wins over upstreamModel and is escaped in the path", async () => {
      const { events, status: st } = await client.serverStream<Obj>("Generate", chatRequest([userTurn("Hi there")], {}, "azure-fixed")).done;
      expect(st.code).toBe(status.OK);
      expect(events).toEqual([textDelta("Hi "), textDelta("there"), final("chatcmpl-fake-0", "STOP", usage(2, 2), "azure-fixed", "azure-fixed-up")]);
      const req = fake.requests[0]!;
      expect(req.url).toBe("/openai/deployments/prod%20deployment/chat/completions?api-version=2025-01-01-preview");
      expect(req.deployment).toBe("prod deployment");
      expect(req.headers["api-key"]).toBe(AZURE_KEY);
      expect(JSON.parse(req.rawBody)).toEqual({
        messages: [{ role: "user", content: "Hi there" }],
        stream: true,
        stream_options: { include_usage: true },
      });
    });
  });

  describe("upstream errors", () => {
    const cases: [OpenAIScenario, number, string, string][] = [
      ["rate-limited", status.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED", 'upstream "gpt-up" is rate limiting the gateway'],
      ["server-error", status.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", 'upstream "gpt-up" is unavailable (HTTP 500)'],
      ["unauthorized", status.INTERNAL, "UPSTREAM_AUTH", `upstream "gpt-up" refused the gateway's credentials`],
      [
        "bad-request",
        status.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        `upstream "gpt-up" rejected the request: This model's maximum context length is 128000 tokens. However, your messages resulted in 130123 tokens. Please reduce the length of the messages.`,
      ],
    ];

    it.each(cases)("Chat: %s → %s %s", async (scenario, code, reason, message) => {
      fake.setScenario(scenario);
      const err = await expectServiceError(client.unary("Chat", chatRequest([userTurn("hi")])));
      expect(err.code).toBe(code);
      expect(err.details).toBe(message);
      const details = statusDetails(err);
      expect(errorInfoOf(details)?.["reason"]).toBe(reason);
      const retry = details.details.find((d) => d.type_url === "type.googleapis.com/google.rpc.RetryInfo");
      expect(retry?.message).toEqual(scenario === "rate-limited" ? { retry_delay: { seconds: "2", nanos: 0 } } : undefined);
      // The key is nowhere in what the client sees: message, details, trailers.
      const seen = JSON.stringify([err.details, details, err.metadata.getMap()]);
      expect(seen).not.toContain(API_KEY);
      expect(seen).not.toContain(API_KEY.slice(3, 20));
      expect(fake.requests).toHaveLength(1);
      expect(fake.requests[0]!.headers["authorization"]).toBe(`Bearer ${API_KEY}`);
    });

    it.each(cases)("Generate: %s → %s %s, no events", async (scenario, code, reason, message) => {
      fake.setScenario(scenario);
      const { events, error } = await client.serverStream<Obj>("Generate", chatRequest([userTurn("hi")])).done;
      expect(events).toEqual([]);
      expect(error?.code).toBe(code);
      expect(error?.details).toBe(message);
      const details = statusDetails(error!);
      expect(errorInfoOf(details)).toEqual({ reason, domain: "infergate", metadata: { upstream: "gpt-up", http_status: fake.requests[0]!.status!.toString() } });
      expect(JSON.stringify([error!.details, details, error!.metadata.getMap()])).not.toContain(API_KEY);
    });

    it("429 with an HTTP-date Retry-After gives RetryInfo of the time left", async () => {
      fake.setScenario("rate-limited-date");
      const err = await expectServiceError(client.unary("Chat", chatRequest([userTurn("hi")])));
      expect(err.code).toBe(status.RESOURCE_EXHAUSTED);
      const retry = statusDetails(err).details.find((d) => d.type_url === "type.googleapis.com/google.rpc.RetryInfo");
      // The fake sends now + 3 s as an HTTP-date, whole seconds: between 2 and 3 s remain.
      const delay = retry?.message?.["retry_delay"] as { seconds: string; nanos: number };
      const ms = Number(delay.seconds) * 1000 + delay.nanos / 1e6;
      expect(ms).toBeGreaterThan(1900);
      expect(ms).toBeLessThanOrEqual(3000);
    });

    it("Chat: an HTML answer is UNAVAILABLE UPSTREAM_BAD_RESPONSE", async () => {
      fake.setScenario("garbage");
      const err = await expectServiceError(client.unary("Chat", chatRequest([userTurn("hi")])));
      expect(err.code).toBe(status.UNAVAILABLE);
      expect(err.details).toBe('upstream "gpt-up" sent an invalid response: content-type "text/html; charset=utf-8" where JSON was expected');
      expect(errorInfoOf(statusDetails(err))).toEqual({ reason: "UPSTREAM_BAD_RESPONSE", domain: "infergate", metadata: { upstream: "gpt-up" } });
    });

    it("Generate: an HTML answer is UNAVAILABLE UPSTREAM_BAD_RESPONSE", async () => {
      fake.setScenario("garbage");
      const { events, error } = await client.serverStream<Obj>("Generate", chatRequest([userTurn("hi")])).done;
      expect(events).toEqual([]);
      expect(error?.code).toBe(status.UNAVAILABLE);
      expect(error?.details).toBe('upstream "gpt-up" sent an invalid response: content-type "text/html; charset=utf-8" where an event stream was expected');
      expect(errorInfoOf(statusDetails(error!))).toEqual({ reason: "UPSTREAM_BAD_RESPONSE", domain: "infergate", metadata: { upstream: "gpt-up" } });
    });

    it("Chat: malformed JSON is UNAVAILABLE UPSTREAM_BAD_RESPONSE", async () => {
      fake.setScenario("malformed-json");
      const err = await expectServiceError(client.unary("Chat", chatRequest([userTurn("hi")])));
      expect(err.code).toBe(status.UNAVAILABLE);
      expect(err.details).toBe('upstream "gpt-up" sent an invalid response: malformed JSON');
      expect(errorInfoOf(statusDetails(err))?.["reason"]).toBe("UPSTREAM_BAD_RESPONSE");
    });

    it("Chat: an answer cut mid-body is UNAVAILABLE", async () => {
      fake.setScenario("truncated");
      const err = await expectServiceError(client.unary("Chat", chatRequest([userTurn("hi")])));
      expect(err.code).toBe(status.UNAVAILABLE);
      expect(errorInfoOf(statusDetails(err))?.["reason"]).toBe("UPSTREAM_UNAVAILABLE");
    });
  });

  describe("failures after HTTP 200", () => {
    it("a stream that ends without data: [DONE] is UNAVAILABLE STREAM_TRUNCATED after the deltas already sent, never OK", async () => {
      fake.setScenario("truncated");
      const { events, status: st, error } = await client.serverStream<Obj>("Generate", chatRequest([userTurn("hi")])).done;
      expect(events).toEqual([textDelta("Hello"), textDelta(" from"), textDelta(" the")]);
      expect(st.code).toBe(status.UNAVAILABLE);
      expect(error?.details).toBe('upstream "gpt-up" ended the stream before data: [DONE]');
      expect(errorInfoOf(statusDetails(error!))).toEqual({ reason: "STREAM_TRUNCATED", domain: "infergate", metadata: { upstream: "gpt-up" } });
    });

    it("an error object mid-stream ends the stream UNAVAILABLE after the deltas already sent", async () => {
      fake.setScenario("mid-stream-error");
      const { events, status: st, error } = await client.serverStream<Obj>("Generate", chatRequest([userTurn("hi")])).done;
      expect(events).toEqual([textDelta("Hello"), textDelta(" from")]);
      expect(st.code).toBe(status.UNAVAILABLE);
      expect(error?.details).toBe('upstream "gpt-up" failed during the stream (server_error)');
      expect(errorInfoOf(statusDetails(error!))).toEqual({
        reason: "UPSTREAM_UNAVAILABLE",
        domain: "infergate",
        metadata: { upstream: "gpt-up", upstream_error: "server_error" },
      });
    });

    it("malformed JSON in an event is UNAVAILABLE UPSTREAM_BAD_RESPONSE, not skipped", async () => {
      fake.setScenario("malformed-event");
      const { events, status: st, error } = await client.serverStream<Obj>("Generate", chatRequest([userTurn("hi")])).done;
      expect(events).toEqual([textDelta("Hello")]);
      expect(st.code).toBe(status.UNAVAILABLE);
      expect(error?.details).toBe('upstream "gpt-up" sent an invalid response: malformed JSON in an event');
      expect(errorInfoOf(statusDetails(error!))).toEqual({ reason: "UPSTREAM_BAD_RESPONSE", domain: "infergate", metadata: { upstream: "gpt-up" } });
    });
  });

  // The pauses between tokens are long, so only the caller's signal reaching the HTTP request can
  // end the upstream call in time: the gateway's own loop would notice only at the next token.
  it("cancelling Generate mid-stream aborts the upstream request before the next token", async () => {
    fake.setScenario("slow", { delayMs: 1000, tokens: 20 });
    // A timer of two pauses, set before the call, fires before the fake's "t2 " timer (due two
    // pauses after the request, or later): whether the abort had come by then is event order.
    let abortedBeforeT2: boolean | undefined;
    const t2 = setTimeout(() => (abortedBeforeT2 = fake.requests[0]?.abortedAt !== undefined), 2 * 1000);
    const stream = client.serverStream<Obj>("Generate", chatRequest([userTurn("hi")]));
    await stream.waitFor((e) => e["text_delta"] === "t1 ");
    const cancelledAt = Date.now();
    stream.call.cancel();
    const { status: st, events } = await stream.done;
    expect(st.code).toBe(status.CANCELLED);
    expect(events).toEqual([textDelta("t1 ")]);
    const rec = await fake.settled(0);
    clearTimeout(t2);
    expect(rec.abortedAt).toBeDefined();
    expect(rec.finishedAt).toBeUndefined();
    expect(rec.abortedAt!).toBeGreaterThanOrEqual(cancelledAt);
    expect(abortedBeforeT2 ?? true).toBe(true);
  });

  it("cancelling Chat while the upstream has not answered aborts the upstream request", async () => {
    fake.setScenario("slow", { delayMs: 1000, tokens: 20 });
    const chat = chatMethod();
    let cancelledAt = 0;
    const result = new Promise<ServiceError | null>((resolve) => {
      const call = client.client.makeUnaryRequest(
        chat.path,
        chat.requestSerialize,
        chat.responseDeserialize,
        chatRequest([userTurn("hi")]),
        new Metadata(),
        { deadline: Date.now() + 10_000 },
        (err) => resolve(err),
      );
      void fake.waitForRequest(0).then(() => {
        cancelledAt = Date.now();
        call.cancel();
      });
    });
    const err = await result;
    expect(err?.code).toBe(status.CANCELLED);
    // The fake answers after 20 s; settled gives up after 5 s. The fake never wrote a response
    // head: the abort came while it waited to answer.
    const rec = await fake.settled(0);
    expect(rec.abortedAt).toBeDefined();
    expect(rec.status).toBeUndefined();
    expect(rec.abortedAt!).toBeGreaterThanOrEqual(cancelledAt);
  });

  it("Chat: the caller's deadline aborts the upstream request while it has not answered", async () => {
    fake.setScenario("slow", { delayMs: 1000, tokens: 20 });
    const err = await expectServiceError(client.unary("Chat", chatRequest([userTurn("hi")]), { timeoutMs: 300 }));
    expect(err.code).toBe(status.DEADLINE_EXCEEDED);
    // The fake answers after 20 s; settled gives up after 5 s. It never wrote a response head.
    const rec = await fake.settled(0);
    expect(rec.abortedAt).toBeDefined();
    expect(rec.status).toBeUndefined();
  });

  it("the caller's deadline ends the upstream request: DEADLINE_EXCEEDED, and the fake sees the abort", async () => {
    // A role chunk at once, then "t1 " at 700 ms and "t2 " at 1,400 ms; the deadline at 900 ms.
    fake.setScenario("slow", { delayMs: 700, tokens: 100 });
    // The abort comes with the deadline, not with the next token: a timer of two pauses, set
    // before the call, fires before the fake's "t2 " timer, and the abort had come by then.
    let abortedBeforeT2: boolean | undefined;
    const t2 = setTimeout(() => (abortedBeforeT2 = fake.requests[0]?.abortedAt !== undefined), 2 * 700);
    const { events, status: st } = await client.serverStream<Obj>("Generate", chatRequest([userTurn("hi")]), { timeoutMs: 900 }).done;
    expect(st.code).toBe(status.DEADLINE_EXCEEDED);
    expect(events).toEqual([textDelta("t1 ")]);
    const rec = await fake.settled(0);
    clearTimeout(t2);
    expect(rec.abortedAt).toBeDefined();
    expect(rec.finishedAt).toBeUndefined();
    expect(abortedBeforeT2 ?? true).toBe(true);
  });

  describe("fields the API cannot carry are refused before any upstream call", () => {
    it.each<[string, Obj, string]>([
      ["a seed beyond 2^53-1", { seed: "9007199254740992" }, "seed"],
      ["an image in an assistant message", { messages: [userTurn("hi"), turn("ASSISTANT", { image_url: { url: "https://example.com/a.png" } })] }, "messages[1].content[0]"],
      ["an image in a system message", { messages: [turn("SYSTEM", text("look"), { image_data: { data: Buffer.from([1]), mime_type: "image/png" } }), userTurn("hi")] }, "messages[0].content[1]"],
      ["an author name on a tool message", { messages: [userTurn("hi"), { role: "ROLE_TOOL", tool_call_id: "c1", name: "weather", content: [text("18°C")] }] }, "messages[1].name"],
    ])("%s", async (_name, extra, field) => {
      const request = chatRequest([userTurn("hi")], extra);
      const err = await expectServiceError(client.unary("Chat", request));
      expect(err.code).toBe(status.INVALID_ARGUMENT);
      expect(err.details.startsWith(`${field}: `)).toBe(true);
      expect(errorInfoOf(statusDetails(err))).toEqual({ reason: "INVALID_ARGUMENT", domain: "infergate", metadata: { field } });
      const { events, error } = await client.serverStream<Obj>("Generate", request).done;
      expect(events).toEqual([]);
      expect(error?.code).toBe(status.INVALID_ARGUMENT);
      expect(errorInfoOf(statusDetails(error!))?.["metadata"]).toEqual({ field });
      expect(fake.requests).toHaveLength(0);
    });
  });
});
