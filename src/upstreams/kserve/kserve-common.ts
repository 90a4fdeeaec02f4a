/**
 * What the KServe v2 translators of both protocols share (kserve-grpc-translate.ts,
 * kserve-rest-translate.ts): datatype names, the model version sent, the check of requested
 * outputs, and the fault of a parameter that holds no value. docs/upstream-kserve.md has the
 * mapping table.
 */
import type { PredictRequest } from "../../../gen/infergate/v1/inference_service_pb.js";
import { DataType } from "../../../gen/infergate/v1/tensor_pb.js";
import { echoed, invalidArgument } from "../../core/gateway-error.js";
import { dataTypeInfo } from "../tensor-codec.js";

/** A model's options as the `kserve` kind parses them (kserve-upstream.ts). */
export interface KserveModelOptions {
  /**
   * The model version asked of the server when the request pins none. Unset: no version is sent
   * and the server picks by its version policy. (The model's configured `version` is infergate's
   * cache label and is never sent.)
   */
  readonly upstreamVersion?: string | undefined;
  /** The tensors of a text-embedding model (Embed); unset: defaultEmbeddingTensors. */
  readonly embedding?: KserveEmbeddingTensors | undefined;
}

/**
 * The tensors of a text-embedding model served over the Open Inference Protocol: one BYTES input
 * holding the texts, one FP32 output of shape [batch, dim] holding their vectors.
 */
export interface KserveEmbeddingTensors {
  /** The BYTES input's name. */
  readonly input: string;
  /** The FP32 output's name. */
  readonly output: string;
  /** The input's shape: `batch` is [batch], `batch1` is [batch, 1] (one text per row). */
  readonly inputShape: "batch" | "batch1";
}

/** The tensor names and input shape of an embedding model whose options set none. */
export const defaultEmbeddingTensors: KserveEmbeddingTensors = { input: "text", output: "embedding", inputShape: "batch" };

const allDataTypes = (Object.values(DataType).filter((v) => typeof v === "number") as DataType[]).filter(
  (dt) => dataTypeInfo(dt) !== undefined,
);

const dataTypeByName: ReadonlyMap<string, DataType> = new Map(allDataTypes.map((dt) => [dataTypeInfo(dt)!.kserveName, dt]));

/** Our datatype of a KServe v2 datatype name ("FP32"), or undefined for a name KServe does not have. */
export function dataTypeOfName(name: string): DataType | undefined {
  return dataTypeByName.get(name);
}

/**
 * The model version sent upstream (Predict and Embed alike): the request's pin, else the model's
 * `upstreamVersion`, else none.
 */
export function upstreamVersion(req: Pick<PredictRequest, "modelVersion">, options: KserveModelOptions): string | undefined {
  return req.modelVersion ?? options.upstreamVersion;
}

/** The KServe v2 name of a request tensor's datatype; INVALID_ARGUMENT at `path` when it has none. */
export function kserveName(datatype: DataType, path: string): string {
  const info = dataTypeInfo(datatype);
  if (info === undefined) throw invalidArgument(`${path}.datatype`, "required (one of the DATA_TYPE_* values)");
  return info.kserveName;
}

/** Requested outputs: each name once (a server would answer one tensor per name, or fail). */
export function checkRequestedOutputs(req: PredictRequest): void {
  const names = new Set<string>();
  req.outputs.forEach((o, i) => {
    if (names.has(o.name)) throw invalidArgument(`outputs[${i}].name`, `duplicate output name "${echoed(o.name)}"`);
    names.add(o.name);
  });
}

/** The fault of a parameter with none of the five values set, on either protocol. */
export const noParameterValue = "no value set: set one of bool_param, int64_param, string_param, double_param, uint64_param";
