/**
 * The configuration file's schema (zod), and its types. Over 400 lines on purpose: it is the one
 * place that says what infergate.yaml may hold — every section and field with its default and a
 * doc comment saying what it does — read top to bottom into configSchema at the end. It is
 * declarations only; the checks across sections (a model's upstream exists, a kind's options)
 * are in load-config.ts.
 */
import { z } from "zod";

/** The upstream kinds this build can reach; each has a folder in src/upstreams/. */
export const upstreamKinds = ["mock", "anthropic", "openai", "tfserving", "infergate", "kserve", "gemini", "bedrock"] as const;

/** The calls a model can answer, as named in config. */
export const capabilityNames = ["predict", "chat", "generate", "embed"] as const;
export type CapabilityName = (typeof capabilityNames)[number];

const listenAddress = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, {
    error: "not HOST:PORT (IPv6 as [::1]:PORT)",
  })
  .refine((s) => Number(s.slice(s.lastIndexOf(":") + 1)) <= 65535, { error: "port above 65535" });

const name = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$/, {
    error: "must be 1-128 letters, digits or . _ : / - and start with a letter or digit",
  });

const positiveInt = z.number().int().positive();

const tlsSchema = z.strictObject({
  /** PEM certificate chain of the server. */
  certFile: z.string().min(1),
  /** PEM private key of the server. */
  keyFile: z.string().min(1),
  /** PEM CA bundle; when set, clients must present a certificate it signed (mTLS). */
  clientCaFile: z.string().min(1).optional(),
});

/** A timer's length: setTimeout takes at most 2^31 - 1 ms. */
const timerMs = positiveInt.max(2 ** 31 - 1);

/**
 * Slow, idle and too many client connections on the three listeners (docs/production.md,
 * "Slow and idle connections"; src/server/connection-limits.ts).
 */
const connectionsSchema = z.strictObject({
  /** Open connections at most on the gRPC and HTTP listeners together; one more is closed at once. */
  max: positiveInt.default(10_000),
  /** Open connections at most from one client address (IPv6: one /64), both listeners together. */
  maxPerIp: positiveInt.default(1_000),
  /** From accept (and, on HTTP/1.1, from a request's start) until its headers are complete. */
  headersTimeoutMs: timerMs.default(30_000),
  /** Until a request's body is complete (HTTP/1.1 from its start, HTTP/2 from its HEADERS). */
  requestTimeoutMs: timerMs.default(300_000),
  /** An HTTP/1.1 connection's wait for its next request. */
  keepAliveTimeoutMs: timerMs.default(5_000),
  /** An HTTP/2 connection (gRPC, h2c, h2) with no call open this long is closed (GOAWAY). */
  idleTimeoutMs: timerMs.default(300_000),
  /** gRPC listener: a connection is asked to go away (GOAWAY) after this long; its calls get server.maxTimeoutMs more. */
  maxAgeMs: timerMs.default(1_800_000),
});

/**
 * Element counts of one request, checked before any per-element work: on the gRPC listener and
 * Connect/gRPC-Web before the request is decoded, on the OpenAI API before it is translated, and by
 * the core before validation (src/gateway/request-limits.ts; docs/production.md, "Request
 * limits"). A request over one is refused with INVALID_ARGUMENT naming the field. The message size
 * (maxMessageBytes) bounds bytes; these bound what costs per element.
 */
