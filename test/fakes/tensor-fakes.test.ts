/**
 * Exercises the tensor upstream fakes directly: the Triton / KServe v2 fake over gRPC (grpc-js with
 * the protobuf-es generated schemas) and REST (fetch), and the TF Serving REST fake.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  GRPCInferenceService,
  ModelInferRequestSchema,
  ModelMetadataRequestSchema,
  ModelReadyRequestSchema,
  ServerLiveRequestSchema,
  type ModelInferResponse,
  type ModelMetadataResponse,
  type ModelReadyResponse,
  type ServerLiveResponse,
} from "../../gen/inference/grpc_service_pb.js";
import { createTfServingFake, type TfServingFake } from "./tfserving-fake.js";
import {
  createTritonFake,
  decodeRaw,
  encodeRaw,
  fromBFloat16Bits,
  fromFloat16Bits,
  grpcServiceDefinition,
  packBytesRaw,
  parseJsonLossless,
  stringifyJsonLossless,
  toBFloat16Bits,
  toFloat16Bits,
  unpackBytesRaw,
  type TritonFake,
} from "./triton-fake.js";

const TritonClient = grpc.makeGenericClientConstructor(grpcServiceDefinition(GRPCInferenceService), "GRPCInferenceService");

type Unary = (req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: unknown) => void) => grpc.ClientUnaryCall;

/** Calls one unary method of the fake; rejects with the grpc.ServiceError of a non-OK status. */
function call<Res>(
  client: grpc.Client,
  method: string,
  req: unknown,
  opts: { timeoutMs?: number; metadata?: Record<string, string>; onCall?: (c: grpc.ClientUnaryCall) => void } = {},
): Promise<Res> {
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(opts.metadata ?? {})) md.set(k, v);
  const fn = (client as unknown as Record<string, Unary>)[method];
  if (fn === undefined) throw new Error(`no method ${method}`);
  return new Promise((resolve, reject) => {
    const c = fn.call(client, req, md, { deadline: Date.now() + (opts.timeoutMs ?? 10_000) }, (err, res) =>
      err ? reject(err) : resolve(res as Res),
    );
    opts.onCall?.(c);
  });
}

function inferRequest(init: MessageInitShape<typeof ModelInferRequestSchema>) {
  return create(ModelInferRequestSchema, init);
}

/** A plain Uint8Array copy (grpc-js hands protobuf-es Buffers, which toEqual tells apart). */
const plain = (b: Uint8Array | undefined) => new Uint8Array(b ?? []);

const range16 = Array.from({ length: 16 }, (_, i) => i);
const ones16 = Array.from({ length: 16 }, () => 1);

