/**
 * The Predict messages of the benchmarks, built with the generated protobuf-es code of dist/gen:
 * infergate's PredictRequest, and for the direct runs the KServe v2 request infergate's `kserve`
 * upstream itself sends (ModelInferRequest over gRPC, the JSON body over REST; see
 * docs/upstream-kserve.md, "Request mapping"). Used by bench/run.mjs and bench/predict-client.mjs.
 * Internal to bench/.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { ModelInferRequestSchema } from "../../dist/gen/inference/grpc_service_pb.js";
import { PredictRequestSchema } from "../../dist/gen/infergate/v1/inference_service_pb.js";
import { DataType, TensorForm } from "../../dist/gen/infergate/v1/tensor_pb.js";
import { grpcFrame } from "./common.mjs";

export { TensorForm };

export const predictPath = "/infergate.v1.InferenceService/Predict";
export const modelInferPath = "/inference.GRPCInferenceService/ModelInfer";

/** Triton's `simple` example: two INT32 [1,16] inputs. */
export const simpleInput0 = Int32Array.from({ length: 16 }, (_, i) => i);
export const simpleInput1 = Int32Array.from({ length: 16 }, () => 1);

/** The big tensor: `n` FP32 values (deterministic, exact in float32). */
export function bigTensor(n) {
  return Float32Array.from({ length: n }, (_, i) => (i % 4096) / 8 - 256);
}

const bytesOf = (a) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** PredictRequest of `simple` (typed int_contents, as a client writes it), serialized. */
export function smallPredictBytes(model) {
  const tensor = (name, values) => ({
    name,
    datatype: DataType.INT32,
    shape: [1n, 16n],
    data: { case: "contents", value: { intContents: Array.from(values) } },
  });
  return toBinary(PredictRequestSchema, create(PredictRequestSchema, { model, inputs: [tensor("INPUT0", simpleInput0), tensor("INPUT1", simpleInput1)] }));
}

/** The ModelInferRequest infergate's kserve upstream sends for that PredictRequest (typed inputs stay typed). */
export function smallModelInferBytes(upstreamModel) {
  const tensor = (name, values) => ({ name, datatype: "INT32", shape: [1n, 16n], contents: { intContents: Array.from(values) } });
  return toBinary(ModelInferRequestSchema, create(ModelInferRequestSchema, { modelName: upstreamModel, inputs: [tensor("INPUT0", simpleInput0), tensor("INPUT1", simpleInput1)] }));
}

/** The REST JSON body infergate's kserve upstream (protocol rest) sends for that PredictRequest. */
export function smallRestBody() {
  const tensor = (name, values) => ({ name, shape: [1, 16], datatype: "INT32", data: Array.from(values) });
  return JSON.stringify({ inputs: [tensor("INPUT0", simpleInput0), tensor("INPUT1", simpleInput1)] });
}

/**
 * A big FP32 Predict or ModelInfer request, serialized: `form` "raw" (raw_contents /
 * raw_input_contents) or "typed" (fp32_contents); `outputForm` a TensorForm (Predict only).
 */
export function bigRequestBytes({ target, model, values, form, outputForm = TensorForm.UNSPECIFIED }) {
  const shape = [1n, BigInt(values.length)];
  if (target === "direct") {
    const input = { name: "INPUT0", datatype: "FP32", shape, ...(form === "typed" ? { contents: { fp32Contents: Array.from(values) } } : {}) };
    return toBinary(ModelInferRequestSchema, create(ModelInferRequestSchema, { modelName: model, inputs: [input], rawInputContents: form === "raw" ? [bytesOf(values)] : [] }));
  }
  const data = form === "typed" ? { case: "contents", value: { fp32Contents: Array.from(values) } } : { case: "rawContents", value: bytesOf(values) };
  return toBinary(PredictRequestSchema, create(PredictRequestSchema, { model, inputs: [{ name: "INPUT0", datatype: DataType.FP32, shape, data }], outputForm }));
}

/**
 * Writes the small Predict bodies h2load sends (gRPC bodies with the 5-byte prefix) into `dir`;
 * `models`: {grpc, rest, probe} (infergate's model names) and `upstreamModel` (the fake's).
 */
export function writePredictBodies(dir, models) {
  const file = (name, bytes) => {
    const path = join(dir, name);
    writeFileSync(path, bytes);
    return path;
  };
  return {
    predictGrpc: file("predict-simple-grpc.grpc", grpcFrame(smallPredictBytes(models.grpc))),
    predictRest: file("predict-simple-rest.grpc", grpcFrame(smallPredictBytes(models.rest))),
    predictProbe: file("predict-simple-probe.grpc", grpcFrame(smallPredictBytes(models.probe))),
    modelInfer: file("modelinfer-simple.grpc", grpcFrame(smallModelInferBytes(models.upstreamModel))),
    restJson: file("kserve-simple.json", smallRestBody()),
  };
}
