import { Cluster, Redis, type RedisOptions } from "ioredis";
import type { RedisConfig } from "../config/schema.js";
import type { Logger } from "../observability/logger.js";
import { budgetChargeScript, budgetSpentScript, rateLimitScript, sessionAppendScript, sessionLoadScript } from "./redis-scripts.js";

/** The scripts infergate defines on its client (see redis-scripts.ts). */
export interface InfergateCommands {
  igRateLimit(key: string, capacity: number, perMinute: number, cost: number, mode: "take" | "charge"): Promise<[number, number]>;
  /** The Buffer variant ioredis defines beside every script (the history is binary). */
  igSessionLoadBuffer(key: string, ttlMs: number): Promise<Buffer[]>;
  igSessionAppend(key: string, ttlMs: number, maxMessages: number, maxBytes: number, ...messages: Buffer[]): Promise<number>;
  /** budgetChargeScript: `numKeys` windows, then tokens, money ("" unpriced), model and each window's expiry. */
  igBudgetCharge(numKeys: number, ...keysAndArgs: (string | number)[]): Promise<number>;
  /** budgetSpentScript: `numKeys` windows. */
  igBudgetSpent(numKeys: number, ...keys: string[]): Promise<string[]>;
}

/** A standalone or cluster client with infergate's scripts defined on it. */
export type RedisClient = (Redis | Cluster) & InfergateCommands;

/** infergate's connection to Redis: the client, its key prefix and its state. */
export interface RedisConnection {
  readonly client: RedisClient;
  /** Prefix of every key (config `redis.keyPrefix`). */
  readonly prefix: string;
  /** Whether commands can be sent now. */
  connected(): boolean;
  /** Resolves once connected, or after `timeoutMs` (never rejects: Redis may come later). */
  ready(timeoutMs: number): Promise<boolean>;
  close(): Promise<void>;
}

/** host, port and credentials of a redis:// URL (the password stays out of everything logged). */
function parseUrl(url: string): { host: string; port: number; username?: string; password?: string; db: number; tls: boolean } {
  const u = new URL(url);
  const db = u.pathname.length > 1 ? Number(u.pathname.slice(1)) : 0;
  return {
    host: u.hostname.replace(/^\[(.*)\]$/, "$1"),
    port: u.port === "" ? 6379 : Number(u.port),
    ...(u.username === "" ? {} : { username: decodeURIComponent(u.username) }),
    ...(u.password === "" ? {} : { password: decodeURIComponent(u.password) }),
    db: Number.isInteger(db) ? db : 0,
    tls: u.protocol === "rediss:",
  };
}

/** The URL without its credentials, for logs. */
export function redactedUrl(url: string): string {
  const u = new URL(url);
  return `${u.protocol}//${u.host}${u.pathname === "/" ? "" : u.pathname}`;
}

/**
 * Connects to Redis as configured. Commands fail fast rather than wait: no offline queue, no
 * resend after a reconnect, a per-command timeout — a caller must never wait on a Redis that is
 * down; the pieces apply their failure rule instead. The client keeps reconnecting in the
 * background (backoff up to 2 s), so sharing resumes by itself once Redis is back. Every 'error'
 * event has a listener (an unhandled one would kill the process) and is logged at most once per
 * outage, without credentials.
 */
export function createRedisConnection(config: RedisConfig, log: Logger): RedisConnection {
  const main = parseUrl(config.url);
  const common: RedisOptions = {
    ...(main.username === undefined ? {} : { username: main.username }),
    ...(main.password === undefined ? {} : { password: main.password }),
    ...(main.tls ? { tls: {} } : {}),
    connectTimeout: config.connectTimeoutMs,
    commandTimeout: config.commandTimeoutMs,
    enableOfflineQueue: false,
    autoResendUnfulfilledCommands: false,
    maxRetriesPerRequest: 0,
    retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 6), 2_000),
    // Keep trying after a failed first connection too.
    lazyConnect: false,
  };
  const client: Redis | Cluster =
    config.clusterNodes.length > 0
      ? new Cluster(
          config.clusterNodes.map((n) => {
            const p = parseUrl(n);
            return { host: p.host, port: p.port };
          }),
          {
            redisOptions: common,
            enableOfflineQueue: false,
            clusterRetryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 6), 2_000),
          },
        )
      : new Redis({ ...common, host: main.host, port: main.port, db: main.db });
  client.defineCommand("igRateLimit", { numberOfKeys: 1, lua: rateLimitScript });
  client.defineCommand("igSessionLoad", { numberOfKeys: 1, lua: sessionLoadScript });
  client.defineCommand("igSessionAppend", { numberOfKeys: 1, lua: sessionAppendScript });
  // The number of keys is each call's first argument (a budget has one to three windows).
  client.defineCommand("igBudgetCharge", { lua: budgetChargeScript });
  client.defineCommand("igBudgetSpent", { lua: budgetSpentScript });

  const where = config.clusterNodes.length > 0 ? `cluster ${config.clusterNodes.map(redactedUrl).join(",")}` : redactedUrl(config.url);
  const secret = main.password;
  const clean = (message: string) => (secret === undefined || secret === "" ? message : message.split(secret).join("***"));
  let down = false;
  let closing = false;
  const lost = (reason: string) => {
    if (!down && !closing) log.warn({ redis: where, err: clean(reason) }, "redis unreachable; shared pieces follow their failure rules");
    down = true;
  };
  client.on("error", (err: Error) => lost(err.message));
  // A server that goes away closes the connection; the 'error' events come only with the failed
  // reconnection attempts, which may not happen before it is back.
  client.on("close", () => lost("connection closed"));
  client.on("ready", () => {
    if (down) log.info({ redis: where }, "redis reachable again; sharing resumes");
    down = false;
  });

  const connected = () => client.status === "ready";
  return {
    client: client as RedisClient,
    prefix: config.keyPrefix,
    connected,
    ready(timeoutMs) {
      if (connected()) return Promise.resolve(true);
      return new Promise((resolve) => {
        const done = () => {
          clearTimeout(timer);
          client.off("ready", done);
          resolve(connected());
        };
        const timer = setTimeout(done, timeoutMs);
        timer.unref();
        client.once("ready", done);
      });
    },
    async close() {
      closing = true;
      try {
        await client.quit();
      } catch {
        client.disconnect();
      }
    },
  };
}
