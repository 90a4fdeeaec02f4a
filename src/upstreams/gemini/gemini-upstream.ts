import { Code } from "@connectrpc/connect";
import { z } from "zod";
import type { ChatResponse, EmbedResponse, GenerateResponse } from "../../../gen/infergate/v1/inference_service_pb.js";
import type { UpstreamConfig } from "../../config/schema.js";
import { GatewayError, Reason } from "../../core/gateway-error.js";
import type { ChatInput, Upstream, UpstreamCall, UpstreamKind } from "../../core/upstream.js";
import { translateEventStream } from "../http/event-stream.js";
import { UpstreamFailure } from "../http/http-errors.js";
import { defaultHttpPoolOptions, type HttpAnswer, HttpUpstream, httpPoolOptionsSchema } from "../http/http-upstream.js";
import { type AccessTokens, createAccessTokens } from "./gemini-auth.js";
import { embedTexts, fromEmbedResponse, toGoogleEmbedRequest, toVertexEmbedRequest } from "./gemini-embed.js";
import { createStreamTranslator, fromGenerateContentResponse, isInvalidApiKey, retryDelayOf, toGenerateContentRequest } from "./gemini-translate.js";

const positiveInt = z.number().int().positive();
/** A path segment of a URL (a project, a location, a model): no slash, nothing to escape. */
const pathSegment = z.string().regex(/^[A-Za-z0-9._-]+$/, "letters, digits, '.', '_' and '-' only");

/** Vertex AI mode: the project and location of the publisher models, and the OAuth2 credentials. */
const vertexOptionsSchema = z.strictObject({
  /** The Google Cloud project id. */
  project: pathSegment,
  /** The region of the endpoint, e.g. "us-central1" (or "global"). */
  location: pathSegment,
  /**
   * A service-account key file (JSON). Default: Application Default Credentials
   * (GOOGLE_APPLICATION_CREDENTIALS, gcloud's, or the metadata server on Google Cloud).
   */
  credentialsFile: z.string().min(1).optional(),
  /** How long before its expiry an access token is replaced (default 5 minutes). */
  tokenRefreshMarginMs: z.number().int().min(0).max(3_000_000).default(300_000),
  /**
   * How long one access-token fetch may take (default 10 s); past it the calls waiting on it fail
   * UNAVAILABLE and the next call fetches anew.
   */
  tokenTimeoutMs: z.number().int().min(1).max(300_000).default(10_000),
});

/** Options of a `gemini` upstream in config (`upstreams[].options`). */
export const geminiOptionsSchema = z.strictObject({
  /** Vertex AI mode; leave it out for the Gemini API of Google AI (the upstream's `apiKey`). */
  vertex: vertexOptionsSchema.optional(),
  /** The API version in the path; default "v1beta" (Google AI) or "v1" (Vertex AI). */
  apiVersion: pathSegment.optional(),
  /** Largest streamed event accepted (its data), in bytes; a larger one fails the call. */
  maxEventBytes: positiveInt.max(64 * 1024 * 1024).default(1024 * 1024),
  /** Connection settings (see HttpPoolOptions). */
  http: httpPoolOptionsSchema.optional(),
});
export type GeminiOptions = z.infer<typeof geminiOptionsSchema>;

