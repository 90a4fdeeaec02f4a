import { z } from "zod";
import type { ChatResponse, EmbedResponse, GenerateResponse } from "../../../gen/infergate/v1/inference_service_pb.js";
import type { UpstreamConfig } from "../../config/schema.js";
import { translateEventStream } from "../http/event-stream.js";
import { defaultHttpPoolOptions, type HttpAnswer, type HttpCall, HttpUpstream, httpPoolOptionsSchema } from "../http/http-upstream.js";
import type { ChatInput, Upstream, UpstreamCall, UpstreamKind } from "../../core/upstream.js";
import { fromEmbeddingsResponse, inputCount, toEmbeddingsRequest } from "./openai-embeddings.js";
import { type AnswerContext, createStreamTranslator, fromChatCompletion, toChatCompletionRequest } from "./openai-translate.js";

const positiveInt = z.number().int().positive();

/** Azure OpenAI: the deployment path, the `api-key` header and the `api-version` query. */
const azureOptionsSchema = z.strictObject({
  /** The `api-version` query parameter, e.g. "2024-10-21". Required: Azure answers 404 without it. */
  apiVersion: z.string().min(1),
  /** The deployment for every model of this upstream; default: each model's `upstreamModel`. */
  deployment: z.string().min(1).optional(),
});

/** Options of an `openai` upstream in config (`upstreams[].options`). */
export const openaiOptionsSchema = z.strictObject({
  /** Azure OpenAI mode; leave it out for OpenAI and every OpenAI-compatible server. */
  azure: azureOptionsSchema.optional(),
  /**
   * The role ROLE_DEVELOPER messages are sent with. Default "system": most compatible servers
   * refuse "developer", and OpenAI treats system as developer for the models that know it.
   */
  developerRole: z.enum(["developer", "system"]).default("system"),
  /**
   * The JSON key of the token limit. Default "max_tokens", the one every compatible server knows;
   * OpenAI's reasoning models (o1, o3, …) need "max_completion_tokens".
   */
  maxTokensField: z.enum(["max_tokens", "max_completion_tokens"]).default("max_tokens"),
  /** Largest streamed event accepted (its data), in bytes; a larger one fails the call. */
  maxEventBytes: positiveInt.max(64 * 1024 * 1024).default(1024 * 1024),
  /** Connection settings (see HttpPoolOptions). */
  http: httpPoolOptionsSchema.optional(),
});
export type OpenAIOptions = z.infer<typeof openaiOptionsSchema>;

/** Per-model options (`models[].options`) of a model served by an `openai` upstream. */
export const openaiModelOptionsSchema = z.strictObject({
  /**
   * The `encoding_format` of Embed requests. Default "base64": the vectors come as the base64 of
   * their FP32 bytes, which costs no JSON number per value to send or parse; "float" asks for
   * JSON numbers, for servers that cannot answer base64.
   */
  embeddingEncoding: z.enum(["base64", "float"]).default("base64"),
});
export type OpenAIModelOptions = z.infer<typeof openaiModelOptionsSchema>;

/**
 * The `openai` kind: OpenAI Chat Completions (`POST {endpoint}/chat/completions`), Chat and
 * Generate, and the embeddings API (`POST {endpoint}/embeddings`) for the models whose config lists
 * `embed` (the registry leaves it out of a model's default capabilities).
 */
export const openaiKind: UpstreamKind<OpenAIOptions, OpenAIModelOptions> = {
  capabilities: ["chat", "generate", "embed"],
  needsEndpoints: true,
  optionsSchema: openaiOptionsSchema,
  modelOptionsSchema: openaiModelOptionsSchema,
  create: (config, options) => createOpenAIUpstream(config, options),
};

