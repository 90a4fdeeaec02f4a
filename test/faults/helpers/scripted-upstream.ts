/**
 * Small misbehaving upstreams for the fault suite: real `node:http` servers on 127.0.0.1 that
 * speak the OpenAI Chat Completions wire format (and, for one fault, Anthropic's Messages
 * stream) byte for byte, and misbehave as a script says, request by request: error statuses with
 * any headers, a connection reset after N tokens or before the first, a stall mid-stream, a
 * stream without its terminator, an HTML body, an answer that never comes. Every request is
 * recorded with its timing and whether the client went away before the answer was finished.
 *
 * Also here: a TCP server that accepts connections and never answers, and a port with nothing
 * listening (connection refused).
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from "node:net";
import type { AddressInfo } from "node:net";

/** What the server does with one request. */
export type Behaviour =
  /** A normal answer: `tokens` as content deltas (stream) or joined (unary), `delayMs` before each delta / before the unary answer. */
  | { readonly kind: "answer"; readonly tokens?: readonly string[]; readonly delayMs?: number }
  /** An error status with an OpenAI error body and the given headers (e.g. Retry-After), after `delayMs`. */
  | { readonly kind: "status"; readonly status: number; readonly headers?: Readonly<Record<string, string>>; readonly delayMs?: number }
  /** HTTP 200 event stream: the role chunk and `tokens` content chunks, then the socket is destroyed. */
  | { readonly kind: "reset"; readonly tokens: number; readonly delayMs?: number }
  /** HTTP 200 event stream: the role chunk and `tokens` content chunks, then nothing, connection kept open. */
  | { readonly kind: "stall"; readonly tokens: number }
  /** HTTP 200 event stream: `tokens` content chunks, then a clean end of the body: no finish_reason, no [DONE]. */
  | { readonly kind: "no-terminator"; readonly tokens: number }
  /** HTTP 200 with `content-type: text/html`. */
  | { readonly kind: "html" }
  /** Reads the request, never answers (the head never comes). */
  | { readonly kind: "hang" }
  /** Anthropic Messages stream: HTTP 200, message_start, then an `overloaded_error` error event, before any content. */
  | { readonly kind: "anthropic-overloaded" };

/** One request the server received. */
export interface ScriptedRequest {
  readonly index: number;
  readonly path: string;
  readonly stream: boolean;
  readonly lastUserText: string;
  readonly behaviour: Behaviour["kind"];
  readonly receivedAt: number;
  /** When the response was finished normally. */
  finishedAt?: number;
  /** When the client closed the exchange before the response was finished (abort, reset). */
  abortedAt?: number;
}

