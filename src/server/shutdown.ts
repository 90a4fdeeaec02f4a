import { Code } from "@connectrpc/connect";
import type * as grpc from "@grpc/grpc-js";
import type { HealthImplementation } from "grpc-health-check";
import { GatewayError, Reason } from "../core/gateway-error.js";
import type { Gateway } from "../gateway/gateway.js";
import type { Logger } from "../observability/logger.js";
import type { GrpcListener } from "./grpc-listener.js";
import { healthServices } from "./grpc-server.js";
import type { HttpListener } from "./http-listener.js";

/** What a graceful stop acts on, in the order it acts (see gracefulStop). */
export interface StopParts {
  readonly log: Logger;
  /** server.shutdownGraceMs: how long calls in flight may take to finish. */
  readonly graceMs: number;
  readonly health: HealthImplementation;
  readonly gateway: Gateway;
  readonly grpcServer: grpc.Server;
  readonly grpcListener: GrpcListener;
  readonly http: HttpListener;
  /** Aborted once the grace is over: connect-node's shutdownSignal (its handlers' signals). */
  readonly shutdownController: AbortController;
  /** Then, in order: what must still be written or closed (call records, upstreams, admin, Redis). */
  readonly closers: readonly (() => void | Promise<void>)[];
}

/** Resolves after `ms` without holding the process open. */
function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/**
 * The App's graceful stop (App.shutdown in app.ts): health turns NOT_SERVING, new calls are
 * refused, in-flight calls and streams may finish for up to the grace; then what is left is cut
 * off with UNAVAILABLE SHUTTING_DOWN (never a clean end: a stream cut short must not look
 * complete), the listeners close, and the closers run.
 */
export async function gracefulStop(p: StopParts): Promise<void> {
  const { log, gateway, grpcServer, grpcListener, http } = p;
  for (const s of healthServices) {
    p.health.setStatus(s, "NOT_SERVING");
  }
  gateway.drain();
  http.drain();
  // tryShutdown stops accepting and lets open calls finish; health Watch streams are open calls
  // too, so the wait below is for the gateway's own calls, not for the server to be empty.
  grpcListener.close();
  const grpcClosed = new Promise<void>((resolve) => grpcServer.tryShutdown(() => resolve()));
  const started = Date.now();
  log.info({ inFlight: gateway.inFlight(), graceMs: p.graceMs }, "draining");
  const grace = new Promise<"timeout">((resolve) => setTimeout(() => resolve("timeout"), p.graceMs).unref());
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
    const flushMs = Math.max(0, Math.min(1000, p.graceMs - (Date.now() - started)));
    await Promise.race([grpcClosed, delay(flushMs)]);
  }
  p.shutdownController.abort();
  grpcServer.forceShutdown();
  grpcListener.destroy();
  http.destroy();
  for (const close of p.closers) await close();
  log.info("stopped");
}