const requestLimitsSchema = z.strictObject({
  /** Chat/Generate: messages in one request (a session's history is not counted). */
  messages: positiveInt.default(10_000),
  /** Chat/Generate: content parts of all messages of one request together. */
  contentParts: positiveInt.default(10_000),
  /** Chat/Generate: tool calls of all messages of one request together. */
  toolCalls: positiveInt.default(10_000),
  /** Chat/Generate: tools offered. */
  tools: positiveInt.default(128),
  /** Chat/Generate: stop sequences. */
  stopSequences: positiveInt.default(4),
  /**
   * Chat/Generate: values in the tools' parameters and the response format's JSON schema
   * (google.protobuf.Struct: each member of an object and each element of an array, at any
   * depth), all together.
   */
  schemaValues: positiveInt.default(20_000),
  /** Chat, Generate and Predict: entries of the request's `metadata` map. */
  metadataEntries: positiveInt.default(64),
  /** Predict: input tensors. */
  inputs: positiveInt.default(1_024),
  /** Predict: requested outputs. */
  outputs: positiveInt.default(1_024),
  /** Predict: entries of each `parameters` map (the request's, each input's, each output's). */
  parameters: positiveInt.default(64),
  /** Predict: dimensions of a tensor's shape. */
  shapeDims: positiveInt.default(64),
  /** Predict: elements of one tensor (its shape's product, and the values of each typed field). */
  tensorElements: positiveInt.max(2 ** 40).default(16_777_216),
  /**
   * Predict: elements of one BYTES tensor (its shape's product, and its `bytes_contents`): each is
   * a value of its own when decoded, where a number is one of a packed run.
   */
  bytesElements: positiveInt.max(2 ** 40).default(65_536),
  /**
   * Embed: inputs (texts and token-id lists together) in one request, checked before decoding;
   * the model's own `embedding.maxInputs` (default 2048) is checked after.
   */
  embedInputs: positiveInt.default(16_384),
  /** Embed: token ids of one token-id input. */
  tokenIds: positiveInt.default(1_048_576),
});

const serverSchema = z.strictObject({
  listen: listenAddress.default("127.0.0.1:50051"),
  httpListen: listenAddress.default("127.0.0.1:8080"),
  /** Admin HTTP: /metrics, /healthz, /readyz, /admin/usage. Keep it on loopback or a private interface. */
  adminListen: listenAddress.default("127.0.0.1:9090"),
  /**
   * When set (use `${ENV}`), every admin endpoint but /healthz and /readyz needs `authorization:
   * Bearer <token>`. Unset, /admin/usage answers only on a loopback adminListen (403 elsewhere).
   * Never logged.
   */
  adminToken: z.string().min(16, { error: "at least 16 characters" }).optional(),
  /** Log prompts and completions (debug only: they may hold personal data). */
  logContent: z.boolean().default(false),
  /**
   * Calls refused at the door (UNAUTHENTICATED, MODEL_NOT_ALLOWED, RATE_LIMITED, OVERLOADED,
   * RATE_LIMITER_UNAVAILABLE) get at most one log line per caller and reason in this many
   * milliseconds, then a line saying how many were not logged; all are counted in the metrics
   * (src/observability/refusal-log.ts). 0 logs every one.
   */
  refusalLogIntervalMs: z.number().int().nonnegative().max(2 ** 31 - 1).default(10_000),
  /** Largest request or response message, each way (grpc-js and connect-node limits). */
  maxMessageBytes: positiveInt.max(1 << 30).default(4 * 1024 * 1024),
  /** Longest deadline a call may have; calls without a deadline get this one. */
  maxTimeoutMs: positiveInt.default(300_000),
  /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS per connection on both listeners. */
  maxConcurrentStreams: positiveInt.max(2 ** 31 - 1).default(1000),
  /** On SIGTERM/SIGINT, how long in-flight calls may run before they are cut off. */
  shutdownGraceMs: z.number().int().nonnegative().default(15_000),
  /**
   * Predict, Chat and Generate calls in flight at most, across all models; one more is refused at
   * once with RESOURCE_EXHAUSTED, reason OVERLOADED (no queue). Default: no limit.
   */
  maxConcurrentCalls: positiveInt.optional(),
  tls: tlsSchema.optional(),
  /** Timeouts and caps of client connections (see connectionsSchema). */
  connections: connectionsSchema.default(() => connectionsSchema.parse({})),
  /** Element counts of one request (see requestLimitsSchema). */
  requestLimits: requestLimitsSchema.default(() => requestLimitsSchema.parse({})),
});

const endpointSchema = z.url({ protocol: /^https?$/, error: "not a URL" });

