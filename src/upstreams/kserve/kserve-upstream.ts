import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { z } from "zod";
import { GRPCInferenceService, ModelReadyRequestSchema } from "../../../gen/inference/grpc_service_pb.js";
import {
  type EmbedResponse,
  ModelState,
  type PredictRequest,
  PredictRequestSchema,
  type PredictResponse,
  PredictResponseSchema,
} from "../../../gen/infergate/v1/inference_service_pb.js";
import type { TensorForm } from "../../../gen/infergate/v1/tensor_pb.js";
import { offload, offloadBytes, ownBuffer } from "../offload.js";
import { tensorBytes, typedAgain, withRawInputs } from "../tensor-bulk.js";
import type { UpstreamConfig } from "../../config/schema.js";
import { parseUpstreamJson } from "../exact-json.js";
import { GrpcUpstream } from "../grpc/grpc-upstream.js";
import { badResponse } from "../http/http-errors.js";
import { defaultHttpPoolOptions, headerValue, HttpUpstream, httpPoolOptionsSchema } from "../http/http-upstream.js";
import type { Upstream, UpstreamCall, UpstreamKind } from "../../core/upstream.js";
import { defaultEmbeddingTensors, type KserveModelOptions, upstreamVersion } from "./kserve-common.js";
import { fromEmbedPredictResponse, toEmbedPredictRequest } from "./kserve-embed-translate.js";
import { fromModelInferResponse, toModelInferRequest } from "./kserve-grpc-translate.js";
import { fromRestInferResponse, restModelPath, toRestInferRequest, writeRestJson } from "./kserve-rest-translate.js";

const positiveInt = z.number().int().positive();

/** The default largest gRPC message each way: tensors are bigger than chat messages. */
const defaultMaxMessageBytes = 64 * 1024 * 1024;

/** Options of a `kserve` upstream in config (`upstreams[].options`). */
export const kserveOptionsSchema = z
  .strictObject({
    /**
     * How the Open Inference Protocol is spoken: "grpc" (`inference.GRPCInferenceService`, the
     * endpoint is `http://host:port` of the gRPC listener, or https:// for TLS) or "rest"
     * (`/v2/models/…` under the endpoint's URL). Default "grpc".
     */
    protocol: z.enum(["grpc", "rest"]).default("grpc"),
    /**
     * How often each model's readiness (ModelReady, or `GET …/ready`) is probed in the background
     * for ListModels, in milliseconds. Default 5000. Predict calls never probe.
     */
    readinessTtlMs: positiveInt.default(5_000),
    /** protocol "grpc" only: largest message each way. Default 64 MiB. */
    maxMessageBytes: positiveInt.max(1 << 30).optional(),
    /** protocol "rest" only: connection settings (see HttpPoolOptions). */
    http: httpPoolOptionsSchema.optional(),
  })
  .superRefine((o, ctx) => {
    if (o.protocol === "grpc" && o.http !== undefined) {
      ctx.addIssue({ code: "custom", path: ["http"], message: 'applies to protocol "rest" only' });
    }
    if (o.protocol === "rest" && o.maxMessageBytes !== undefined) {
      ctx.addIssue({ code: "custom", path: ["maxMessageBytes"], message: 'applies to protocol "grpc" only (use http.maxResponseBytes)' });
    }
  });
export type KserveOptions = z.infer<typeof kserveOptionsSchema>;

/** Per-model options (`models[].options`) of a model served by a `kserve` upstream. */
export const kserveModelOptionsSchema = z.strictObject({
  /**
   * The version asked of the server when a request pins no `model_version`. Default: none, the
   * server's version policy decides. The model's own `version` is infergate's cache label and is
   * never sent.
   */
  upstreamVersion: z.string().min(1).optional(),
  /**
   * For a text-embedding model (capability `embed`): the name of its BYTES input of texts
   * (default "text"), of its FP32 output of shape [batch, dim] (default "embedding"), and the
   * input's shape, "batch" ([batch], the default) or "batch1" ([batch, 1]). Unset: all three
   * defaults (defaultEmbeddingTensors).
   */
  embedding: z
    .strictObject({
      input: z.string().min(1).default(defaultEmbeddingTensors.input),
      output: z.string().min(1).default(defaultEmbeddingTensors.output),
      inputShape: z.enum(["batch", "batch1"]).default(defaultEmbeddingTensors.inputShape),
    })
    .optional(),
}) satisfies z.ZodType<KserveModelOptions>;
export type KserveModelOptionsConfig = z.infer<typeof kserveModelOptionsSchema>;

