import { createHash, timingSafeEqual } from "node:crypto";
import * as http from "node:http";
import * as net from "node:net";
import type { Registry } from "prom-client";
import { applyHttp1Timeouts, type ConnectionGate, type ConnectionSettings, createConnectionGate } from "./connection-limits.js";
import { type ConsoleSources, handleConsole, isConsoleAsset, isConsolePath, isLoopbackHost, loopbackHostRefusal } from "./console-api.js";

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
  /**
   * server.adminToken: when set, every endpoint but /healthz and /readyz needs `authorization:
   * Bearer <token>`. Read per request (a reload may change it). Unset, a loopback listener
   * answers every endpoint but those two and the console's static files only for a loopback Host.
   */
  adminToken?: () => string | undefined;
  /**
   * GET /admin/usage (config `budgets`): the spend per caller, group and model, for one period
   * (`?period=hour|day|month`) or all. Undefined: budgets are off (404).
   */
  usage?: () => ((period: string | undefined) => Promise<unknown>) | undefined;
  /**
   * The web console (docs/console.md): its static files under /console (no data in them, so
   * served without the token) and its JSON endpoints (/admin/info, models, calls, config,
   * traffic), behind the token as every endpoint; both refused on a non-loopback adminListen
   * without a token, as /admin/usage. Undefined: no console (404).
   */
  console?: ConsoleSources | undefined;
}

/** Whether a listen address (HOST:PORT) is a loopback one: 127.0.0.0/8, ::1, localhost. */
export function isLoopbackListen(listen: string): boolean {
  const host = listen.slice(0, listen.lastIndexOf(":")).replace(/^\[|\]$/g, "");
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** Whether a request carries `authorization: Bearer <token>` (compared in constant time). */
function bearerMatches(req: http.IncomingMessage, token: string): boolean {
  const h = req.headers.authorization;
  if (h === undefined || !/^bearer /i.test(h)) return false;
  const digest = (v: string) => createHash("sha256").update(v).digest();
  return timingSafeEqual(digest(h.slice(7).trim()), digest(token));
}

const usagePeriods = new Set(["hour", "day", "month"]);

function json(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" }).end(`${JSON.stringify(body, null, 2)}\n`);
}

/** The admin HTTP listener: /metrics, /healthz, /readyz, /admin/usage. Loopback by default: it is not for callers. */
export interface AdminServer {
  readonly address: string;
  /** Its client connections: open, and refused by its caps. */
  readonly connections: ConnectionGate;
  close(): Promise<void>;
}

export async function startAdminServer(listen: string, sources: AdminSources, connections: ConnectionSettings): Promise<AdminServer> {
  const loopback = isLoopbackListen(listen);
  const server = http.createServer((req, res) => {
    const [path, query] = (req.url ?? "/").split("?", 2) as [string, string | undefined];
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD" }).end();
      return;
    }
    const token = sources.adminToken?.();
    if (token !== undefined && path !== "/healthz" && path !== "/readyz" && !isConsoleAsset(path) && !bearerMatches(req, token)) {
      res.writeHead(401, { "content-type": "text/plain", "www-authenticate": 'Bearer realm="infergate-admin"' }).end("admin token required\n");
      return;
    }
    // Without a token, a loopback listener answers what it holds (all but the probes and the
    // console's static files) only to a loopback Host: a page of another name rebound to
    // 127.0.0.1 (DNS rebinding) sends its own name. Scrapers of 127.0.0.1:port send a loopback one.
    if (token === undefined && loopback && path !== "/healthz" && path !== "/readyz" && !isConsoleAsset(path) && !isLoopbackHost(req.headers.host)) {
      res.writeHead(403, { "content-type": "text/plain" }).end(loopbackHostRefusal);
      return;
    }
    if (path === "/admin/usage") {
      const usage = sources.usage?.();
      if (usage === undefined) {
        res.writeHead(404, { "content-type": "text/plain" }).end("budgets are not configured\n");
      } else if (token === undefined && !loopback) {
        res.writeHead(403, { "content-type": "text/plain" }).end("set server.adminToken to read /admin/usage on a non-loopback adminListen\n");
      } else {
        const period = new URLSearchParams(query ?? "").get("period") ?? undefined;
        if (period !== undefined && !usagePeriods.has(period)) {
          res.writeHead(400, { "content-type": "text/plain" }).end("period: one of hour, day, month\n");
          return;
        }
        usage(period).then(
          (body) => json(res, 200, body),
          () => res.writeHead(503, { "content-type": "text/plain" }).end("the budget store is unavailable\n"),
        );
      }
    } else if (sources.console !== undefined && isConsolePath(path)) {
      if (token === undefined && !loopback) {
        res.writeHead(403, { "content-type": "text/plain" }).end("set server.adminToken to use the console on a non-loopback adminListen\n");
      } else {
        handleConsole(req, res, path, query, sources.console, token !== undefined);
      }
    } else if (path === "/healthz") {
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
