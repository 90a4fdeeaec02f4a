import { clone, fromBinary, toBinary } from "@bufbuild/protobuf";
import { CachePolicy } from "../../gen/infergate/v1/chat_pb.js";
import {
  type ChatResponse,
  ChatResponseSchema,
  type EmbedRequest,
  type EmbedResponse,
  type GenerateResponse,
  GenerateResponseSchema,
  type PredictRequest,
  type PredictResponse,
  PredictResponseSchema,
} from "../../gen/infergate/v1/inference_service_pb.js";
import type { CacheConfig, ModelCacheConfig } from "../config/schema.js";
import type { ChatInput } from "../core/upstream.js";
import { type CacheRpc, chatCacheKey, type KeyScope, predictCacheKey } from "./cache-key.js";
import { type CacheStats, createCacheStats } from "./cache-stats.js";
import type { AnswerTier } from "./redis-answer-tier.js";
import { ResponseStore, type StoredAnswer, storedSize } from "./response-store.js";
import { SingleFlight } from "./single-flight.js";
import { embedDecision, type EmbedOutcome, InputFlights, type VectorStore } from "./embedding-cache.js";
import { cachedChatAnswer } from "../wire/fast-paths.js";

/**
 * What the cache did for one call; sent as the `infergate-cache` response header. An Embed, cached
 * input by input, may also be `partial`: some inputs from the cache, the others upstream.
 */
export type CacheOutcome = "hit" | "miss" | "coalesced" | "bypass";
export type { EmbedOutcome } from "./embedding-cache.js";

/** The model facts the cache needs. */
export interface CacheRoute {
  readonly name: string;
  readonly version: string;
  readonly cache: ModelCacheConfig;
}

/** Where the upstream call runs: the caller's own signal, or a shared flight's. */
export interface UpstreamRun {
  readonly signal: AbortSignal;
  readonly deadline: number;
}

/** The caller's side of one call. */
export interface CacheCaller {
  readonly signal: AbortSignal;
  readonly deadline: number;
  /** The authenticated tenant, or "" without authentication. */
  readonly tenant: string;
}

interface Decision {
  /** undefined: neither read nor write (policy off, not deterministic, or bypass). */
  readonly key: string | undefined;
  readonly read: boolean;
  readonly ttlMs: number;
}

/**
 * The answer cache in front of the upstreams: exact keys (cache-key.ts), a bounded store, per-
 * model policy, per-request bypass/refresh, and coalescing of identical calls in flight. Only
 * complete successful answers are stored: failures, cancels and streams without their final event
 * never reach `set`.
 *
 * With a second tier (Redis, shared by replicas), a local miss that has no identical call in
 * flight here looks there before going upstream; a hit there is a hit (and is kept locally for
 * its remaining TTL). Coalescing stays local: each replica makes at most one upstream call per
 * key at a time. Every local store is written through to the tier, within the same entry bound.
 */
/** How long a shared upstream call outlives the longest deadline a waiter can have. */
export const FLIGHT_GRACE_MS = 250;

export class ResponseCache {
  readonly stats: CacheStats = createCacheStats();
  readonly flights = new SingleFlight();
  /** Embed inputs in flight (embedding-cache.ts). */
  readonly inputFlights = new InputFlights();
  private readonly store: ResponseStore;
  /** The store as Embed's input-by-input cache sees it. */
  private readonly vectors: VectorStore;

  constructor(
    private readonly config: CacheConfig,
    /** Deadline given to a shared upstream call: joiners may outlive the caller that started it. */
    private readonly flightTimeoutMs: number,
    now?: () => number,
    /** The shared second tier; undefined: local only. */
    private readonly tier?: AnswerTier,
    /** Told of each hit in the second tier (a metric). */
    private readonly onTierHit: () => void = () => {},
  ) {
    this.store = new ResponseStore(
      { maxBytes: config.maxBytes, maxEntries: config.maxEntries, maxEntryBytes: config.maxEntryBytes, ...(now ? { now } : {}) },
      this.stats,
    );
    this.vectors = {
      stats: this.stats,
      get: (key) => {
        const hit = this.store.get(key);
        return hit?.kind === "message" ? hit.bytes : undefined;
      },
      ...(tier === undefined
        ? {}
        : {
            fromTier: (keys) =>
              Promise.all(
                keys.map(async (key) => {
                  const found = await tier.get(key);
                  if (found === undefined || found.answer.kind !== "message") return undefined;
                  this.store.set(key, found.answer, found.ttlMs);
                  this.onTierHit();
                  return found.answer.bytes;
                }),
              ),
          }),
      keep: (key, vector, ttlMs) => this.keep(key, { kind: "message", bytes: vector }, ttlMs),
      flightRun: (signal) => this.flightRun(signal),
    };
  }

