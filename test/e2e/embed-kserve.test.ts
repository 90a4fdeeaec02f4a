/**
 * Embed on the `kserve` kind (issue 19), over both protocols of the Open Inference Protocol,
 * against the Triton fake's text-embedding models (test/fakes/triton-fake.ts) on loopback ports:
 * the adapter called directly (what it sends, what it makes of good and malformed answers), then
 * through infergate's gRPC listener with a grpc-js client (contract loaded from proto/ at run
 * time): both encodings, the per-input cache, version pins, dimensions, refusals.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EmbedRequestSchema, type EmbedResponse } from "../../gen/infergate/v1/inference_service_pb.js";
import { configSchema } from "../../src/config/schema.js";
import { GatewayError } from "../../src/core/gateway-error.js";
import type { Upstream } from "../../src/core/upstream.js";
import type { App } from "../../src/server/app.js";
import { kserveKind, kserveModelOptionsSchema, kserveOptionsSchema, type KserveModelOptionsConfig } from "../../src/upstreams/kserve/kserve-upstream.js";
import { fp32View, shortenFp32 } from "../../src/wire/fp32.js";
import { createTritonFake, fakeEmbeddingDim, fakeTextEmbedding, type TritonFake, type TritonRecordedRequest } from "../fakes/triton-fake.js";
import { seen } from "../faults/helpers/harness.js";
import { expectServiceError, inferenceClient, type ProtoClient } from "../helpers/proto-clients.js";
import { startInProcess } from "../helpers/servers.js";

const protocols = ["grpc", "rest"] as const;
type Protocol = (typeof protocols)[number];

const texts = ["hello", "world", "héllo wörld ✓"];

/** The vectors of an answer, as plain arrays. */
const vectors = (res: EmbedResponse) => res.embeddings.map((e) => [...fp32View(e.fp32)]);

/** The error a promise rejects with, as a GatewayError. */
async function refusal(p: Promise<unknown>): Promise<GatewayError> {
  const err: unknown = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(GatewayError);
  return err as GatewayError;
}

