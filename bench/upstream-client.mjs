#!/usr/bin/env node
/**
 * The upstream-client floor of the benchmarks (bench/run.mjs): what the HTTP/1.1 client half of a
 * proxied Chat costs without infergate. An undici Pool with the options of infergate's HttpUpstream
 * (src/upstreams/http/http-upstream.ts) sends the same OpenAI chat request infergate sends
 * (bench/lib/messages.mjs: serialized with JSON.stringify per call, with the openai kind's headers)
 * to the fake upstream at a fixed concurrency, reads each answer with listeners and parses it with
 * JSON.parse. Its own CPU time (user + system, all threads, from /proc/self/stat as bench/lib/common.mjs
 * cpuMs reads it) over the measured seconds, per call, is the figure.
 *
 * With --grpc it is the gRPC client half of a proxied Predict instead: a @grpc/grpc-js Client with
 * the channel options of infergate's GrpcUpstream (src/upstreams/grpc/grpc-upstream.ts) sends the
 * ModelInferRequest of Triton's `simple` (2 × [1,16] INT32, built as infergate's kserve upstream
 * builds it: bench/lib/predict-messages.mjs) to the fake KServe server, serializing it with
 * toBinary and reading the answer with fromBinary per call, with new metadata and a deadline per
 * call, as GrpcUpstream does.
 *
 *   node bench/upstream-client.mjs --url http://127.0.0.1:PORT/v1/chat/completions --model M
 *        [--concurrency 64] [--seconds 5] [--warmup-seconds 1]
 *   node bench/upstream-client.mjs --grpc 127.0.0.1:PORT --model simple [...]
 *     (prints one line of JSON: calls, errors, CPU µs per call, latency p50/p99 ms, calls/s)
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { Pool } from "undici";
import { ModelInferRequestSchema, ModelInferResponseSchema } from "../dist/gen/inference/grpc_service_pb.js";
import { quantile } from "./lib/common.mjs";
import { prompt } from "./lib/messages.mjs";
import { modelInferPath, simpleInput0, simpleInput1 } from "./lib/predict-messages.mjs";

const { values: o } = parseArgs({
  options: {
    url: { type: "string" },
    grpc: { type: "string" },
    model: { type: "string", default: "bench" },
    concurrency: { type: "string", default: "64" },
    seconds: { type: "string", default: "5" },
    "warmup-seconds": { type: "string", default: "1" },
  },
});

/** This process's CPU time (user + system, every thread) in ms, read as bench/lib/common.mjs cpuMs reads it. */
const clockTicks = Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim()) || 100;
function ownCpuMs() {
  const stat = readFileSync("/proc/self/stat", "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / clockTicks;
}

/** The HTTP/1.1 client of a proxied Chat: one call is a request, a status check, the body read and parsed. */
function httpClient() {
  const url = new URL(o.url);
  const pool = new Pool(url.origin, { connections: 10_000, connectTimeout: 5_000, headersTimeout: 60_000, bodyTimeout: 0, keepAliveTimeout: 30_000 });
  const headers = { "content-type": "application/json", accept: "application/json", authorization: "Bearer sk-bench-not-a-secret" };
  // The request as the openai kind builds it before JSON.stringify (bench/lib/messages.mjs openaiBody).
  const request = { model: o.model, messages: [{ role: "user", content: prompt }], stream: false };
  const readText = (body) =>
    new Promise((resolve, reject) => {
      const chunks = [];
      body.on("data", (c) => chunks.push(c));
      body.once("end", () => resolve(chunks.length === 1 ? chunks[0].toString("utf8") : Buffer.concat(chunks).toString("utf8")));
      body.once("error", reject);
    });
  return {
    async once() {
      const res = await pool.request({ method: "POST", path: url.pathname, headers, body: JSON.stringify(request) });
      const text = await readText(res.body);
      if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}: ${text.slice(0, 200)}`);
      return JSON.parse(text);
    },
    close: () => pool.close(),
  };
}

/** The gRPC client of a proxied Predict: one ModelInfer call as GrpcUpstream makes it. */
function grpcClient() {
  const client = new grpc.Client(o.grpc, grpc.credentials.createInsecure(), {
    "grpc.max_receive_message_length": 64 << 20,
    "grpc.max_send_message_length": 64 << 20,
    "grpc.keepalive_time_ms": 30_000,
    "grpc.keepalive_timeout_ms": 10_000,
    "grpc.enable_channelz": 0,
  });
  const tensor = (name, values) => ({ name, datatype: "INT32", shape: [1n, 16n], contents: { intContents: Array.from(values) } });
  const serialize = (m) => Buffer.from(toBinary(ModelInferRequestSchema, m));
  const deserialize = (b) => fromBinary(ModelInferResponseSchema, b);
  return {
    once() {
      const request = create(ModelInferRequestSchema, { modelName: o.model, inputs: [tensor("INPUT0", simpleInput0), tensor("INPUT1", simpleInput1)] });
      return new Promise((resolve, reject) => {
        client.makeUnaryRequest(modelInferPath, serialize, deserialize, request, new grpc.Metadata(), { deadline: new Date(Date.now() + 60_000) }, (err, res) => {
          if (err) reject(err);
          else if (res.outputs.length !== 2) reject(new Error(`ModelInfer answered ${res.outputs.length} outputs`));
          else resolve(res);
        });
      });
    },
    close: async () => client.close(),
  };
}

const target = o.grpc === undefined ? httpClient() : grpcClient();
const once = () => target.once();

/** Runs `concurrency` loops of calls until `until` (performance.now()); returns latencies and errors. */
async function load(concurrency, until) {
  const latencies = [];
  let errors = 0;
  let firstError;
  const loop = async () => {
    while (performance.now() < until) {
      const t0 = performance.now();
      try {
        await once();
        latencies.push(performance.now() - t0);
      } catch (err) {
        errors++;
        firstError ??= err.message;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, loop));
  return { latencies, errors, firstError };
}

const c = Number(o.concurrency);
await load(c, performance.now() + Number(o["warmup-seconds"]) * 1000);
const cpu0 = ownCpuMs();
const t0 = performance.now();
const r = await load(c, t0 + Number(o.seconds) * 1000);
const elapsedS = (performance.now() - t0) / 1000;
const cpu = ownCpuMs() - cpu0;
await target.close();
const sorted = r.latencies.sort((a, b) => a - b);
const calls = sorted.length + r.errors;
process.stdout.write(
  `${JSON.stringify({
    concurrency: c,
    calls,
    ok: sorted.length,
    errors: r.errors,
    firstError: r.firstError,
    rps: calls / elapsedS,
    p50Ms: quantile(sorted, 0.5),
    p99Ms: quantile(sorted, 0.99),
    cpuMs: cpu,
    cpuUsPerCall: (cpu * 1000) / Math.max(1, calls),
  })}\n`,
);
