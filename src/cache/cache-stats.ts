/**
 * The cache's counters, in one place for the metrics exporter: outcomes of lookups, evictions,
 * and what the store holds now.
 */
export interface CacheStats {
  hits: number;
  misses: number;
  coalesced: number;
  bypassed: number;
  stores: number;
  evictions: number;
  /** Bytes held by the store now (serialized answers). */
  bytes: number;
  /** Entries held now. */
  entries: number;
}

export function createCacheStats(): CacheStats {
  return { hits: 0, misses: 0, coalesced: 0, bypassed: 0, stores: 0, evictions: 0, bytes: 0, entries: 0 };
}
