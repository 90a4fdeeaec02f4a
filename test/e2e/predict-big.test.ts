/**
 * Big tensors through infergate as its own process (bin/infergate.js), against the Triton fake over
 * gRPC: a 4 MiB raw answer reaches the client byte for byte; 1M typed FP32 values round-trip; and
 * a big Predict does not hold other callers (issue 16: its work is a copy of its bytes, not a loop
 * over its elements). infergate runs in its own process so that its event loop is not the test's.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTritonFake, type TritonFake } from "../fakes/triton-fake.js";
import { inferenceClient, type ProtoClient } from "../helpers/proto-clients.js";
import { type ServerProcess, startProcess } from "../helpers/servers.js";

type Obj = Record<string, unknown>;
interface PredictAnswer {
  outputs: Obj[];
}

/** 1M FP32 elements: 4 MiB of tensor data. */
const elements = 1 << 20;
const big = { "grpc.max_send_message_length": 64 << 20, "grpc.max_receive_message_length": 64 << 20 };

describe("big tensors through infergate (own process)", () => {
  let fake: TritonFake;
  let server: ServerProcess;
  let client: ProtoClient;
  let other: ProtoClient;

  beforeAll(async () => {
    fake = await createTritonFake();
    const dir = mkdtempSync(join(tmpdir(), "infergate-big-"));
    const config = join(dir, "infergate.yaml");
    writeFileSync(
      config,
      `
server: { maxMessageBytes: 16777216 }
upstreams:
  - name: tri
    kind: kserve
    endpoints: ["http://${fake.grpcAddress}"]
    timeoutMs: 20000
  - name: tri-rest
    kind: kserve
    endpoints: ["${fake.restUrl}"]
    timeoutMs: 20000
    options: { protocol: rest }
  - { name: mock, kind: mock }
models:
  - { name: big, upstream: tri, upstreamModel: identity_any, cache: { policy: "off" } }
  - { name: big-rest, upstream: tri-rest, upstreamModel: identity_any, cache: { policy: "off" } }
  - { name: small, upstream: mock, cache: { policy: "off" } }
`,
    );
    server = await startProcess(["--config", config]);
    client = inferenceClient(server.grpcAddress, big);
    // Another connection: the small calls do not queue behind the big one's frames.
    other = inferenceClient(server.grpcAddress, { "grpc.use_local_subchannel_pool": 1 });
  });

  afterAll(async () => {
    client?.close();
    other?.close();
    await server?.stop();
    await fake?.close();
  });

  const predict = (c: ProtoClient, model: string, inputs: object[], extra: Obj = {}) =>
    c.unary<PredictAnswer>("Predict", { model, inputs, ...extra }, { timeoutMs: 30_000 });
  const small = () =>
    predict(other, "small", [
      { name: "a", datatype: "DATA_TYPE_INT32", shape: [2], contents: { int_contents: [1, 2] } },
      { name: "b", datatype: "DATA_TYPE_INT32", shape: [2], contents: { int_contents: [3, 4] } },
    ]);

  it("a 4 MiB raw answer reaches the client byte for byte", async () => {
    // Any bytes are FP32 bit patterns (NaN payloads among them): only a pass-through keeps them all.
    const bytes = randomBytes(elements * 4);
    const res = await predict(client, "big", [{ name: "INPUT0", datatype: "DATA_TYPE_FP32", shape: [1, elements], raw_contents: bytes }]);
    expect(res.outputs).toHaveLength(1);
    const out = res.outputs[0]!;
    expect([out["name"], out["data"], (out["shape"] as string[]).map(Number)]).toEqual(["OUTPUT0", "raw_contents", [1, elements]]);
    expect(Buffer.compare(out["raw_contents"] as Buffer, bytes)).toBe(0);
  });

  it("1M typed FP32 values go in typed and come back typed (output_form TYPED), the same values", async () => {
    const values = Array.from({ length: elements }, (_, i) => Math.fround(i / 3 - 1000));
    const res = await predict(client, "big", [{ name: "INPUT0", datatype: "DATA_TYPE_FP32", shape: [elements], contents: { fp32_contents: values } }], {
      output_form: "TENSOR_FORM_TYPED",
    });
    const out = res.outputs[0]!;
    expect(out["data"]).toBe("contents");
    const got = (out["contents"] as Obj)["fp32_contents"] as number[];
    expect(got.length).toBe(elements);
    expect(got.every((v, i) => v === values[i])).toBe(true);
  });

  it("over REST (JSON written and read on the worker thread), 1M FP32 values come back the same", async () => {
    const values = Array.from({ length: elements }, (_, i) => Math.fround(i / 5 - 3));
    const res = await predict(client, "big-rest", [{ name: "INPUT0", datatype: "DATA_TYPE_FP32", shape: [elements], contents: { fp32_contents: values } }], {
      output_form: "TENSOR_FORM_RAW",
    });
    const out = res.outputs[0]!;
    expect(out["data"]).toBe("raw_contents");
    expect(Buffer.compare(out["raw_contents"] as Buffer, Buffer.from(new Float32Array(values).buffer))).toBe(0);
  });

  it("small calls started while a 4 MiB Predict's answer is on its way are answered before it ends", async () => {
    await small(); // the second connection is up
    const order: string[] = [];
    const values = Array.from({ length: elements }, (_, i) => Math.fround(i / 7));
    const upstreamCalls = () => fake.requests.filter((r) => r.method === "ModelInfer" && r.model === "identity_any").length;
    const before = upstreamCalls();
    const bigCall = predict(client, "big", [{ name: "INPUT0", datatype: "DATA_TYPE_FP32", shape: [elements], contents: { fp32_contents: values } }], {
      output_form: "TENSOR_FORM_TYPED",
    }).then((r) => {
      order.push("big");
      return r;
    });
    // The small calls start once the big one has reached the model server: what is left of it is
    // its answer's way back through infergate (4 MiB raw from the upstream, converted to typed
    // values, encoded for the client): the work that used to hold every other caller.
    await expect.poll(upstreamCalls, { timeout: 30_000, interval: 1 }).toBeGreaterThan(before);
    // One after another, each started when the previous one is answered.
    for (let i = 0; i < 3; i++) {
      await small();
      order.push(`small ${i}`);
    }
    const res = await bigCall;
    expect(((res.outputs[0]!["contents"] as Obj)["fp32_contents"] as number[]).length).toBe(elements);
    expect(order).toEqual(["small 0", "small 1", "small 2", "big"]);
  });

});
