import { z } from "zod";
import { ModelState, PredictRequestSchema, type PredictResponse, PredictResponseSchema } from "../../../gen/infergate/v1/inference_service_pb.js";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { offload, offloadBytes, ownBuffer } from "../offload.js";
import { tensorBytes, typedAgain, withRawInputs } from "../tensor-bulk.js";
import type { UpstreamConfig } from "../../config/schema.js";
import { parseUpstreamJson } from "../exact-json.js";
import { badResponse } from "../http/http-errors.js";
import { defaultHttpPoolOptions, headerValue, type HttpAnswer, HttpUpstream, httpPoolOptionsSchema } from "../http/http-upstream.js";
import type { Upstream, UpstreamKind } from "../../core/upstream.js";
import {
  fromPredictAnswer,
  modelStateOf,
  outputDatatypeNames,
  predictPath,
  statusPath,
  type TfServingModelOptions,
  toPredictBody,
  writeTfJson,
} from "./tfserving-translate.js";
import type { TfJson } from "./tfserving-wire.js";

const positiveInt = z.number().int().positive();

/** Options of a `tfserving` upstream in config (`upstreams[].options`). */
export const tfservingOptionsSchema = z.strictObject({
  /**
   * How long a model's readiness (from `GET /v1/models/{name}`, for ListModels) is reused before
   * the next ListModels probes again, in milliseconds. Default 5000.
   */
  readinessTtlMs: positiveInt.default(5_000),
  /** Connection settings (see HttpPoolOptions). */
  http: httpPoolOptionsSchema.optional(),
});
export type TfServingOptions = z.infer<typeof tfservingOptionsSchema>;

/** Per-model options (`models[].options`) of a model served by a `tfserving` upstream. */
export const tfservingModelOptionsSchema = z.strictObject({
  /**
   * The request form: "row" sends `instances` (every input shares its first, batch, dimension)
   * and reads `predictions`; "columnar" sends `inputs` and reads `outputs`. Default "row".
   */
  format: z.enum(["row", "columnar"]).default("row"),
  /** The serving signature (`signature_name`); default: the model's default signature. */
  signatureName: z.string().min(1).optional(),
  /**
   * The datatype of each named output (TF Serving's JSON carries none). Outputs not listed are
   * FP32 when numbers, BOOL when booleans, BYTES when strings or `{"b64": …}`.
   */
  outputs: z.record(z.string().min(1), z.strictObject({ datatype: z.enum(outputDatatypeNames) })).optional(),
}) satisfies z.ZodType<TfServingModelOptions>;
export type TfServingModelOptionsConfig = z.infer<typeof tfservingModelOptionsSchema>;

/** The `tfserving` kind: TensorFlow Serving's REST predict API, Predict only. */
export const tfservingKind: UpstreamKind<TfServingOptions, TfServingModelOptionsConfig> = {
  capabilities: ["predict"],
  needsEndpoints: true,
  optionsSchema: tfservingOptionsSchema,
  modelOptionsSchema: tfservingModelOptionsSchema,
  create: (config, options) => createTfServingUpstream(config, options),
};

/** The longest a readiness probe may take; it never holds a caller. */
const probeTimeoutMs = 5_000;

/**
 * The thin client of TF Serving's REST API: `POST {endpoint}/v1/models/{upstreamModel}[/versions/
 * {v}|/labels/{l}]:predict` with the body tfserving-translate.ts builds, read back into tensors.
 * Requests carry the upstream's extra `headers`, and `Authorization: Bearer <apiKey>` when an
 * apiKey is set (TF Serving itself has no authentication; a proxy in front of it may). Errors,
 * `{"error": "…"}` with an HTTP status, leave through HttpUpstream's one HTTP→gRPC mapping; the
 * caller's signal and deadline bound the whole call, body included.
 *
 * Readiness (ListModels) is `GET /v1/models/{upstreamModel}`, probed in the background when a
 * ListModels finds the last answer older than `readinessTtlMs`; until the first probe answered
 * the state is UNSPECIFIED.
 */
