/**
 * Pure translations between infergate's Predict messages and the Open Inference Protocol (KServe
 * v2) over gRPC: `inference.ModelInferRequest`/`ModelInferResponse`. No I/O: the client in
 * kserve-upstream.ts sends what these build and feeds back what arrives. docs/upstream-kserve.md
 * has the mapping table; every request field either maps or is rejected here with
 * INVALID_ARGUMENT naming it, never silently dropped. The REST half is kserve-rest-translate.ts.
 *
 * Answers keep the form the server used: raw bytes as `raw_contents` (never decoded element by
 * element), typed values as `contents`; the caller's PredictRequest.output_form asks for one form
 * whatever the server sent, and the gateway converts in bulk (tensor-bulk.ts).
 */
import { create } from "@bufbuild/protobuf";
import {
  type InferParameter,
  InferParameterSchema,
  type InferTensorContents,
  InferTensorContentsSchema,
  type ModelInferRequest,
  type ModelInferRequest_InferInputTensor,
  ModelInferRequest_InferInputTensorSchema,
  ModelInferRequestSchema,
  type ModelInferResponse,
} from "../../../gen/inference/grpc_service_pb.js";
import { type PredictRequest, type PredictResponse, PredictResponseSchema } from "../../../gen/infergate/v1/inference_service_pb.js";
import {
  type ParameterValue,
  ParameterValueSchema,
  type Tensor,
  TensorContentsSchema,
  TensorSchema,
} from "../../../gen/infergate/v1/tensor_pb.js";
import { GatewayError, invalidArgument } from "../../core/gateway-error.js";
import { badResponse } from "../http/http-errors.js";
import { rawFromTyped } from "../tensor-bulk.js";
import { checkNarrowInts, checkTensor, dataTypeInfo, decodeTensor } from "../tensor-codec.js";
import { checkRequestedOutputs, dataTypeOfName, kserveName, noParameterValue } from "./kserve-common.js";

/**
 * Builds the ModelInferRequest. `model_name` is the upstream model; `model_version` is set only
 * when `version` is (see upstreamVersion); `id` and every parameter map pass through. Tensor
 * data: if any input is raw (FP16 and BF16 always are), every input goes raw, in input order, in
 * `raw_input_contents` (the typed ones encoded little-endian, BYTES length-prefixed); otherwise
 * every input carries typed `contents`. One form for all inputs keeps `raw_input_contents[i]` ↔
 * `inputs[i]` true for every server. `cache_policy` and `metadata` are the gateway's and are not
 * sent.
 */
export function toModelInferRequest(req: PredictRequest, upstreamModel: string, version: string | undefined): ModelInferRequest {
  checkRequestedOutputs(req);
  const raw = req.inputs.some((t) => t.data.case === "rawContents");
  const rawInputContents: Uint8Array[] = [];
  const inputs = req.inputs.map((t, i): ModelInferRequest_InferInputTensor => {
    const path = `inputs[${i}]`;
    checkNarrowInts(t, path);
    const base = {
      name: t.name,
      datatype: kserveName(t.datatype, path),
      shape: [...t.shape],
      parameters: toInferParameters(t.parameters, `${path}.parameters`),
    };
    if (raw) {
      // As given, or converted in bulk from the typed values.
      rawInputContents.push(rawFromTyped(t, path));
      return create(ModelInferRequest_InferInputTensorSchema, base);
    }
    return create(ModelInferRequest_InferInputTensorSchema, { ...base, contents: typedContents(t, path) });
  });
  return create(ModelInferRequestSchema, {
    modelName: upstreamModel,
    modelVersion: version ?? "",
    id: req.id,
    parameters: toInferParameters(req.parameters, "parameters"),
    inputs,
    outputs: req.outputs.map((o, i) => ({ name: o.name, parameters: toInferParameters(o.parameters, `outputs[${i}].parameters`) })),
    rawInputContents,
  });
}

/** A typed tensor's values in InferTensorContents (the same fields, the same numbers). */
function typedContents(t: Tensor, path: string): InferTensorContents {
  const field = dataTypeInfo(t.datatype)?.field;
  if (t.data.case !== "contents" || field === undefined) {
    // validatePredictRequest lets no such tensor through; decodeTensor names the fault.
    decodeTensor(t, path);
    throw invalidArgument(`${path}.contents`, "no typed contents");
  }
  return create(InferTensorContentsSchema, { [field]: t.data.value[field] });
}