/** An endpoint with a load-balancing weight (a bare URL string has weight 1). */
const weightedEndpointSchema = z.strictObject({
  url: endpointSchema,
  /** Share of the traffic relative to the other endpoints' weights. */
  weight: positiveInt.max(1000).default(1),
  /** This endpoint's connect timeout, instead of the upstream's `connectTimeoutMs`. */
  connectTimeoutMs: positiveInt.optional(),
  /** This endpoint's first-byte timeout, instead of the upstream's `firstByteTimeoutMs`. */
  firstByteTimeoutMs: positiveInt.optional(),
});

/** Retries of one call on this upstream (docs/resilience.md, "Retries"). */
const retrySchema = z.strictObject({
  /** Attempts per call at most, the first included (1 = no retries). */
  maxAttempts: positiveInt.max(10).default(3),
  /** Full-jitter exponential backoff: the n-th retry waits a random time in [0, min(max, base × 2^(n-1))). */
  backoffBaseMs: positiveInt.default(25),
  backoffMaxMs: positiveInt.default(1_000),
  /** Retries in flight at most, as a percentage of the upstream's calls in flight (Envoy's retry budget). */
  budgetPercent: z.number().min(0).max(100).default(20),
  /** Retries in flight always allowed, whatever the percentage gives. */
  minRetryConcurrency: z.number().int().nonnegative().default(3),
});

/** One circuit breaker per endpoint (opossum); docs/resilience.md, "Circuit breakers". */
const breakerSchema = z.strictObject({
  enabled: z.boolean().default(true),
  /** Opens when more than this percentage of the calls in the window failed… */
  errorThresholdPercent: z.number().min(0).max(100).default(50),
  /** …and the window holds at least this many calls. */
  volumeThreshold: z.number().int().nonnegative().default(10),
  /**
   * Also opens after this many counted failures in a row, however long they took (a silent
   * upstream's attempts each last a timeout: too few fit in the window). Default: volumeThreshold.
   */
  consecutiveFailures: positiveInt.optional(),
  /** Length of the rolling window of call outcomes. */
  windowMs: positiveInt.min(100).default(10_000),
  /** Time an open breaker waits before it lets one probe call through (half-open). */
  resetTimeoutMs: positiveInt.default(10_000),
});

/** Outlier ejection per endpoint, as Envoy's consecutive-5xx detection. */
const outlierSchema = z.strictObject({
  /** Consecutive upstream failures of an endpoint that eject it. */
  consecutiveFailures: positiveInt.default(5),
  /** Ejection time = base × times ejected, at most maxEjectionMs. */
  baseEjectionMs: positiveInt.default(30_000),
  maxEjectionMs: positiveInt.default(300_000),
  /** Share of the endpoints that may be ejected at once (at least one, when there are two or more). */
  maxEjectionPercent: z.number().min(0).max(100).default(10),
});

/** How calls to one upstream survive its failures (docs/resilience.md). */
const resilienceSchema = z.strictObject({
  /** roundRobin: weighted round robin; leastOutstanding: power of two choices on calls in flight / weight. */
  loadBalancing: z.enum(["roundRobin", "leastOutstanding"]).default("roundRobin"),
  /** Calls in flight to this upstream at most; one more is refused at once (OVERLOADED). Default: no limit. */
  maxConcurrent: positiveInt.optional(),
  /** Longest silence between two events of a stream once the first one arrived (UNAVAILABLE after it). */
  streamIdleTimeoutMs: positiveInt.default(60_000),
  /**
   * An attempt cut by the caller's deadline after waiting at least this long with nothing from the
   * upstream counts as a failure of its endpoint (a slow failure); 0: however short the wait.
   */
  slowFailureMs: z.number().int().nonnegative().default(500),
  retry: retrySchema.default(() => retrySchema.parse({})),
  breaker: breakerSchema.default(() => breakerSchema.parse({})),
  outlierDetection: outlierSchema.default(() => outlierSchema.parse({})),
});
export type ResilienceConfig = z.infer<typeof resilienceSchema>;

