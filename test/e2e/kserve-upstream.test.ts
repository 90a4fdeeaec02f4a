/**
 * The `kserve` kind end to end, for both protocols: a grpc-js client (contract loaded from proto/
 * at run time) → infergate on loopback ports → the Triton fake (test/fakes/triton-fake.ts) over
 * its gRPC or its REST listener. Asserts what the client gets and what the fake received.
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { App } from "../../src/server/app.js";
import { offloadedTasks } from "../../src/upstreams/offload.js";
import { createTritonFake, type Datatype, decodeRaw, encodeRaw, type TritonFake, type TritonRecordedRequest } from "../fakes/triton-fake.js";
import {
  errorInfoOf,
  expectServiceError,
  inferenceClient,
  loaderOptions,
  type ProtoClient,
  statusDetails,
} from "../helpers/proto-clients.js";
import { startInProcess } from "../helpers/servers.js";

const protocols = ["grpc", "rest"] as const;
type Protocol = (typeof protocols)[number];

type Obj = Record<string, unknown>;

interface PredictAnswer {
  model: string;
  model_version: string;
  upstream: string;
  id: string;
  outputs: Obj[];
  parameters: Obj;
}

/** The typed field of each datatype, as proto-loader names it. */
const fieldOf: Record<Datatype, string> = {
  BOOL: "bool_contents",
  UINT8: "uint_contents",
  UINT16: "uint_contents",
  UINT32: "uint_contents",
  UINT64: "uint64_contents",
  INT8: "int_contents",
  INT16: "int_contents",
  INT32: "int_contents",
  INT64: "int64_contents",
  FP16: "",
  FP32: "fp32_contents",
  FP64: "fp64_contents",
  BF16: "",
  BYTES: "bytes_contents",
};

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const le16 = (...words: number[]) => Buffer.from(words.flatMap((w) => [w & 0xff, w >> 8]));

/** A tensor of a PredictResponse as the client got it: typed values (bytes as hex) or raw hex. */
function tensor(t: Obj) {
  const datatype = String(t["datatype"]).replace("DATA_TYPE_", "") as Datatype;
  const base = { name: t["name"], datatype, shape: (t["shape"] as string[]).map(Number) };
  if (t["data"] === "raw_contents") return { ...base, raw: hex(t["raw_contents"] as Buffer) };
  const contents = t["contents"] as Record<string, unknown[]>;
  const values = contents[fieldOf[datatype]]!;
  return { ...base, values: values.map((v) => (Buffer.isBuffer(v) ? hex(v) : v)) };
}

/** A request tensor in proto-loader form: typed (`contents`) or raw. */
function typedInput(name: string, datatype: Datatype, shape: number[], values: unknown[]) {
  return { name, datatype: `DATA_TYPE_${datatype}`, shape, contents: { [fieldOf[datatype]]: values } };
}
function rawInput(name: string, datatype: Datatype, shape: number[], raw: Uint8Array) {
  return { name, datatype: `DATA_TYPE_${datatype}`, shape, raw_contents: Buffer.from(raw) };
}

/** The error as the client saw it: code, message, ErrorInfo reason and metadata. */
function seen(err: grpc.ServiceError) {
  const info = errorInfoOf(statusDetails(err));
  return { code: err.code, message: err.details, reason: info?.["reason"], metadata: info?.["metadata"] };
}

function retryDelay(err: grpc.ServiceError): unknown {
  return statusDetails(err).details.find((d) => d.type_url === "type.googleapis.com/google.rpc.RetryInfo")?.message?.["retry_delay"];
}

/** The models of one protocol: `<name>-<protocol>` → the fake's model. */
const models: readonly (readonly [string, string, string?])[] = [
  ["simple", "simple"],
  ["simple-v2", "simple", 'options: { upstreamVersion: "2" }'],
  ["fp16", "identity_fp16"],
  ["any", "identity_any"],
  ["reverse", "reverse_bytes"],
  ["notready", "not_ready"],
  ["unavailable", "fail_unavailable"],
  ["exhausted", "fail_exhausted"],
  ["missing", "no_such_model"],
  ["slow", "slow"],
];

