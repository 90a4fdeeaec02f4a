/**
 * The OpenAI-compatible HTTP API end to end, with the official `openai` npm package as the client
 * (a client nobody here wrote): the SDK → infergate's HTTP listener (`/v1`) → the mock model, the
 * OpenAI fake and the Anthropic fake (so an OpenAI SDK reaches an Anthropic model). Asserts what
 * the SDK gets, and what the fakes received and saw (aborts).
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import * as http2 from "node:http2";
import { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI, {
  APIError,
  AuthenticationError,
  BadRequestError,
  InternalServerError,
  NotFoundError,
  PermissionDeniedError,
  RateLimitError,
} from "openai";
import { Agent, fetch as undiciFetch } from "undici";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { hashKey } from "../../src/security/api-keys.js";
import type { App } from "../../src/server/app.js";
import { ANTHROPIC_FIXTURE_TEXT, type AnthropicFake, createAnthropicFake } from "../fakes/anthropic-fake.js";
import { createOpenAIFake, OPENAI_FIXTURE_TEXT, type OpenAIFake } from "../fakes/openai-fake.js";
import { startInProcess } from "../helpers/servers.js";

const UPSTREAM_KEY = "sk-upstream-secret-5d1e9c";
type Chunk = OpenAI.Chat.Completions.ChatCompletionChunk;

/** An SDK client for `app`, as an app would make it: only the base URL is infergate's. */
function sdk(app: App, options: Partial<ConstructorParameters<typeof OpenAI>[0]> = {}): OpenAI {
  // maxRetries 0: these tests watch single answers (the SDK would retry 429 and 5xx by itself).
  return new OpenAI({ baseURL: `http://${app.httpAddress}/v1`, apiKey: "unused-when-auth-is-off", maxRetries: 0, ...options });
}

async function collect(stream: AsyncIterable<Chunk>): Promise<Chunk[]> {
  const out: Chunk[] = [];
  for await (const c of stream) out.push(c);
  return out;
}

const textOf = (chunks: Chunk[]) => chunks.map((c) => c.choices[0]?.delta.content ?? "").join("");

/**
 * `usage` as OpenAI sends it: the details objects always there, 0 where nothing was cached or
 * reasoned; and infergate's cost (test/e2e/cost.test.ts), "unpriced" for these unpriced models.
 */
const usage = (prompt: number, completion: number, cached = 0, reasoning = 0): OpenAI.CompletionUsage => ({
  prompt_tokens: prompt,
  completion_tokens: completion,
  total_tokens: prompt + completion,
  prompt_tokens_details: { cached_tokens: cached },
  completion_tokens_details: { reasoning_tokens: reasoning },
  ...{ cost: "unpriced" },
});

/** What an async call threw. */
async function thrown(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error("no error was thrown");
}

/** Joins streamed tool-call fragments by index, as a client does. */
function joinToolCalls(chunks: Chunk[]): { id: string; name: string; arguments: string }[] {
  const calls: { id: string; name: string; arguments: string }[] = [];
  for (const c of chunks) {
    for (const t of c.choices[0]?.delta.tool_calls ?? []) {
      const call = (calls[t.index] ??= { id: "", name: "", arguments: "" });
      call.id += t.id ?? "";
      call.name += t.function?.name ?? "";
      call.arguments += t.function?.arguments ?? "";
    }
  }
  return calls;
}

