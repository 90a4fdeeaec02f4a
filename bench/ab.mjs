#!/usr/bin/env node
/**
 * A/B measurement of infergate builds for one workload, for changes made from the profiles
 * (docs/benchmarks.md): each build runs as its own process against the same fake upstream, and
 * h2load drives them in interleaved rounds (with --parallel: all at once, each with its own h2load),
 * so that the drift of a shared machine hits all alike.
 * The robust figure is CPU µs per call (process user + system time from /proc over the calls it
 * counted in /metrics); latency percentiles come from h2load's log.
 *
 *   node bench/ab.mjs --build A [--build B ...] [--workload chat|cache-hit|generate|embed|embed-float]
 *                     [--c 1] [--seconds 3] [--rounds 3] [--parallel] [--cpu-prof]
 *
 * A build is `rev:REV` (a git revision: its src/ and gen/ are exported and compiled under
 * bench/out/ab/, e.g. `--build rev:HEAD~1 --build rev:HEAD`), or a directory holding a compiled
 * tree (`npx tsc -p tsconfig.json --outDir DIR` and `cp gen/infergate.binpb DIR/gen/`) inside this
 * repository, so that node_modules resolve;
 * `DIR,NAME=VALUE` adds environment variables to that process (`b0,INFERGATE_LOG_LEVEL=warn`);
 * `BENCH_CONFIG=FILE` among them runs it with that config file instead of bench/infergate.yaml. With
 * --cpu-prof, each build runs under `node --cpu-prof` and the hottest functions (self and total
 * time) of its profile are printed. Prints one JSON object per build at the end.
 *
 * `embed` is section 10's uncached Embed of 64 texts, 1536 values each, FP32_BYTES over the base64
 * upstream (model `embed`); `embed-float` the same, FLOAT over the float upstream (`embed-float`).
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { cpuMs, freePort, h2load, httpOk, portFromStdout, scrape, startChild, sumMetric, waitUntil } from "./lib/common.mjs";
import { grpcUnary } from "./lib/grpc-call.mjs";
import { embedPath, embedRequestFrame, texts, writeBody } from "./lib/embed-messages.mjs";
import { writeBodies } from "./lib/messages.mjs";

const benchDir = dirname(fileURLToPath(import.meta.url));
const root = join(benchDir, "..");

/** The compiled tree of a git revision, exported and built once under bench/out/ab/rev-<sha>. */
function buildRevision(rev) {
  const sha = execFileSync("git", ["rev-parse", "--short", rev], { cwd: root }).toString().trim();
  const dir = join(benchDir, "out", "ab", `rev-${sha}`);
  if (!existsSync(join(dir, "dist", "gen", "infergate.binpb"))) {
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    execFileSync("bash", ["-c", `git archive ${sha} src gen tsconfig.json | tar -x -C "${dir}"`], { cwd: root });
    execFileSync(join(root, "node_modules", ".bin", "tsc"), ["-p", "tsconfig.json"], { cwd: dir, stdio: "inherit" });
    execFileSync("cp", ["gen/infergate.binpb", "dist/gen/"], { cwd: dir });
  }
  return join(dir, "dist");
}
const { values: o } = parseArgs({
  options: {
    build: { type: "string", multiple: true, default: [] },
    workload: { type: "string", default: "chat" },
    c: { type: "string", default: "1" },
    seconds: { type: "string", default: "3" },
    rounds: { type: "string", default: "3" },
    "cpu-prof": { type: "boolean", default: false },
    parallel: { type: "boolean", default: false },
    // A request header every call of every build sends, e.g. an API key (bench/budgets-ab.mjs).
    header: { type: "string", multiple: true, default: [] },
  },
});
if (o.build.length === 0) throw new Error("at least one --build DIR");
const outDir = join(benchDir, "out", "ab");
const logDir = join(outDir, "logs");
mkdirSync(logDir, { recursive: true });
const bodies = writeBodies(outDir, { chat: "chat", chatUpstream: "bench", cached: "cached", generate: "gen200", generateUpstream: "bench-t200", slow: "slow" });
const workloads = {
  chat: { path: "/infergate.v1.InferenceService/Chat", body: bodies.chatGrpc },
  "cache-hit": { path: "/infergate.v1.InferenceService/Chat", body: bodies.cacheHitGrpc },
  generate: { path: "/infergate.v1.InferenceService/Generate", body: bodies.generateGrpc },
  embed: { path: embedPath, body: writeBody(outDir, "embed-fp32.grpc", embedRequestFrame("embed", texts("batch", 64), "fp32")) },
  "embed-float": { path: embedPath, body: writeBody(outDir, "embed-float-float.grpc", embedRequestFrame("embed-float", texts("batch", 64), "float")) },
};
const w = workloads[o.workload];
if (w === undefined) throw new Error(`unknown workload ${o.workload}`);
const c = Number(o.c);
const shape = { clients: Math.min(c, 16), streams: Math.ceil(c / Math.min(c, 16)) };
const children = [];

