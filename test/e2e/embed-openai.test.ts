/**
 * Embed through the `openai` kind end to end: a grpc-js client (contract loaded from proto/ at run
 * time) → infergate in this process on loopback ports → the OpenAI embeddings fake
 * (test/fakes/openai-embeddings-fake.ts) on its own port. Asserts what the client gets (vectors in
 * input order in both encodings, dimensions, usage, per-item `cached`) and what reached the fake
 * (batches of at most the model's maxBatch, only the inputs the cache lacks, base64 or float on
 * the wire, dimensions, the key in Authorization), retries of 429 and 500, and that no log line
 * holds the key.
 */
import { status } from "@grpc/grpc-js";
import { pino } from "pino";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { App } from "../../src/server/app.js";
import { createOpenAIEmbeddingsFake, embeddingInputs, fakeEmbedding, type OpenAIEmbeddingsFake } from "../fakes/openai-embeddings-fake.js";
import { expectServiceError, inferenceClient, type ProtoClient } from "../helpers/proto-clients.js";
import { lineSink } from "../helpers/process-env.js";
import { startInProcess } from "../helpers/servers.js";

const API_KEY = "sk-test-embed-e2e-5b8c1f0a9d3e";
const UPSTREAM_MODEL = "text-embedding-3-small";

interface Embedding {
  index: number;
  values: number[];
  fp32: Buffer;
  cached: boolean;
}
interface EmbedResponse {
  embeddings: Embedding[];
  model: string;
  upstream: string;
  cached: boolean;
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
  dimensions: number;
}

/** The body of one embeddings request as the fake recorded it. */
interface WireBody {
  model?: string;
  input: string[];
  encoding_format?: string;
  dimensions?: number;
}

let fake: OpenAIEmbeddingsFake;
let app: App;
let client: ProtoClient;
/** Every line infergate logged (JSON), at debug level and above. */
const logLines: string[] = [];