describe("OpenAI-compatible API, auth off", () => {
  let app: App;
  let openaiFake: OpenAIFake;
  let anthropicFake: AnthropicFake;
  let client: OpenAI;

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
  - { name: mock-chat, version: "1", upstream: mock, capabilities: [chat, generate] }
  - { name: mock-predict, version: "1", upstream: mock, capabilities: [predict] }
  - { name: mock-unary, upstream: mock, capabilities: [chat] }
  - { name: mock-embed, upstream: mock, capabilities: [embed] }
  - { name: gpt, upstream: gpt-up, upstreamModel: gpt-4o-mini, cache: { policy: "off" } }
  - { name: claude, upstream: claude-up, upstreamModel: claude-sonnet-4-5, cache: { policy: "off" } }
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
    it("unary: the answer, usage and our headers", async () => {
      const { data, response } = await client.chat.completions
        .create({ model: "mock-chat", messages: [{ role: "user", content: "hello there" }] }, { headers: { "x-request-id": "req-openai-1" } })
        .withResponse();
      expect(data.object).toBe("chat.completion");
      expect(data.model).toBe("mock-chat");
      expect(data.choices).toHaveLength(1);
      expect(data.choices[0]!.message).toMatchObject({ role: "assistant", content: "You said: hello there" });
      expect(data.choices[0]!.finish_reason).toBe("stop");
      expect(data.usage).toEqual(usage(2, 4));
      expect(response.headers.get("x-request-id")).toBe("req-openai-1");
      expect(response.headers.get("infergate-served-by")).toBe("mock-chat/mock");
    });

    it("sampling options reach the core: max_tokens cuts the answer, stop ends it", async () => {
      const cut = await client.chat.completions.create({ model: "mock-chat", messages: [{ role: "user", content: "one two three four" }], max_completion_tokens: 2, temperature: 0, seed: 7 });
      expect(cut.choices[0]!.message.content).toBe("You said:");
      expect(cut.choices[0]!.finish_reason).toBe("length");
      const stopped = await client.chat.completions.create({ model: "mock-chat", messages: [{ role: "user", content: "one two three" }], stop: " two" });
      expect(stopped.choices[0]!.message.content).toBe("You said: one");
    });

    it("response_format json_schema: the mock answers JSON", async () => {
      const res = await client.chat.completions.create({
        model: "mock-chat",
        messages: [{ role: "system", content: "JSON only" }, { role: "user", content: "hi" }],
        response_format: { type: "json_schema", json_schema: { name: "reply", schema: { type: "object", properties: { reply: { type: "string" } } } } },
      });
      expect(JSON.parse(res.choices[0]!.message.content!)).toEqual({ reply: "You said: hi" });
    });

    it("streaming with include_usage: deltas, a finish chunk, then the usage chunk", async () => {
      const chunks = await collect(
        await client.chat.completions.create({ model: "mock-chat", messages: [{ role: "user", content: "stream this please" }], stream: true, stream_options: { include_usage: true } }),
      );
      expect(textOf(chunks)).toBe("You said: stream this please");
      expect(chunks[0]!.choices[0]!.delta.role).toBe("assistant");
      expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
      const last = chunks.at(-1)!;
      expect(last.choices).toEqual([]);
      expect(last.usage).toEqual(usage(3, 5));
      expect(chunks.at(-2)!.choices[0]!.finish_reason).toBe("stop");
      expect(chunks.slice(0, -1).every((c) => c.usage === null)).toBe(true);
    });

    it("streaming without include_usage sends no usage chunk", async () => {
      const chunks = await collect(await client.chat.completions.create({ model: "mock-chat", messages: [{ role: "user", content: "hi" }], stream: true }));
      expect(chunks.at(-1)!.choices[0]!.finish_reason).toBe("stop");
      expect(chunks.every((c) => c.usage === undefined)).toBe(true);
    });

    it("on the wire: data: events, then data: [DONE]", async () => {
      const res = await fetch(`http://${app.httpAddress}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "mock-chat", messages: [{ role: "user", content: "hi" }], stream: true }),
      });
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toBe("text/event-stream; charset=utf-8");
      const events = (await res.text()).split("\n\n").filter((e) => e !== "");
      expect(events.every((e) => e.startsWith("data: "))).toBe(true);
      expect(events.at(-1)).toBe("data: [DONE]");
    });

    const weatherTool: OpenAI.Chat.Completions.ChatCompletionTool = {
      type: "function",
      function: { name: "get_weather", description: "Weather of a city", parameters: { type: "object", properties: { text: { type: "string" } } } },
    };

    it("tool calls, unary: joined, with finish_reason tool_calls; the tool's result goes back in", async () => {
      const res = await client.chat.completions.create({ model: "mock-chat", messages: [{ role: "user", content: "Paris" }], tools: [weatherTool], tool_choice: "required" });
      const message = res.choices[0]!.message;
      expect(res.choices[0]!.finish_reason).toBe("tool_calls");
      expect(message.content).toBeNull();
      expect(message.tool_calls).toHaveLength(1);
      const call = message.tool_calls![0]!;
      expect(call.type).toBe("function");
      expect(call.type === "function" && call.function).toEqual({ name: "get_weather", arguments: '{"text":"Paris"}' });
      const next = await client.chat.completions.create({
        model: "mock-chat",
        tools: [weatherTool],
        messages: [{ role: "user", content: "Paris" }, message, { role: "tool", tool_call_id: call.id, content: "sunny" }, { role: "user", content: "thanks" }],
      });
      expect(next.choices[0]!.message.content).toBe("You said: thanks");
    });

    it("tool calls, streamed: deltas by index that join to the unary call; the SDK's stream helper agrees", async () => {
      const params = { model: "mock-chat", messages: [{ role: "user" as const, content: "Paris" }], tools: [weatherTool], tool_choice: { type: "function" as const, function: { name: "get_weather" } } };
      const chunks = await collect(await client.chat.completions.create({ ...params, stream: true }));
      expect(chunks.filter((c) => (c.choices[0]?.delta.tool_calls?.length ?? 0) > 0).length).toBe(2);
      const [call] = joinToolCalls(chunks);
      expect(call).toMatchObject({ name: "get_weather", arguments: '{"text":"Paris"}' });
      expect(call!.id).toMatch(/^call_/);
      expect(chunks.at(-1)!.choices[0]!.finish_reason).toBe("tool_calls");
      const final = await client.chat.completions.stream(params).finalChatCompletion();
      expect(final.choices[0]!.message.tool_calls).toEqual([{ id: call!.id, type: "function", function: { name: "get_weather", arguments: '{"text":"Paris"}' } }]);
    });

    it("image parts, by URL and as a data: URI", async () => {
      const res = await client.chat.completions.create({
        model: "mock-chat",
        messages: [
          {
            role: "user",
            content: [
              { type: "text", text: "what is this" },
              { type: "image_url", image_url: { url: "https://example.com/cat.png", detail: "low" } },
              { type: "image_url", image_url: { url: "data:image/png;base64,iVBORw0KGgo=" } },
            ],
          },
        ],
      });
      expect(res.choices[0]!.message.content).toBe("You said: what is this");
      // The mock counts one prompt token per image.
      expect(res.usage!.prompt_tokens).toBe(3 + 2);
    });

    it("a stream that fails after it started: the SDK's iteration throws, and the body has no [DONE]", async () => {
      const params = { model: "mock-chat", messages: [{ role: "user" as const, content: "one two three four" }], stream: true as const, metadata: { "mock.cut_after_tokens": "2" } };
      const seen: string[] = [];
      const err = await thrown(
        (async () => {
          for await (const c of await client.chat.completions.create(params)) seen.push(c.choices[0]?.delta.content ?? "");
        })(),
      );
      expect(err).toBeInstanceOf(APIError);
      expect((err as APIError).code).toBe("stream_truncated");
      expect((err as APIError).type).toBe("server_error");
      expect(seen.join("")).toBe("You said:");
      const raw = await fetch(`http://${app.httpAddress}/v1/chat/completions`, { method: "POST", body: JSON.stringify(params) });
      const events = (await raw.text()).split("\n\n").filter((e) => e !== "");
      expect(JSON.parse(events.at(-1)!.slice("data: ".length))).toMatchObject({ error: { code: "stream_truncated" } });
      expect(events).not.toContain("data: [DONE]");
    });

    it("n > 1 is a 400 BadRequestError naming n", async () => {
      const err = await thrown(client.chat.completions.create({ model: "mock-chat", messages: [{ role: "user", content: "hi" }], n: 2 }));
      expect(err).toBeInstanceOf(BadRequestError);
      expect((err as BadRequestError).status).toBe(400);
      expect((err as BadRequestError).param).toBe("n");
      expect((err as BadRequestError).type).toBe("invalid_request_error");
    });

    it("a field the core refuses is a 400 naming it", async () => {
      const err = await thrown(client.chat.completions.create({ model: "mock-chat", messages: [{ role: "user", content: "hi" }], temperature: 3 }));
      expect(err).toBeInstanceOf(BadRequestError);
      expect((err as BadRequestError).param).toBe("temperature");
      expect((err as BadRequestError).message).toContain("between 0 and 2");
    });

    it("an unknown model is a 404 NotFoundError; a Predict-only model a 400; stream on a Chat-only model a 400", async () => {
      const err = await thrown(client.chat.completions.create({ model: "nope", messages: [{ role: "user", content: "hi" }] }));
      expect(err).toBeInstanceOf(NotFoundError);
      expect((err as NotFoundError).code).toBe("model_not_found");
      const predict = await thrown(client.chat.completions.create({ model: "mock-predict", messages: [{ role: "user", content: "hi" }] }));
      expect(predict).toBeInstanceOf(BadRequestError);
      expect((predict as BadRequestError).code).toBe("capability_not_supported");
      const stream = await thrown(client.chat.completions.create({ model: "mock-unary", messages: [{ role: "user", content: "hi" }], stream: true }));
      expect(stream).toBeInstanceOf(BadRequestError);
    });

    it("the caller's infergate-timeout-ms runs out before the first token: 504 deadline_exceeded", async () => {
      const err = await thrown(
        client.chat.completions.create(
          { model: "mock-chat", messages: [{ role: "user", content: "a b c d e f g h" }], metadata: { "mock.token_delay_ms": "400" }, stream: true },
          { headers: { "infergate-timeout-ms": "150" } },
        ),
      );
      expect(err).toBeInstanceOf(InternalServerError);
      expect((err as APIError).status).toBe(504);
      expect((err as APIError).code).toBe("deadline_exceeded");
    });

    it("GET /v1/models lists the models this API can call; GET /v1/models/{id} one of them", async () => {
      const ids: string[] = [];
      for await (const m of client.models.list()) {
        expect(m.object).toBe("model");
        ids.push(m.id);
      }
      expect(ids).toEqual(["mock-chat", "mock-unary", "mock-embed", "gpt", "claude"]);
      expect(await client.models.retrieve("claude")).toMatchObject({ id: "claude", object: "model", owned_by: "claude-up" });
      expect(await thrown(client.models.retrieve("mock-predict"))).toBeInstanceOf(NotFoundError);
    });
  });

  describe("raw HTTP", () => {
    const post = (path: string, body: string, headers: Record<string, string> = {}) =>
      fetch(`http://${app.httpAddress}${path}`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body });

    it.each<[string, () => Promise<Response>, number, string]>([
      ["a body that is not JSON", () => post("/v1/chat/completions", "{nope"), 400, "invalid_argument"],
      ["an unknown path under /v1", () => post("/v1/completions", "{}"), 404, "unknown_url"],
      ["the wrong method", () => fetch(`http://${app.httpAddress}/v1/chat/completions`), 405, "method_not_allowed"],
      ["a bad timeout header", () => post("/v1/chat/completions", "{}", { "infergate-timeout-ms": "soon" }), 400, "invalid_argument"],
      ["a compressed body", () => post("/v1/chat/completions", "{}", { "content-encoding": "gzip" }), 415, "unsupported_content_encoding"],
    ])("%s: an HTTP error in OpenAI's error shape", async (_name, send, status, code) => {
      const res = await send();
      expect(res.status).toBe(status);
      expect(res.headers.get("content-type")).toBe("application/json");
      const body = (await res.json()) as { error: Record<string, unknown> };
      expect(Object.keys(body.error).sort()).toEqual(["code", "message", "param", "type"]);
      expect(body.error["code"]).toBe(code);
    });

    it("Connect on the same port is untouched", async () => {
      const res = await post("/infergate.v1.InferenceService/Chat", JSON.stringify({ model: "mock-chat", messages: [{ role: "ROLE_USER", content: [{ text: "hi" }] }] }));
      expect(res.status).toBe(200);
      expect(((await res.json()) as { message: { content: { text: string }[] } }).message.content[0]!.text).toBe("You said: hi");
    });

    it("over h2c too", async () => {
      const session = http2.connect(`http://${app.httpAddress}`);
      try {
        const req = session.request({ ":method": "POST", ":path": "/v1/chat/completions", "content-type": "application/json" });
        req.end(JSON.stringify({ model: "mock-chat", messages: [{ role: "user", content: "over h2" }], stream: true }));
        let status = 0;
        req.on("response", (h) => (status = Number(h[":status"])));
        let body = "";
        req.setEncoding("utf8");
        for await (const chunk of req) body += chunk as string;
        expect(status).toBe(200);
        expect(body.trimEnd().endsWith("data: [DONE]")).toBe(true);
        expect(body).toContain('"content":" h2"');
      } finally {
        session.close();
      }
    });
  });

  describe("through the OpenAI fake", () => {
    it("unary: the upstream gets the same request the SDK sent", async () => {
      const res = await client.chat.completions.create({ model: "gpt", messages: [{ role: "system", content: "brief" }, { role: "user", content: "hello upstream" }], temperature: 0.5 });
      expect(res.choices[0]!.message.content).toBe("hello upstream");
      expect(res.model).toBe("gpt");
      const rec = openaiFake.requests[0]!;
      expect(rec.body).toEqual({ model: "gpt-4o-mini", messages: [{ role: "system", content: "brief" }, { role: "user", content: "hello upstream" }], temperature: 0.5, stream: false });
      expect(rec.headers.authorization).toBe(`Bearer ${UPSTREAM_KEY}`);
    });

    it("images by URL and data: URI arrive at the upstream as sent", async () => {
      const content: OpenAI.Chat.Completions.ChatCompletionContentPart[] = [
        { type: "text", text: "describe" },
        { type: "image_url", image_url: { url: "https://example.com/cat.png", detail: "high" } },
        { type: "image_url", image_url: { url: "data:image/jpeg;base64,/9j/4AAQSkZJRg==" } },
      ];
      await client.chat.completions.create({ model: "gpt", messages: [{ role: "user", content }] });
      expect((openaiFake.requests[0]!.body as { messages: unknown[] }).messages).toEqual([{ role: "user", content }]);
    });

    it("streamed tool calls: two calls by index, joined as the upstream sent them", async () => {
      openaiFake.setScenario("tool-calls");
      const chunks = await collect(await client.chat.completions.create({ model: "gpt", messages: [{ role: "user", content: "weather and time?" }], stream: true, stream_options: { include_usage: true } }));
      expect(joinToolCalls(chunks)).toEqual([
        { id: "call_fake_weather", name: "get_weather", arguments: '{"city": "Paris", "unit": "celsius"}' },
        { id: "call_fake_time", name: "get_time", arguments: '{"tz": "Europe/Paris"}' },
      ]);
      expect(chunks.at(-2)!.choices[0]!.finish_reason).toBe("tool_calls");
    });

    it("streams with the upstream's usage", async () => {
      openaiFake.setScenario("usage");
      const chunks = await collect(await client.chat.completions.create({ model: "gpt", messages: [{ role: "user", content: "hi" }], stream: true, stream_options: { include_usage: true } }));
      expect(textOf(chunks)).toBe(OPENAI_FIXTURE_TEXT);
      expect(chunks.at(-1)!.usage).toEqual(usage(12, 6));
    });

    it("the upstream's cached and reasoning tokens come out in OpenAI's fields, unary and in the include_usage chunk", async () => {
      // test/fixtures/openai/usage-details.*: 2006 prompt tokens (1920 cached), 198 completion (192 reasoning).
      openaiFake.setScenario("usage-details");
      const res = await client.chat.completions.create({ model: "gpt", messages: [{ role: "user", content: "hi" }] });
      expect(res.choices[0]!.message.content).toBe(OPENAI_FIXTURE_TEXT);
      expect(res.usage).toEqual(usage(2006, 198, 1920, 192));
      const chunks = await collect(await client.chat.completions.create({ model: "gpt", messages: [{ role: "user", content: "hi" }], stream: true, stream_options: { include_usage: true } }));
      expect(textOf(chunks)).toBe(OPENAI_FIXTURE_TEXT);
      expect(chunks.at(-1)!.choices).toEqual([]);
      expect(chunks.at(-1)!.usage).toEqual(usage(2006, 198, 1920, 192));
      expect(chunks.slice(0, -1).every((c) => c.usage === null)).toBe(true);
    });

    it("the upstream's 429 is a RateLimitError with its Retry-After", async () => {
      openaiFake.setScenario("rate-limited");
      const err = await thrown(client.chat.completions.create({ model: "gpt", messages: [{ role: "user", content: "hi" }] }));
      expect(err).toBeInstanceOf(RateLimitError);
      expect((err as RateLimitError).headers?.get("retry-after")).toBe("2");
      expect((err as RateLimitError).code).toBe("upstream_rate_limited");
    });

    it("the upstream's 500 is a 503, and no secret is in it", async () => {
      openaiFake.setScenario("unauthorized");
      const auth = await thrown(client.chat.completions.create({ model: "gpt", messages: [{ role: "user", content: "hi" }] }));
      expect(auth).toBeInstanceOf(InternalServerError);
      expect((auth as APIError).status).toBe(500);
      expect(JSON.stringify((auth as APIError).error)).not.toContain(UPSTREAM_KEY);
      openaiFake.setScenario("server-error");
      const down = await thrown(client.chat.completions.create({ model: "gpt", messages: [{ role: "user", content: "hi" }] }));
      expect((down as APIError).status).toBe(503);
    });

    it("an upstream failure mid-stream: the SDK's iteration throws after the deltas it had", async () => {
      openaiFake.setScenario("mid-stream-error");
      const seen: string[] = [];
      const err = await thrown(
        (async () => {
          for await (const c of await client.chat.completions.create({ model: "gpt", messages: [{ role: "user", content: "hi" }], stream: true })) {
            seen.push(c.choices[0]?.delta.content ?? "");
          }
        })(),
      );
      expect(err).toBeInstanceOf(APIError);
      expect((err as APIError).type).toBe("server_error");
      expect(seen.join("")).toBe("Hello from");
    });

    it("aborting the SDK's request mid-stream aborts the upstream request", async () => {
      openaiFake.setScenario("slow", { delayMs: 1000, tokens: 20 });
      // A timer of two pauses, set before the call, fires before the fake's "t2 " timer (due two
      // pauses after the request, or later): whether the abort had come by then is event order.
      let abortedBeforeT2: boolean | undefined;
      const t2 = setTimeout(() => (abortedBeforeT2 = openaiFake.requests[0]?.abortedAt !== undefined), 2 * 1000);
      const controller = new AbortController();
      const stream = await client.chat.completions.create({ model: "gpt", messages: [{ role: "user", content: "hi" }], stream: true }, { signal: controller.signal });
      const seen: string[] = [];
      let abortedAt = 0;
      for await (const c of stream) {
        seen.push(c.choices[0]?.delta.content ?? "");
        if (seen.join("").includes("t1")) {
          abortedAt = Date.now();
          controller.abort();
        }
      }
      expect(seen.join("")).toBe("t1 ");
      const rec = await openaiFake.settled(0);
      clearTimeout(t2);
      expect(rec.abortedAt).toBeDefined();
      expect(rec.finishedAt).toBeUndefined();
      // The next token would come a second later: the abort travelled before it, not with it.
      expect(rec.abortedAt!).toBeGreaterThanOrEqual(abortedAt);
      expect(abortedBeforeT2 ?? true).toBe(true);
    });

    it("aborting a unary request while the upstream has not answered aborts the upstream request", async () => {
      openaiFake.setScenario("slow", { delayMs: 200, tokens: 20 });
      const controller = new AbortController();
      const pending = client.chat.completions.create({ model: "gpt", messages: [{ role: "user", content: "hi" }] }, { signal: controller.signal });
      await openaiFake.waitForRequest(0);
      controller.abort();
      expect(await thrown(pending)).toBeInstanceOf(Error);
      const rec = await openaiFake.settled(0);
      expect(rec.abortedAt).toBeDefined();
      expect(rec.finishedAt).toBeUndefined();
    });
  });

  describe("through the Anthropic fake: an OpenAI SDK reaches an Anthropic model", () => {
    it("unary", async () => {
      const res = await client.chat.completions.create({ model: "claude", messages: [{ role: "system", content: "brief" }, { role: "user", content: "hello claude" }], max_tokens: 50 });
      expect(res.choices[0]!.message.content).toBe("hello claude");
      expect(res.choices[0]!.finish_reason).toBe("stop");
      const body = anthropicFake.requests[0]!.body as Record<string, unknown>;
      expect(body).toMatchObject({ model: "claude-sonnet-4-5", system: [{ type: "text", text: "brief" }], max_tokens: 50 });
      expect(anthropicFake.requests[0]!.headers["x-api-key"]).toBe(UPSTREAM_KEY);
    });

    it("streaming with usage", async () => {
      anthropicFake.setScenario("text");
      const chunks = await collect(await client.chat.completions.create({ model: "claude", messages: [{ role: "user", content: "hi" }], stream: true, stream_options: { include_usage: true } }));
      expect(textOf(chunks)).toBe(ANTHROPIC_FIXTURE_TEXT);
      expect(chunks.at(-1)!.usage).toEqual(usage(12, 6));
    });

    it("prompt caching: cache reads are cached_tokens; cache writes count in prompt_tokens only (the API has no field for them)", async () => {
      // test/fixtures/anthropic/cache-usage.*: 12 uncached input tokens, 1500 written to the cache, 2048 read from it.
      anthropicFake.setScenario("cache-usage");
      const res = await client.chat.completions.create({ model: "claude", messages: [{ role: "user", content: "hi" }] });
      expect(res.usage).toEqual(usage(12 + 1500 + 2048, 6, 2048));
      const chunks = await collect(await client.chat.completions.create({ model: "claude", messages: [{ role: "user", content: "hi" }], stream: true, stream_options: { include_usage: true } }));
      expect(textOf(chunks)).toBe(ANTHROPIC_FIXTURE_TEXT);
      expect(chunks.at(-1)!.usage).toEqual(usage(12 + 1500 + 2048, 6, 2048));
    });

    it("tool calls, streamed and joined by the SDK's stream helper", async () => {
      anthropicFake.setScenario("tool-calls");
      const final = await client.chat.completions
        .stream({ model: "claude", messages: [{ role: "user", content: "weather and time?" }], tools: [{ type: "function", function: { name: "get_weather" } }, { type: "function", function: { name: "get_time" } }] })
        .finalChatCompletion();
      const message = final.choices[0]!.message;
      expect(message.content).toBe("Let me check.");
      expect(message.tool_calls?.map((c) => c.type === "function" && [c.id, c.function.name, JSON.parse(c.function.arguments)])).toEqual([
        ["toolu_fake_weather", "get_weather", { city: "Paris", unit: "celsius" }],
        ["toolu_fake_time", "get_time", { tz: "Europe/Paris" }],
      ]);
      expect(final.choices[0]!.finish_reason).toBe("tool_calls");
    });
  });
});

