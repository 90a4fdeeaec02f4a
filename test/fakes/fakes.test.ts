import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { ANTHROPIC_FIXTURE_TEXT, ANTHROPIC_MALFORMED_JSON, type AnthropicFake, createAnthropicFake } from "./anthropic-fake.js";
import { GARBAGE_BODY, loadFixture, splitSseEvents } from "./fake-server.js";
import { OPENAI_FIXTURE_TEXT, OPENAI_MALFORMED_JSON, type OpenAIFake, createOpenAIFake } from "./openai-fake.js";

/** A WHATWG-style SSE parser over a whole body: events with their `event` name and joined `data`. */
function parseSse(body: string): { event: string; data: string }[] {
  const out: { event: string; data: string }[] = [];
  let event = "";
  let data: string[] = [];
  for (const line of body.split(/\r\n|\r|\n/)) {
    if (line === "") {
      if (data.length > 0) {
        out.push({ event: event === "" ? "message" : event, data: data.join("\n") });
      }
      event = "";
      data = [];
      continue;
    }
    if (line.startsWith(":")) {
      continue;
    }
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) {
      value = value.slice(1);
    }
    if (field === "event") {
      event = value;
    } else if (field === "data") {
      data.push(value);
    }
  }
  return out;
}

/** Reads a response body chunk by chunk, as the client saw the reads. */
async function readChunks(res: Response): Promise<string[]> {
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  const chunks: string[] = [];
  for (;;) {
    const { done, value } = await reader.read();
    if (done) {
      return chunks;
    }
    chunks.push(decoder.decode(value, { stream: true }));
  }
}