beforeAll(async () => {
  fake = await createOpenAIEmbeddingsFake({ dimensions: 1536 });
  app = await startInProcess(
    `
upstreams:
  - name: emb-up
    kind: openai
    endpoints: ["${fake.baseUrl}"]
    apiKey: "${API_KEY}"
    timeoutMs: 10000
    resilience: { breaker: { enabled: false }, retry: { maxAttempts: 3, backoffBaseMs: 1, backoffMaxMs: 5 } }
models:
  - name: emb
    upstream: emb-up
    upstreamModel: ${UPSTREAM_MODEL}
    capabilities: [embed]
    embedding: { maxBatch: 3, dimensions: 1536 }
  - name: emb-float
    upstream: emb-up
    upstreamModel: ${UPSTREAM_MODEL}
    capabilities: [embed]
    embedding: { maxBatch: 3, dimensions: 1536 }
    options: { embeddingEncoding: float }
`,
    pino({ level: "debug" }, lineSink(logLines)),
  );
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

const embed = (request: object) => client.unary<EmbedResponse>("Embed", request, { timeoutMs: 20_000 });
/** The packed FP32 bytes of the fake's vector for `text`. */
const packed = (text: string, dimensions?: number) => Buffer.from(fakeEmbedding(text, dimensions).buffer);
const bodies = () => fake.requests.map((r) => r.body as WireBody);
const words = (texts: string[]) => texts.reduce((n, t) => n + t.split(/\s+/).filter((w) => w !== "").length, 0);

describe("Embed through the openai kind", () => {
  it("sends 7 texts as batches of at most 3 and answers in input order with the upstream's vectors (FP32_BYTES)", async () => {
    const texts = Array.from({ length: 7 }, (_, i) => `batch text number ${i}`);
    const res = await embed({ model: "emb", texts, encoding: "EMBEDDING_ENCODING_FP32_BYTES" });
    expect(res.embeddings.map((e) => e.index)).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(res.embeddings.map((e) => e.fp32)).toEqual(texts.map((t) => packed(t)));
    expect(res.embeddings.every((e) => e.values.length === 0 && !e.cached)).toBe(true);
    expect(res).toMatchObject({ model: "emb", upstream: "emb-up", cached: false, dimensions: 1536 });
    // Usage: the upstream's counts of every batch, summed.
    expect(res.usage).toMatchObject({ prompt_tokens: words(texts), total_tokens: words(texts) });

    const batches = embeddingInputs(fake);
    expect(batches.length).toBe(3);
    for (const b of batches) expect(b.length).toBeLessThanOrEqual(3);
    expect(batches.flat().sort()).toEqual([...texts].sort());
    for (const body of bodies()) {
      expect(body).toMatchObject({ model: UPSTREAM_MODEL, encoding_format: "base64" });
      expect(body.dimensions).toBeUndefined();
    }
    for (const rec of fake.requests) {
      expect(rec.path).toBe("/v1/embeddings");
      expect(rec.headers["authorization"]).toBe(`Bearer ${API_KEY}`);
    }
  });

  it("answers FLOAT values equal to the upstream's FP32 vectors", async () => {
    const texts = ["float one", "float two", "float three", "float four"];
    const res = await embed({ model: "emb", texts, encoding: "EMBEDDING_ENCODING_FLOAT" });
    expect(res.embeddings.map((e) => e.values)).toEqual(texts.map((t) => Array.from(fakeEmbedding(t))));
    expect(res.embeddings.every((e) => e.fp32.length === 0)).toBe(true);
  });

  it("passes dimensions on and answers the shortened vectors", async () => {
    const texts = ["short one", "short two"];
    const res = await embed({ model: "emb", texts, dimensions: 256, encoding: "EMBEDDING_ENCODING_FP32_BYTES" });
    expect(res.dimensions).toBe(256);
    expect(res.embeddings.map((e) => e.fp32)).toEqual(texts.map((t) => packed(t, 256)));
    expect(bodies().map((b) => b.dimensions)).toEqual([256]);
  });

  it("asks for JSON numbers on a model with embeddingEncoding float, with the same vectors", async () => {
    const texts = ["numbers one", "numbers two", "numbers three", "numbers four"];
    const res = await embed({ model: "emb-float", texts, encoding: "EMBEDDING_ENCODING_FP32_BYTES" });
    expect(res.embeddings.map((e) => e.fp32)).toEqual(texts.map((t) => packed(t)));
    expect(bodies().map((b) => b.encoding_format)).toEqual(["float", "float"]);
  });

  it("sends only the inputs the cache lacks, and marks the cached ones", async () => {
    const old = ["cached alpha", "cached beta", "cached gamma", "cached delta"];
    await embed({ model: "emb", texts: old });
    expect(embeddingInputs(fake).flat().sort()).toEqual([...old].sort());
    fake.reset();

    const fresh = ["fresh one", "fresh two", "fresh three", "fresh four"];
    const texts = [old[0]!, fresh[0]!, fresh[1]!, old[1]!, old[2]!, fresh[2]!, old[3]!, fresh[3]!];
    const res = await embed({ model: "emb", texts, encoding: "EMBEDDING_ENCODING_FP32_BYTES" });
    expect(embeddingInputs(fake).flat().sort()).toEqual([...fresh].sort());
    for (const b of embeddingInputs(fake)) expect(b.length).toBeLessThanOrEqual(3);
    expect(res.embeddings.map((e) => e.cached)).toEqual(texts.map((t) => old.includes(t)));
    expect(res.embeddings.map((e) => e.fp32)).toEqual(texts.map((t) => packed(t)));
    expect(res.cached).toBe(false);
    // Only the upstream's tokens: the cached inputs cost none.
    expect(res.usage.prompt_tokens).toBe(words(fresh));

    fake.reset();
    const again = await embed({ model: "emb", texts });
    expect(fake.requests).toHaveLength(0);
    expect(again.cached).toBe(true);
    expect(again.usage.prompt_tokens).toBe(0);
  });

  it("retries a 429 and a 500, then answers", async () => {
    fake.enqueueScenario("rate-limited", { retryAfter: "0" });
    fake.enqueueScenario("server-error");
    const texts = ["retry me", "and me"];
    const res = await embed({ model: "emb", texts, encoding: "EMBEDDING_ENCODING_FP32_BYTES" });
    expect(res.embeddings.map((e) => e.fp32)).toEqual(texts.map((t) => packed(t)));
    expect(fake.requests.map((r) => r.status)).toEqual([429, 500, 200]);
    expect(embeddingInputs(fake)).toEqual([texts, texts, texts]);
  });

  it("gives the client the mapped status of an upstream that keeps failing or refuses", async () => {
    fake.setScenario("server-error");
    expect((await expectServiceError(embed({ model: "emb", texts: ["always failing"] }))).code).toBe(status.UNAVAILABLE);
    expect(fake.requests).toHaveLength(3);
    fake.reset();
    fake.setScenario("bad-request");
    expect((await expectServiceError(embed({ model: "emb", texts: ["refused"] }))).code).toBe(status.INVALID_ARGUMENT);
    expect(fake.requests).toHaveLength(1);
  });

  it("sends the key in Authorization only: no log line holds it", async () => {
    const from = logLines.length;
    await embed({ model: "emb", texts: ["log check"] });
    expect(fake.requests[0]!.headers["authorization"]).toBe(`Bearer ${API_KEY}`);
    fake.setScenario("server-error");
    await expectServiceError(embed({ model: "emb", texts: ["log check failing"] }));
    fake.setScenario("bad-request");
    await expectServiceError(embed({ model: "emb", texts: ["log check refused"] }));
    // The three calls were logged (so the search below searches something).
    await expect.poll(() => logLines.slice(from).filter((l) => l.includes("Embed")).length).toBeGreaterThanOrEqual(3);
    expect(logLines.filter((l) => l.includes(API_KEY))).toEqual([]);
  });
});
