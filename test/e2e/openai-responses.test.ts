/**
 * OpenAI's Responses API end to end (issue 23), with the official `openai` npm package as the
 * client: `client.responses.create`, `.stream()`, `retrieve`, `delete` → infergate's HTTP listener
 * (`/v1/responses`) → the mock model and the OpenAI fake (which shows the whole history a
 * continued response sends upstream). Golden SSE transcripts (test/fixtures/responses/) are
 * compared event by event, and every event is checked against the public event schema (the
 * fields each type must have).
 */
import { readFileSync } from "node:fs";
import { connect } from "node:http2";
import { setTimeout as sleep } from "node:timers/promises";
import OpenAI, { APIError, AuthenticationError, BadRequestError, NotFoundError, RateLimitError } from "openai";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { hashKey } from "../../src/security/api-keys.js";
import type { App } from "../../src/server/app.js";
import { createOpenAIFake, type OpenAIFake } from "../fakes/openai-fake.js";
import { openaiSdk, rejection } from "../helpers/openai-sdk.js";
import { startInProcess } from "../helpers/servers.js";

const keys = { alpha: "sk-resp-alpha", beta: "sk-resp-beta", gamma: "sk-resp-gamma" };
const TTL_MS = 400;

type Event = { event: string; data: Record<string, unknown> };

/** The required fields of each event type of the public API's stream (besides type and sequence_number). */
const eventSchema: Record<string, string[]> = {
  "response.created": ["response"],
  "response.in_progress": ["response"],
  "response.completed": ["response"],
  "response.incomplete": ["response"],
  "response.failed": ["response"],
  "response.output_item.added": ["output_index", "item"],
  "response.output_item.done": ["output_index", "item"],
  "response.content_part.added": ["item_id", "output_index", "content_index", "part"],
  "response.content_part.done": ["item_id", "output_index", "content_index", "part"],
  "response.output_text.delta": ["item_id", "output_index", "content_index", "delta", "logprobs"],
  "response.output_text.done": ["item_id", "output_index", "content_index", "text", "logprobs"],
  "response.function_call_arguments.delta": ["item_id", "output_index", "delta"],
  "response.function_call_arguments.done": ["item_id", "output_index", "name", "arguments"],
  error: ["code", "message", "param"],
};

/** Fields of a response object, as the API's Response type has them. */
const responseFields = [
  "id", "object", "created_at", "status", "error", "incomplete_details", "instructions", "max_output_tokens", "metadata", "model", "output",
  "parallel_tool_calls", "previous_response_id", "reasoning", "store", "temperature", "text", "tool_choice", "tools", "top_p", "truncation", "usage",
];

/** Checks every event against the schema: its SSE name is its type, sequence numbers count from 0. */
function checkSchema(events: Event[]): void {
  events.forEach((e, i) => {
    expect(e.data["type"]).toBe(e.event);
    expect(e.data["sequence_number"]).toBe(i);
    const required = eventSchema[e.event];
    expect(required, `event ${e.event}`).toBeDefined();
    expect(Object.keys(e.data).sort()).toEqual(["type", "sequence_number", ...required!].sort());
    if (e.data["response"] !== undefined) expect(Object.keys(e.data["response"] as object).sort()).toEqual([...responseFields].sort());
  });
}

/** A raw streamed POST: status and the events, parsed. */
async function rawStream(app: App, body: object, key = keys.alpha): Promise<{ status: number; text: string; events: Event[] }> {
  const res = await fetch(`http://${app.httpAddress}/v1/responses`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
    body: JSON.stringify({ ...body, stream: true }),
  });
  const text = await res.text();
  const events = text
    .split("\n\n")
    .filter((b) => b !== "")
    .map((b) => {
      const [ev, data] = b.split("\n");
      return { event: ev!.replace(/^event: /, ""), data: JSON.parse(data!.replace(/^data: /, "")) as Record<string, unknown> };
    });
  return { status: res.status, text, events };
}

/** A transcript with its random parts (ids, times) replaced, as the golden files hold it. */
function normalized(text: string): string {
  return text
    .replace(/resp_[0-9a-f]{48}/g, "resp_ID")
    .replace(/msg_[0-9a-f]{48}/g, "msg_ID")
    .replace(/fc_[0-9a-f]{48}/g, "fc_ID")
    .replace(/"created_at":\d+/g, '"created_at":0');
}

