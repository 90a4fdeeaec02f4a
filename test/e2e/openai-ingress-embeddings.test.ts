/**
 * `POST /v1/embeddings` on the OpenAI-compatible HTTP API end to end, with the official `openai`
 * npm package as the client: the SDK → infergate's HTTP listener → the mock model (deterministic
 * vectors) and the OpenAI embeddings fake (test/fakes/openai-embeddings-fake.ts). Asserts what the
 * SDK gets (including its own base64 decoding, which it does whenever the caller names no
 * encoding_format), the exact JSON on the wire, the errors in OpenAI's shape, and what the fake
 * received (nothing, for bad input).
 */
import OpenAI, { APIError, AuthenticationError, BadRequestError, InternalServerError, NotFoundError, PermissionDeniedError, RateLimitError } from "openai";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { hashKey } from "../../src/security/api-keys.js";
import type { App } from "../../src/server/app.js";
import { createOpenAIEmbeddingsFake, embeddingInputs, fakeEmbedding, type OpenAIEmbeddingsFake } from "../fakes/openai-embeddings-fake.js";
import { openaiSdk, rejection } from "../helpers/openai-sdk.js";
import { startInProcess } from "../helpers/servers.js";

const UPSTREAM_KEY = "sk-upstream-embed-secret-41c7";

/** The FP32 values of the base64 of their little-endian bytes. */
function floatsOf(base64: string): number[] {
  const bytes = Buffer.from(base64, "base64");
  return Array.from({ length: bytes.length / 4 }, (_, i) => bytes.readFloatLE(i * 4));
}

const norm = (v: readonly number[]) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));

type Params = OpenAI.Embeddings.EmbeddingCreateParams;

