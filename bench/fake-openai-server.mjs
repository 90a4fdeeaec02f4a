#!/usr/bin/env node
/**
 * A fast fake OpenAI-compatible upstream for the benchmarks, run as its own process: answers
 * `POST …/chat/completions` and `POST …/embeddings` from memory, with no I/O but the socket and no
 * record of requests but counts (the recording fakes of the tests are test/fakes/openai-fake.ts and
 * test/fakes/openai-embeddings-fake.ts).
 *
 *   node bench/fake-openai-server.mjs [--port N] [--stream-end joined|split]
 *                                                      (prints {"port":N} on stdout when listening)
 *
 * The requested `model` chooses the behaviour, so that infergate (each model's upstreamModel),
 * Portkey and direct load reach the same answers with the same request bodies:
 *   `…-t<N>`  a stream (`"stream": true`) has N content chunks ("tok ", default 20);
 *   `…-d<MS>` MS milliseconds between two chunks of a stream (default 0: all written at once);
 *   `…-l<MS>` a unary answer waits MS milliseconds before it is written (default 0).
 * A unary answer is a fixed chat.completion of 350 bytes (the size of the baseline). A
 * stream is a role chunk, the content chunks, a finish chunk, a usage chunk when
 * `stream_options.include_usage` is set, then `data: [DONE]`, as OpenAI sends it.
 *
 * Streams use chunked transfer encoding (no Content-Length), as real servers do. With
 * `--stream-end split` (the default) the body's last chunk (`0\r\n\r\n`) is written on its own,
 * 1 ms after `data: [DONE]`, as servers that write each event as it is produced and close the
 * body once their generator has finished do (an ASGI server's last `more_body: False` message,
 * say): a client that stops reading at `[DONE]` leaves the response unfinished, and its
 * connection cannot be reused. `joined` writes it with the last events.
 *
 * Embeddings (bench/lib/fake-embeddings.mjs): OpenAI's answer with fixed vectors, as JSON numbers
 * or base64 per `encoding_format`, of `dimensions` values (default: `-dim<N>` in the model's name,
 * else 1536).
 *
 * `GET /stats` answers `{"connections":N,"requests":M,"streams":S,"embeddings":{"requests":E,
 * "inputs":I}}`: the TCP connections this server accepted, the requests and the streamed answers it
 * served since it started, and the embeddings requests it answered with their inputs in all; the
 * bench reads it to count the upstream connections a client opened (keep-alive reuse) and the
 * inputs infergate sent upstream. `GET /embeddings/last` answers the body of the last embeddings
 * request (as parsed, in JSON again).
 */
import { createServer } from "node:http";
import { parseArgs } from "node:util";
import * as embeddings from "./lib/fake-embeddings.mjs";

const { values } = parseArgs({ options: { port: { type: "string", default: "0" }, "stream-end": { type: "string", default: "split" } } });
if (values["stream-end"] !== "split" && values["stream-end"] !== "joined") throw new Error("--stream-end joined|split");
const splitEnd = values["stream-end"] === "split";

/** What GET /stats reports. */
const stats = { connections: 0, requests: 0, streams: 0 };

/** @typedef {{ tokens: number, delayMs: number, latencyMs: number, unary: Buffer, name: string }} Behaviour */
/** @type {Map<string, Behaviour>} */
const behaviours = new Map();

const created = 1_700_000_000;

function behaviour(model) {
  let b = behaviours.get(model);
  if (b === undefined) {
    const num = (re, dflt) => {
      const m = re.exec(model);
      return m === null ? dflt : Number(m[1]);
    };
    b = {
      name: model,
      tokens: num(/-t(\d+)/, 20),
      delayMs: num(/-d(\d+)/, 0),
      latencyMs: num(/-l(\d+)/, 0),
      unary: unaryAnswer(model),
    };
    behaviours.set(model, b);
  }
  return b;
}