/**
 * The `kserve` kind: the Open Inference Protocol (KServe v2) over gRPC or REST: Predict, and Embed
 * for a text-embedding model (kserve-embed-translate.ts).
 */
export const kserveKind: UpstreamKind<KserveOptions, KserveModelOptionsConfig> = {
  capabilities: ["predict", "embed"],
  needsEndpoints: true,
  optionsSchema: kserveOptionsSchema,
  modelOptionsSchema: kserveModelOptionsSchema,
  create: (config, options) => createKserveUpstream(config, options),
};

/** The longest one readiness probe may take; it never holds a caller. */
const probeTimeoutMs = 5_000;

/** The I/O of one protocol: inference, and whether a model is ready. */
interface KserveTransport {
  infer(call: UpstreamCall<PredictRequest>, version: string | undefined): Promise<PredictResponse>;
  /** Resolves true when ready; false or a rejection when not. */
  ready(model: string, signal: AbortSignal, deadline: number): Promise<boolean>;
  close(): Promise<void>;
}

/**
 * The thin client of an Open Inference Protocol server (Triton, KServe, MLServer, OpenVINO Model
 * Server). Predict is one ModelInfer (gRPC, through GrpcUpstream: the caller's remaining deadline
 * capped by `timeoutMs`, cancelled with the caller, errors mapped in untrusted mode) or one
 * `POST /v2/models/{name}[/versions/{v}]/infer` (REST, through HttpUpstream: the same bounds,
 * `{"error": …}` statuses through the one HTTP→gRPC mapping). Embed is the same inference, built
 * from the texts and read back into vectors by kserve-embed-translate.ts. Requests carry the
 * upstream's extra `headers` (as gRPC metadata, lower-cased, over gRPC) and `authorization: Bearer
 * <apiKey>` when an apiKey is set (for auth proxies in front of the server).
 *
 * Readiness (ListModels): a model's first modelState() probes it at once and answers UNSPECIFIED;
 * from then on every `readinessTtlMs` an unref'd timer re-probes every model asked about (ModelReady
 * without a version, or `GET /v2/models/{name}/ready`: 200 is READY, anything else or no answer
 * NOT_READY). modelState() only reads that cache. close() stops the timer and aborts probes.
 */
export function createKserveUpstream(config: UpstreamConfig, options: KserveOptions): Upstream<KserveModelOptionsConfig> {
  const transport = options.protocol === "rest" ? restTransport(config, options) : grpcTransport(config, options);
  const closing = new AbortController();
  const readiness = new Map<string, ModelState>();
  const probing = new Set<string>();
  let timer: NodeJS.Timeout | undefined;

  async function probe(model: string): Promise<void> {
    if (probing.has(model)) return;
    probing.add(model);
    let state: ModelState;
    try {
      const deadline = Date.now() + Math.min(probeTimeoutMs, config.timeoutMs);
      state = (await transport.ready(model, closing.signal, deadline)) ? ModelState.READY : ModelState.NOT_READY;
    } catch {
      // Unreachable, unknown model, or failing: it cannot answer now.
      state = ModelState.NOT_READY;
    } finally {
      probing.delete(model);
    }
    if (!closing.signal.aborted) readiness.set(model, state);
  }

  function schedule(): void {
    timer = setTimeout(() => {
      void Promise.all([...readiness.keys()].map(probe)).then(() => {
        if (!closing.signal.aborted) schedule();
      });
    }, options.readinessTtlMs);
    timer.unref();
  }

  return {
    name: config.name,
    kind: "kserve",
    predict(call): Promise<PredictResponse> {
      return transport.infer(call, upstreamVersion(call.request, call.modelOptions));
    },
    async embed(call): Promise<EmbedResponse> {
      const tensors = call.modelOptions.embedding ?? defaultEmbeddingTensors;
      const request = toEmbedPredictRequest(call.request, tensors);
      const res = await transport.infer({ ...call, request }, upstreamVersion(call.request, call.modelOptions));
      return fromEmbedPredictResponse(config.name, res, tensors, call.request.texts.length, call.request.dimensions);
    },
    modelState(upstreamModel) {
      const known = readiness.get(upstreamModel);
      if (known !== undefined) return known;
      if (closing.signal.aborted) return ModelState.UNSPECIFIED;
      readiness.set(upstreamModel, ModelState.UNSPECIFIED);
      void probe(upstreamModel);
      if (timer === undefined) schedule();
      return ModelState.UNSPECIFIED;
    },
    async close() {
      closing.abort(new Error("upstream closed"));
      clearTimeout(timer);
      await transport.close();
    },
  };
}

