import { z } from "zod";
import type { ChatResponse, GenerateResponse } from "../../../gen/infergate/v1/inference_service_pb.js";
import type { UpstreamConfig } from "../../config/schema.js";
import { translateEventStream } from "../http/event-stream.js";
import { defaultHttpPoolOptions, type HttpAnswer, HttpUpstream, httpPoolOptionsSchema } from "../http/http-upstream.js";
import type { ChatInput, TokenCount, Upstream, UpstreamCall, UpstreamKind } from "../../core/upstream.js";
import { createStreamTranslator, fromCountTokensResponse, fromMessagesResponse, toCountTokensRequest, toMessagesRequest } from "./anthropic-translate.js";

const positiveInt = z.number().int().positive();

/** Options of an `anthropic` upstream in config (`upstreams[].options`). */
export const anthropicOptionsSchema = z.strictObject({
  /**
   * The `anthropic-version` header: the API version whose wire format this adapter speaks. Only
   * change it together with the adapter.
   */
  anthropicVersion: z.string().min(1).default("2023-06-01"),
  /** Largest streamed event accepted (its data), in bytes; a larger one fails the call. */
  maxEventBytes: positiveInt.max(64 * 1024 * 1024).default(1024 * 1024),
  /** Connection settings (see HttpPoolOptions). */
  http: httpPoolOptionsSchema.optional(),
});
export type AnthropicOptions = z.infer<typeof anthropicOptionsSchema>;

/** Per-model options (`models[].options`) of a model served by an `anthropic` upstream. */
export const anthropicModelOptionsSchema = z.strictObject({
  /** max_tokens for requests that leave it unset; the Messages API requires one. */
  maxTokens: positiveInt.max(2 ** 31 - 1).default(4096),
});
export type AnthropicModelOptions = z.infer<typeof anthropicModelOptionsSchema>;

/**
 * The `anthropic` kind: the Anthropic Messages API (`POST {endpoint}/v1/messages`), Chat and
 * Generate, and its exact token count (`POST {endpoint}/v1/messages/count_tokens`).
 */
export const anthropicKind: UpstreamKind<AnthropicOptions, AnthropicModelOptions> = {
  capabilities: ["chat", "generate"],
  needsEndpoints: true,
  optionsSchema: anthropicOptionsSchema,
  modelOptionsSchema: anthropicModelOptionsSchema,
  create: (config, options) => createAnthropicUpstream(config, options),
};

/**
 * The thin client of the Messages API: Chat sends a non-streaming request and reads its JSON;
 * Generate asks for an event stream and translates it event by event. Requests carry `x-api-key`
 * (the upstream's apiKey) and `anthropic-version`, after the upstream's extra `headers`, and the
 * caller's `anthropic-beta` when it sent one (the only caller header forwarded). Errors
 * leave through HttpUpstream's one HTTP→gRPC mapping; the caller's signal and deadline bound the
 * whole call, body included.
 */
export function createAnthropicUpstream(config: UpstreamConfig, options: AnthropicOptions): Upstream<AnthropicModelOptions> {
  const http = new HttpUpstream(config, { ...defaultHttpPoolOptions, ...options.http });

  function send(call: UpstreamCall<ChatInput, AnthropicModelOptions>, stream: boolean): Promise<HttpAnswer> {
    const { maxTokens } = call.modelOptions;
    const body = toMessagesRequest(call.request, { upstreamModel: call.upstreamModel, defaultMaxTokens: maxTokens, stream });
    return post(call, "/v1/messages", body, stream);
  }

  function post(call: UpstreamCall<ChatInput, AnthropicModelOptions>, path: string, body: object, stream: boolean): Promise<HttpAnswer> {
    return http.request({
      method: "POST",
      path,
      headers: {
        ...config.headers,
        "content-type": "application/json",
        accept: stream ? "text/event-stream" : "application/json",
        "anthropic-version": options.anthropicVersion,
        ...betaHeader(call.headers),
        ...(config.apiKey === undefined ? {} : { "x-api-key": config.apiKey }),
      },
      body: JSON.stringify(body),
      signal: call.signal,
      deadline: call.deadline,
    });
  }

  return {
    name: config.name,
    kind: "anthropic",
    async chat(call): Promise<ChatResponse> {
      const answer = await send(call, false);
      return fromMessagesResponse(config.name, await http.readJson(answer, call.signal));
    },
    async countTokens(call): Promise<TokenCount> {
      const answer = await post(call, "/v1/messages/count_tokens", toCountTokensRequest(call.request, call.upstreamModel), false);
      return { inputTokens: fromCountTokensResponse(config.name, await http.readJson(answer, call.signal)) };
    },
    generate(call): AsyncIterableIterator<GenerateResponse> {
      // The request goes out when the first event is asked for.
      return translateEventStream(http, config.name, () => send(call, true), call.signal, options.maxEventBytes, createStreamTranslator(config.name));
    },
    close: () => http.close(),
  };
}

/**
 * The caller's `anthropic-beta` header, the one caller header this kind sends on: the gateway
 * accepts it only for models whose every candidate is of this kind (src/gateway/steps/route.ts).
 */
function betaHeader(headers: Readonly<Record<string, string>>): Record<string, string> {
  const beta = headers["anthropic-beta"];
  return beta === undefined || beta.trim() === "" ? {} : { "anthropic-beta": beta };
}
