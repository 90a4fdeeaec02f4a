import {
  BedrockRuntimeClient,
  type BedrockRuntimeClientConfig,
  ConverseCommand,
  type ConverseCommandInput,
  ConverseStreamCommand,
  InvokeModelCommand,
} from "@aws-sdk/client-bedrock-runtime";
import { Code } from "@connectrpc/connect";
import { z } from "zod";
import type { ChatResponse, EmbedResponse, GenerateResponse } from "../../../gen/infergate/v1/inference_service_pb.js";
import type { UpstreamConfig } from "../../config/schema.js";
import { attemptAnswered, attemptConnectionFailed, attemptTraceHeaders } from "../../core/attempt-progress.js";
import { GatewayError, Reason } from "../../core/gateway-error.js";
import type { ChatInput, Upstream, UpstreamCall, UpstreamKind } from "../../core/upstream.js";
import { badResponse, redactedError, UpstreamFailure } from "../http/http-errors.js";
import { attemptDeadline, readUpstreamTls } from "../http/http-upstream.js";
import { embeddingFormatOf, embeddingFormats, fromEmbedAnswers, toEmbedBodies } from "./bedrock-embed.js";
import { type BedrockErrorContext, errorFromBedrock } from "./bedrock-errors.js";
import { createConverseStreamTranslator, fromConverseResponse, toConverseRequest } from "./bedrock-translate.js";

const positiveInt = z.number().int().positive();
const nonEmpty = z.string().min(1);

/** Options of a `bedrock` upstream in config (`upstreams[].options`). */
export const bedrockOptionsSchema = z.strictObject({
  /**
   * The AWS region of its models (a model's own `region` option overrides it); unset, the SDK's
   * region chain decides (AWS_REGION, the profile's `region`).
   */
  region: nonEmpty.optional(),
  /** A profile of the shared config and credentials files (~/.aws/config, ~/.aws/credentials). */
  profile: nonEmpty.optional(),
  /**
   * Static credentials; use `${ENV_VAR}` so the file holds no secret. Unset: the AWS SDK's default
   * chain (environment, shared config and profile, web identity, container and instance metadata).
   */
  credentials: z
    .strictObject({
      accessKeyId: nonEmpty,
      secretAccessKey: nonEmpty,
      sessionToken: nonEmpty.optional(),
    })
    .optional(),
  /**
   * The RetryInfo delay, in ms, of a ThrottlingException, which carries no Retry-After: how long a
   * retry waits, and what the caller is told (default 1000).
   */
  throttlingRetryAfterMs: positiveInt.max(600_000).default(1000),
  /**
   * Titan embeddings (one InvokeModel per text): how many of a call's requests are in flight at
   * once (default 8); each is a connection of its own.
   */
  embedConcurrency: positiveInt.max(256).default(8),
});
export type BedrockOptions = z.infer<typeof bedrockOptionsSchema>;

/** Per-model options (`models[].options`) of a model served by a `bedrock` upstream. */
export const bedrockModelOptionsSchema = z.strictObject({
  /** The model's AWS region, when not the upstream's. */
  region: nonEmpty.optional(),
  /** maxTokens for requests that leave it unset; unset, the model's own default. */
  maxTokens: positiveInt.max(2 ** 31 - 1).optional(),
  /** A Bedrock guardrail applied to every call (Converse `guardrailConfig`). */
  guardrail: z
    .strictObject({
      identifier: nonEmpty,
      version: nonEmpty,
      trace: z.enum(["enabled", "disabled", "enabled_full"]).optional(),
      /** Generate only: how the guardrail processes the stream (`sync`, Bedrock's default, or `async`). */
      streamProcessingMode: z.enum(["sync", "async"]).optional(),
    })
    .optional(),
  /**
   * The field of `additionalModelRequestFields` that carries a request's top_k (`top_k` for
   * Anthropic's and Mistral's models on Bedrock); unset, top_k is refused.
   */
  topKField: nonEmpty.optional(),
  /** Model-specific request fields sent as Converse `additionalModelRequestFields` on every call. */
  additionalModelRequestFields: z.record(z.string(), z.unknown()).optional(),
  /** Embed (capability `embed`): the InvokeModel body format and its settings. */
  embeddings: z
    .strictObject({
      /** `titan` or `cohere`; unset, read from the model id (amazon.titan-embed-…, cohere.embed-…). */
      format: z.enum(embeddingFormats).optional(),
      /** Titan: normalize the vectors (Bedrock's default: true). */
      normalize: z.boolean().optional(),
      /** Cohere: `input_type` (default search_document). */
      inputType: z.enum(["search_document", "search_query", "classification", "clustering"]).default("search_document"),
      /** Cohere: `truncate` (NONE, START, END). */
      truncate: z.enum(["NONE", "START", "END"]).optional(),
    })
    .default({ inputType: "search_document" }),
});
export type BedrockModelOptions = z.infer<typeof bedrockModelOptionsSchema>;

