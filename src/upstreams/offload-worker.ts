/**
 * The worker thread of offload.ts: pure translations of big tensors, run away from the event
 * loop. Each task takes and returns structured-cloneable values; byte arrays it returns are
 * transferred, not copied. Errors go back as data (offload.ts rebuilds them).
 */
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { isMainThread, parentPort } from "node:worker_threads";
import { PredictRequestSchema, PredictResponseSchema } from "../../gen/infergate/v1/inference_service_pb.js";
import { TensorForm } from "../../gen/infergate/v1/tensor_pb.js";
import { GatewayError } from "../gateway/gateway-error.js";
import { badResponse, UpstreamFailure } from "./http/http-errors.js";
import { fromRestInferResponse, toRestInferRequest, writeRestJson } from "./kserve/kserve-translate.js";
import { applyOutputForm } from "./tensor-bulk.js";
import { parseTfJson, TfJsonSyntaxError } from "./tfserving/tfserving-json.js";
import type { OffloadReply } from "./offload.js";

const utf8 = new TextEncoder();

/** The tasks, by name. */
export const offloadTasks = {
  /**
   * A PredictRequest (its bytes, the tensors raw: cheap to send) as the JSON body of a KServe v2
   * REST `…/infer` call, UTF-8.
   */
  kserveRestRequest(input: { request: Uint8Array }): Uint8Array {
    return utf8.encode(writeRestJson(toRestInferRequest(fromBinary(PredictRequestSchema, input.request))));
  },

  /**
   * A KServe v2 REST answer's JSON text as PredictResponse bytes, every output raw (one bytes
   * field each: cheap to decode on the main thread); `typed` lists the outputs that the JSON held
   * as typed values (all but FP16/BF16), for the caller to turn back into typed form if asked.
   */
  kserveRestResponse(input: { upstream: string; text: string }): { response: Uint8Array; typed: number[] } {
    let json: unknown;
    try {
      json = parseTfJson(input.text);
    } catch (err) {
      if (err instanceof TfJsonSyntaxError) throw badResponse(input.upstream, `malformed JSON: ${err.message}`, input.text.slice(0, 4096));
      throw err;
    }
    const res = fromRestInferResponse(input.upstream, json);
    const typed = res.outputs.flatMap((t, i) => (t.data.case === "contents" ? [i] : []));
    return { response: toBinary(PredictResponseSchema, applyOutputForm(res, TensorForm.RAW)), typed };
  },
};

export type OffloadTasks = typeof offloadTasks;

function replyError(id: number, err: unknown): OffloadReply {
  if (err instanceof GatewayError) {
    const cause = err.cause instanceof UpstreamFailure ? { message: err.cause.message, status: err.cause.status, bodySnippet: err.cause.bodySnippet } : undefined;
    return {
      id,
      ok: false,
      error: { gateway: true, message: err.message, code: err.code, reason: err.reason, metadata: { ...err.metadata }, retryAfterMs: err.retryAfterMs, cause },
    };
  }
  return { id, ok: false, error: { gateway: false, message: err instanceof Error ? err.message : String(err) } };
}

/** The buffers of a task's result to transfer: every byte array in it that owns its buffer. */
function transferables(value: unknown): ArrayBuffer[] {
  const out: ArrayBuffer[] = [];
  const visit = (v: unknown) => {
    if (v instanceof Uint8Array) {
      if (v.byteOffset === 0 && v.byteLength === v.buffer.byteLength && v.buffer instanceof ArrayBuffer && !out.includes(v.buffer)) out.push(v.buffer);
    } else if (v !== null && typeof v === "object") {
      for (const x of Object.values(v)) visit(x);
    }
  };
  visit(value);
  return out;
}

if (!isMainThread && parentPort !== null) {
  const port = parentPort;
  port.on("message", (msg: { id: number; task: keyof OffloadTasks; input: never }) => {
    let reply: OffloadReply;
    try {
      const value = offloadTasks[msg.task](msg.input);
      reply = { id: msg.id, ok: true, value };
      port.postMessage(reply, transferables(value));
      return;
    } catch (err) {
      reply = replyError(msg.id, err);
    }
    port.postMessage(reply);
  });
}