function config(fake: TritonFake, readinessTtlMs = 60_000): string {
  const upstream = (protocol: Protocol, url: string, options: string) => `
  - name: tri-${protocol}
    kind: kserve
    endpoints: ["${url}"]
    apiKey: "key-${protocol}"
    headers: { X-Team: vision }
    timeoutMs: 10000
    # One attempt, no breaker: these tests watch the adapter, whose failures would otherwise be
    # retried and, repeated, open the endpoint's breaker (docs/resilience.md).
    resilience: { retry: { maxAttempts: 1 }, breaker: { enabled: false } }
    options: { ${options} readinessTtlMs: ${readinessTtlMs} }`;
  const modelList = protocols.flatMap((p) =>
    models.map(
      ([name, upstreamModel, extra]) => `
  - name: ${name}-${p}
    upstream: tri-${p}
    upstreamModel: ${upstreamModel}
    cache: { policy: "off" }${extra === undefined ? "" : `\n    ${extra}`}`,
    ),
  );
  return `
upstreams:${upstream("grpc", `http://${fake.grpcAddress}`, "")}${upstream("rest", fake.restUrl, "protocol: rest,")}
models:${modelList.join("")}
`;
}

const sequence = (n: number, f: (i: number) => number) => Array.from({ length: n }, (_, i) => f(i));

describe("kserve upstream, end to end", () => {
  let fake: TritonFake;
  let app: App;
  let client: ProtoClient;

  beforeAll(async () => {
    fake = await createTritonFake();
    app = await startInProcess(config(fake));
    client = inferenceClient(app.grpcAddress);
  });

  afterAll(async () => {
    client?.close();
    await app?.shutdown();
    await fake?.close();
  });

  /** The ModelInfer requests the fake received during `run`. */
  async function received<T>(run: () => Promise<T>): Promise<{ result: T; infers: TritonRecordedRequest[] }> {
    fake.requests.length = 0;
    const result = await run();
    return { result, infers: fake.requests.filter((r) => r.method === "ModelInfer") };
  }

  const predict = (model: string, inputs: object[], extra: Obj = {}, timeoutMs?: number) =>
    client.unary<PredictAnswer>("Predict", { model, inputs, ...extra }, timeoutMs === undefined ? {} : { timeoutMs });

  describe.each(protocols)("over %s", (protocol) => {
    const m = (name: string) => `${name}-${protocol}`;
    const upstream = `tri-${protocol}`;
    const form = (sent: "typed" | "raw") => (protocol === "rest" ? "json" : sent);

    it("simple: OUTPUT0 = sum, OUTPUT1 = difference, exactly; id, parameters and credentials reach the server", async () => {
      const a = sequence(16, (i) => i * 1000 - 7);
      const b = sequence(16, (i) => (i % 2 === 0 ? 2147483647 : -3));
      const { result, infers } = await received(() =>
        predict(m("simple"), [typedInput("INPUT0", "INT32", [1, 16], a), typedInput("INPUT1", "INT32", [1, 16], b)], {
          id: "req-7",
          parameters: { flag: { bool_param: true }, n: { int64_param: "-5" }, ratio: { double_param: 0.5 }, tag: { string_param: "x" } },
        }),
      );
      expect({ ...result, outputs: result.outputs.map(tensor), parameters: result.parameters }).toMatchObject({
        model: m("simple"),
        model_version: "1",
        upstream,
        id: "req-7",
        outputs: [
          { name: "OUTPUT0", datatype: "INT32", shape: [1, 16], values: a.map((x, i) => (x + b[i]!) | 0) },
          { name: "OUTPUT1", datatype: "INT32", shape: [1, 16], values: a.map((x, i) => (x - b[i]!) | 0) },
        ],
        parameters: {},
      });
      expect(result.outputs).toHaveLength(2);
      expect(infers).toHaveLength(1);
      const r = infers[0]!;
      expect({
        protocol: r.protocol,
        path: r.path,
        model: r.model,
        version: r.version,
        id: r.id,
        parameters: r.parameters,
        inputs: r.inputs.map((t) => [t.name, t.datatype, t.shape, t.form]),
        status: r.status,
      }).toEqual({
        protocol,
        path: protocol === "grpc" ? "/inference.GRPCInferenceService/ModelInfer" : "POST /v2/models/simple/infer",
        model: "simple",
        version: "",
        id: "req-7",
        // JSON has one kind of integer: int64 parameters read back as numbers over REST.
        parameters: { flag: true, n: protocol === "grpc" ? -5n : -5, ratio: 0.5, tag: "x" },
        inputs: [
          ["INPUT0", "INT32", [1, 16], form("typed")],
          ["INPUT1", "INT32", [1, 16], form("typed")],
        ],
        status: protocol === "grpc" ? 0 : 200,
      });
      expect(r.metadata["authorization"]).toBe(`Bearer key-${protocol}`);
      expect(r.metadata["x-team"]).toBe("vision");
    });

    it("typed and raw inputs in one request (gRPC: all sent raw)", async () => {
      const a = [1, 2, 3];
      const b = [10, -20, 30];
      const { result, infers } = await received(() =>
        predict(m("simple"), [typedInput("INPUT0", "INT32", [3], a), rawInput("INPUT1", "INT32", [3], encodeRaw("INT32", b))], {
          output_form: "TENSOR_FORM_TYPED",
        }),
      );
      expect(result.outputs.map(tensor)).toEqual([
        { name: "OUTPUT0", datatype: "INT32", shape: [3], values: [11, -18, 33] },
        { name: "OUTPUT1", datatype: "INT32", shape: [3], values: [-9, 22, -27] },
      ]);
      expect(infers.map((r) => r.inputs.map((t) => [t.name, t.form, t.values]))).toEqual([
        [
          ["INPUT0", form("raw"), a],
          ["INPUT1", form("raw"), b],
        ],
      ]);
    });

    it("version routing: model_version \"2\" reaches the server (OUTPUT0 = sum + 1) and is the answer's version", async () => {
      const { result, infers } = await received(() =>
        predict(m("simple"), [typedInput("INPUT0", "INT32", [2], [1, 2]), typedInput("INPUT1", "INT32", [2], [3, 4])], { model_version: "2" }),
      );
      expect({ version: result.model_version, outputs: result.outputs.map(tensor) }).toEqual({
        version: "2",
        outputs: [
          { name: "OUTPUT0", datatype: "INT32", shape: [2], values: [5, 7] },
          { name: "OUTPUT1", datatype: "INT32", shape: [2], values: [-2, -2] },
        ],
      });
      expect(infers.map((r) => [r.path, r.version, r.servedVersion])).toEqual([
        [protocol === "grpc" ? "/inference.GRPCInferenceService/ModelInfer" : "POST /v2/models/simple/versions/2/infer", "2", "2"],
      ]);
    });

    it("the model option upstreamVersion picks the server's version; the answer keeps the configured version", async () => {
      const { result, infers } = await received(() =>
        predict(m("simple-v2"), [typedInput("INPUT0", "INT32", [1], [1]), typedInput("INPUT1", "INT32", [1], [1])]),
      );
      expect({ version: result.model_version, outputs: result.outputs.map(tensor) }).toEqual({
        version: "1",
        outputs: [
          { name: "OUTPUT0", datatype: "INT32", shape: [1], values: [3] },
          { name: "OUTPUT1", datatype: "INT32", shape: [1], values: [0] },
        ],
      });
      expect(infers.map((r) => [r.version, r.servedVersion])).toEqual([["2", "2"]]);
    });

    it("requested outputs: only those come back", async () => {
      const { result, infers } = await received(() =>
        predict(m("simple"), [typedInput("INPUT0", "INT32", [1], [5]), typedInput("INPUT1", "INT32", [1], [2])], { outputs: [{ name: "OUTPUT1" }] }),
      );
      expect(result.outputs.map(tensor)).toEqual([{ name: "OUTPUT1", datatype: "INT32", shape: [1], values: [3] }]);
      expect(infers.map((r) => r.requestedOutputs)).toEqual([["OUTPUT1"]]);
    });

    // Values as proto-loader gives them (64-bit integers as strings, bytes as Buffers); `sent` is
    // what the fake decodes them to.
    const roundTrips: { label: string; datatype: Datatype; shape: number[]; values: unknown[] }[] = [
      { label: "BOOL", datatype: "BOOL", shape: [3], values: [true, false, true] },
      { label: "UINT8 extremes", datatype: "UINT8", shape: [2], values: [0, 255] },
      { label: "UINT16 extremes", datatype: "UINT16", shape: [2], values: [0, 65535] },
      { label: "UINT32 extremes", datatype: "UINT32", shape: [2], values: [0, 4294967295] },
      { label: "UINT64 above 2^53", datatype: "UINT64", shape: [3], values: ["0", "9007199254740993", "18446744073709551615"] },
      { label: "INT8 extremes", datatype: "INT8", shape: [2], values: [-128, 127] },
      { label: "INT16 extremes", datatype: "INT16", shape: [2], values: [-32768, 32767] },
      { label: "INT32 extremes", datatype: "INT32", shape: [2, 1], values: [-2147483648, 2147483647] },
      { label: "INT64 min/max", datatype: "INT64", shape: [3], values: ["-9223372036854775808", "9223372036854775807", "-9007199254740993"] },
      { label: "FP32 max, min subnormal", datatype: "FP32", shape: [3], values: [1.5, 3.4028234663852886e38, 1.401298464324817e-45] },
      { label: "FP64", datatype: "FP64", shape: [3], values: [0.1, -1e300, 5e-324] },
      { label: "BYTES (UTF-8)", datatype: "BYTES", shape: [2], values: [Buffer.from("hello"), Buffer.from("é ☃ \u{1F600}")] },
      { label: "empty FP32 [0]", datatype: "FP32", shape: [0], values: [] },
      { label: "empty BYTES [0, 2]", datatype: "BYTES", shape: [0, 2], values: [] },
    ];
    const asFakeValue = (datatype: Datatype, v: unknown) =>
      Buffer.isBuffer(v) ? hex(v) : datatype === "INT64" || datatype === "UINT64" ? BigInt(v as string) : v;

    it.each(roundTrips.flatMap((c) => (["typed", "raw"] as const).map((sent) => ({ ...c, sent }))))(
      "identity_any: $label, sent $sent, comes back exactly",
      async ({ datatype, shape, values, sent }) => {
        const raw = encodeRaw(datatype, values.map((v) => (datatype === "INT64" || datatype === "UINT64" ? BigInt(v as string) : v)));
        const input = sent === "typed" ? typedInput("INPUT0", datatype, shape, values) : rawInput("INPUT0", datatype, shape, raw);
        const { result, infers } = await received(() => predict(m("any"), [input], { output_form: "TENSOR_FORM_TYPED" }));
        expect(result.outputs.map(tensor)).toEqual([
          { name: "OUTPUT0", datatype, shape, values: values.map((v) => (Buffer.isBuffer(v) ? hex(v) : v)) },
        ]);
        expect(
          infers.map((r) => r.inputs.map((t) => ({ form: t.form, values: t.values?.map((v) => (v instanceof Uint8Array ? hex(v) : v)) }))),
        ).toEqual([[{ form: form(sent), values: values.map((v) => asFakeValue(datatype, v)) }]]);
      },
    );

    it("a raw answer reaches the client as raw_contents, byte for byte; output_form RAW asks for raw whatever was sent", async () => {
      // FP32 bit patterns a decode and re-encode could not keep: NaNs with payloads, a signalling
      // NaN, -0, a subnormal. Identity: the server answers the input's bytes.
      // (JSON holds only finite numbers: over REST the NaNs cannot travel, and the answer is typed.)
      const bytes = Buffer.from(protocol === "grpc" ? "0100c07f0000a07f00000080010000000000c0bf" : "0000803f010000000000c0bf", "hex");
      const { result } = await received(() => predict(m("any"), [rawInput("INPUT0", "FP32", [bytes.length / 4], bytes)]));
      expect(result.outputs.map(tensor)).toEqual([
        protocol === "grpc"
          ? // Triton's form over gRPC: raw_output_contents, passed through untouched.
            { name: "OUTPUT0", datatype: "FP32", shape: [5], raw: hex(bytes) }
          : { name: "OUTPUT0", datatype: "FP32", shape: [3], values: [1, 2 ** -149, -1.5] },
      ]);
      const typed = await predict(m("any"), [typedInput("INPUT0", "INT32", [3], [1, -2, 2147483647])], { output_form: "TENSOR_FORM_RAW" });
      expect(typed.outputs.map(tensor)).toEqual([{ name: "OUTPUT0", datatype: "INT32", shape: [3], raw: hex(encodeRaw("INT32", [1, -2, 2147483647])) }]);
    });

    it("a tensor big enough for the worker thread (300,000 FP32: REST JSON is written and read off the event loop) round-trips; its faults keep their field", async () => {
      const values = sequence(300_000, (i) => Math.fround(i / 3 - 7));
      const offloaded = offloadedTasks();
      const typed = await predict(m("any"), [typedInput("INPUT0", "FP32", [values.length], values)]);
      // Over REST, the body and the answer went through the worker thread (infergate runs in this process).
      expect(offloadedTasks() - offloaded).toBe(protocol === "rest" ? 2 : 0);
      const out = typed.outputs[0]!;
      // Unset output_form: the server's form (gRPC raw, REST typed).
      expect(out["data"]).toBe(protocol === "grpc" ? "raw_contents" : "contents");
      const got = protocol === "grpc" ? decodeRaw("FP32", out["raw_contents"] as Buffer) : ((out["contents"] as Obj)["fp32_contents"] as number[]);
      expect(got.length).toBe(values.length);
      expect(got.every((v, i) => v === values[i])).toBe(true);
      const raw = await predict(m("any"), [typedInput("INPUT0", "FP32", [values.length], values)], { output_form: "TENSOR_FORM_RAW" });
      expect(hex(raw.outputs[0]!["raw_contents"] as Buffer)).toBe(hex(encodeRaw("FP32", values)));
      if (protocol === "rest") {
        const nan = encodeRaw("FP32", values);
        nan.set([0, 0, 0xc0, 0x7f], 4 * 123_456);
        const err = await expectServiceError(predict(m("any"), [rawInput("INPUT0", "FP32", [values.length], nan)]));
        expect([err.code, err.details]).toEqual([
          grpc.status.INVALID_ARGUMENT,
          `inputs[0].raw_contents: tensor "INPUT0" element 123456 is NaN; KServe's REST JSON has no NaN or Infinity (use protocol "grpc")`,
        ]);
      }
    });

    // Over REST, JSON carries finite numbers only: NaN and ±Infinity are refused (see below).
    const halves: { datatype: "FP16" | "BF16"; model: string; bits: number[] }[] =
      protocol === "grpc"
        ? [
            { datatype: "FP16", model: "fp16", bits: [0x3c00, 0x8000, 0x7bff, 0x0001, 0x7c00, 0xfc00, 0x7e00, 0x7d01] },
            { datatype: "BF16", model: "any", bits: [0x3f80, 0x8000, 0x7f7f, 0x0001, 0x7f80, 0xffc0, 0x7fc1] },
          ]
        : [
            { datatype: "FP16", model: "fp16", bits: [0x3c00, 0xc000, 0x7bff, 0x0001, 0x03ff, 0x3555] },
            { datatype: "BF16", model: "any", bits: [0x3f80, 0x4049, 0x7f7f, 0x0001, 0xc2f7] },
          ];

    it.each(halves)("$datatype bit patterns round-trip exactly ($model)", async ({ datatype, model, bits }) => {
      const raw = le16(...bits);
      const { result, infers } = await received(() => predict(m(model), [rawInput("INPUT0", datatype, [bits.length], raw)]));
      expect(result.outputs.map(tensor)).toEqual([{ name: "OUTPUT0", datatype, shape: [bits.length], raw: hex(raw) }]);
      expect(infers.map((r) => r.inputs.map((t) => [t.form, t.rawByteLength]))).toEqual([
        [protocol === "grpc" ? ["raw", bits.length * 2] : ["json", undefined]],
      ]);
    });

    it("an empty FP16 tensor", async () => {
      const { result } = await received(() => predict(m("fp16"), [rawInput("INPUT0", "FP16", [0], new Uint8Array(0))]));
      expect(result.outputs.map(tensor)).toEqual([{ name: "OUTPUT0", datatype: "FP16", shape: [0], raw: "" }]);
    });

    it("reverse_bytes: BYTES elements reversed", async () => {
      const elements = protocol === "grpc" ? [Buffer.from([0, 0xff, 0xc3]), Buffer.alloc(0), Buffer.from("ab")] : [Buffer.from("abc"), Buffer.alloc(0), Buffer.from("xy")];
      const { result } = await received(() => predict(m("reverse"), [typedInput("INPUT0", "BYTES", [3], elements)]));
      expect(result.outputs.map(tensor)).toEqual([
        { name: "OUTPUT0", datatype: "BYTES", shape: [3], values: elements.map((e) => hex(Buffer.from(e).reverse())) },
      ]);
    });

    it("fail_unavailable: UNAVAILABLE, UPSTREAM_UNAVAILABLE", async () => {
      const err = await expectServiceError(predict(m("unavailable"), [typedInput("INPUT0", "FP32", [1], [1])]));
      expect(seen(err)).toEqual(
        protocol === "grpc"
          ? { code: grpc.status.UNAVAILABLE, message: 'upstream "tri-grpc" failed: injected failure: server unavailable', reason: "UPSTREAM_UNAVAILABLE", metadata: { upstream } }
          : { code: grpc.status.UNAVAILABLE, message: 'upstream "tri-rest" is unavailable (HTTP 503)', reason: "UPSTREAM_UNAVAILABLE", metadata: { upstream, http_status: "503" } },
      );
    });

    it("fail_exhausted: RESOURCE_EXHAUSTED, UPSTREAM_RATE_LIMITED (REST: RetryInfo from Retry-After)", async () => {
      const err = await expectServiceError(predict(m("exhausted"), [typedInput("INPUT0", "FP32", [1], [1])]));
      expect(seen(err)).toEqual(
        protocol === "grpc"
          ? { code: grpc.status.RESOURCE_EXHAUSTED, message: 'upstream "tri-grpc" failed: injected failure: resource exhausted', reason: "UPSTREAM_RATE_LIMITED", metadata: { upstream } }
          : { code: grpc.status.RESOURCE_EXHAUSTED, message: 'upstream "tri-rest" is rate limiting the gateway', reason: "UPSTREAM_RATE_LIMITED", metadata: { upstream, http_status: "429" } },
      );
      expect(retryDelay(err)).toEqual(protocol === "grpc" ? undefined : { seconds: "1", nanos: 0 });
    });

    it("an unknown upstream model, or version: NOT_FOUND, MODEL_NOT_FOUND", async () => {
      const unknownModel = await expectServiceError(predict(m("missing"), [typedInput("INPUT0", "FP32", [1], [1])]));
      const unknownVersion = await expectServiceError(predict(m("simple"), [typedInput("INPUT0", "INT32", [1], [1])], { model_version: "9" }));
      expect([seen(unknownModel), seen(unknownVersion)]).toEqual(
        protocol === "grpc"
          ? [
              { code: grpc.status.NOT_FOUND, message: "upstream \"tri-grpc\" failed: Request for unknown model: 'no_such_model' is not found", reason: "MODEL_NOT_FOUND", metadata: { upstream } },
              { code: grpc.status.NOT_FOUND, message: "upstream \"tri-grpc\" failed: Request for unknown model: 'simple' version 9 is not found", reason: "MODEL_NOT_FOUND", metadata: { upstream } },
            ]
          : [
              { code: grpc.status.NOT_FOUND, message: 'upstream "tri-rest" does not know the model or path', reason: "MODEL_NOT_FOUND", metadata: { upstream, http_status: "404" } },
              { code: grpc.status.NOT_FOUND, message: 'upstream "tri-rest" does not know the model or path', reason: "MODEL_NOT_FOUND", metadata: { upstream, http_status: "404" } },
            ],
      );
    });

    it("the server's INVALID_ARGUMENT (wrong datatype for the model) keeps its message", async () => {
      const err = await expectServiceError(predict(m("simple"), [typedInput("INPUT0", "FP32", [1], [1]), typedInput("INPUT1", "FP32", [1], [1])]));
      const text = "inference input 'INPUT0' data-type is 'FP32', but model 'simple' expects 'INT32'";
      expect(seen(err)).toEqual(
        protocol === "grpc"
          ? { code: grpc.status.INVALID_ARGUMENT, message: `upstream "tri-grpc" failed: ${text}`, reason: "INVALID_ARGUMENT", metadata: { upstream } }
          : { code: grpc.status.INVALID_ARGUMENT, message: `upstream "tri-rest" rejected the request: ${text}`, reason: "INVALID_ARGUMENT", metadata: { upstream, http_status: "400" } },
      );
    });

    it("a deadline shorter than the model: DEADLINE_EXCEEDED, and the server sees the call go", async () => {
      fake.requests.length = 0;
      const started = Date.now();
      const err = await expectServiceError(
        predict(m("slow"), [typedInput("INPUT0", "INT32", [1], [1]), typedInput("INPUT1", "INT32", [1], [1])], { parameters: { delay_ms: { int64_param: 3000 } } }, 400),
      );
      expect(err.code).toBe(grpc.status.DEADLINE_EXCEEDED);
      // A lower bound only: the deadline's timer (400 ms less the gateway's 50 ms margin) never fires early.
      expect(Date.now() - started).toBeGreaterThanOrEqual(348);
      // The deadline ended the call while the fake still held its answer (due 3 s in).
      const rec = fake.requests.find((r) => r.method === "ModelInfer" && r.model === "slow")!;
      expect(rec.answeredAt).toBeUndefined();
      // Then the fake saw the call go and never answered (had it not, it would answer at 3 s and
      // never set abortedAt).
      await expect.poll(() => rec.abortedAt, { timeout: 10_000 }).toBeDefined();
      expect(rec.answeredAt).toBeUndefined();
      if (protocol === "grpc") {
        // The remaining deadline travelled as grpc-timeout.
        expect(rec.timeoutMs).toBeGreaterThan(100);
        expect(rec.timeoutMs).toBeLessThanOrEqual(400);
      }
    });

    it("a client cancel reaches the server", async () => {
      fake.requests.length = 0;
      const def = protoLoader.loadSync("infergate/v1/inference_service.proto", loaderOptions)["infergate.v1.InferenceService"] as protoLoader.ServiceDefinition;
      const method = def["Predict"]!;
      const request = { model: m("slow"), inputs: [typedInput("INPUT0", "INT32", [1], [1]), typedInput("INPUT1", "INT32", [1], [1])] };
      const outcome = new Promise<grpc.ServiceError | null>((resolve) => {
        const call = client.client.makeUnaryRequest(
          method.path,
          method.requestSerialize,
          method.responseDeserialize,
          request,
          new grpc.Metadata(),
          { deadline: Date.now() + 10_000 },
          (err) => resolve(err),
        );
        void expect
          .poll(() => fake.requests.find((r) => r.method === "ModelInfer" && r.model === "slow"), { timeout: 5000, interval: 10 })
          .toBeDefined()
          .then(() => call.cancel());
      });
      const err = await outcome;
      expect(err?.code).toBe(grpc.status.CANCELLED);
      // The cancel reached the fake before its answer (due 2 s in): had it not, the fake would
      // answer then and never set abortedAt.
      const rec = fake.requests.find((r) => r.method === "ModelInfer" && r.model === "slow")!;
      await expect.poll(() => rec.abortedAt, { timeout: 10_000 }).toBeDefined();
      expect(rec.answeredAt).toBeUndefined();
    });
  });

  describe("what REST JSON cannot carry is INVALID_ARGUMENT before any request", () => {
    it.each([
      ["non-UTF-8 BYTES", typedInput("INPUT0", "BYTES", [2], [Buffer.from("ok"), Buffer.from([0xc3, 0x28])]), "inputs[0].contents.bytes_contents[1]", 'BYTES tensor "INPUT0" element 1 is not valid UTF-8'],
      ["NaN in FP32", typedInput("INPUT0", "FP32", [2], [1, NaN]), "inputs[0].contents.fp32_contents[1]", 'tensor "INPUT0" element 1 is NaN'],
      ["Infinity in FP16", rawInput("INPUT0", "FP16", [1], le16(0x7c00)), "inputs[0].raw_contents", 'tensor "INPUT0" element 0 is Infinity'],
    ])("%s", async (_name, input, field, problem) => {
      fake.requests.length = 0;
      const err = await expectServiceError(predict("any-rest", [input]));
      expect(seen(err)).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, reason: "INVALID_ARGUMENT", metadata: { field } });
      expect(err.details).toContain(problem);
      expect(fake.requests).toEqual([]);
    });

    it("the same tensors pass over gRPC, exactly", async () => {
      const result = await predict("any-grpc", [typedInput("INPUT0", "BYTES", [1], [Buffer.from([0xc3, 0x28])])]);
      expect(result.outputs.map(tensor)).toEqual([{ name: "OUTPUT0", datatype: "BYTES", shape: [1], values: ["c328"] }]);
    });

    it("-0 is sent as -0.0 (the server reads a negative zero)", async () => {
      fake.requests.length = 0;
      await predict("any-rest", [typedInput("INPUT0", "FP32", [2], [-0, 0])]);
      await predict("fp16-rest", [rawInput("INPUT0", "FP16", [1], le16(0x8000))]);
      const values = fake.requests.filter((r) => r.method === "ModelInfer").map((r) => r.inputs[0]!.values!.map((v) => Object.is(v, -0)));
      expect(values).toEqual([[true, false], [true]]);
    });
  });

  describe("readiness in ListModels", () => {
    type Listed = { models: { name: string; state: string; upstream_kind: string; capabilities: string[] }[] };

    it("READY / NOT_READY from ModelReady and GET …/ready, probed once per upstream model; Predict never probes", async () => {
      const own = await startInProcess(config(fake));
      const c = inferenceClient(own.grpcAddress);
      try {
        const states = async () => (await c.unary<Listed>("ListModels", {})).models.map((x) => [x.name, x.state, x.upstream_kind, x.capabilities.join(",")]);
        const probes = () => fake.requests.filter((r) => r.method === "ModelReady").map((r) => `${r.protocol} ${r.path} ${r.model}`).sort();
        fake.requests.length = 0;
        // The first ListModels answers at once, before the probes it starts.
        expect(new Set((await states()).map(([, state]) => state))).toEqual(new Set(["MODEL_STATE_UNSPECIFIED"]));
        const expected = protocols.flatMap((p) =>
          models.map(([name, upstreamModel]) => [
            `${name}-${p}`,
            upstreamModel === "not_ready" || upstreamModel === "no_such_model" ? "MODEL_STATE_NOT_READY" : "MODEL_STATE_READY",
            "kserve",
            "CAPABILITY_PREDICT",
          ]),
        );
        await expect.poll(states, { timeout: 5000, interval: 20 }).toEqual(expected);
        const upstreamModels = [...new Set(models.map(([, u]) => u))].sort();
        const want = [
          ...upstreamModels.map((u) => `grpc /inference.GRPCInferenceService/ModelReady ${u}`),
          ...upstreamModels.map((u) => `rest GET /v2/models/${u}/ready ${u}`),
        ].sort();
        expect(probes()).toEqual(want);
        // Within the TTL, neither Predict nor ListModels probes again.
        for (const p of protocols) {
          await c.unary("Predict", { model: `simple-${p}`, inputs: [typedInput("INPUT0", "INT32", [1], [1]), typedInput("INPUT1", "INT32", [1], [2])] });
          await expectServiceError(c.unary("Predict", { model: `notready-${p}`, inputs: [typedInput("INPUT0", "FP32", [1], [1])] }));
        }
        await states();
        expect(probes()).toEqual(want);
        expect(fake.requests.filter((r) => r.method === "ModelInfer")).toHaveLength(4);
      } finally {
        c.close();
        await own.shutdown();
      }
    });

    it.each(protocols)("over %s: re-probed every readinessTtlMs in the background; shutdown stops it", async (protocol) => {
      const yaml = `
upstreams:
  - name: t
    kind: kserve
    endpoints: ["${protocol === "grpc" ? `http://${fake.grpcAddress}` : fake.restUrl}"]
    options: { protocol: ${protocol}, readinessTtlMs: 100 }
models:
  - name: s
    upstream: t
    upstreamModel: simple
`;
      const own = await startInProcess(yaml);
      const c = inferenceClient(own.grpcAddress);
      fake.requests.length = 0;
      const probes = () => fake.requests.filter((r) => r.method === "ModelReady" && r.protocol === protocol).length;
      try {
        await c.unary<Listed>("ListModels", {});
        await expect.poll(probes, { timeout: 3000, interval: 20 }).toBeGreaterThanOrEqual(4);
        expect((await c.unary<Listed>("ListModels", {})).models.map((x) => x.state)).toEqual(["MODEL_STATE_READY"]);
      } finally {
        c.close();
        await own.shutdown();
      }
      const after = probes();
      await new Promise((r) => setTimeout(r, 400));
      expect(probes()).toBe(after);
    });
  });
});