const upstreamSchema = z.strictObject({
  name,
  kind: z.enum(upstreamKinds, { error: `unknown kind; one of: ${upstreamKinds.join(", ")}` }),
  /**
   * Base URLs of the upstream's servers, each a URL or `{url, weight}`; remote kinds need at least
   * one. After parsing, `endpoints` holds the URLs and `endpointWeights` their weights.
   */
  endpoints: z.array(z.union([endpointSchema, weightedEndpointSchema])).default([]),
  /** A credential; use `${ENV_VAR}` so the file holds no secret. Never logged. */
  apiKey: z.string().min(1).optional(),
  /** Extra HTTP headers sent on every upstream call. */
  headers: z.record(z.string(), z.string()).default({}),
  /** Per-attempt timeout for one upstream call (the caller's deadline still applies). */
  timeoutMs: positiveInt.default(60_000),
  /**
   * Time to open a connection to an endpoint (TCP and TLS; gRPC kinds: until the channel is
   * ready). Default: the kind's `options.http.connectTimeoutMs` (5000), and 5000 for gRPC kinds.
   */
  connectTimeoutMs: positiveInt.optional(),
  /**
   * Time from sending a request until the endpoint's answer begins (HTTP response headers; gRPC
   * response metadata or status, counted from the call's start). Default: the kind's
   * `options.http.headersTimeoutMs` (60000); gRPC kinds: none but timeoutMs.
   */
  firstByteTimeoutMs: positiveInt.optional(),
  /** Options of the kind, validated by the kind's own schema. */
  options: z.record(z.string(), z.unknown()).default({}),
  /** TLS towards the upstream (https:// endpoints): a private CA, and a client certificate for mTLS. */
  tls: z
    .strictObject({
      /** PEM CA bundle trusted instead of the system roots. */
      caFile: z.string().min(1).optional(),
      /** PEM client certificate chain, for upstreams that require mTLS. */
      certFile: z.string().min(1).optional(),
      /** PEM private key of the client certificate. */
      keyFile: z.string().min(1).optional(),
    })
    .refine((t) => (t.certFile === undefined) === (t.keyFile === undefined), { error: "certFile and keyFile go together" })
    .optional(),
  /** Breakers, load balancing, outlier ejection, retries and concurrency limit (docs/resilience.md). */
  resilience: resilienceSchema.default(() => resilienceSchema.parse({})),
})
  // The kinds read `endpoints` as URL strings; the weights go beside them, index for index.
  .transform(({ endpoints, ...rest }) => ({
    ...rest,
    endpoints: endpoints.map((e) => (typeof e === "string" ? e : e.url)),
    endpointWeights: endpoints.map((e) => (typeof e === "string" ? 1 : e.weight)),
    /** Each endpoint's own connect and first-byte timeouts, where it sets them. */
    endpointTimeouts: endpoints.map((e): EndpointTimeouts => {
      if (typeof e === "string") return {};
      const { url: _url, weight: _weight, ...timeouts } = e;
      return timeouts;
    }),
  }));

/** An endpoint's own connect and first-byte timeouts (upstreams[].endpoints[] as {url, …}). */
export interface EndpointTimeouts {
  readonly connectTimeoutMs?: number;
  readonly firstByteTimeoutMs?: number;
}

/** How a model's answers are cached (see README, "Cache"). */
const modelCacheSchema = z.strictObject({
  /**
   * off: never; deterministic: Chat/Generate only when temperature is explicitly 0 or a seed is
   * set; always: every successful answer. Default: deterministic for Chat/Generate, always for
   * Predict and Embed (whose answers are deterministic; cached input by input).
   */
  policy: z.enum(["off", "deterministic", "always"]).optional(),
  /** How long an answer stays; default `cache.defaultTtlMs`. */
  ttlMs: positiveInt.optional(),
  /** Request metadata entries that are part of the key (e.g. a locale that changes the answer). */
  keyMetadata: z.array(z.string().min(1)).default([]),
  /** When authentication is on: share answers across tenants (otherwise the tenant is in the key). */
  shared: z.boolean().default(false),
});

