/**
 * The `tfserving` kind end to end: a grpc-js client (contract loaded from proto/ at run time) →
 * infergate on loopback ports → the TF Serving fake (test/fakes/tfserving-fake.ts, model
 * half_plus_two: y = 0.5·x + 2) on its own port. Asserts what the client gets and the exact
 * request the fake received, in both request forms.
 */
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { App } from "../../src/server/app.js";
import { offloadedTasks } from "../../src/upstreams/offload.js";
import { createTfServingFake, type TfServingFake } from "../fakes/tfserving-fake.js";
import { errorInfoOf, expectServiceError, inferenceClient, type ProtoClient, statusDetails } from "../helpers/proto-clients.js";
import { startInProcess } from "../helpers/servers.js";

type Obj = Record<string, unknown>;

const fp32 = (name: string, shape: number[], values: number[]) => ({
  name,
  datatype: "DATA_TYPE_FP32",
  shape,
  contents: { fp32_contents: values },
});

/** A tensor of a PredictResponse as the client got it, reduced to what matters. */
function tensor(t: Obj) {
  const contents = t["contents"] as Record<string, unknown[]>;
  const values = Object.values(contents).find((v) => v.length > 0) ?? [];
  return { name: t["name"], datatype: t["datatype"], shape: t["shape"], data: t["data"], values };
}

interface PredictAnswer {
  model: string;
  model_version: string;
  upstream: string;
  id: string;
  outputs: Obj[];
}

/** The error as the client saw it: code, message, ErrorInfo reason and metadata. */
function seen(err: Awaited<ReturnType<typeof expectServiceError>>) {
  const info = errorInfoOf(statusDetails(err));
  return { code: err.code, message: err.details, reason: info?.["reason"], metadata: info?.["metadata"] };
}

function config(url: string, extraModels = ""): string {
  // One attempt per call and no breaker: these tests watch the adapter, whose every failure
  // would otherwise be retried and, repeated, open the endpoint's breaker (docs/resilience.md).
  return `
upstreams:
  - name: tfs
    kind: tfserving
    resilience: { retry: { maxAttempts: 1 }, breaker: { enabled: false } }
    endpoints: ["${url}"]
    timeoutMs: 10000
models:
  - name: hpt
    upstream: tfs
    upstreamModel: half_plus_two
    options: { outputs: { y: { datatype: FP32 } } }
    cache: { policy: "off" }
  - name: hpt-columnar
    upstream: tfs
    upstreamModel: half_plus_two
    options: { format: columnar, signatureName: serving_default, outputs: { y: { datatype: FP64 } } }
    cache: { policy: "off" }
  - name: hpt-plain
    upstream: tfs
    upstreamModel: half_plus_two
    cache: { policy: "off" }
  - name: hpt-wrong-signature
    upstream: tfs
    upstreamModel: half_plus_two
    options: { signatureName: classify }
    cache: { policy: "off" }
  - name: missing
    upstream: tfs
    upstreamModel: no_such_model
    cache: { policy: "off" }
  - name: down
    upstream: tfs
    upstreamModel: fail_unavailable
    cache: { policy: "off" }
${extraModels}`;
}