/** The fixed unary answer, padded to exactly 350 bytes. */
function unaryAnswer(model) {
  const make = (text) =>
    JSON.stringify({
      id: "chatcmpl-bench",
      object: "chat.completion",
      created,
      model,
      choices: [{ index: 0, message: { role: "assistant", content: text }, finish_reason: "stop" }],
      usage: { prompt_tokens: 12, completion_tokens: 24, total_tokens: 36 },
    });
  const base = make("");
  const text = "The quick brown fox jumps over the lazy dog. ".repeat(10).slice(0, Math.max(1, 350 - base.length));
  return Buffer.from(make(text));
}

const chunk = (model, delta, finish) =>
  `data: ${JSON.stringify({
    id: "chatcmpl-bench",
    object: "chat.completion.chunk",
    created,
    model,
    choices: [{ index: 0, delta, finish_reason: finish }],
  })}\n\n`;

const streamParts = new Map();
/** The SSE pieces of one model's stream, built once. */
function parts(model) {
  let p = streamParts.get(model);
  if (p === undefined) {
    p = {
      role: chunk(model, { role: "assistant", content: "" }, null),
      token: chunk(model, { content: "tok " }, null),
      finish: chunk(model, {}, "stop"),
      usage: `data: ${JSON.stringify({ id: "chatcmpl-bench", object: "chat.completion.chunk", created, model, choices: [], usage: { prompt_tokens: 12, completion_tokens: behaviour(model).tokens, total_tokens: 12 + behaviour(model).tokens } })}\n\n`,
      done: "data: [DONE]\n\n",
    };
    streamParts.set(model, p);
  }
  return p;
}

function fail(res, status, message, param = null) {
  const body = JSON.stringify({ error: { message, type: "invalid_request_error", param, code: null } });
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
}

const server = createServer({ keepAliveTimeout: 60_000, requestTimeout: 0, headersTimeout: 60_000 }, (req, res) => {
  if (req.method === "GET" && (req.url === "/stats" || req.url === "/embeddings/last")) {
    const body = JSON.stringify(req.url === "/stats" ? { ...stats, embeddings: embeddings.counts } : (embeddings.last ?? null));
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
    res.end(body);
    return;
  }
  stats.requests++;
  const embed = req.method === "POST" && req.url.endsWith("/embeddings");
  if (!embed && (req.method !== "POST" || !req.url.endsWith("/chat/completions"))) {
    fail(res, 404, `Invalid URL (${req.method} ${req.url})`);
    return;
  }
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch {
      fail(res, 400, "We could not parse the JSON body of your request.");
      return;
    }
    if (embed) {
      embeddings.answerEmbeddings(body, res, (status, message, param) => fail(res, status, message, param));
      return;
    }
    if (typeof body?.model !== "string" || !Array.isArray(body.messages)) {
      fail(res, 400, "model and messages are required");
      return;
    }
    const b = behaviour(body.model);
    if (body.stream === true) {
      stream(res, b, body.stream_options?.include_usage === true);
      return;
    }
    const answer = () => {
      res.writeHead(200, { "content-type": "application/json", "content-length": b.unary.length });
      res.end(b.unary);
    };
    if (b.latencyMs > 0) setTimeout(answer, b.latencyMs);
    else answer();
  });
});

server.on("connection", () => stats.connections++);

function stream(res, b, includeUsage) {
  stats.streams++;
  const p = parts(b.name);
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
  const end = () => {
    const last = `${p.finish}${includeUsage ? p.usage : ""}${p.done}`;
    if (!splitEnd) {
      res.end(last);
      return;
    }
    res.write(last);
    setTimeout(() => res.end(), 1);
  };
  if (b.delayMs === 0) {
    // One write: the chunks are still separate SSE events, as a fast server sends them.
    res.write(p.role + p.token.repeat(b.tokens));
    end();
    return;
  }
  res.write(p.role);
  let sent = 0;
  const timer = setInterval(() => {
    if (sent === b.tokens) {
      clearInterval(timer);
      end();
      return;
    }
    sent++;
    res.write(p.token);
  }, b.delayMs);
  res.on("close", () => clearInterval(timer));
}

server.listen(Number(values.port), "127.0.0.1", () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`);
});
const stop = () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
