import { AsyncLocalStorage } from "node:async_hooks";
import type { TLSSocket } from "node:tls";
import { createContextValues } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Config } from "../config/schema.js";
import { ResponseCache } from "../cache/response-cache.js";
import { peerCommonName } from "../core/call-context.js";
import { createMetrics } from "../observability/metrics.js";
import { createTracing } from "../observability/tracing.js";
import { createSecurity } from "../security/admission.js";
import { type Budgets, createBudgets } from "../security/budgets.js";
import { registerBudgetMetrics } from "./budget-metrics.js";
import { createSharedState } from "./shared-state.js";
import { createCallRecorder, type PendingLine } from "./call-recorder.js";
import { contentLogStep } from "./content-log.js";
import { createReloader, UpstreamSet } from "./reload.js";
import { gracefulStop } from "./shutdown.js";
import { adminConnectionsMax, startAdminServer } from "./admin-server.js";
import type { ReloadResult } from "./console-api.js";
import { createCallRing } from "./console-calls.js";
import { withConsoleCors } from "./console-cors.js";
import { createGateway, type Gateway } from "../gateway/gateway.js";
import { createRouter } from "../gateway/router.js";
import { readServerTls } from "./server-tls.js";
import type { Logger } from "../observability/logger.js";
import { createConnectionGate, openFileLimit } from "./connection-limits.js";
import { createGrpcServer, grpcCredentials } from "./grpc-server.js";
import { listenGrpc } from "./grpc-listener.js";
import { createHttpListener } from "./http-listener.js";
import { inferenceRoutes, peerCommonNameKey } from "./connect-routes.js";
import { createAnthropicIngress, withAnthropicIngress } from "../ingress/anthropic/anthropic-ingress.js";
import { createOpenAIIngress, withOpenAIIngress } from "../ingress/openai/openai-ingress.js";
import { createResponsesIngress, withResponsesIngress } from "../ingress/responses/responses-ingress.js";

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
   * A configuration reload (SIGHUP): `load` reads and validates the configuration again. A valid
   * one replaces models, upstreams, auth, limits and the TLS certificates for the calls and
   * handshakes that start from now on; calls in flight finish with what they started with.
   * Settings bound at start keep their running value (logged as needing a restart). An invalid
   * one (or TLS files, or an upstream, that cannot be used) is logged with every problem and
   * changes nothing. Never throws; resolves with whether the new configuration was applied.
   * Reloads run one at a time.
   */
  reload(load: () => Promise<Config>): Promise<boolean>;
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
  // First, so that a bad certificate stops the start before anything is opened.
  const tlsMaterial = config.server.tls === undefined ? undefined : readServerTls(config.server.tls, "(TLS files)");
  // Replaced on reload (reload.ts); calls in flight hold the router they started with.
  const upstreams = new UpstreamSet(config, log);
  const shared = await createSharedState(config, log);
  const cache = new ResponseCache(config.cache, config.server.maxTimeoutMs, undefined, shared.cacheTier, () => {
    if (shared.redisStats !== undefined) shared.redisStats.cacheHits++;
  });
  let gatewayRef: Gateway | undefined;
  // The running routes (replaced on reload), whose breakers the metrics read.
  let router = createRouter(config, upstreams.current);
  // Undefined unless `tracing.endpoint` is set: then no call makes a span (docs/tracing.md).
  const tracing = createTracing(config.tracing, log);
  const metrics = createMetrics({
    tracing: tracing?.stats,
    models: config.models.map((m) => m.name),
    inFlight: () => gatewayRef?.inFlight() ?? 0,
    cache: cache.stats,
    redis: shared.redisStats,
    routes: () => router.routes(),
  });
  let security = createSecurity(config.auth, config.limits.default, shared.rateLimits);
  // Budgets (config `budgets`): replaced on reload over the same store, as security is.
  const budgetRefusals = new Map<string, number>();
  const makeBudgets = (c: Config): Budgets | undefined =>
    c.budgets === undefined
      ? undefined
      : createBudgets(c.budgets, shared.budgets, {
          currency: c.pricing.currency,
          callers: [...c.auth.keys.map((k) => k.name), ...c.auth.clientCertificates.map((k) => k.name)],
          models: c.models.map((m) => m.name),
          refused: budgetRefusals,
        });
  let budgets = makeBudgets(config);
  registerBudgetMetrics(metrics.registry, () => budgets);
  const admitWithBudgets = (admit: typeof security.admit, b: Budgets | undefined) => (b === undefined ? admit : b.admission(admit));
  // server.logContent only: the pending log line of each Chat call (see src/server/content-log.ts).
  const chatLines = config.server.logContent ? new AsyncLocalStorage<PendingLine>() : undefined;
  // The console (docs/console.md): the last calls, and the running configuration with its load time.
  const recentCalls = createCallRing();
  const running: { config: Config; loadedAt: number; lastReload: ReloadResult | undefined } = { config, loadedAt: Date.now(), lastReload: undefined };
  let httpPortBound: number | undefined;
  const recorder = createCallRecorder({
    log,
    metrics,
    charge: (r) => {
      budgets?.charge(r)?.catch((err: unknown) => log.warn({ err }, "could not charge a call to its budgets"));
      return security.charge(r);
    },
    refusalLogIntervalMs: config.server.refusalLogIntervalMs,
    chatLines,
    onRecord: (r) => recentCalls.add(r),
  });
  const gateway = createGateway(router, {
    log,
    cache,
    onCall: recorder.onCall,
    admit: admitWithBudgets(security.admit, budgets),
    maxConcurrentCalls: config.server.maxConcurrentCalls,
    requestLimits: config.server.requestLimits,
    sessions: shared.sessions,
    interceptors: chatLines === undefined ? [] : [contentLogStep(chatLines, log)],
    tracing,
  });
  gatewayRef = gateway;
  let draining = false;
  const admin = await startAdminServer(
    config.server.adminListen,
    {
      registry: metrics.registry,
      ready: () => !draining,
      // Restart-only, as every server setting (config-reload.ts).
      adminToken: () => config.server.adminToken,
      usage: () => {
        const b = budgets;
        return b === undefined ? undefined : (period) => b.usage(period as Parameters<Budgets["usage"]>[0]);
      },
      console: {
        registry: metrics.registry,
        routes: () => router.routes(),
        calls: recentCalls,
        config: () => running,
        http: () => ({ port: httpPortBound, tls: tlsMaterial !== undefined }),
      },
    },
    config.server.connections,
  );
  const server = config.server;
  // The gRPC and HTTP listeners' connections count against one set of caps.
  const gate = createConnectionGate(server.connections.max, server.connections.maxPerIp);
  metrics.countConnections("api", gate);
  metrics.countConnections("admin", admin.connections);
  const files = openFileLimit();
  if (files !== undefined && files < server.connections.max + adminConnectionsMax + 64) {
    log.warn({ openFileLimit: files, max: server.connections.max }, "server.connections.max is near or above the open-file limit: raise the limit (ulimit -n) or lower the cap");
  }

  const { server: grpcServer, health } = createGrpcServer(gateway, server);
  const grpcTls = grpcCredentials(tlsMaterial);
  const grpcListener = await listenGrpc(grpcServer, server.listen, grpcTls.credentials, server.connections, gate);
  const grpcPort = grpcListener.port;
  const [grpcHost] = splitHostPort(server.listen);

  const shutdownController = new AbortController();
  const handler = connectNodeAdapter({
    // The request limit is also infergate's own, which decodes each request first (connect-decoding.ts).
    routes: inferenceRoutes(gateway, server.maxTimeoutMs, { readMaxBytes: server.maxMessageBytes, requestLimits: server.requestLimits }, server.maxMessageBytes),
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
  // The OpenAI-compatible API (/v1/…) shares the port with Connect: src/ingress/openai.
  const openai = createOpenAIIngress(gateway, { maxTimeoutMs: server.maxTimeoutMs, maxBodyBytes: server.maxMessageBytes, requestLimits: server.requestLimits });
  // The Anthropic Messages API (/v1/messages…, and /v1/models with anthropic-version) before it: src/ingress/anthropic.
  const anthropic = createAnthropicIngress(gateway, { maxTimeoutMs: server.maxTimeoutMs, maxBodyBytes: server.maxMessageBytes });
  // OpenAI's Responses API (/v1/responses…), its stored responses on the session store: src/ingress/responses.
  const responses = createResponsesIngress(gateway, shared.sessions.store, { maxTimeoutMs: server.maxTimeoutMs, maxBodyBytes: server.maxMessageBytes, sessionMaxBytes: config.sessions.maxBytes });
  // The console's playground calls it from the admin listener's origin (src/server/console-cors.ts).
  const adminPort = splitHostPort(admin.address)[1];
  const http = createHttpListener(withConsoleCors(withAnthropicIngress(anthropic, withResponsesIngress(responses, withOpenAIIngress(openai, handler))), () => adminPort), server, tlsMaterial, {
    gate,
  });
  const [httpHost, httpPortWanted] = splitHostPort(server.httpListen);
  let httpPort: number;
  try {
    httpPort = await http.listen(httpHost, httpPortWanted);
    httpPortBound = httpPort;
  } catch (err) {
    grpcServer.forceShutdown();
    grpcListener.destroy();
    throw err;
  }

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    draining = true;
    return gracefulStop({
      log,
      graceMs: server.shutdownGraceMs,
      health,
      gateway,
      grpcServer,
      grpcListener,
      http,
      shutdownController,
      closers: [
        // The records of the last calls (see createCallRecorder), now.
        () => recorder.flush(),
        // The spans still queued, exported within tracing.exportTimeoutMs.
        () => tracing?.shutdown(),
        () => upstreams.closeAll(),
        () => admin.close(),
        () => shared.close(),
      ],
    });
  };

  const reload = createReloader({
    config,
    log,
    metrics,
    upstreams,
    stopping: () => stopping !== undefined,
    install(next) {
      if (next.tls !== undefined) {
        grpcTls.update(next.tls);
        http.updateTls(next.tls);
      }
      const nextSecurity = createSecurity(next.config.auth, next.config.limits.default, shared.rateLimits);
      const nextBudgets = makeBudgets(next.config);
      const before = gateway.swap({ router: next.router, admit: admitWithBudgets(nextSecurity.admit, nextBudgets) });
      security = nextSecurity;
      budgets = nextBudgets;
      router = next.router;
      metrics.setModels(next.config.models.map((m) => m.name));
      running.config = next.config;
      running.loadedAt = Date.now();
      return before;
    },
  });

  return {
    gateway,
    cache,
    async reload(load) {
      const applied = await reload(load);
      running.lastReload = { at: Date.now(), applied };
      return applied;
    },
    grpcAddress: `${grpcHost}:${grpcPort}`,
    httpAddress: `${httpHost}:${httpPort}`,
    adminAddress: admin.address,
    shutdown() {
      stopping ??= stop();
      return stopping;
    },
  };
}
