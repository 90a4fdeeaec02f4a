/**
 * Keep-alive after a completed stream (issue 16): an upstream that ends its chunked SSE body with
 * a last chunk of its own, after the terminal event (as servers that close the body once their
 * generator has finished do), must still see one connection for many sequential streams; a body
 * that goes on after the terminator never holds the call, and its connection is closed.
 * infergate runs in this process with a real gRPC listener and a grpc-js client; the upstream is a
 * node:http server on loopback that counts the connections it accepted.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { status } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { DRAIN_MAX_MS } from "../../src/upstreams/http/http-upstream.js";
import { chatRequest, deltas, startGateway, sleep } from "../faults/helpers/harness.js";

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

/** What the upstream does after the terminal event. */
type Tail = "last-chunk-later" | "never-ends" | "keeps-sending";

interface CountingUpstream {
  readonly url: string;
  /** TCP connections accepted so far. */
  readonly connections: () => number;
  /** Connections closed so far (by either side). */
  readonly closed: () => number;
  readonly requests: () => number;
}

const openaiEvents = (words: string[]): string[] => [
  `data: {"id":"chatcmpl-reuse","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n`,
  ...words.map((w) => `data: {"id":"chatcmpl-reuse","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"${w}"},"finish_reason":null}]}\n\n`),
  `data: {"id":"chatcmpl-reuse","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n`,
];

const anthropicEvents = (words: string[]): string[] => [
  `event: message_start\ndata: {"type":"message_start","message":{"id":"msg_reuse","type":"message","role":"assistant","model":"m","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":1}}}\n\n`,
  `event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n`,
  ...words.map((w) => `event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"${w}"}}\n\n`),
  `event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\nevent: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":3}}\n\nevent: message_stop\ndata: {"type":"message_stop"}\n\n`,
];

/**
 * A streaming upstream for the openai and anthropic kinds: each event in its own chunk (chunked
 * transfer encoding, no Content-Length), a few ms apart, so that the terminal event arrives in a
 * read of its own; then, per `tail`, the body's last chunk 20 ms later, nothing (the response
 * stays open), or data without end.
 */
async function countingUpstream(tail: Tail): Promise<CountingUpstream> {
  let connections = 0;
  let closed = 0;
  let requests = 0;
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const later = (ms: number, fn: () => void) => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
  };
  const server = createServer({ keepAliveTimeout: 60_000 }, (req: IncomingMessage, res: ServerResponse) => {
    requests++;
    req.resume();
    req.on("end", () => {
      const events = req.url!.endsWith("/messages") ? anthropicEvents(["one", " two", " three"]) : openaiEvents(["one", " two", " three"]);
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
      let i = 0;
      const next = () => {
        if (res.destroyed) return;
        if (i < events.length) {
          res.write(events[i++]!);
          later(3, next);
          return;
        }
        if (tail === "last-chunk-later") later(20, () => res.end());
        else if (tail === "keeps-sending") {
          const more = () => {
            if (res.destroyed) return;
            res.write(`: keep-alive ${"x".repeat(4096)}\n\n`);
            later(1, more);
          };
          more();
        }
        // "never-ends": the response stays open until the client closes the connection.
      };
      next();
    });
  });
  server.on("connection", (s: Socket) => {
    connections++;
    sockets.add(s);
    s.on("close", () => {
      closed++;
      sockets.delete(s);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  closers.push(async () => {
    for (const t of timers) clearTimeout(t);
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, connections: () => connections, closed: () => closed, requests: () => requests };
}

async function gatewayFor(kind: "openai" | "anthropic", url: string) {
  const g = await startGateway(`
upstreams: [{ name: up, kind: ${kind}, endpoints: ["${kind === "openai" ? `${url}/v1` : url}"], apiKey: test-key }]
models: [{ name: chat, upstream: up }]
`);
  closers.push(() => g.close());
  return g;
}

type Event = Record<string, unknown>;

/**
 * A timer as long as the drain's time bound (DRAIN_MAX_MS), set before a call starts: the
 * gateway's own starts later (at the terminal event), so whatever the gateway does on its time
 * bound happens after this one fires, however busy the machine. `closedThen` is how many
 * connections `up` had closed when it fired; undefined until then.
 */
function drainTimeBound(up: CountingUpstream): { readonly closedThen: number | undefined } {
  let closedThen: number | undefined;
  const t = setTimeout(() => (closedThen = up.closed()), DRAIN_MAX_MS);
  closers.push(async () => clearTimeout(t));
  return {
    get closedThen() {
      return closedThen;
    },
  };
}

describe("upstream connections after completed streams", () => {
  for (const kind of ["openai", "anthropic"] as const) {
    it(`${kind}: 20 sequential streams, each ending its chunked body after the terminal event, reuse one upstream connection`, async () => {
      const up = await countingUpstream("last-chunk-later");
      const g = await gatewayFor(kind, up.url);
      for (let i = 0; i < 20; i++) {
        // Not cacheable (temperature 1): every call goes upstream.
        const r = await g.client.serverStream<Event>("Generate", chatRequest("chat", `hello ${i}`, { temperature: 1 })).done;
        expect(r.status.code).toBe(status.OK);
        expect(deltas(r.events)).toEqual(["one", " two", " three"]);
        expect(r.events.at(-1)?.["event"]).toBe("final");
        // The next call starts after the body's last chunk (20 ms after the terminal event) was
        // read: a connection dropped at the terminal event could not be reused.
        await sleep(40);
      }
      expect(up.requests()).toBe(20);
      expect(up.connections()).toBe(1);
      expect(up.closed()).toBe(0);
    });
  }

  it("the terminal event is not held back by a body that never ends; that connection is closed after the drain's time bound", async () => {
    const up = await countingUpstream("never-ends");
    const g = await gatewayFor("openai", up.url);
    const bound = drainTimeBound(up);
    const r = await g.client.serverStream<Event>("Generate", chatRequest("chat", "hello", { temperature: 1 })).done;
    expect(r.status.code).toBe(status.OK);
    expect(deltas(r.events)).toEqual(["one", " two", " three"]);
    // The answer did not wait for the drain: it came before the drain's time bound could have
    // passed, with the upstream's connection still open.
    expect(bound.closedThen).toBeUndefined();
    expect(up.closed()).toBe(0);
    // DRAIN_MAX_MS (2 s) later the connection is given up (polled for up to 10 s).
    await expect.poll(() => up.closed(), { timeout: 10_000 }).toBe(1);
  });

  it("a body that goes on sending after the terminal event is cut once past the drain's byte bound", async () => {
    const up = await countingUpstream("keeps-sending");
    const g = await gatewayFor("openai", up.url);
    const bound = drainTimeBound(up);
    const r = await g.client.serverStream<Event>("Generate", chatRequest("chat", "hello", { temperature: 1 })).done;
    expect(r.status.code).toBe(status.OK);
    expect(deltas(r.events)).toEqual(["one", " two", " three"]);
    // 64 KiB at about 4 KiB per ms: closed by the byte bound, before the time bound could have
    // closed it (if the timer above has fired yet, the connection was closed when it did).
    await expect.poll(() => up.closed(), { timeout: 10_000 }).toBe(1);
    expect(bound.closedThen ?? 1).toBe(1);
  });
});