describe("POST /v1/embeddings, auth off", () => {
  let app: App;
  let fake: OpenAIEmbeddingsFake;
  let client: OpenAI;

  beforeAll(async () => {
    fake = await createOpenAIEmbeddingsFake({ dimensions: 1536 });
    app = await startInProcess(`
upstreams:
  - name: mock
    kind: mock
  - name: emb-up
    kind: openai
    resilience: { retry: { maxAttempts: 1 }, breaker: { enabled: false } }
    endpoints: ["${fake.baseUrl}"]
    apiKey: "${UPSTREAM_KEY}"
models:
  - { name: mock-embed, upstream: mock, capabilities: [embed] }
  - { name: mock-chat, upstream: mock, capabilities: [chat, generate] }
  - name: emb
    upstream: emb-up
    upstreamModel: text-embedding-3-small
    capabilities: [embed]
    embedding: { dimensions: 1536, maxInputs: 4 }
    cache: { policy: "off" }
`);
    client = openaiSdk(app);
  });

  afterAll(async () => {
    await app?.shutdown();
    await fake?.close();
  });

  beforeEach(() => {
    fake.reset();
  });

  describe("the mock model", () => {
    it("a string: one vector, the model, usage and our headers; the SDK decodes the base64 it asked for", async () => {
      const { data, response } = await client.embeddings
        .create({ model: "mock-embed", input: "the quick brown fox" }, { headers: { "x-request-id": "req-embed-1" } })
        .withResponse();
      expect(data.object).toBe("list");
      expect(data.model).toBe("mock-embed");
      expect(data.usage).toEqual({ prompt_tokens: 4, total_tokens: 4, cost: "unpriced" });
      expect(data.data).toHaveLength(1);
      expect(data.data[0]!.object).toBe("embedding");
      expect(data.data[0]!.index).toBe(0);
      const v = data.data[0]!.embedding;
      expect(v).toHaveLength(256);
      expect(norm(v)).toBeCloseTo(1, 5);
      expect(response.headers.get("x-request-id")).toBe("req-embed-1");
      expect(response.headers.get("infergate-served-by")).toBe("mock-embed/mock");
      expect(response.headers.get("infergate-cache")).toBeTruthy();
    });

    it("the SDK's default (base64, decoded), float and explicit base64 give the same FP32 values exactly", async () => {
      const input = ["alpha beta", "gamma"];
      const decoded = await client.embeddings.create({ model: "mock-embed", input });
      const floats = await client.embeddings.create({ model: "mock-embed", input, encoding_format: "float" });
      const base64 = await client.embeddings.create({ model: "mock-embed", input, encoding_format: "base64" });
      for (const i of [0, 1]) {
        const f = floats.data[i]!.embedding;
        expect(f).toHaveLength(256);
        // Each number as written is an FP32 value (Math.fround leaves it unchanged).
        expect(f.map(Math.fround)).toEqual(f);
        expect(decoded.data[i]!.embedding).toEqual(f);
        const b = base64.data[i]!.embedding as unknown;
        expect(typeof b).toBe("string");
        expect(floatsOf(b as string)).toEqual(f);
      }
      // The first call's inputs went upstream; the later calls' came from infergate's cache, which
      // counts no tokens.
      expect(decoded.usage).toEqual({ prompt_tokens: 3, total_tokens: 3, cost: "unpriced" });
      expect(floats.usage).toEqual({ prompt_tokens: 0, total_tokens: 0, cost: "unpriced" });
    });

    it("an array of strings: one vector per input, in order, each the one that input gets alone", async () => {
      const inputs = ["one", "two words", "three more words"];
      const batch = await client.embeddings.create({ model: "mock-embed", input: inputs, encoding_format: "float" });
      expect(batch.data.map((d) => d.index)).toEqual([0, 1, 2]);
      expect(batch.usage.prompt_tokens).toBe(6);
      for (const [i, text] of inputs.entries()) {
        const alone = await client.embeddings.create({ model: "mock-embed", input: text, encoding_format: "float" });
        expect(batch.data[i]!.embedding).toEqual(alone.data[0]!.embedding);
      }
      expect(batch.data[0]!.embedding).not.toEqual(batch.data[1]!.embedding);
    });

    it("token arrays: one token-id input, or several; the token ids are the usage", async () => {
      const many = await client.embeddings.create({ model: "mock-embed", input: [[1, 2, 3], [40, 50]], encoding_format: "float" });
      expect(many.data).toHaveLength(2);
      expect(many.usage).toEqual({ prompt_tokens: 5, total_tokens: 5, cost: "unpriced" });
      const one = await client.embeddings.create({ model: "mock-embed", input: [1, 2, 3], encoding_format: "float" });
      expect(one.data).toHaveLength(1);
      expect(one.data[0]!.embedding).toEqual(many.data[0]!.embedding);
      // Token ids are not the text of their digits.
      const text = await client.embeddings.create({ model: "mock-embed", input: "1 2 3", encoding_format: "float" });
      expect(text.data[0]!.embedding).not.toEqual(one.data[0]!.embedding);
    });

    it("dimensions: vectors of that length, unit length", async () => {
      const res = await client.embeddings.create({ model: "mock-embed", input: ["a", "b"], dimensions: 64 });
      for (const d of res.data) {
        expect(d.embedding).toHaveLength(64);
        expect(norm(d.embedding)).toBeCloseTo(1, 5);
      }
    });

    it("a repeated call is answered from the cache (infergate-cache: hit), with the same vectors", async () => {
      const params: Params = { model: "mock-embed", input: ["cache me", "and me"], encoding_format: "float" };
      const first = await client.embeddings.create(params);
      const { data, response } = await client.embeddings.create(params).withResponse();
      expect(response.headers.get("infergate-cache")).toBe("hit");
      expect(data.data).toEqual(first.data);
    });

    it("on the wire: exactly OpenAI's JSON", async () => {
      const res = await fetch(`http://${app.httpAddress}/v1/embeddings`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "mock-embed", input: ["x y", "z"], dimensions: 3 }),
      });
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toBe("application/json");
      expect(res.headers.get("x-request-id")).toBeTruthy();
      const text = await res.text();
      expect(res.headers.get("content-length")).toBe(String(Buffer.byteLength(text)));
      const body = JSON.parse(text) as { data: { embedding: number[] }[] };
      expect(Object.keys(body)).toEqual(["object", "data", "model", "usage"]);
      expect(body).toEqual({
        object: "list",
        data: [
          { object: "embedding", index: 0, embedding: [expect.any(Number), expect.any(Number), expect.any(Number)] },
          { object: "embedding", index: 1, embedding: [expect.any(Number), expect.any(Number), expect.any(Number)] },
        ],
        model: "mock-embed",
        usage: { prompt_tokens: 3, total_tokens: 3, cost: "unpriced" },
      });
      expect(Object.keys(body.data[0]!)).toEqual(["object", "index", "embedding"]);
      // Compact JSON, numbers as their FP32 values in full (the text of the double).
      expect(text).toMatch(/^\{"object":"list","data":\[\{"object":"embedding","index":0,"embedding":\[-?\d/);
      expect(body.data[0]!.embedding.map(Math.fround)).toEqual(body.data[0]!.embedding);
    });

    it("base64 on the wire: a string per vector, 4 bytes per dimension", async () => {
      const res = await fetch(`http://${app.httpAddress}/v1/embeddings`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "mock-embed", input: "x", encoding_format: "base64", dimensions: 5 }),
      });
      const body = (await res.json()) as { data: { embedding: string }[] };
      expect(typeof body.data[0]!.embedding).toBe("string");
      expect(Buffer.from(body.data[0]!.embedding, "base64")).toHaveLength(20);
    });

    it("an unknown model is a 404 NotFoundError; a model without embed a 400 naming the model", async () => {
      const missing = await rejection(client.embeddings.create({ model: "nope", input: "x" }));
      expect(missing).toBeInstanceOf(NotFoundError);
      expect((missing as NotFoundError).code).toBe("model_not_found");
      expect((missing as NotFoundError).param).toBe("model");
      const chat = await rejection(client.embeddings.create({ model: "mock-chat", input: "x" }));
      expect(chat).toBeInstanceOf(BadRequestError);
      expect((chat as BadRequestError).code).toBe("capability_not_supported");
      expect((chat as BadRequestError).param).toBe("model");
    });
  });

  describe("through the OpenAI embeddings fake", () => {
    it("the upstream gets the inputs, dimensions and its own model name; user stays in infergate", async () => {
      const res = await client.embeddings.create({ model: "emb", input: ["hello", "world"], dimensions: 8, user: "end-user-7", encoding_format: "float" });
      expect(res.model).toBe("emb");
      expect(res.data.map((d) => d.embedding)).toEqual(["hello", "world"].map((t) => Array.from(fakeEmbedding(t, 8))));
      expect(embeddingInputs(fake)).toEqual([["hello", "world"]]);
      const body = fake.requests[0]!.body as Record<string, unknown>;
      expect(body["model"]).toBe("text-embedding-3-small");
      expect(body["dimensions"]).toBe(8);
      expect(body).not.toHaveProperty("user");
      expect(fake.requests[0]!.headers.authorization).toBe(`Bearer ${UPSTREAM_KEY}`);
    });

    it("token arrays reach the upstream as token arrays", async () => {
      await client.embeddings.create({ model: "emb", input: [7, 8, 9] });
      await client.embeddings.create({ model: "emb", input: [[1], [2, 3]] });
      expect(embeddingInputs(fake)).toEqual([[[7, 8, 9]], [[1], [2, 3]]]);
    });

    it.each<[string, Record<string, unknown>, string]>([
      ["an empty input list", { input: [] }, "input"],
      ["an empty string", { input: "" }, "input"],
      ["an empty string in the list", { input: ["a", ""] }, "input[1]"],
      ["an empty token array", { input: [[1], []] }, "input[1]"],
      ["more inputs than the model's embedding.maxInputs (4)", { input: ["a", "b", "c", "d", "e"] }, "input"],
      ["dimensions 0", { input: "x", dimensions: 0 }, "dimensions"],
      ["negative dimensions", { input: "x", dimensions: -1 }, "dimensions"],
      ["dimensions not an integer", { input: "x", dimensions: 2.5 }, "dimensions"],
      ["dimensions above the model's (1536)", { input: "x", dimensions: 2048 }, "dimensions"],
      ["strings mixed with token arrays", { input: ["a", [1, 2]] }, "input[1]"],
      ["input of the wrong type", { input: { text: "x" } }, "input"],
      ["a token id that is not a whole number", { input: [[1, 2.5]] }, "input[0][1]"],
      ["an unknown encoding_format", { input: "x", encoding_format: "binary" }, "encoding_format"],
      ["a key the API does not have", { input: "x", input_type: "query" }, "input_type"],
    ])("%s: a 400 BadRequestError naming the field, nothing sent upstream", async (_name, extra, param) => {
      const err = await rejection(client.embeddings.create({ model: "emb", ...extra } as unknown as Params));
      expect(err).toBeInstanceOf(BadRequestError);
      expect((err as BadRequestError).status).toBe(400);
      expect((err as BadRequestError).type).toBe("invalid_request_error");
      expect((err as BadRequestError).param).toBe(param);
      expect((err as BadRequestError).message).toContain(`${param}:`);
      expect(fake.requests).toHaveLength(0);
    });

    it("the upstream's 429 is a RateLimitError with its Retry-After", async () => {
      fake.setScenario("rate-limited", { retryAfter: "3" });
      const err = await rejection(client.embeddings.create({ model: "emb", input: "x" }));
      expect(err).toBeInstanceOf(RateLimitError);
      expect((err as RateLimitError).headers?.get("retry-after")).toBe("3");
      expect((err as RateLimitError).code).toBe("upstream_rate_limited");
    });

    it("the upstream's 500 is a 503, and no secret is in it", async () => {
      fake.setScenario("server-error");
      const err = await rejection(client.embeddings.create({ model: "emb", input: "x" }));
      expect(err).toBeInstanceOf(InternalServerError);
      expect((err as APIError).status).toBe(503);
      expect(JSON.stringify((err as APIError).error)).not.toContain(UPSTREAM_KEY);
    });

    it("the caller's infergate-timeout-ms runs out while the upstream has not answered: 504 deadline_exceeded", async () => {
      fake.setScenario("embed", { delayMs: 20_000 });
      const err = await rejection(client.embeddings.create({ model: "emb", input: "x" }, { headers: { "infergate-timeout-ms": "150" } }));
      expect(err).toBeInstanceOf(InternalServerError);
      expect((err as APIError).status).toBe(504);
      expect((err as APIError).code).toBe("deadline_exceeded");
      const rec = await fake.settled(0);
      expect(rec.abortedAt).toBeDefined();
      expect(rec.finishedAt).toBeUndefined();
    });

    it("aborting the request while the upstream has not answered aborts the upstream request", async () => {
      fake.setScenario("embed", { delayMs: 20_000 });
      const controller = new AbortController();
      const pending = client.embeddings.create({ model: "emb", input: "x" }, { signal: controller.signal });
      await fake.waitForRequest(0);
      controller.abort();
      expect(await rejection(pending)).toBeInstanceOf(Error);
      const rec = await fake.settled(0);
      expect(rec.abortedAt).toBeDefined();
      expect(rec.finishedAt).toBeUndefined();
    });
  });
});