export function createTfServingUpstream(config: UpstreamConfig, options: TfServingOptions): Upstream<TfServingModelOptionsConfig> {
  const http = new HttpUpstream(config, { ...defaultHttpPoolOptions, ...options.http });
  const headers: Record<string, string> = {
    ...withoutNames(config.headers, ["content-type", "accept", ...(config.apiKey === undefined ? [] : ["authorization"])]),
    accept: "application/json",
    ...(config.apiKey === undefined ? {} : { authorization: `Bearer ${config.apiKey}` }),
  };
  const closing = new AbortController();
  const readiness = new Map<string, { state: ModelState; checkedAt: number; probing: boolean }>();

  async function readAnswer(answer: HttpAnswer, signal: AbortSignal): Promise<unknown> {
    return parseUpstreamJson(config.name, await readJsonText(answer, signal));
  }

  /** An answer's body, which must be JSON. */
  async function readJsonText(answer: HttpAnswer, signal: AbortSignal): Promise<string> {
    let text: string;
    try {
      text = await http.readText(answer.body);
    } catch (err) {
      throw http.failure(err, signal, answer.signal);
    }
    const type = headerValue(answer.headers, "content-type") ?? "";
    if (!/^application\/([a-z0-9.+-]*\+)?json\b/i.test(type)) {
      throw badResponse(config.name, `content-type "${type}" where JSON was expected`, text);
    }
    return text;
  }

  async function probe(model: string): Promise<ModelState> {
    try {
      const answer = await http.request({
        method: "GET",
        path: statusPath(model),
        headers,
        signal: closing.signal,
        deadline: Date.now() + Math.min(probeTimeoutMs, config.timeoutMs),
      });
      return modelStateOf(await readAnswer(answer, closing.signal));
    } catch {
      // Unreachable, unknown model (404), or failing: the model cannot answer now.
      return ModelState.NOT_READY;
    }
  }

  return {
    name: config.name,
    kind: "tfserving",
    async predict(call): Promise<PredictResponse> {
      const modelOptions = call.modelOptions;
      // A big tensor's JSON is written, and a big answer read, on the worker thread (offload.ts);
      // the request goes there with its numbers raw (a copy of bytes).
      const rawRequest = tensorBytes(call.request.inputs) >= offloadBytes ? toBinary(PredictRequestSchema, withRawInputs(call.request)) : undefined;
      const body =
        rawRequest === undefined
          ? writeTfJson(toPredictBody(call.request, modelOptions) as unknown as TfJson)
          : await offload("tfservingRequest", { request: rawRequest, options: modelOptions });
      const answer = await http.request({
        method: "POST",
        path: predictPath(call.upstreamModel, call.request.modelVersion),
        headers: { ...headers, "content-type": "application/json" },
        body,
        signal: call.signal,
        deadline: call.deadline,
      });
      const text = await readJsonText(answer, call.signal);
      if (text.length >= offloadBytes) {
        const request = rawRequest ?? toBinary(PredictRequestSchema, withRawInputs(call.request));
        const { response, typed } = await offload("tfservingResponse", { upstream: config.name, text, request, options: modelOptions }, ownBuffer(request));
        return typedAgain(fromBinary(PredictResponseSchema, response), typed, call.request.outputForm);
      }
      const json = parseUpstreamJson(config.name, text);
      return create(PredictResponseSchema, { outputs: fromPredictAnswer(config.name, json, call.request, modelOptions) });
    },
    modelState(upstreamModel) {
      let entry = readiness.get(upstreamModel);
      if (entry === undefined) {
        entry = { state: ModelState.UNSPECIFIED, checkedAt: Number.NEGATIVE_INFINITY, probing: false };
        readiness.set(upstreamModel, entry);
      }
      const e = entry;
      if (!e.probing && !closing.signal.aborted && Date.now() - e.checkedAt >= options.readinessTtlMs) {
        e.probing = true;
        void probe(upstreamModel).then((state) => {
          e.state = state;
          e.checkedAt = Date.now();
          e.probing = false;
        });
      }
      return e.state;
    },
    async close() {
      closing.abort(new Error("upstream closed"));
      await http.close();
    },
  };
}

/** The configured extra headers without those the adapter sets itself (names compare without case). */
function withoutNames(headers: Readonly<Record<string, string>>, names: readonly string[]): Record<string, string> {
  const drop = new Set(names.map((n) => n.toLowerCase()));
  return Object.fromEntries(Object.entries(headers).filter(([k]) => !drop.has(k.toLowerCase())));
}