const golden = (name: string) => readFileSync(new URL(`../fixtures/responses/${name}`, import.meta.url), "utf8");

/** The response object's `store` (the wire has it; the SDK's type does not). */
const storeOf = (r: object) => (r as { store?: unknown }).store;

/** An object nested `levels` deep ({"a": {"a": … {}}}). */
function nested(levels: number): Record<string, unknown> {
  let v: Record<string, unknown> = {};
  for (let i = 1; i < levels; i++) v = { a: v };
  return v;
}

describe("Responses API", () => {
  let app: App;
  let fake: OpenAIFake;
  let alpha: OpenAI;
  let beta: OpenAI;

  beforeAll(async () => {
    fake = await createOpenAIFake();
    app = await startInProcess(`
upstreams:
  - name: mock
    kind: mock
  - name: gpt-up
    kind: openai
    resilience: { retry: { maxAttempts: 1 }, breaker: { enabled: false } }
    endpoints: ["${fake.baseUrl}"]
    apiKey: "sk-upstream"
models:
  - { name: mock-chat, upstream: mock, capabilities: [chat, generate] }
  - { name: gpt, upstream: gpt-up, upstreamModel: gpt-4o-mini, cache: { policy: "off" } }
  - { name: gpt-cached, upstream: gpt-up, upstreamModel: gpt-4o-mini, cache: { policy: always } }
auth:
  enabled: true
  keys:
    - { name: alpha, sha256: ${hashKey(keys.alpha)} }
    - { name: beta, sha256: ${hashKey(keys.beta)}, models: ["gpt"] }
    - { name: gamma, sha256: ${hashKey(keys.gamma)}, limits: { requestsPerMinute: 3 } }
sessions: { ttlMs: ${TTL_MS * 1000} }
`);
    alpha = openaiSdk(app, { apiKey: keys.alpha });
    beta = openaiSdk(app, { apiKey: keys.beta });
  });

  afterAll(async () => {
    await app?.shutdown();
    await fake?.close();
  });

  beforeEach(() => fake.reset());

  it("unary: a message with output_text, status completed, usage with its details", async () => {
    const r = await alpha.responses.create({ model: "mock-chat", input: "hello there", metadata: { app: "t" } });
    expect(r).toMatchObject({
      object: "response",
      status: "completed",
      model: "mock-chat",
      error: null,
      incomplete_details: null,
      metadata: { app: "t" },
      store: true,
      previous_response_id: null,
      output: [{ type: "message", role: "assistant", status: "completed", content: [{ type: "output_text", text: "You said: hello there", annotations: [] }] }],
      usage: { input_tokens: 2, input_tokens_details: { cached_tokens: 0 }, output_tokens: 4, output_tokens_details: { reasoning_tokens: 0 }, total_tokens: 6 },
    });
    expect(r.id).toMatch(/^resp_/);
    expect(r.output_text).toBe("You said: hello there");
  });

  it("max_output_tokens cuts the answer: status incomplete, reason max_output_tokens", async () => {
    const r = await alpha.responses.create({ model: "mock-chat", input: "one two three four", max_output_tokens: 2 });
    expect(r.status).toBe("incomplete");
    expect(r.incomplete_details).toEqual({ reason: "max_output_tokens" });
    expect(r.output_text).toBe("You said:");
  });

  it("instructions, items and text.format reach the model as a ChatRequest (the OpenAI fake sees them)", async () => {
    await alpha.responses.create({
      model: "gpt",
      instructions: "be brief",
      input: [
        { role: "user", content: [{ type: "input_text", text: "look" }, { type: "input_image", image_url: "https://example.com/a.png", detail: "low" }] },
      ],
      text: { format: { type: "json_schema", name: "answer", schema: { type: "object" }, strict: true } },
      temperature: 0.5,
      top_p: 0.9,
      max_output_tokens: 50,
      tools: [{ type: "function", name: "lookup", parameters: { type: "object" }, strict: false }],
      tool_choice: { type: "function", name: "lookup" },
      parallel_tool_calls: false,
    });
    expect(fake.requests[0]!.body).toMatchObject({
      model: "gpt-4o-mini",
      messages: [
        { role: "system", content: "be brief" },
        { role: "user", content: [{ type: "text", text: "look" }, { type: "image_url", image_url: { url: "https://example.com/a.png", detail: "low" } }] },
      ],
      response_format: { type: "json_schema", json_schema: { name: "answer", schema: { type: "object" }, strict: true } },
      temperature: 0.5,
      top_p: 0.9,
      tools: [{ type: "function", function: { name: "lookup", parameters: { type: "object" }, strict: false } }],
      tool_choice: { type: "function", function: { name: "lookup" } },
      parallel_tool_calls: false,
    });
  });

  it("an image as a data: URL reaches the model as bytes with its MIME type (the OpenAI fake gets it back as a data: URL)", async () => {
    const png = "iVBORw0KGgo=";
    await alpha.responses.create({
      model: "gpt",
      input: [{ role: "user", content: [{ type: "input_image", image_url: `data:image/png;base64,${png}`, detail: "high" }] }],
    });
    expect(fake.requests[0]!.body).toMatchObject({
      messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: `data:image/png;base64,${png}`, detail: "high" } }] }],
    });
  });

  it("streaming text through .stream(): the SDK assembles the final response", async () => {
    const stream = alpha.responses.stream({ model: "mock-chat", input: "stream me" });
    const deltas: string[] = [];
    stream.on("response.output_text.delta", (e) => deltas.push(e.delta));
    let completed: OpenAI.Responses.Response | undefined;
    stream.on("response.completed", (e) => (completed = e.response));
    const final = await stream.finalResponse();
    expect(deltas.join("")).toBe("You said: stream me");
    expect(final.status).toBe("completed");
    expect(final.id).toBe(completed?.id);
    // The streamed response was stored: retrieve gives the response of response.completed, field
    // for field. (Not `final`: the SDK adds `parsed: null` to each output_text of the response it
    // assembles, in the openai package's ResponsesParser, maybeParseResponse; no such field is on the wire.)
    expect(await alpha.responses.retrieve(final.id)).toMatchObject(completed!);
    expect(final.output[0]).toMatchObject(completed!.output[0]!);
  });

  it("streaming function calls: items with call_id, name and the arguments joined", async () => {
    const stream = alpha.responses.stream({ model: "mock-chat", input: "use lookup please", tools: [{ type: "function", name: "lookup", parameters: { type: "object" }, strict: null }] });
    const final = await stream.finalResponse();
    expect(final.output).toMatchObject([
      { id: expect.stringMatching(/^fc_/), type: "function_call", status: "completed", call_id: expect.stringMatching(/^call_/), name: "lookup", arguments: '{"text":"use lookup please"}' },
    ]);
  });

  it("streamed parallel function calls from the OpenAI fake: two items, in order", async () => {
    fake.setScenario("tool-calls");
    const final = await alpha.responses.stream({ model: "gpt", input: "weather?", tools: [{ type: "function", name: "get_weather", parameters: null, strict: null }] }).finalResponse();
    expect(final.output.map((o) => (o.type === "function_call" ? [o.call_id, o.name, JSON.parse(o.arguments)] : o.type))).toEqual([
      ["call_fake_weather", "get_weather", { city: "Paris", unit: "celsius" }],
      ["call_fake_time", "get_time", { tz: "Europe/Paris" }],
    ]);
  });

  it("a multi-turn tool loop through previous_response_id on the mock", async () => {
    const tools: OpenAI.Responses.Tool[] = [{ type: "function", name: "lookup", parameters: { type: "object" }, strict: null }];
    const first = await alpha.responses.create({ model: "mock-chat", input: "please lookup cats", tools });
    const call = first.output[0] as OpenAI.Responses.ResponseFunctionToolCall;
    expect(call.type).toBe("function_call");
    const second = await alpha.responses.create({
      model: "mock-chat",
      previous_response_id: first.id,
      input: [{ type: "function_call_output", call_id: call.call_id, output: "cats are great" }],
      tools,
    });
    // The mock answers the last user text, and counts every message's words: the history was there.
    expect(second.output_text).toBe("You said: please lookup cats");
    expect(second.previous_response_id).toBe(first.id);
    // 3 words (user) + 1 + 3 (the call and its arguments' words) + 3 (the tool result): the mock's count.
    expect(second.usage?.input_tokens).toBe(3 + 1 + 3 + 3);
    const third = await alpha.responses.create({ model: "mock-chat", previous_response_id: second.id, input: "and dogs" });
    expect(third.output_text).toBe("You said: and dogs");
    expect(third.usage!.input_tokens).toBeGreaterThan(second.usage!.input_tokens);
  });

  it("a multi-turn tool loop against the OpenAI fake: the fake sees the whole history each turn", async () => {
    fake.setScenario("tool-calls");
    const first = await alpha.responses.create({ model: "gpt", instructions: "sys", input: "weather in Paris?", tools: [{ type: "function", name: "get_weather", parameters: null, strict: null }] });
    const calls = first.output as OpenAI.Responses.ResponseFunctionToolCall[];
    expect(calls.map((c) => c.call_id)).toEqual(["call_fake_weather", "call_fake_time"]);
    fake.setScenario("echo");
    const second = await alpha.responses.create({
      model: "gpt",
      previous_response_id: first.id,
      input: calls.map((c) => ({ type: "function_call_output" as const, call_id: c.call_id, output: `result of ${c.name}` })),
    });
    expect(second.status).toBe("completed");
    const third = await alpha.responses.create({ model: "gpt", previous_response_id: second.id, input: "thanks" });
    expect(third.output_text).toBe("thanks");
    // Instructions are not carried over (the API's rule); the rest of the conversation is.
    expect((fake.requests.at(-1)!.body as { messages: unknown[] }).messages).toEqual([
      { role: "user", content: "weather in Paris?" },
      {
        role: "assistant",
        content: null,
        tool_calls: [
          { id: "call_fake_weather", type: "function", function: { name: "get_weather", arguments: '{"city": "Paris", "unit": "celsius"}' } },
          { id: "call_fake_time", type: "function", function: { name: "get_time", arguments: '{"tz": "Europe/Paris"}' } },
        ],
      },
      { role: "tool", tool_call_id: "call_fake_weather", content: "result of get_weather" },
      { role: "tool", tool_call_id: "call_fake_time", content: "result of get_time" },
      { role: "assistant", content: second.output_text },
      { role: "user", content: "thanks" },
    ]);
  });

  it("two continuations of one response are two branches (the first is left as it was)", async () => {
    const root = await alpha.responses.create({ model: "mock-chat", input: "root" });
    const a = await alpha.responses.create({ model: "mock-chat", previous_response_id: root.id, input: "branch a" });
    const b = await alpha.responses.create({ model: "mock-chat", previous_response_id: root.id, input: "branch b" });
    expect(b.usage!.input_tokens).toBe(a.usage!.input_tokens);
  });

  it("retrieve and delete for the key that made it; another key gets 404, as a missing id", async () => {
    const r = await alpha.responses.create({ model: "mock-chat", input: "mine" });
    expect((await alpha.responses.retrieve(r.id)).output_text).toBe("You said: mine");
    const other = await rejection(beta.responses.retrieve(r.id));
    expect(other).toBeInstanceOf(NotFoundError);
    expect((other as APIError).error).toMatchObject({ type: "invalid_request_error", code: "response_not_found" });
    expect(await rejection(beta.responses.delete(r.id))).toBeInstanceOf(NotFoundError);
    const cont = await rejection(beta.responses.create({ model: "gpt", previous_response_id: r.id, input: "steal" }));
    expect(cont).toBeInstanceOf(NotFoundError);
    expect((cont as APIError).error).toMatchObject({ param: "previous_response_id", code: "previous_response_not_found" });
    expect(fake.requests).toHaveLength(0);
    await alpha.responses.delete(r.id);
    expect(await rejection(alpha.responses.retrieve(r.id))).toBeInstanceOf(NotFoundError);
    expect(await rejection(alpha.responses.delete(r.id))).toBeInstanceOf(NotFoundError);
    expect(await rejection(alpha.responses.retrieve("resp_nope"))).toBeInstanceOf(NotFoundError);
  });

  it("a bad key is refused (401) before any store is read", async () => {
    const bad = openaiSdk(app, { apiKey: "sk-wrong" });
    expect(await rejection(bad.responses.retrieve("resp_x"))).toBeInstanceOf(AuthenticationError);
    expect(await rejection(bad.responses.create({ model: "mock-chat", input: "x" }))).toBeInstanceOf(AuthenticationError);
    // A continuation too: the key is checked before the previous response is looked up (a missing
    // one would otherwise answer 404, and an unauthenticated caller would reach the store).
    expect(await rejection(bad.responses.create({ model: "mock-chat", previous_response_id: "resp_nope", input: "x" }))).toBeInstanceOf(AuthenticationError);
  });

  it("a method other than GET or DELETE on a response is 405, repeating at most a bounded part of it", async () => {
    // HTTP/2 lets a client send any token as :method; the refusal repeats only its start.
    const session = connect(`http://${app.httpAddress}`);
    try {
      const long = "X".repeat(30_000);
      const req = session.request({ ":method": long, ":path": "/v1/responses/resp_abc", authorization: `Bearer ${keys.alpha}` });
      let body = "";
      req.setEncoding("utf8").on("data", (d: string) => (body += d));
      const headers = await new Promise<Record<string, unknown>>((resolve, reject) => req.once("response", resolve).once("error", reject));
      await new Promise((resolve) => req.once("close", resolve).end());
      expect(headers[":status"]).toBe(405);
      expect(headers["allow"]).toBe("GET, DELETE");
      const error = (JSON.parse(body) as { error: { message: string; code: string } }).error;
      expect(error.code).toBe("method_not_allowed");
      expect(error.message).toMatch(/^X+… \(30000 chars\) is not allowed here/);
      expect(body.length).toBeLessThan(1000);
    } finally {
      session.close();
    }
  });

  it("a continuation is one request of the key's rate limit, as any create", async () => {
    const gamma = openaiSdk(app, { apiKey: keys.gamma, maxRetries: 0 });
    const first = await gamma.responses.create({ model: "mock-chat", input: "one" });
    const second = await gamma.responses.create({ model: "mock-chat", previous_response_id: first.id, input: "two" });
    expect(second.previous_response_id).toBe(first.id);
    await gamma.responses.create({ model: "mock-chat", input: "three" });
    // The limit is 3 a minute: the fourth request is refused.
    expect(await rejection(gamma.responses.create({ model: "mock-chat", input: "four" }))).toBeInstanceOf(RateLimitError);
  });

  it("store: false keeps nothing", async () => {
    const r = await alpha.responses.create({ model: "mock-chat", input: "forget me", store: false });
    expect((r as unknown as { store: boolean }).store).toBe(false);
    expect(await rejection(alpha.responses.retrieve(r.id))).toBeInstanceOf(NotFoundError);
    expect(await rejection(alpha.responses.create({ model: "mock-chat", previous_response_id: r.id, input: "x" }))).toBeInstanceOf(NotFoundError);
  });

  it("the cache key covers the history: the same input after different histories is answered anew", async () => {
    // gpt-cached caches every answer (policy always): what reaches the OpenAI fake is a miss.
    const h1 = await alpha.responses.create({ model: "gpt-cached", input: "history one" });
    const h2 = await alpha.responses.create({ model: "gpt-cached", input: "history two words" });
    fake.reset();
    const a = await alpha.responses.create({ model: "gpt-cached", previous_response_id: h1.id, input: "same" }).withResponse();
    const b = await alpha.responses.create({ model: "gpt-cached", previous_response_id: h2.id, input: "same" }).withResponse();
    expect([a.response.headers.get("infergate-cache"), b.response.headers.get("infergate-cache")]).toEqual(["miss", "miss"]);
    // Two upstream requests, each with its own history in front of the same input.
    expect(fake.requests.map((r) => (r.body as { messages: { content: unknown }[] }).messages.map((m) => m.content))).toEqual([
      ["history one", "history one", "same"],
      ["history two words", "history two words", "same"],
    ]);
    const again = await alpha.responses.create({ model: "gpt-cached", previous_response_id: h1.id, input: "same" }).withResponse();
    expect(again.response.headers.get("infergate-cache")).toBe("hit");
    expect(fake.requests).toHaveLength(2);
    expect(again.data.output_text).toBe(a.data.output_text);
    expect(again.data.usage!.input_tokens).toBe(a.data.usage!.input_tokens);
    // A cached answer is still a new response of its own, continued like any other.
    expect(again.data.id).not.toBe(a.data.id);
    expect(again.data.previous_response_id).toBe(h1.id);
    expect((await alpha.responses.retrieve(again.data.id)).output_text).toBe("same");
  });

  describe("refused fields: 400 naming the field", () => {
    const cases: [string, Record<string, unknown>, string][] = [
      ["a built-in tool", { tools: [{ type: "web_search_preview" }] }, "tools[0].type"],
      ["a file input", { input: [{ role: "user", content: [{ type: "input_file", file_id: "file-1" }] }] }, "input[0].content[0].type"],
      ["an image by file id", { input: [{ role: "user", content: [{ type: "input_image", file_id: "file-1", detail: "auto" }] }] }, "input[0].content[0].file_id"],
      ["an item reference", { input: [{ type: "item_reference", id: "x" }] }, "input[0].type"],
      ["a reasoning item", { input: [{ type: "reasoning", id: "rs_1", summary: [] }] }, "input[0].type"],
      ["a built-in tool_choice", { tool_choice: { type: "web_search_preview" } }, "tool_choice.type"],
      ["text.verbosity", { text: { verbosity: "low" } }, "text.verbosity"],
      ["an unknown text.format", { text: { format: { type: "grammar" } } }, "text.format.type"],
      ["reasoning settings", { reasoning: { effort: "high" } }, "reasoning"],
      ["include", { include: ["reasoning.encrypted_content"] }, "include"],
      ["background", { background: true }, "background"],
      ["truncation auto", { truncation: "auto" }, "truncation"],
      ["conversation", { conversation: "conv_1" }, "conversation"],
      ["a prompt template", { prompt: { id: "pmpt_1" } }, "prompt"],
      ["max_tool_calls", { max_tool_calls: 2 }, "max_tool_calls"],
      ["prompt_cache_key", { prompt_cache_key: "k" }, "prompt_cache_key"],
      ["max_output_tokens 0", { max_output_tokens: 0 }, "max_output_tokens"],
      ["a data: URL that is no image", { input: [{ role: "user", content: [{ type: "input_image", image_url: "data:text/plain;base64,aGk=", detail: "auto" }] }] }, "input[0].content[0].image_url"],
      ["an unknown image detail", { input: [{ role: "user", content: [{ type: "input_image", image_url: "https://example.com/a.png", detail: "max" }] }] }, "input[0].content[0].detail"],
      ["stream_options without stream", { stream_options: { include_obfuscation: false } }, "stream_options"],
      // Refused by the gateway's own checks (in ChatRequest terms), named in the request's.
      ["no input at all", { input: undefined }, "input"],
      ["an empty content list", { input: [{ role: "user", content: [] }] }, "input[0].content"],
      ["an empty content list after instructions and another item", { instructions: "be brief", input: [{ role: "user", content: "a" }, { role: "user", content: [] }] }, "input[1].content"],
      ["an empty call_id", { input: [{ type: "function_call", call_id: "", name: "f", arguments: "{}" }] }, "input[0].call_id"],
      ["an empty call_id of a second merged call", { input: [{ type: "function_call", call_id: "c1", name: "f", arguments: "{}" }, { type: "function_call", call_id: "", name: "f", arguments: "{}" }] }, "input[1].call_id"],
      ["a bad text.format name", { text: { format: { type: "json_schema", name: "bad name!", schema: { type: "object" } } } }, "text.format.name"],
      ["a tool_choice naming no tool", { tools: [{ type: "function", name: "f", parameters: {}, strict: false }], tool_choice: { type: "function", name: "g" } }, "tool_choice.name"],
      // Nested past 64 levels (a stack overflow where the response repeats them, before the check).
      ["tool parameters nested 1,000 levels deep", { tools: [{ type: "function", name: "f", parameters: nested(1000) }] }, "tools[0].parameters"],
      ["a text.format schema nested 65 levels deep", { text: { format: { type: "json_schema", name: "s", schema: nested(64) } } }, "text.format"],
    ];
    it.each(cases)("%s", async (_what, fields, param) => {
      const err = await rejection(alpha.responses.create({ model: "mock-chat", input: "x", ...fields } as OpenAI.Responses.ResponseCreateParamsNonStreaming));
      expect(err).toBeInstanceOf(BadRequestError);
      expect((err as APIError).error).toMatchObject({ type: "invalid_request_error", param, code: "invalid_argument" });
      expect((err as APIError).message).toContain(param);
    });

    it("the built-in tool is named in the message", async () => {
      const err = await rejection(alpha.responses.create({ model: "mock-chat", input: "x", tools: [{ type: "web_search_preview" }] }));
      expect((err as APIError).message).toContain('built-in tool "web_search_preview"');
    });

    it("a schema nested 64 levels deep is served, and repeated in the response", async () => {
      const r = await alpha.responses.create({ model: "mock-chat", input: "x", tools: [{ type: "function", name: "f", parameters: nested(63), strict: false }] });
      expect(r.status).toBe("completed");
      expect(r.tools[0]).toMatchObject({ name: "f", parameters: nested(63) });
    });

    it("accepted no-op values of fields infergate cannot carry", async () => {
      const r = await alpha.responses.create({ model: "mock-chat", input: "x", include: [], truncation: "disabled", background: false, service_tier: "auto", reasoning: null });
      expect(r.status).toBe("completed");
    });
  });

  describe("golden SSE transcripts (raw fetch)", () => {
    it("a text stream", async () => {
      const { status, text, events } = await rawStream(app, { model: "mock-chat", input: "hi there" });
      expect(status).toBe(200);
      checkSchema(events);
      expect(normalized(text)).toBe(golden("text.sse"));
    });

    it("a function-call stream", async () => {
      const { text, events } = await rawStream(app, {
        model: "mock-chat",
        input: "call lookup",
        tools: [{ type: "function", name: "lookup", parameters: { type: "object" } }],
      });
      checkSchema(events);
      expect(normalized(text).replace(/call_[0-9a-f]{12}/g, "call_ID")).toBe(golden("function-call.sse"));
    });

    it("a text answer then two calls from the OpenAI fake, with usage details", async () => {
      fake.setScenario("usage-details");
      const { text, events } = await rawStream(app, { model: "gpt", input: "hi" });
      checkSchema(events);
      expect(normalized(text)).toBe(golden("usage-details.sse"));
    });

    it("a failure after the stream started: error, then response.failed, and nothing is stored", async () => {
      fake.setScenario("mid-stream-error");
      const { status, text, events } = await rawStream(app, { model: "gpt", input: "hi" });
      expect(status).toBe(200);
      checkSchema(events);
      expect(normalized(text)).toBe(golden("mid-stream-error.sse"));
      const id = (events[0]!.data["response"] as { id: string }).id;
      expect(await rejection(alpha.responses.retrieve(id))).toBeInstanceOf(NotFoundError);
    });
  });

  it("a failure before the stream started is an HTTP error", async () => {
    fake.setScenario("server-error");
    const err = await rejection(alpha.responses.stream({ model: "gpt", input: "hi" }).finalResponse());
    expect(err).toBeInstanceOf(APIError);
    expect((err as APIError).status).toBeGreaterThanOrEqual(500);
  });

  it("a stored response expires sessions.ttlMs after its last use: then 404", async () => {
    const short = await startInProcess(`
upstreams: [{ name: mock, kind: mock }]
models: [{ name: mock-chat, upstream: mock }]
sessions: { ttlMs: ${TTL_MS} }
`);
    try {
      const client = openaiSdk(short);
      const r = await client.responses.create({ model: "mock-chat", input: "short lived" });
      expect((await client.responses.retrieve(r.id)).id).toBe(r.id);
      await sleep(TTL_MS * 3);
      const err = await rejection(client.responses.retrieve(r.id));
      expect(err).toBeInstanceOf(NotFoundError);
      expect((err as APIError).error).toMatchObject({ message: expect.stringContaining("not found"), type: "invalid_request_error" });
      expect(await rejection(client.responses.create({ model: "mock-chat", previous_response_id: r.id, input: "x" }))).toBeInstanceOf(NotFoundError);
    } finally {
      await short.shutdown();
    }
  });

  it("a response object larger than sessions.maxBytes is not stored, and says so (store: false)", async () => {
    const small = await startInProcess(`
upstreams: [{ name: mock, kind: mock }]
models: [{ name: mock-chat, upstream: mock }]
sessions: { maxBytes: 4096 }
`);
    try {
      const client = openaiSdk(small);
      // The tools are repeated in the response object: a long description makes it larger than 4 KiB.
      const tools = [{ type: "function" as const, name: "f", description: "d".repeat(5000), parameters: { type: "object" }, strict: false }];
      const big = await client.responses.create({ model: "mock-chat", input: "big", tools });
      expect(big.status).toBe("completed");
      expect(storeOf(big)).toBe(false);
      expect(await rejection(client.responses.retrieve(big.id))).toBeInstanceOf(NotFoundError);
      const streamed = await client.responses.stream({ model: "mock-chat", input: "big", tools }).finalResponse();
      expect(storeOf(streamed)).toBe(false);
      expect(await rejection(client.responses.retrieve(streamed.id))).toBeInstanceOf(NotFoundError);
      // One that fits is kept as before.
      const fits = await client.responses.create({ model: "mock-chat", input: "small" });
      expect(storeOf(fits)).toBe(true);
      expect((await client.responses.retrieve(fits.id)).id).toBe(fits.id);
    } finally {
      await small.shutdown();
    }
  });
});