/**
 * The thin client of Chat Completions and embeddings: Chat sends a non-streaming request and reads
 * its JSON; Generate asks for an event stream (with a usage chunk) and translates it event by
 * event; Embed sends one embeddings request (the gateway has split the batch) and reads its JSON.
 * Requests carry `Authorization: Bearer <apiKey>` (Azure: `api-key: <apiKey>`) after the
 * upstream's extra `headers`. Errors leave through HttpUpstream's one HTTP→gRPC mapping; the
 * caller's signal and deadline bound the whole call, body included.
 */
export function createOpenAIUpstream(config: UpstreamConfig, options: OpenAIOptions): Upstream<OpenAIModelOptions> {
  const http = new HttpUpstream(config, { ...defaultHttpPoolOptions, ...options.http });
  const answers: AnswerContext = { upstream: config.name, secrets: http.secrets };
  const { azure } = options;

  /** The request headers; they depend only on the configuration and on streaming: built once. */
  function headersFor(stream: boolean): Record<string, string> {
    const own: Record<string, string> = {
      "content-type": "application/json",
      accept: stream ? "text/event-stream" : "application/json",
    };
    if (config.apiKey !== undefined) {
      if (azure === undefined) {
        own["authorization"] = `Bearer ${config.apiKey}`;
      } else {
        own["api-key"] = config.apiKey;
      }
    }
    return { ...withoutNames(config.headers, Object.keys(own)), ...own };
  }
  const unaryHeaders = headersFor(false);
  const streamHeaders = headersFor(true);

  /** The path (and Azure's query) of an operation: `/chat/completions` or `/embeddings`. */
  function targetOf(operation: "chat/completions" | "embeddings", upstreamModel: string): Pick<HttpCall, "path" | "query"> {
    return azure === undefined
      ? { path: `/${operation}` }
      : {
          path: `/openai/deployments/${encodeURIComponent(azure.deployment ?? upstreamModel)}/${operation}`,
          query: { "api-version": azure.apiVersion },
        };
  }

  async function send(call: UpstreamCall<ChatInput>, stream: boolean): Promise<HttpAnswer> {
    const body = toChatCompletionRequest(call.request, {
      // Azure takes the model from the deployment in the path.
      model: azure === undefined ? call.upstreamModel : undefined,
      developerRole: options.developerRole,
      maxTokensField: options.maxTokensField,
      stream,
    });
    return http.request({
      method: "POST",
      ...targetOf("chat/completions", call.upstreamModel),
      headers: stream ? streamHeaders : unaryHeaders,
      body: JSON.stringify(body),
      signal: call.signal,
      deadline: call.deadline,
    });
  }

  return {
    name: config.name,
    kind: "openai",
    async chat(call): Promise<ChatResponse> {
      const answer = await send(call, false);
      return fromChatCompletion(answers, await http.readJson(answer, call.signal));
    },
    generate(call): AsyncIterableIterator<GenerateResponse> {
      // The request goes out when the first event is asked for.
      return translateEventStream(http, config.name, () => send(call, true), call.signal, options.maxEventBytes, createStreamTranslator(answers));
    },
    async embed(call): Promise<EmbedResponse> {
      const body = toEmbeddingsRequest(call.request, {
        model: azure === undefined ? call.upstreamModel : undefined,
        encoding: call.modelOptions.embeddingEncoding,
      });
      const answer = await http.request({
        method: "POST",
        ...targetOf("embeddings", call.upstreamModel),
        headers: unaryHeaders,
        body: JSON.stringify(body),
        signal: call.signal,
        deadline: call.deadline,
      });
      return fromEmbeddingsResponse(answers, await http.readJson(answer, call.signal), inputCount(call.request), call.request.dimensions);
    },
    close: () => http.close(),
  };
}

/**
 * The configured extra headers without those the adapter sets itself (names compare without
 * case), so that one request never carries two Authorization or Content-Type headers.
 */
function withoutNames(headers: Readonly<Record<string, string>>, names: readonly string[]): Record<string, string> {
  const drop = new Set(names.map((n) => n.toLowerCase()));
  return Object.fromEntries(Object.entries(headers).filter(([k]) => !drop.has(k.toLowerCase())));
}
