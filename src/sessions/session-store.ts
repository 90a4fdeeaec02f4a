/**
 * Where conversation sessions live: per tenant, a list of serialized `infergate.v1.Message`s,
 * oldest first, with a sliding TTL and bounds. In memory by default (MemorySessionStore); on
 * Redis when configured (RedisSessionStore), so that a session continues on any replica.
 */
export interface SessionStore {
  /** The session's history, oldest first ([] when unknown or expired); renews its TTL. */
  load(tenant: string, id: string): Promise<Uint8Array[]>;
  /**
   * Appends messages, then drops the oldest until the session holds at most `maxMessages`
   * messages and `maxBytes` bytes; renews its TTL.
   */
  append(tenant: string, id: string, messages: readonly Uint8Array[]): Promise<void>;
  /** Forgets the session; false when there was none (unknown, expired). */
  delete(tenant: string, id: string): Promise<boolean>;
}

/** The bounds every store applies (config `sessions`). */
export interface SessionBounds {
  readonly ttlMs: number;
  readonly maxMessages: number;
  readonly maxBytes: number;
}

/**
 * The store key of a session: the tenant, length-prefixed so that no (tenant, id) pair can collide
 * with another, then the id. Another tenant's id is a different key: it cannot be read or deleted.
 */
export function sessionKey(tenant: string, id: string): string {
  return `${tenant.length}:${tenant}:${id}`;
}

/**
 * Applies the bounds to a history, oldest dropped first: first the message count, then the bytes.
 * (RedisSessionStore's append script does the same on the server.)
 */
export function boundHistory(messages: readonly Uint8Array[], bounds: Pick<SessionBounds, "maxMessages" | "maxBytes">): Uint8Array[] {
  const kept = messages.slice(Math.max(0, messages.length - bounds.maxMessages));
  let bytes = kept.reduce((n, m) => n + m.length, 0);
  let drop = 0;
  while (bytes > bounds.maxBytes && drop < kept.length) {
    bytes -= kept[drop]!.length;
    drop++;
  }
  return kept.slice(drop);
}