describe("tfserving upstream, end to end", () => {
  let fake: TfServingFake;
  let app: App;
  let client: ProtoClient;

  beforeAll(async () => {
    fake = await createTfServingFake();
    app = await startInProcess(config(fake.url));
    client = inferenceClient(app.grpcAddress);
  });

  afterAll(async () => {
    client?.close();
    await app?.shutdown();
    await fake?.close();
  });

  /** The predict requests the fake received during `run`. */
  async function received<T>(run: () => Promise<T>): Promise<{ result: T; requests: TfServingFake["requests"] }> {
    fake.requests.length = 0;
    const result = await run();
    return { result, requests: [...fake.requests] };
  }

  it("row form: the input's rows are the instances; predictions come back as the declared output", async () => {
    const { result, requests } = await received(() =>
      client.unary<PredictAnswer>("Predict", { model: "hpt", id: "req-1", inputs: [fp32("x", [3], [1, 2, 5])] }),
    );
    expect({ ...result, outputs: result.outputs.map(tensor) }).toMatchObject({
      model: "hpt",
      model_version: "1",
      upstream: "tfs",
      id: "req-1",
      outputs: [{ name: "y", datatype: "DATA_TYPE_FP32", shape: ["3"], data: "contents", values: [2.5, 3, 4.5] }],
    });
    expect(result.outputs).toHaveLength(1);
    expect(requests.map((r) => ({ method: r.method, path: r.path, form: r.form, body: r.body, status: r.status }))).toEqual([
      { method: "POST", path: "/v1/models/half_plus_two:predict", form: "rows", body: { instances: [1, 2, 5] }, status: 200 },
    ]);
    expect(requests[0]!.headers["content-type"]).toBe("application/json");
  });

  it("a tensor big enough for the worker thread (300,000 FP32): the JSON is written and read off the event loop, the answer is the same", async () => {
    const values = Array.from({ length: 300_000 }, (_, i) => Math.fround(i / 4 - 9));
    const offloaded = offloadedTasks();
    const { result, requests } = await received(() => client.unary<PredictAnswer>("Predict", { model: "hpt", inputs: [fp32("x", [values.length], values)] }));
    // Body and answer each went through the worker thread (infergate runs in this process).
    expect(offloadedTasks() - offloaded).toBe(2);
    expect((requests[0]!.body as { instances: number[] }).instances.every((v, i) => v === values[i])).toBe(true);
    const out = tensor(result.outputs[0]!);
    expect([out.name, out.data, out.shape]).toEqual(["y", "contents", [String(values.length)]]);
    expect((out.values as number[]).every((v, i) => v === Math.fround(0.5 * values[i]! + 2))).toBe(true);
    const raw = await client.unary<PredictAnswer>("Predict", { model: "hpt", inputs: [fp32("x", [values.length], values)], output_form: "TENSOR_FORM_RAW" });
    const expected = new Float32Array(values.map((v) => 0.5 * v + 2));
    expect(Buffer.compare(raw.outputs[0]!["raw_contents"] as Buffer, Buffer.from(expected.buffer))).toBe(0);
  });

  it("row form with a 2-D input keeps its shape; an undeclared output is named after the JSON key", async () => {
    const { result, requests } = await received(() =>
      client.unary<PredictAnswer>("Predict", { model: "hpt-plain", inputs: [fp32("x", [2, 2], [1, 2, 3, 4.5])] }),
    );
    expect(result.outputs.map(tensor)).toEqual([
      { name: "predictions", datatype: "DATA_TYPE_FP32", shape: ["2", "2"], data: "contents", values: [2.5, 3, 3.5, 4.25] },
    ]);
    expect(requests.map((r) => r.body)).toEqual([{ instances: [[1, 2], [3, 4.5]] }]);
  });

  it("columnar form: inputs by name, the signature sent, the declared FP64 output", async () => {
    const { result, requests } = await received(() =>
      client.unary<PredictAnswer>("Predict", { model: "hpt-columnar", inputs: [fp32("x", [2, 1], [1, -3])] }),
    );
    expect(result.outputs.map(tensor)).toEqual([
      { name: "y", datatype: "DATA_TYPE_FP64", shape: ["2", "1"], data: "contents", values: [2.5, 0.5] },
    ]);
    expect(requests.map((r) => ({ path: r.path, form: r.form, signatureName: r.signatureName, body: r.body }))).toEqual([
      {
        path: "/v1/models/half_plus_two:predict",
        form: "columns",
        signatureName: "serving_default",
        body: { signature_name: "serving_default", inputs: { x: [[1], [-3]] } },
      },
    ]);
  });

  it("columnar form with a scalar input, given as raw little-endian bytes", async () => {
    const raw = Buffer.alloc(4);
    raw.writeFloatLE(3);
    const { result, requests } = await received(() =>
      client.unary<PredictAnswer>("Predict", { model: "hpt-columnar", inputs: [{ name: "x", datatype: "DATA_TYPE_FP32", shape: [], raw_contents: raw }] }),
    );
    expect(result.outputs.map(tensor)).toEqual([{ name: "y", datatype: "DATA_TYPE_FP64", shape: [], data: "contents", values: [3.5] }]);
    expect(requests.map((r) => r.body)).toEqual([{ signature_name: "serving_default", inputs: { x: 3 } }]);
  });

  it("a pinned model version goes into the path and is the answer's version", async () => {
    const { result, requests } = await received(() =>
      client.unary<PredictAnswer>("Predict", { model: "hpt", model_version: "123", inputs: [fp32("x", [1], [4])] }),
    );
    expect({ version: result.model_version, outputs: result.outputs.map(tensor) }).toEqual({
      version: "123",
      outputs: [{ name: "y", datatype: "DATA_TYPE_FP32", shape: ["1"], data: "contents", values: [4] }],
    });
    expect(requests.map((r) => ({ path: r.path, version: r.version }))).toEqual([{ path: "/v1/models/half_plus_two/versions/123:predict", version: "123" }]);
  });

  it("a version TF Serving does not have: NOT_FOUND, MODEL_NOT_FOUND", async () => {
    const err = await expectServiceError(client.unary("Predict", { model: "hpt", model_version: "7", inputs: [fp32("x", [1], [4])] }));
    expect(seen(err)).toEqual({
      code: status.NOT_FOUND,
      message: 'upstream "tfs" does not know the model or path',
      reason: "MODEL_NOT_FOUND",
      metadata: { upstream: "tfs", http_status: "404" },
    });
    expect(fake.requests.at(-1)).toMatchObject({ path: "/v1/models/half_plus_two/versions/7:predict", status: 404 });
  });

  it("an unknown model: NOT_FOUND, MODEL_NOT_FOUND", async () => {
    const err = await expectServiceError(client.unary("Predict", { model: "missing", inputs: [fp32("x", [1], [4])] }));
    expect(seen(err)).toEqual({
      code: status.NOT_FOUND,
      message: 'upstream "tfs" does not know the model or path',
      reason: "MODEL_NOT_FOUND",
      metadata: { upstream: "tfs", http_status: "404" },
    });
  });

  it("TF Serving's 400 {error}: INVALID_ARGUMENT with its message", async () => {
    const err = await expectServiceError(client.unary("Predict", { model: "hpt-wrong-signature", inputs: [fp32("x", [1], [4])] }));
    expect(seen(err)).toEqual({
      code: status.INVALID_ARGUMENT,
      message: 'upstream "tfs" rejected the request: Serving signature name: "classify" not found in signature def',
      reason: "INVALID_ARGUMENT",
      metadata: { upstream: "tfs", http_status: "400" },
    });
  });

  it("TF Serving's 503: UNAVAILABLE, UPSTREAM_UNAVAILABLE", async () => {
    const err = await expectServiceError(client.unary("Predict", { model: "down", inputs: [fp32("x", [1], [4])] }));
    expect(seen(err)).toEqual({
      code: status.UNAVAILABLE,
      message: 'upstream "tfs" is unavailable (HTTP 503)',
      reason: "UPSTREAM_UNAVAILABLE",
      metadata: { upstream: "tfs", http_status: "503" },
    });
  });

  it("what TF Serving's JSON cannot carry is INVALID_ARGUMENT before any request", async () => {
    fake.requests.length = 0;
    const half = await expectServiceError(
      client.unary("Predict", { model: "hpt", inputs: [{ name: "x", datatype: "DATA_TYPE_FP16", shape: [1], raw_contents: Buffer.from([0, 0x3c]) }] }),
    );
    expect(seen(half)).toEqual({
      code: status.INVALID_ARGUMENT,
      message: "inputs[0].datatype: TF Serving's JSON API has no FP16 values; send the tensor as FP32",
      reason: "INVALID_ARGUMENT",
      metadata: { field: "inputs[0].datatype" },
    });
    const params = await expectServiceError(
      client.unary("Predict", { model: "hpt", inputs: [fp32("x", [1], [4])], parameters: { top_k: { int64_param: 3 } } }),
    );
    expect(seen(params)).toMatchObject({ code: status.INVALID_ARGUMENT, metadata: { field: "parameters" } });
    const scalarRow = await expectServiceError(client.unary("Predict", { model: "hpt", inputs: [fp32("x", [], [4])] }));
    expect(seen(scalarRow)).toMatchObject({ code: status.INVALID_ARGUMENT, metadata: { field: "inputs[0].shape" } });
    expect(fake.requests).toEqual([]);
  });

  it("requested outputs select from the answer; an unknown one is INVALID_ARGUMENT", async () => {
    const ok = await client.unary<PredictAnswer>("Predict", { model: "hpt", inputs: [fp32("x", [1], [0])], outputs: [{ name: "y" }] });
    expect(ok.outputs.map(tensor)).toEqual([{ name: "y", datatype: "DATA_TYPE_FP32", shape: ["1"], data: "contents", values: [2] }]);
    const err = await expectServiceError(client.unary("Predict", { model: "hpt", inputs: [fp32("x", [1], [0])], outputs: [{ name: "z" }] }));
    expect(seen(err)).toEqual({
      code: status.INVALID_ARGUMENT,
      message: 'outputs[0].name: the model has no output "z"; it answered "y"',
      reason: "INVALID_ARGUMENT",
      metadata: { field: "outputs[0].name" },
    });
  });

  it("ListModels: readiness from TF Serving's model status, probed in the background", async () => {
    const own = await startInProcess(config(fake.url));
    const c = inferenceClient(own.grpcAddress);
    try {
      const states = async () =>
        (await c.unary<{ models: { name: string; state: string; upstream_kind: string; capabilities: string[] }[] }>("ListModels", {})).models.map((m) => [
          m.name,
          m.state,
          m.upstream_kind,
          m.capabilities.join(","),
        ]);
      fake.requests.length = 0;
      // Nothing was probed yet: the first ListModels does not wait for the probes it starts.
      expect((await states()).map(([name, state]) => [name, state])).toEqual([
        ["hpt", "MODEL_STATE_UNSPECIFIED"],
        ["hpt-columnar", "MODEL_STATE_UNSPECIFIED"],
        ["hpt-plain", "MODEL_STATE_UNSPECIFIED"],
        ["hpt-wrong-signature", "MODEL_STATE_UNSPECIFIED"],
        ["missing", "MODEL_STATE_UNSPECIFIED"],
        ["down", "MODEL_STATE_UNSPECIFIED"],
      ]);
      await expect.poll(states, { timeout: 5000, interval: 20 }).toEqual([
        ["hpt", "MODEL_STATE_READY", "tfserving", "CAPABILITY_PREDICT"],
        ["hpt-columnar", "MODEL_STATE_READY", "tfserving", "CAPABILITY_PREDICT"],
        ["hpt-plain", "MODEL_STATE_READY", "tfserving", "CAPABILITY_PREDICT"],
        ["hpt-wrong-signature", "MODEL_STATE_READY", "tfserving", "CAPABILITY_PREDICT"],
        ["missing", "MODEL_STATE_NOT_READY", "tfserving", "CAPABILITY_PREDICT"],
        ["down", "MODEL_STATE_NOT_READY", "tfserving", "CAPABILITY_PREDICT"],
      ]);
      // One probe per model within the TTL (5 s), however often ListModels was called.
      const probes = fake.requests.filter((r) => r.operation === "status").map((r) => r.path);
      expect(probes.sort()).toEqual(["/v1/models/fail_unavailable", "/v1/models/half_plus_two", "/v1/models/no_such_model"]);
    } finally {
      c.close();
      await own.shutdown();
    }
  });
});

