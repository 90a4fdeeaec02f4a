/**
 * The cleartext HTTP listener reads a connection's first bytes to choose HTTP/1.1 or h2c. Until
 * then neither HTTP server's timeouts apply: a connection that sends nothing is closed after
 * `firstBytesTimeoutMs`, and one that has spoken is left to the HTTP server however long its
 * answer takes.
 */
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { configSchema } from "../../src/config/schema.js";
import { createHttpListener, type HttpListener } from "../../src/server/http-listener.js";

const server = configSchema.parse({ models: [{ name: "m", upstream: "u" }], upstreams: [{ name: "u", kind: "mock" }] }).server;
/** Answers every request after 400 ms: longer than the first-bytes timeout below. */
const slowHandler = (_req: unknown, res: http.ServerResponse | http2.Http2ServerResponse) => {
  setTimeout(() => {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end("late but here");
  }, 400);
};

let listener: HttpListener | undefined;
afterEach(() => {
  listener?.destroy();
  listener = undefined;
});

async function start(): Promise<number> {
  listener = createHttpListener(slowHandler as never, server, undefined, { firstBytesTimeoutMs: 200 });
  return listener.listen("127.0.0.1", 0);
}

describe("HTTP listener: a connection's first bytes", () => {
  it("a connection that sends nothing is closed once the first-bytes timeout passes", async () => {
    const port = await start();
    // Closed by the first-bytes timer, not a later one: a timer as long as the shortest of the HTTP
    // servers' own (keep-alive, 5 s), set before connecting, has not fired when the close comes.
    let laterTimerFired = false;
    const later = setTimeout(() => (laterTimerFired = true), server.connections.keepAliveTimeoutMs);
    const socket = net.connect(port, "127.0.0.1");
    const opened = Date.now();
    await new Promise<void>((resolve) => socket.once("close", () => resolve()));
    clearTimeout(later);
    // A lower bound only: the first-bytes timer (200 ms) never fires early.
    expect(Date.now() - opened).toBeGreaterThanOrEqual(150);
    expect(laterTimerFired).toBe(false);
  });

  it("an HTTP/1.1 request is answered even when the answer takes longer than that timeout", async () => {
    const port = await start();
    const body = await new Promise<string>((resolve, reject) => {
      http
        .get({ host: "127.0.0.1", port, path: "/anything", agent: false }, (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (c: string) => (text += c));
          res.on("end", () => resolve(`${res.statusCode} ${text}`));
        })
        .on("error", reject);
    });
    expect(body).toBe("200 late but here");
  });

  it("an h2c request (prior knowledge) is answered even when the answer takes longer than that timeout", async () => {
    const port = await start();
    const session = http2.connect(`http://127.0.0.1:${port}`);
    try {
      const body = await new Promise<string>((resolve, reject) => {
        const req = session.request({ ":path": "/anything" });
        let status = 0;
        let text = "";
        req.on("response", (h) => (status = Number(h[":status"])));
        req.setEncoding("utf8");
        req.on("data", (c: string) => (text += c));
        req.on("end", () => resolve(`${status} ${text}`));
        req.on("error", reject);
        req.end();
      });
      expect(body).toBe("200 late but here");
    } finally {
      session.close();
    }
  });
});
