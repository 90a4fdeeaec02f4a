#!/usr/bin/env node
/**
 * A fast fake KServe v2 / Triton inference server for the benchmarks, run as its own process, on
 * loopback only: `inference.GRPCInferenceService` (ServerLive, ServerReady, ModelReady, ModelInfer;
 * proto/inference/grpc_service.proto, generated into dist/gen/inference/grpc_service_pb.js) on
 * @grpc/grpc-js, and the KServe v2 REST/JSON protocol (`POST /v2/models/{name}[/versions/{v}]/infer`,
 * `GET /v2/models/{name}[/versions/{v}]/ready`, `GET /v2/health/{live,ready}`) on node:http, each
 * on its own port. It keeps no record of requests (the recording fake of the tests is
 * test/fakes/triton-fake.ts) and does as little as it can per call, as a C++ server would.
 *
 *   node bench/fake-kserve-server.mjs [--grpc-port N] [--rest-port M]
 *     (prints {"grpcPort":N,"restPort":M} on stdout when both listen)
 *
 * Models (any version; the answer reports "1"):
 *   `simple`         Triton's example: INT32 INPUT0 and INPUT1 of the same shape ([1,16]) →
 *                    INT32 OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 − INPUT1 (int32 wrap-around).
 *   `identity_fp32`  one FP32 input of any shape → FP32 OUTPUT0 with the same shape and bytes (raw
 *                    input passed through as it came; typed input converted with a Float32Array).
 *
 * Over gRPC the answer is always `raw_output_contents` (little-endian, row-major), as Triton
 * answers, whichever form the inputs came in: typed (`contents`) or raw (`raw_input_contents`, the
 * i-th entry for the i-th input). Over REST inputs and outputs are JSON `data` arrays (flat, or
 * nested by shape). Unknown model: NOT_FOUND / 404; a request the model cannot take:
 * INVALID_ARGUMENT / 400 with `{"error": "<message>"}`.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { createServer } from "node:http";
import { parseArgs } from "node:util";
import {
  GRPCInferenceService,
  ModelInferResponseSchema,
  ModelReadyResponseSchema,
  ServerLiveResponseSchema,
  ServerReadyResponseSchema,
} from "../dist/gen/inference/grpc_service_pb.js";

const { values } = parseArgs({ options: { "grpc-port": { type: "string", default: "0" }, "rest-port": { type: "string", default: "0" } } });

/** Largest message each way: a 1M-element FP32 tensor (4 MiB) several times over. */
const maxMessageBytes = 256 * 1024 * 1024;

class FakeError extends Error {
  /** @param {"invalid" | "not_found"} kind */
  constructor(kind, message) {
    super(message);
    this.kind = kind;
  }
}
const invalid = (message) => new FakeError("invalid", message);

/** @typedef {{ name: string, datatype: string, shape: number[], bytes: Uint8Array }} FakeTensor  (bytes: raw little-endian) */

const elements = (shape) => shape.reduce((n, d) => n * d, 1);

/** A typed array's bytes (no copy). */
const bytesOf = (a) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/**
 * A view of raw bytes as 32-bit elements (little-endian host): a view when aligned, else over a
 * copy (`new Uint8Array(bytes)` copies; a Buffer's slice() would not).
 */
function view32(Type, bytes) {
  if (bytes.byteOffset % 4 === 0) return new Type(bytes.buffer, bytes.byteOffset, bytes.byteLength >> 2);
  return new Type(new Uint8Array(bytes).buffer);
}
const int32View = (bytes) => view32(Int32Array, bytes);

/** Checks an input's datatype and byte length against its shape. */
function expect(t, datatype) {
  if (t.datatype !== datatype) throw invalid(`input ${t.name}: datatype ${t.datatype}, expected ${datatype}`);
  if (t.shape.some((d) => !Number.isInteger(d) || d < 0)) throw invalid(`input ${t.name}: bad shape [${t.shape}]`);
  if (t.bytes.byteLength !== elements(t.shape) * 4) {
    throw invalid(`input ${t.name}: ${t.bytes.byteLength} bytes of contents for shape [${t.shape}] (${elements(t.shape) * 4} expected)`);
  }
}