/** What the gateway checks and does for a model's Embed calls (capability `embed`). */
const modelEmbeddingSchema = z.strictObject({
  /**
   * The model's full vector length: EmbedRequest.dimensions above it is refused (INVALID_ARGUMENT)
   * before anything goes upstream. Unset: not checked here (the upstream refuses what it cannot do).
   */
  dimensions: positiveInt.optional(),
  /** Inputs in one request at most; more are refused (INVALID_ARGUMENT). OpenAI's own limit. */
  maxInputs: positiveInt.default(2048),
  /**
   * Inputs in one upstream request at most: a request with more (after the cached items are taken
   * out) is split into batches of this size, sent in parallel, and joined again in input order.
   * Unset: one upstream request.
   */
  maxBatch: positiveInt.optional(),
});
export type ModelEmbeddingConfig = z.infer<typeof modelEmbeddingSchema>;

/** A price per million tokens (or per 1,000, per call) in `pricing.currency`: 0 up to a million. */
const priceAmount = z.number().nonnegative().max(1_000_000);

/**
 * A model's price (README, "Cost"), in `pricing.currency`: what each call's cost is computed at
 * (src/observability/cost.ts), from the answer's complete usage, each kind of token at its own
 * rate. A field not given is 0, but the cached, cache-creation and reasoning prices, which default
 * to the input and output prices (the parts are then billed as the whole they belong to). After
 * parsing every field is a number but `embeddingPer1kTokens`.
 */
const modelPriceSchema = z
  .strictObject({
    /** Per million prompt tokens neither read from nor written to the provider's prompt cache. */
    inputPerMTok: priceAmount.optional(),
    /** Per million prompt tokens read from the provider's prompt cache; default inputPerMTok. */
    cachedInputPerMTok: priceAmount.optional(),
    /** Per million prompt tokens written to the provider's prompt cache (Anthropic); default inputPerMTok. */
    cacheCreationPerMTok: priceAmount.optional(),
    /** Per million completion tokens that are not reasoning. */
    outputPerMTok: priceAmount.optional(),
    /** Per million reasoning tokens (part of the completion tokens); default outputPerMTok. */
    reasoningPerMTok: priceAmount.optional(),
    /** Per call answered by the upstream (not by the cache), on top of its tokens. */
    perRequest: priceAmount.optional(),
    /** Embed: per 1,000 prompt tokens, instead of inputPerMTok. */
    embeddingPer1kTokens: priceAmount.optional(),
  })
  .refine((p) => Object.keys(p).length > 0, { error: "give at least one price (a free model: inputPerMTok: 0)" })
  .transform((p) => {
    const input = p.inputPerMTok ?? 0;
    const output = p.outputPerMTok ?? 0;
    return {
      inputPerMTok: input,
      cachedInputPerMTok: p.cachedInputPerMTok ?? input,
      cacheCreationPerMTok: p.cacheCreationPerMTok ?? input,
      outputPerMTok: output,
      reasoningPerMTok: p.reasoningPerMTok ?? output,
      perRequest: p.perRequest ?? 0,
      embeddingPer1kTokens: p.embeddingPer1kTokens,
    };
  });
export type ModelPrice = z.infer<typeof modelPriceSchema>;

/** The gateway's one currency: model prices (and money budgets) are in it. */
const pricingSchema = z.strictObject({
  /** An ISO 4217 code: three capital letters. */
  currency: z.string().regex(/^[A-Z]{3}$/, { error: "not an ISO 4217 currency code (three capital letters, e.g. USD)" }).default("USD"),
});

