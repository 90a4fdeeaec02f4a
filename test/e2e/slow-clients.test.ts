/**
 * Issue 17, defect 2: slow, idle and too many client connections. infergate runs with short
 * `server.connections` timeouts, and every connection below misbehaves and never closes by itself:
 * each test waits for the server to close it (the client never does), on the HTTP listener
 * (HTTP/1.1 and h2c behind the first-bytes sniffer), the admin listener and the gRPC listener,
 * then both API listeners with TLS. Then the caps: connections beyond `maxPerIp` or `max` are reset at once, other clients are
 * served meanwhile, and the refused client is served again once its other connections are gone.
 */
import * as http from "node:http";
import * as http2 from "node:http2";
import { readFileSync } from "node:fs";
import * as net from "node:net";
import * as tls from "node:tls";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { App } from "../../src/server/app.js";
import { createTestPki } from "../helpers/certs.js";
import { startInProcess } from "../helpers/servers.js";

const mockModels = `
upstreams:
  - name: mock
    kind: mock
models:
  - name: mock-chat
    upstream: mock
    capabilities: [chat, generate]
`;

/** How long a test waits for the server to act: many times each configured timeout. */
const serverActsWithinMs = 8_000;
/** The HTTP/2 client connection preface and an empty SETTINGS frame, as every client starts. */
const h2Start = Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]);

/** HEADERS on stream 1 without END_HEADERS (one literal field, x: a), whose CONTINUATION never comes. */
const unfinishedHeaders = Buffer.from([0, 0, 5, 1, 0x00, 0, 0, 0, 1, 0x00, 0x01, 0x78, 0x01, 0x61]);

/** A raw connection that never closes by itself: `closed` turns true only when the server closes it. */
interface Raw {
  readonly socket: net.Socket;
  closed: boolean;
  /** Everything the server sent, as latin1 text. */
  received: string;
  /** Resolves once it is connected. */
  readonly connected: Promise<void>;
}

const opened: net.Socket[] = [];

/**
 * A connection to `address` from `localAddress`; with `tlsAlpn`, a TLS one (to the PKI's CA)
 * offering those protocols, `connected` once its handshake is done.
 */
function raw(address: string, localAddress = "127.0.0.1", tlsAlpn?: { ca: Buffer; protocols: string[] }): Raw {
  const i = address.lastIndexOf(":");
  const to = { host: address.slice(0, i), port: Number(address.slice(i + 1)), localAddress };
  const socket =
    tlsAlpn === undefined ? net.connect(to) : tls.connect({ ...to, ca: tlsAlpn.ca, ALPNProtocols: tlsAlpn.protocols, servername: "localhost" });
  opened.push(socket);
  const r: Raw = {
    socket,
    closed: false,
    received: "",
    connected: new Promise((resolve) => {
      socket.once(tlsAlpn === undefined ? "connect" : "secureConnect", () => resolve());
      socket.once("close", () => resolve());
    }),
  };
  socket.on("data", (d: Buffer) => (r.received += d.toString("latin1")));
  socket.on("error", () => {});
  socket.on("close", () => (r.closed = true));
  return r;
}

/**
 * Writes `bytes` one at a time, `everyMs` apart, until they are all written or the connection is
 * closed; resolves with how many were written.
 */
async function drip(r: Raw, bytes: Buffer, everyMs: number): Promise<number> {
  let sent = 0;
  while (sent < bytes.length && !r.closed) {
    r.socket.write(bytes.subarray(sent, sent + 1));
    sent++;
    await sleep(everyMs);
  }
  return sent;
}

async function expectAllClosedByServer(conns: Raw[]): Promise<void> {
  await expect.poll(() => conns.filter((c) => !c.closed).length, { timeout: serverActsWithinMs, interval: 50 }).toBe(0);
}

/** Opens `n` connections to `address`, writes `bytes` on each, and waits until the server has closed them all. */
async function expectClosedAfterSending(address: string, n: number, bytes: Buffer): Promise<void> {
  const conns = Array.from({ length: n }, () => raw(address));
  await Promise.all(conns.map((c) => c.connected));
  for (const c of conns) if (bytes.length > 0) c.socket.write(bytes);
  await expectAllClosedByServer(conns);
}

afterAll(() => {
  for (const s of opened) s.destroy();
});

