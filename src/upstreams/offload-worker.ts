/**
 * The worker thread of offload.ts: pure translations of big tensors, run away from the event
 * loop. Each task takes and returns structured-cloneable values; byte arrays it returns are
 * transferred, not copied. Errors go back as data (offload.ts rebuilds them).
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { isMainThread, parentPort } from "node:worker_threads";
import type { Code } from "@connectrpc/connect";
import { PredictRequestSchema, type PredictResponse, PredictResponseSchema } from "../../gen/infergate/v1/inference_service_pb.js";
import { TensorForm } from "../../gen/infergate/v1/tensor_pb.js";
import { GatewayError } from "../core/gateway-error.js";
import { parseUpstreamJson } from "./exact-json.js";
import { UpstreamFailure } from "./http/http-errors.js";
import { fromRestInferResponse, toRestInferRequest, writeRestJson } from "./kserve/kserve-rest-translate.js";
import { applyOutputForm } from "./tensor-bulk.js";
import { fromPredictAnswer, type TfServingModelOptions, toPredictBody, writeTfJson } from "./tfserving/tfserving-translate.js";
import type { TfJson } from "./tfserving/tfserving-wire.js";

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
    return rawResponse(fromRestInferResponse(input.upstream, parseUpstreamJson(input.upstream, input.text)));
  },

  /** A PredictRequest (bytes, tensors raw) as the JSON body of a TF Serving `:predict` call, UTF-8. */
  tfservingRequest(input: { request: Uint8Array; options: TfServingModelOptions }): Uint8Array {
    return utf8.encode(writeTfJson(toPredictBody(fromBinary(PredictRequestSchema, input.request), input.options) as unknown as TfJson));
  },

  /** A TF Serving answer's JSON text as PredictResponse bytes, outputs raw (see kserveRestResponse). */
  tfservingResponse(input: { upstream: string; text: string; request: Uint8Array; options: TfServingModelOptions }): { response: Uint8Array; typed: number[] } {
    const json = parseUpstreamJson(input.upstream, input.text);
    const outputs = fromPredictAnswer(input.upstream, json, fromBinary(PredictRequestSchema, input.request), input.options);
    return rawResponse(create(PredictResponseSchema, { outputs }));
  },
};

/** The response's bytes with every output raw, and which outputs were typed. */
function rawResponse(res: PredictResponse): { response: Uint8Array; typed: number[] } {
  const typed = res.outputs.flatMap((t, i) => (t.data.case === "contents" ? [i] : []));
  return { response: toBinary(PredictResponseSchema, applyOutputForm(res, TensorForm.RAW)), typed };
}

export type OffloadTasks = typeof offloadTasks;

/** What the worker sends back for one task; offload.ts turns a failure back into its GatewayError. */
export type OffloadReply =
  | { id: number; ok: true; value: unknown }
  | {
      id: number;
      ok: false;
      error: {
        gateway: boolean;
        message: string;
        code?: Code;
        reason?: string;
        metadata?: Record<string, string>;
        retryAfterMs?: number;
        cause?: { message: string; status: number | undefined; bodySnippet: string | undefined };
      };
    };

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
