#!/usr/bin/env node
/**
 * Issue 20's budgets benchmark (docs/benchmarks.md, "Issue 20: budgets"): the same build with API
 * keys on and budgets off (bench/infergate.yaml plus one key), and on in memory (the same plus a
 * `budgets:` section: the key with a day's token limit and a month's money limit, in a group with
 * an hour's limit, all far from reached), through bench/ab.mjs: CPU µs per call of the gateway
 * process, interleaved rounds. Each call of the "on" build is checked against both budgets and
 * charged to the key, the group and the total for three periods.
 *
 *   node bench/budgets-ab.mjs [--build rev:HEAD] [--workload chat] [--rounds 5] [--seconds 3] [--c 1]
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const benchDir = dirname(fileURLToPath(import.meta.url));
const { values: o } = parseArgs({
  options: {
    build: { type: "string", default: "rev:HEAD" },
    workload: { type: "string", default: "chat" },
    rounds: { type: "string", default: "5" },
    seconds: { type: "string", default: "3" },
    c: { type: "string", default: "1" },
  },
});

const key = "sk-bench-budgets-not-a-secret";
const sha256 = createHash("sha256").update(key).digest("hex");
const base = readFileSync(join(benchDir, "infergate.yaml"), "utf8");
const keyed = `${base}\nauth:\n  enabled: true\n  keys:\n    - { name: bench, sha256: ${sha256} }\n`;
const budgets = `${keyed}budgets:\n  timeZone: Europe/Berlin\n  keys:\n    bench: { day: { tokens: 1000000000000 }, month: { money: 1000000000 } }\n  groups:\n    - { name: team, keys: [bench], limits: { hour: { tokens: 1000000000000 } } }\n`;

const outDir = join(benchDir, "out", "ab");
mkdirSync(outDir, { recursive: true });
const offConfig = join(outDir, "infergate-budgets-off.yaml");
const onConfig = join(outDir, "infergate-budgets-on.yaml");
writeFileSync(offConfig, keyed);
writeFileSync(onConfig, budgets);

const args = [
  join(benchDir, "ab.mjs"),
  "--build", `${o.build},BENCH_CONFIG=${offConfig}`,
  "--build", `${o.build},BENCH_CONFIG=${onConfig}`,
  "--header", `authorization: Bearer ${key}`,
  "--workload", o.workload, "--rounds", o.rounds, "--seconds", o.seconds, "--c", o.c,
];
const child = spawn(process.execPath, args, { stdio: "inherit" });
process.exitCode = await new Promise((resolve) => child.on("exit", resolve));
