import { readFile } from "node:fs/promises";
import type * as http from "node:http";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import type { Registry } from "prom-client";
import type { Config } from "../config/schema.js";
import type { ModelRoute } from "../core/model-route.js";
import { codeName } from "../observability/metrics.js";
import { BreakerState, ModelState } from "../../gen/infergate/v1/inference_service_pb.js";
import { type CallFilter, type CallRing, type RecentCall, recentCallsMax } from "./console-calls.js";
import { redactConfig } from "./console-config.js";
import { createTrafficSampler } from "./console-traffic.js";

/** The window of the recent error ratios of GET /admin/models. */
export const recentWindowMs = 60_000;

/** The result of the last configuration reload (SIGHUP), for GET /admin/config. */
export interface ReloadResult {
  /** Milliseconds since the epoch. */
  readonly at: number;
  /** Applied, or rejected with the running configuration kept (the log line says why). */
  readonly applied: boolean;
}

/** What the console's admin endpoints read (docs/console.md). */
export interface ConsoleSources {
  readonly registry: Registry;
  /** The routes of the running configuration: models, their upstreams and breakers. */
  readonly routes: () => readonly ModelRoute[];
  /** The last finished calls (the call recorder feeds it). */
  readonly calls: CallRing;
  /** The running configuration, when it was loaded, and the last reload's result. */
  readonly config: () => { readonly config: Config; readonly loadedAt: number; readonly lastReload: ReloadResult | undefined };
  /** The HTTP listener the playground calls: its port (undefined until it listens) and whether it speaks TLS. */
  readonly http: () => { readonly port: number | undefined; readonly tls: boolean };
  /** The folder of the built console (default: dist/console, built by `npm run build`). */
  readonly dir?: string | undefined;
  /** GET /admin/traffic's default interval between points (default 1000 ms). */
  readonly trafficIntervalMs?: number | undefined;
}

/** The JSON endpoints of the console under /admin/ (GET /admin/usage is admin-server.ts's). */
const consoleEndpoints = new Set(["/admin/info", "/admin/models", "/admin/calls", "/admin/config", "/admin/traffic"]);

/** Whether `path` is the console's: its static files or one of its JSON endpoints. */
export function isConsolePath(p: string): boolean {
  return isConsoleAsset(p) || consoleEndpoints.has(p);
}

/** Whether `path` is one of the console's static files (served without the admin token: they hold no data). */
export function isConsoleAsset(p: string): boolean {
  return p === "/console" || p.startsWith("/console/");
}

/**
 * The built console: dist/console next to the compiled server (dist/src/server → dist/console),
 * or the repository's dist/console when the server runs from its TypeScript source (tests).
 */
function defaultDir(): string {
  const here = fileURLToPath(import.meta.url);
  return here.endsWith(".ts") ? fileURLToPath(new URL("../../dist/console/", import.meta.url)) : fileURLToPath(new URL("../../console/", import.meta.url));
}

const contentTypes: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".map": "application/json",
  ".svg": "image/svg+xml",
};

const maxFilterChars = 256;
/** The gRPC code names (OK, UNAVAILABLE, …) a status filter may name. */
const statusNames = new Set(["ok", "error", ...Array.from({ length: 17 }, (_, code) => codeName(code))]);

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" }).end(`${JSON.stringify(body, null, 2)}\n`);
}

function badRequest(res: http.ServerResponse, message: string): void {
  res.writeHead(400, { "content-type": "text/plain" }).end(`${message}\n`);
}

/** The longest host name taken from a Host header (a DNS name's limit): a longer one is copied into no answer. */
export const hostNameMaxChars = 253;

/**
 * The host of a Host header (or an HTTP/2 :authority) without its port, `[…]` kept around an
 * IPv6 address; undefined when there is none or it is longer than hostNameMaxChars.
 */
export function authorityHost(authority: string | undefined): string | undefined {
  if (authority === undefined) return undefined;
  const host = authority.startsWith("[") ? authority.slice(0, authority.indexOf("]") + 1) : authority.replace(/:\d+$/, "");
  return host === "" || host.length > hostNameMaxChars ? undefined : host;
}