/** Per-model options (`models[].options`) of a model served by a `gemini` upstream. */
export const geminiModelOptionsSchema = z.strictObject({
  /** `safetySettings` sent with every request: a harm category and its blocking threshold each. */
  safetySettings: z
    .array(z.strictObject({ category: z.string().regex(/^HARM_CATEGORY_[A-Z_]+$/), threshold: z.string().regex(/^[A-Z_]+$/) }))
    .default([]),
  /** maxOutputTokens for requests that leave max_tokens unset; default: the model's own. */
  maxTokens: positiveInt.max(2 ** 31 - 1).optional(),
  /** `thinkingConfig.thinkingBudget`: thinking tokens at most (0 turns thinking off, -1 lets the model choose). */
  thinkingBudget: z.number().int().min(-1).max(2 ** 31 - 1).optional(),
  /** A cached content (`cachedContents/…`) every request of the model continues. */
  cachedContent: z.string().regex(/^(projects\/[^\s]+\/)?cachedContents\/[^\s/]+$/).optional(),
  /**
   * Send Google's `skip_thought_signature_validator` with a model turn's function calls when they
   * come back without the thought signature Gemini gave them (history from another model, or a
   * client that rewrote the ids); Gemini 3 refuses such a turn otherwise.
   */
  skipThoughtSignatureValidator: z.boolean().default(false),
  /** Embed: the `taskType` of the embeddings (RETRIEVAL_DOCUMENT, RETRIEVAL_QUERY, SEMANTIC_SIMILARITY, …). */
  embeddingTaskType: z.string().regex(/^[A-Z_]+$/).optional(),
});
export type GeminiModelOptions = z.infer<typeof geminiModelOptionsSchema>;

/**
 * The `gemini` kind: Google's Gemini API (`generateContent`, `streamGenerateContent?alt=sse`) with
 * an API key, or Vertex AI's publisher models with OAuth2 access tokens; Chat and Generate, and
 * Embed (`embedContent` / `batchEmbedContents`, Vertex's `predict`) for the models whose config
 * lists `embed`.
 */
export const geminiKind: UpstreamKind<GeminiOptions, GeminiModelOptions> = {
  capabilities: ["chat", "generate", "embed"],
  needsEndpoints: true,
  optionsSchema: geminiOptionsSchema,
  modelOptionsSchema: geminiModelOptionsSchema,
  create: (config, options) => createGeminiUpstream(config, options),
};

/**
 * The thin client of the Gemini API. Chat sends `…:generateContent` and reads its JSON; Generate
 * sends `…:streamGenerateContent?alt=sse` and translates the events; Embed sends one embedding
 * request (the gateway has split the batch). Google AI requests go to
 * `{endpoint}/{apiVersion}/models/{model}:…` with `x-goog-api-key` (the upstream's apiKey);
 * Vertex AI requests to `{endpoint}/{apiVersion}/projects/{p}/locations/{l}/publishers/google/models/{model}:…`
 * with `Authorization: Bearer <access token>`. Both after the upstream's extra `headers`. Errors
 * leave through HttpUpstream's one HTTP→gRPC mapping, with Google's RetryInfo read for 429s; the
 * caller's signal and deadline bound the whole call, the token fetch included.
 */
