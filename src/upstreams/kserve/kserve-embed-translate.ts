/**
 * Pure translations between infergate's Embed messages and a text-embedding model served over the
 * Open Inference Protocol (KServe v2: Triton, KServe, MLServer): the texts go as one BYTES input
 * tensor, the vectors come back as one FP32 output of shape [batch, dim]. Embed is carried as a
 * Predict inside the adapter: the request built here is sent by the same transports as Predict
 * (kserve-grpc-translate.ts, kserve-rest-translate.ts), so both protocols, deadlines, errors and
 * big-message handling are the ones Predict has. No I/O. docs/upstream-kserve.md, "Embeddings".
 */
import { create } from "@bufbuild/protobuf";
import {
  type EmbedRequest,
  type EmbedResponse,
  EmbedResponseSchema,
  EmbeddingSchema,
  type PredictRequest,
  PredictRequestSchema,
  type PredictResponse,
} from "../../../gen/infergate/v1/inference_service_pb.js";
import { UsageSchema } from "../../../gen/infergate/v1/chat_pb.js";
import { DataType, TensorForm } from "../../../gen/infergate/v1/tensor_pb.js";
import { GatewayError, invalidArgument } from "../../core/gateway-error.js";
import { shortenFp32 } from "../../wire/fp32.js";
import { badResponse } from "../http/http-errors.js";
import { rawFromTyped } from "../tensor-bulk.js";
import { dataTypeInfo, encodeTensor } from "../tensor-codec.js";
import type { KserveEmbeddingTensors } from "./kserve-common.js";

const utf8 = new TextEncoder();

/**
 * The inference request of an Embed: the texts as the one BYTES input `tensors.input` (shape
 * [n], or [n, 1] for `batch1`), raw (length-prefixed UTF-8, as Triton's clients send BYTES over
 * gRPC in `raw_input_contents`; written as JSON strings over REST), asking for the one output
 * `tensors.output`, raw. Token ids are refused: the model's input is text.
 */
export function toEmbedPredictRequest(req: EmbedRequest, tensors: KserveEmbeddingTensors): PredictRequest {
  if (req.tokens.length > 0) {
    throw invalidArgument("tokens", "this model takes texts (its input is a BYTES tensor of texts): give texts instead of token ids");
  }
  const n = BigInt(req.texts.length);
  const shape = tensors.inputShape === "batch1" ? [n, 1n] : [n];
  const input = encodeTensor(tensors.input, DataType.BYTES, shape, { kind: "bytes", values: req.texts.map((t) => utf8.encode(t)) }, true);
  return create(PredictRequestSchema, {
    model: req.model,
    inputs: [input],
    outputs: [{ name: tensors.output }],
    outputForm: TensorForm.RAW,
  });
}

/**
 * The EmbedResponse of an inference answer: the output `tensors.output` must be FP32 of shape
 * [count, dim] with dim ≥ 1 (anything else, or no such output, is UNAVAILABLE
 * UPSTREAM_BAD_RESPONSE); row i is the vector of input i, copied out of the answer so that each
 * cached vector holds only its own bytes. `dimensions` below dim shortens every vector
 * (shortenFp32: the first values, scaled back to unit length: meaningful only for a model trained
 * for it); above dim it is INVALID_ARGUMENT. KServe reports no token counts: usage is 0.
 */
export function fromEmbedPredictResponse(
  upstream: string,
  res: PredictResponse,
  tensors: KserveEmbeddingTensors,
  count: number,
  dimensions: number | undefined,
): EmbedResponse {
  const out = res.outputs.find((o) => o.name === tensors.output);
  const where = `output "${tensors.output}"`;
  if (out === undefined) {
    const names = res.outputs.map((o) => `"${o.name}"`).join(", ");
    throw badResponse(upstream, `no ${where} in the answer (outputs: ${names === "" ? "none" : names})`);
  }
  if (out.datatype !== DataType.FP32) {
    throw badResponse(upstream, `${where} is ${dataTypeInfo(out.datatype)?.kserveName ?? "of an unknown datatype"} where FP32 was expected`);
  }
  const shape = out.shape.map(Number);
  if (shape.length !== 2 || shape[0] !== count || shape[1]! < 1) {
    throw badResponse(upstream, `${where} has shape [${shape.join(", ")}] where [${count}, dim] was expected`);
  }
  const dim = shape[1]!;
  let bytes: Uint8Array;
  try {
    bytes = rawFromTyped(out, where);
  } catch (err) {
    if (err instanceof GatewayError) throw badResponse(upstream, err.message);
    throw err;
  }
  const rowBytes = dim * 4;
  if (bytes.byteLength !== count * rowBytes) {
    throw badResponse(upstream, `${where} has ${bytes.byteLength} bytes for shape [${count}, ${dim}]`);
  }
  if (dimensions !== undefined && dimensions > dim) {
    throw invalidArgument("dimensions", `${dimensions} is more than the ${dim} values of this model's vectors`);
  }
  const shorten = dimensions !== undefined && dimensions < dim;
  const embeddings = Array.from({ length: count }, (_, i) => {
    const row = bytes.subarray(i * rowBytes, (i + 1) * rowBytes);
    // A copy either way (Uint8Array's slice; a Buffer's would be a view of the whole answer).
    return create(EmbeddingSchema, { index: i, fp32: shorten ? shortenFp32(row, dimensions) : Uint8Array.prototype.slice.call(row) });
  });
  return create(EmbedResponseSchema, {
    embeddings,
    dimensions: shorten ? dimensions : dim,
    usage: create(UsageSchema),
  });
}
