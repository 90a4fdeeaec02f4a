import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import type { Config, UpstreamConfig } from "../config/schema.js";

/**
 * Settings bound when the process started (sockets bound, limits given to grpc-js and
 * connect-node, stores sized), which a reload cannot change: each one that differs in the new
 * configuration is named, and its running value stays until a restart. `server.tls` may change
 * its files but not turn TLS, or client certificates, on or off: the listeners' kind of socket
 * and grpc-js's `requestCert` are fixed at bind time.
 */
export function restartOnlyChanges(running: Config, next: Config): string[] {
  const changed: string[] = [];
  const server = ["listen", "httpListen", "adminListen", "adminToken", "logContent", "maxMessageBytes", "maxTimeoutMs", "maxConcurrentStreams", "shutdownGraceMs", "maxConcurrentCalls", "refusalLogIntervalMs"] as const;
  for (const k of server) {
    if (running.server[k] !== next.server[k]) changed.push(`server.${k}`);
  }
  for (const k of Object.keys(running.server.connections) as (keyof Config["server"]["connections"])[]) {
    if (running.server.connections[k] !== next.server.connections[k]) changed.push(`server.connections.${k}`);
  }
  for (const k of Object.keys(running.server.requestLimits) as (keyof Config["server"]["requestLimits"])[]) {
    if (running.server.requestLimits[k] !== next.server.requestLimits[k]) changed.push(`server.requestLimits.${k}`);
  }
  const tlsNow = running.server.tls;
  const tlsNext = next.server.tls;
  if ((tlsNow === undefined) !== (tlsNext === undefined)) {
    changed.push("server.tls");
  } else if ((tlsNow?.clientCaFile === undefined) !== (tlsNext?.clientCaFile === undefined)) {
    changed.push("server.tls.clientCaFile");
  }
  for (const k of Object.keys(running.cache) as (keyof Config["cache"])[]) {
    if (running.cache[k] !== next.cache[k]) changed.push(`cache.${k}`);
  }
  for (const k of Object.keys(running.sessions) as (keyof Config["sessions"])[]) {
    if (running.sessions[k] !== next.sessions[k]) changed.push(`sessions.${k}`);
  }
  if (JSON.stringify(running.redis) !== JSON.stringify(next.redis)) changed.push("redis");
  // The Redis budget store is made once, at start, with its failure rule (src/server/shared-state.ts).
  if ((running.budgets?.onRedisFailure ?? "open") !== (next.budgets?.onRedisFailure ?? "open")) changed.push("budgets.onRedisFailure");
  // The exporter and sampler are made once, at start (src/observability/tracing.ts).
  if (JSON.stringify(running.tracing) !== JSON.stringify(next.tracing)) changed.push("tracing");
  return changed;
}

/**
 * The configuration that runs after a reload: the new one, with every restart-only setting (see
 * restartOnlyChanges) kept at its running value, except `server.tls`'s file paths when TLS and
 * client certificates stay as they are.
 */
export function appliedConfig(running: Config, next: Config): Config {
  const tlsKept = restartOnlyChanges(running, next).some((f) => f.startsWith("server.tls"));
  return {
    ...next,
    server: { ...running.server, tls: tlsKept ? running.server.tls : next.server.tls },
    cache: running.cache,
    sessions: running.sessions,
    redis: running.redis,
    tracing: running.tracing,
  };
}

/**
 * What decides whether an upstream is made anew on reload: its configuration and the contents of
 * its TLS files (a rotated client certificate or CA needs a new connection pool). Hashed, since
 * the configuration holds its credential. An unchanged upstream keeps its instance, so its
 * breakers, outlier ejections and connection pools survive the reload.
 */
export function upstreamFingerprint(u: UpstreamConfig): string {
  const hash = createHash("sha256").update(JSON.stringify(u));
  for (const path of [u.tls?.caFile, u.tls?.certFile, u.tls?.keyFile]) {
    if (path === undefined) continue;
    try {
      hash.update(readFileSync(path));
    } catch {
      // Creating the upstream reads the file again and reports the problem.
      hash.update(`unreadable:${path}`);
    }
  }
  return hash.digest("hex");
}