describe("OpenAI-compatible API, auth on", () => {
  let app: App;

  beforeAll(async () => {
    app = await startInProcess(`
server: { maxMessageBytes: 4096 }
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

  const hi = { model: "mock-chat", messages: [{ role: "user" as const, content: "hi" }] };

  it("no key: 401 AuthenticationError", async () => {
    const err = await thrown(sdk(app, { apiKey: "x", defaultHeaders: { Authorization: null } }).chat.completions.create(hi));
    expect(err).toBeInstanceOf(AuthenticationError);
    expect((err as APIError).code).toBe("unauthenticated");
  });

  it("a wrong key: 401, and the key is not in the answer", async () => {
    const err = await thrown(sdk(app, { apiKey: "sk-wrong-key-123" }).chat.completions.create(hi));
    expect(err).toBeInstanceOf(AuthenticationError);
    expect(JSON.stringify((err as APIError).error)).not.toContain("sk-wrong");
  });

  it("a key for a model it may not use: 403 PermissionDeniedError", async () => {
    // Refused before the rate limit is charged.
    const err = await thrown(sdk(app, { apiKey: "sk-alpha-key" }).chat.completions.create({ ...hi, model: "private" }));
    expect(err).toBeInstanceOf(PermissionDeniedError);
    expect((err as APIError).code).toBe("model_not_allowed");
  });

  it("the right key is served (streams too) until its request rate is used up: 429 with Retry-After", async () => {
    const alpha = sdk(app, { apiKey: "sk-alpha-key" });
    expect((await alpha.chat.completions.create(hi)).choices[0]!.message.content).toBe("You said: hi");
    expect(textOf(await collect(await alpha.chat.completions.create({ ...hi, stream: true })))).toBe("You said: hi");
    const err = await thrown(alpha.chat.completions.create(hi));
    expect(err).toBeInstanceOf(RateLimitError);
    expect((err as RateLimitError).code).toBe("rate_limited");
    // 2 per minute: one request refills in 30 s.
    const seconds = Number((err as RateLimitError).headers?.get("retry-after"));
    expect(seconds).toBeGreaterThan(25);
    expect(seconds).toBeLessThanOrEqual(30);
  });

  it("GET /v1/models needs a key too", async () => {
    expect(await thrown(sdk(app, { apiKey: "sk-nope" }).models.list())).toBeInstanceOf(AuthenticationError);
    const ids: string[] = [];
    for await (const m of sdk(app, { apiKey: "sk-beta-key" }).models.list()) ids.push(m.id);
    expect(ids).toEqual(["mock-chat", "private"]);
  });

  it("a body over server.maxMessageBytes is a 413", async () => {
    const res = await fetch(`http://${app.httpAddress}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: "Bearer sk-beta-key", "content-type": "application/json" },
      body: JSON.stringify({ ...hi, messages: [{ role: "user", content: "x".repeat(5000) }] }),
    });
    expect(res.status).toBe(413);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("request_too_large");
  });

  it("HTTP/1.1 refused before its body was read: the answer closes the connection instead of draining an unbounded body", async () => {
    // A compressed body announced as 100 MB, of which a few bytes are sent: refused at once (415).
    const socket = new Socket();
    const [host, port] = [app.httpAddress.slice(0, app.httpAddress.lastIndexOf(":")), Number(app.httpAddress.slice(app.httpAddress.lastIndexOf(":") + 1))];
    await new Promise<void>((resolve, reject) => socket.once("error", reject).connect(port, host, resolve));
    let received = "";
    socket.on("data", (d: Buffer) => (received += d.toString("latin1")));
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
    socket.write(
      "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-beta-key\r\ncontent-type: application/json\r\n" +
        "content-encoding: gzip\r\ncontent-length: 100000000\r\n\r\nabc",
    );
    await closed;
    expect(received).toMatch(/^HTTP\/1\.1 415 /);
    expect(received.toLowerCase()).toContain("connection: close");
    expect(received).toContain("unsupported_content_encoding");
  });
});

