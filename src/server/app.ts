import type { TLSSocket } from "node:tls";
import { createContextValues } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Config } from "../config/schema.js";
import { ResponseCache } from "../cache/response-cache.js";
import { peerCommonName } from "../resilience/deadline.js";
import type { CallObserver } from "../observability/call-record.js";
import { codeName, createMetrics } from "../observability/metrics.js";
import { createSecurity } from "../security/admission.js";
import { MemoryRateLimitStore } from "../security/rate-limiter.js";
import { startAdminServer } from "./admin-server.js";
import { createGateway, type Gateway } from "../gateway/gateway.js";
import { createRouter } from "../gateway/router.js";
import type { Logger } from "../observability/logger.js";
import { createUpstream } from "../upstreams/registry.js";
import type { Upstream } from "../upstreams/upstream.js";
import { bindGrpc, createGrpcServer, grpcCredentials, healthServices } from "./grpc-server.js";
import { createHttpListener } from "./http-listener.js";
import { inferenceRoutes, peerCommonNameKey } from "./connect-routes.js";

/** A running infergate: both listeners over one gateway core. */
export interface App {
  readonly gateway: Gateway;
  /** The answer cache (its stats are what the metrics export). */
  readonly cache: ResponseCache;
  /** The bound gRPC address, HOST:PORT. */
  readonly grpcAddress: string;
  /** The bound HTTP (Connect, gRPC-Web, JSON) address, HOST:PORT. */
  readonly httpAddress: string;
  /** The bound admin address (/metrics, /healthz, /readyz), HOST:PORT. */
  readonly adminAddress: string;
  /**
   * Graceful stop: health turns NOT_SERVING, new calls are refused, in-flight calls and streams
   * may finish for up to `server.shutdownGraceMs`, then what is left is cut off. Idempotent.
   */
  shutdown(): Promise<void>;
}

function splitHostPort(address: string): [string, number] {
  const i = address.lastIndexOf(":");
  return [address.slice(0, i), Number(address.slice(i + 1))];
}

/** Starts infergate with a validated config. */
export async function startApp(config: Config, log: Logger): Promise<App> {
  const upstreams = new Map<string, Upstream>(config.upstreams.map((u) => [u.name, createUpstream(u)]));
  const cache = new ResponseCache(config.cache, config.server.maxTimeoutMs);
  let gatewayRef: Gateway | undefined;
  const metrics = createMetrics({
    models: config.models.map((m) => m.name),
    inFlight: () => gatewayRef?.inFlight() ?? 0,
    cache: cache.stats,
  });
  const security = createSecurity(config.auth, config.limits.default, new MemoryRateLimitStore());
  const onCall: CallObserver = (r) => {
    metrics.observe(r);
    security.charge(r).catch((err: unknown) => log.warn({ err }, "could not charge tokens to the rate limit"));
    log.info(
      {
        requestId: r.requestId,
        tenant: r.tenant === "" ? undefined : r.tenant,
        rpc: r.rpc,
        model: r.model,
        upstream: r.upstream,
        cache: r.cache,
        code: codeName(r.code),
        reason: r.reason,
        latencyMs: Math.round(r.latencyMs * 100) / 100,
        ttftMs: r.ttftMs === undefined ? undefined : Math.round(r.ttftMs * 100) / 100,
        promptTokens: r.promptTokens,
        completionTokens: r.completionTokens,
      },
      "call",
    );
  };
  const gateway = createGateway(createRouter(config, upstreams), { log, cache, onCall, admit: security.admit });
  gatewayRef = gateway;
  let draining = false;
  const admin = await startAdminServer(config.server.adminListen, { registry: metrics.registry, ready: () => !draining });
  const server = config.server;

  const { server: grpcServer, health } = createGrpcServer(gateway, server);
  const grpcPort = await bindGrpc(grpcServer, server.listen, grpcCredentials(server));
  const [grpcHost] = splitHostPort(server.listen);

  const shutdownController = new AbortController();
  const handler = connectNodeAdapter({
    routes: inferenceRoutes(gateway, server.maxTimeoutMs),
    readMaxBytes: server.maxMessageBytes,
    writeMaxBytes: server.maxMessageBytes,
    shutdownSignal: shutdownController.signal,
    contextValues: (req) => {
      const values = createContextValues();
      const socket = req.socket as TLSSocket;
      if (socket.authorized === true) {
        values.set(peerCommonNameKey, peerCommonName(socket.getPeerCertificate().subject));
      }
      return values;
    },
  });
  const http = createHttpListener(handler, server);
  const [httpHost, httpPortWanted] = splitHostPort(server.httpListen);
  let httpPort: number;
  try {
    httpPort = await http.listen(httpHost, httpPortWanted);
  } catch (err) {
    grpcServer.forceShutdown();
    throw err;
  }

  let stopping: Promise<void> | undefined;
  async function stop(): Promise<void> {
    draining = true;
    for (const s of healthServices) {
      health.setStatus(s, "NOT_SERVING");
    }
    gateway.drain();
    http.drain();
    // tryShutdown stops accepting and lets open calls finish; health Watch streams are open calls
    // too, so the wait below is for the gateway's own calls, not for the server to be empty.
    const grpcClosed = new Promise<void>((resolve) => grpcServer.tryShutdown(() => resolve()));
    const started = Date.now();
    log.info({ inFlight: gateway.inFlight(), graceMs: server.shutdownGraceMs }, "draining");
    const grace = new Promise<"timeout">((resolve) => setTimeout(() => resolve("timeout"), server.shutdownGraceMs).unref());
    const outcome = await Promise.race([gateway.idle().then(() => "idle" as const), grace]);
    if (outcome === "timeout") {
      log.warn({ inFlight: gateway.inFlight() }, "grace period over; cutting off calls still in flight");
    } else {
      // The last answers are written but may still sit in socket buffers; give the connections a
      // moment to close by themselves (open health Watch streams keep them open) before cutting.
      const flushMs = Math.max(0, Math.min(1000, server.shutdownGraceMs - (Date.now() - started)));
      await Promise.race([grpcClosed, new Promise((resolve) => setTimeout(resolve, flushMs).unref())]);
    }
    shutdownController.abort();
    grpcServer.forceShutdown();
    http.destroy();
    await Promise.all([...upstreams.values()].map((u) => u.close()));
    await admin.close();
    log.info("stopped");
  }

  return {
    gateway,
    cache,
    grpcAddress: `${grpcHost}:${grpcPort}`,
    httpAddress: `${httpHost}:${httpPort}`,
    adminAddress: admin.address,
    shutdown() {
      stopping ??= stop();
      return stopping;
    },
  };
}
