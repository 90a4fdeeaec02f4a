import { Code } from "@connectrpc/connect";
import { GatewayError, Reason } from "../core/gateway-error.js";
import type { Logger } from "../observability/logger.js";
import type { RedisConnection } from "../redis/redis-client.js";
import type { RedisStats } from "../redis/redis-stats.js";
import { type SessionBounds, type SessionStore, sessionKey } from "./session-store.js";

/**
 * Sessions on Redis, shared by every replica: one list per session,
 * `<prefix>session:<tenant length>:<tenant>:<id>`, read and appended by Lua scripts
 * (redis-scripts.ts) that renew the TTL and apply the bounds atomically. When Redis fails, a call
 * that names a session fails with UNAVAILABLE (SESSION_STORE_UNAVAILABLE): answering without the
 * history would be a different conversation. Calls without a session are not affected.
 */
export class RedisSessionStore implements SessionStore {
  private failing = false;

  constructor(
    private readonly redis: RedisConnection,
    private readonly bounds: SessionBounds,
    private readonly stats: RedisStats,
    private readonly log: Logger,
  ) {}

  private key(tenant: string, id: string): string {
    return `${this.redis.prefix}session:${sessionKey(tenant, id)}`;
  }

  private async run<T>(op: () => Promise<T>): Promise<T> {
    try {
      const r = await op();
      this.failing = false;
      return r;
    } catch (err) {
      this.stats.errors.sessions++;
      if (!this.failing) this.log.warn({ err: err instanceof Error ? err.message : String(err) }, "sessions: redis failed; session calls fail until it answers");
      this.failing = true;
      throw new GatewayError(Code.Unavailable, "the session store is unavailable; retry shortly", {
        reason: Reason.SessionStoreUnavailable,
        retryAfterMs: 1000,
        cause: err,
      });
    }
  }

  load(tenant: string, id: string): Promise<Uint8Array[]> {
    return this.run(async () => (await this.redis.client.igSessionLoadBuffer(this.key(tenant, id), this.bounds.ttlMs)).map((b) => new Uint8Array(b)));
  }

  async append(tenant: string, id: string, messages: readonly Uint8Array[]): Promise<void> {
    if (messages.length === 0) return;
    await this.run(() =>
      this.redis.client.igSessionAppend(
        this.key(tenant, id),
        this.bounds.ttlMs,
        this.bounds.maxMessages,
        this.bounds.maxBytes,
        ...messages.map((m) => Buffer.from(m.buffer, m.byteOffset, m.byteLength)),
      ),
    );
  }

  delete(tenant: string, id: string): Promise<boolean> {
    return this.run(async () => (await this.redis.client.del(this.key(tenant, id))) > 0);
  }
}