  /**
   * Embed through the cache, input by input (embedding-cache.ts): `send` gets the inputs the cache
   * does not have and no other call is fetching. Embeddings are deterministic: cached unless the
   * model's policy is off or the request bypasses the cache.
   */
  embed(
    route: CacheRoute,
    req: EmbedRequest,
    caller: CacheCaller,
    send: (req: EmbedRequest, run: UpstreamRun) => Promise<EmbedResponse>,
  ): Promise<{ value: EmbedResponse; outcome: EmbedOutcome }> {
    const scope = {
      rpc: "embed" as const,
      model: route.name,
      version: route.version,
      tenant: route.cache.shared ? "" : caller.tenant,
      keyMetadata: route.cache.keyMetadata,
    };
    const d = embedDecision(route.cache.policy, req.cachePolicy, route.cache.ttlMs ?? this.config.defaultTtlMs, scope);
    return this.inputFlights.embed(this.vectors, d, req, caller, send);
  }

  /** Whether a call is neither read from nor written to the cache (see decide). */
  private bypasses(route: CacheRoute, rpc: CacheRpc, policy: CachePolicy, deterministic: boolean): boolean {
    const modelPolicy = route.cache.policy ?? (rpc === "predict" ? "always" : "deterministic");
    return policy === CachePolicy.BYPASS || modelPolicy === "off" || (modelPolicy === "deterministic" && !deterministic);
  }

  private decide(
    route: CacheRoute,
    rpc: CacheRpc,
    policy: CachePolicy,
    deterministic: boolean,
    caller: CacheCaller,
    key: (scope: KeyScope) => string,
  ): Decision {
    const ttlMs = route.cache.ttlMs ?? this.config.defaultTtlMs;
    if (this.bypasses(route, rpc, policy, deterministic)) {
      return { key: undefined, read: false, ttlMs };
    }
    const scope: KeyScope = {
      rpc,
      model: route.name,
      version: route.version,
      tenant: route.cache.shared ? "" : caller.tenant,
      keyMetadata: route.cache.keyMetadata,
    };
    return { key: key(scope), read: policy !== CachePolicy.REFRESH, ttlMs };
  }

  /**
   * The shared call's run. Its deadline is only a backstop: the call is aborted when its last
   * waiter leaves, and each waiter leaves at its own deadline (at most flightTimeoutMs). The grace
   * makes sure a waiter's own deadline fires first, so that it answers with its own reason (e.g.
   * "the gateway's maximum call time of 800ms ran out") rather than with the shared call's timeout
   * when both timers are due in the same millisecond.
   */
  private flightRun(signal: AbortSignal): UpstreamRun {
    return { signal, deadline: Date.now() + this.flightTimeoutMs + FLIGHT_GRACE_MS };
  }

  /** Stores locally and writes through to the second tier; over the entry bound, neither. */
  private keep(key: string, answer: StoredAnswer, ttlMs: number): void {
    if (storedSize(answer) > this.config.maxEntryBytes) return;
    this.store.set(key, answer, ttlMs);
    this.tier?.set(key, answer, ttlMs);
  }

  /**
   * After a local miss: the second tier's answer of this kind, kept locally for its remaining
   * TTL. Skipped while an identical call is in flight here (joining it is cheaper).
   */
  private async fromTier(key: string, kind: StoredAnswer["kind"]): Promise<StoredAnswer | undefined> {
    if (this.tier === undefined || this.flights.has(key)) return undefined;
    const found = await this.tier.get(key);
    if (found === undefined || found.answer.kind !== kind) return undefined;
    this.store.set(key, found.answer, found.ttlMs);
    this.onTierHit();
    return found.answer;
  }

  /** A unary answer through the cache. */
  private async unary<R>(
    d: Decision,
    caller: CacheCaller,
    schema: typeof ChatResponseSchema | typeof PredictResponseSchema,
    call: (run: UpstreamRun) => Promise<R>,
  ): Promise<{ value: R; outcome: CacheOutcome }> {
    if (d.key === undefined) {
      this.stats.bypassed++;
      return { value: await call(caller), outcome: "bypass" };
    }
    const key = d.key;
    if (d.read) {
      const hit = this.store.get(key) ?? (this.tier === undefined ? undefined : await this.fromTier(key, "message"));
      if (hit?.kind === "message") {
        this.stats.hits++;
        if (schema === ChatResponseSchema) {
          let shared = chatHits.get(hit);
          if (shared === undefined) {
            shared = cachedChatAnswer(hit.bytes);
            chatHits.set(hit, shared);
          }
          return { value: shared as R, outcome: "hit" };
        }
        // Predict answers are stamped per call (the caller's id) after this: one each.
        const value = fromBinary(schema, hit.bytes) as unknown as R & { cached: boolean };
        value.cached = true;
        return { value, outcome: "hit" };
      }
    }
    const { value, joined } = await this.flights.unary(key, caller.signal, async (signal) => {
      const r = await call(this.flightRun(signal));
      this.keep(key, { kind: "message", bytes: toBinary(schema, r as never) }, d.ttlMs);
      return r;
    });
    if (joined) {
      this.stats.coalesced++;
      // Each caller gets its own message: ingress code may stamp headers or fields on it.
      return { value: clone(schema, value as never) as R, outcome: "coalesced" };
    }
    this.stats.misses++;
    return { value, outcome: "miss" };
  }