describe("Triton fake", () => {
  let fake: TritonFake;
  let client: grpc.Client;

  beforeAll(async () => {
    fake = await createTritonFake();
    client = new TritonClient(fake.grpcAddress, grpc.credentials.createInsecure());
  });

  afterAll(async () => {
    client?.close();
    await fake?.close();
  });

  beforeEach(() => {
    fake.requests.length = 0;
  });

  async function rest(path: string, init?: { method?: string; body?: unknown }): Promise<{ status: number; headers: Headers; json: unknown }> {
    const res = await fetch(`${fake.restUrl}${path}`, {
      method: init?.method ?? (init?.body === undefined ? "GET" : "POST"),
      ...(init?.body !== undefined
        ? { body: typeof init.body === "string" ? init.body : stringifyJsonLossless(init.body), headers: { "content-type": "application/json" } }
        : {}),
    });
    const text = await res.text();
    return { status: res.status, headers: res.headers, json: text === "" ? undefined : parseJsonLossless(text) };
  }

  describe("gRPC", () => {
    it("answers the health and metadata RPCs", async () => {
      expect((await call<ServerLiveResponse>(client, "ServerLive", create(ServerLiveRequestSchema))).live).toBe(true);
      const ready = await call<ModelReadyResponse>(client, "ModelReady", create(ModelReadyRequestSchema, { name: "simple" }));
      expect(ready.ready).toBe(true);
      const meta = await call<ModelMetadataResponse>(client, "ModelMetadata", create(ModelMetadataRequestSchema, { name: "simple" }));
      expect(meta.versions).toEqual(["1", "2"]);
      expect(meta.inputs.map((t) => [t.name, t.datatype, t.shape])).toEqual([
        ["INPUT0", "INT32", [-1n, 16n]],
        ["INPUT1", "INT32", [-1n, 16n]],
      ]);
    });

    it("simple: typed contents in, typed sum and difference out", async () => {
      const res = await call<ModelInferResponse>(
        client,
        "ModelInfer",
        inferRequest({
          modelName: "simple",
          id: "req-1",
          inputs: [
            { name: "INPUT0", datatype: "INT32", shape: [1n, 16n], contents: { intContents: range16 } },
            { name: "INPUT1", datatype: "INT32", shape: [1n, 16n], contents: { intContents: ones16 } },
          ],
        }),
        { metadata: { authorization: "Bearer t0k" }, timeoutMs: 5000 },
      );
      expect(res.modelName).toBe("simple");
      expect(res.modelVersion).toBe("1");
      expect(res.id).toBe("req-1");
      expect(res.rawOutputContents).toEqual([]);
      expect(res.outputs.map((o) => o.name)).toEqual(["OUTPUT0", "OUTPUT1"]);
      expect(res.outputs[0]?.shape).toEqual([1n, 16n]);
      expect(res.outputs[0]?.contents?.intContents).toEqual(range16.map((x) => x + 1));
      expect(res.outputs[1]?.contents?.intContents).toEqual(range16.map((x) => x - 1));

      const [rec] = fake.requests;
      expect(rec).toMatchObject({ protocol: "grpc", method: "ModelInfer", model: "simple", version: "", servedVersion: "1", status: 0 });
      expect(rec?.metadata["authorization"]).toBe("Bearer t0k");
      expect(rec?.inputs[0]).toMatchObject({ name: "INPUT0", datatype: "INT32", shape: [1, 16], form: "typed", values: range16 });
      expect(rec?.timeoutMs).toBeGreaterThan(4000);
      expect(rec?.timeoutMs).toBeLessThanOrEqual(5000);
    });

    it("simple: raw in, raw out; version 2 is routed and differs; outputs can be selected", async () => {
      const res = await call<ModelInferResponse>(
        client,
        "ModelInfer",
        inferRequest({
          modelName: "simple",
          modelVersion: "2",
          inputs: [
            { name: "INPUT0", datatype: "INT32", shape: [1n, 16n] },
            { name: "INPUT1", datatype: "INT32", shape: [1n, 16n] },
          ],
          outputs: [{ name: "OUTPUT0" }],
          rawInputContents: [encodeRaw("INT32", range16), encodeRaw("INT32", ones16)],
        }),
      );
      expect(res.modelVersion).toBe("2");
      expect(res.outputs.map((o) => [o.name, o.contents])).toEqual([["OUTPUT0", undefined]]);
      expect(res.rawOutputContents).toHaveLength(1);
      expect(decodeRaw("INT32", res.rawOutputContents[0] as Uint8Array)).toEqual(range16.map((x) => x + 2));
      expect(fake.requests[0]?.inputs[0]).toMatchObject({ form: "raw", rawByteLength: 64 });
    });

    it("identity_fp16: raw bytes come back identical", async () => {
      const bits = [0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00, 0x8000];
      const raw = new Uint8Array(bits.length * 2);
      bits.forEach((b, i) => new DataView(raw.buffer).setUint16(i * 2, b, true));
      const res = await call<ModelInferResponse>(
        client,
        "ModelInfer",
        inferRequest({
          modelName: "identity_fp16",
          inputs: [{ name: "INPUT0", datatype: "FP16", shape: [2n, 3n] }],
          rawInputContents: [raw],
        }),
      );
      expect(res.outputs[0]).toMatchObject({ name: "OUTPUT0", datatype: "FP16", shape: [2n, 3n] });
      expect(plain(res.rawOutputContents[0])).toEqual(raw);
      expect(fake.requests[0]?.inputs[0]?.values).toEqual([1, -2, 65504, 2 ** -24, Infinity, -0]);
    });

    it("identity_any: typed stays typed and raw stays raw, for 64-bit extremes, BOOL and empty tensors", async () => {
      const typed = await call<ModelInferResponse>(
        client,
        "ModelInfer",
        inferRequest({
          modelName: "identity_any",
          inputs: [{ name: "X", datatype: "UINT64", shape: [2n], contents: { uint64Contents: [2n ** 64n - 1n, 2n ** 53n + 1n] } }],
        }),
      );
      expect(typed.outputs[0]?.contents?.uint64Contents).toEqual([2n ** 64n - 1n, 2n ** 53n + 1n]);

      const raw = await call<ModelInferResponse>(
        client,
        "ModelInfer",
        inferRequest({
          modelName: "identity_any",
          inputs: [{ name: "X", datatype: "INT64", shape: [2n] }],
          rawInputContents: [encodeRaw("INT64", [-(2n ** 63n), 2n ** 63n - 1n])],
        }),
      );
      expect(raw.outputs[0]?.contents).toBeUndefined();
      expect(decodeRaw("INT64", raw.rawOutputContents[0] as Uint8Array)).toEqual([-(2n ** 63n), 2n ** 63n - 1n]);

      const bools = await call<ModelInferResponse>(
        client,
        "ModelInfer",
        inferRequest({
          modelName: "identity_any",
          inputs: [{ name: "X", datatype: "BOOL", shape: [3n], contents: { boolContents: [true, false, true] } }],
        }),
      );
      expect(bools.outputs[0]?.contents?.boolContents).toEqual([true, false, true]);

      const empty = await call<ModelInferResponse>(
        client,
        "ModelInfer",
        inferRequest({
          modelName: "identity_any",
          inputs: [{ name: "X", datatype: "FP32", shape: [0n] }],
          rawInputContents: [new Uint8Array(0)],
        }),
      );
      expect(empty.outputs[0]?.shape).toEqual([0n]);
      expect(empty.rawOutputContents.map(plain)).toEqual([new Uint8Array(0)]);
    });

    it("reverse_bytes: raw BYTES elements reversed", async () => {
      const res = await call<ModelInferResponse>(
        client,
        "ModelInfer",
        inferRequest({
          modelName: "reverse_bytes",
          inputs: [{ name: "INPUT0", datatype: "BYTES", shape: [3n] }],
          rawInputContents: [packBytesRaw(["abc", "", "xy"])],
        }),
      );
      expect(res.outputs[0]?.datatype).toBe("BYTES");
      const elements = unpackBytesRaw(res.rawOutputContents[0] as Uint8Array).map((e) => new TextDecoder().decode(e));
      expect(elements).toEqual(["cba", "", "yx"]);

      const typed = await call<ModelInferResponse>(
        client,
        "ModelInfer",
        inferRequest({
          modelName: "reverse_bytes",
          inputs: [{ name: "INPUT0", datatype: "BYTES", shape: [1n], contents: { bytesContents: [new Uint8Array([1, 2, 3])] } }],
        }),
      );
      expect(typed.outputs[0]?.contents?.bytesContents.map(plain)).toEqual([new Uint8Array([3, 2, 1])]);
    });

    it("not_ready, unknown models and injected errors map to gRPC codes", async () => {
      const ready = await call<ModelReadyResponse>(client, "ModelReady", create(ModelReadyRequestSchema, { name: "not_ready" }));
      expect(ready.ready).toBe(false);
      const codeOf = (model: string, version = "") =>
        call(client, "ModelInfer", inferRequest({ modelName: model, modelVersion: version })).then(
          () => grpc.status.OK,
          (err: grpc.ServiceError) => err.code,
        );
      expect(await codeOf("not_ready")).toBe(grpc.status.UNAVAILABLE);
      expect(await codeOf("nope")).toBe(grpc.status.NOT_FOUND);
      expect(await codeOf("simple", "3")).toBe(grpc.status.NOT_FOUND);
      expect(await codeOf("fail_unavailable")).toBe(grpc.status.UNAVAILABLE);
      expect(await codeOf("fail_exhausted")).toBe(grpc.status.RESOURCE_EXHAUSTED);
      expect(await codeOf("fail_internal")).toBe(grpc.status.INTERNAL);
      expect(await codeOf("simple")).toBe(grpc.status.INVALID_ARGUMENT);
    });

    it("slow: a deadline shorter than delay_ms is recorded, and so is the cancellation", async () => {
      const err = await call(
        client,
        "ModelInfer",
        inferRequest({
          modelName: "slow",
          parameters: { delay_ms: { parameterChoice: { case: "int64Param", value: 5000n } } },
          inputs: [
            { name: "INPUT0", datatype: "INT32", shape: [1n, 16n], contents: { intContents: range16 } },
            { name: "INPUT1", datatype: "INT32", shape: [1n, 16n], contents: { intContents: ones16 } },
          ],
        }),
        { timeoutMs: 300 },
      ).catch((e: grpc.ServiceError) => e);
      expect((err as grpc.ServiceError).code).toBe(grpc.status.DEADLINE_EXCEEDED);
      // The client's deadline ended the call while the fake still held its answer (due 5 s in);
      // the fake saw the cancellation and never answered.
      expect(fake.requests[0]?.answeredAt).toBeUndefined();
      await expect.poll(() => fake.requests[0]?.abortedAt).toBeDefined();
      const rec = fake.requests[0];
      expect(rec?.parameters["delay_ms"]).toBe(5000n);
      expect(rec?.timeoutMs).toBeLessThanOrEqual(300);
      expect(rec?.answeredAt).toBeUndefined();
    });

    it("slow: answers like simple after delay_ms", async () => {
      const res = await call<ModelInferResponse>(
        client,
        "ModelInfer",
        inferRequest({
          modelName: "slow",
          parameters: { delay_ms: { parameterChoice: { case: "int64Param", value: 50n } } },
          inputs: [
            { name: "INPUT0", datatype: "INT32", shape: [1n, 16n], contents: { intContents: range16 } },
            { name: "INPUT1", datatype: "INT32", shape: [1n, 16n], contents: { intContents: ones16 } },
          ],
        }),
      );
      expect(res.outputs[0]?.contents?.intContents).toEqual(range16.map((x) => x + 1));
    });
  });

  describe("REST", () => {
    it("answers health, ready and metadata", async () => {
      expect((await rest("/v2/health/live")).status).toBe(200);
      expect((await rest("/v2/health/ready")).status).toBe(200);
      expect((await rest("/v2/models/simple/ready")).status).toBe(200);
      expect((await rest("/v2/models/simple/versions/2/ready")).status).toBe(200);
      expect((await rest("/v2/models/not_ready/ready")).status).toBe(400);
      expect((await rest("/v2/models/nope/ready")).status).toBe(404);
      const meta = await rest("/v2/models/simple");
      expect(meta.json).toMatchObject({ name: "simple", versions: ["1", "2"], inputs: [{ name: "INPUT0", datatype: "INT32", shape: [-1, 16] }, {}] });
      expect(fake.requests.map((r) => r.method)).toEqual(["ServerLive", "ServerReady", "ModelReady", "ModelReady", "ModelReady", "ModelReady", "ModelMetadata"]);
    });

    it("simple: sum and difference, nested or flat data, versions routed", async () => {
      const body = {
        id: "r-7",
        inputs: [
          { name: "INPUT0", shape: [1, 16], datatype: "INT32", data: [range16] },
          { name: "INPUT1", shape: [1, 16], datatype: "INT32", data: ones16 },
        ],
      };
      const v1 = await rest("/v2/models/simple/infer", { body });
      expect(v1.status).toBe(200);
      expect(v1.json).toEqual({
        model_name: "simple",
        model_version: "1",
        id: "r-7",
        outputs: [
          { name: "OUTPUT0", datatype: "INT32", shape: [1, 16], data: range16.map((x) => x + 1) },
          { name: "OUTPUT1", datatype: "INT32", shape: [1, 16], data: range16.map((x) => x - 1) },
        ],
      });
      const v2 = await rest("/v2/models/simple/versions/2/infer", { body: { ...body, outputs: [{ name: "OUTPUT0" }] } });
      expect(v2.json).toMatchObject({ model_version: "2", outputs: [{ name: "OUTPUT0", data: range16.map((x) => x + 2) }] });
      expect((v2.json as { outputs: unknown[] }).outputs).toHaveLength(1);
      expect(fake.requests[1]).toMatchObject({ protocol: "rest", method: "ModelInfer", model: "simple", version: "2", servedVersion: "2", requestedOutputs: ["OUTPUT0"] });
      expect(fake.requests[0]?.inputs[0]).toMatchObject({ form: "json", shape: [1, 16], values: range16 });
    });

    it("identity_fp16: JSON numbers rounded to half precision", async () => {
      const res = await rest("/v2/models/identity_fp16/infer", {
        body: { inputs: [{ name: "INPUT0", shape: [4], datatype: "FP16", data: [1, 0.1, -65504, 1e6] }] },
      });
      expect(res.status).toBe(200);
      expect(res.json).toMatchObject({ outputs: [{ name: "OUTPUT0", datatype: "FP16", shape: [4], data: [1, 0.0999755859375, -65504, null] }] });
    });

    it("identity_any: INT64/UINT64 extremes, BF16, BOOL, BYTES and empty tensors round-trip", async () => {
      const cases = [
        { datatype: "INT64", shape: [2], data: [-(2n ** 63n), 2n ** 63n - 1n] },
        { datatype: "UINT64", shape: [2], data: [2n ** 64n - 1n, 2n ** 53n + 1n] },
        { datatype: "BF16", shape: [3], data: [1.5, -2, 3.140625] },
        { datatype: "BOOL", shape: [2], data: [true, false] },
        { datatype: "BYTES", shape: [2], data: ["hello", ""] },
        { datatype: "FP32", shape: [0], data: [] },
      ];
      for (const c of cases) {
        const res = await rest("/v2/models/identity_any/infer", { body: { inputs: [{ name: "X", ...c }] } });
        expect(res.status, c.datatype).toBe(200);
        expect(res.json, c.datatype).toMatchObject({ outputs: [{ name: "OUTPUT0", datatype: c.datatype, shape: c.shape, data: c.data }] });
      }
    });

    it("reverse_bytes: string elements reversed", async () => {
      const res = await rest("/v2/models/reverse_bytes/infer", {
        body: { inputs: [{ name: "INPUT0", shape: [2], datatype: "BYTES", data: ["abc", "hello"] }] },
      });
      expect(res.json).toMatchObject({ outputs: [{ datatype: "BYTES", data: ["cba", "olleh"] }] });
    });

    it("maps errors to HTTP statuses with an error body", async () => {
      const infer = (model: string, body: unknown = { inputs: [] }) => rest(`/v2/models/${model}/infer`, { body });
      const notReady = await infer("not_ready");
      expect(notReady.status).toBe(503);
      expect(notReady.json).toEqual({ error: expect.any(String) });
      expect((await infer("nope")).status).toBe(404);
      expect((await infer("fail_unavailable")).status).toBe(503);
      const exhausted = await infer("fail_exhausted");
      expect(exhausted.status).toBe(429);
      expect(exhausted.headers.get("retry-after")).toBe("1");
      expect((await infer("fail_internal")).status).toBe(500);
      expect((await infer("simple", "{not json")).status).toBe(400);
      const bad = await infer("simple", { inputs: [{ name: "INPUT0", shape: [2], datatype: "INT32", data: [1] }] });
      expect(bad.status).toBe(400);
      expect(bad.json).toEqual({ error: expect.stringContaining("INPUT0") });
    });

    it("slow: records the client going away", async () => {
      const ac = new AbortController();
      const pending = fetch(`${fake.restUrl}/v2/models/slow/infer`, {
        method: "POST",
        body: JSON.stringify({ parameters: { delay_ms: 5000 }, inputs: [] }),
        signal: ac.signal,
      }).catch(() => undefined);
      await expect.poll(() => fake.requests.length).toBe(1);
      ac.abort();
      await pending;
      await expect.poll(() => fake.requests[0]?.abortedAt).toBeDefined();
      expect(fake.requests[0]?.status).toBeUndefined();
    });
  });

  describe("codecs", () => {
    it("round half precision and bfloat16 to nearest even", () => {
      expect(toFloat16Bits(1)).toBe(0x3c00);
      expect(toFloat16Bits(65520)).toBe(0x7c00);
      expect(toFloat16Bits(65519)).toBe(0x7bff);
      expect(toFloat16Bits(2 ** -25)).toBe(0);
      expect(toFloat16Bits(3 * 2 ** -25)).toBe(2);
      expect(fromFloat16Bits(toFloat16Bits(0.1))).toBe(0.0999755859375);
      expect(Number.isNaN(fromFloat16Bits(toFloat16Bits(NaN)))).toBe(true);
      expect(toBFloat16Bits(1)).toBe(0x3f80);
      expect(fromBFloat16Bits(toBFloat16Bits(3.14159))).toBe(3.140625);
    });
  });
});

