import { z } from "zod";
import type { ChatResponse, GenerateResponse } from "../../../gen/infergate/v1/inference_service_pb.js";
import type { UpstreamConfig } from "../../config/schema.js";
import { translateEventStream } from "../http/event-stream.js";
import { defaultHttpPoolOptions, type HttpAnswer, type HttpCall, HttpUpstream, httpPoolOptionsSchema } from "../http/http-upstream.js";
import type { ChatInput, Upstream, UpstreamCall, UpstreamKind } from "../../core/upstream.js";
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

/** The `openai` kind: OpenAI Chat Completions (`POST {endpoint}/chat/completions`), Chat and Generate. */
export const openaiKind: UpstreamKind<OpenAIOptions> = {
  capabilities: ["chat", "generate"],
  needsEndpoints: true,
  optionsSchema: openaiOptionsSchema,
  create: (config, options) => createOpenAIUpstream(config, options),
};

/**
 * The thin client of Chat Completions: Chat sends a non-streaming request and reads its JSON;
 * Generate asks for an event stream (with a usage chunk) and translates it event by event.
 * Requests carry `Authorization: Bearer <apiKey>` (Azure: `api-key: <apiKey>`) after the
 * upstream's extra `headers`. Errors leave through HttpUpstream's one HTTP→gRPC mapping; the
 * caller's signal and deadline bound the whole call, body included.
 */
export function createOpenAIUpstream(config: UpstreamConfig, options: OpenAIOptions): Upstream {
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

  async function send(call: UpstreamCall<ChatInput>, stream: boolean): Promise<HttpAnswer> {
    const body = toChatCompletionRequest(call.request, {
      // Azure takes the model from the deployment in the path.
      model: azure === undefined ? call.upstreamModel : undefined,
      developerRole: options.developerRole,
      maxTokensField: options.maxTokensField,
      stream,
    });
    const target: Pick<HttpCall, "path" | "query"> =
      azure === undefined
        ? { path: "/chat/completions" }
        : {
            path: `/openai/deployments/${encodeURIComponent(azure.deployment ?? call.upstreamModel)}/chat/completions`,
            query: { "api-version": azure.apiVersion },
          };
    return http.request({
      method: "POST",
      ...target,
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