/**
 * Reads a ModelInferResponse: `raw_output_contents[i]` holds `outputs[i]` when present (then for
 * every output); otherwise each output's typed `contents`. Each output keeps the form it came in:
 * raw bytes pass through as `raw_contents` untouched (checked for length against shape and
 * datatype, never decoded element by element), typed values as `contents` (checked for count, and
 * narrow integers for range). A mismatch is UNAVAILABLE UPSTREAM_BAD_RESPONSE. The caller's
 * PredictRequest.output_form converts afterwards, in the gateway (tensor-bulk.ts). Response and
 * tensor parameters map back; the server's model name, version and id are not used (the gateway
 * reports its own).
 */
export function fromModelInferResponse(upstream: string, res: ModelInferResponse): PredictResponse {
  const raw = res.rawOutputContents;
  if (raw.length > 0 && raw.length !== res.outputs.length) {
    throw badResponse(upstream, `${raw.length} raw_output_contents for ${res.outputs.length} outputs`);
  }
  const outputs = res.outputs.map((o, i) => {
    const path = `outputs[${i}]`;
    const datatype = dataTypeOfName(o.datatype);
    if (datatype === undefined) throw badResponse(upstream, `${path} ("${o.name}") has unknown datatype "${o.datatype}"`);
    let data: Tensor["data"];
    if (raw.length > 0) {
      if (o.contents !== undefined && hasValues(o.contents)) {
        throw badResponse(upstream, `${path} ("${o.name}") has both contents and raw_output_contents`);
      }
      data = { case: "rawContents", value: raw[i]! };
    } else if (dataTypeInfo(datatype)!.field === undefined && (o.contents === undefined || !hasValues(o.contents))) {
      // FP16/BF16 have no typed field: only an empty tensor can come without raw contents.
      data = { case: "rawContents", value: new Uint8Array(0) };
    } else {
      const c = o.contents ?? create(InferTensorContentsSchema);
      data = {
        case: "contents",
        value: create(TensorContentsSchema, {
          boolContents: c.boolContents,
          intContents: c.intContents,
          int64Contents: c.int64Contents,
          uintContents: c.uintContents,
          uint64Contents: c.uint64Contents,
          fp32Contents: c.fp32Contents,
          fp64Contents: c.fp64Contents,
          bytesContents: c.bytesContents,
        }),
      };
    }
    const tensor = create(TensorSchema, { name: o.name, datatype, shape: o.shape, data });
    asBadResponse(upstream, () => {
      checkTensor(tensor, path);
      checkNarrowInts(tensor, path);
    });
    tensor.parameters = fromInferParameters(o.parameters);
    return tensor;
  });
  return create(PredictResponseSchema, { outputs, parameters: fromInferParameters(res.parameters) });
}

function hasValues(c: InferTensorContents): boolean {
  return (
    c.boolContents.length + c.intContents.length + c.int64Contents.length + c.uintContents.length +
      c.uint64Contents.length + c.fp32Contents.length + c.fp64Contents.length + c.bytesContents.length >
    0
  );
}

/** A decodeTensor/checkTensor complaint about an answer is the server's fault, not the caller's. */
function asBadResponse<T>(upstream: string, run: () => T): T {
  try {
    return run();
  } catch (err) {
    if (err instanceof GatewayError) throw badResponse(upstream, err.message);
    throw err;
  }
}

/** Our parameters → InferParameter (the same five choices, the same field numbers). */
function toInferParameters(params: Readonly<Record<string, ParameterValue>>, path: string): Record<string, InferParameter> {
  const out: Record<string, InferParameter> = {};
  for (const [k, p] of Object.entries(params)) {
    const v = p.value;
    switch (v.case) {
      case "boolParam":
        out[k] = create(InferParameterSchema, { parameterChoice: { case: "boolParam", value: v.value } });
        break;
      case "int64Param":
        out[k] = create(InferParameterSchema, { parameterChoice: { case: "int64Param", value: v.value } });
        break;
      case "stringParam":
        out[k] = create(InferParameterSchema, { parameterChoice: { case: "stringParam", value: v.value } });
        break;
      case "doubleParam":
        out[k] = create(InferParameterSchema, { parameterChoice: { case: "doubleParam", value: v.value } });
        break;
      case "uint64Param":
        out[k] = create(InferParameterSchema, { parameterChoice: { case: "uint64Param", value: v.value } });
        break;
      default:
        throw invalidArgument(`${path}["${k}"]`, noParameterValue);
    }
  }
  return out;
}

/** InferParameter → ours; an empty InferParameter stays empty. */
function fromInferParameters(params: Readonly<Record<string, InferParameter>>): Record<string, ParameterValue> {
  const out: Record<string, ParameterValue> = {};
  for (const [k, p] of Object.entries(params)) {
    const c = p.parameterChoice;
    out[k] = c.case === undefined ? create(ParameterValueSchema) : create(ParameterValueSchema, { value: c } as never);
  }
  return out;
}
