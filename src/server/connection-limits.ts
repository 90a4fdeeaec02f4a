import { readFileSync } from "node:fs";
import type * as http from "node:http";
import * as http2 from "node:http2";
import type * as net from "node:net";
import type { ServerConfig } from "../config/schema.js";

/** `server.connections`: timeouts and caps of client connections (src/config/schema.ts). */
export type ConnectionSettings = ServerConfig["connections"];

/** Open connections by client address, and those refused for being beyond a cap. */
export interface ConnectionGate {
  /**
   * Counts `socket` until it closes and returns true; or, when the listeners already hold `max`
   * connections or its client `maxPerIp`, resets it at once and returns false.
   */
  admit(socket: net.Socket): boolean;
  readonly open: number;
  readonly refused: number;
}

/** One gate for the listeners it is given to: their connections count together. */
export function createConnectionGate(max: number, maxPerIp: number): ConnectionGate {
  const byClient = new Map<string, number>();
  let open = 0;
  let refused = 0;
  return {
    admit(socket) {
      const client = clientKey(socket.remoteAddress);
      const fromClient = byClient.get(client) ?? 0;
      if (open >= max || fromClient >= maxPerIp) {
        refused++;
        // An RST: the client learns at once, and no TIME_WAIT is left here.
        socket.on("error", () => {});
        socket.resetAndDestroy();
        return false;
      }
      open++;
      byClient.set(client, fromClient + 1);
      socket.once("close", () => {
        open--;
        const left = (byClient.get(client) ?? 1) - 1;
        if (left === 0) byClient.delete(client);
        else byClient.set(client, left);
      });
      return true;
    },
    get open() {
      return open;
    },
    get refused() {
      return refused;
    },
  };
}

/**
 * Whom a connection is counted against: an IPv4 address (IPv4-mapped IPv6 included) as it is, an
 * IPv6 address by its /64, the block one host (or one customer of a provider) gets.
 */
export function clientKey(address: string | undefined): string {
  if (address === undefined) return "";
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped !== null) return mapped[1]!;
  if (!address.includes(":")) return address;
  const [head = "", tail] = address.toLowerCase().split("::");
  const front = head === "" ? [] : head.split(":");
  const back = tail === undefined || tail === "" ? [] : tail.split(":");
  const groups = tail === undefined ? front : [...front, ...Array<string>(Math.max(0, 8 - front.length - back.length)).fill("0"), ...back];
  return `${groups
    .slice(0, 4)
    .map((g) => g.replace(/^0+(?=.)/, ""))
    .join(":")}::/64`;
}

/**
 * Node's HTTP/1.1 timeouts on `server`: headers and whole request (a 408 and a close, checked by
 * an interval, at most a quarter of the shorter timeout and at most 1 s apart), and the wait for
 * the next request on a kept-alive connection. Node runs those checks only on a server that emits
 * 'listening'; a server handed its sockets by another one never does, so `handedSockets` emits it
 * (test/e2e/slow-clients.test.ts shows the checks running).
 */
export function applyHttp1Timeouts(server: http.Server | http2.Http2SecureServer, c: ConnectionSettings, handedSockets: boolean): void {
  const s = server as http.Server;
  s.requestTimeout = c.requestTimeoutMs;
  // Node refuses a headers timeout longer than the request timeout.
  s.headersTimeout = Math.min(c.headersTimeoutMs, c.requestTimeoutMs);
  s.keepAliveTimeout = c.keepAliveTimeoutMs;
  // A createServer option that Node keeps as a property and reads when the checks start.
  (s as { connectionsCheckingInterval?: number }).connectionsCheckingInterval = Math.max(1, Math.min(1000, Math.floor(s.headersTimeout / 4)));
  if (handedSockets) s.emit("listening");
}

/**
 * Closes an HTTP/2 session of the HTTP listener once it has had no stream open for
 * `idleTimeoutMs` (a GOAWAY, as grpc-js does for 'grpc.max_connection_idle_ms'), whatever else the
 * client sends (PINGs, SETTINGS, a header block it never finishes); and closes a stream whose
 * request body has not ended `requestTimeoutMs` after its HEADERS (RST_STREAM CANCEL).
 */
export function limitH2Session(session: http2.ServerHttp2Session, c: ConnectionSettings): void {
  let streams = 0;
  // One timer per session, restarted (refresh) when the last stream closes: when it fires with no
  // stream open, the session has had none for the whole period by the timer's own clock. (Checked
  // against Date.now() instead, as grpc-js does, a timer that fires a millisecond early costs a
  // whole period more: measured, about a tenth of the sessions closed at twice the timeout.)
  const idle = setTimeout(() => {
    if (streams > 0 || session.closed || session.destroyed) return;
    session.close();
    // A GOAWAY'd session with no stream open is destroyed by Node once its output is written,
    // except when the client has a header block open (HEADERS without END_HEADERS, no
    // CONTINUATION): that one would stay. Destroyed after the time its headers had.
    setTimeout(() => {
      if (streams === 0 && !session.destroyed) session.destroy();
    }, c.headersTimeoutMs).unref();
  }, c.idleTimeoutMs);
  idle.unref();
  session.once("close", () => clearTimeout(idle));
  session.on("stream", (stream: http2.ServerHttp2Stream) => {
    streams++;
    const request = stream.endAfterHeaders
      ? undefined
      : setTimeout(() => {
          if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_CANCEL);
        }, c.requestTimeoutMs).unref();
    if (request !== undefined) stream.once("end", () => clearTimeout(request));
    stream.once("close", () => {
      if (request !== undefined) clearTimeout(request);
      if (--streams === 0) idle.refresh();
    });
  });
}

/** The HTTP/2 client connection preface: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n". */
const h2PrefaceLength = 24;

/**
 * A connection handed to grpc-js is read by its HTTP/2 session natively (nothing here sees its
 * bytes): one that has not sent a whole preface (or, with TLS, that many bytes of its handshake)
 * `headersTimeoutMs` after accept is closed. Later silence is grpc-js's idle timeout's.
 */
export function closeIfSilent(socket: net.Socket, c: ConnectionSettings): void {
  const timer = setTimeout(() => {
    if (socket.bytesRead < h2PrefaceLength) socket.destroy();
  }, c.headersTimeoutMs).unref();
  socket.once("close", () => clearTimeout(timer));
}

/**
 * The process's open-file limit (Linux: /proc/self/limits, the soft limit, which Node raises to
 * the hard one at start), or undefined where that file is not.
 */
export function openFileLimit(): number | undefined {
  try {
    const line = readFileSync("/proc/self/limits", "utf8")
      .split("\n")
      .find((l) => l.startsWith("Max open files"));
    const soft = line?.split(/\s{2,}/)[1];
    return soft === undefined || soft === "unlimited" ? undefined : Number(soft);
  } catch {
    return undefined;
  }
}
