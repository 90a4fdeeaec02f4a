import type * as grpc from "@grpc/grpc-js";
import * as net from "node:net";
import { closeIfSilent, type ConnectionGate, type ConnectionSettings } from "./connection-limits.js";

/** The gRPC listener's socket: accepted here, counted and capped, then served by grpc-js. */
export interface GrpcListener {
  readonly port: number;
  /** Stops accepting connections (grpc-js's tryShutdown closes the sessions). */
  close(): void;
  /** Closes every connection now. */
  destroy(): void;
}

/**
 * Binds `address` (HOST:PORT) and hands each accepted connection to `server` through grpc-js's
 * connection injector, after the gate has admitted it, so that the caps apply before grpc-js (and
 * TLS) spend anything on it. grpc-js reads the socket natively, as when it binds by itself.
 */
export function listenGrpc(
  server: grpc.Server,
  address: string,
  credentials: grpc.ServerCredentials,
  connections: ConnectionSettings,
  gate: ConnectionGate,
): Promise<GrpcListener> {
  const injector = server.createConnectionInjector(credentials);
  const sockets = new Set<net.Socket>();
  const outer = net.createServer((socket) => {
    if (!gate.admit(socket)) return;
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    closeIfSilent(socket, connections);
    injector.injectConnection(socket);
  });
  const i = address.lastIndexOf(":");
  return new Promise((resolve, reject) => {
    outer.once("error", reject);
    outer.listen({ host: address.slice(0, i).replace(/^\[|\]$/g, ""), port: Number(address.slice(i + 1)) }, () => {
      outer.off("error", reject);
      resolve({
        port: (outer.address() as net.AddressInfo).port,
        close: () => outer.close(),
        destroy() {
          outer.close();
          for (const socket of sockets) socket.destroy();
        },
      });
    });
  });
}
