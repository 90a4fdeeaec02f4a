import { LRUCache } from "lru-cache";
import { boundHistory, type SessionBounds, type SessionStore, sessionKey } from "./session-store.js";

export interface MemorySessionStoreOptions extends SessionBounds {
  /** Sessions kept at most; the least recently used one is dropped first. */
  readonly maxSessions: number;
  /** Clock for the TTL (tests pass a fake one). */
  readonly now?: () => number;
}

/**
 * Sessions in this process's memory (the default): lru-cache bounded by the number of sessions,
 * each session by its messages and bytes, with a sliding TTL (every load or append renews it).
 * Memory is thus at most `maxSessions × maxBytes` plus bookkeeping.
 */
export class MemorySessionStore implements SessionStore {
  private readonly lru: LRUCache<string, Uint8Array[]>;

  constructor(private readonly options: MemorySessionStoreOptions) {
    this.lru = new LRUCache<string, Uint8Array[]>({
      max: options.maxSessions,
      ttl: options.ttlMs,
      updateAgeOnGet: true,
      ttlAutopurge: false,
      ttlResolution: 0,
      ...(options.now === undefined ? {} : { perf: { now: options.now } }),
    });
  }

  async load(tenant: string, id: string): Promise<Uint8Array[]> {
    return [...(this.lru.get(sessionKey(tenant, id)) ?? [])];
  }

  async append(tenant: string, id: string, messages: readonly Uint8Array[]): Promise<void> {
    const key = sessionKey(tenant, id);
    const history = boundHistory([...(this.lru.get(key) ?? []), ...messages], this.options);
    if (history.length === 0) this.lru.delete(key);
    else this.lru.set(key, history);
  }

  async delete(tenant: string, id: string): Promise<boolean> {
    const key = sessionKey(tenant, id);
    const existed = this.lru.has(key);
    this.lru.delete(key);
    return existed;
  }
}