describe("TF Serving fake", () => {
  let fake: TfServingFake;

  beforeAll(async () => {
    fake = await createTfServingFake();
  });

  afterAll(async () => {
    await fake?.close();
  });

  beforeEach(() => {
    fake.requests.length = 0;
  });

  async function post(path: string, body: unknown): Promise<{ status: number; json: unknown }> {
    const res = await fetch(`${fake.url}${path}`, {
      method: "POST",
      body: typeof body === "string" ? body : JSON.stringify(body),
      headers: { "content-type": "application/json" },
    });
    return { status: res.status, json: await res.json() };
  }

  it("half_plus_two: row form", async () => {
    expect(await post("/v1/models/half_plus_two:predict", { instances: [1.0, 2.0, 5.0] })).toEqual({
      status: 200,
      json: { predictions: [2.5, 3.0, 4.5] },
    });
    expect((await post("/v1/models/half_plus_two/versions/123:predict", { signature_name: "serving_default", instances: [[1.1], 0] })).json).toEqual({
      predictions: [[2.55], 2],
    });
    expect((await post("/v1/models/half_plus_two:predict", { instances: [{ x: 4 }, { x: [6, 8] }] })).json).toEqual({
      predictions: [4, [5, 6]],
    });
    expect(fake.requests[1]).toMatchObject({ operation: "predict", model: "half_plus_two", version: "123", signatureName: "serving_default", form: "rows", status: 200 });
  });

  it("half_plus_two: columnar form", async () => {
    expect(await post("/v1/models/half_plus_two:predict", { inputs: { x: [[1.0], [2.0]] } })).toEqual({
      status: 200,
      json: { outputs: [[2.5], [3.0]] },
    });
    expect((await post("/v1/models/half_plus_two:predict", { inputs: [1, 3] })).json).toEqual({ outputs: [2.5, 3.5] });
    expect((await post("/v1/models/half_plus_two:predict", { inputs: 10 })).json).toEqual({ outputs: 7 });
    expect(fake.requests[0]?.form).toBe("columns");
  });

  it("model status and errors", async () => {
    const status = await fetch(`${fake.url}/v1/models/half_plus_two`);
    expect(await status.json()).toEqual({
      model_version_status: [{ version: "123", state: "AVAILABLE", status: { error_code: "OK", error_message: "" } }],
    });
    expect(await post("/v1/models/half:predict", { instances: [1] })).toEqual({
      status: 404,
      json: { error: "Servable not found for request: Latest(half)" },
    });
    expect((await post("/v1/models/half_plus_two/versions/7:predict", { instances: [1] })).status).toBe(404);
    expect((await post("/v1/models/half_plus_two:predict", { instances: [1], inputs: [1] })).status).toBe(400);
    expect((await post("/v1/models/half_plus_two:predict", { signature_name: "nope", instances: [1] })).status).toBe(400);
    expect((await post("/v1/models/half_plus_two:predict", { instances: ["a"] })).status).toBe(400);
    expect((await post("/v1/models/half_plus_two:predict", "{bad")).status).toBe(400);
    const unavailable = await post("/v1/models/fail_unavailable:predict", { instances: [1] });
    expect(unavailable.status).toBe(503);
    expect(unavailable.json).toEqual({ error: expect.any(String) });
  });
});
