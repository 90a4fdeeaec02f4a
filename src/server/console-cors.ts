import type * as http from "node:http";
import type * as http2 from "node:http2";
import { cors } from "@connectrpc/connect";
import { cacheHeader } from "../gateway/steps/cache.js";
import { costHeader } from "../gateway/steps/call-record.js";
import { servedByHeader } from "../gateway/steps/provenance.js";
import { authorityHost } from "./console-api.js";

type Request = http.IncomingMessage | http2.Http2ServerRequest;
type Response = http.ServerResponse | http2.Http2ServerResponse;
type Handler = (req: Request, res: Response) => void;

/** The headers the playground sends beyond Connect's own: the API key. */
const allowedHeaders = [...cors.allowedHeaders, "Authorization", "X-Api-Key"].join(", ");
/** The headers the playground reads beyond Connect's own: where the answer came from, the cache, the cost. */
const exposedHeaders = [...cors.exposedHeaders, servedByHeader, cacheHeader, costHeader].join(", ");

/**
 * The console's origin as the browser names it: the admin listener (plain HTTP) on the host name
 * the browser used for this request too. Only that origin may call the HTTP listener from a
 * page (the console's playground: it is served by the admin listener, on another port, so its
 * calls are cross-origin); every other origin gets no CORS header and the browser keeps the
 * answer from its page.
 */
export function consoleOrigin(req: Request, adminPort: number | undefined): string | undefined {
  if (adminPort === undefined) return undefined;
  // None for a host longer than a DNS name (console-api.ts's authorityHost): it would be copied
  // into access-control-allow-origin.
  const host = authorityHost((req.headers[":authority"] as string | undefined) ?? req.headers.host);
  return host === undefined ? undefined : `http://${host}:${adminPort}`;
}

/**
 * The HTTP listener's handler with the CORS answers the Connect protocol needs for the console's
 * origin (see consoleOrigin): a preflight (OPTIONS) is answered here, and the answers to its
 * calls say the origin may read them. Requests from any other origin pass through untouched.
 */
export function withConsoleCors(handler: Handler, adminPort: () => number | undefined): Handler {
  return (req, res) => {
    const origin = req.headers.origin;
    if (origin === undefined || origin !== consoleOrigin(req, adminPort())) {
      handler(req, res);
      return;
    }
    res.setHeader("access-control-allow-origin", origin);
    res.setHeader("vary", "Origin");
    if (req.method === "OPTIONS") {
      res.setHeader("access-control-allow-methods", cors.allowedMethods.join(", "));
      res.setHeader("access-control-allow-headers", allowedHeaders);
      res.setHeader("access-control-max-age", "600");
      res.writeHead(204);
      res.end();
      return;
    }
    res.setHeader("access-control-expose-headers", exposedHeaders);
    handler(req, res);
  };
}