/** A Host header that names this machine's loopback: what a page of a DNS-rebound name does not send. */
export function isLoopbackHost(host: string | undefined): boolean {
  const h = authorityHost(host)?.toLowerCase();
  if (h === undefined) return false;
  const name = h.startsWith("[") ? h.slice(1, -1) : h;
  return name === "localhost" || name === "::1" || /^127\.\d+\.\d+\.\d+$/.test(name);
}

/** The answer (403) of a token-less loopback admin listener to a request whose Host is not a loopback name (admin-server.ts). */
export const loopbackHostRefusal = "without server.adminToken the admin listener answers only on a loopback host name (127.0.0.1, localhost, [::1])\n";

/** The error ratio of `calls`, null without any. */
function errorRatio(calls: readonly RecentCall[]): number | null {
  return calls.length === 0 ? null : calls.filter((c) => c.status !== "OK").length / calls.length;
}

/** GET /admin/models: every model, its upstream's state per endpoint, and its recent calls' error ratio. */
export function modelsView(routes: readonly ModelRoute[], recent: readonly RecentCall[]): unknown {
  return {
    windowS: recentWindowMs / 1000,
    models: routes.map((r) => {
      const mine = recent.filter((c) => c.model === r.name);
      return {
        name: r.name,
        version: r.version,
        kind: r.upstream.kind,
        upstream: r.upstream.name,
        capabilities: r.capabilities,
        state: ModelState[r.upstream.modelState?.(r.upstreamModel) ?? ModelState.UNSPECIFIED],
        fallbacks: r.fallbacks.map((f) => f.name),
        recentCalls: mine.length,
        recentErrorRatio: errorRatio(mine),
        endpoints: (r.upstream.endpointStatus?.(r.upstreamModel) ?? []).map((e) => {
          // The calls that reached it: an attempt was made there (a call failed fast by an open
          // breaker made none). In-process upstreams have one endpoint, "", and record none.
          const served = mine.filter((c) => c.attempts > 0 && (c.endpoint ?? "") === e.endpoint);
          return {
            endpoint: e.endpoint,
            breaker: BreakerState[e.state],
            ejected: e.ejected,
            weight: e.weight,
            inFlight: e.inFlight,
            recentCalls: served.length,
            recentErrorRatio: errorRatio(served),
          };
        }),
      };
    }),
  };
}

/** The filter of GET /admin/calls from its query, or the message naming the bad parameter. */
export function callFilter(query: URLSearchParams): CallFilter | string {
  const filter: { model?: string; caller?: string; status?: string; limit?: number } = {};
  for (const k of ["model", "caller", "status"] as const) {
    const v = query.get(k);
    if (v === null || v === "") continue;
    if (v.length > maxFilterChars) return `${k}: at most ${maxFilterChars} characters`;
    filter[k] = v;
  }
  if (filter.status !== undefined && !statusNames.has(filter.status)) return "status: ok, error or a gRPC code name such as UNAVAILABLE";
  const limit = query.get("limit");
  if (limit !== null && limit !== "") {
    const n = Number(limit);
    if (!Number.isInteger(n) || n < 1 || n > recentCallsMax) return `limit: a whole number from 1 to ${recentCallsMax}`;
    filter.limit = n;
  }
  return filter;
}

/**
 * Answers a console path (see isConsolePath); admin-server.ts has already checked the admin
 * token and the loopback rules: without a token, the listener is a loopback one and the JSON
 * endpoints answer only requests whose Host is a loopback name, so that a page on another name
 * rebound to 127.0.0.1 reads nothing.
 */
export function handleConsole(req: http.IncomingMessage, res: http.ServerResponse, p: string, query: string | undefined, sources: ConsoleSources, tokenSet: boolean): void {
  if (isConsoleAsset(p)) {
    void serveAsset(req, res, p, sources);
    return;
  }
  const params = new URLSearchParams(query ?? "");
  switch (p) {
    case "/admin/info": {
      const h = sources.http();
      sendJson(res, 200, { httpPort: h.port ?? null, httpTls: h.tls, adminToken: tokenSet });
      return;
    }
    case "/admin/models":
      sendJson(res, 200, modelsView(sources.routes(), sources.calls.since(Date.now() - recentWindowMs)));
      return;
    case "/admin/calls": {
      const filter = callFilter(params);
      if (typeof filter === "string") badRequest(res, filter);
      else sendJson(res, 200, { calls: filter.limit === undefined ? sources.calls.list({ ...filter, limit: 100 }) : sources.calls.list(filter) });
      return;
    }
    case "/admin/config": {
      const { config, loadedAt, lastReload } = sources.config();
      sendJson(res, 200, {
        loadedAt: new Date(loadedAt).toISOString(),
        lastReload: lastReload === undefined ? null : { at: new Date(lastReload.at).toISOString(), result: lastReload.applied ? "applied" : "rejected" },
        config: redactConfig(config),
      });
      return;
    }
    case "/admin/traffic":
      streamTraffic(req, res, params, sources);
      return;
  }
}

