/**
 * The openai kind's Embed adapter (src/upstreams/openai/openai-upstream.ts) against the embeddings
 * fake (test/fakes/openai-embeddings-fake.ts) on a loopback port, without the gateway: what goes
 * on the wire (path, headers, body), the vectors that come back (base64 and float, shortened,
 * from token ids, listed out of order), and how malformed answers and HTTP errors fail.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { EmbedRequestSchema, type EmbedResponse } from "../../gen/infergate/v1/inference_service_pb.js";
import { parseConfig } from "../../src/config/load-config.js";
import { GatewayError, Reason } from "../../src/core/gateway-error.js";
import type { Upstream } from "../../src/core/upstream.js";
import { type OpenAIModelOptions, openaiKind } from "../../src/upstreams/openai/openai-upstream.js";
import { bytesOf } from "../../src/wire/byte-order.js";
import { fp32View } from "../../src/wire/fp32.js";
import { type EmbeddingsScenario, createOpenAIEmbeddingsFake, fakeEmbedding, INVALID_INPUT_MESSAGE, type OpenAIEmbeddingsFake } from "../fakes/openai-embeddings-fake.js";

const API_KEY = "sk-test-embed-7c1e9a3b5d2f";
const AZURE_KEY = "azure-embed-key-0a1b2c3d4e";
const MODEL = "text-embedding-3-small";

type EmbedInit = MessageInitShape<typeof EmbedRequestSchema>;

/** An adapter of the openai kind for the upstream `name` of `yaml` (a list item), as the registry makes it. */
function adapter(name: string, upstreamYaml: string): Upstream<OpenAIModelOptions> {
  const yaml = `upstreams:\n${upstreamYaml}\nmodels:\n  - { name: emb, upstream: ${name}, capabilities: [embed] }\n`;
  const config = parseConfig(yaml, "(test)", {}).upstreams[0]!;
  return openaiKind.create(config, openaiKind.optionsSchema.parse(config.options));
}

/** Embeds with `up`, options and request as given, a 10 s deadline. */
function embedWith(up: Upstream<OpenAIModelOptions>, init: Partial<EmbedInit>, modelOptions: OpenAIModelOptions = { embeddingEncoding: "base64" }, signal = new AbortController().signal): Promise<EmbedResponse> {
  return up.embed!({
    request: create(EmbedRequestSchema, { model: "emb", ...init } as EmbedInit),
    upstreamModel: MODEL,
    modelOptions,
    signal,
    deadline: Date.now() + 10_000,
    headers: {},
  });
}

/** The error a promise rejects with, as a GatewayError. */
async function failureOf(p: Promise<unknown>): Promise<GatewayError> {
  const err = await p.then(
    () => new Error("no error was thrown"),
    (e: unknown) => e,
  );
  if (err instanceof GatewayError) return err;
  throw err;
}

/** The packed FP32 of the fake's vector for `input` (what the adapter must return). */
const expected = (input: string | number[], dimensions?: number) => [...bytesOf(fakeEmbedding(input, dimensions))];

