import { createHash } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { CachePolicy } from "../../gen/infergate/v1/chat_pb.js";
import { type EmbedRequest, EmbedRequestSchema, type EmbedResponse, EmbedResponseSchema } from "../../gen/infergate/v1/inference_service_pb.js";
import { GatewayError, Reason } from "../core/gateway-error.js";
import type { KeyScope } from "./cache-key.js";
import type { CacheStats } from "./cache-stats.js";
import { abandoned, whenAborted } from "./single-flight.js";

/**
 * Embeddings through the cache, input by input (issue 19): each input's vector is stored under a
 * key of its own (model, version, tenant, key metadata, dimensions, version pin, the input), so a
 * batch takes the inputs the cache has, joins the inputs another call is fetching now, and sends
 * only the rest upstream, in one request; the answer is joined again in input order. An input
 * repeated in one request goes upstream once.
 *
 * Coalescing per input: the inputs a call sends are registered as in flight until its upstream
 * answer comes; a call that needs one of them waits for it rather than sending it again. The
 * upstream request runs under a signal of its own, aborted when every call waiting on any of its
 * inputs has left (its deadline, its cancel), and each waiting call leaves on its own signal with
 * its own reason, as SingleFlight does for whole answers (single-flight.ts).
 */

/** What the cache did for one call; an Embed's batch may also be `partial`. */
export type EmbedOutcome = "hit" | "miss" | "partial" | "coalesced" | "bypass";

/** The cache's side of an Embed: its store, its second tier and its flights' deadline. */
export interface VectorStore {
  readonly stats: CacheStats;
  /** A vector from the local store. */
  get(key: string): Uint8Array | undefined;
  /** Vectors from the second tier for keys the local store lacks (undefined: no tier). */
  fromTier?(keys: readonly string[]): Promise<(Uint8Array | undefined)[]>;
  /** Stores a vector (and writes it through to the second tier). */
  keep(key: string, vector: Uint8Array, ttlMs: number): void;
  /** The run of a shared upstream request (its deadline outlives any one waiter's). */
  flightRun(signal: AbortSignal): { signal: AbortSignal; deadline: number };
}

/** How one call uses the cache: keys of its inputs, or none (bypass). */
export interface EmbedDecision {
  readonly scope: KeyScope | undefined;
  readonly read: boolean;
  readonly ttlMs: number;
}

/** The caller's side of one Embed. */
interface Caller {
  readonly signal: AbortSignal;
  readonly deadline: number;
}

type Run = { signal: AbortSignal; deadline: number };

/** One upstream request of inputs that other calls may wait on. */
interface Batch {
  readonly controller: AbortController;
  /** The keys of its inputs. */
  readonly keys: readonly string[];
  waiters: number;
  settled: boolean;
}

/** An input in flight: its vector when its batch answers. */
interface Pending {
  readonly vector: Promise<Uint8Array>;
  readonly batch: Batch;
}

/** Whether an Embed bypasses the cache: asked to, or the model's policy is off. */
export function embedDecision(policy: "off" | "deterministic" | "always" | undefined, request: CachePolicy, ttlMs: number, scope: KeyScope): EmbedDecision {
  if (request === CachePolicy.BYPASS || policy === "off") return { scope: undefined, read: false, ttlMs };
  return { scope, read: request !== CachePolicy.REFRESH, ttlMs };
}

/**
 * The key of each input: SHA-256 over the scope (length-prefixed, as cache-key.ts does for whole
 * answers), the dimensions and version pin asked for, then the input (a tag for text or token
 * ids, then its bytes). The scope's part is hashed once per call.
 */