const modelSchema = z.strictObject({
  /** The name callers give. */
  name,
  /** The model version: part of the cache key and reported by ListModels. */
  version: z.string().min(1).default("1"),
  /** The name of the upstream that serves it. */
  upstream: name,
  /** The model's name at the upstream; defaults to `name`. */
  upstreamModel: z.string().min(1).optional(),
  /**
   * The calls it answers; defaults to what its upstream kind serves by default (every call it
   * can serve but `embed`, which a model must list: a chat model is not an embedding model).
   */
  capabilities: z.array(z.enum(capabilityNames)).min(1).optional(),
  /** Limits of its Embed calls (capability `embed`). */
  embedding: modelEmbeddingSchema.default(() => modelEmbeddingSchema.parse({})),
  /** Per-model options of the upstream kind (e.g. anthropic `maxTokens`), validated by the kind. */
  options: z.record(z.string(), z.unknown()).default({}),
  cache: modelCacheSchema.default(() => modelCacheSchema.parse({})),
  /**
   * Models tried in order when this one's upstream fails with a retryable error after its retries
   * (for Generate: only before the first event). Each must serve every call this model serves.
   */
  fallbacks: z.array(name).default([]),
  /** What its calls cost (README, "Cost"); absent: unpriced, its calls' cost is "unpriced", never 0. */
  price: modelPriceSchema.optional(),
});

/** Bounds of the in-memory answer cache. */
const cacheSchema = z.strictObject({
  /** Bytes of all stored answers (serialized). */
  maxBytes: positiveInt.default(256 * 1024 * 1024),
  /** Number of stored answers. */
  maxEntries: positiveInt.default(100_000),
  /** Largest single answer stored. */
  maxEntryBytes: positiveInt.default(8 * 1024 * 1024),
  /** TTL of models that set none. */
  defaultTtlMs: positiveInt.default(3_600_000),
});

/** Token-bucket limits of one caller: capacity per minute, refilled continuously. */
const limitsSchema = z.strictObject({
  /** Calls per minute. */
  requestsPerMinute: positiveInt.optional(),
  /** Prompt + completion tokens per minute, charged when the usage is known (streams at their end). */
  tokensPerMinute: positiveInt.optional(),
});

const modelGlobs = z.array(z.string().min(1)).min(1).default(["*"]);

/** One API key: its SHA-256 (never the key), the tenant it names, its models and limits. */
const apiKeySchema = z.strictObject({
  /** The tenant: in logs, cache keys, rate-limit buckets. */
  name,
  /** Hex SHA-256 of the key, as `infergate hash-key` prints it. */
  sha256: z.string().regex(/^[0-9a-f]{64}$/, { error: "not a hex SHA-256 (use infergate hash-key)" }),
  /** Model name globs this key may call (`*`, `?`). */
  models: modelGlobs,
  /** Overrides `limits.default` for this key. */
  limits: limitsSchema.optional(),
});

/** A client certificate identity (mTLS): its subject common name serves as the caller. */
const clientCertSchema = z.strictObject({
  /** The certificate subject's CN. */
  commonName: z.string().min(1),
  name,
  models: modelGlobs,
  limits: limitsSchema.optional(),
});

const authSchema = z.strictObject({
  /** Off by default (the sidecar case): then every caller is anonymous and unlimited by key. */
  enabled: z.boolean().default(false),
  keys: z.array(apiKeySchema).default([]),
  /** With `server.tls.clientCaFile`: certificate identities accepted without an API key. */
  clientCertificates: z.array(clientCertSchema).default([]),
});

/** A Redis server's URL: `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS. */
const redisUrl = z
  .url({ protocol: /^rediss?$/, error: "not a redis:// or rediss:// URL" })
  // The message never repeats the URL: it may hold a password.
  // (Also run on a string the URL check refused: that one is already reported, so no second issue.)
  .refine((u) => !URL.canParse(u) || /^\/?(\d+)?$/.test(new URL(u).pathname), { error: "the path must be a database number (redis://host:6379/2) or empty" });

/** One shared piece on Redis; on by default once the `redis:` section is present. */
const redisPieceSchema = z.strictObject({ enabled: z.boolean().default(true) });

/**
 * Redis (through ioredis), shared by the replicas of one gateway (README, "Scale-out on Redis").
 * Absent: everything stays in this process's memory. Present: each shared piece below is on
 * unless it says `enabled: false`.
 */
