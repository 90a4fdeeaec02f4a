#!/usr/bin/env node
/**
 * The client of the embeddings section's cache runs (bench/lib/embed-bench.mjs): one call at a time
 * for a number of seconds, every call with inputs of its own, which h2load (one fixed body) cannot
 * send. A call's time runs from writing the request (built beforehand) to the end of the answer.
 *
 *   node bench/embed-client.mjs --target grpc --address HOST:PORT --model M --seen 32 --new 32
 *        [--encoding fp32|float] [--seconds 3] --tag T
 *     Embed through infergate over one HTTP/2 connection (node:http2, gRPC framing): each call
 *     sends the same `--seen` texts (the harness has had infergate cache them) and `--new` texts
 *     never sent before (made unique by `--tag` and the call's number).
 *   node bench/embed-client.mjs --target http --url http://HOST:PORT/v1/embeddings --model M
 *        --new 64 [--format base64|float] [--seconds 3] --tag T
 *     The same batch of new texts straight to the fake upstream, as infergate's openai upstream
 *     sends it (bench/lib/embed-messages.mjs upstreamBody), over one keep-alive HTTP/1.1 connection.
 *
 * Prints one line of JSON: calls, errors (and the first), latency p50/p90/p99 ms, the values of
 * infergate's `infergate-cache` response header with their counts, and the check of the first
 * answer (one vector per input, of `--dims` values; through infergate, the seen inputs flagged
 * cached and the new ones not).
 */
import http from "node:http";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { fromBinary } from "@bufbuild/protobuf";
import { EmbedResponseSchema } from "../dist/gen/infergate/v1/inference_service_pb.js";
import { quantile } from "./lib/common.mjs";
import { grpcSession } from "./lib/grpc-call.mjs";
import { embedPath, embedRequestFrame, texts, upstreamBody } from "./lib/embed-messages.mjs";

const { values: o } = parseArgs({
  options: {
    target: { type: "string" },
    address: { type: "string" },
    url: { type: "string" },
    model: { type: "string" },
    seen: { type: "string", default: "0" },
    new: { type: "string", default: "64" },
    encoding: { type: "string", default: "fp32" },
    format: { type: "string", default: "base64" },
    dims: { type: "string", default: "1536" },
    seconds: { type: "string", default: "3" },
    tag: { type: "string" },
  },
});
if (o.target !== "grpc" && o.target !== "http") throw new Error("--target grpc|http");
if (o.model === undefined || o.tag === undefined) throw new Error("--model and --tag are required");
const seen = texts("seen", Number(o.seen));
const fresh = Number(o.new);
const dims = Number(o.dims);

/** gRPC over one HTTP/2 connection (bench/lib/grpc-call.mjs): resolves once the trailers have come. */
function grpcCaller() {
  const session = grpcSession(o.address);
  return {
    async call(frame) {
      const r = await session.call(embedPath, frame);
      return { ok: r.status === 0, error: r.status === 0 ? undefined : `grpc-status ${r.status} ${r.grpcMessage}`.slice(0, 300), cache: r.headers["infergate-cache"], message: r.message };
    },
    close: () => session.close(),
  };
}

/** HTTP/1.1 over one keep-alive connection: resolves once the body has ended. */
function httpCaller() {
  const url = new URL(o.url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  return {
    call(body) {
      return new Promise((resolve, reject) => {
        const req = http.request({ host: url.hostname, port: url.port, path: url.pathname, method: "POST", agent, headers: { "content-type": "application/json", "content-length": body.length } }, (res) => {
          const chunks = [];
          res.on("data", (c) => chunks.push(c));
          res.on("end", () => {
            const message = Buffer.concat(chunks);
            resolve({ ok: res.statusCode === 200, error: res.statusCode === 200 ? undefined : `status ${res.statusCode}: ${message.toString().slice(0, 200)}`, message });
          });
          res.on("error", reject);
        });
        req.on("error", reject);
        req.end(body);
      });
    },
    close: () => agent.destroy(),
  };
}

/** The first answer (the JSON body, or the gRPC message), checked: {ok, problem?}. */
function check(message) {
  if (o.target === "http") {
    const data = JSON.parse(message.toString("utf8")).data;
    if (data.length !== fresh) return { ok: false, problem: `${data.length} embeddings for ${fresh} inputs` };
    const len = typeof data[0].embedding === "string" ? Buffer.from(data[0].embedding, "base64").length / 4 : data[0].embedding.length;
    return len === dims ? { ok: true } : { ok: false, problem: `${len} values, not ${dims}` };
  }
  const res = fromBinary(EmbedResponseSchema, message);
  const n = seen.length + fresh;
  if (res.embeddings.length !== n) return { ok: false, problem: `${res.embeddings.length} embeddings for ${n} inputs` };
  for (const [i, e] of res.embeddings.entries()) {
    const len = o.encoding === "fp32" ? e.fp32.length / 4 : e.values.length;
    if (e.index !== i || len !== dims) return { ok: false, problem: `embedding ${i}: index ${e.index}, ${len} values` };
    if (e.cached !== i < seen.length) return { ok: false, problem: `embedding ${i}: cached ${e.cached}` };
  }
  return { ok: true };
}

const caller = o.target === "grpc" ? grpcCaller() : httpCaller();
const request = (n) => {
  const inputs = [...seen, ...texts(`${o.tag} ${n}`, fresh)];
  return o.target === "grpc" ? embedRequestFrame(o.model, inputs, o.encoding) : Buffer.from(upstreamBody(o.model, inputs, o.format));
};
const latencies = [];
const cacheHeaders = {};
let errors = 0;
let firstError;
let firstAnswer;
const until = performance.now() + Number(o.seconds) * 1000;
let n = 0;
while (performance.now() < until) {
  const body = request(n++);
  const t0 = performance.now();
  try {
    const r = await caller.call(body);
    const ms = performance.now() - t0;
    if (!r.ok) {
      errors++;
      firstError ??= r.error;
      continue;
    }
    latencies.push(ms);
    if (r.cache !== undefined) cacheHeaders[r.cache] = (cacheHeaders[r.cache] ?? 0) + 1;
    firstAnswer ??= check(r.message);
  } catch (err) {
    errors++;
    firstError ??= String(err?.message ?? err).slice(0, 300);
  }
}
caller.close();
latencies.sort((a, b) => a - b);
process.stdout.write(
  `${JSON.stringify({ calls: latencies.length + errors, ok: latencies.length, errors, firstError, p50Ms: quantile(latencies, 0.5), p90Ms: quantile(latencies, 0.9), p99Ms: quantile(latencies, 0.99), cacheHeaders, firstAnswer })}\n`,
);