describe("OpenAI-compatible API over TLS, with a client certificate as the identity", () => {
  const dir = mkdtempSync(join(tmpdir(), "infergate-openai-tls-"));
  const pem = (n: string) => readFileSync(join(dir, n));
  let app: App;

  beforeAll(async () => {
    const ssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
    ssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=test-ca", "-keyout", "ca.key", "-out", "ca.pem");
    writeFileSync(join(dir, "san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
    for (const who of ["server", "client"]) {
      ssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", `/CN=${who}`, "-keyout", `${who}.key`, "-out", `${who}.csr`);
      ssl("x509", "-req", "-in", `${who}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1", "-extfile", "san.ext", "-out", `${who}.pem`);
    }
    app = await startInProcess(`
upstreams: [{ name: mock, kind: mock }]
models: [{ name: mock-chat, upstream: mock }, { name: other, upstream: mock }]
server:
  tls: { certFile: ${join(dir, "server.pem")}, keyFile: ${join(dir, "server.key")}, clientCaFile: ${join(dir, "ca.pem")} }
auth:
  enabled: true
  clientCertificates: [{ commonName: client, name: cert-team, models: [mock-chat] }]
`);
  });

  afterAll(async () => {
    await app?.shutdown();
    rmSync(dir, { recursive: true, force: true });
  });

  it("the SDK over HTTPS (HTTP/1.1 by ALPN) is served as the certificate's identity, streams included", async () => {
    const dispatcher = new Agent({ connect: { ca: pem("ca.pem"), cert: pem("client.pem"), key: pem("client.key") } });
    try {
      const client = new OpenAI({
        baseURL: `https://${app.httpAddress}/v1`,
        apiKey: "unused",
        // No API key on the wire: the verified client certificate is the identity.
        defaultHeaders: { Authorization: null },
        maxRetries: 0,
        fetch: ((url: string, init: object) => undiciFetch(url, { ...init, dispatcher })) as unknown as typeof fetch,
      });
      const msg = [{ role: "user" as const, content: "over tls" }];
      expect((await client.chat.completions.create({ model: "mock-chat", messages: msg })).choices[0]!.message.content).toBe("You said: over tls");
      expect(textOf(await collect(await client.chat.completions.create({ model: "mock-chat", messages: msg, stream: true })))).toBe("You said: over tls");
      expect(await thrown(client.chat.completions.create({ model: "other", messages: msg }))).toBeInstanceOf(PermissionDeniedError);
    } finally {
      await dispatcher.close();
    }
  });

  it("HTTP/2 over TLS", async () => {
    const session = http2.connect(`https://${app.httpAddress}`, { ca: pem("ca.pem"), cert: pem("client.pem"), key: pem("client.key") });
    try {
      const req = session.request({ ":method": "POST", ":path": "/v1/chat/completions", "content-type": "application/json" });
      req.end(JSON.stringify({ model: "mock-chat", messages: [{ role: "user", content: "h2 tls" }] }));
      let status = 0;
      req.on("response", (h) => (status = Number(h[":status"])));
      let body = "";
      req.setEncoding("utf8");
      for await (const chunk of req) body += chunk as string;
      expect(status).toBe(200);
      expect((JSON.parse(body) as { choices: { message: { content: string } }[] }).choices[0]!.message.content).toBe("You said: h2 tls");
    } finally {
      session.close();
    }
  });
});

describe("OpenAI-compatible API at shutdown", () => {
  it("a stream still running when the grace period ends fails with shutting_down, never a clean [DONE]", async () => {
    const app = await startInProcess(`
server: { shutdownGraceMs: 200 }
upstreams: [{ name: mock, kind: mock, options: { tokenDelayMs: 100 } }]
models: [{ name: mock-chat, upstream: mock }]
`);
    const client = sdk(app);
    const stream = await client.chat.completions.create({ model: "mock-chat", messages: [{ role: "user", content: "a b c d e f g h i j k l m n o p" }], stream: true });
    const seen: string[] = [];
    let stopping: Promise<void> | undefined;
    const err = await thrown(
      (async () => {
        for await (const c of stream) {
          seen.push(c.choices[0]?.delta.content ?? "");
          stopping ??= app.shutdown();
        }
      })(),
    );
    await stopping;
    expect(err).toBeInstanceOf(APIError);
    expect((err as APIError).code).toBe("shutting_down");
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.join("")).not.toContain(" p");
    // After the stop the listener is gone.
    expect(await thrown(client.chat.completions.create({ model: "mock-chat", messages: [{ role: "user", content: "hi" }] }))).toBeInstanceOf(Error);
  });
});