const redisSchema = z.strictObject({
  /** The server; `${REDIS_URL}` keeps a password out of the file. Never logged. */
  url: redisUrl.default("redis://127.0.0.1:6379"),
  /** Redis Cluster: seed nodes (the URL's password and TLS apply to all); replaces `url`. */
  clusterNodes: z.array(redisUrl).default([]),
  /** Prefix of every key infergate writes, so several gateways can share one Redis. */
  keyPrefix: z.string().regex(/^[A-Za-z0-9._:{}-]{0,64}$/, { error: "at most 64 letters, digits or . _ : { } -" }).default("infergate:"),
  /** Time to establish a connection before it counts as failed. */
  connectTimeoutMs: positiveInt.default(1_000),
  /** Time one command may take before it counts as failed (then the failure rules apply). */
  commandTimeoutMs: positiveInt.default(250),
  /** Token buckets shared by all replicas: N replicas together admit the configured rate. */
  rateLimits: z
    .strictObject({
      enabled: z.boolean().default(true),
      /**
       * When Redis cannot be reached: `open` admits on this process's own buckets (logged and
       * counted); `closed` refuses calls with UNAVAILABLE, reason RATE_LIMITER_UNAVAILABLE.
       */
      onFailure: z.enum(["open", "closed"]).default("open"),
    })
    .default({ enabled: true, onFailure: "open" }),
  /** Second cache tier: a local miss looks in Redis; answers are written through to it. */
  cache: redisPieceSchema.default({ enabled: true }),
  /** Conversation sessions live in Redis, so a session continues on any replica. */
  sessions: redisPieceSchema.default({ enabled: true }),
});

/** Conversation sessions (ChatRequest.session_id): how long and how much history is kept. */
const sessionsSchema = z.strictObject({
  /** A session is forgotten after this long without a call (sliding: each call renews it). */
  ttlMs: positiveInt.default(3_600_000),
  /** Messages kept per session; the oldest are dropped first. */
  maxMessages: positiveInt.max(10_000).default(100),
  /** Serialized bytes of history kept per session; the oldest messages are dropped first. */
  maxBytes: positiveInt.max(64 * 1024 * 1024).default(256 * 1024),
  /** In memory (no Redis): sessions kept at most; the least recently used is dropped first. */
  maxSessions: positiveInt.default(10_000),
});

/**
 * OpenTelemetry tracing (docs/tracing.md): a server span per call and a client span per upstream
 * attempt, exported over OTLP/HTTP (protobuf) in batches. Off unless `endpoint` is set; off, it
 * costs a call nothing (no span, no context work).
 */
const tracingSchema = z.strictObject({
  /** The collector's OTLP/HTTP traces URL, e.g. `http://otel-collector:4318/v1/traces`. */
  endpoint: endpointSchema.optional(),
  /** Headers of every export request (`${ENV}` keeps a token out of the file). Never logged. */
  headers: z.record(z.string(), z.string()).default({}),
  /** `service.name` of the spans. */
  serviceName: z.string().min(1).default("infergate"),
  /** Share of new traces recorded, 0 to 1. Propagation goes on for the rest. */
  samplingRatio: z.number().min(0).max(1).default(1),
  /** A call that comes with a `traceparent` follows its caller's sampling decision. */
  parentBased: z.boolean().default(true),
  /** Spans held for export at most; more are dropped (and counted), never waited for. */
  maxQueueSize: positiveInt.default(2_048),
  /** Spans per export request at most. */
  maxExportBatchSize: positiveInt.default(512),
  /** Time between exports. */
  scheduledDelayMs: positiveInt.default(5_000),
  /** Time one export request may take before it counts as failed. */
  exportTimeoutMs: positiveInt.default(10_000),
});

/** An IANA time zone this runtime knows (Intl), e.g. `Europe/Berlin`. */
const timeZone = z.string().refine(
  (tz) => {
    try {
      new Intl.DateTimeFormat("en-US", { timeZone: tz });
      return true;
    } catch {
      return false;
    }
  },
  { error: "not an IANA time zone (e.g. UTC, Europe/Berlin)" },
);

