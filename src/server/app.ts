import { AsyncLocalStorage } from "node:async_hooks";
import type { TLSSocket } from "node:tls";
import { createContextValues } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { Role } from "../../gen/infergate/v1/chat_pb.js";
import type { ChatRequest, ChatResponse } from "../../gen/infergate/v1/inference_service_pb.js";
import type { Config } from "../config/schema.js";
import { ResponseCache } from "../cache/response-cache.js";
import { peerCommonName } from "../core/call-context.js";
import type { CallObserver, CallRecord } from "../observability/call-record.js";
import { codeName, createMetrics } from "../observability/metrics.js";
import { createRefusalLog } from "../observability/refusal-log.js";
import { createSecurity } from "../security/admission.js";
import { createSharedState } from "./shared-state.js";
import { adminConnectionsMax, startAdminServer } from "./admin-server.js";
import { Code } from "@connectrpc/connect";
import { createGateway, type Gateway } from "../gateway/gateway.js";
import { echoed, GatewayError, Reason } from "../core/gateway-error.js";
import { createRouter, type Router } from "../gateway/router.js";
import { ConfigError, type ConfigIssue, formatIssue } from "../config/config-error.js";
import { appliedConfig, restartOnlyChanges, upstreamFingerprint } from "./config-reload.js";
import { readServerTls, type ServerTlsMaterial } from "./server-tls.js";
import type { Logger } from "../observability/logger.js";
import { createUpstream } from "../gateway/create-upstream.js";
import type { Upstream } from "../core/upstream.js";
import { createConnectionGate, openFileLimit } from "./connection-limits.js";
import { createGrpcServer, grpcCredentials, healthServices } from "./grpc-server.js";
import { listenGrpc } from "./grpc-listener.js";
import { createHttpListener } from "./http-listener.js";
import { inferenceRoutes, peerCommonNameKey } from "./connect-routes.js";
import { createOpenAIIngress, withOpenAIIngress } from "../ingress/openai/openai-ingress.js";

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

/**
 * Call records waiting for their turn (see onCall in startApp), one queue per app. A process that
 * exits before their turn comes (a second Ctrl-C, a crash) records them on its way out, before the
 * logger's own exit flush (prepended).
 */
const waitingRecords = new Set<() => void>();
let exitHookInstalled = false;
function recordOnExit(run: () => void): void {
  waitingRecords.add(run);
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.prependListener("exit", () => {
    for (const r of waitingRecords) r();
  });
}

/** Resolves after `ms` without holding the process open. */
function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

function splitHostPort(address: string): [string, number] {
  const i = address.lastIndexOf(":");
  return [address.slice(0, i), Number(address.slice(i + 1))];
}

