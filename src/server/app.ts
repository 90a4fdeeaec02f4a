import { AsyncLocalStorage } from "node:async_hooks";
import type { TLSSocket } from "node:tls";
import { createContextValues } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { Role } from "../../gen/infergate/v1/chat_pb.js";
import type { ChatRequest, ChatResponse } from "../../gen/infergate/v1/inference_service_pb.js";
import type { Config } from "../config/schema.js";
import { ResponseCache } from "../cache/response-cache.js";
import { peerCommonName } from "../resilience/deadline.js";
import type { CallObserver } from "../observability/call-record.js";
import { codeName, createMetrics } from "../observability/metrics.js";
import { createSecurity } from "../security/admission.js";
import { createSharedState } from "./shared-state.js";
import { startAdminServer } from "./admin-server.js";
import { Code } from "@connectrpc/connect";
import { createGateway, type Gateway } from "../gateway/gateway.js";
import { GatewayError, Reason } from "../gateway/gateway-error.js";
import { createRouter } from "../gateway/router.js";
import type { Logger } from "../observability/logger.js";
import { createUpstream } from "../upstreams/registry.js";
import type { Upstream } from "../upstreams/upstream.js";
import { bindGrpc, createGrpcServer, grpcCredentials, healthServices } from "./grpc-server.js";
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
   * Graceful stop: health turns NOT_SERVING, new calls are refused, in-flight calls and streams
   * may finish for up to `server.shutdownGraceMs`, then what is left is cut off. Idempotent.
   */
  shutdown(): Promise<void>;
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
  const upstreams = new Map<string, Upstream>(config.upstreams.map((u) => [u.name, createUpstream(u)]));
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
  const security = createSecurity(config.auth, config.limits.default, shared.rateLimits);
  // server.logContent only: the pending log line of each Chat call (see logChatContent).
  const chatLines = config.server.logContent ? new AsyncLocalStorage<PendingLine>() : undefined;
  // The call line's keys are fixed and none is one the logger redacts (nor an object that could
  // hold one): redaction would cost half of writing the line (about 7 µs of 13 per call) and
  // change nothing, so the line goes through a child without it.
  const callLog = log.child({}, { redact: [] });
  const onCall: CallObserver = (r) => {
    metrics.observe(r);
    security.charge(r).catch((err: unknown) => log.warn({ err }, "could not charge tokens to the rate limit"));
    const line = {
      requestId: r.requestId,
      tenant: r.tenant === "" ? undefined : r.tenant,
      rpc: r.rpc,
      model: r.model,
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
  const gateway = createGateway(createRouter(config, upstreams), {
    log,
    cache,
    onCall,
    admit: security.admit,
    maxConcurrentCalls: config.server.maxConcurrentCalls,
    sessions: shared.sessions,
  });
  gatewayRef = gateway;
  if (chatLines !== undefined) logChatContent(gateway, chatLines, log);
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
  // The OpenAI-compatible API (/v1/…) shares the port with Connect: src/ingress/openai.
  const openai = createOpenAIIngress(gateway, { maxTimeoutMs: server.maxTimeoutMs, maxBodyBytes: server.maxMessageBytes });
  const http = createHttpListener(withOpenAIIngress(openai, handler), server);
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
    http.destroy();
    await Promise.all([...upstreams.values()].map((u) => u.close()));
    await admin.close();
    await shared.close();
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
  return text.length > maxLoggedText ? `${text.slice(0, maxLoggedText)}… (${text.length} chars)` : text;
}