/** The `bedrock` kind: Amazon Bedrock Runtime's Converse and ConverseStream, and InvokeModel for embeddings. */
export const bedrockKind: UpstreamKind<BedrockOptions, BedrockModelOptions> = {
  capabilities: ["chat", "generate", "embed"],
  needsEndpoints: false,
  optionsSchema: bedrockOptionsSchema,
  modelOptionsSchema: bedrockModelOptionsSchema,
  create: (config, options) => createBedrockUpstream(config, options),
};

/** How long the answer to one request may take to begin when config sets no firstByteTimeoutMs. */
const defaultFirstByteTimeoutMs = 60_000;

/**
 * The client of Bedrock Runtime through the AWS SDK, which signs each request (SigV4, or a Bedrock
 * API key as a bearer token when `apiKey` is set) and decodes the event stream. One SDK client per
 * region (a model may name its own); the endpoint, when config gives one, replaces AWS's regional
 * one (a VPC endpoint, a proxy, a test's fake). The SDK makes one attempt (maxAttempts 1): retries,
 * breakers and fallbacks are the gateway's, around this adapter. Each call's attempt is bounded by
 * the caller's signal and deadline, the upstream's `timeoutMs` and its first-byte timeout, and an
 * abort reaches the SDK request (its HTTP/2 stream is reset). The upstream's extra `headers` and the
 * trace context go on every request, signed with it; the credentials never reach a log or an error.
 */