export function inputKeys(req: EmbedRequest, scope: KeyScope): string[] {
  const base = createHash("sha256");
  for (const part of [scope.rpc, scope.model, scope.version, scope.tenant]) base.update(`${Buffer.byteLength(part)}:${part};`);
  for (const name of [...scope.keyMetadata].sort()) {
    const value = req.metadata[name];
    base.update(value === undefined ? `m${name.length}:${name}-;` : `m${name.length}:${name}=${Buffer.byteLength(value)}:${value};`);
  }
  base.update(`d${req.dimensions ?? ""};`);
  base.update(req.modelVersion === undefined ? "p-;" : `p${Buffer.byteLength(req.modelVersion)}:${req.modelVersion};`);
  const keys: string[] = [];
  for (const text of req.texts) keys.push(base.copy().update("t").update(text, "utf8").digest("hex"));
  for (const t of req.tokens) keys.push(base.copy().update("k").update(new Uint8Array(Uint32Array.from(t.ids).buffer)).digest("hex"));
  return keys;
}

/** The request of the inputs at `positions`, for the upstream. */
function subRequest(req: EmbedRequest, positions: readonly number[]): EmbedRequest {
  if (positions.length === req.texts.length + req.tokens.length) return req;
  return create(EmbedRequestSchema, {
    ...req,
    texts: req.texts.length > 0 ? positions.map((i) => req.texts[i]!) : [],
    tokens: req.tokens.length > 0 ? positions.map((i) => req.tokens[i]!) : [],
  });
}

/** The in-flight inputs of one cache, by key. */
export class InputFlights {
  private readonly pending = new Map<string, Pending>();

  /** Inputs in flight now (for tests). */
  get size(): number {
    return this.pending.size;
  }

  /**
   * One Embed through the cache: the inputs `store` has, those in flight, and `send` for the
   * rest (its answer has one vector per input it was given, in order, checked by the caller of
   * this). The answer's `model`, `modelVersion` and `upstream` are the caller's to stamp.
   */
  async embed(
    store: VectorStore,
    d: EmbedDecision,
    req: EmbedRequest,
    caller: Caller,
    send: (req: EmbedRequest, run: Run) => Promise<EmbedResponse>,
  ): Promise<{ value: EmbedResponse; outcome: EmbedOutcome }> {
    const stats = store.stats;
    if (d.scope === undefined) {
      stats.bypassed++;
      return { value: await send(req, caller), outcome: "bypass" };
    }
    const keys = inputKeys(req, d.scope);
    const n = keys.length;
    const vectors: (Uint8Array | undefined)[] = new Array<Uint8Array | undefined>(n).fill(undefined);
    let hits = 0;
    if (d.read) {
      for (let i = 0; i < n; i++) {
        const v = store.get(keys[i]!);
        if (v !== undefined) {
          vectors[i] = v;
          hits++;
        }
      }
      if (hits < n && store.fromTier !== undefined) {
        const lookups = keys.flatMap((k, i) => (vectors[i] === undefined && !this.pending.has(k) ? [i] : []));
        if (lookups.length > 0) {
          const found = await store.fromTier(lookups.map((i) => keys[i]!));
          lookups.forEach((i, j) => {
            if (found[j] !== undefined) {
              vectors[i] = found[j];
              hits++;
            }
          });
        }
      }
    }
    const cached = Array.from(vectors, (v) => v !== undefined);
    // The rest: joined (another call fetches it), or sent (first of its key in this request).
    const joined: { index: number; vector: Promise<Uint8Array> }[] = [];
    const batches = new Set<Batch>();
    const sent: number[] = [];
    const sentAt = new Map<string, number>();
    const fromSent: { index: number; at: number }[] = [];
    for (let i = 0; i < n; i++) {
      if (vectors[i] !== undefined) continue;
      const key = keys[i]!;
      const pending = this.pending.get(key);
      if (pending !== undefined) {
        joined.push({ index: i, vector: pending.vector });
        batches.add(pending.batch);
        continue;
      }
      let at = sentAt.get(key);
      if (at === undefined) {
        at = sent.length;
        sentAt.set(key, at);
        sent.push(i);
      }
      fromSent.push({ index: i, at });
    }
    let own: Promise<EmbedResponse> | undefined;
    if (sent.length > 0) {
      const batch: Batch = { controller: new AbortController(), keys: sent.map((i) => keys[i]!), waiters: 0, settled: false };
      own = this.start(store, d, batch, () => send(subRequest(req, sent), store.flightRun(batch.controller.signal)));
      batches.add(batch);
    }
    for (const b of batches) b.waiters++;
    const abort = whenAborted(caller.signal);
    let answer: EmbedResponse | undefined;
    try {
      const all = Promise.all([own, ...joined.map((j) => j.vector)]);
      const [ownAnswer, ...joinedVectors] = await Promise.race([all, abort.promise]);
      answer = ownAnswer;
      joined.forEach((j, k) => (vectors[j.index] = joinedVectors[k] as Uint8Array));
    } catch (err) {
      throw caller.signal.aborted ? caller.signal.reason : err;
    } finally {
      abort.dispose();
      for (const b of batches) {
        b.waiters--;
        if (b.waiters === 0 && !b.settled) {
          // No call waits on it: aborted, and forgotten at once (a call that comes now sends its
          // inputs anew rather than wait for an abandoned request to fail).
          this.forget(b);
          b.controller.abort(abandoned());
        }
      }
    }
    if (answer !== undefined) for (const { index, at } of fromSent) vectors[index] = answer.embeddings[at]!.fp32;
    stats.hits += hits;
    stats.coalesced += joined.length;
    stats.misses += sent.length;
    const outcome: EmbedOutcome = sent.length === n ? "miss" : sent.length > 0 ? "partial" : joined.length > 0 ? "coalesced" : "hit";
    return { value: joinAnswer(vectors as Uint8Array[], cached, answer), outcome };
  }