/** gRPC metadata of every call: the configured headers (lower-cased), then the apiKey. */
function grpcMetadata(config: UpstreamConfig): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(config.headers)) out[k.toLowerCase()] = v;
  if (config.apiKey !== undefined) out["authorization"] = `Bearer ${config.apiKey}`;
  return out;
}

function grpcTransport(config: UpstreamConfig, options: KserveOptions): KserveTransport {
  const io = new GrpcUpstream(config, { maxMessageBytes: options.maxMessageBytes ?? defaultMaxMessageBytes, trustedErrors: false });
  const metadata = grpcMetadata(config);
  return {
    async infer(call, version) {
      const request = toModelInferRequest(call.request, call.upstreamModel, version);
      const res = await io.unary(GRPCInferenceService.method.modelInfer, request, { signal: call.signal, deadline: call.deadline, metadata });
      return fromModelInferResponse(config.name, res);
    },
    async ready(model, signal, deadline) {
      const res = await io.unary(GRPCInferenceService.method.modelReady, create(ModelReadyRequestSchema, { name: model }), { signal, deadline, metadata });
      return res.ready;
    },
    close: () => io.close(),
  };
}

function restTransport(config: UpstreamConfig, options: KserveOptions): KserveTransport {
  const http = new HttpUpstream(config, { ...defaultHttpPoolOptions, ...options.http });
  const drop = new Set(["content-type", "accept", ...(config.apiKey === undefined ? [] : ["authorization"])]);
  const headers: Record<string, string> = {
    ...Object.fromEntries(Object.entries(config.headers).filter(([k]) => !drop.has(k.toLowerCase()))),
    accept: "application/json",
    ...(config.apiKey === undefined ? {} : { authorization: `Bearer ${config.apiKey}` }),
  };
  return {
    async infer(call, version) {
      const big = tensorBytes(call.request.inputs) >= offloadBytes;
      const body = big ? await restBodyOffThread(call.request) : writeRestJson(toRestInferRequest(call.request));
      const answer = await http.request({
        method: "POST",
        path: restModelPath(call.upstreamModel, version, "infer"),
        headers: { ...headers, "content-type": "application/json" },
        body,
        signal: call.signal,
        deadline: call.deadline,
      });
      let text: string;
      try {
        text = await http.readText(answer.body);
      } catch (err) {
        throw http.failure(err, call.signal, answer.signal);
      }
      const type = headerValue(answer.headers, "content-type") ?? "";
      if (!/^application\/([a-z0-9.+-]*\+)?json\b/i.test(type)) {
        // e.g. Triton's binary tensor extension (application/octet-stream), which is not asked for.
        throw badResponse(config.name, `content-type "${type}" where JSON was expected`, text);
      }
      if (text.length >= offloadBytes) return restAnswerOffThread(config.name, text, call.request.outputForm);
      const json = parseUpstreamJson(config.name, text);
      return fromRestInferResponse(config.name, json);
    },
    async ready(model, signal, deadline) {
      // Non-2xx (Triton: 400 when not ready, 404 when unknown) rejects.
      const answer = await http.request({ method: "GET", path: restModelPath(model, undefined, "ready"), headers, signal, deadline });
      await http.readText(answer.body, 64 * 1024);
      return true;
    },
    close: () => http.close(),
  };
}

/** A big request's REST body, written on the worker thread (the request goes there raw: a copy). */
async function restBodyOffThread(req: PredictRequest): Promise<Uint8Array> {
  const bytes = toBinary(PredictRequestSchema, withRawInputs(req));
  return offload("kserveRestRequest", { request: bytes }, ownBuffer(bytes));
}

/** A big REST answer read on the worker thread; the outputs JSON held typed come back typed unless RAW was asked for. */
async function restAnswerOffThread(upstream: string, text: string, form: TensorForm): Promise<PredictResponse> {
  const { response, typed } = await offload("kserveRestResponse", { upstream, text });
  return typedAgain(fromBinary(PredictResponseSchema, response), typed, form);
}