/** The models: inputs (raw bytes) → outputs (raw bytes). */
const models = {
  simple(inputs) {
    const a = inputs.find((t) => t.name === "INPUT0");
    const b = inputs.find((t) => t.name === "INPUT1");
    if (a === undefined || b === undefined || inputs.length !== 2) throw invalid("model simple takes INPUT0 and INPUT1");
    expect(a, "INT32");
    expect(b, "INT32");
    if (a.shape.join() !== b.shape.join()) throw invalid(`INPUT0 [${a.shape}] and INPUT1 [${b.shape}] differ in shape`);
    const x = int32View(a.bytes);
    const y = int32View(b.bytes);
    const sum = new Int32Array(x.length);
    const diff = new Int32Array(x.length);
    for (let i = 0; i < x.length; i++) {
      sum[i] = x[i] + y[i];
      diff[i] = x[i] - y[i];
    }
    return [
      { name: "OUTPUT0", datatype: "INT32", shape: a.shape, bytes: bytesOf(sum) },
      { name: "OUTPUT1", datatype: "INT32", shape: a.shape, bytes: bytesOf(diff) },
    ];
  },
  identity_fp32(inputs) {
    if (inputs.length !== 1) throw invalid("model identity_fp32 takes one input");
    const [t] = inputs;
    expect(t, "FP32");
    return [{ name: "OUTPUT0", datatype: "FP32", shape: t.shape, bytes: t.bytes }];
  },
};

/** Runs a model; `requested` (output names, empty: all) picks and orders the outputs. */
function infer(model, inputs, requested) {
  const fn = Object.hasOwn(models, model) ? models[model] : undefined;
  if (fn === undefined) throw new FakeError("not_found", `Request for unknown model: '${model}' is not found`);
  const outputs = fn(inputs);
  if (requested.length === 0) return outputs;
  return requested.map((name) => {
    const o = outputs.find((t) => t.name === name);
    if (o === undefined) throw invalid(`unexpected inference output '${name}' for model '${model}'`);
    return o;
  });
}

// --- gRPC ------------------------------------------------------------------------------------

/** Typed InferTensorContents → raw bytes, for the datatypes the models take. */
function typedBytes(name, datatype, contents) {
  switch (datatype) {
    case "INT32":
      return bytesOf(Int32Array.from(contents.intContents));
    case "FP32":
      return bytesOf(Float32Array.from(contents.fp32Contents));
    default:
      throw invalid(`input ${name}: datatype ${datatype} is not supported by this fake`);
  }
}

/** ModelInferRequest → tensors (raw bytes), typed or raw inputs; never both kinds at once. */
function grpcInputs(req) {
  const anyTyped = req.inputs.some((i) => i.contents !== undefined);
  if (anyTyped && req.rawInputContents.length > 0) throw invalid("contents and raw_input_contents in the same request");
  if (!anyTyped && req.rawInputContents.length !== req.inputs.length) {
    throw invalid(`${req.rawInputContents.length} raw_input_contents for ${req.inputs.length} inputs`);
  }
  return req.inputs.map((i, k) => ({
    name: i.name,
    datatype: i.datatype,
    shape: i.shape.map(Number),
    bytes: anyTyped ? typedBytes(i.name, i.datatype, i.contents ?? { intContents: [], fp32Contents: [] }) : req.rawInputContents[k],
  }));
}

const grpcStatus = { invalid: grpc.status.INVALID_ARGUMENT, not_found: grpc.status.NOT_FOUND };

/** A grpc-js method definition whose (de)serializers are the protobuf-es schemas. */
function methodDefinition(method) {
  return {
    path: `/${GRPCInferenceService.typeName}/${method.name}`,
    requestStream: false,
    responseStream: false,
    requestDeserialize: (b) => fromBinary(method.input, b),
    requestSerialize: (m) => toBinary(method.input, m),
    // A Buffer over toBinary's bytes, not a copy of them.
    responseSerialize: (m) => {
      const u = toBinary(method.output, m);
      return Buffer.from(u.buffer, u.byteOffset, u.byteLength);
    },
    responseDeserialize: (b) => fromBinary(method.output, b),
  };
}

const served = ["ServerLive", "ServerReady", "ModelReady", "ModelInfer"];
const definition = Object.fromEntries(GRPCInferenceService.methods.filter((m) => served.includes(m.name)).map((m) => [m.name, methodDefinition(m)]));

const grpcServer = new grpc.Server({
  "grpc.max_receive_message_length": maxMessageBytes,
  "grpc.max_send_message_length": maxMessageBytes,
  "grpc.max_concurrent_streams": 1000,
  "grpc.enable_channelz": 0,
});
grpcServer.addService(definition, {
  ServerLive: (_call, cb) => cb(null, create(ServerLiveResponseSchema, { live: true })),
  ServerReady: (_call, cb) => cb(null, create(ServerReadyResponseSchema, { ready: true })),
  ModelReady: (call, cb) => cb(null, create(ModelReadyResponseSchema, { ready: Object.hasOwn(models, call.request.name) })),
  ModelInfer(call, cb) {
    const req = call.request;
    let outputs;
    try {
      outputs = infer(req.modelName, grpcInputs(req), req.outputs.map((o) => o.name));
    } catch (err) {
      cb({ code: err instanceof FakeError ? grpcStatus[err.kind] : grpc.status.INTERNAL, details: err.message });
      return;
    }
    cb(
      null,
      create(ModelInferResponseSchema, {
        modelName: req.modelName,
        modelVersion: "1",
        id: req.id,
        outputs: outputs.map((o) => ({ name: o.name, datatype: o.datatype, shape: o.shape.map(BigInt) })),
        rawOutputContents: outputs.map((o) => o.bytes),
      }),
    );
  },
});

