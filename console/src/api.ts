/**
 * The console's side of the admin endpoints (docs/console.md): JSON GETs and the traffic stream,
 * each with the admin token when one was typed (held in this module's memory only: never stored,
 * gone with the page).
 */
import type { TrafficPoint } from "../../src/server/console-traffic.js";

/** One `traffic` event of GET /admin/traffic: the server's own type (a type only: nothing of the server is bundled). */
export type { TrafficPoint };

let adminToken: string | undefined;

export function setAdminToken(token: string | undefined): void {
  adminToken = token === "" ? undefined : token;
}

/** A refusal of the admin listener (401: the token is missing or wrong). */
export class AdminError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function headers(): HeadersInit {
  return adminToken === undefined ? {} : { authorization: `Bearer ${adminToken}` };
}

export async function getJson<T>(path: string): Promise<T> {
  const res = await fetch(path, { headers: headers(), cache: "no-store" });
  if (!res.ok) throw new AdminError(res.status, (await res.text()).trim() || `HTTP ${res.status}`);
  return (await res.json()) as T;
}

/** GET /admin/info. */
export interface Info {
  readonly httpPort: number | null;
  readonly httpTls: boolean;
  readonly adminToken: boolean;
}

export interface EndpointView {
  readonly endpoint: string;
  readonly breaker: string;
  readonly ejected: boolean;
  readonly weight: number;
  readonly inFlight: number;
  readonly recentCalls: number;
  readonly recentErrorRatio: number | null;
}

export interface ModelView {
  readonly name: string;
  readonly version: string;
  readonly kind: string;
  readonly upstream: string;
  readonly capabilities: readonly string[];
  readonly state: string;
  readonly fallbacks: readonly string[];
  readonly recentCalls: number;
  readonly recentErrorRatio: number | null;
  readonly endpoints: readonly EndpointView[];
}

/** GET /admin/models. */
export interface Models {
  readonly windowS: number;
  readonly models: readonly ModelView[];
}

/**
 * Follows GET /admin/traffic (server-sent events, read with fetch so that the token can go in a
 * header, which EventSource cannot send) until `signal` aborts; reconnects after a pause when the
 * stream ends or fails.
 */
export async function followTraffic(on: { traffic(p: TrafficPoint): void; models(m: Models): void; error(e: unknown): void }, signal: AbortSignal): Promise<void> {
  while (!signal.aborted) {
    try {
      const res = await fetch("/admin/traffic", { headers: headers(), signal, cache: "no-store" });
      if (!res.ok || res.body === null) throw new AdminError(res.status, (await res.text()).trim());
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffered = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffered += value;
        let end: number;
        while ((end = buffered.indexOf("\n\n")) >= 0) {
          const block = buffered.slice(0, end);
          buffered = buffered.slice(end + 2);
          const event = /^event: (.*)$/m.exec(block)?.[1];
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (data === undefined) continue;
          if (event === "traffic") on.traffic(JSON.parse(data) as TrafficPoint);
          else if (event === "models") on.models(JSON.parse(data) as Models);
        }
      }
    } catch (e) {
      if (signal.aborted) return;
      on.error(e);
      if (e instanceof AdminError && e.status === 401) return;
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
}