async function start(name, main, fakePort, nodeArgs, extraEnv) {
  const [grpc, http, admin] = [await freePort(), await freePort(), await freePort()];
  // BENCH_CONFIG (a build's environment) runs that build with another config file (bench/tracing-ab.mjs).
  const config = extraEnv.BENCH_CONFIG ?? join(benchDir, "infergate.yaml");
  const child = startChild(name, process.execPath, [...nodeArgs, main, "--config", config, "--listen", `127.0.0.1:${grpc}`, "--http-listen", `127.0.0.1:${http}`, "--admin-listen", `127.0.0.1:${admin}`], {
    logDir,
    cwd: logDir,
    direct: true,
    // No workload here calls the kserve upstreams of bench/infergate.yaml: port 9 (discard) for them.
    env: { BENCH_FAKE_PORT: String(fakePort), BENCH_SLOW_TOKENS: "8", BENCH_KSERVE_GRPC_PORT: "9", BENCH_KSERVE_REST_PORT: "9", BENCH_KSERVE_PROBE_PORT: "9", ...extraEnv },
  });
  children.push(child);
  const adminAddress = `127.0.0.1:${admin}`;
  await waitUntil(`${name} ready`, () => httpOk(`http://${adminAddress}/readyz`), { child });
  const extraHeaders = Object.fromEntries(o.header.map((h) => [h.slice(0, h.indexOf(":")).trim().toLowerCase(), h.slice(h.indexOf(":") + 1).trim()]));
  await waitUntil(`${name} answers`, async () => (await grpcUnary(`127.0.0.1:${grpc}`, w.path, readFileSync(w.body), 10_000, extraHeaders)).status === 0, { child });
  return { name, child, url: `http://127.0.0.1:${grpc}${w.path}`, admin: adminAddress };
}

/** Self and total time per function of the profiles in `dir`. */
function summarize(dir) {
  const self = new Map();
  const total = new Map();
  let all = 0;
  for (const f of readdirSync(dir).filter((x) => x.endsWith(".cpuprofile"))) {
    const prof = JSON.parse(readFileSync(join(dir, f), "utf8"));
    const nodes = new Map(prof.nodes.map((n) => [n.id, n]));
    const parent = new Map();
    for (const n of prof.nodes) for (const ch of n.children ?? []) parent.set(ch, n.id);
    const label = (n) => `${n.callFrame.functionName || "(anonymous)"} ${n.callFrame.url.replace(/^.*node_modules\//, "").replace(/^file:\/\/.*?\/(src|gen)\//, "$1/")}:${n.callFrame.lineNumber + 1}`;
    prof.samples.forEach((id, i) => {
      const n = nodes.get(id);
      if (n.callFrame.functionName === "(idle)") return;
      const dt = prof.timeDeltas[i] ?? 0;
      all += dt;
      self.set(label(n), (self.get(label(n)) ?? 0) + dt);
      const seen = new Set();
      for (let p = id; p !== undefined; p = parent.get(p)) {
        const l = label(nodes.get(p));
        if (!seen.has(l)) {
          seen.add(l);
          total.set(l, (total.get(l) ?? 0) + dt);
        }
      }
    });
  }
  const top = (m, n) => [...m].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, us]) => `${((us / all) * 100).toFixed(1).padStart(5)}%  ${k}`);
  return { busyMs: Math.round(all / 1000), self: top(self, 40), total: top(total, 60) };
}

