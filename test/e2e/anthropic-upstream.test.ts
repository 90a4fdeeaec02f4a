/**
 * The `anthropic` kind end to end: a grpc-js client (contract loaded from proto/ at run time) →
 * infergate on loopback ports → the Anthropic fake (test/fakes/anthropic-fake.ts) on its own port.
 * Asserts what the client gets and the exact request the fake received.
 */
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { App } from "../../src/server/app.js";
import { ANTHROPIC_FIXTURE_TEXT, type AnthropicFake, type AnthropicScenario, createAnthropicFake } from "../fakes/anthropic-fake.js";
import { parseMetrics } from "../helpers/metrics.js";
import {
  errorInfoOf,
  expectServiceError,
  inferenceClient,
  type ProtoClient,
  protoUsage,
  statusDetails,
} from "../helpers/proto-clients.js";
import { startInProcess } from "../helpers/servers.js";

const API_KEY = "test-anthropic-key-7f3a9c2e";
const UPSTREAM_MODEL = "claude-sonnet-4-20250514";

type Obj = Record<string, unknown>;

const text = (t: string) => ({ text: t });
const turn = (role: string, ...content: Obj[]) => ({ role: `ROLE_${role}`, content });
const userTurn = (t: string) => turn("USER", text(t));
const chatRequest = (messages: Obj[], extra: Obj = {}) => ({ model: "claude", messages, ...extra });

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
const final = (id: string, finish: string, u: ReturnType<typeof usage>) => ({
  event: "final",
  final: { id, finish_reason: `FINISH_REASON_${finish}`, usage: u, model: "claude", model_version: "1", upstream: "claude-up", cached: false, stop_sequence: "" },
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

describe("anthropic upstream, end to end", () => {
  let fake: AnthropicFake;
  let app: App;
  let client: ProtoClient;

  beforeAll(async () => {
    fake = await createAnthropicFake();
    // One attempt per call and no breaker: these tests watch the adapter, whose every failure
    // would otherwise be retried and, repeated, open the endpoint's breaker (docs/resilience.md).
    app = await startInProcess(`
upstreams:
  - name: claude-up
    kind: anthropic
    resilience: { retry: { maxAttempts: 1 }, breaker: { enabled: false } }
    endpoints: ["${fake.baseUrl}"]
    apiKey: "${API_KEY}"
    headers: { x-team: search }
    timeoutMs: 10000
models:
  - name: claude
    upstream: claude-up
    upstreamModel: ${UPSTREAM_MODEL}
    options: { maxTokens: 321 }
  # The prompt-caching test's own model, so that its token metrics count its calls only.
  - name: claude-cache
    upstream: claude-up
    upstreamModel: ${UPSTREAM_MODEL}
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
    const res = await client.unary<Obj>("ListModels", {});
    expect(res).toEqual({
      models: ["claude", "claude-cache"].map((name) => ({
        name,
        version: "1",
        upstream_kind: "anthropic",
        upstream: "claude-up",
        capabilities: ["CAPABILITY_CHAT", "CAPABILITY_GENERATE"],
        state: "MODEL_STATE_UNSPECIFIED",
        endpoints: [{ endpoint: fake.baseUrl, state: "BREAKER_STATE_CLOSED", ejected: false, weight: 1, in_flight: 0 }],
      })),
    });
  });

  it("Chat over gRPC with anthropic-beta metadata: the header reaches the upstream, twice the same request (the listener shares it, frozen) both answered", async () => {
    const request = chatRequest([userTurn("beta please")], { temperature: 0 });
    for (let i = 0; i < 2; i++) {
      await client.unary<Obj>("Chat", request, { headers: { "anthropic-beta": "some-beta-2025-01-01" } });
    }
    // Deterministic (temperature 0), yet both went upstream: a call with the header bypasses the cache.
    expect(fake.requests.map((r) => r.headers["anthropic-beta"])).toEqual(["some-beta-2025-01-01", "some-beta-2025-01-01"]);
  });

  it("Chat: system and developer messages go to system, max_tokens comes from the model's options, headers carry key and version", async () => {
    const res = await client.unary<Obj>(
      "Chat",
      chatRequest([turn("SYSTEM", text("You are terse.")), turn("DEVELOPER", text("Answer in English.")), userTurn("Hello there")]),
    );
    expect(res).toEqual({
      id: "msg_fake_0",
      message: assistant([{ part: "text", text: "Hello there" }]),
      finish_reason: "FINISH_REASON_STOP",
      usage: usage(8, 2),
      model: "claude",
      model_version: "1",
      upstream: "claude-up",
      cached: false,
      stop_sequence: "",
    });
    expect(fake.requests).toHaveLength(1);
    const req = fake.requests[0]!;
    expect(req.method).toBe("POST");
    expect(req.url).toBe("/v1/messages");
    expect(req.headers["x-api-key"]).toBe(API_KEY);
    expect(req.headers["anthropic-version"]).toBe("2023-06-01");
    expect(req.headers["content-type"]).toBe("application/json");
    expect(req.headers["authorization"]).toBeUndefined();
    expect(req.headers["x-team"]).toBe("search");
    expect(JSON.parse(req.rawBody)).toEqual({
      model: UPSTREAM_MODEL,
      max_tokens: 321,
      system: [
        { type: "text", text: "You are terse." },
        { type: "text", text: "Answer in English." },
      ],
      messages: [{ role: "user", content: [{ type: "text", text: "Hello there" }] }],
      stream: false,
    });
  });

  it("Chat: the request's max_tokens, temperature, top_p and stop reach Anthropic as such", async () => {
    await client.unary<Obj>(
      "Chat",
      chatRequest([userTurn("Hi")], { max_tokens: 77, temperature: 0.5, top_p: 0.9, stop: ["END", "\n\n"], presence_penalty: 0 }),
    );
    expect(fake.requests[0]!.body).toEqual({
      model: UPSTREAM_MODEL,
      max_tokens: 77,
      messages: [{ role: "user", content: [{ type: "text", text: "Hi" }] }],
      temperature: 0.5,
      top_p: 0.9,
      stop_sequences: ["END", "\n\n"],
      stream: false,
    });
  });

  it.each([
    ["text", "msg_fake_text"],
    ["pings", "msg_fake_pings"],
    ["crlf", "msg_fake_text"],
  ] as const)("Generate streams the text of the %s scenario, then the final event", async (scenario, id) => {
    fake.setScenario(scenario);
    const { events, status: st, error } = await client.serverStream<Obj>("Generate", chatRequest([userTurn("Say hello")])).done;
    expect(error).toBeUndefined();
    expect(st.code).toBe(status.OK);
    expect(events).toEqual([
      textDelta("Hello"),
      textDelta(" from"),
      textDelta(" the"),
      textDelta(" fake"),
      textDelta(" upstream."),
      final(id, "STOP", usage(12, 6)),
    ]);
    const req = fake.requests[0]!;
    expect(req.headers["x-api-key"]).toBe(API_KEY);
    expect(req.headers["anthropic-version"]).toBe("2023-06-01");
    expect(req.headers["accept"]).toBe("text/event-stream");
    expect(req.body).toEqual({
      model: UPSTREAM_MODEL,
      max_tokens: 321,
      messages: [{ role: "user", content: [{ type: "text", text: "Say hello" }] }],
      stream: true,
    });
  });

  it("Generate counts cached input tokens in the prompt and takes cumulative usage from message_delta", async () => {
    fake.setScenario("usage");
    const { events, status: st } = await client.serverStream<Obj>("Generate", chatRequest([userTurn("Say hello")])).done;
    expect(st.code).toBe(status.OK);
    // 12 + 100 written to the cache + 200 read from it.
    expect(events.at(-1)).toEqual(final("msg_fake_usage", "STOP", usage(312, 6, { cached: 200, creation: 100 })));
    expect(events).toHaveLength(6);
  });

  it("prompt caching: unary Chat and streamed Generate carry the cache reads and writes, and the token metric counts them by kind", async () => {
    // 12 uncached input tokens, 1500 written to the cache, 2048 read from it
    // (test/fixtures/anthropic/cache-usage.*); the stream's message_delta has output_tokens only.
    fake.setScenario("cache-usage");
    const cachedUsage = usage(12 + 1500 + 2048, 6, { cached: 2048, creation: 1500 });
    const stamped = { model: "claude-cache", model_version: "1", upstream: "claude-up", cached: false, stop_sequence: "" };
    const res = await client.unary<Obj>("Chat", { ...chatRequest([userTurn("Say hello")]), model: "claude-cache" });
    expect(res).toEqual({
      id: "msg_fake_cache_usage",
      message: assistant([{ part: "text", text: ANTHROPIC_FIXTURE_TEXT }]),
      finish_reason: "FINISH_REASON_STOP",
      usage: cachedUsage,
      ...stamped,
    });
    const { events, status: st } = await client.serverStream<Obj>("Generate", { ...chatRequest([userTurn("Say hello")]), model: "claude-cache" }).done;
    expect(st.code).toBe(status.OK);
    expect(events).toHaveLength(6);
    expect(events.at(-1)).toEqual({ event: "final", final: { id: "msg_fake_cache_usage", finish_reason: "FINISH_REASON_STOP", usage: cachedUsage, ...stamped } });

    // Disjoint kinds: prompt = 12 (neither read nor written), cached = 2048, cache_creation = 1500.
    const tokens = async (direction: string, kind: string) => {
      const m = parseMetrics(await (await fetch(`http://${app.adminAddress}/metrics`)).text());
      return m.get(`infergate_tokens_total{model="claude-cache",direction="${direction}",kind="${kind}"}`);
    };
    await expect.poll(() => tokens("completion", "completion"), { timeout: 10_000 }).toBe(2 * 6);
    expect([await tokens("prompt", "prompt"), await tokens("prompt", "cached"), await tokens("prompt", "cache_creation")]).toEqual([2 * 12, 2 * 2048, 2 * 1500]);
    expect(await tokens("completion", "reasoning")).toBeUndefined();
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
      name: "get_weather",
      description: "Current weather of a city",
      input_schema: { type: "object", properties: { city: { type: "string" }, unit: { type: "string" } }, required: ["city"] },
      strict: true,
    },
    { name: "get_time", input_schema: { type: "object", properties: {} } },
  ];

  it("Generate streams tool calls by their position among tool calls; their joined arguments are the JSON input", async () => {
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
      textDelta("Let me"),
      textDelta(" check."),
      toolDelta(0, "", "toolu_fake_weather", "get_weather"),
      toolDelta(0, '{"ci'),
      toolDelta(0, 'ty": "Pa'),
      toolDelta(0, 'ris", "unit": "c'),
      toolDelta(0, 'elsius"}'),
      toolDelta(1, "", "toolu_fake_time", "get_time"),
      toolDelta(1, '{"tz": "Eu'),
      toolDelta(1, 'rope/Paris"}'),
      final("msg_fake_tools", "TOOL_CALLS", usage(40, 30)),
    ]);
    const joined = (index: number) =>
      events
        .filter((e) => e["event"] === "tool_call_delta" && (e["tool_call_delta"] as Obj)["index"] === index)
        .map((e) => (e["tool_call_delta"] as Obj)["arguments"])
        .join("");
    expect(JSON.parse(joined(0))).toEqual({ city: "Paris", unit: "celsius" });
    expect(JSON.parse(joined(1))).toEqual({ tz: "Europe/Paris" });
    expect(fake.requests[0]!.body).toEqual({
      model: UPSTREAM_MODEL,
      max_tokens: 321,
      messages: [{ role: "user", content: [{ type: "text", text: "Weather and time in Paris?" }] }],
      stream: true,
      tools: wireTools,
      tool_choice: { type: "any" },
    });
  });

  it("Chat returns the joined tool calls; the next turn sends them back as tool_use and the results as one user turn", async () => {
    fake.setScenario("tool-calls");
    const res = await client.unary<Obj>(
      "Chat",
      chatRequest([userTurn("Weather and time in Paris?")], { tools: weatherTools, parallel_tool_calls: false }),
    );
    const calls = [
      { id: "toolu_fake_weather", name: "get_weather", arguments: '{"city":"Paris","unit":"celsius"}' },
      { id: "toolu_fake_time", name: "get_time", arguments: '{"tz":"Europe/Paris"}' },
    ];
    expect(res).toEqual({
      id: "msg_fake_tools",
      message: assistant([{ part: "text", text: "Let me check." }], calls),
      finish_reason: "FINISH_REASON_TOOL_CALLS",
      usage: usage(40, 30),
      model: "claude",
      model_version: "1",
      upstream: "claude-up",
      cached: false,
      stop_sequence: "",
    });
    expect(fake.requests[0]!.body).toMatchObject({ tools: wireTools, tool_choice: { type: "auto", disable_parallel_tool_use: true } });

    fake.setScenario("echo");
    await client.unary<Obj>(
      "Chat",
      chatRequest(
        [
          userTurn("Weather and time in Paris?"),
          { role: "ROLE_ASSISTANT", content: [text("Let me check.")], tool_calls: calls },
          { role: "ROLE_TOOL", tool_call_id: "toolu_fake_weather", content: [text("18°C, sunny")] },
          { role: "ROLE_TOOL", tool_call_id: "toolu_fake_time", content: [text("14:05")] },
          userTurn("Thanks!"),
        ],
        { tools: weatherTools },
      ),
    );
    expect(fake.requests[1]!.body).toEqual({
      model: UPSTREAM_MODEL,
      max_tokens: 321,
      messages: [
        { role: "user", content: [{ type: "text", text: "Weather and time in Paris?" }] },
        {
          role: "assistant",
          content: [
            { type: "text", text: "Let me check." },
            { type: "tool_use", id: "toolu_fake_weather", name: "get_weather", input: { city: "Paris", unit: "celsius" } },
            { type: "tool_use", id: "toolu_fake_time", name: "get_time", input: { tz: "Europe/Paris" } },
          ],
        },
        {
          role: "user",
          content: [
            { type: "tool_result", tool_use_id: "toolu_fake_weather", content: [{ type: "text", text: "18°C, sunny" }] },
            { type: "tool_result", tool_use_id: "toolu_fake_time", content: [{ type: "text", text: "14:05" }] },
          ],
        },
        { role: "user", content: [{ type: "text", text: "Thanks!" }] },
      ],
      stream: false,
      tools: wireTools,
    });
  });

  it("sends images: bytes and data: URLs as base64 sources, other URLs as url sources", async () => {
    const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    const res = await client.unary<Obj>(
      "Chat",
      chatRequest([
        turn(
          "USER",
          text("Compare these"),
          { image_data: { data: png, mime_type: "image/png" } },
          { image_url: { url: "data:image/jpeg;base64,/9j/4AAQSkZJRg==" } },
          { image_url: { url: "https://example.com/cat.webp" } },
        ),
      ]),
    );
    expect((res["message"] as Obj)["content"]).toEqual([{ part: "text", text: "Compare these", cache_breakpoint: null }]);
    expect(fake.requests[0]!.body).toEqual({
      model: UPSTREAM_MODEL,
      max_tokens: 321,
      messages: [
        {
          role: "user",
          content: [
            { type: "text", text: "Compare these" },
            { type: "image", source: { type: "base64", media_type: "image/png", data: png.toString("base64") } },
            { type: "image", source: { type: "base64", media_type: "image/jpeg", data: "/9j/4AAQSkZJRg==" } },
            { type: "image", source: { type: "url", url: "https://example.com/cat.webp" } },
          ],
        },
      ],
      stream: false,
    });
  });

  describe("upstream errors", () => {
    const cases: [AnthropicScenario, number, string, string][] = [
      ["rate-limited", status.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED", 'upstream "claude-up" is rate limiting the gateway'],
      ["overloaded", status.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", 'upstream "claude-up" is unavailable (HTTP 529)'],
      ["server-error", status.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", 'upstream "claude-up" is unavailable (HTTP 500)'],
      ["unauthorized", status.INTERNAL, "UPSTREAM_AUTH", `upstream "claude-up" refused the gateway's credentials`],
      [
        "bad-request",
        status.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        'upstream "claude-up" rejected the request: prompt is too long: 212345 tokens > 200000 maximum',
      ],
      [
        "garbage",
        status.UNAVAILABLE,
        "UPSTREAM_BAD_RESPONSE",
        'upstream "claude-up" sent an invalid response: content-type "text/html; charset=utf-8" where JSON was expected',
      ],
    ];

    it.each(cases)("Chat: %s → %s %s", async (scenario, code, reason, message) => {
      fake.setScenario(scenario);
      const err = await expectServiceError(client.unary("Chat", chatRequest([userTurn("hi")])));
      expect(err.code).toBe(code);
      expect(err.details).toBe(message);
      const details = statusDetails(err);
      expect(errorInfoOf(details)?.["reason"]).toBe(reason);
      if (scenario === "rate-limited") {
        const retry = details.details.find((d) => d.type_url === "type.googleapis.com/google.rpc.RetryInfo");
        expect(retry?.message).toEqual({ retry_delay: { seconds: "2", nanos: 0 } });
      }
      // The key is nowhere in what the client sees: message, details, trailers.
      const seen = JSON.stringify([err.details, details, err.metadata.getMap()]);
      expect(seen).not.toContain(API_KEY);
      expect(fake.requests).toHaveLength(1);
    });

    it.each(cases.filter(([s]) => s !== "garbage"))("Generate: %s → %s %s, no events", async (scenario, code, reason, message) => {
      fake.setScenario(scenario);
      const { events, error } = await client.serverStream<Obj>("Generate", chatRequest([userTurn("hi")])).done;
      expect(events).toEqual([]);
      expect(error?.code).toBe(code);
      expect(error?.details).toBe(message);
      expect(errorInfoOf(statusDetails(error!))?.["reason"]).toBe(reason);
      expect(JSON.stringify([error!.details, statusDetails(error!), error!.metadata.getMap()])).not.toContain(API_KEY);
    });

    it("Generate: an HTML answer is UNAVAILABLE UPSTREAM_BAD_RESPONSE", async () => {
      fake.setScenario("garbage");
      const { events, error } = await client.serverStream<Obj>("Generate", chatRequest([userTurn("hi")])).done;
      expect(events).toEqual([]);
      expect(error?.code).toBe(status.UNAVAILABLE);
      expect(error?.details).toBe('upstream "claude-up" sent an invalid response: content-type "text/html; charset=utf-8" where an event stream was expected');
      expect(errorInfoOf(statusDetails(error!))).toEqual({ reason: "UPSTREAM_BAD_RESPONSE", domain: "infergate", metadata: { upstream: "claude-up" } });
    });

    it("Chat: malformed JSON is UNAVAILABLE UPSTREAM_BAD_RESPONSE", async () => {
      fake.setScenario("malformed-json");
      const err = await expectServiceError(client.unary("Chat", chatRequest([userTurn("hi")])));
      expect(err.code).toBe(status.UNAVAILABLE);
      expect(err.details).toBe('upstream "claude-up" sent an invalid response: malformed JSON');
    });

    it("Chat: an answer cut mid-body is UNAVAILABLE", async () => {
      fake.setScenario("truncated");
      const err = await expectServiceError(client.unary("Chat", chatRequest([userTurn("hi")])));
      expect(err.code).toBe(status.UNAVAILABLE);
      expect(errorInfoOf(statusDetails(err))?.["reason"]).toBe("UPSTREAM_UNAVAILABLE");
    });
  });

  describe("failures after HTTP 200", () => {
    it("an error event mid-stream ends the stream UNAVAILABLE after the deltas already sent", async () => {
      fake.setScenario("mid-stream-error");
      const { events, status: st, error } = await client.serverStream<Obj>("Generate", chatRequest([userTurn("hi")])).done;
      expect(events).toEqual([textDelta("Hello"), textDelta(" from")]);
      expect(st.code).toBe(status.UNAVAILABLE);
      expect(error?.details).toBe('upstream "claude-up" failed during the stream (overloaded_error)');
      expect(errorInfoOf(statusDetails(error!))).toEqual({
        reason: "UPSTREAM_UNAVAILABLE",
        domain: "infergate",
        metadata: { upstream: "claude-up", upstream_error: "overloaded_error" },
      });
    });

    it("a stream that ends without message_stop is UNAVAILABLE STREAM_TRUNCATED, never OK", async () => {
      fake.setScenario("truncated");
      const { events, status: st, error } = await client.serverStream<Obj>("Generate", chatRequest([userTurn("hi")])).done;
      expect(events).toEqual([textDelta("Hello"), textDelta(" from"), textDelta(" the")]);
      expect(st.code).toBe(status.UNAVAILABLE);
      expect(error?.details).toBe('upstream "claude-up" ended the stream before message_stop');
      expect(errorInfoOf(statusDetails(error!))).toEqual({
        reason: "STREAM_TRUNCATED",
        domain: "infergate",
        metadata: { upstream: "claude-up" },
      });
    });

    it("malformed JSON in an event is UNAVAILABLE UPSTREAM_BAD_RESPONSE, not skipped", async () => {
      fake.setScenario("malformed-event");
      const { events, status: st, error } = await client.serverStream<Obj>("Generate", chatRequest([userTurn("hi")])).done;
      expect(events).toEqual([textDelta("Hello")]);
      expect(st.code).toBe(status.UNAVAILABLE);
      expect(error?.details).toBe('upstream "claude-up" sent an invalid response: malformed JSON in a "content_block_delta" event');
      expect(errorInfoOf(statusDetails(error!))?.["reason"]).toBe("UPSTREAM_BAD_RESPONSE");
    });
  });

  it("cancelling Generate mid-stream aborts the upstream request before the next event", async () => {
    // 500 ms between events: message_start at once, content_block_start, ping, "t1 " at 1.5 s,
    // "t2 " at 2 s. The abort came from the cancel itself, not from the adapter noticing it at the
    // next event: a timer of four pauses, set before the call, fires before the fake's "t2 " timer
    // (due four pauses after the request, or later), and the abort had come by then.
    fake.setScenario("slow", { delayMs: 500, tokens: 200 });
    let abortedBeforeT2: boolean | undefined;
    const t2 = setTimeout(() => (abortedBeforeT2 = fake.requests[0]?.abortedAt !== undefined), 4 * 500);
    const stream = client.serverStream<Obj>("Generate", chatRequest([userTurn("hi")]));
    await stream.waitFor((e) => e["text_delta"] === "t1 ");
    const cancelledAt = Date.now();
    stream.call.cancel();
    const { status: st } = await stream.done;
    expect(st.code).toBe(status.CANCELLED);
    const rec = await fake.settled(0);
    clearTimeout(t2);
    expect(rec.abortedAt).toBeDefined();
    expect(rec.finishedAt).toBeUndefined();
    expect(rec.abortedAt!).toBeGreaterThanOrEqual(cancelledAt);
    expect(abortedBeforeT2 ?? true).toBe(true);
  });

  it("the caller's deadline ends the upstream request: DEADLINE_EXCEEDED, and the fake sees the abort", async () => {
    fake.setScenario("slow", { delayMs: 100, tokens: 100 });
    const { events, status: st } = await client.serverStream<Obj>("Generate", chatRequest([userTurn("hi")]), { timeoutMs: 450 }).done;
    expect(st.code).toBe(status.DEADLINE_EXCEEDED);
    expect(events.length).toBeGreaterThanOrEqual(1);
    expect(events.every((e) => e["event"] === "text_delta")).toBe(true);
    // The fake's stream would last 10 s; settled gives up after 5 s. The abort ended it.
    const rec = await fake.settled(0);
    expect(rec.abortedAt).toBeDefined();
    expect(rec.finishedAt).toBeUndefined();
  });

  describe("fields Anthropic cannot carry are refused before any upstream call", () => {
    it.each<[string, Obj, string]>([
      ["seed", { seed: "42" }, "seed"],
      ["presence_penalty", { presence_penalty: 0.5 }, "presence_penalty"],
      ["frequency_penalty", { frequency_penalty: -0.5 }, "frequency_penalty"],
      ["a JSON object response format", { response_format: { type: "RESPONSE_FORMAT_TYPE_JSON_OBJECT" } }, "response_format.type"],
      ["temperature above 1", { temperature: 1.2 }, "temperature"],
      ["an image detail", { messages: [turn("USER", { image_url: { url: "https://example.com/a.png", detail: "IMAGE_DETAIL_HIGH" } })] }, "messages[0].content[0].image_url.detail"],
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
      expect(errorInfoOf(statusDetails(error!))?.["metadata"]).toEqual({ field });
      expect(fake.requests).toHaveLength(0);
    });
  });
});