describe("tfserving upstream, deadlines", () => {
  it("a TF Serving that does not answer: the caller's deadline ends the call and the upstream request", async () => {
    const seenAt: { received?: number; closed?: number } = {};
    const hanging = http.createServer((req) => {
      seenAt.received = Date.now();
      req.resume();
      req.socket.once("close", () => (seenAt.closed = Date.now()));
    });
    await new Promise<void>((resolve) => hanging.listen(0, "127.0.0.1", resolve));
    const app = await startInProcess(config(`http://127.0.0.1:${(hanging.address() as AddressInfo).port}`));
    const client = inferenceClient(app.grpcAddress);
    try {
      const started = Date.now();
      const err = await expectServiceError(client.unary("Predict", { model: "hpt", inputs: [fp32("x", [1], [1])] }, { timeoutMs: 400 }));
      expect(err.code).toBe(status.DEADLINE_EXCEEDED);
      // A lower bound only: the deadline's timer (400 ms less the gateway's 50 ms margin) never fires early.
      expect(Date.now() - started).toBeGreaterThanOrEqual(348);
      // The upstream request was aborted with the call: undici closed its connection. Polled for
      // 5 s, well before the upstream's own timeout (10 s) would have closed it.
      await expect.poll(() => seenAt.closed, { timeout: 5_000 }).toBeDefined();
    } finally {
      client.close();
      await app.shutdown();
      hanging.closeAllConnections();
      await new Promise<void>((resolve) => hanging.close(() => resolve()));
    }
  });
});
