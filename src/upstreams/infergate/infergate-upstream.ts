import { create } from "@bufbuild/protobuf";
import { z } from "zod";
import {
  type ChatResponse,
  type EmbedResponse,
  type GenerateResponse,
  InferenceService,
  ListModelsRequestSchema,
  type ListModelsResponse,
  type PredictResponse,
} from "../../../gen/infergate/v1/inference_service_pb.js";
import type { UpstreamConfig } from "../../config/schema.js";
import { GrpcUpstream } from "../grpc/grpc-upstream.js";
import type { ChatInput, Upstream, UpstreamCall, UpstreamKind } from "../../core/upstream.js";
import {
  embedAnswer,
  forwardedChat,
  forwardedEmbed,
  forwardedGenerate,
  forwardedMetadata,
  forwardedPredict,
  type MetadataPolicy,
  modelStateOf,
  ownCredentialRefused,
} from "./infergate-translate.js";

const positiveInt = z.number().int().positive();

/**
 * A gRPC metadata name a caller may send and this kind may forward: lower case, text (not
 * `-bin`), and not reserved by gRPC (`grpc-*`). Protocol headers never reach `call.headers`.
 */
const forwardableName = z
  .string()
  .regex(/^[a-z0-9][a-z0-9_.-]*$/, { error: "a gRPC metadata name in lower case: letters, digits, _ . -" })
  .refine((n) => !n.startsWith("grpc-"), { error: "grpc-* names are reserved by gRPC" })
  .refine((n) => !n.endsWith("-bin"), { error: "binary (-bin) metadata is not forwarded" });

/** Options of an `infergate` upstream in config (`upstreams[].options`). */
export const infergateOptionsSchema = z.strictObject({
  /**
   * The caller's request headers (gRPC metadata) forwarded to the far gateway when present, by
   * name; e.g. ["x-request-id", "x-tenant"]. Default none.
   */
  forwardHeaders: z.array(forwardableName).default([]),
  /**
   * How often the far gateway's ListModels is fetched in the background, for the readiness this
   * gateway's ListModels reports, in milliseconds. Default 5000.
   */
  readinessTtlMs: positiveInt.default(5_000),
  /** Largest message each way (the far gateway's `server.maxMessageBytes` limits it too). Default 4 MiB. */
  maxMessageBytes: positiveInt.max(1 << 30).default(4 * 1024 * 1024),
});
export type InfergateOptions = z.infer<typeof infergateOptionsSchema>;

/** The `infergate` kind: another infergate over its own gRPC contract (a sidecar in front of a regional gateway). */
export const infergateKind: UpstreamKind<InfergateOptions> = {
  capabilities: ["predict", "chat", "generate", "embed"],
  needsEndpoints: true,
  optionsSchema: infergateOptionsSchema,
  create: (config, options) => createInfergateUpstream(config, options),
};

/** The longest a background ListModels may take. */
const listTimeoutMs = 5_000;

/**
 * The thin client of another infergate: Predict, Chat, Generate and Embed are forwarded over gRPC
 * (grpc-js, via GrpcUpstream) with the caller's remaining deadline (capped by `timeoutMs`) and
 * cancellation. The far side's errors are trusted: their code, message, ErrorInfo reason and
 * metadata and RetryInfo pass through (see ownCredentialRefused for the one exception). Its
 * Generate events pass through as they come, its final event included; a stream it cuts off ends
 * with its own error status (e.g. UNAVAILABLE STREAM_TRUNCATED).
 *
 * The answer's `model`, `model_version` and `upstream` are re-stamped by this gateway with its
 * own model, version and upstream names; `id` and `cached` are the far side's, but for Embed,
 * whose vectors are asked for packed and whose cached flags this gateway sets (embedAnswer).
 *
 * Readiness: the far gateway's ListModels, fetched now and then every `readinessTtlMs` on an
 * unref'd timer (it never keeps the process alive), stopped by close().
 */
export function createInfergateUpstream(config: UpstreamConfig, options: InfergateOptions): Upstream {
  const io = new GrpcUpstream(config, { maxMessageBytes: options.maxMessageBytes, trustedErrors: true });
  const policy: MetadataPolicy = { forwardHeaders: options.forwardHeaders, headers: config.headers, apiKey: config.apiKey };
  const ownMetadata = forwardedMetadata({}, policy);
  const hasApiKey = config.apiKey !== undefined;
  const closing = new AbortController();
  let listing: ListModelsResponse | undefined | "pending" = "pending";
  let timer: NodeJS.Timeout | undefined;

  async function refresh(): Promise<void> {
    try {
      listing = await io.unary(InferenceService.method.listModels, create(ListModelsRequestSchema), {
        signal: closing.signal,
        deadline: Date.now() + Math.min(listTimeoutMs, options.readinessTtlMs),
        metadata: ownMetadata,
      });
    } catch {
      if (closing.signal.aborted) return;
      // Down, refusing us, or too slow: nothing it serves can be called now.
      listing = undefined;
    }
    if (!closing.signal.aborted) {
      timer = setTimeout(() => void refresh(), options.readinessTtlMs);
      timer.unref();
    }
  }
  void refresh();

  const grpcCall = <Req>(call: UpstreamCall<Req>) => ({
    signal: call.signal,
    deadline: call.deadline,
    metadata: forwardedMetadata(call.headers, policy),
  });

  return {
    name: config.name,
    kind: "infergate",
    async predict(call): Promise<PredictResponse> {
      try {
        return await io.unary(InferenceService.method.predict, forwardedPredict(call.request, call.upstreamModel), grpcCall(call));
      } catch (err) {
        throw ownCredentialRefused(err, config.name, hasApiKey);
      }
    },
    async chat(call: UpstreamCall<ChatInput>): Promise<ChatResponse> {
      try {
        return await io.unary(InferenceService.method.chat, forwardedChat(call.request, call.upstreamModel), grpcCall(call));
      } catch (err) {
        throw ownCredentialRefused(err, config.name, hasApiKey);
      }
    },
    async embed(call): Promise<EmbedResponse> {
      let res: EmbedResponse;
      try {
        res = await io.unary(InferenceService.method.embed, forwardedEmbed(call.request, call.upstreamModel), grpcCall(call));
      } catch (err) {
        throw ownCredentialRefused(err, config.name, hasApiKey);
      }
      return embedAnswer(config.name, res, call.request.texts.length + call.request.tokens.length);
    },
    async *generate(call: UpstreamCall<ChatInput>): AsyncGenerator<GenerateResponse> {
      try {
        yield* io.serverStream(InferenceService.method.generate, forwardedGenerate(call.request, call.upstreamModel), grpcCall(call));
      } catch (err) {
        throw ownCredentialRefused(err, config.name, hasApiKey);
      }
    },
    modelState: (upstreamModel) => modelStateOf(listing, upstreamModel),
    async close() {
      closing.abort(new Error("upstream closed"));
      clearTimeout(timer);
      await io.close();
    },
  };
}