const fake = startChild("fake", process.execPath, [join(benchDir, "fake-openai-server.mjs"), "--port", "0"], { logDir });
children.push(fake);
const fakePort = await portFromStdout(fake);
try {
  const targets = [];
  for (const [i, b] of o.build.entries()) {
    const profDir = join(outDir, `prof-${i}`);
    rmSync(profDir, { recursive: true, force: true });
    const nodeArgs = o["cpu-prof"] ? ["--cpu-prof", "--cpu-prof-dir", profDir, ...(process.env.BENCH_PROF_INTERVAL_US ? ["--cpu-prof-interval", process.env.BENCH_PROF_INTERVAL_US] : [])] : [];
    // DIR or DIR,NAME=VALUE,…: environment variables for that process (e.g. INFERGATE_LOG_LEVEL=warn).
    const [spec, ...envs] = b.split(",");
    const dir = spec.startsWith("rev:") ? buildRevision(spec.slice(4)) : spec;
    const extraEnv = Object.fromEntries(envs.map((e) => [e.slice(0, e.indexOf("=")), e.slice(e.indexOf("=") + 1)]));
    targets.push({ ...(await start(`ig-${i}`, join(resolve(dir), "src/main.js"), fakePort, nodeArgs, extraEnv)), build: b, profDir, runs: [] });
  }
  const headers = ["content-type: application/grpc", "te: trailers", ...o.header];
  for (const t of targets) await h2load({ url: t.url, body: w.body, headers }, { ...shape, durationS: 1, warmupS: 0 }, { logDir, tag: `${t.name}-warm` });
  /** One measured run of a target: its CPU per call over the calls /metrics counted. */
  async function measureOne(t, r) {
    const before = await scrape(t.admin);
    const cpu0 = cpuMs(t.child.pid);
    const res = await h2load({ url: t.url, body: w.body, headers }, { ...shape, durationS: Number(o.seconds), warmupS: 0 }, { logDir, tag: `${t.name}-r${r}` });
    const cpu = cpuMs(t.child.pid) - cpu0;
    const after = await scrape(t.admin);
    const calls = sumMetric(after, "infergate_requests_total") - sumMetric(before, "infergate_requests_total");
    const run = { rps: Math.round(res.rps), p50Ms: res.p50Ms, p99Ms: res.p99Ms, calls, cpuUsPerCall: Math.round(((cpu * 1000) / Math.max(1, calls)) * 10) / 10 };
    t.runs.push(run);
    process.stderr.write(`[ab] ${t.build} round ${r + 1}: ${JSON.stringify(run)}\n`);
  }
  for (let r = 0; r < Number(o.rounds); r++) {
    if (o.parallel) {
      // Every build under load at the same time: whatever else the machine does hits all alike.
      await Promise.all(targets.map((t) => measureOne(t, r)));
      continue;
    }
    // ABBA order: drift within a round hits each build alike.
    for (const t of r % 2 === 0 ? targets : [...targets].reverse()) await measureOne(t, r);
  }
  for (const t of targets) await t.child.stop();
  // Paired comparison with the first build, round by round: the median ratio of CPU per call.
  const ratios = targets.slice(1).map((t) => {
    const rs = t.runs.map((run, i) => run.cpuUsPerCall / targets[0].runs[i].cpuUsPerCall).sort((a, b) => a - b);
    return { build: t.build, medianCpuRatioToFirst: Math.round(rs[Math.floor(rs.length / 2)] * 1000) / 1000, ratios: rs.map((x) => Math.round(x * 100) / 100) };
  });
  for (const t of targets) {
    const cpuSorted = t.runs.map((x) => x.cpuUsPerCall).sort((a, b) => a - b);
    const p50s = t.runs.map((x) => x.p50Ms).sort((a, b) => a - b);
    const out = { build: t.build, workload: o.workload, c, minCpuUsPerCall: cpuSorted[0], medianCpuUsPerCall: cpuSorted[Math.floor(cpuSorted.length / 2)], minP50Ms: p50s[0], maxRps: Math.max(...t.runs.map((x) => x.rps)), runs: t.runs };
    if (o["cpu-prof"]) {
      const s = summarize(t.profDir);
      process.stdout.write(`\n== ${t.build}: profile, ${s.busyMs} ms busy\n-- self\n${s.self.join("\n")}\n-- total\n${s.total.join("\n")}\n`);
    }
    process.stdout.write(`${JSON.stringify(out)}\n`);
  }
  for (const r of ratios) process.stdout.write(`${JSON.stringify(r)}\n`);
} finally {
  await Promise.all(children.map((ch) => ch.stop().catch(() => {})));
}