describe("openai upstream: Embed against the embeddings fake", () => {
  let fake: OpenAIEmbeddingsFake;
  let up: Upstream<OpenAIModelOptions>;
  let azure: Upstream<OpenAIModelOptions>;

  beforeAll(async () => {
    fake = await createOpenAIEmbeddingsFake();
    up = adapter("emb-up", `  - { name: emb-up, kind: openai, endpoints: ["${fake.baseUrl}"], apiKey: "${API_KEY}", headers: { x-team: search } }`);
    azure = adapter("azure-emb", `  - { name: azure-emb, kind: openai, endpoints: ["${fake.url}"], apiKey: "${AZURE_KEY}", options: { azure: { apiVersion: "2024-10-21" } } }`);
  });
  afterAll(async () => {
    await up.close();
    await azure.close();
    await fake.close();
  });
  beforeEach(() => {
    fake.reset();
    Object.assign(fake.settings, { dimensions: 1536, maxInputs: 2048, base64: "answer" });
  });

  it("asks for base64 by default and returns each input's vector as packed FP32, in order, with usage", async () => {
    const texts = ["the quick brown fox", "jumps", "over the lazy dog"];
    const res = await embedWith(up, { texts });
    expect(res.embeddings.map((e) => e.index)).toEqual([0, 1, 2]);
    expect(res.embeddings.map((e) => [...e.fp32])).toEqual(texts.map((t) => expected(t)));
    expect(res.dimensions).toBe(1536);
    expect(res.usage).toMatchObject({ promptTokens: 9, completionTokens: 0, totalTokens: 9 });
    const rec = fake.requests[0]!;
    expect(rec.method).toBe("POST");
    expect(rec.url).toBe("/v1/embeddings");
    expect(rec.rawBody).toBe(JSON.stringify({ model: MODEL, input: texts, encoding_format: "base64" }));
    expect(rec.headers["authorization"]).toBe(`Bearer ${API_KEY}`);
    expect(rec.headers["content-type"]).toBe("application/json");
    expect(rec.headers["x-team"]).toBe("search");
  });

  it("asks for JSON numbers with embeddingEncoding float, and gets the same FP32 bytes", async () => {
    const texts = ["alpha", "beta"];
    const res = await embedWith(up, { texts }, { embeddingEncoding: "float" });
    expect((fake.requests[0]!.body as { encoding_format: string }).encoding_format).toBe("float");
    expect(res.embeddings.map((e) => [...e.fp32])).toEqual(texts.map((t) => expected(t)));
  });

  it("reads numbers from a server that ignores encoding_format base64", async () => {
    fake.settings.base64 = "ignore";
    const res = await embedWith(up, { texts: ["alpha"] });
    expect([...res.embeddings[0]!.fp32]).toEqual(expected("alpha"));
  });

  it("fails with INVALID_ARGUMENT where a server refuses base64, and works there with float", async () => {
    fake.settings.base64 = "refuse";
    const err = await failureOf(embedWith(up, { texts: ["alpha"] }));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.message).toContain("base64");
    const res = await embedWith(up, { texts: ["alpha"] }, { embeddingEncoding: "float" });
    expect([...res.embeddings[0]!.fp32]).toEqual(expected("alpha"));
  });

  it("passes dimensions on and returns the shortened unit vectors", async () => {
    const res = await embedWith(up, { texts: ["alpha", "beta"], dimensions: 256 });
    expect((fake.requests[0]!.body as { dimensions: number }).dimensions).toBe(256);
    expect(res.dimensions).toBe(256);
    expect(res.embeddings.map((e) => [...e.fp32])).toEqual([expected("alpha", 256), expected("beta", 256)]);
    const v = fp32View(res.embeddings[0]!.fp32);
    expect(Math.hypot(...v)).toBeCloseTo(1, 5);
    // The first values of the full vector, scaled: not the full vector's own.
    const full = fakeEmbedding("alpha");
    expect(v[0]! / full[0]!).toBeCloseTo(v[1]! / full[1]!, 4);
    expect(Math.abs(v[0]! / full[0]!)).toBeGreaterThan(1.5);
  });

  it("sends token ids as lists of numbers and counts them", async () => {
    const tokens = [[9906, 1917], [1, 2, 3]];
    const res = await embedWith(up, { tokens: tokens.map((ids) => ({ ids })) });
    expect((fake.requests[0]!.body as { input: unknown }).input).toEqual(tokens);
    expect(res.embeddings.map((e) => [...e.fp32])).toEqual(tokens.map((t) => expected(t)));
    expect(res.usage?.promptTokens).toBe(5);
  });

  it("puts an answer listed out of order back in input order", async () => {
    fake.setScenario("out-of-order");
    const texts = ["one", "two", "three", "four"];
    const res = await embedWith(up, { texts });
    expect(res.embeddings.map((e) => e.index)).toEqual([0, 1, 2, 3]);
    expect(res.embeddings.map((e) => [...e.fp32])).toEqual(texts.map((t) => expected(t)));
  });

  it.each<EmbeddingsScenario>(["missing-index", "duplicate-index", "wrong-count", "bad-base64", "mismatched-lengths"])(
    "fails a %s answer with UNAVAILABLE UPSTREAM_BAD_RESPONSE",
    async (scenario) => {
      fake.setScenario(scenario);
      for (const embeddingEncoding of ["base64", "float"] as const) {
        const err = await failureOf(embedWith(up, { texts: ["one", "two", "three"] }, { embeddingEncoding }));
        expect(err.code).toBe(Code.Unavailable);
        expect(err.reason).toBe(Reason.UpstreamBadResponse);
      }
    },
  );

  it.each<[EmbeddingsScenario, Code, string]>([
    ["rate-limited", Code.ResourceExhausted, Reason.UpstreamRateLimited],
    ["server-error", Code.Unavailable, Reason.UpstreamUnavailable],
    ["bad-request", Code.InvalidArgument, Reason.InvalidArgument],
  ])("maps %s through the HTTP status mapping", async (scenario, code, reason) => {
    fake.enqueueScenario(scenario, { retryAfter: "3" });
    const err = await failureOf(embedWith(up, { texts: ["one"] }));
    expect(err.code).toBe(code);
    expect(err.reason).toBe(reason);
    if (scenario === "rate-limited") expect(err.retryAfterMs).toBe(3000);
    if (scenario === "bad-request") expect(err.message).toContain("maximum context length is 8192 tokens");
    expect(JSON.stringify([err.message, err.metadata])).not.toContain(API_KEY);
  });

  it("fails with INVALID_ARGUMENT when the server refuses a batch over its maximum", async () => {
    fake.settings.maxInputs = 2;
    const err = await failureOf(embedWith(up, { texts: ["a", "b", "c"] }));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.message).toContain(INVALID_INPUT_MESSAGE.slice(0, 20));
    expect(fake.requests[0]!.status).toBe(400);
  });

  it("uses Azure's deployment path, api-version and api-key, without model in the body", async () => {
    const res = await embedWith(azure, { texts: ["alpha"], dimensions: 64 });
    expect([...res.embeddings[0]!.fp32]).toEqual(expected("alpha", 64));
    const rec = fake.requests[0]!;
    expect(rec.url).toBe(`/openai/deployments/${MODEL}/embeddings?api-version=2024-10-21`);
    expect(rec.headers["api-key"]).toBe(AZURE_KEY);
    expect(rec.headers["authorization"]).toBeUndefined();
    expect(rec.body).toEqual({ input: ["alpha"], encoding_format: "base64", dimensions: 64 });
  });

  it("stops waiting when the caller cancels, closing the request", async () => {
    fake.setScenario("embed", { delayMs: 60_000 });
    const controller = new AbortController();
    const reason = new GatewayError(Code.Canceled, "the caller cancelled");
    const pending = failureOf(embedWith(up, { texts: ["slow"] }, undefined, controller.signal));
    await fake.waitForRequest(0);
    controller.abort(reason);
    expect(await pending).toBe(reason);
    expect((await fake.settled(0)).abortedAt).toBeDefined();
  });
});
