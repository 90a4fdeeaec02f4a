import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import { Duplex } from "node:stream";
import type { ServerConfig } from "../config/schema.js";
import { applyHttp1Timeouts, type ConnectionGate, limitH2Session } from "./connection-limits.js";
import type { ServerTlsMaterial } from "./server-tls.js";

type Handler = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => void;

/** The HTTP listener: bound address, and a graceful then forced close. */
export interface HttpListener {
  /** Resolves with the bound port. */
  listen(host: string, port: number): Promise<number>;
  /** Stops accepting connections and asks open ones to finish (HTTP/2 GOAWAY, HTTP/1.1 close). */
  drain(): void;
  /** Closes every connection now. */
  destroy(): void;
  /** With TLS: new handshakes use `material` from now on; open connections keep theirs. */
  updateTls(material: ServerTlsMaterial): void;
}

/** The HTTP/2 client connection preface starts "PRI * HTTP/2.0"; no HTTP/1.1 method starts "PRI". */
const h2Preface = Buffer.from("PRI");

/**
 * One port for HTTP/1.1 and HTTP/2: with TLS, ALPN chooses; in cleartext the first bytes do (h2c
 * with prior knowledge, as gRPC and `buf curl --http2-prior-knowledge` use, or HTTP/1.1 as browsers
 * and curl use). Node's cleartext http2 server cannot fall back to HTTP/1.1 by itself. Either way
 * the port is a plain TCP server of ours, which admits each connection through `gate` (when
 * given) before handing it over, and `config.connections` bounds slow and idle ones.
 */
export function createHttpListener(
  handler: Handler,
  config: ServerConfig,
  tls?: ServerTlsMaterial,
  { firstBytesTimeoutMs = config.connections.headersTimeoutMs, gate }: { firstBytesTimeoutMs?: number; gate?: ConnectionGate } = {},
): HttpListener {
  const settings = { maxConcurrentStreams: config.maxConcurrentStreams };
  const limits = config.connections;
  const sessions = new Set<http2.Http2Session>();
  const onSession = (s: http2.ServerHttp2Session) => {
    track(sessions, s);
    limitH2Session(s, limits);
  };
  let h1: http.Server | undefined;
  let outer: net.Server;
  let secure: http2.Http2SecureServer | undefined;
  if (tls !== undefined) {
    const ca = tls.ca;
    const tlsServer = (secure = http2.createSecureServer(
      {
        key: tls.key,
        cert: tls.cert,
        ca,
        requestCert: ca !== undefined,
        rejectUnauthorized: ca !== undefined,
        allowHTTP1: true,
        settings,
        // A connection that has not finished its TLS handshake by then is closed (Node: 120 s).
        handshakeTimeout: firstBytesTimeoutMs,
      },
      handler,
    ));
    tlsServer.on("session", onSession);
    // HTTP/1.1 over TLS (allowHTTP1) is Node's HTTP/1.1 server code, with its timeouts.
    applyHttp1Timeouts(tlsServer, limits, true);
    outer = net.createServer((socket) => {
      if (gate !== undefined && !gate.admit(socket)) return;
      tlsServer.emit("connection", socket);
    });
  } else {
    const h2 = http2.createServer({ settings }, handler);
    h2.on("session", onSession);
    const h1Server = http.createServer(handler);
    applyHttp1Timeouts(h1Server, limits, true);
    h1 = h1Server;
    outer = net.createServer((socket) => {
      if (gate !== undefined && !gate.admit(socket)) return;
      // Until its first bytes say which protocol it speaks, a connection is ours alone: neither
      // HTTP server's timeouts apply yet, so one that never sends anything would hold its socket
      // (and a file descriptor) for good.
      const silent = () => socket.destroy();
      socket.setTimeout(firstBytesTimeoutMs);
      socket.once("timeout", silent);
      let seen = Buffer.alloc(0);
      const onData = (chunk: Buffer) => {
        seen = Buffer.concat([seen, chunk]);
        if (seen.length < h2Preface.length && h2Preface.subarray(0, seen.length).equals(seen)) {
          return;
        }
        socket.off("data", onData);
        socket.setTimeout(0);
        socket.off("timeout", silent);
        if (seen.subarray(0, h2Preface.length).equals(h2Preface)) {
          // Node's http2 reads a net.Socket through its native handle and would miss bytes that
          // were already read here; a JS stream that replays them first is read as a stream.
          h2.emit("connection", replayingStream(socket, seen));
        } else {
          socket.pause();
          socket.unshift(seen);
          h1Server.emit("connection", socket);
          socket.resume();
        }
      };
      socket.on("data", onData);
      socket.on("error", () => socket.destroy());
    });
  }
  const sockets = new Set<net.Socket>();
  outer.on("connection", (socket: net.Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });
  return {
    listen: (host, port) =>
      new Promise((resolve, reject) => {
        outer.once("error", reject);
        outer.listen({ host: host.replace(/^\[|\]$/g, ""), port }, () => {
          outer.off("error", reject);
          resolve((outer.address() as net.AddressInfo).port);
        });
      }),
    drain() {
      outer.close();
      for (const s of sessions) {
        s.close();
      }
      h1?.close();
      h1?.closeIdleConnections();
      // Stops its HTTP/1.1 timeout checks; it never listened, so nothing else changes.
      secure?.close();
    },
    updateTls(material) {
      if (secure !== undefined) {
        // The whole context is replaced, so a CA left out would stop verifying client certificates.
        secure.setSecureContext({ key: material.key, cert: material.cert, ...(material.ca === undefined ? {} : { ca: material.ca }) });
      }
    },
    destroy() {
      for (const s of sessions) {
        s.destroy();
      }
      for (const socket of sockets) {
        socket.destroy();
      }
    },
  };
}

function track(sessions: Set<http2.Http2Session>, s: http2.Http2Session): void {
  sessions.add(s);
  s.once("close", () => sessions.delete(s));
}

/** A duplex over `socket` that first yields `head` (bytes already read from it), then the rest. */
function replayingStream(socket: net.Socket, head: Buffer): Duplex {
  const duplex = new Duplex({
    read() {
      socket.resume();
    },
    write(chunk: Buffer, _encoding, callback) {
      socket.write(chunk, callback);
    },
    final(callback) {
      socket.end(callback);
    },
    destroy(err, callback) {
      socket.destroy(err ?? undefined);
      callback(err);
    },
  });
  duplex.push(head);
  socket.on("data", (chunk: Buffer) => {
    if (!duplex.push(chunk)) {
      socket.pause();
    }
  });
  socket.once("end", () => duplex.push(null));
  socket.once("close", () => duplex.destroy());
  socket.once("error", (err) => duplex.destroy(err));
  return duplex;
}