describe("OpenAI-compatible API, a client that stops reading a stream", () => {
  it("does not hold the call past its deadline: the call ends, and the body ends with deadline_exceeded", async () => {
    const app = await startInProcess(`
server: { maxMessageBytes: 33554432 }
upstreams: [{ name: mock, kind: mock }]
models: [{ name: mock-chat, upstream: mock, cache: { policy: "off" } }]
`);
    const socket = new Socket();
    try {
      // 100 words of 100 kB: far more than the socket buffers hold while nobody reads.
      const word = "x".repeat(100_000);
      const body = JSON.stringify({ model: "mock-chat", stream: true, messages: [{ role: "user", content: Array(100).fill(word).join(" ") }] });
      const [host, port] = app.httpAddress.split(":");
      await new Promise<void>((resolve, reject) => socket.once("error", reject).connect(Number(port), host!, resolve));
      socket.pause();
      socket.write(
        `POST /v1/chat/completions HTTP/1.1\r\nhost: ${app.httpAddress}\r\ncontent-type: application/json\r\n` +
          `infergate-timeout-ms: 1000\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
      );
      await new Promise((r) => setTimeout(r, 800));
      expect(app.gateway.inFlight()).toBe(1);
      // The deadline passes while the writes wait for the client: the call (its upstream request
      // and its concurrency slot) ends all the same.
      const until = Date.now() + 3000;
      while (app.gateway.inFlight() > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
      expect(app.gateway.inFlight()).toBe(0);
      // Read now: what was buffered, then the error event, the end of the body, and no [DONE].
      let received = "";
      socket.setEncoding("latin1");
      socket.on("data", (d: string) => (received = received.length > 4096 ? received.slice(-4096) + d : received + d));
      socket.resume();
      const end = Date.now() + 10_000;
      while (!received.endsWith("\r\n0\r\n\r\n") && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
      expect(received.endsWith("\r\n0\r\n\r\n")).toBe(true);
      expect(received).toContain('"code":"deadline_exceeded"');
      expect(received).not.toContain("[DONE]");
    } finally {
      socket.destroy();
      await app.shutdown();
    }
  }, 30_000);
});