/** At most this many GET /admin/traffic streams at once per admin listener (each holds one of its connections: admin-server.ts's caps); beyond, 503. */
export const trafficStreamsMax = 8;
/** A stream with more unsent bytes than this (a client that stopped reading) skips ticks. */
export const trafficBufferMaxBytes = 1024 * 1024;
/** A stream that skipped this many ticks in a row is closed, and its place freed. */
export const trafficStalledTicksMax = 30;

/** One open GET /admin/traffic stream. */
interface TrafficStream {
  readonly res: http.ServerResponse;
  /** Ticks that came while it was open: written or skipped. */
  ticks: number;
  /** Ticks skipped because its unsent bytes exceeded trafficBufferMaxBytes; in a row. */
  skippedInARow: number;
  skipped: number;
}

/** The streams of one interval: one sampler and one timer, each tick's events built once and written to each. */
interface TrafficTicker {
  readonly streams: Set<TrafficStream>;
  readonly timer: NodeJS.Timeout;
}

/** The traffic streams of one admin listener (its ConsoleSources). */
interface TrafficStreams {
  open: number;
  readonly tickers: Map<number, TrafficTicker>;
}

const trafficStreamsBySources = new WeakMap<ConsoleSources, TrafficStreams>();

function trafficStreamsOf(sources: ConsoleSources): TrafficStreams {
  let t = trafficStreamsBySources.get(sources);
  if (t === undefined) trafficStreamsBySources.set(sources, (t = { open: 0, tickers: new Map() }));
  return t;
}

/** What the GET /admin/traffic streams of `sources` are doing (tests read it): each stream's ticks, skipped ticks and unsent bytes. */
export function trafficStreamStats(sources: ConsoleSources): { open: number; streams: { ticks: number; skipped: number; unsentBytes: number }[] } {
  const t = trafficStreamsOf(sources);
  const streams = [...t.tickers.values()].flatMap((k) => [...k.streams].map((s) => ({ ticks: s.ticks, skipped: s.skipped, unsentBytes: s.res.writableLength })));
  return { open: t.open, streams };
}