describe("OpenAI fake", () => {
  let fake: OpenAIFake;
  beforeAll(async () => {
    fake = await createOpenAIFake();
  });
  afterAll(async () => {
    await fake.close();
  });
  beforeEach(() => {
    fake.reset();
  });

  const post = (body: unknown, headers: Record<string, string> = {}, path = "/v1/chat/completions", signal?: AbortSignal) =>
    fetch(`${fake.url}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer sk-test", ...headers },
      body: JSON.stringify(body),
      ...(signal === undefined ? {} : { signal }),
    });
  const chat = (text: unknown, extra: Record<string, unknown> = {}) => ({
    model: "gpt-4o-mini",
    messages: [
      { role: "system", content: "be brief" },
      { role: "user", content: text },
    ],
    ...extra,
  });

  it("streams the text fixture byte for byte in separate writes and records the request", async () => {
    const res = await post(chat("scenario:text", { stream: true }), { "x-fake-delay-ms": "10" });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/event-stream; charset=utf-8");
    const chunks = await readChunks(res);
    expect(chunks.join("")).toBe(loadFixture("openai", "text.sse"));
    expect(chunks.length).toBeGreaterThan(1);

    const events = parseSse(chunks.join(""));
    expect(events.at(-1)).toEqual({ event: "message", data: "[DONE]" });
    const parsed = events.slice(0, -1).map((e) => JSON.parse(e.data) as { object: string; choices: { delta: { content?: string }; finish_reason: string | null }[] });
    expect(parsed.every((c) => c.object === "chat.completion.chunk")).toBe(true);
    expect(parsed.map((c) => c.choices[0]!.delta.content ?? "").join("")).toBe(OPENAI_FIXTURE_TEXT);
    expect(parsed.at(-1)!.choices[0]!.finish_reason).toBe("stop");

    const rec = await fake.settled(0);
    expect(rec).toMatchObject({
      index: 0,
      method: "POST",
      path: "/v1/chat/completions",
      stream: true,
      scenario: "text",
      lastUserText: "scenario:text",
      status: 200,
      body: chat("scenario:text", { stream: true }),
    });
    expect(rec.headers.authorization).toBe("Bearer sk-test");
    expect(rec.finishedAt).toBeGreaterThanOrEqual(rec.receivedAt);
    expect(rec.abortedAt).toBeUndefined();
  });

  it("answers unary tool calls on the Azure route and records deployment, query and api-key", async () => {
    const res = await post(
      { messages: [{ role: "user", content: "scenario:tool-calls" }] },
      { "api-key": "azure-key" },
      "/openai/deployments/my-gpt/chat/completions?api-version=2024-10-21",
    );
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/json");
    const text = await res.text();
    expect(text).toBe(loadFixture("openai", "tool-calls.json"));
    const body = JSON.parse(text) as {
      object: string;
      choices: { message: { content: null; tool_calls: { id: string; type: string; function: { name: string; arguments: string } }[] }; finish_reason: string }[];
      usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
    };
    expect(body.object).toBe("chat.completion");
    expect(body.choices[0]!.finish_reason).toBe("tool_calls");
    expect(body.choices[0]!.message.tool_calls.map((t) => [t.id, t.function.name, JSON.parse(t.function.arguments)])).toEqual([
      ["call_fake_weather", "get_weather", { city: "Paris", unit: "celsius" }],
      ["call_fake_time", "get_time", { tz: "Europe/Paris" }],
    ]);
    const rec = await fake.settled(0);
    expect(rec).toMatchObject({ path: "/openai/deployments/my-gpt/chat/completions", deployment: "my-gpt", query: { "api-version": "2024-10-21" } });
    expect(rec.headers["api-key"]).toBe("azure-key");

    const noVersion = await post({ messages: [{ role: "user", content: "hi" }] }, {}, "/openai/deployments/my-gpt/chat/completions");
    expect(noVersion.status).toBe(404);
  });

  it("streams tool-call arguments split over chunks with indices 0 and 1", async () => {
    const res = await post(chat("scenario:tool-calls", { stream: true }));
    const body = await res.text();
    expect(body).toBe(loadFixture("openai", "tool-calls.sse"));
    const calls: { id?: string; name?: string; args: string }[] = [];
    for (const e of parseSse(body).slice(0, -1)) {
      const chunk = JSON.parse(e.data) as { choices: { delta: { tool_calls?: { index: number; id?: string; function: { name?: string; arguments?: string } }[] } }[] };
      for (const tc of chunk.choices[0]!.delta.tool_calls ?? []) {
        const c = (calls[tc.index] ??= { args: "" });
        c.id ??= tc.id;
        c.name ??= tc.function.name;
        c.args += tc.function.arguments ?? "";
      }
    }
    expect(calls).toEqual([
      { id: "call_fake_weather", name: "get_weather", args: '{"city": "Paris", "unit": "celsius"}' },
      { id: "call_fake_time", name: "get_time", args: '{"tz": "Europe/Paris"}' },
    ]);
  });

  it("echoes the last user text by default, with the usage chunk when include_usage is set, and records images", async () => {
    const image = { type: "image_url", image_url: { url: "data:image/png;base64,iVBORw0KGgo=" } };
    const res = await post(chat([{ type: "text", text: "what is this picture" }, image], { stream: true, stream_options: { include_usage: true } }));
    const events = parseSse(await res.text());
    expect(events.at(-1)!.data).toBe("[DONE]");
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e.data) as { choices: { delta: { content?: string } }[]; usage: unknown });
    expect(chunks.slice(0, -1).every((c) => c.usage === null)).toBe(true);
    expect(chunks.map((c) => c.choices[0]?.delta.content ?? "").join("")).toBe("what is this picture");
    expect(chunks.at(-1)).toMatchObject({ choices: [], usage: { prompt_tokens: 6, completion_tokens: 4, total_tokens: 10 } });
    const rec = await fake.settled(0);
    expect(rec.scenario).toBe("echo");
    expect((rec.body as { messages: { content: unknown }[] }).messages[1]!.content).toContainEqual(image);

    const unary = (await (await post(chat("hello there"))).json()) as { choices: { message: { content: string } }[] };
    expect(unary.choices[0]!.message.content).toBe("hello there");
  });

  it("usage-details: cached and reasoning tokens in the details objects, in the include_usage chunk and the unary body", async () => {
    const details = {
      prompt_tokens: 2006,
      completion_tokens: 198,
      total_tokens: 2204,
      prompt_tokens_details: { cached_tokens: 1920, audio_tokens: 0 },
      completion_tokens_details: { reasoning_tokens: 192, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
    };
    const stream = await (await post(chat("scenario:usage-details", { stream: true, stream_options: { include_usage: true } }))).text();
    expect(stream).toBe(loadFixture("openai", "usage-details.sse"));
    const events = parseSse(stream);
    expect(events.at(-1)!.data).toBe("[DONE]");
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e.data) as { choices: unknown[]; usage: unknown });
    expect(chunks.slice(0, -1).every((c) => c.usage === null)).toBe(true);
    expect(chunks.at(-1)).toMatchObject({ choices: [], usage: details });
    const unary = await (await post(chat("scenario:usage-details"))).text();
    expect(unary).toBe(loadFixture("openai", "usage-details.json"));
    expect(JSON.parse(unary)).toMatchObject({ object: "chat.completion", usage: details, choices: [{ message: { content: OPENAI_FIXTURE_TEXT } }] });
  });

  it("serves the failure scenarios as OpenAI does", async () => {
    const r429 = await post(chat("scenario:rate-limited"));
    expect(r429.status).toBe(429);
    expect(r429.headers.get("retry-after")).toBe("2");
    expect(await r429.text()).toBe(loadFixture("openai", "rate-limited.json"));

    const r429d = await post(chat("scenario:rate-limited-date", { stream: true }));
    expect(r429d.status).toBe(429);
    const date = Date.parse(r429d.headers.get("retry-after")!);
    expect(date).toBeGreaterThan(Date.now());
    expect(((await r429d.json()) as { error: { code: string } }).error.code).toBe("rate_limit_exceeded");

    for (const [name, status] of [["server-error", 500], ["unauthorized", 401], ["bad-request", 400]] as const) {
      const r = await post(chat(`scenario:${name}`));
      expect(r.status).toBe(status);
      expect(r.headers.get("content-type")).toBe("application/json");
      const err = (await r.json()) as { error: { message: string; type: string; param: unknown; code: unknown } };
      expect(Object.keys(err.error)).toEqual(["message", "type", "param", "code"]);
    }

    const garbage = await post(chat("scenario:garbage"));
    expect([garbage.status, garbage.headers.get("content-type"), await garbage.text()]).toEqual([200, "text/html; charset=utf-8", GARBAGE_BODY]);
    const malformed = await post(chat("scenario:malformed-json"));
    expect([malformed.status, malformed.headers.get("content-type"), await malformed.text()]).toEqual([200, "application/json", OPENAI_MALFORMED_JSON]);

    const mid = await post(chat("scenario:mid-stream-error", { stream: true }));
    const midEvents = parseSse(await mid.text());
    expect(mid.status).toBe(200);
    expect(JSON.parse(midEvents.at(-1)!.data)).toMatchObject({ error: { type: "server_error" } });
    expect(midEvents.some((e) => e.data === "[DONE]")).toBe(false);

    const truncated = await post(chat("scenario:truncated", { stream: true }));
    expect(await truncated.text()).toBe(loadFixture("openai", "truncated.sse"));
    const cut = await post(chat("scenario:truncated"));
    expect(cut.status).toBe(200);
    await expect(cut.text()).rejects.toThrow();
    const cutRec = await fake.settled(fake.requests.length - 1);
    expect(cutRec.cutAt).toBeDefined();
    expect(cutRec.abortedAt).toBeUndefined();

    const unknown = await post(chat("scenario:nope"));
    expect(unknown.status).toBe(400);
    expect((await post({}, {}, "/v1/completions")).status).toBe(404);
    expect((await post({ messages: [] })).status).toBe(400);
  });

  it("writes the CRLF stream split after every CR; it parses to the same chunks as the text stream", async () => {
    const res = await post(chat("scenario:crlf", { stream: true }), { "x-fake-delay-ms": "1" });
    const chunks = await readChunks(res);
    const body = chunks.join("");
    expect(body).toBe(loadFixture("openai", "crlf.sse"));
    expect(body).toContain("\r\ndata: ");
    const norm = (s: string) => parseSse(s).map((e) => (e.data === "[DONE]" ? e.data : JSON.parse(e.data)) as unknown);
    expect(norm(body)).toEqual(norm(loadFixture("openai", "text.sse")));
  });

  it("uses queued, then sticky scenarios when the message selects none", async () => {
    fake.setScenario("server-error");
    fake.enqueueScenario("rate-limited");
    expect((await post(chat("hi"))).status).toBe(429);
    expect((await post(chat("hi"))).status).toBe(500);
    expect((await post(chat("scenario:text"))).status).toBe(200);
    fake.setScenario(null);
    expect((await post(chat("hi"))).status).toBe(200);
    expect(fake.requests.map((r) => r.scenario)).toEqual(["rate-limited", "server-error", "text", "echo"]);
    expect(() => fake.setScenario("bogus" as "text")).toThrow(/unknown fake scenario/);
  });

  it("sees a client abort of a slow stream while it waits to write the next piece", async () => {
    const ac = new AbortController();
    // The role chunk comes at once, the next piece a minute later.
    const res = await post(chat("scenario:slow?delayMs=60000", { stream: true }), {}, "/v1/chat/completions", ac.signal);
    const reader = res.body!.getReader();
    await reader.read();
    const abortAt = Date.now();
    ac.abort();
    await reader.read().catch(() => undefined);
    // settled gives up after 5 s: the fake saw the abort while it waited, not at its next write.
    const rec = await fake.settled(0);
    expect(rec.scenario).toBe("slow");
    expect(rec.finishedAt).toBeUndefined();
    expect(rec.abortedAt).toBeDefined();
    expect(rec.abortedAt! - abortAt).toBeGreaterThanOrEqual(0);
  });
});

describe("Anthropic fake", () => {
  let fake: AnthropicFake;
  beforeAll(async () => {
    fake = await createAnthropicFake();
  });
  afterAll(async () => {
    await fake.close();
  });
  beforeEach(() => {
    fake.reset();
  });

  const headers = { "content-type": "application/json", "x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01" };
  const post = (body: unknown, extra: Record<string, string> = {}, signal?: AbortSignal) =>
    fetch(`${fake.baseUrl}/v1/messages`, {
      method: "POST",
      headers: { ...headers, ...extra },
      body: JSON.stringify(body),
      ...(signal === undefined ? {} : { signal }),
    });
  const msg = (content: unknown, extra: Record<string, unknown> = {}) => ({
    model: "claude-sonnet-4-20250514",
    max_tokens: 256,
    system: "be brief",
    messages: [{ role: "user", content }],
    ...extra,
  });

  it("streams the text fixture byte for byte and records the headers", async () => {
    const res = await post(msg("scenario:text", { stream: true }), { "x-fake-delay-ms": "5" });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/event-stream; charset=utf-8");
    const chunks = await readChunks(res);
    const body = chunks.join("");
    expect(body).toBe(loadFixture("anthropic", "text.sse"));
    expect(chunks.length).toBeGreaterThan(1);
    const events = parseSse(body);
    expect(events.map((e) => e.event)).toEqual([
      "message_start",
      "content_block_start",
      "ping",
      ...Array<string>(5).fill("content_block_delta"),
      "content_block_stop",
      "message_delta",
      "message_stop",
    ]);
    for (const e of events) {
      expect((JSON.parse(e.data) as { type: string }).type).toBe(e.event);
    }
    expect(JSON.parse(events[0]!.data)).toMatchObject({ message: { usage: { input_tokens: 12, output_tokens: 1 } } });
    expect(JSON.parse(events.at(-2)!.data)).toEqual({ type: "message_delta", delta: { stop_reason: "end_turn", stop_sequence: null }, usage: { output_tokens: 6 } });

    const rec = await fake.settled(0);
    expect(rec).toMatchObject({ method: "POST", path: "/v1/messages", stream: true, scenario: "text", status: 200 });
    expect(rec.headers["x-api-key"]).toBe("sk-ant-test");
    expect(rec.headers["anthropic-version"]).toBe("2023-06-01");
  });

  it("cache-usage: the cache counts in message_start's usage and the unary body; message_delta has output_tokens only", async () => {
    const cache = { input_tokens: 12, cache_creation_input_tokens: 1500, cache_read_input_tokens: 2048, cache_creation: { ephemeral_5m_input_tokens: 1500, ephemeral_1h_input_tokens: 0 } };
    const stream = await (await post(msg("scenario:cache-usage", { stream: true }))).text();
    expect(stream).toBe(loadFixture("anthropic", "cache-usage.sse"));
    const events = parseSse(stream);
    expect(JSON.parse(events[0]!.data)).toMatchObject({ type: "message_start", message: { id: "msg_fake_cache_usage", usage: { ...cache, output_tokens: 1 } } });
    expect(JSON.parse(events.at(-2)!.data)).toEqual({ type: "message_delta", delta: { stop_reason: "end_turn", stop_sequence: null }, usage: { output_tokens: 6 } });
    const unary = await (await post(msg("scenario:cache-usage"))).text();
    expect(unary).toBe(loadFixture("anthropic", "cache-usage.json"));
    expect(JSON.parse(unary)).toMatchObject({ type: "message", content: [{ type: "text", text: ANTHROPIC_FIXTURE_TEXT }], usage: { ...cache, output_tokens: 6 } });
  });

  it("answers unary tool_use blocks and the echo default, and records images", async () => {
    const res = await post(msg("scenario:tool-calls"));
    expect(res.headers.get("content-type")).toBe("application/json");
    const text = await res.text();
    expect(text).toBe(loadFixture("anthropic", "tool-calls.json"));
    expect(JSON.parse(text)).toMatchObject({
      type: "message",
      stop_reason: "tool_use",
      content: [
        { type: "text", text: "Let me check." },
        { type: "tool_use", id: "toolu_fake_weather", name: "get_weather", input: { city: "Paris", unit: "celsius" } },
        { type: "tool_use", id: "toolu_fake_time", name: "get_time", input: { tz: "Europe/Paris" } },
      ],
      usage: { input_tokens: 40, output_tokens: 30 },
    });

    const image = { type: "image", source: { type: "base64", media_type: "image/png", data: "iVBORw0KGgo=" } };
    const echo = (await (await post(msg([image, { type: "text", text: "describe it" }]))).json()) as unknown;
    expect(echo).toMatchObject({ type: "message", role: "assistant", content: [{ type: "text", text: "describe it" }], stop_reason: "end_turn", usage: { input_tokens: 4, output_tokens: 2 } });
    const rec = await fake.settled(1);
    expect(rec.scenario).toBe("echo");
    expect((rec.body as { messages: { content: unknown[] }[] }).messages[0]!.content[0]).toEqual(image);
  });

  it("streams tool_use input split over input_json_delta events", async () => {
    const body = await (await post(msg("scenario:tool-calls", { stream: true }))).text();
    expect(body).toBe(loadFixture("anthropic", "tool-calls.sse"));
    const inputs = new Map<number, string>();
    for (const e of parseSse(body)) {
      const d = JSON.parse(e.data) as { type: string; index: number; delta?: { type: string; partial_json?: string } };
      if (d.type === "content_block_delta" && d.delta?.type === "input_json_delta") {
        inputs.set(d.index, (inputs.get(d.index) ?? "") + d.delta.partial_json);
      }
    }
    expect([...inputs].map(([i, s]) => [i, JSON.parse(s)])).toEqual([
      [1, { city: "Paris", unit: "celsius" }],
      [2, { tz: "Europe/Paris" }],
    ]);
  });

  it("serves pings, a mid-stream error, 529 and the other failures as Anthropic does", async () => {
    const pings = parseSse(await (await post(msg("scenario:pings", { stream: true }))).text());
    expect(pings.filter((e) => e.event === "ping").length).toBeGreaterThan(5);
    expect(pings.at(-1)!.event).toBe("message_stop");

    const mid = await post(msg("scenario:mid-stream-error", { stream: true }));
    expect(mid.status).toBe(200);
    const midEvents = parseSse(await mid.text());
    expect(midEvents.at(-1)).toEqual({ event: "error", data: '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}' });
    expect(midEvents.filter((e) => e.event === "content_block_delta").length).toBe(2);

    const overloaded = await post(msg("scenario:overloaded"));
    expect(overloaded.status).toBe(529);
    expect(await overloaded.json()).toEqual({ type: "error", error: { type: "overloaded_error", message: "Overloaded" } });

    for (const [name, status, type] of [
      ["rate-limited", 429, "rate_limit_error"],
      ["server-error", 500, "api_error"],
      ["unauthorized", 401, "authentication_error"],
      ["bad-request", 400, "invalid_request_error"],
    ] as const) {
      const r = await post(msg(`scenario:${name}`));
      expect(r.status).toBe(status);
      expect(await r.json()).toMatchObject({ type: "error", error: { type } });
      if (name === "rate-limited") {
        expect(r.headers.get("retry-after")).toBe("2");
      }
    }

    const truncated = parseSse(await (await post(msg("scenario:truncated", { stream: true }))).text());
    expect(truncated.some((e) => e.event === "message_stop")).toBe(false);

    const malformed = await post(msg("scenario:malformed-json"));
    expect(await malformed.text()).toBe(ANTHROPIC_MALFORMED_JSON);

    const noVersion = await fetch(`${fake.url}/v1/messages`, { method: "POST", headers: { "x-api-key": "k" }, body: JSON.stringify(msg("hi")) });
    expect(noVersion.status).toBe(400);
    expect(await noVersion.json()).toMatchObject({ type: "error", error: { type: "invalid_request_error" } });
  });

  it("writes the CRLF stream split after every CR; it parses to the same events as the text stream", async () => {
    const body = (await readChunks(await post(msg("scenario:crlf", { stream: true }), { "x-fake-delay-ms": "1" }))).join("");
    expect(body).toBe(loadFixture("anthropic", "crlf.sse"));
    const norm = (s: string) => parseSse(s).map((e) => ({ event: e.event, data: JSON.parse(e.data) as unknown }));
    expect(norm(body)).toEqual(norm(loadFixture("anthropic", "text.sse")));
  });

  it("sees a client abort of a slow stream while it waits to write the next event", async () => {
    // message_start comes at once, the next event a minute later.
    fake.setScenario("slow", { delayMs: 60_000 });
    const ac = new AbortController();
    const res = await post(msg("count slowly", { stream: true }), {}, ac.signal);
    const reader = res.body!.getReader();
    await reader.read();
    const abortAt = Date.now();
    ac.abort();
    await reader.read().catch(() => undefined);
    // settled gives up after 5 s: the fake saw the abort while it waited, not at its next write.
    const rec = await fake.settled(0);
    expect(rec.scenario).toBe("slow");
    expect(rec.finishedAt).toBeUndefined();
    expect(rec.abortedAt! - abortAt).toBeGreaterThanOrEqual(0);
  });
});

describe("fixtures", () => {
  it("keep their exact framing (LF events, CRLF only in crlf.sse)", () => {
    for (const provider of ["openai", "anthropic"] as const) {
      const text = loadFixture(provider, "text.sse");
      expect(text).not.toContain("\r");
      expect(splitSseEvents(text).every((e) => e.endsWith("\n\n"))).toBe(true);
      expect(loadFixture(provider, "crlf.sse")).toMatch(/^[^\n]*\r\n/);
      expect(loadFixture(provider, "crlf.sse").replace(/\r\n/g, "")).not.toContain("\n");
    }
  });
});