export interface ScriptedUpstream {
  /** `http://127.0.0.1:<port>`. */
  readonly url: string;
  /** The OpenAI base URL: `${url}/v1`. */
  readonly baseUrl: string;
  readonly requests: readonly ScriptedRequest[];
  /** Content bytes of streamed answers handed to the sockets so far (all requests). */
  readonly bytesWritten: number;
  /** Requests whose exchange is still open. */
  readonly open: number;
  /** Replaces the script (request index → behaviour). */
  script(plan: (index: number, req: ScriptedRequest) => Behaviour): void;
  /** Resolves when `n` requests have arrived. */
  waitForRequests(n: number, timeoutMs?: number): Promise<void>;
  /** Resolves when no exchange is open any more. */
  waitIdle(timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

const created = 1_700_000_000;

function chunk(id: string, delta: Record<string, unknown>, finish: string | null): string {
  return `data: ${JSON.stringify({
    id,
    object: "chat.completion.chunk",
    created,
    model: "scripted",
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
  })}\n\n`;
}

/** `t1 `, `t2 `, … as the content pieces of a stream. */
export function tokens(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `t${i + 1} `);
}

/** Starts a scripted upstream; by default every request gets `answer` with tokens "scripted", " answer". */
export async function startScriptedUpstream(
  plan: (index: number, req: ScriptedRequest) => Behaviour = () => ({ kind: "answer" }),
): Promise<ScriptedUpstream> {
  let current = plan;
  const requests: ScriptedRequest[] = [];
  const sockets = new Set<Socket>();
  let open = 0;
  let bytesWritten = 0;
  const waiters = new Set<() => void>();
  const changed = () => waiters.forEach((w) => w());

  const server = createServer((req, res) => {
    void handle(req, res);
  });
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  });
  server.keepAliveTimeout = 1000;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    let body: Record<string, unknown> = {};
    try {
      body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, unknown>;
    } catch {
      // a malformed body still gets the scripted behaviour
    }
    const messages = Array.isArray(body["messages"]) ? (body["messages"] as Record<string, unknown>[]) : [];
    const lastUser = [...messages].reverse().find((m) => m["role"] === "user");
    const content = lastUser?.["content"];
    const lastUserText =
      typeof content === "string"
        ? content
        : Array.isArray(content)
          ? (content as Record<string, unknown>[]).map((p) => (typeof p["text"] === "string" ? p["text"] : "")).join("\n")
          : "";
    const index = requests.length;
    const draft: ScriptedRequest = {
      index,
      path: (req.url ?? "").split("?")[0]!,
      stream: body["stream"] === true,
      lastUserText,
      behaviour: "answer",
      receivedAt: Date.now(),
    };
    const behaviour = current(index, draft);
    const record: ScriptedRequest = { ...draft, behaviour: behaviour.kind };
    requests.push(record);
    open++;
    changed();
    let done = false;
    res.once("close", () => {
      if (!res.writableFinished && !done) record.abortedAt = Date.now();
      open--;
      changed();
    });
    res.once("finish", () => {
      record.finishedAt = Date.now();
    });
    const gone = () => res.destroyed || record.abortedAt !== undefined;
    const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
    const id = `chatcmpl-scripted-${index}`;
    const sse = () => {
      res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache" });
      res.flushHeaders();
    };

    switch (behaviour.kind) {
      case "answer": {
        const pieces = behaviour.tokens ?? ["scripted", " answer"];
        if (record.stream) {
          sse();
          res.write(chunk(id, { role: "assistant", content: "" }, null));
          let last: { piece: string; bytes: Buffer } | undefined;
          for (const p of pieces) {
            if (behaviour.delayMs !== undefined) await pause(behaviour.delayMs);
            if (gone()) return;
            // A repeated piece reuses its encoded chunk (long answers stay cheap to produce).
            if (last?.piece !== p) last = { piece: p, bytes: Buffer.from(chunk(id, { content: p }, null)) };
            // Backpressure: a slow reader (through the gateway) holds the writer here.
            const more = res.write(last.bytes);
            bytesWritten += Buffer.byteLength(p);
            if (!more) await new Promise((r) => res.once("drain", r));
          }
          if (gone()) return;
          res.write(chunk(id, {}, "stop"));
          res.end("data: [DONE]\n\n");
        } else {
          if (behaviour.delayMs !== undefined) await pause(behaviour.delayMs);
          if (gone()) return;
          const completion = {
            id,
            object: "chat.completion",
            created,
            model: "scripted",
            choices: [{ index: 0, message: { role: "assistant", content: pieces.join("") }, logprobs: null, finish_reason: "stop" }],
            usage: { prompt_tokens: 1, completion_tokens: pieces.length, total_tokens: 1 + pieces.length },
          };
          res.writeHead(200, { "content-type": "application/json" });
          res.end(JSON.stringify(completion));
        }
        return;
      }
      case "status": {
        if (behaviour.delayMs !== undefined) await pause(behaviour.delayMs);
        if (gone()) return;
        const message = `scripted failure (HTTP ${behaviour.status})`;
        const errBody = JSON.stringify({ error: { message, type: "server_error", param: null, code: null } });
        res.writeHead(behaviour.status, { "content-type": "application/json", ...behaviour.headers });
        res.end(errBody);
        return;
      }
      case "reset":
      case "stall":
      case "no-terminator": {
        sse();
        if (behaviour.kind !== "no-terminator") res.write(chunk(id, { role: "assistant", content: "" }, null));
        for (const p of tokens(behaviour.tokens)) {
          if (behaviour.kind === "reset" && behaviour.delayMs !== undefined) await pause(behaviour.delayMs);
          if (gone()) return;
          res.write(chunk(id, { content: p }, null));
        }
        if (behaviour.kind === "reset") {
          done = true;
          // Let the written chunks leave before the reset.
          await pause(20);
          res.socket?.resetAndDestroy();
        } else if (behaviour.kind === "no-terminator") {
          res.end();
        }
        return;
      }
      case "html":
        res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
        res.end("<html><body>502 Bad Gateway</body></html>");
        return;
      case "hang":
        return;
      case "anthropic-overloaded": {
        res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache" });
        const start = {
          type: "message_start",
          message: {
            id: `msg_scripted_${index}`,
            type: "message",
            role: "assistant",
            model: "scripted",
            content: [],
            stop_reason: null,
            stop_sequence: null,
            usage: { input_tokens: 3, output_tokens: 1 },
          },
        };
        res.write(`event: message_start\ndata: ${JSON.stringify(start)}\n\n`);
        await pause(10);
        res.end(`event: error\ndata: ${JSON.stringify({ type: "error", error: { type: "overloaded_error", message: "Overloaded" } })}\n\n`);
        return;
      }
    }
  }

  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  function until(ok: () => boolean, timeoutMs: number, what: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (ok()) {
          waiters.delete(check);
          clearTimeout(timer);
          resolve();
        }
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`scripted upstream: no ${what} within ${timeoutMs} ms (requests ${requests.length}, open ${open})`));
      }, timeoutMs);
      waiters.add(check);
      check();
    });
  }

  return {
    url,
    baseUrl: `${url}/v1`,
    requests,
    get bytesWritten() {
      return bytesWritten;
    },
    get open() {
      return open;
    },
    script(p) {
      current = p;
    },
    waitForRequests: (n, timeoutMs = 5_000) => until(() => requests.length >= n, timeoutMs, `${n} requests`),
    waitIdle: (timeoutMs = 5_000) => until(() => open === 0, timeoutMs, "idle"),
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** A TCP server that accepts connections and never answers. */
export async function startBlackhole(): Promise<{ url: string; connections: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  let connections = 0;
  const server: TcpServer = createTcpServer((s) => {
    connections++;
    sockets.add(s);
    s.on("error", () => {});
    s.once("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    get connections() {
      return connections;
    },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** A loopback URL where nothing listens: connecting is refused. */
export async function refusingUrl(): Promise<string> {
  const server = createTcpServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}/v1`;
}
