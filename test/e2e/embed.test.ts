/**
 * Embed end to end over the gRPC listener (a grpc-js client, contract loaded from proto/ at run
 * time) and the Connect JSON route, against the built-in mock (src/upstreams/mock/mock-embed.ts):
 * vectors in input order in both encodings, the cache input by input (hit, partial), batches over
 * the model's maxBatch, fallbacks, ListModels' EMBED, and every bad input of issue 19 refused
 * with INVALID_ARGUMENT naming the field before any upstream is called.
 */
import { Metadata, type ServiceError, status } from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { App } from "../../src/server/app.js";
import { errorInfoOf, expectServiceError, inferenceClient, loaderOptions, type ProtoClient, statusDetails } from "../helpers/proto-clients.js";
import { startInProcess } from "../helpers/servers.js";

interface Embedding {
  index: number;
  values: number[];
  fp32: Buffer;
  cached: boolean;
}
interface EmbedResponse {
  embeddings: Embedding[];
  model: string;
  model_version: string;
  upstream: string;
  cached: boolean;
  usage: { prompt_tokens: number; total_tokens: number };
  dimensions: number;
}

const config = `
upstreams:
  - { name: mock, kind: mock }
  - { name: down, kind: mock, options: { failCode: UNAVAILABLE } }
  - name: flaky
    kind: mock
    options: { failCode: UNAVAILABLE }
    resilience: { retry: { maxAttempts: 1 }, breaker: { consecutiveFailures: 3, volumeThreshold: 3, resetTimeoutMs: 60000 } }
models:
  - { name: mock-embed, upstream: mock, capabilities: [embed], embedding: { dimensions: 4096 } }
  - { name: small, upstream: mock, capabilities: [embed], embedding: { maxInputs: 4, dimensions: 64 } }
  - { name: batched, upstream: mock, capabilities: [embed], embedding: { maxBatch: 3 }, cache: { policy: off } }
  - { name: uncached, upstream: mock, capabilities: [embed], cache: { policy: off } }
  - { name: broken, upstream: down, capabilities: [embed], fallbacks: [spare] }
  - { name: spare, upstream: mock, capabilities: [embed] }
  - { name: refuses, upstream: down, capabilities: [embed] }
  - { name: breaks, upstream: flaky, capabilities: [embed] }
  - { name: mock-chat, upstream: mock }
`;

let app: App;
let client: ProtoClient;

beforeAll(async () => {
  app = await startInProcess(config);
  client = inferenceClient(app.grpcAddress);
});

afterAll(async () => {
  client?.close();
  await app?.shutdown();
});

/** An Embed call, with the response's headers. */
function embedWithHeaders(request: object): Promise<{ res: EmbedResponse; headers: Metadata }> {
  return new Promise((resolve, reject) => {
    let headers = new Metadata();
    const call = (client.client as unknown as { makeUnaryRequest: Function }).makeUnaryRequest(
      "/infergate.v1.InferenceService/Embed",
      (r: object) => serialize(r),
      (b: Buffer) => deserialize(b),
      request,
      new Metadata(),
      { deadline: Date.now() + 10_000 },
      (err: ServiceError | null, res: EmbedResponse) => (err !== null ? reject(err) : resolve({ res, headers })),
    );
    call.on("metadata", (m: Metadata) => (headers = m));
  });
}

let serialize: (r: object) => Buffer;
let deserialize: (b: Buffer) => EmbedResponse;
beforeAll(() => {
  const def = protoLoader.loadSync("infergate/v1/inference_service.proto", loaderOptions)["infergate.v1.InferenceService"] as Record<
    string,
    protoLoader.MethodDefinition<object, EmbedResponse>
  >;
  serialize = def["Embed"]!.requestSerialize as (r: object) => Buffer;
  deserialize = def["Embed"]!.responseDeserialize as (b: Buffer) => EmbedResponse;
});

const embed = (request: object) => client.unary<EmbedResponse>("Embed", request);
const norm = (v: ArrayLike<number>) => Math.sqrt(Array.from(v).reduce((s, x) => s + x * x, 0));
const floats = (b: Buffer) => Array.from(new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)));

