/**
 * The Anthropic Messages API ingress end to end, with the official `@anthropic-ai/sdk` npm package
 * as the client (a client nobody here wrote): the SDK → infergate's HTTP listener → the mock
 * model, the OpenAI fake and the Anthropic fake. Asserts what the SDK gets, what the fakes
 * received and saw (aborts), and with raw fetch the exact SSE transcript of a text and a tool-use
 * stream (golden: event names and data in order).
 */
import Anthropic, {
  APIError,
  AuthenticationError,
  BadRequestError,
  InternalServerError,
  NotFoundError,
  PermissionDeniedError,
  RateLimitError,
} from "@anthropic-ai/sdk";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { keepAlive } from "../../src/ingress/anthropic/anthropic-ingress.js";
import { hashKey } from "../../src/security/api-keys.js";
import type { App } from "../../src/server/app.js";
import { type AnthropicFake, countTokensOf, createAnthropicFake } from "../fakes/anthropic-fake.js";
import { createOpenAIFake, type OpenAIFake } from "../fakes/openai-fake.js";
import { startInProcess } from "../helpers/servers.js";

const UPSTREAM_KEY = "sk-upstream-secret-7a2f01";

/** An SDK client for `app`, as an app would make it: only the base URL is infergate's. */
function sdk(app: App, options: Partial<ConstructorParameters<typeof Anthropic>[0]> = {}): Anthropic {
  // maxRetries 0: these tests watch single answers (the SDK would retry 429 and 5xx by itself).
  return new Anthropic({ baseURL: `http://${app.httpAddress}`, apiKey: "unused-when-auth-is-off", maxRetries: 0, ...options });
}

/** What an async call threw. */
async function thrown(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error("no error was thrown");
}

/** `usage` as the API gives it, with the cache counts always there. */
const usage = (input: number, output: number, cacheRead = 0, cacheCreation = 0) => ({
  input_tokens: input,
  output_tokens: output,
  cache_creation_input_tokens: cacheCreation,
  cache_read_input_tokens: cacheRead,
});

/** One event of a raw SSE body. */
interface SseEvent {
  event: string;
  data: unknown;
}

/** Posts `body` to /v1/messages with fetch and parses the SSE answer (checking its framing). */
async function rawStream(app: App, body: object, headers: Record<string, string> = {}): Promise<{ status: number; contentType: string | null; events: SseEvent[] }> {
  const res = await fetch(`http://${app.httpAddress}/v1/messages`, {
    method: "POST",
    headers: { "content-type": "application/json", "anthropic-version": "2023-06-01", ...headers },
    body: JSON.stringify({ ...body, stream: true }),
  });
  const text = await res.text();
  expect(text.endsWith("\n\n")).toBe(true);
  const events = text
    .slice(0, -2)
    .split("\n\n")
    .map((block) => {
      const lines = block.split("\n");
      expect(lines).toHaveLength(2);
      expect(lines[0]).toMatch(/^event: [a-z_]+$/);
      expect(lines[1]).toMatch(/^data: /);
      const data = JSON.parse(lines[1]!.slice("data: ".length)) as { type: string };
      const event = lines[0]!.slice("event: ".length);
      // The data's type repeats the event's name, as the API does.
      expect(data.type).toBe(event);
      return { event, data };
    });
  return { status: res.status, contentType: res.headers.get("content-type"), events };
}

/** The stream's message id, the same in every transcript, replaced by a placeholder. */
function withoutId(events: SseEvent[]): SseEvent[] {
  return JSON.parse(JSON.stringify(events).replace(/"msg_[0-9a-f]{32}"/g, '"msg_ID"')) as SseEvent[];
}

