import * as http from "node:http";
import * as net from "node:net";
import type { Registry } from "prom-client";
import { applyHttp1Timeouts, type ConnectionGate, type ConnectionSettings, createConnectionGate } from "./connection-limits.js";

/**
 * The admin listener's own caps, apart from the API listeners' (a flood there leaves probes and
 * scrapes their connections): open connections at most, and from one client address.
 */
export const adminConnectionsMax = 128;
export const adminConnectionsMaxPerIp = 32;

/** What the admin endpoints read. */
export interface AdminSources {
  registry: Registry;
  /**
   * Ready: serving, not draining (app.ts). Upstream health is deliberately not part of it: a
   * gateway whose upstreams are down still answers (errors, fallbacks, the cache), and taking every
   * replica out of a load balancer at once for an upstream outage would turn it into a full one.
   */
  ready: () => boolean;
}

/** The admin HTTP listener: /metrics, /healthz, /readyz. Loopback by default: it is not for callers. */
export interface AdminServer {
  readonly address: string;
  /** Its client connections: open, and refused by its caps. */
  readonly connections: ConnectionGate;
  close(): Promise<void>;
}

export async function startAdminServer(listen: string, sources: AdminSources, connections: ConnectionSettings): Promise<AdminServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    if (path === "/healthz") {
      res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
    } else if (path === "/readyz") {
      const ready = sources.ready();
      res.writeHead(ready ? 200 : 503, { "content-type": "text/plain" }).end(ready ? "ready\n" : "not ready\n");
    } else if (path === "/metrics") {
      sources.registry.metrics().then(
        (text) => res.writeHead(200, { "content-type": sources.registry.contentType }).end(text),
        () => res.writeHead(500).end(),
      );
    } else {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
    }
  });
  // The port is a TCP server of ours, which admits each connection through the admin's own gate
  // before handing it to the HTTP server; the timeouts are the API listeners'.
  applyHttp1Timeouts(server, connections, true);
  const gate = createConnectionGate(adminConnectionsMax, adminConnectionsMaxPerIp);
  const outer = net.createServer((socket) => {
    if (gate.admit(socket)) server.emit("connection", socket);
  });
  const i = listen.lastIndexOf(":");
  await new Promise<void>((resolve, reject) => {
    outer.once("error", reject);
    outer.listen({ host: listen.slice(0, i).replace(/^\[|\]$/g, ""), port: Number(listen.slice(i + 1)) }, () => {
      outer.off("error", reject);
      resolve();
    });
  });
  const port = (outer.address() as net.AddressInfo).port;
  return {
    address: `${listen.slice(0, i)}:${port}`,
    connections: gate,
    close: () =>
      new Promise((resolve) => {
        outer.close(() => resolve());
        // Stops the HTTP server's timeout checks (it never listened) and closes its connections.
        server.close();
        server.closeAllConnections();
      }),
  };
}