describe("Embed over gRPC", () => {
  it("answers one unit vector per input, in input order, the same for the same text", async () => {
    const res = await embed({ model: "uncached", texts: ["alpha beta", "gamma", "alpha beta"] });
    expect(res.embeddings.map((e) => e.index)).toEqual([0, 1, 2]);
    expect(res.dimensions).toBe(256);
    for (const e of res.embeddings) {
      expect(e.values).toHaveLength(256);
      expect(e.fp32).toHaveLength(0);
      expect(norm(e.values)).toBeCloseTo(1, 5);
    }
    expect(res.embeddings[2]!.values).toEqual(res.embeddings[0]!.values);
    expect(res.embeddings[1]!.values).not.toEqual(res.embeddings[0]!.values);
    expect(res).toMatchObject({ model: "uncached", model_version: "1", upstream: "mock", cached: false });
    expect(res.usage).toMatchObject({ prompt_tokens: 5, total_tokens: 5 });
  });

  it("gives packed little-endian FP32 equal to the float values", async () => {
    const asFloats = await embed({ model: "uncached", texts: ["one", "two"] });
    const packed = await embed({ model: "uncached", texts: ["one", "two"], encoding: "EMBEDDING_ENCODING_FP32_BYTES" });
    expect(packed.embeddings.map((e) => e.values)).toEqual([[], []]);
    expect(packed.embeddings.map((e) => floats(e.fp32))).toEqual(asFloats.embeddings.map((e) => e.values));
  });

  it("takes token ids and shorter dimensions", async () => {
    const res = await embed({ model: "uncached", tokens: [{ ids: [1, 2, 3] }, { ids: [7] }], dimensions: 64 });
    expect(res.dimensions).toBe(64);
    expect(res.embeddings.map((e) => e.values.length)).toEqual([64, 64]);
    expect(res.usage.prompt_tokens).toBe(4);
  });

  it("caches input by input: a repeat is a hit, a batch with new inputs is partial", async () => {
    const texts = ["cache me 1", "cache me 2"];
    const first = await embedWithHeaders({ model: "mock-embed", texts });
    expect(first.headers.get("infergate-cache")).toEqual(["miss"]);
    expect(first.res.embeddings.map((e) => e.cached)).toEqual([false, false]);

    const again = await embedWithHeaders({ model: "mock-embed", texts });
    expect(again.headers.get("infergate-cache")).toEqual(["hit"]);
    expect(again.res.cached).toBe(true);
    expect(again.res.embeddings.map((e) => e.values)).toEqual(first.res.embeddings.map((e) => e.values));
    // Nothing went upstream: no tokens counted.
    expect(again.res.usage.prompt_tokens).toBe(0);

    const mixed = await embedWithHeaders({ model: "mock-embed", texts: ["cache me 2", "new one here", "cache me 1"] });
    expect(mixed.headers.get("infergate-cache")).toEqual(["partial"]);
    expect(mixed.res.embeddings.map((e) => e.cached)).toEqual([true, false, true]);
    expect(mixed.res.cached).toBe(false);
    expect(mixed.res.embeddings[0]!.values).toEqual(first.res.embeddings[1]!.values);
    expect(mixed.res.embeddings[2]!.values).toEqual(first.res.embeddings[0]!.values);
    expect(mixed.res.usage.prompt_tokens).toBe(3);

    // The dimensions are part of an input's key.
    const shorter = await embedWithHeaders({ model: "mock-embed", texts, dimensions: 32 });
    expect(shorter.headers.get("infergate-cache")).toEqual(["miss"]);
    expect(shorter.res.dimensions).toBe(32);

    const bypass = await embedWithHeaders({ model: "mock-embed", texts, cache_policy: "CACHE_POLICY_BYPASS" });
    expect(bypass.headers.get("infergate-cache")).toEqual(["bypass"]);
    expect(bypass.res.embeddings.map((e) => e.cached)).toEqual([false, false]);
  });

  it("splits a request over the model's maxBatch and joins it in input order", async () => {
    const texts = Array.from({ length: 7 }, (_, i) => `text number ${i}`);
    const batched = await embed({ model: "batched", texts });
    const whole = await embed({ model: "uncached", texts });
    expect(batched.embeddings.map((e) => e.index)).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(batched.embeddings.map((e) => e.values)).toEqual(whole.embeddings.map((e) => e.values));
    expect(batched.usage.prompt_tokens).toBe(whole.usage.prompt_tokens);
  });

  it("falls back to another embedding model when the upstream is down", async () => {
    const res = await embed({ model: "broken", texts: ["fall back"] });
    expect(res).toMatchObject({ model: "spare", upstream: "mock" });
    expect((await expectServiceError(embed({ model: "refuses", texts: ["x"] }))).code).toBe(status.UNAVAILABLE);
  });

  it("opens the upstream's breaker after failing Embeds: the next fails fast with CIRCUIT_OPEN", async () => {
    for (let i = 0; i < 3; i++) {
      const err = await expectServiceError(embed({ model: "breaks", texts: [`fail ${i}`] }));
      expect(errorInfoOf(statusDetails(err))?.["reason"]).toBe("UPSTREAM_UNAVAILABLE");
    }
    const open = await expectServiceError(embed({ model: "breaks", texts: ["once more"] }));
    expect(open.code).toBe(status.UNAVAILABLE);
    expect(errorInfoOf(statusDetails(open))?.["reason"]).toBe("CIRCUIT_OPEN");
  });

  it("lists EMBED for embedding models only", async () => {
    const res = await client.unary<{ models: { name: string; capabilities: string[] }[] }>("ListModels", {});
    const caps = Object.fromEntries(res.models.map((m) => [m.name, m.capabilities]));
    expect(caps["mock-embed"]).toEqual(["CAPABILITY_EMBED"]);
    expect(caps["mock-chat"]).toEqual(["CAPABILITY_PREDICT", "CAPABILITY_CHAT", "CAPABILITY_GENERATE"]);
  });

  describe("refuses bad input with INVALID_ARGUMENT naming the field, before the upstream", () => {
    // `refuses` fails every upstream call with UNAVAILABLE: INVALID_ARGUMENT shows the upstream was not called.
    const cases: [string, object, string][] = [
      ["an empty input list", { model: "refuses" }, "texts"],
      ["an empty text", { model: "refuses", texts: ["a", ""] }, "texts[1]"],
      ["an empty token list", { model: "refuses", tokens: [{ ids: [1] }, { ids: [] }] }, "tokens[1].ids"],
      ["texts and tokens together", { model: "refuses", texts: ["a"], tokens: [{ ids: [1] }] }, "tokens"],
      ["dimensions 0", { model: "refuses", texts: ["a"], dimensions: 0 }, "dimensions"],
      ["dimensions above the model's", { model: "small", texts: ["a"], dimensions: 65 }, "dimensions"],
      ["more inputs than the model takes", { model: "small", texts: ["a", "b", "c", "d", "e"] }, "texts"],
      ["a version pin on a kind without versions", { model: "refuses", texts: ["a"], model_version: "2" }, "model_version"],
    ];
    for (const [what, request, field] of cases) {
      it(what, async () => {
        const err = await expectServiceError(embed(request));
        expect(err.code).toBe(status.INVALID_ARGUMENT);
        expect((errorInfoOf(statusDetails(err))?.["metadata"] as Record<string, string>)["field"]).toBe(field);
      });
    }

    it("a model without EMBED: UNIMPLEMENTED", async () => {
      const err = await expectServiceError(embed({ model: "mock-chat", texts: ["a"] }));
      expect(err.code).toBe(status.UNIMPLEMENTED);
      expect(errorInfoOf(statusDetails(err))?.["reason"]).toBe("CAPABILITY_NOT_SUPPORTED");
    });
  });
});

describe("Embed over Connect JSON", () => {
  it("answers with the packed vectors in base64, as proto JSON has bytes", async () => {
    const res = await fetch(`http://${app.httpAddress}/infergate.v1.InferenceService/Embed`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "uncached", texts: ["hello there"], encoding: "EMBEDDING_ENCODING_FP32_BYTES", dimensions: 8 }),
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { embeddings: { index?: number; fp32: string }[]; dimensions: number };
    expect(body.dimensions).toBe(8);
    const bytes = Buffer.from(body.embeddings[0]!.fp32, "base64");
    expect(bytes).toHaveLength(32);
    const grpc = await embed({ model: "uncached", texts: ["hello there"], dimensions: 8 });
    expect(floats(bytes)).toEqual(grpc.embeddings[0]!.values);
  });

  it("refuses bad input with 400 and the field", async () => {
    const res = await fetch(`http://${app.httpAddress}/infergate.v1.InferenceService/Embed`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "uncached", texts: [] }),
    });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { code: string; message: string };
    expect(body.code).toBe("invalid_argument");
    expect(body.message).toContain("texts");
  });
});