describe("Anthropic Messages API, auth off", () => {
  let app: App;
  let openaiFake: OpenAIFake;
  let anthropicFake: AnthropicFake;
  let client: Anthropic;

  beforeAll(async () => {
    openaiFake = await createOpenAIFake();
    anthropicFake = await createAnthropicFake();
    app = await startInProcess(`
upstreams:
  - name: mock
    kind: mock
  - name: gpt-up
    kind: openai
    resilience: { retry: { maxAttempts: 1 }, breaker: { enabled: false } }
    endpoints: ["${openaiFake.baseUrl}"]
    apiKey: "${UPSTREAM_KEY}"
  - name: claude-up
    kind: anthropic
    resilience: { retry: { maxAttempts: 1 }, breaker: { enabled: false } }
    endpoints: ["${anthropicFake.baseUrl}"]
    apiKey: "${UPSTREAM_KEY}"
models:
  - { name: mock-chat, upstream: mock, capabilities: [chat, generate] }
  - { name: mock-predict, upstream: mock, capabilities: [predict] }
  - { name: gpt, upstream: gpt-up, upstreamModel: gpt-4o-mini, cache: { policy: "off" } }
  - { name: claude, upstream: claude-up, upstreamModel: claude-sonnet-4-5, cache: { policy: "off" } }
  - { name: claude-cached, upstream: claude-up, upstreamModel: claude-sonnet-4-5, cache: { policy: always } }
  - { name: claude-or-gpt, upstream: claude-up, upstreamModel: claude-sonnet-4-5, fallbacks: [gpt] }
`);
    client = sdk(app);
  });

  afterAll(async () => {
    await app?.shutdown();
    await openaiFake?.close();
    await anthropicFake?.close();
  });

  beforeEach(() => {
    openaiFake.reset();
    anthropicFake.reset();
  });

  describe("the mock model", () => {
    it("unary: the message object, its usage and our headers", async () => {
      const { data, response } = await client.messages
        .create({ model: "mock-chat", max_tokens: 100, system: "be brief", messages: [{ role: "user", content: "hello there" }] }, { headers: { "x-request-id": "req-anthropic-1" } })
        .withResponse();
      expect(data).toEqual({
        id: expect.stringMatching(/^mock-[0-9a-f]{16}$/),
        type: "message",
        role: "assistant",
        model: "mock-chat",
        content: [{ type: "text", text: "You said: hello there" }],
        stop_reason: "end_turn",
        stop_sequence: null,
        usage: usage(4, 4),
      });
      expect(response.headers.get("x-request-id")).toBe("req-anthropic-1");
      expect(response.headers.get("infergate-served-by")).toBe("mock-chat/mock");
    });

    it("system as blocks (cache_control ignored), max_tokens cuts the answer, stop_sequences end it", async () => {
      const cut = await client.messages.create({
        model: "mock-chat",
        max_tokens: 2,
        system: [{ type: "text", text: "be brief", cache_control: { type: "ephemeral" } }],
        messages: [{ role: "user", content: [{ type: "text", text: "one two three four", cache_control: { type: "ephemeral" } }] }],
        temperature: 0,
        top_p: 0.5,
      });
      expect(cut.content).toEqual([{ type: "text", text: "You said:" }]);
      expect(cut.stop_reason).toBe("max_tokens");
      const stopped = await client.messages.create({ model: "mock-chat", max_tokens: 50, messages: [{ role: "user", content: "one two three" }], stop_sequences: [" two"] });
      expect(stopped.content).toEqual([{ type: "text", text: "You said: one" }]);
      // The mock says which stop sequence ended the answer, unary and streaming.
      expect(stopped.stop_reason).toBe("stop_sequence");
      expect(stopped.stop_sequence).toBe(" two");
      const streamed = await client.messages.stream({ model: "mock-chat", max_tokens: 50, messages: [{ role: "user", content: "one two three" }], stop_sequences: ["nope", " thr"] }).finalMessage();
      expect(streamed.content).toEqual([{ type: "text", text: "You said: one two" }]);
      expect([streamed.stop_reason, streamed.stop_sequence]).toEqual(["stop_sequence", " thr"]);
      const none = await client.messages.create({ model: "mock-chat", max_tokens: 50, messages: [{ role: "user", content: "one two three" }], stop_sequences: ["nope"] });
      expect([none.stop_reason, none.stop_sequence]).toEqual(["end_turn", null]);
    });

    it("messages.stream(): text events and the final message, as the unary answer", async () => {
      const stream = client.messages.stream({ model: "mock-chat", max_tokens: 100, messages: [{ role: "user", content: "stream this please" }] });
      const texts: string[] = [];
      stream.on("text", (t) => texts.push(t));
      const final = await stream.finalMessage();
      expect(texts.join("")).toBe("You said: stream this please");
      expect(texts.length).toBeGreaterThan(1);
      expect(final).toEqual({
        id: expect.stringMatching(/^msg_[0-9a-f]{32}$/),
        type: "message",
        role: "assistant",
        model: "mock-chat",
        content: [{ type: "text", text: "You said: stream this please" }],
        stop_reason: "end_turn",
        stop_sequence: null,
        usage: usage(3, 5),
      });
    });

    it("a tool-use round trip: tool_use with parsed input, then tool_result", async () => {
      const tools = [{ name: "lookup", description: "Looks up a word", input_schema: { type: "object" as const, properties: { text: { type: "string" } } } }];
      const first = await client.messages.create({
        model: "mock-chat",
        max_tokens: 100,
        tools,
        tool_choice: { type: "tool", name: "lookup" },
        messages: [{ role: "user", content: "what is gateway" }],
      });
      expect(first.stop_reason).toBe("tool_use");
      expect(first.content).toEqual([{ type: "tool_use", id: expect.stringMatching(/^call_/), name: "lookup", input: { text: "what is gateway" } }]);
      const use = first.content[0] as Anthropic.ToolUseBlock;
      const second = await client.messages.create({
        model: "mock-chat",
        max_tokens: 100,
        tools,
        messages: [
          { role: "user", content: "what is gateway" },
          { role: "assistant", content: first.content },
          { role: "user", content: [{ type: "tool_result", tool_use_id: use.id, content: "a door" }, { type: "text", text: "thanks, and now?" }] },
        ],
      });
      expect(second.stop_reason).toBe("end_turn");
      expect(second.content).toEqual([{ type: "text", text: "You said: thanks, and now?" }]);

      // The same streamed: the SDK joins the input_json_delta fragments into the parsed input.
      const streamed = await client.messages.stream({ model: "mock-chat", max_tokens: 100, tools, tool_choice: { type: "any" }, messages: [{ role: "user", content: "what is gateway" }] }).finalMessage();
      expect(streamed.content).toEqual(first.content);
      expect(streamed.stop_reason).toBe("tool_use");
    });

    it("images (base64 and URL) reach the model as image parts", async () => {
      const res = await client.messages.create({
        model: "mock-chat",
        max_tokens: 100,
        messages: [
          {
            role: "user",
            content: [
              { type: "image", source: { type: "base64", media_type: "image/png", data: Buffer.from("fake png bytes").toString("base64") } },
              { type: "image", source: { type: "url", url: "https://example.com/cat.png" } },
              { type: "text", text: "two pictures" },
            ],
          },
        ],
      });
      // The mock counts an image as one prompt token: 2 images + 2 words.
      expect(res.usage.input_tokens).toBe(4);
      expect(res.content).toEqual([{ type: "text", text: "You said: two pictures" }]);
    });

    it("metadata.user_id is request metadata, other metadata reaches the mock (token delay) and is never sent upstream", async () => {
      const res = await client.messages.create({ model: "gpt", max_tokens: 10, metadata: { user_id: "end-user-42" }, messages: [{ role: "user", content: "hi" }] });
      expect(res.content).toEqual([{ type: "text", text: "hi" }]);
      expect(JSON.stringify(openaiFake.requests[0]!.body)).not.toContain("end-user-42");
    });

    it("GET /v1/models: Anthropic's list shape with anthropic-version, OpenAI's without", async () => {
      const page = await client.models.list();
      expect(page.data.map((m) => m.id)).toEqual(["mock-chat", "gpt", "claude", "claude-cached", "claude-or-gpt"]);
      expect(page.data[0]).toEqual({ type: "model", id: "mock-chat", display_name: "mock-chat", created_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT/) });
      const raw = (await (await fetch(`http://${app.httpAddress}/v1/models`, { headers: { "anthropic-version": "2023-06-01" } })).json()) as Record<string, unknown>;
      expect(raw).toMatchObject({ has_more: false, first_id: "mock-chat", last_id: "claude-or-gpt" });
      expect(await client.models.retrieve("gpt")).toMatchObject({ type: "model", id: "gpt" });
      expect(await thrown(client.models.retrieve("nope"))).toBeInstanceOf(NotFoundError);
      const openai = (await (await fetch(`http://${app.httpAddress}/v1/models`)).json()) as { object: string };
      expect(openai.object).toBe("list");
    });

    it("count_tokens on the mock: the mock's own count, the input_tokens its answer reports for the same prompt", async () => {
      const prompt = { system: "be brief", messages: [{ role: "user" as const, content: "three little words" }, { role: "assistant" as const, content: "ok then" }, { role: "user" as const, content: "and two" }] };
      const counted = await client.messages.countTokens({ model: "mock-chat", ...prompt });
      const answered = await client.messages.create({ model: "mock-chat", max_tokens: 20, ...prompt });
      expect(counted).toEqual({ input_tokens: answered.usage.input_tokens });
      expect(counted.input_tokens).toBe(9);
    });

    it("count_tokens on an openai-kind model: 501 naming the kind, nothing sent upstream", async () => {
      const err = await thrown(client.messages.countTokens({ model: "gpt", messages: [{ role: "user", content: "hi" }] }));
      expect(err).toBeInstanceOf(InternalServerError);
      expect((err as APIError).status).toBe(501);
      expect((err as APIError).error).toEqual({ type: "error", error: { type: "api_error", message: expect.stringContaining("upstream kind (openai) has no token count") } });
      expect(openaiFake.requests).toHaveLength(0);
    });

    it("count_tokens: a key the API does not take there is a 400 naming it; an unknown model a 404", async () => {
      const res = await fetch(`http://${app.httpAddress}/v1/messages/count_tokens`, {
        method: "POST",
        headers: { "content-type": "application/json", "anthropic-version": "2023-06-01" },
        body: JSON.stringify({ model: "claude", max_tokens: 10, messages: [{ role: "user", content: "hi" }] }),
      });
      expect(res.status).toBe(400);
      expect(await res.json()).toEqual({ type: "error", error: { type: "invalid_request_error", message: expect.stringContaining("max_tokens") } });
      expect(await thrown(client.messages.countTokens({ model: "nope", messages: [{ role: "user", content: "hi" }] }))).toBeInstanceOf(NotFoundError);
      expect(anthropicFake.requests).toHaveLength(0);
    });
  });

  describe("refusals as the SDK's typed errors", () => {
    it("other /v1/messages/… paths (Message Batches): 404 not_found_error in this API's shape", async () => {
      // The SDK's batches call: a NotFoundError it can read.
      expect(await thrown(client.messages.batches.list())).toBeInstanceOf(NotFoundError);
      const res = await fetch(`http://${app.httpAddress}/v1/messages/batches`, { method: "POST", headers: { "anthropic-version": "2023-06-01", "content-type": "application/json" }, body: "{}" });
      expect(res.status).toBe(404);
      expect(await res.json()).toEqual({ type: "error", error: { type: "not_found_error", message: expect.stringContaining("/v1/messages/batches") } });
    });

    it("max_tokens missing: 400 BadRequestError naming it", async () => {
      const err = await thrown(client.messages.create({ model: "mock-chat", messages: [{ role: "user", content: "hi" }] } as unknown as Anthropic.MessageCreateParamsNonStreaming));
      expect(err).toBeInstanceOf(BadRequestError);
      expect((err as APIError).error).toEqual({ type: "error", error: { type: "invalid_request_error", message: expect.stringContaining("max_tokens") } });
    });

    it("top_k on a mock or openai-kind model: 400 naming it, nothing sent", async () => {
      for (const model of ["mock-chat", "gpt"]) {
        const err = await thrown(client.messages.create({ model, max_tokens: 10, top_k: 5, messages: [{ role: "user", content: "hi" }] }));
        expect(err, model).toBeInstanceOf(BadRequestError);
        expect((err as APIError).message, model).toContain("top_k");
      }
      expect(openaiFake.requests).toHaveLength(0);
    });

    it("fields the core cannot carry: 400 naming the field", async () => {
      for (const [body, field] of [
        [{ thinking: { type: "enabled", budget_tokens: 1024 } }, "thinking"],
        [{ messages: [{ role: "user", content: [{ type: "document", source: { type: "text", media_type: "text/plain", data: "x" } }] }] }, "messages[0].content[0].type"],
        [{ messages: [{ role: "user", content: [{ type: "tool_result", tool_use_id: "t", content: "x", is_error: true }] }] }, "messages[0].content[0].is_error"],
        [{ messages: [{ role: "user", content: [{ type: "image", source: { type: "base64", media_type: "image/bmp", data: "AAAA" } }] }] }, "messages[0].content[0].source.media_type"],
        [{ tools: [{ type: "web_search_20250305", name: "web_search" }] }, "tools[0].type"],
      ] as const) {
        const err = await thrown(client.messages.create({ model: "mock-chat", max_tokens: 10, messages: [{ role: "user", content: "hi" }], ...body } as unknown as Anthropic.MessageCreateParamsNonStreaming));
        expect(err, field).toBeInstanceOf(BadRequestError);
        expect((err as APIError).message, field).toContain(field);
      }
    });

    it("the gateway's own checks name the Messages API's fields (the turn and block, not the core's message)", async () => {
      const tools = [{ name: "f", input_schema: { type: "object" as const } }];
      for (const [body, field] of [
        // The system prompt is the core's first message: the turns keep their own indexes.
        [{ system: "sys", messages: [{ role: "user", content: "a" }, { role: "assistant", content: [] }] }, "messages[1].content:"],
        [{ system: "s", messages: [{ role: "user", content: "a" }, { role: "assistant", content: [{ type: "text", text: "t" }, { type: "tool_use", id: "", name: "f", input: {} }] }] }, "messages[1].content[1].id:"],
        // A tool result is a message of its own in the core: named by its block.
        [{ messages: [{ role: "user", content: [{ type: "text", text: "x" }, { type: "tool_result", tool_use_id: "", content: "x" }] }] }, "messages[0].content[1].tool_use_id:"],
        [{ tools, tool_choice: { type: "tool", name: "g" } }, "tool_choice.name:"],
      ] as const) {
        const request = Object.assign({ model: "mock-chat", max_tokens: 10, messages: [{ role: "user", content: "hi" }] }, body);
        const err = await thrown(client.messages.create(request as unknown as Anthropic.MessageCreateParamsNonStreaming));
        expect(err, field).toBeInstanceOf(BadRequestError);
        expect((err as APIError).message, field).toContain(field);
      }
    });

    it("anthropic-beta on a model that is not anthropic-kind, or has a fallback that is not: 400 naming the header, nothing sent", async () => {
      for (const model of ["mock-chat", "gpt", "claude-or-gpt"]) {
        const err = await thrown(client.beta.messages.create({ model, max_tokens: 10, messages: [{ role: "user", content: "hi" }], betas: ["token-efficient-tools-2025-02-19"] }));
        expect(err, model).toBeInstanceOf(BadRequestError);
        expect((err as APIError).message, model).toContain("anthropic-beta");
      }
      expect(anthropicFake.requests).toHaveLength(0);
      expect(openaiFake.requests).toHaveLength(0);
    });

    it("an unknown model: 404 NotFoundError; a model without Chat: 400", async () => {
      expect(await thrown(client.messages.create({ model: "nope", max_tokens: 10, messages: [{ role: "user", content: "hi" }] }))).toBeInstanceOf(NotFoundError);
      expect(await thrown(client.messages.create({ model: "mock-predict", max_tokens: 10, messages: [{ role: "user", content: "hi" }] }))).toBeInstanceOf(BadRequestError);
    });

    it("a deadline passed before the first event: 504 timeout_error", async () => {
      const res = await fetch(`http://${app.httpAddress}/v1/messages`, {
        method: "POST",
        headers: { "content-type": "application/json", "infergate-timeout-ms": "50" },
        body: JSON.stringify({ model: "mock-chat", max_tokens: 10, stream: true, metadata: { "mock.token_delay_ms": "1000" }, messages: [{ role: "user", content: "slow" }] }),
      });
      expect(res.status).toBe(504);
      expect(await res.json()).toEqual({ type: "error", error: { type: "timeout_error", message: expect.any(String) } });
    });

    it("cache_control markers reach the Anthropic upstream on the blocks and tools they stood on", async () => {
      const eph = { type: "ephemeral" as const };
      await client.messages.create({
        model: "claude",
        max_tokens: 10,
        system: [{ type: "text", text: "long system prompt", cache_control: { type: "ephemeral", ttl: "1h" } }],
        tools: [{ name: "f", input_schema: { type: "object" }, cache_control: eph }],
        messages: [
          { role: "user", content: [{ type: "text", text: "call f" }] },
          { role: "assistant", content: [{ type: "tool_use", id: "toolu_1", name: "f", input: {} }] },
          { role: "user", content: [{ type: "tool_result", tool_use_id: "toolu_1", content: "done", cache_control: eph }, { type: "text", text: "now what", cache_control: eph }] },
        ],
      });
      const body = anthropicFake.requests[0]!.body as Record<string, unknown>;
      expect(body["system"]).toEqual([{ type: "text", text: "long system prompt", cache_control: { type: "ephemeral", ttl: "1h" } }]);
      expect(body["tools"]).toEqual([{ name: "f", input_schema: { type: "object" }, cache_control: eph }]);
      expect(body["messages"]).toEqual([
        { role: "user", content: [{ type: "text", text: "call f" }] },
        { role: "assistant", content: [{ type: "tool_use", id: "toolu_1", name: "f", input: {} }] },
        { role: "user", content: [{ type: "tool_result", tool_use_id: "toolu_1", content: [{ type: "text", text: "done", cache_control: eph }] }] },
        { role: "user", content: [{ type: "text", text: "now what", cache_control: eph }] },
      ]);
    });

    it("count_tokens is exact: Anthropic's own count_tokens endpoint answers, sent the prompt only", async () => {
      const tools = [{ name: "get_weather", description: "Weather of a city", input_schema: { type: "object" as const, properties: { city: { type: "string" } } } }];
      const counted = await client.messages.countTokens({
        model: "claude",
        system: "You are terse.",
        messages: [{ role: "user", content: "What is the weather in Paris?" }],
        tools,
        tool_choice: { type: "auto" },
      });
      expect(anthropicFake.requests).toHaveLength(1);
      const rec = anthropicFake.requests[0]!;
      expect(rec.path).toBe("/v1/messages/count_tokens");
      expect(rec.headers["x-api-key"]).toBe(UPSTREAM_KEY);
      expect(rec.headers["anthropic-version"]).toBe("2023-06-01");
      expect(rec.body).toEqual({
        model: "claude-sonnet-4-5",
        system: [{ type: "text", text: "You are terse." }],
        messages: [{ role: "user", content: [{ type: "text", text: "What is the weather in Paris?" }] }],
        tools: [{ name: "get_weather", description: "Weather of a city", input_schema: { type: "object", properties: { city: { type: "string" } } } }],
        tool_choice: { type: "auto" },
      });
      // The fake's count (test/fakes/anthropic-fake.ts countTokensOf), passed on as it is.
      expect(counted).toEqual({ input_tokens: countTokensOf(rec.body as Record<string, unknown>) });
      expect(counted.input_tokens).toBeGreaterThan(9);
    });

    it("count_tokens: the upstream's rate limit is the caller's 429 with retry-after", async () => {
      anthropicFake.setScenario("rate-limited");
      const err = await thrown(client.messages.countTokens({ model: "claude", messages: [{ role: "user", content: "hi" }] }));
      expect(err).toBeInstanceOf(RateLimitError);
      expect((err as APIError).headers?.get("retry-after")).toBe("2");
    });

    it("an upstream rate limit: 429 RateLimitError with retry-after", async () => {
      anthropicFake.setScenario("rate-limited");
      const err = await thrown(client.messages.create({ model: "claude", max_tokens: 10, messages: [{ role: "user", content: "hi" }] }));
      expect(err).toBeInstanceOf(RateLimitError);
      expect((err as APIError).headers?.get("retry-after")).toBe("2");
      expect((err as APIError).error).toMatchObject({ type: "error", error: { type: "rate_limit_error" } });
    });

    it("a fallback answers: the stream's message_start names it, as the unary answer does", async () => {
      anthropicFake.setScenario("server-error");
      const messages = [{ role: "user" as const, content: "hi" }];
      const unary = await client.messages.create({ model: "claude-or-gpt", max_tokens: 10, messages });
      expect(unary.model).toBe("gpt");
      const stream = client.messages.stream({ model: "claude-or-gpt", max_tokens: 10, messages });
      let started: string | undefined;
      stream.on("streamEvent", (e) => {
        if (e.type === "message_start") started = e.message.model;
      });
      const final = await stream.finalMessage();
      expect(started).toBe("gpt");
      expect(final.model).toBe("gpt");
    });
  });

  describe("through the OpenAI fake: an Anthropic SDK reaches an OpenAI model", () => {
    it("cache_control markers are ignored by an openai-kind model: the request is the one without them", async () => {
      const eph = { type: "ephemeral" as const };
      const marked = await client.messages.create({
        model: "gpt",
        max_tokens: 20,
        system: [{ type: "text", text: "brief", cache_control: eph }],
        messages: [{ role: "user", content: [{ type: "text", text: "hello gpt", cache_control: eph }] }],
      });
      const plain = await client.messages.create({ model: "gpt", max_tokens: 20, system: [{ type: "text", text: "brief" }], messages: [{ role: "user", content: [{ type: "text", text: "hello gpt" }] }] });
      expect(marked.content).toEqual(plain.content);
      expect(openaiFake.requests).toHaveLength(2);
      expect(openaiFake.requests[0]!.body).toEqual(openaiFake.requests[1]!.body);
      expect(JSON.stringify(openaiFake.requests[0]!.body)).not.toContain("cache");
    });

    it("unary: the request translated, the answer in the API's shape", async () => {
      const res = await client.messages.create({ model: "gpt", max_tokens: 20, system: "brief", messages: [{ role: "user", content: "hello gpt" }] });
      expect(res).toMatchObject({ type: "message", model: "gpt", content: [{ type: "text", text: "hello gpt" }], stop_reason: "end_turn" });
      expect(openaiFake.requests[0]!.body).toMatchObject({
        model: "gpt-4o-mini",
        messages: [
          { role: "system", content: "brief" },
          { role: "user", content: "hello gpt" },
        ],
      });
      const sent = openaiFake.requests[0]!.body as Record<string, unknown>;
      // max_tokens or max_completion_tokens, by the openai kind's option (src/upstreams/openai).
      expect(sent["max_tokens"] ?? sent["max_completion_tokens"]).toBe(20);
      expect(openaiFake.requests[0]!.headers.authorization).toBe(`Bearer ${UPSTREAM_KEY}`);
    });

    it("a tool round trip reaches the OpenAI wire as tool_calls and a tool message", async () => {
      openaiFake.setScenario("tool-calls");
      const first = await client.messages.create({
        model: "gpt",
        max_tokens: 100,
        tools: [{ name: "get_weather", input_schema: { type: "object", properties: { city: { type: "string" } } } }],
        messages: [{ role: "user", content: "weather?" }],
      });
      expect(first.stop_reason).toBe("tool_use");
      const uses = first.content.filter((b): b is Anthropic.ToolUseBlock => b.type === "tool_use");
      expect(uses.length).toBeGreaterThan(0);
      expect(typeof uses[0]!.input).toBe("object");
      openaiFake.setScenario(null);
      await client.messages.create({
        model: "gpt",
        max_tokens: 100,
        tools: [{ name: "get_weather", input_schema: { type: "object", properties: { city: { type: "string" } } } }],
        messages: [
          { role: "user", content: "weather?" },
          { role: "assistant", content: first.content },
          { role: "user", content: uses.map((u) => ({ type: "tool_result" as const, tool_use_id: u.id, content: "sunny" })) },
        ],
      });
      const sent = openaiFake.requests[1]!.body as { messages: Record<string, unknown>[] };
      expect(sent.messages[1]).toMatchObject({ role: "assistant", tool_calls: uses.map((u) => ({ id: u.id, type: "function", function: { name: u.name, arguments: JSON.stringify(u.input) } })) });
      expect(sent.messages[2]).toMatchObject({ role: "tool", tool_call_id: uses[0]!.id, content: "sunny" });
    });

    it("aborting the SDK's stream mid-way aborts the upstream request", async () => {
      openaiFake.setScenario("slow", { delayMs: 1000, tokens: 20 });
      const stream = client.messages.stream({ model: "gpt", max_tokens: 100, messages: [{ role: "user", content: "hi" }] });
      const seen: string[] = [];
      await thrown(
        (async () => {
          for await (const e of stream) {
            if (e.type === "content_block_delta" && e.delta.type === "text_delta") {
              seen.push(e.delta.text);
              stream.abort();
            }
          }
        })(),
      );
      expect(seen.join("")).toBe("t1 ");
      const rec = await openaiFake.settled(0);
      expect(rec.abortedAt).toBeDefined();
      expect(rec.finishedAt).toBeUndefined();
    });
  });

  describe("through the Anthropic fake", () => {
    it("top_k reaches an anthropic-kind upstream", async () => {
      await client.messages.create({ model: "claude", max_tokens: 10, top_k: 5, messages: [{ role: "user", content: "hi" }] });
      expect(anthropicFake.requests[0]!.body).toMatchObject({ top_k: 5 });
    });

    it("anthropic-beta reaches an anthropic-kind upstream, unary and streaming, and such a call bypasses the cache", async () => {
      const betas = ["token-efficient-tools-2025-02-19", "interleaved-thinking-2025-05-14"];
      const params = { model: "claude-cached", max_tokens: 10, messages: [{ role: "user" as const, content: "hi" }] };
      await client.messages.create(params);
      const unary = await client.beta.messages.create({ ...params, betas });
      expect(unary.content[0]).toMatchObject({ type: "text" });
      await client.beta.messages.stream({ ...params, betas }).finalMessage();
      // The first call went upstream without the header; the two beta calls went upstream (not the
      // cached answer) with it; the caller's other headers (its key) were not sent on.
      expect(anthropicFake.requests).toHaveLength(3);
      expect(anthropicFake.requests[0]!.headers["anthropic-beta"]).toBeUndefined();
      for (const rec of anthropicFake.requests.slice(1)) {
        expect(rec.headers["anthropic-beta"]).toBe(betas.join(","));
        expect(rec.headers["x-api-key"]).toBe(UPSTREAM_KEY);
      }
    });

    it("unary: the request as the upstream kind sends it, usage with cache tokens", async () => {
      anthropicFake.setScenario("cache-usage");
      const res = await client.messages.create({ model: "claude", max_tokens: 50, system: "brief", messages: [{ role: "user", content: "hello claude" }] });
      expect(res.usage).toEqual(usage(12, 6, 2048, 1500));
      expect(res.content).toEqual([{ type: "text", text: "Hello from the fake upstream." }]);
      const rec = anthropicFake.requests[0]!;
      expect(rec.body).toMatchObject({ model: "claude-sonnet-4-5", max_tokens: 50, system: [{ type: "text", text: "brief" }] });
      expect(rec.headers["x-api-key"]).toBe(UPSTREAM_KEY);
    });

    it("aborting a unary request while the upstream has not answered aborts the upstream request", async () => {
      anthropicFake.setScenario("slow", { delayMs: 200, tokens: 20 });
      const controller = new AbortController();
      const pending = client.messages.create({ model: "claude", max_tokens: 100, messages: [{ role: "user", content: "hi" }] }, { signal: controller.signal });
      await anthropicFake.waitForRequest(0);
      controller.abort();
      expect(await thrown(pending)).toBeInstanceOf(Error);
      const rec = await anthropicFake.settled(0);
      expect(rec.abortedAt).toBeDefined();
      expect(rec.finishedAt).toBeUndefined();
    });

    it("images: base64 and URL sources arrive as they were sent", async () => {
      const data = Buffer.from("png bytes here").toString("base64");
      await client.messages.create({
        model: "claude",
        max_tokens: 50,
        messages: [
          {
            role: "user",
            content: [
              { type: "image", source: { type: "base64", media_type: "image/png", data } },
              { type: "image", source: { type: "url", url: "https://example.com/a.jpg" } },
              { type: "text", text: "look" },
            ],
          },
        ],
      });
      expect((anthropicFake.requests[0]!.body as { messages: unknown[] }).messages[0]).toEqual({
        role: "user",
        content: [
          { type: "image", source: { type: "base64", media_type: "image/png", data } },
          { type: "image", source: { type: "url", url: "https://example.com/a.jpg" } },
          { type: "text", text: "look" },
        ],
      });
    });

    it("a failure after the stream started: an error event and no message_stop; the SDK throws", async () => {
      anthropicFake.setScenario("mid-stream-error");
      const { status, events } = await rawStream(app, { model: "claude", max_tokens: 50, messages: [{ role: "user", content: "hi" }] });
      expect(status).toBe(200);
      expect(events.map((e) => e.event)).toEqual(["message_start", "content_block_start", "content_block_delta", "content_block_delta", "error"]);
      expect(events.at(-1)!.data).toEqual({ type: "error", error: { type: "api_error", message: expect.stringContaining("overloaded_error") } });
      anthropicFake.setScenario("mid-stream-error");
      const err = await thrown(client.messages.stream({ model: "claude", max_tokens: 50, messages: [{ role: "user", content: "hi" }] }).finalMessage());
      expect(err).toBeInstanceOf(APIError);
    });
  });

  describe("golden SSE transcripts (raw fetch)", () => {
    afterEach(() => {
      keepAlive.intervalMs = 10_000;
    });

    it("a text stream", async () => {
      const { status, contentType, events } = await rawStream(app, { model: "mock-chat", max_tokens: 100, messages: [{ role: "user", content: "hi there" }] });
      expect(status).toBe(200);
      expect(contentType).toBe("text/event-stream; charset=utf-8");
      expect(withoutId(events)).toEqual([
        {
          event: "message_start",
          data: {
            type: "message_start",
            message: { id: "msg_ID", type: "message", role: "assistant", model: "mock-chat", content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: 0, output_tokens: 0 } },
          },
        },
        { event: "content_block_start", data: { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } } },
        { event: "content_block_delta", data: { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "You" } } },
        { event: "content_block_delta", data: { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: " said:" } } },
        { event: "content_block_delta", data: { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: " hi" } } },
        { event: "content_block_delta", data: { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: " there" } } },
        { event: "content_block_stop", data: { type: "content_block_stop", index: 0 } },
        { event: "message_delta", data: { type: "message_delta", delta: { stop_reason: "end_turn", stop_sequence: null }, usage: usage(2, 4) } },
        { event: "message_stop", data: { type: "message_stop" } },
      ]);
    });

    it("a tool-use stream", async () => {
      const { events } = await rawStream(app, {
        model: "mock-chat",
        max_tokens: 100,
        tools: [{ name: "lookup", input_schema: { type: "object" } }],
        tool_choice: { type: "any" },
        messages: [{ role: "user", content: "find it" }],
      });
      const start = events[1]!.data as { content_block: { id: string } };
      expect(start.content_block.id).toMatch(/^call_/);
      expect(withoutId(events)).toEqual([
        {
          event: "message_start",
          data: {
            type: "message_start",
            message: { id: "msg_ID", type: "message", role: "assistant", model: "mock-chat", content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: 0, output_tokens: 0 } },
          },
        },
        { event: "content_block_start", data: { type: "content_block_start", index: 0, content_block: { type: "tool_use", id: start.content_block.id, name: "lookup", input: {} } } },
        { event: "content_block_delta", data: { type: "content_block_delta", index: 0, delta: { type: "input_json_delta", partial_json: '{"text":"' } } },
        { event: "content_block_delta", data: { type: "content_block_delta", index: 0, delta: { type: "input_json_delta", partial_json: 'find it"}' } } },
        { event: "content_block_stop", data: { type: "content_block_stop", index: 0 } },
        { event: "message_delta", data: { type: "message_delta", delta: { stop_reason: "tool_use", stop_sequence: null }, usage: usage(2, 2) } },
        { event: "message_stop", data: { type: "message_stop" } },
      ]);
    });

    it("ping keep-alives while the stream waits, message_start first", async () => {
      keepAlive.intervalMs = 50;
      const { events } = await rawStream(app, { model: "mock-chat", max_tokens: 100, metadata: { "mock.token_delay_ms": "400" }, messages: [{ role: "user", content: "a b" }] });
      const names = events.map((e) => e.event);
      expect(names[0]).toBe("message_start");
      expect(names[1]).toBe("ping");
      // Pings fall between the deltas too; without them the sequence is the usual one.
      expect(names.slice(2).filter((n) => n === "ping").length).toBeGreaterThan(0);
      expect(names.filter((n) => n !== "ping")).toEqual([
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
      ]);
      expect(events.find((e) => e.event === "ping")!.data).toEqual({ type: "ping" });
    });
  });
});