/** `GET path` over HTTP/1.1 on a fresh connection from `localAddress`: the status, or the error's code. */
function httpGet(address: string, path: string, localAddress = "127.0.0.1"): Promise<number | string> {
  const i = address.lastIndexOf(":");
  return new Promise((resolve) => {
    http
      .get({ host: address.slice(0, i), port: Number(address.slice(i + 1)), path, localAddress, agent: false }, (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
      })
      .on("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

/** `GET path` over HTTP/1.1 from `localAddress`: the body. */
function httpText(address: string, path: string, localAddress: string): Promise<string> {
  const i = address.lastIndexOf(":");
  return new Promise((resolve, reject) => {
    http
      .get({ host: address.slice(0, i), port: Number(address.slice(i + 1)), path, localAddress, agent: false }, (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => (text += d));
        res.on("end", () => resolve(text));
      })
      .on("error", reject);
  });
}

/** grpc.health.v1.Health/Check over a fresh HTTP/2 connection from `localAddress`: grpc-status, or the error's code. */
function grpcHealth(address: string, localAddress = "127.0.0.1"): Promise<string> {
  const i = address.lastIndexOf(":");
  return new Promise((resolve) => {
    const session = http2.connect(`http://${address}`, {
      createConnection: () => net.connect({ host: address.slice(0, i), port: Number(address.slice(i + 1)), localAddress }),
    });
    const done = (v: string) => {
      session.destroy();
      resolve(v);
    };
    session.on("error", (err: NodeJS.ErrnoException) => done(err.code ?? err.message));
    const req = session.request({ ":method": "POST", ":path": "/grpc.health.v1.Health/Check", "content-type": "application/grpc", te: "trailers" });
    req.on("trailers", (t) => done(String(t["grpc-status"])));
    req.on("error", (err: NodeJS.ErrnoException) => done(err.code ?? err.message));
    req.on("close", () => done(`closed ${req.rstCode}`));
    req.resume();
    // An empty HealthCheckRequest: not compressed, length 0.
    req.end(Buffer.alloc(5));
  });
}

describe("slow and idle connections are closed by the server", () => {
  let app: App;
  beforeAll(async () => {
    app = await startInProcess(`
server:
  maxTimeoutMs: 1500
  connections:
    headersTimeoutMs: 400
    requestTimeoutMs: 800
    keepAliveTimeoutMs: 400
    idleTimeoutMs: 600
    maxAgeMs: 800
${mockModels}`);
  });
  afterAll(async () => {
    await app.shutdown();
  });

  // The headers never end: an X-Pad header one byte at a time, for far longer than any timeout.
  const dripHeaders = Buffer.from(`GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Pad: ${"a".repeat(400)}`);
  // The body is shorter than its Content-Length, and what there is comes one byte at a time.
  const shortBody = (path: string) =>
    Buffer.from(`POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"model": "mock-chat",${" ".repeat(400)}`);

  for (const listener of ["http", "admin"] as const) {
    const address = () => (listener === "http" ? app.httpAddress : app.adminAddress);

    it(`${listener}: HTTP/1.1 headers dripped a byte at a time are cut (408) however active the connection`, async () => {
      const conns = Array.from({ length: 20 }, () => raw(address()));
      await Promise.all(conns.map((c) => c.connected));
      const sent = await Promise.all(conns.map((c) => drip(c, dripHeaders, 20)));
      await expectAllClosedByServer(conns);
      // Closed while the client was still sending its headers, with an answer that says why.
      for (const n of sent) expect(n).toBeLessThan(dripHeaders.length);
      for (const c of conns) expect(c.received).toMatch(/^HTTP\/1\.1 408 /);
    });

    it(`${listener}: an HTTP/1.1 body shorter than its Content-Length, dripped, is cut`, async () => {
      const body = shortBody(listener === "http" ? "/v1/chat/completions" : "/healthz");
      const conns = Array.from({ length: 20 }, () => raw(address()));
      await Promise.all(conns.map((c) => c.connected));
      const sent = await Promise.all(conns.map((c) => drip(c, body, 20)));
      await expectAllClosedByServer(conns);
      for (const n of sent) expect(n).toBeLessThan(body.length);
    });

    it(`${listener}: a connection that sends nothing is closed`, async () => {
      await expectClosedAfterSending(address(), 20, Buffer.alloc(0));
    });
  }

  it("http: on a kept-alive connection, the next request's headers dripped are cut too", async () => {
    const conns = Array.from({ length: 10 }, () => raw(app.httpAddress));
    await Promise.all(conns.map((c) => c.connected));
    for (const c of conns) c.socket.write("GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n");
    await expect.poll(() => conns.filter((c) => /^HTTP\/1\.1 200 /.test(c.received)).length, { timeout: serverActsWithinMs }).toBe(10);
    const sent = await Promise.all(conns.map((c) => drip(c, dripHeaders, 20)));
    await expectAllClosedByServer(conns);
    for (const n of sent) expect(n).toBeLessThan(dripHeaders.length);
  });

  for (const [listener, address] of [
    ["http (h2c)", () => app.httpAddress],
    ["grpc", () => app.grpcAddress],
  ] as const) {
    it(`${listener}: the HTTP/2 preface, then silence, is closed (GOAWAY)`, async () => {
      await expectClosedAfterSending(address(), 20, h2Start);
    });

    // gRPC: grpc-js's GOAWAY at idleTimeoutMs leaves such a connection open; maxAgeMs and its
    // grace (maxTimeoutMs) close it.
    it(`${listener}: a header block never finished (CONTINUATION never sent) is closed`, async () => {
      await expectClosedAfterSending(address(), 10, Buffer.concat([h2Start, unfinishedHeaders]));
    });
  }

  it("http (h2c): a request whose body never ends is reset, then its idle connection closed", async () => {
    const session = http2.connect(`http://${app.httpAddress}`);
    session.on("error", () => {});
    let sessionClosed = false;
    session.on("close", () => (sessionClosed = true));
    const req = session.request({ ":method": "POST", ":path": "/v1/chat/completions", "content-type": "application/json", "content-length": "1000" });
    req.on("error", () => {});
    req.resume();
    let streamClosed = false;
    req.on("close", () => (streamClosed = true));
    req.write('{"model": "mock-chat",');
    await expect.poll(() => streamClosed, { timeout: serverActsWithinMs }).toBe(true);
    expect(req.rstCode).toBe(http2.constants.NGHTTP2_CANCEL);
    await expect.poll(() => sessionClosed, { timeout: serverActsWithinMs }).toBe(true);
  });

  it("grpc: a connection that sends nothing, or part of the preface, is closed", async () => {
    await Promise.all([expectClosedAfterSending(app.grpcAddress, 10, Buffer.alloc(0)), expectClosedAfterSending(app.grpcAddress, 10, h2Start.subarray(0, 10))]);
  });

  it("grpc: a call whose request never ends is cut once its connection is old enough", async () => {
    const session = http2.connect(`http://${app.grpcAddress}`);
    session.on("error", () => {});
    let sessionClosed = false;
    session.on("close", () => (sessionClosed = true));
    const req = session.request({ ":method": "POST", ":path": "/infergate.v1.InferenceService/Chat", "content-type": "application/grpc", te: "trailers" });
    req.on("error", () => {});
    req.resume();
    // A message prefix announcing 1000 bytes, and 3 of them.
    req.write(Buffer.from([0, 0, 0, 0x03, 0xe8, 1, 2, 3]));
    await expect.poll(() => sessionClosed, { timeout: serverActsWithinMs }).toBe(true);
  });
});

describe("with TLS, the same timeouts apply from the handshake on", () => {
  let app: App;
  let ca: Buffer;
  beforeAll(async () => {
    const pki = createTestPki();
    ca = readFileSync(pki.caPem);
    app = await startInProcess(`
server:
  tls: {certFile: ${pki.serverPem}, keyFile: ${pki.serverKey}}
  connections:
    headersTimeoutMs: 400
    requestTimeoutMs: 800
    keepAliveTimeoutMs: 400
    idleTimeoutMs: 600
${mockModels}`);
  });
  afterAll(async () => {
    await app.shutdown();
  });

  it("a connection that never starts its TLS handshake is closed, on both API listeners", async () => {
    await Promise.all([expectClosedAfterSending(app.httpAddress, 10, Buffer.alloc(0)), expectClosedAfterSending(app.grpcAddress, 10, Buffer.alloc(0))]);
  });

  it("HTTP/1.1 over TLS: silence after the handshake, and a kept-alive connection left idle, are closed", async () => {
    const h1 = { ca, protocols: ["http/1.1"] };
    const silent = Array.from({ length: 5 }, () => raw(app.httpAddress, "127.0.0.1", h1));
    const idle = Array.from({ length: 5 }, () => raw(app.httpAddress, "127.0.0.1", h1));
    await Promise.all([...silent, ...idle].map((c) => c.connected));
    for (const c of idle) c.socket.write("GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n");
    await expect.poll(() => idle.filter((c) => /^HTTP\/1\.1 200 /.test(c.received)).length, { timeout: serverActsWithinMs }).toBe(5);
    await expectAllClosedByServer([...silent, ...idle]);
    for (const c of silent) expect(c.received).toMatch(/^HTTP\/1\.1 408 /);
  });

  it("HTTP/2 over TLS: the preface, then silence, is closed, on both API listeners", async () => {
    const h2 = { ca, protocols: ["h2"] };
    const conns = [...Array.from({ length: 5 }, () => raw(app.httpAddress, "127.0.0.1", h2)), ...Array.from({ length: 5 }, () => raw(app.grpcAddress, "127.0.0.1", h2))];
    await Promise.all(conns.map((c) => c.connected));
    for (const c of conns) c.socket.write(h2Start);
    await expectAllClosedByServer(conns);
  });
});

/**
 * Opens connections to `targets` ([address, client address]) and returns them once all stay open:
 * connections the test closed just before may still be counted by the server for a moment, so a
 * set that lost one is closed and opened again (at most 20 times).
 */
async function hold(targets: [string, string][]): Promise<Raw[]> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const conns = targets.map(([address, from]) => raw(address, from));
    await Promise.all(conns.map((c) => c.connected));
    await sleep(100);
    if (conns.every((c) => !c.closed)) return conns;
    for (const c of conns) c.socket.destroy();
    await sleep(100);
  }
  throw new Error("the server kept closing connections within the caps");
}

describe("connection caps", () => {
  let app: App;
  beforeAll(async () => {
    // Timeouts long enough that the held connections below stay open until the test closes them.
    app = await startInProcess(`
server:
  connections:
    max: 6
    maxPerIp: 3
    headersTimeoutMs: 60000
${mockModels}`);
  });
  afterAll(async () => {
    await app.shutdown();
  });

  it("beyond maxPerIp a client's connections are reset, others are served, and it is served again once its own close", async () => {
    // Client A holds 3 connections, over both API listeners (they count together).
    const a = "127.0.0.1";
    const held = await hold([[app.httpAddress, a], [app.httpAddress, a], [app.grpcAddress, a]]);

    // A's next connections, to either listener, are closed by the server without a byte.
    const refused = [raw(app.httpAddress), raw(app.grpcAddress)];
    await expectAllClosedByServer(refused);
    expect(refused.map((c) => c.received)).toEqual(["", ""]);
    expect(await httpGet(app.httpAddress, "/v1/models")).toBe("ECONNRESET");
    expect(held.filter((c) => c.closed)).toEqual([]);

    // Client B, from another address, is served on both listeners meanwhile.
    expect(await httpGet(app.httpAddress, "/v1/models", "127.0.0.2")).toBe(200);
    expect(await grpcHealth(app.grpcAddress, "127.0.0.2")).toBe("0");

    // A closes what it held: served again.
    for (const c of held) c.socket.destroy();
    await expect.poll(() => httpGet(app.httpAddress, "/v1/models"), { timeout: serverActsWithinMs }).toBe(200);
    expect(await grpcHealth(app.grpcAddress)).toBe("0");
  });

  it("beyond max every client's next connection is reset until some close", async () => {
    const [a, b] = ["127.0.0.1", "127.0.0.2"];
    const held = await hold([[app.httpAddress, a], [app.httpAddress, a], [app.grpcAddress, a], [app.httpAddress, b], [app.grpcAddress, b], [app.grpcAddress, b]]);

    // C has no connection yet, but the listeners hold 6.
    const c = raw(app.grpcAddress, "127.0.0.3");
    await expectAllClosedByServer([c]);
    expect(await httpGet(app.httpAddress, "/v1/models", "127.0.0.3")).toBe("ECONNRESET");

    for (const s of held.slice(3)) s.socket.destroy();
    await expect.poll(() => httpGet(app.httpAddress, "/v1/models", "127.0.0.3"), { timeout: serverActsWithinMs }).toBe(200);
    expect(await grpcHealth(app.grpcAddress, "127.0.0.3")).toBe("0");
    for (const s of held) s.socket.destroy();
  });

  it("the admin listener has caps of its own: a flood from one address leaves it serving others", async () => {
    const flood = Array.from({ length: 40 }, () => raw(app.adminAddress));
    await expect.poll(() => flood.filter((c) => c.closed).length, { timeout: serverActsWithinMs }).toBe(8);
    expect(await httpGet(app.adminAddress, "/healthz")).toBe("ECONNRESET");
    expect(await httpGet(app.adminAddress, "/healthz", "127.0.0.2")).toBe(200);
    // The API listeners' caps are apart from the admin's.
    expect(await httpGet(app.httpAddress, "/v1/models")).toBe(200);
    // Counted: the 8 of the flood and the /healthz after it; the API listeners' refusals above.
    const metrics = await httpText(app.adminAddress, "/metrics", "127.0.0.2");
    expect(metrics).toMatch(/^infergate_connections_refused_total\{listener="admin"\} 9$/m);
    expect(metrics).toMatch(/^infergate_connections_open\{listener="admin"\} 3[23]$/m);
    expect(Number(/^infergate_connections_refused_total\{listener="api"\} (\d+)$/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(6);
    for (const c of flood) c.socket.destroy();
    await expect.poll(() => httpGet(app.adminAddress, "/healthz"), { timeout: serverActsWithinMs }).toBe(200);
  });
});