// --- REST ------------------------------------------------------------------------------------

/** A JSON `data` array (flat, or nested by shape) → raw bytes. */
function jsonBytes(name, datatype, data) {
  if (!Array.isArray(data)) throw invalid(`input ${name}: data must be an array`);
  const flat = data.length > 0 && Array.isArray(data[0]) ? data.flat(Infinity) : data;
  if (!flat.every((v) => typeof v === "number")) throw invalid(`input ${name}: data must hold numbers`);
  switch (datatype) {
    case "INT32":
      return bytesOf(Int32Array.from(flat));
    case "FP32":
      return bytesOf(Float32Array.from(flat));
    default:
      throw invalid(`input ${name}: datatype ${datatype} is not supported by this fake`);
  }
}

/** Raw bytes → a flat JSON array of their numbers. */
function jsonData(t) {
  return Array.from(view32(t.datatype === "INT32" ? Int32Array : Float32Array, t.bytes));
}

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

const restStatus = { invalid: 400, not_found: 404 };
const modelPath = /^\/v2\/models\/([^/]+)(?:\/versions\/[^/]+)?\/(infer|ready)$/;

const restServer = createServer({ keepAliveTimeout: 60_000, requestTimeout: 0, headersTimeout: 60_000 }, (req, res) => {
  const url = req.url ?? "";
  if (req.method === "GET" && (url === "/v2/health/live" || url === "/v2/health/ready")) {
    res.writeHead(200, { "content-length": 0 });
    res.end();
    return;
  }
  const m = modelPath.exec(url);
  if (m === null) {
    send(res, 404, { error: `no such endpoint: ${req.method} ${url}` });
    return;
  }
  const model = decodeURIComponent(m[1]);
  if (m[2] === "ready") {
    if (req.method !== "GET") {
      send(res, 405, { error: "GET only" });
      return;
    }
    if (Object.hasOwn(models, model)) {
      res.writeHead(200, { "content-length": 0 });
      res.end();
    } else {
      send(res, 404, { error: `Request for unknown model: '${model}' is not found` });
    }
    return;
  }
  if (req.method !== "POST") {
    send(res, 405, { error: "POST only" });
    return;
  }
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    let body;
    try {
      body = JSON.parse(chunks.length === 1 ? chunks[0].toString("utf8") : Buffer.concat(chunks).toString("utf8"));
    } catch {
      send(res, 400, { error: "failed to parse the request JSON buffer" });
      return;
    }
    try {
      if (!Array.isArray(body?.inputs)) throw invalid("inputs must be an array");
      const inputs = body.inputs.map((i) => ({
        name: String(i?.name),
        datatype: String(i?.datatype),
        shape: Array.isArray(i?.shape) ? i.shape.map(Number) : [],
        bytes: jsonBytes(String(i?.name), String(i?.datatype), i?.data),
      }));
      const requested = Array.isArray(body.outputs) ? body.outputs.map((o) => String(o?.name)) : [];
      const outputs = infer(model, inputs, requested);
      send(res, 200, {
        model_name: model,
        model_version: "1",
        ...(typeof body.id === "string" && body.id !== "" ? { id: body.id } : {}),
        outputs: outputs.map((o) => ({ name: o.name, datatype: o.datatype, shape: o.shape, data: jsonData(o) })),
      });
    } catch (err) {
      send(res, err instanceof FakeError ? restStatus[err.kind] : 500, { error: err.message });
    }
  });
});

// --- start and stop ----------------------------------------------------------------------------

const grpcPort = await new Promise((resolve, reject) => {
  grpcServer.bindAsync(`127.0.0.1:${values["grpc-port"]}`, grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port)));
});
await new Promise((resolve, reject) => {
  restServer.once("error", reject);
  restServer.listen(Number(values["rest-port"]), "127.0.0.1", resolve);
});
process.stdout.write(`${JSON.stringify({ grpcPort, restPort: restServer.address().port })}\n`);

const stop = () => {
  grpcServer.forceShutdown();
  restServer.close(() => process.exit(0));
  restServer.closeAllConnections();
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