  /** Chat through the cache. */
  chat(
    route: CacheRoute,
    req: ChatInput,
    caller: CacheCaller,
    call: (run: UpstreamRun) => Promise<ChatResponse>,
  ): Promise<{ value: ChatResponse; outcome: CacheOutcome }> {
    if (this.bypasses(route, "chat", req.cachePolicy, isDeterministic(req))) {
      // Neither read nor written: no decision, key or async step of its own.
      this.stats.bypassed++;
      return call(caller).then((value) => ({ value, outcome: "bypass" }));
    }
    const d = this.decide(route, "chat", req.cachePolicy, isDeterministic(req), caller, (s) => chatCacheKey(req, s));
    return this.unary(d, caller, ChatResponseSchema, call);
  }

  /** Predict through the cache. */
  predict(
    route: CacheRoute,
    req: PredictRequest,
    caller: CacheCaller,
    call: (run: UpstreamRun) => Promise<PredictResponse>,
  ): Promise<{ value: PredictResponse; outcome: CacheOutcome }> {
    const d = this.decide(route, "predict", req.cachePolicy, true, caller, (s) => predictCacheKey(req, s));
    return this.unary(d, caller, PredictResponseSchema, call);
  }

  /**
   * Generate through the cache: a hit replays the stored events (final marked cached); a miss
   * records the events and stores them once the final event has passed; joiners of a stream in
   * flight get the events so far, then the live ones. Async only for the second tier's lookup.
   */
  async generate(
    route: CacheRoute,
    req: ChatInput,
    caller: CacheCaller,
    call: (run: UpstreamRun) => AsyncIterable<GenerateResponse>,
  ): Promise<{ events: AsyncIterable<GenerateResponse>; outcome: CacheOutcome }> {
    const d = this.decide(route, "generate", req.cachePolicy, isDeterministic(req), caller, (s) => chatCacheKey(req, s));
    if (d.key === undefined) {
      this.stats.bypassed++;
      return { events: call(caller), outcome: "bypass" };
    }
    const key = d.key;
    if (d.read) {
      const hit = this.store.get(key) ?? (this.tier === undefined ? undefined : await this.fromTier(key, "stream"));
      if (hit?.kind === "stream") {
        this.stats.hits++;
        return { events: replay(hit.events), outcome: "hit" };
      }
    }
    const keep = (events: Uint8Array[]) => this.keep(key, { kind: "stream", events }, d.ttlMs);
    const { value, joined } = this.flights.stream(key, caller.signal, (signal) =>
      (async function* record(src: AsyncIterable<GenerateResponse>) {
        const events: Uint8Array[] = [];
        for await (const e of src) {
          events.push(toBinary(GenerateResponseSchema, e));
          if (e.event.case === "final") {
            keep(events);
          }
          yield e;
        }
      })(call(this.flightRun(signal))),
    );
    if (joined) this.stats.coalesced++;
    else this.stats.misses++;
    return { events: value, outcome: joined ? "coalesced" : "miss" };
  }
}

/**
 * The message a Chat hit answers with, one per stored entry, shared by every hit on it: decoding
 * the stored bytes again for each hit cost about 3 µs and the garbage of a message. Deeply frozen,
 * so that no caller can change what the others get (nothing after the cache changes a Chat
 * answer: provenance is stamped before it is stored); marked `cached`, its wire bytes known to the
 * gRPC listener (cachedChatAnswer, src/wire/fast-paths.ts).
 */
const chatHits = new WeakMap<StoredAnswer, ChatResponse>();

/**
 * The rule of the `deterministic` policy: an answer is reusable only when sampling cannot vary it,
 * i.e. temperature is explicitly 0 or a seed is set. An omitted temperature is the model's default
 * (usually 1), not 0.
 */
export function isDeterministic(req: ChatInput): boolean {
  return req.temperature === 0 || req.seed !== undefined;
}

async function* replay(events: readonly Uint8Array[]): AsyncGenerator<GenerateResponse> {
  for (const bytes of events) {
    const e = fromBinary(GenerateResponseSchema, bytes);
    if (e.event.case === "final") {
      e.event.value.cached = true;
    }
    yield e;
  }
}