export function createBedrockUpstream(config: UpstreamConfig, options: BedrockOptions): Upstream<BedrockModelOptions> {
  const endpoint = config.endpoints[0];
  const tls = readUpstreamTls(config.tls);
  const clients = new Map<string, BedrockRuntimeClient>();
  const staticSecrets = [options.credentials?.secretAccessKey, options.credentials?.sessionToken, config.apiKey].filter((s): s is string => s !== undefined);
  const errors: BedrockErrorContext = { upstream: config.name, secrets: staticSecrets, throttlingRetryAfterMs: options.throttlingRetryAfterMs };
  const firstByteMs = config.firstByteTimeoutMs ?? defaultFirstByteTimeoutMs;

  function client(region: string | undefined): BedrockRuntimeClient {
    const key = region ?? "";
    let c = clients.get(key);
    if (c === undefined) {
      const settings: BedrockRuntimeClientConfig = {
        maxAttempts: 1,
        ...(region !== undefined ? { region } : {}),
        ...(endpoint !== undefined ? { endpoint } : {}),
        ...(options.profile !== undefined ? { profile: options.profile } : {}),
        ...(options.credentials !== undefined ? { credentials: { ...options.credentials } } : {}),
        ...(config.apiKey !== undefined ? { token: { token: config.apiKey }, authSchemePreference: ["httpBearerAuth"] } : {}),
        // The SDK's own handler (HTTP/2), one connection per request as its default for this
        // service; a private CA or client certificate from the upstream's `tls`.
        requestHandler: { disableConcurrentStreams: true, ...(tls !== undefined ? { nodeHttp2ConnectOptions: tls } : {}) },
      };
      c = new BedrockRuntimeClient(settings);
      clients.set(key, c);
    }
    return c;
  }

  /**
   * The secret key and session token of the identity `bedrock` signs with: the SDK's credentials
   * provider (memoized by the SDK until they expire, so this costs no new resolution), none when it
   * has none (an API key) or fails.
   */
  async function identitySecrets(bedrock: BedrockRuntimeClient): Promise<string[]> {
    try {
      const provider = bedrock.config.credentials as unknown;
      if (typeof provider !== "function") return [];
      const id = (await (provider as () => Promise<{ secretAccessKey?: unknown; sessionToken?: unknown }>)()) ?? {};
      return [id.secretAccessKey, id.sessionToken].filter((s): s is string => typeof s === "string" && s.length > 0);
    } catch {
      return [];
    }
  }

  /** One attempt of a call: its signal, and what the SDK command needs to report on it. */
  function attempt(call: UpstreamCall<unknown, BedrockModelOptions>) {
    const bound = attemptDeadline(config, call.signal, call.deadline);
    const controller = new AbortController();
    const onAbort = (): void => controller.abort(bound.signal.reason);
    if (bound.signal.aborted) onAbort();
    else bound.signal.addEventListener("abort", onAbort, { once: true });
    const firstByte = setTimeout(() => {
      controller.abort(
        new GatewayError(Code.DeadlineExceeded, `upstream "${config.name}" did not begin its answer within ${firstByteMs}ms`, {
          reason: Reason.UpstreamTimeout,
          metadata: { upstream: config.name },
        }),
      );
    }, firstByteMs);
    firstByte.unref();
    /** The response headers of the attempt's last request, once its answer began. */
    let headers: Readonly<Record<string, string>> | undefined;
    return {
      signal: controller.signal,
      get headers() {
        return headers;
      },
      /**
       * Adds to `command` the caller's trace context and the upstream's extra headers (before
       * signing), and a step that notes when the answer begins (status and headers in).
       */
      watch<C extends { middlewareStack: object }>(command: C): C {
        const stack = command.middlewareStack as CommandStack;
        stack.add(
          (next) => async (args) => {
            const request = args.request as { headers?: Record<string, string> } | undefined;
            if (request?.headers !== undefined) Object.assign(request.headers, config.headers, attemptTraceHeaders(call.signal));
            return next(args);
          },
          { step: "build", name: "infergateHeaders" },
        );
        stack.add(
          (next) => async (args) => {
            const out = await next(args);
            clearTimeout(firstByte);
            attemptAnswered(call.signal);
            headers = (out.response as { headers?: Record<string, string> }).headers;
            return out;
          },
          { step: "deserialize", priority: "low", name: "infergateAnswered" },
        );
        return command;
      },
      /**
       * What to throw for `err`: the caller's or the attempt's abort reason, else the mapped error,
       * redacted of the configured secrets and of those of the identity the SDK signed with (from
       * its default chain: environment, web identity, instance role).
       */
      async failure(bedrock: BedrockRuntimeClient, err: unknown, inStream = false): Promise<unknown> {
        if (call.signal.aborted) return call.signal.reason;
        if (controller.signal.aborted) return controller.signal.reason;
        // No identity when the chain found none: asking it again could wait out its providers.
        const noIdentity = (err as { name?: unknown } | null)?.name === "CredentialsProviderError";
        const secrets = noIdentity ? staticSecrets : [...staticSecrets, ...(await identitySecrets(bedrock))];
        const mapped = errorFromBedrock(err, { ...errors, secrets }, inStream);
        // No answer from Bedrock (refused, reset, cut): the endpoint's failure, not the model's.
        if (mapped instanceof GatewayError && mapped !== err && mapped.code === Code.Unavailable && !(mapped.cause instanceof UpstreamFailure)) {
          attemptConnectionFailed(call.signal);
        }
        return redactedError(mapped, secrets);
      },
      /** The attempt is over; `abandon` aborts what is still open of its request (a stream left early). */
      release(abandon = false): void {
        clearTimeout(firstByte);
        bound.signal.removeEventListener("abort", onAbort);
        bound.release();
        if (abandon && !controller.signal.aborted) controller.abort(attemptOver);
      },
    };
  }

  function converseInput(call: UpstreamCall<ChatInput, BedrockModelOptions>, stream: boolean): ConverseCommandInput {
    const o = call.modelOptions;
    const body = toConverseRequest(call.request, {
      defaultMaxTokens: o.maxTokens,
      guardrail: o.guardrail,
      topKField: o.topKField,
      additionalModelRequestFields: o.additionalModelRequestFields,
      stream,
    });
    return { modelId: call.upstreamModel, ...body };
  }

  return {
    name: config.name,
    kind: "bedrock",
    async chat(call): Promise<ChatResponse> {
      const input = converseInput(call, false);
      const bedrock = client(call.modelOptions.region ?? options.region);
      const a = attempt(call);
      try {
        const res = await bedrock.send(a.watch(new ConverseCommand(input)), { abortSignal: a.signal });
        return fromConverseResponse(config.name, res, res.$metadata.requestId ?? "");
      } catch (err) {
        throw await a.failure(bedrock, err);
      } finally {
        a.release();
      }
    },
    async *generate(call): AsyncGenerator<GenerateResponse> {
      const input = converseInput(call, true);
      const bedrock = client(call.modelOptions.region ?? options.region);
      const a = attempt(call);
      let complete = false;
      try {
        let out;
        try {
          out = await bedrock.send(a.watch(new ConverseStreamCommand(input)), { abortSignal: a.signal });
        } catch (err) {
          throw await a.failure(bedrock, err);
        }
        if (out.stream === undefined) throw badResponse(config.name, "a ConverseStream answer without its event stream");
        const translator = createConverseStreamTranslator(config.name, out.$metadata.requestId ?? "");
        try {
          for await (const event of out.stream) {
            for (const e of translator.push(event)) yield e;
            if (translator.done) break;
          }
        } catch (err) {
          throw await a.failure(bedrock, err, true);
        }
        for (const e of translator.end()) yield e;
        complete = true;
      } finally {
        a.release(!complete);
      }
    },
    async embed(call): Promise<EmbedResponse> {
      const o = call.modelOptions.embeddings;
      const format = o.format ?? embeddingFormatOf(call.upstreamModel);
      if (format === undefined) {
        throw new GatewayError(Code.FailedPrecondition, `model "${call.upstreamModel}" of upstream "${config.name}" needs the option embeddings.format (titan or cohere)`, {
          reason: Reason.Internal,
          metadata: { upstream: config.name },
        });
      }
      const bodies = toEmbedBodies(call.request, { format, normalize: o.normalize, inputType: o.inputType, truncate: o.truncate });
      const bedrock = client(call.modelOptions.region ?? options.region);
      const a = attempt(call);
      try {
        const answers = await inPool(bodies, options.embedConcurrency, async (body) => {
          const res = await bedrock.send(
            a.watch(new InvokeModelCommand({ modelId: call.upstreamModel, contentType: "application/json", accept: "application/json", body: JSON.stringify(body) })),
            { abortSignal: a.signal },
          );
          const count = a.headers?.["x-amzn-bedrock-input-token-count"];
          let parsed: unknown;
          try {
            parsed = JSON.parse(Buffer.from(res.body ?? new Uint8Array()).toString("utf8"));
          } catch {
            throw badResponse(config.name, "malformed JSON");
          }
          return { body: parsed, inputTokens: count === undefined ? undefined : Number(count) };
        });
        return fromEmbedAnswers(config.name, format, answers, call.request.texts.length, call.request.dimensions);
      } catch (err) {
        throw await a.failure(bedrock, err);
      } finally {
        a.release(true);
      }
    },
    async close() {
      for (const c of clients.values()) c.destroy();
      clients.clear();
    },
  };
}

/**
 * `work` over `items`, at most `limit` at once, the results in the items' order. After a failure
 * no further item is started (the attempt's release aborts those in flight); it rejects with the
 * first failure.
 */
async function inPool<T, R>(items: readonly T[], limit: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        results[i] = await work(items[i]!);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** One step of an SDK command's middleware, as far as the adapter uses it (args.request, out.response). */
type Step = (next: (args: { request?: unknown }) => Promise<{ response?: unknown }>) => (args: { request?: unknown }) => Promise<{ response?: unknown }>;

/**
 * The middleware stack of an SDK command (MiddlewareStack of @smithy/types), as far as the adapter
 * uses it: each command's stack is typed by its own input and output, and the steps here read
 * neither.
 */
interface CommandStack {
  add(step: Step, options: { step: "build" | "deserialize"; name: string; priority?: "low" }): void;
}

/** The abort reason of an attempt left early (a stream the consumer stopped reading). */
const attemptOver = new GatewayError(Code.Canceled, "the upstream attempt has ended", { reason: Reason.Cancelled });