describe("POST /v1/embeddings, auth on", () => {
  let app: App;

  beforeAll(async () => {
    app = await startInProcess(`
server: { maxMessageBytes: 4096, requestLimits: { embedInputs: 3, tokenIds: 4 } }
upstreams: [{ name: mock, kind: mock }]
models:
  - { name: mock-embed, upstream: mock, capabilities: [embed] }
  - { name: private-embed, upstream: mock, capabilities: [embed] }
auth:
  enabled: true
  keys:
    - { name: alpha, sha256: ${hashKey("sk-alpha-embed")}, models: ["mock-*"], limits: { requestsPerMinute: 1 } }
    - { name: beta, sha256: ${hashKey("sk-beta-embed")}, models: ["*"] }
`);
  });

  afterAll(async () => {
    await app?.shutdown();
  });

  it("no key: 401 AuthenticationError; a wrong key: 401 without the key in the answer", async () => {
    const none = await rejection(openaiSdk(app, { apiKey: "x", defaultHeaders: { Authorization: null } }).embeddings.create({ model: "mock-embed", input: "x" }));
    expect(none).toBeInstanceOf(AuthenticationError);
    expect((none as APIError).code).toBe("unauthenticated");
    const wrong = await rejection(openaiSdk(app, { apiKey: "sk-wrong-embed-key" }).embeddings.create({ model: "mock-embed", input: "x" }));
    expect(wrong).toBeInstanceOf(AuthenticationError);
    expect(JSON.stringify((wrong as APIError).error)).not.toContain("sk-wrong");
  });

  it("a key for a model it may not use: 403; the right key is served until its rate is used up: 429 with Retry-After", async () => {
    const alpha = openaiSdk(app, { apiKey: "sk-alpha-embed" });
    const denied = await rejection(alpha.embeddings.create({ model: "private-embed", input: "x" }));
    expect(denied).toBeInstanceOf(PermissionDeniedError);
    expect((denied as APIError).code).toBe("model_not_allowed");
    expect((await alpha.embeddings.create({ model: "mock-embed", input: "x" })).data).toHaveLength(1);
    const limited = await rejection(alpha.embeddings.create({ model: "mock-embed", input: "x" }));
    expect(limited).toBeInstanceOf(RateLimitError);
    expect(Number((limited as RateLimitError).headers?.get("retry-after"))).toBeGreaterThan(0);
  });

  it("a body over server.maxMessageBytes is a 413", async () => {
    const res = await fetch(`http://${app.httpAddress}/v1/embeddings`, {
      method: "POST",
      headers: { authorization: "Bearer sk-alpha-embed", "content-type": "application/json" },
      body: JSON.stringify({ model: "mock-embed", input: "x".repeat(5000) }),
    });
    expect(res.status).toBe(413);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("request_too_large");
  });

  it.each<[string, Params["input"], string]>([
    ["more inputs than server.requestLimits.embedInputs", ["a", "b", "c", "d"], "input"],
    ["more token ids in one input than server.requestLimits.tokenIds", [[1], [1, 2, 3, 4, 5]], "input[1]"],
    ["the same, as a single token-id input", [1, 2, 3, 4, 5], "input"],
  ])("%s: a 400 naming the API's field", async (_name, input, param) => {
    const err = await rejection(openaiSdk(app, { apiKey: "sk-beta-embed" }).embeddings.create({ model: "mock-embed", input }));
    expect(err).toBeInstanceOf(BadRequestError);
    expect((err as BadRequestError).param).toBe(param);
    // The SDK's message is "<status> <the answer's message>"; the answer's starts with the field.
    expect((err as BadRequestError).message).toMatch(/^400 input\S*: (at most|more than) /);
    expect((err as BadRequestError).message).toContain(` ${param}: `);
  });

  it("the wrong method is a 405 with Allow: POST", async () => {
    const res = await fetch(`http://${app.httpAddress}/v1/embeddings`);
    expect(res.status).toBe(405);
    expect(res.headers.get("allow")).toBe("POST");
  });
});