const sseEvent = (event: string, data: unknown) => `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;

const modelsEvent = (sources: ConsoleSources) => sseEvent("models", modelsView(sources.routes(), sources.calls.since(Date.now() - recentWindowMs)));

/** Writes one tick's `chunk` to `s`, unless it holds too many unsent bytes already (then closes it once it has for too long). */
function deliver(s: TrafficStream, chunk: string): void {
  if (s.res.destroyed) return;
  s.ticks++;
  if (s.res.writableLength > trafficBufferMaxBytes) {
    s.skipped++;
    if (++s.skippedInARow >= trafficStalledTicksMax) s.res.destroy();
    return;
  }
  s.skippedInARow = 0;
  s.res.write(chunk);
}

function startTicker(sources: ConsoleSources, streams: TrafficStreams, intervalMs: number): TrafficTicker {
  const sampler = createTrafficSampler(sources.registry);
  const members = new Set<TrafficStream>();
  let busy = false;
  const tick = async () => {
    if (busy) return;
    busy = true;
    try {
      const point = await sampler.next();
      if (members.size === 0) return;
      const chunk = (point === undefined ? "" : sseEvent("traffic", point)) + modelsEvent(sources);
      for (const s of members) deliver(s, chunk);
    } catch {
      // A metric that could not be read: the next tick tries again.
    } finally {
      busy = false;
    }
  };
  const ticker = { streams: members, timer: setInterval(() => void tick(), intervalMs) };
  streams.tickers.set(intervalMs, ticker);
  // The first reading is the baseline: it sends the models only.
  void tick();
  return ticker;
}

/**
 * GET /admin/traffic: server-sent events, one `traffic` event per interval (`?intervalMs=`, 250
 * to 60000, default 1000) with a TrafficPoint (console-traffic.ts), and one `models` event with
 * GET /admin/models's body, until the client goes. The streams of one interval share one sampler
 * and each tick's events; at most trafficStreamsMax at once; a stream whose client does not read
 * skips ticks while over trafficBufferMaxBytes unsent, and is closed after trafficStalledTicksMax.
 */
function streamTraffic(req: http.IncomingMessage, res: http.ServerResponse, params: URLSearchParams, sources: ConsoleSources): void {
  const raw = params.get("intervalMs");
  const intervalMs = raw === null || raw === "" ? (sources.trafficIntervalMs ?? 1000) : Number(raw);
  if (!Number.isInteger(intervalMs) || intervalMs < 250 || intervalMs > 60_000) {
    badRequest(res, "intervalMs: a whole number from 250 to 60000");
    return;
  }
  const streams = trafficStreamsOf(sources);
  if (streams.open >= trafficStreamsMax) {
    res.writeHead(503, { "content-type": "application/json", "cache-control": "no-store", "retry-after": "10" });
    res.end(`${JSON.stringify({ error: `at most ${trafficStreamsMax} GET /admin/traffic streams at once: close one (another console tab?) or retry later` })}\n`);
    return;
  }
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store", "x-accel-buffering": "no" });
  // HEAD: the headers only, and the connection is free for its next request; no stream, no ticks.
  if (req.method === "HEAD") {
    res.end();
    return;
  }
  streams.open++;
  const stream: TrafficStream = { res, ticks: 0, skippedInARow: 0, skipped: 0 };
  const existing = streams.tickers.get(intervalMs);
  // A new ticker's first tick sends the models; a stream joining a running one gets them now.
  if (existing !== undefined) res.write(modelsEvent(sources));
  const ticker = existing ?? startTicker(sources, streams, intervalMs);
  ticker.streams.add(stream);
  let closed = false;
  const stop = () => {
    if (closed) return;
    closed = true;
    streams.open--;
    ticker.streams.delete(stream);
    if (ticker.streams.size === 0) {
      clearInterval(ticker.timer);
      if (streams.tickers.get(intervalMs) === ticker) streams.tickers.delete(intervalMs);
    }
  };
  req.once("close", stop);
  res.once("close", stop);
}

async function serveAsset(req: http.IncomingMessage, res: http.ServerResponse, p: string, sources: ConsoleSources): Promise<void> {
  if (p === "/console") {
    res.writeHead(308, { location: "/console/" }).end();
    return;
  }
  const rel = p === "/console/" ? "index.html" : decodeURIComponentSafe(p.slice("/console/".length));
  const dir = sources.dir ?? defaultDir();
  const file = rel === undefined ? undefined : path.resolve(dir, rel);
  const type = file === undefined ? undefined : contentTypes[path.extname(file)];
  if (file === undefined || type === undefined || !file.startsWith(path.resolve(dir) + path.sep)) {
    res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
    return;
  }
  let body: Buffer;
  try {
    body = await readFile(file);
  } catch {
    res.writeHead(404, { "content-type": "text/plain" }).end(rel === "index.html" ? "the console is not built: run make build\n" : "not found\n");
    return;
  }
  const h = sources.http();
  // The host the browser used, when it is a plain name or address of at most hostNameMaxChars.
  const name = authorityHost(req.headers.host);
  const host = name !== undefined && /^[A-Za-z0-9.-]+$|^\[[0-9A-Fa-f:.]+\]$/.test(name) ? name : "127.0.0.1";
  const api = h.port === undefined ? "" : ` ${h.tls ? "https" : "http"}://${host}:${h.port}`;
  res.writeHead(200, {
    "content-type": type,
    "cache-control": "no-cache",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    // The page talks to this listener and to the HTTP listener (the playground), nothing else.
    "content-security-policy": `default-src 'self'; connect-src 'self'${api}; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
  });
  res.end(req.method === "HEAD" ? undefined : body);
}

function decodeURIComponentSafe(s: string): string | undefined {
  try {
    return decodeURIComponent(s);
  } catch {
    return undefined;
  }
}
