#!/usr/bin/env node
/**
 * Issue 20's tracing benchmark (docs/benchmarks.md, "Issue 20: tracing"): the same build with
 * tracing off (bench/infergate.yaml) and on (the same file plus a `tracing:` section, sampling
 * ratio 1.0, exporting to an OTLP/HTTP sink in this process that answers every export 200), through
 * bench/ab.mjs: CPU µs per call of the gateway process, interleaved rounds.
 *
 *   node bench/tracing-ab.mjs [--build rev:HEAD] [--workload chat|generate|…] [--rounds 5] [--seconds 3] [--c 1] [--parallel] [--cpu-prof]
 */
import { spawn } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { startSink } from "./lib/otlp-sink.mjs";

const benchDir = dirname(fileURLToPath(import.meta.url));
const { values: o } = parseArgs({
  options: {
    build: { type: "string", default: "rev:HEAD" },
    workload: { type: "string", default: "chat" },
    rounds: { type: "string", default: "5" },
    seconds: { type: "string", default: "3" },
    c: { type: "string", default: "1" },
    parallel: { type: "boolean", default: false },
    "cpu-prof": { type: "boolean", default: false },
  },
});

// The collector: reads each export and answers 200 (bench/lib/otlp-sink.mjs).
const sink = await startSink();
const url = sink.url;

const outDir = join(benchDir, "out", "ab");
mkdirSync(outDir, { recursive: true });
const tracedConfig = join(outDir, "infergate-tracing.yaml");
writeFileSync(tracedConfig, `${readFileSync(join(benchDir, "infergate.yaml"), "utf8")}\ntracing:\n  endpoint: "${url}"\n  samplingRatio: 1.0\n`);

const args = [join(benchDir, "ab.mjs"), "--build", o.build, "--build", `${o.build},BENCH_CONFIG=${tracedConfig}`, "--workload", o.workload, "--rounds", o.rounds, "--seconds", o.seconds, "--c", o.c, ...(o.parallel ? ["--parallel"] : []), ...(o["cpu-prof"] ? ["--cpu-prof"] : [])];
const child = spawn(process.execPath, args, { stdio: "inherit" });
const code = await new Promise((resolve) => child.on("exit", resolve));
process.stderr.write(`[tracing-ab] the sink received ${sink.exports()} export requests, ${sink.bytes()} bytes\n`);
sink.close();
process.exit(code ?? 1);