export function createGeminiUpstream(config: UpstreamConfig, options: GeminiOptions): Upstream<GeminiModelOptions> {
  const http = new HttpUpstream(config, { ...defaultHttpPoolOptions, ...options.http });
  const { vertex } = options;
  const version = options.apiVersion ?? (vertex === undefined ? "v1beta" : "v1");
  const tokens: AccessTokens | undefined =
    vertex === undefined
      ? undefined
      : createAccessTokens({
          upstream: config.name,
          credentialsFile: vertex.credentialsFile,
          refreshMarginMs: vertex.tokenRefreshMarginMs,
          fetchTimeoutMs: vertex.tokenTimeoutMs,
        });
  const modelsPath = vertex === undefined ? `/${version}/models/` : `/${version}/projects/${vertex.project}/locations/${vertex.location}/publishers/google/models/`;
  const ownHeaders = ["content-type", "accept", "x-goog-api-key", "authorization"];
  const extraHeaders = Object.fromEntries(Object.entries(config.headers).filter(([k]) => !ownHeaders.includes(k.toLowerCase())));

  async function post(call: UpstreamCall<unknown>, method: string, body: unknown, stream: boolean): Promise<HttpAnswer> {
    const auth: Record<string, string> =
      tokens !== undefined
        ? { authorization: `Bearer ${await tokens.token(call.signal)}` }
        : config.apiKey === undefined
          ? {}
          : { "x-goog-api-key": config.apiKey };
    try {
      return await http.request({
        method: "POST",
        path: `${modelsPath}${encodeURIComponent(call.upstreamModel)}:${method}`,
        ...(stream ? { query: { alt: "sse" } } : {}),
        headers: { ...extraHeaders, "content-type": "application/json", accept: stream ? "text/event-stream" : "application/json", ...auth },
        body: JSON.stringify(body),
        signal: call.signal,
        deadline: call.deadline,
      });
    } catch (err) {
      throw refined(err);
    }
  }

  function send(call: UpstreamCall<ChatInput, GeminiModelOptions>, stream: boolean): Promise<HttpAnswer> {
    const o = call.modelOptions;
    const body = toGenerateContentRequest(call.request, {
      safetySettings: o.safetySettings,
      defaultMaxTokens: o.maxTokens,
      thinkingBudget: o.thinkingBudget,
      cachedContent: o.cachedContent,
      skipThoughtSignatureValidator: o.skipThoughtSignatureValidator,
      sendCallIds: vertex === undefined,
    });
    return post(call, stream ? "streamGenerateContent" : "generateContent", body, stream);
  }

  return {
    name: config.name,
    kind: "gemini",
    async chat(call): Promise<ChatResponse> {
      const answer = await send(call, false);
      return fromGenerateContentResponse(config.name, await http.readJson(answer, call.signal));
    },
    generate(call): AsyncIterableIterator<GenerateResponse> {
      // The request goes out when the first event is asked for.
      return translateEventStream(http, config.name, () => send(call, true), call.signal, options.maxEventBytes, createStreamTranslator(config.name));
    },
    async embed(call): Promise<EmbedResponse> {
      const texts = embedTexts(call.request);
      const { embeddingTaskType } = call.modelOptions;
      const { dimensions } = call.request;
      const [method, body] =
        vertex !== undefined
          ? ["predict", toVertexEmbedRequest(texts, embeddingTaskType, dimensions)]
          : [texts.length === 1 ? "embedContent" : "batchEmbedContents", toGoogleEmbedRequest(texts, call.upstreamModel, embeddingTaskType, dimensions)];
      const answer = await post(call, method, body, false);
      return fromEmbedResponse(config.name, await http.readJson(answer, call.signal), texts.length, dimensions);
    },
    close: () => http.close(),
  };
}

/**
 * Google's words in an error the shared mapping (http-errors.ts, errorFromStatus) made from the
 * status: a 429's `google.rpc.RetryInfo` delay becomes the error's retry delay (when no
 * Retry-After header gave one), so that the resilience layer may retry after it and the caller
 * gets RetryInfo; a 400 whose reason is API_KEY_INVALID is the gateway's credentials refused
 * (INTERNAL UPSTREAM_AUTH), not the caller's request. Both are read from the whole body as read
 * (the cause's unlogged `body`, http-errors.ts), not its logged snippet: Google pretty-prints its
 * errors with RetryInfo last, after Help and QuotaFailure details that may fill the snippet's 2 KB.
 */
function refined(err: unknown): unknown {
  if (!(err instanceof GatewayError) || !(err.cause instanceof UpstreamFailure)) return err;
  const body = err.cause.body ?? err.cause.bodySnippet ?? "";
  if (err.reason === Reason.UpstreamRateLimited && err.retryAfterMs === undefined) {
    const retryAfterMs = retryDelayOf(body);
    if (retryAfterMs !== undefined) {
      return new GatewayError(err.code, err.message, { reason: err.reason, metadata: { ...err.metadata }, cause: err.cause, retryAfterMs });
    }
  }
  if (err.cause.status === 400 && isInvalidApiKey(body)) {
    const upstream = err.metadata["upstream"] ?? "";
    return new GatewayError(Code.Internal, `upstream "${upstream}" refused the gateway's credentials`, {
      reason: Reason.UpstreamAuth,
      metadata: { ...err.metadata },
      cause: err.cause,
    });
  }
  return err;
}