  /**
   * Sends the inputs of the batch upstream once, registered as in flight until the answer: each
   * input's vector is then stored and handed to the calls waiting on it.
   */
  private start(store: VectorStore, d: EmbedDecision, batch: Batch, send: () => Promise<EmbedResponse>): Promise<EmbedResponse> {
    const keys = batch.keys;
    const settle: { resolve: (v: Uint8Array) => void; reject: (err: unknown) => void }[] = [];
    for (const key of keys) {
      const vector = new Promise<Uint8Array>((resolve, reject) => settle.push({ resolve, reject }));
      vector.catch(() => {});
      this.pending.set(key, { vector, batch });
    }
    const done = () => {
      batch.settled = true;
      this.forget(batch);
    };
    const answer = send().then(
      (res) => {
        done();
        keys.forEach((key, j) => {
          const v = res.embeddings[j]!.fp32;
          store.keep(key, v, d.ttlMs);
          settle[j]!.resolve(v);
        });
        return res;
      },
      (err: unknown) => {
        done();
        for (const s of settle) s.reject(err);
        throw err;
      },
    );
    answer.catch(() => {});
    return answer;
  }

  /** Takes a batch's inputs off the in-flight list (those still its own). */
  private forget(batch: Batch): void {
    for (const key of batch.keys) if (this.pending.get(key)?.batch === batch) this.pending.delete(key);
  }
}

/** The caller's answer: every vector in input order, with where it came from and the usage. */
function joinAnswer(vectors: readonly Uint8Array[], cached: readonly boolean[], upstream: EmbedResponse | undefined): EmbedResponse {
  const bytes = vectors[0]!.byteLength;
  for (const v of vectors) {
    if (v.byteLength !== bytes) {
      // Only if the model's vectors changed length under the same model version.
      throw new GatewayError(Code.Internal, "internal error", {
        reason: Reason.Internal,
        cause: new Error("cached and fresh embeddings of one model version differ in length: bump the model's version"),
      });
    }
  }
  return create(EmbedResponseSchema, {
    embeddings: vectors.map((fp32, index) => ({ index, fp32, cached: cached[index]! })),
    dimensions: bytes / 4,
    cached: cached.every((c) => c),
    usage: upstream?.usage ?? {},
  });
}
