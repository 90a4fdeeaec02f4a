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
 *   node bench/upstream-client.mjs --url http://127.0.0.1:PORT/v1/chat/completions --model M
 *        [--concurrency 64] [--seconds 5] [--warmup-seconds 1]
 *     (prints one line of JSON: calls, errors, CPU µs per call, latency p50/p99 ms, calls/s)
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { Pool } from "undici";
import { quantile } from "./lib/common.mjs";
import { prompt } from "./lib/messages.mjs";

const { values: o } = parseArgs({
  options: {
    url: { type: "string" },
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

const url = new URL(o.url);
const pool = new Pool(url.origin, { connections: 10_000, connectTimeout: 5_000, headersTimeout: 60_000, bodyTimeout: 0, keepAliveTimeout: 30_000 });
const headers = { "content-type": "application/json", accept: "application/json", authorization: "Bearer sk-bench-not-a-secret" };
// The request as the openai kind builds it before JSON.stringify (bench/lib/messages.mjs openaiBody).
const request = { model: o.model, messages: [{ role: "user", content: prompt }], stream: false };

function readText(body) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    body.on("data", (c) => chunks.push(c));
    body.once("end", () => resolve(chunks.length === 1 ? chunks[0].toString("utf8") : Buffer.concat(chunks).toString("utf8")));
    body.once("error", reject);
  });
}

/** One call: request, status check, body read and parsed. */
async function once() {
  const res = await pool.request({ method: "POST", path: url.pathname, headers, body: JSON.stringify(request) });
  const text = await readText(res.body);
  if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}: ${text.slice(0, 200)}`);
  return JSON.parse(text);
}

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
await pool.close();
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