describe.each(protocols)("kserve adapter's embed over %s", (protocol: Protocol) => {
  let fake: TritonFake;
  let upstream: Upstream<KserveModelOptionsConfig>;

  beforeAll(async () => {
    fake = await createTritonFake();
    const url = protocol === "grpc" ? `http://${fake.grpcAddress}` : fake.restUrl;
    const config = configSchema.parse({
      upstreams: [{ name: "tri", kind: "kserve", endpoints: [url], options: { protocol } }],
      models: [{ name: "m", upstream: "tri" }],
    }).upstreams[0]!;
    upstream = kserveKind.create(config, kserveOptionsSchema.parse(config.options));
  });

  afterAll(async () => {
    await upstream?.close();
    await fake?.close();
  });

  function embed(upstreamModel: string, init: MessageInitShape<typeof EmbedRequestSchema>, options: Record<string, unknown> = {}): Promise<EmbedResponse> {
    return upstream.embed!({
      request: { ...create(EmbedRequestSchema, init), model: "m" },
      upstreamModel,
      modelOptions: kserveModelOptionsSchema.parse(options),
      signal: new AbortController().signal,
      deadline: Date.now() + 10_000,
      headers: {},
    });
  }

  /** The ModelInfer requests the fake got since the last call. */
  function inferCalls(): TritonRecordedRequest[] {
    const calls = fake.requests.filter((r) => r.method === "ModelInfer");
    fake.requests.length = 0;
    return calls;
  }

  it("sends the texts as one BYTES input [batch] and answers row i as input i's vector", async () => {
    inferCalls();
    const res = await embed("text_embedding", { texts });
    expect(res.embeddings.map((e) => e.index)).toEqual([0, 1, 2]);
    expect(res.embeddings.every((e) => e.values.length === 0 && !e.cached)).toBe(true);
    expect(vectors(res)).toEqual(texts.map((t) => [...fakeTextEmbedding(t)]));
    expect(res.dimensions).toBe(fakeEmbeddingDim);
    expect(res.usage?.promptTokens).toBe(0);
    const [call, ...more] = inferCalls();
    expect(more).toEqual([]);
    expect(call).toMatchObject({ model: "text_embedding", version: "", requestedOutputs: ["embedding"], status: protocol === "grpc" ? 0 : 200 });
    expect(call!.inputs).toHaveLength(1);
    const input = call!.inputs[0]!;
    // Over gRPC in raw_input_contents, as Triton's own clients send BYTES.
    expect(input).toMatchObject({ name: "text", datatype: "BYTES", shape: [3], form: protocol === "grpc" ? "raw" : "json" });
    expect(input.values!.map((v) => new TextDecoder().decode(v as Uint8Array))).toEqual(texts);
  });

  it("each vector holds its own bytes, not a view of the whole answer", async () => {
    const res = await embed("text_embedding", { texts });
    for (const e of res.embeddings) {
      expect(e.fp32.byteLength).toBe(fakeEmbeddingDim * 4);
      expect(e.fp32.buffer.byteLength).toBe(fakeEmbeddingDim * 4);
    }
  });

  it("takes the tensor names and the [batch, 1] shape from the model's options", async () => {
    inferCalls();
    const options = { embedding: { input: "TEXT", output: "EMBEDDINGS", inputShape: "batch1" } };
    const res = await embed("text_embedding_b1", { texts: ["a", "b"] }, options);
    expect(vectors(res)).toEqual(["a", "b"].map((t) => [...fakeTextEmbedding(t)]));
    const [call] = inferCalls();
    expect(call).toMatchObject({ requestedOutputs: ["EMBEDDINGS"] });
    expect(call!.inputs[0]).toMatchObject({ name: "TEXT", datatype: "BYTES", shape: [2, 1] });
  });

  it("the model's own refusal of a wrong input shape is passed on, not read as vectors", async () => {
    // The [batch] model given [batch, 1]: the server refuses it.
    const err = await refusal(embed("text_embedding", { texts: ["a"] }, { embedding: { inputShape: "batch1" } }));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.message).toContain("unexpected shape for input 'text'");
  });

  it("model_version: the request's pin, else the model's upstreamVersion, else none", async () => {
    inferCalls();
    const pinned = await embed("text_embedding", { texts: ["a"], modelVersion: "2" });
    const configured = await embed("text_embedding", { texts: ["a"] }, { upstreamVersion: "2" });
    const overridden = await embed("text_embedding", { texts: ["a"], modelVersion: "1" }, { upstreamVersion: "2" });
    expect(vectors(pinned)).toEqual([[...fakeTextEmbedding("a", "2")]]);
    expect(vectors(configured)).toEqual([[...fakeTextEmbedding("a", "2")]]);
    expect(vectors(overridden)).toEqual([[...fakeTextEmbedding("a", "1")]]);
    expect(fakeTextEmbedding("a", "2")).not.toEqual(fakeTextEmbedding("a", "1"));
    const calls = inferCalls();
    expect(calls.map((c) => [c.version, c.servedVersion])).toEqual([
      ["2", "2"],
      ["2", "2"],
      ["1", "1"],
    ]);
    if (protocol === "rest") {
      expect(calls.map((c) => c.path)).toEqual([
        "POST /v2/models/text_embedding/versions/2/infer",
        "POST /v2/models/text_embedding/versions/2/infer",
        "POST /v2/models/text_embedding/versions/1/infer",
      ]);
    }
  });

  it("dimensions below the model's shorten each vector to unit length; equal leaves it; above is INVALID_ARGUMENT", async () => {
    const short = await embed("text_embedding", { texts, dimensions: 3 });
    expect(short.dimensions).toBe(3);
    expect(vectors(short)).toEqual(texts.map((t) => [...fp32View(shortenFp32(new Uint8Array(fakeTextEmbedding(t).buffer), 3))]));
    for (const v of vectors(short)) expect(Math.hypot(...v)).toBeCloseTo(1, 6);
    expect(vectors(short)[0]).not.toEqual([...fakeTextEmbedding(texts[0]!)].slice(0, 3));

    const full = await embed("text_embedding", { texts, dimensions: fakeEmbeddingDim });
    expect(full.dimensions).toBe(fakeEmbeddingDim);
    expect(vectors(full)).toEqual(texts.map((t) => [...fakeTextEmbedding(t)]));

    const err = await refusal(embed("text_embedding", { texts, dimensions: fakeEmbeddingDim + 1 }));
    expect(err).toMatchObject({ code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", metadata: { field: "dimensions" } });
  });

  it("token ids are refused, naming tokens, and nothing is sent", async () => {
    inferCalls();
    const err = await refusal(embed("text_embedding", { tokens: [{ ids: [1, 2, 3] }] }));
    expect(err).toMatchObject({ code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", metadata: { field: "tokens" } });
    expect(err.message).toMatch(/^tokens: /);
    expect(inferCalls()).toEqual([]);
  });

  it.each([
    ["embedding_fp64", /output "embedding" is FP64 where FP32 was expected/],
    ["embedding_short_batch", /output "embedding" has shape \[2, 8\] where \[3, dim\] was expected/],
    ["embedding_flat", /output "embedding" has shape \[24\] where \[3, dim\] was expected/],
    ["embedding_renamed", /no output "embedding" in the answer \(outputs: "OUTPUT0"\)/],
  ])("a wrong answer (%s) is UNAVAILABLE UPSTREAM_BAD_RESPONSE", async (model, message) => {
    const err = await refusal(embed(model, { texts }));
    expect(err).toMatchObject({ code: Code.Unavailable, reason: "UPSTREAM_BAD_RESPONSE", metadata: { upstream: "tri" } });
    expect(err.message).toMatch(message);
  });
});

/** An EmbedResponse as the grpc-js client gets it (proto-loader, keepCase, defaults). */
interface EmbedAnswer {
  embeddings: { index: number; values: number[]; fp32: Buffer; cached: boolean }[];
  model: string;
  model_version: string;
  upstream: string;
  cached: boolean;
  usage: { prompt_tokens: number; total_tokens: number };
  dimensions: number;
}

/** The values of a packed vector as the client got it. */
const floats = (b: Buffer) => [...fp32View(new Uint8Array(b))];

describe("Embed through infergate to a kserve text-embedding model", () => {
  let fake: TritonFake;
  let app: App;
  let client: ProtoClient;

  beforeAll(async () => {
    fake = await createTritonFake();
    const upstream = (protocol: Protocol, url: string) => `
  - name: tri-${protocol}
    kind: kserve
    endpoints: ["${url}"]
    # One attempt, no breaker: each test sees the adapter's own answer.
    resilience: { retry: { maxAttempts: 1 }, breaker: { enabled: false } }
    options: { protocol: ${protocol} }`;
    const models = protocols.flatMap(
      (p) => `
  - { name: emb-${p}, upstream: tri-${p}, upstreamModel: text_embedding, capabilities: [embed], embedding: { dimensions: ${fakeEmbeddingDim} } }
  - { name: emb-nodims-${p}, upstream: tri-${p}, upstreamModel: text_embedding, capabilities: [embed], cache: { policy: "off" } }
  - name: emb-b1-${p}
    upstream: tri-${p}
    upstreamModel: text_embedding_b1
    capabilities: [embed]
    options: { embedding: { input: TEXT, output: EMBEDDINGS, inputShape: batch1 } }
  - { name: emb-bad-${p}, upstream: tri-${p}, upstreamModel: embedding_short_batch, capabilities: [embed] }`,
    );
    app = await startInProcess(`
upstreams:${upstream("grpc", `http://${fake.grpcAddress}`)}${upstream("rest", fake.restUrl)}
models:${models.join("")}
`);
    client = inferenceClient(app.grpcAddress);
  });

  afterAll(async () => {
    client?.close();
    await app?.shutdown();
    await fake?.close();
  });

  const embed = (request: object) => client.unary<EmbedAnswer>("Embed", request);

  /** The texts the fake was asked to embed during `run`, call by call. */
  async function sent<T>(run: () => Promise<T>): Promise<{ result: T; batches: string[][] }> {
    fake.requests.length = 0;
    const result = await run();
    const batches = fake.requests
      .filter((r) => r.method === "ModelInfer")
      .map((r) => r.inputs[0]!.values!.map((v) => new TextDecoder().decode(v as Uint8Array)));
    return { result, batches };
  }

  it("ListModels lists the embedding models with CAPABILITY_EMBED only", async () => {
    const res = await client.unary<{ models: { name: string; capabilities: string[] }[] }>("ListModels", {});
    for (const p of protocols) {
      expect(res.models.find((m) => m.name === `emb-${p}`)?.capabilities).toEqual(["CAPABILITY_EMBED"]);
    }
  });

  describe.each(protocols)("over %s", (protocol) => {
    const m = (name: string) => `${name}-${protocol}`;

    it("FLOAT and packed FP32 answers carry the model's vectors; a repeat is answered from the cache, a new text alone goes upstream", async () => {
      const batch = [`alpha ${protocol}`, `beta ${protocol}`];
      const first = await sent(() => embed({ model: m("emb"), texts: batch }));
      expect(first.batches).toEqual([batch]);
      expect(first.result).toMatchObject({ model: m("emb"), model_version: "1", upstream: `tri-${protocol}`, cached: false, dimensions: fakeEmbeddingDim });
      expect(first.result.usage).toMatchObject({ prompt_tokens: 0, total_tokens: 0 });
      expect(first.result.embeddings.map((e) => [e.index, e.values, e.cached])).toEqual(batch.map((t, i) => [i, [...fakeTextEmbedding(t)], false]));

      const second = await sent(() =>
        embed({ model: m("emb"), texts: [`gamma ${protocol}`, batch[1], batch[0]], encoding: "EMBEDDING_ENCODING_FP32_BYTES" }),
      );
      expect(second.batches).toEqual([[`gamma ${protocol}`]]);
      expect(second.result.embeddings.map((e) => [e.index, floats(e.fp32), e.values, e.cached])).toEqual([
        [0, [...fakeTextEmbedding(`gamma ${protocol}`)], [], false],
        [1, [...fakeTextEmbedding(batch[1]!)], [], true],
        [2, [...fakeTextEmbedding(batch[0]!)], [], true],
      ]);
    });

    it("tensor names and the [batch, 1] shape from the model's options", async () => {
      const { result } = await sent(() => embed({ model: m("emb-b1"), texts: ["x", "y"] }));
      expect(result.embeddings.map((e) => e.values)).toEqual([[...fakeTextEmbedding("x")], [...fakeTextEmbedding("y")]]);
      const call = fake.requests.find((r) => r.method === "ModelInfer")!;
      expect(call.inputs[0]).toMatchObject({ name: "TEXT", shape: [2, 1] });
      expect(call.requestedOutputs).toEqual(["EMBEDDINGS"]);
    });

    it("model_version pins the server's version, answered as the pinned one", async () => {
      const { result } = await sent(() => embed({ model: m("emb-nodims"), model_version: "2", texts: ["pinned"] }));
      expect(result.model_version).toBe("2");
      expect(result.embeddings[0]!.values).toEqual([...fakeTextEmbedding("pinned", "2")]);
      expect(fake.requests.find((r) => r.method === "ModelInfer")).toMatchObject({ version: "2", servedVersion: "2" });
    });

    it("dimensions: shorter vectors renormalised; above the model's, refused here or by the adapter", async () => {
      const short = await embed({ model: m("emb"), texts: ["shorten me"], dimensions: 3 });
      expect(short.dimensions).toBe(3);
      const expected = [...fp32View(shortenFp32(new Uint8Array(fakeTextEmbedding("shorten me").buffer), 3))];
      expect(short.embeddings[0]!.values).toEqual(expected);

      // The model's configured dimensions: refused before anything is sent.
      const before = await sent(() => expectServiceError(embed({ model: m("emb"), texts: ["too long"], dimensions: fakeEmbeddingDim + 1 })));
      expect(seen(before.result)).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, metadata: { field: "dimensions" } });
      expect(before.batches).toEqual([]);
      // None configured: the adapter refuses it once the model's answer shows its length.
      const after = await sent(() => expectServiceError(embed({ model: m("emb-nodims"), texts: ["too long"], dimensions: fakeEmbeddingDim + 1 })));
      expect(seen(after.result)).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, metadata: { field: "dimensions" } });
    });

    it("token ids: INVALID_ARGUMENT naming tokens, nothing sent", async () => {
      const { result, batches } = await sent(() => expectServiceError(embed({ model: m("emb"), tokens: [{ ids: [1, 2] }] })));
      expect(seen(result)).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, reason: "INVALID_ARGUMENT", metadata: { field: "tokens" } });
      expect(result.details).toMatch(/^tokens: /);
      expect(batches).toEqual([]);
    });

    it("a wrong answer from the model: UNAVAILABLE UPSTREAM_BAD_RESPONSE", async () => {
      const err = await expectServiceError(embed({ model: m("emb-bad"), texts: ["a", "b"] }));
      expect(seen(err)).toMatchObject({ code: grpc.status.UNAVAILABLE, reason: "UPSTREAM_BAD_RESPONSE", metadata: { upstream: `tri-${protocol}` } });
    });
  });
});