/** Starts infergate with a validated config. */
export async function startApp(config: Config, log: Logger): Promise<App> {
  // First, so that a bad certificate stops the start before anything is opened.
  const tlsMaterial = config.server.tls === undefined ? undefined : readServerTls(config.server.tls, "(TLS files)");
  // Replaced on reload (see reload below); calls in flight hold the router they started with.
  let upstreams = new Map<string, Upstream>(config.upstreams.map((u) => [u.name, createUpstream(u)]));
  let fingerprints = new Map(config.upstreams.map((u) => [u.name, upstreamFingerprint(u)]));
  const shared = await createSharedState(config, log);
  const cache = new ResponseCache(config.cache, config.server.maxTimeoutMs, undefined, shared.cacheTier, () => {
    if (shared.redisStats !== undefined) shared.redisStats.cacheHits++;
  });
  let gatewayRef: Gateway | undefined;
  const metrics = createMetrics({
    models: config.models.map((m) => m.name),
    inFlight: () => gatewayRef?.inFlight() ?? 0,
    cache: cache.stats,
    redis: shared.redisStats,
  });
  let security = createSecurity(config.auth, config.limits.default, shared.rateLimits);
  // server.logContent only: the pending log line of each Chat call (see logChatContent).
  const chatLines = config.server.logContent ? new AsyncLocalStorage<PendingLine>() : undefined;
  // The call line's keys are fixed and none is one the logger redacts (nor an object that could
  // hold one): redaction would cost half of writing the line (about 7 µs of 13 per call) and
  // change nothing, so the line goes through a child without it.
  const callLog = log.child({}, { redact: [] });
  // Refusals (no key, a rate limit, …) are counted in the metrics, but logged one line per caller
  // and reason per interval (issue 17: a flood of them was a flood of lines).
  const refusals = createRefusalLog(config.server.refusalLogIntervalMs, (s) =>
    callLog.info(
      { tenant: s.tenant === "" ? undefined : s.tenant, code: codeName(s.code), reason: s.reason, suppressed: s.suppressed, intervalMs: s.intervalMs },
      "refused calls not logged one by one",
    ),
  );
  const record = (r: CallRecord) => {
    metrics.observe(r);
    security.charge(r)?.catch((err: unknown) => log.warn({ err }, "could not charge tokens to the rate limit"));
    if (!refusals.shouldLog(r)) return;
    const line = {
      requestId: r.requestId,
      tenant: r.tenant === "" ? undefined : r.tenant,
      rpc: r.rpc,
      // The caller's own string: cut as in errors (issue 17: a 3 MB name was a 3 MB line).
      model: echoed(r.model),
      upstream: r.upstream,
      endpoint: r.endpoint,
      attempts: r.attempts,
      cache: r.cache,
      code: codeName(r.code),
      reason: r.reason,
      latencyMs: Math.round(r.latencyMs * 100) / 100,
      ttftMs: r.ttftMs === undefined ? undefined : Math.round(r.ttftMs * 100) / 100,
      promptTokens: r.promptTokens,
      completionTokens: r.completionTokens,
    };
    const pending = r.rpc === "Chat" ? chatLines?.getStore() : undefined;
    if (pending === undefined) callLog.info(line, "call");
    else pending.line = line;
  };
  // The gateway reports a unary call before its answer goes to the listener: recorded at once,
  // the metrics, the rate-limit charge and the log line (about a tenth of a cache hit's CPU)
  // would delay the answer. They wait two immediates: an HTTP/2 session writes the answer's
  // headers and message from a native immediate of this turn, and the trailers that end the call
  // once libuv reports that write done, early in the next turn, before its immediates run.
  // With server.logContent the line is parked for the listener at once (see below).
  const waiting: CallRecord[] = [];
  const recordWaiting = () => {
    for (const r of waiting.splice(0)) record(r);
  };
  recordOnExit(recordWaiting);
  const recordNextTurn = () => setImmediate(recordWaiting);
  const onCall: CallObserver =
    chatLines === undefined
      ? (r) => {
          if (waiting.push(r) === 1) setImmediate(recordNextTurn);
        }
      : record;
  const gateway = createGateway(createRouter(config, upstreams), {
    log,
    cache,
    onCall,
    admit: security.admit,
    maxConcurrentCalls: config.server.maxConcurrentCalls,
    requestLimits: config.server.requestLimits,
    sessions: shared.sessions,
  });
  gatewayRef = gateway;
  if (chatLines !== undefined) logChatContent(gateway, chatLines, log);
  let draining = false;
  const admin = await startAdminServer(config.server.adminListen, { registry: metrics.registry, ready: () => !draining }, config.server.connections);
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
  const http = createHttpListener(withOpenAIIngress(openai, handler), server, tlsMaterial, { gate });
  const [httpHost, httpPortWanted] = splitHostPort(server.httpListen);
  let httpPort: number;
  try {
    httpPort = await http.listen(httpHost, httpPortWanted);
  } catch (err) {
    grpcServer.forceShutdown();
    grpcListener.destroy();
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
    grpcListener.close();
    const grpcClosed = new Promise<void>((resolve) => grpcServer.tryShutdown(() => resolve()));
    const started = Date.now();
    log.info({ inFlight: gateway.inFlight(), graceMs: server.shutdownGraceMs }, "draining");
    const grace = new Promise<"timeout">((resolve) => setTimeout(() => resolve("timeout"), server.shutdownGraceMs).unref());
    const outcome = await Promise.race([gateway.idle().then(() => "idle" as const), grace]);
    if (outcome === "timeout") {
      log.warn({ inFlight: gateway.inFlight() }, "grace period over; cutting off calls still in flight");
      // Calls still open end with an error status, never with a clean end (a stream cut short
      // must not look complete) and not with a dropped connection: abort them with SHUTTING_DOWN,
      // wait until they have handed their statuses to the listeners, and let those flush.
      gateway.abortInFlight(
        new GatewayError(Code.Unavailable, "the gateway shut down before the call finished; retry on another instance", {
          reason: Reason.ShuttingDown,
        }),
      );
      await Promise.race([gateway.idle(), delay(1000)]);
      await Promise.race([grpcClosed, delay(250)]);
    } else {
      // The last answers are written but may still sit in socket buffers; give the connections a
      // moment to close by themselves (open health Watch streams keep them open) before cutting.
      const flushMs = Math.max(0, Math.min(1000, server.shutdownGraceMs - (Date.now() - started)));
      await Promise.race([grpcClosed, new Promise((resolve) => setTimeout(resolve, flushMs).unref())]);
    }
    shutdownController.abort();
    grpcServer.forceShutdown();
    grpcListener.destroy();
    http.destroy();
    // The records of the last calls (see onCall), now.
    recordWaiting();
    refusals.flush();
    waitingRecords.delete(recordWaiting);
    await Promise.all([...upstreams.values(), ...retiring].map(closeUpstream));
    await admin.close();
    await shared.close();
    log.info("stopped");
  }

  /** Upstreams replaced by a reload, closed once the calls that started before it are done. */
  const retiring = new Set<Upstream>();
  const closing = new Map<Upstream, Promise<void>>();
  function closeUpstream(u: Upstream): Promise<void> {
    let p = closing.get(u);
    if (p === undefined) {
      p = u.close().catch((err: unknown) => log.warn({ err, upstream: u.name }, "could not close an upstream"));
      closing.set(u, p);
    }
    return p;
  }

  let running = config;
  async function applyReload(load: () => Promise<Config>): Promise<boolean> {
    const rejected = (issues: readonly ConfigIssue[]): false => {
      metrics.reloaded("rejected");
      // One line with every problem (path: problem); problems name fields and files, never their values.
      const problems = issues.map(formatIssue);
      log.error({ problems }, `configuration reload rejected, the running configuration stays: ${problems.join("; ")}`);
      return false;
    };
    if (stopping !== undefined) {
      log.warn("configuration reload ignored: shutting down");
      return false;
    }
    let next: Config;
    try {
      next = await load();
    } catch (err) {
      if (err instanceof ConfigError) return rejected(err.issues);
      throw err;
    }
    if (stopping !== undefined) return false;
    const restart = restartOnlyChanges(running, next);
    const applied = appliedConfig(running, next);
    let material: ServerTlsMaterial | undefined;
    const created: Upstream[] = [];
    const createdNames: string[] = [];
    let router: Router;
    const nextUpstreams = new Map<string, Upstream>();
    const nextFingerprints = new Map<string, string>();
    try {
      // Certificates are read again on every reload, at the configured (possibly new) paths.
      if (applied.server.tls !== undefined) material = readServerTls(applied.server.tls, "(TLS files)");
      applied.upstreams.forEach((u, i) => {
        const fingerprint = upstreamFingerprint(u);
        const kept = upstreams.get(u.name);
        nextFingerprints.set(u.name, fingerprint);
        if (kept !== undefined && fingerprints.get(u.name) === fingerprint) {
          nextUpstreams.set(u.name, kept);
          return;
        }
        try {
          const made = createUpstream(u);
          created.push(made);
          createdNames.push(u.name);
          nextUpstreams.set(u.name, made);
        } catch (err) {
          const e = err as NodeJS.ErrnoException;
          throw new ConfigError([{ path: `upstreams[${i}]`, message: `cannot be created (${e.code ?? String(e.message).split("\n")[0]!.slice(0, 200)})` }], "");
        }
      });
      router = createRouter(applied, nextUpstreams);
    } catch (err) {
      await Promise.all(created.map(closeUpstream));
      if (err instanceof ConfigError) return rejected(err.issues);
      throw err;
    }
    // From here on nothing fails: the new configuration is applied as a whole.
    const nextSecurity = createSecurity(applied.auth, applied.limits.default, shared.rateLimits);
    if (material !== undefined) {
      grpcTls.update(material);
      http.updateTls(material);
    }
    const replaced = [...upstreams].filter(([name, u]) => nextUpstreams.get(name) !== u).map(([, u]) => u);
    const before = gateway.swap({ router, admit: nextSecurity.admit });
    security = nextSecurity;
    upstreams = nextUpstreams;
    fingerprints = nextFingerprints;
    running = applied;
    metrics.setModels(applied.models.map((m) => m.name));
    for (const u of replaced) retiring.add(u);
    void before.then(() =>
      Promise.all(
        replaced.map(async (u) => {
          await closeUpstream(u);
          retiring.delete(u);
        }),
      ),
    );
    if (restart.length > 0) {
      log.warn({ fields: restart }, `not reloaded, needs a restart (the running values stay): ${restart.join(", ")}`);
    }
    metrics.reloaded("ok");
    log.info(
      {
        models: applied.models.map((m) => m.name),
        upstreamsNew: createdNames,
        upstreamsClosing: replaced.map((u) => u.name),
        tls: material === undefined ? undefined : "reloaded",
      },
      "configuration reloaded",
    );
    return true;
  }
  let reloads = Promise.resolve(true);

  return {
    gateway,
    cache,
    reload(load) {
      reloads = reloads.then(() => applyReload(load)).catch((err: unknown) => {
        // A bug; the running configuration stays, and the process serves on.
        metrics.reloaded("rejected");
        log.error({ err }, "configuration reload failed; the running configuration stays");
        return false;
      });
      return reloads;
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

/** A Chat call's log line, parked until its answer is known. */
interface PendingLine {
  line?: object;
}

/** Longest prompt or completion text written to a log line. */
const maxLoggedText = 8192;

/**
 * `server.logContent` (debug only: prompts and answers may hold personal data). The Chat call's
 * log line gains `prompt` (the last user message's text) and `completion` (the answer's text).
 * The gateway reports a call before its answer reaches the listener, so the observer parks the
 * line in the call's async context and it is written here once the answer is known. Installed
 * only when the option is on: the default path is untouched.
 */
function logChatContent(gateway: Gateway, lines: AsyncLocalStorage<PendingLine>, log: Logger): void {
  const chat = gateway.chat;
  gateway.chat = (req, ctx) => {
    const pending: PendingLine = {};
    const write = (res: ChatResponse | undefined) => {
      if (pending.line === undefined) return;
      const completion = res === undefined ? undefined : cut(textOf(res.message?.content ?? []));
      log.info({ ...pending.line, prompt: cut(lastUserText(req)), completion }, "call");
    };
    return lines.run(pending, () => chat(req, ctx)).then(
      (res) => {
        write(res);
        return res;
      },
      (err: unknown) => {
        write(undefined);
        throw err;
      },
    );
  };
}

function lastUserText(req: ChatRequest): string {
  return textOf(req.messages.findLast((m) => m.role === Role.USER)?.content ?? []);
}

function textOf(parts: ChatRequest["messages"][number]["content"]): string {
  return parts.flatMap((p) => (p.part.case === "text" ? [p.part.value] : [])).join("\n");
}

function cut(text: string): string {
  return echoed(text, maxLoggedText);
}
