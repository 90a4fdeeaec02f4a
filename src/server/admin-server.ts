import * as http from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";

/** What the admin endpoints read. */
export interface AdminSources {
  registry: Registry;
  /** Ready: config loaded, not draining, and at least one upstream able to take calls. */
  ready: () => boolean;
}

/** The admin HTTP listener: /metrics, /healthz, /readyz. Loopback by default: it is not for callers. */
export interface AdminServer {
  readonly address: string;
  close(): Promise<void>;
}

export async function startAdminServer(listen: string, sources: AdminSources): Promise<AdminServer> {
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
  const i = listen.lastIndexOf(":");
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host: listen.slice(0, i).replace(/^\[|\]$/g, ""), port: Number(listen.slice(i + 1)) }, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  return {
    address: `${listen.slice(0, i)}:${port}`,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