describe("Anthropic Messages API, auth on", () => {
  let app: App;

  beforeAll(async () => {
    app = await startInProcess(`
upstreams: [{ name: mock, kind: mock }]
models: [{ name: mock-chat, upstream: mock }, { name: private, upstream: mock }]
auth:
  enabled: true
  keys:
    - { name: alpha, sha256: ${hashKey("sk-alpha-key")}, models: ["mock-*"], limits: { requestsPerMinute: 2 } }
    - { name: beta, sha256: ${hashKey("sk-beta-key")}, models: ["*"] }
`);
  });

  afterAll(async () => {
    await app?.shutdown();
  });

  const hi = { model: "mock-chat", max_tokens: 20, messages: [{ role: "user" as const, content: "hi" }] };

  it("x-api-key (what the SDK sends) and Authorization: Bearer are the same keys", async () => {
    expect((await sdk(app, { apiKey: "sk-beta-key" }).messages.create(hi)).content).toEqual([{ type: "text", text: "You said: hi" }]);
    expect((await sdk(app, { apiKey: null, authToken: "sk-beta-key" }).messages.create(hi)).content).toEqual([{ type: "text", text: "You said: hi" }]);
  });

  it("no key or a wrong one: 401 AuthenticationError, the key not in the answer", async () => {
    const none = await fetch(`http://${app.httpAddress}/v1/messages`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(hi) });
    expect(none.status).toBe(401);
    expect(await none.json()).toEqual({ type: "error", error: { type: "authentication_error", message: expect.any(String) } });
    const err = await thrown(sdk(app, { apiKey: "sk-wrong-key-123" }).messages.create(hi));
    expect(err).toBeInstanceOf(AuthenticationError);
    expect(JSON.stringify((err as APIError).error)).not.toContain("sk-wrong");
  });

  it("a model the key may not use: 403 PermissionDeniedError", async () => {
    expect(await thrown(sdk(app, { apiKey: "sk-alpha-key" }).messages.create({ ...hi, model: "private" }))).toBeInstanceOf(PermissionDeniedError);
  });

  it("count_tokens takes the same keys: none is a 401, a model outside the key's globs a 403", async () => {
    const prompt = { model: "private", messages: hi.messages };
    expect(await thrown(sdk(app, { apiKey: "sk-wrong-key-123" }).messages.countTokens(prompt))).toBeInstanceOf(AuthenticationError);
    expect(await thrown(sdk(app, { apiKey: "sk-alpha-key" }).messages.countTokens(prompt))).toBeInstanceOf(PermissionDeniedError);
    expect(await sdk(app, { apiKey: "sk-beta-key" }).messages.countTokens(prompt)).toEqual({ input_tokens: 1 });
  });

  it("over the key's rate limit: 429 RateLimitError with retry-after", async () => {
    const alpha = sdk(app, { apiKey: "sk-alpha-key" });
    let err: unknown;
    for (let i = 0; i < 3 && err === undefined; i++) {
      err = await alpha.messages.create(hi).then(
        () => undefined,
        (e: unknown) => e,
      );
    }
    expect(err).toBeInstanceOf(RateLimitError);
    expect(Number((err as APIError).headers?.get("retry-after"))).toBeGreaterThan(0);
    expect((err as APIError).error).toMatchObject({ type: "error", error: { type: "rate_limit_error" } });
  });
});

