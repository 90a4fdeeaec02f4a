import { LRUCache } from "lru-cache";
import type { CacheStats } from "./cache-stats.js";

/** A stored answer: one serialized message (Predict, Chat) or the serialized events of a stream. */
export type StoredAnswer =
  | { readonly kind: "message"; readonly bytes: Uint8Array }
  | { readonly kind: "stream"; readonly events: readonly Uint8Array[] };

export interface ResponseStoreOptions {
  /** Bound on the bytes of all stored answers. */
  maxBytes: number;
  /** Bound on the number of stored answers. */
  maxEntries: number;
  /** Largest single answer stored; larger ones are not cached. */
  maxEntryBytes: number;
  /** Clock for TTLs (tests pass a fake one). */
  now?: () => number;
}

/** Bytes an entry is charged: its payload plus a fixed overhead for key and bookkeeping. */
export function storedSize(a: StoredAnswer): number {
  const overhead = 128;
  return a.kind === "message" ? a.bytes.length + overhead : a.events.reduce((n, e) => n + e.length + 16, overhead);
}

/**
 * The in-memory answer store: lru-cache bounded by bytes (serialized size of each entry) and by
 * entries, with a TTL per entry. Answers are kept serialized, so a hit can never hand out an object
 * that another caller mutates, and the byte bound is exact.
 */
export class ResponseStore {
  private readonly lru: LRUCache<string, StoredAnswer>;

  constructor(
    private readonly options: ResponseStoreOptions,
    private readonly stats: CacheStats,
  ) {
    this.lru = new LRUCache<string, StoredAnswer>({
      max: options.maxEntries,
      maxSize: options.maxBytes,
      maxEntrySize: Math.min(options.maxEntryBytes, options.maxBytes),
      sizeCalculation: storedSize,
      ttlAutopurge: false,
      // Check staleness against the clock on every read, not a coarse cached "now".
      ttlResolution: 0,
      dispose: (_value, _key, reason) => {
        if (reason === "evict") {
          stats.evictions++;
        }
        this.refresh();
      },
      ...(options.now === undefined ? {} : { perf: { now: options.now } }),
    });
  }

  private refresh(): void {
    this.stats.bytes = this.lru.calculatedSize;
    this.stats.entries = this.lru.size;
  }

  get(key: string): StoredAnswer | undefined {
    return this.lru.get(key);
  }

  /** Stores an answer for `ttlMs`; answers over the entry bound are silently not stored. */
  set(key: string, answer: StoredAnswer, ttlMs: number): void {
    if (storedSize(answer) > this.options.maxEntryBytes) {
      return;
    }
    this.lru.set(key, answer, { ttl: ttlMs });
    this.stats.stores++;
    this.refresh();
  }

  clear(): void {
    this.lru.clear();
    this.refresh();
  }
}