/** One period's limits of a budget: tokens (prompt + completion) and/or money (in `pricing.currency`). */
const budgetLimitSchema = z
  .strictObject({
    tokens: positiveInt.optional(),
    money: z.number().positive().optional(),
  })
  .refine((l) => l.tokens !== undefined || l.money !== undefined, { error: "set tokens, money or both" });

/** A budget's limits per period: the clock hour, the calendar day and month of `budgets.timeZone`. */
const budgetLimitsSchema = z.strictObject({
  hour: budgetLimitSchema.optional(),
  day: budgetLimitSchema.optional(),
  month: budgetLimitSchema.optional(),
});
export type BudgetLimitsConfig = z.infer<typeof budgetLimitsSchema>;

/**
 * Budgets (docs/production.md, "Budgets"): spend limits per key and per group of keys, checked
 * before each call and charged after it from its real usage and cost. Present: every caller's
 * spend is counted (the usage query, /admin/usage), in memory or on Redis when `redis:` is set.
 */
const budgetsSchema = z.strictObject({
  /** The time zone whose calendar days and months (and hours) the periods follow. */
  timeZone: timeZone.default("UTC"),
  /**
   * When Redis cannot be reached: `open` admits calls unchecked (charges are lost; logged once and
   * counted); `closed` refuses them with UNAVAILABLE, reason BUDGET_STORE_UNAVAILABLE.
   */
  onRedisFailure: z.enum(["open", "closed"]).default("open"),
  /** Each caller's own limits, by its name (`auth.keys[].name`, `auth.clientCertificates[].name`). */
  keys: z.record(name, budgetLimitsSchema).default({}),
  /** Limits shared by several callers (a team); a caller may be in several groups. */
  groups: z
    .array(
      z.strictObject({
        name,
        /** Caller names, as in `keys`. */
        keys: z.array(name).min(1),
        limits: budgetLimitsSchema,
      }),
    )
    .default([]),
});
export type BudgetsConfig = z.infer<typeof budgetsSchema>;

/** The whole configuration file. */
export const configSchema = z.strictObject({
  server: serverSchema.default(() => serverSchema.parse({})),
  cache: cacheSchema.default(() => cacheSchema.parse({})),
  auth: authSchema.default(() => authSchema.parse({})),
  /** Limits of callers that set none of their own (with auth off: all callers together). */
  limits: z.strictObject({ default: limitsSchema.default({}) }).default({ default: {} }),
  upstreams: z.array(upstreamSchema).min(1, { error: "at least one upstream is required" }),
  models: z.array(modelSchema).min(1, { error: "at least one model is required" }),
  /** Conversation sessions; in memory unless `redis.sessions` is on. */
  sessions: sessionsSchema.default(() => sessionsSchema.parse({})),
  /** The currency of the model prices (README, "Cost"). */
  pricing: pricingSchema.default(() => pricingSchema.parse({})),
  /** Shared state of a fleet of replicas; absent: in memory only. */
  redis: redisSchema.optional(),
  /** OpenTelemetry tracing; off unless it names an endpoint. */
  tracing: tracingSchema.default(() => tracingSchema.parse({})),
  /** Spend limits per key and group; absent: no budgets and no usage counts. */
  budgets: budgetsSchema.optional(),
});

/** A validated configuration, defaults applied. */
export type Config = z.infer<typeof configSchema>;
export type ServerConfig = Config["server"];
export type UpstreamConfig = Config["upstreams"][number];
export type ModelConfig = Config["models"][number];
export type CacheConfig = Config["cache"];
export type AuthConfig = Config["auth"];
export type LimitsConfig = Config["limits"]["default"];
export type ModelCacheConfig = ModelConfig["cache"];
export type RedisConfig = NonNullable<Config["redis"]>;
export type SessionsConfig = Config["sessions"];
export type TracingConfig = Config["tracing"];
export type RequestLimits = ServerConfig["requestLimits"];
/** The request limits when the configuration sets none. */
export const defaultRequestLimits: RequestLimits = requestLimitsSchema.parse({});