describe("Anthropic Messages API, a failing upstream", () => {
  let app: App;

  beforeAll(async () => {
    app = await startInProcess(`
upstreams:
  - { name: down, kind: mock, options: { failCode: UNAVAILABLE }, resilience: { retry: { maxAttempts: 1 }, breaker: { consecutiveFailures: 2, resetTimeoutMs: 3600000 } } }
models: [{ name: broken, upstream: down, capabilities: [chat, generate] }]
`);
  });

  afterAll(async () => {
    await app?.shutdown();
  });

  it("unavailable: 503 api_error; once every endpoint's breaker is open: 529 overloaded_error with retry-after", async () => {
    const client = sdk(app);
    const req = { model: "broken", max_tokens: 10, messages: [{ role: "user" as const, content: "hi" }] };
    for (let i = 0; i < 2; i++) {
      const err = await thrown(client.messages.create(req));
      expect((err as APIError).status).toBe(503);
      expect((err as APIError).error).toMatchObject({ type: "error", error: { type: "api_error" } });
    }
    const open = await thrown(client.messages.create(req));
    expect(open).toBeInstanceOf(InternalServerError);
    expect((open as APIError).status).toBe(529);
    expect((open as APIError).error).toMatchObject({ type: "error", error: { type: "overloaded_error" } });
    expect(Number((open as APIError).headers?.get("retry-after"))).toBeGreaterThan(0);
  });
});
