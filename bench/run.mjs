#!/usr/bin/env node
/**
 * The benchmarks of infergate (issues 5, 16 and 19), on loopback only, every process separate: the
 * fake OpenAI upstream, the fake KServe v2 server, infergate (`node bin/infergate.js`), the grpc-js
 * and connect-node ceilings, Portkey when `make bench-peers` installed it, and the load (h2load,
 * bench/stream-client.mjs, bench/predict-client.mjs, bench/upstream-client.mjs). Writes the
 * results as JSON and as Markdown (bench/lib/report.mjs).
 *
 *   node bench/run.mjs [--quick] [--profile] [--section embeddings]
 *                                                (normally through bench/run.sh: make bench)
 *
 * Full mode writes bench/results.json and bench/RESULTS.md; --quick runs each step for about a
 * second and writes to bench/out/ (CI runs it so that the harness never rots; speed is not
 * judged there). --profile also runs infergate once under `node --cpu-prof` for the unary and
 * streaming loads and writes its profiles and a summary of the hottest functions to bench/out/.
 *
 * --dist DIR measures the compiled tree in DIR instead of dist/ (inside this repository, so that
 * node_modules resolve): e.g. a committed revision's build (bench/ab.mjs `--build rev:REV` makes
 * one under bench/out/ab/), when others rebuild dist/ from a working tree meanwhile.
 *
 * --section NAME runs one section alone (`embeddings`, bench/lib/embed-bench.mjs; `observe`, issue
 * 20's tracing and budgets overheads, bench/lib/observe-bench.mjs):
 * with --quick it writes bench/out/results-NAME-quick.json and RESULTS-NAME-quick.md; in full
 * mode it replaces that section's results in bench/results.json (the others stay as the last full
 * run left them) and renders bench/RESULTS.md again, which says when each part was measured.
 */
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { fromBinary } from "@bufbuild/protobuf";
import { ChatResponseSchema } from "../dist/gen/infergate/v1/inference_service_pb.js";
import {
  cpuMs,
  freePort,
  grpcFrame,
  h2load,
  httpOk,
  killAll,
  memory,
  portFromStdout,
  quantile,
  run,
  scrape,
  sleep,
  startChild,
  sumMetric,
  waitUntil,
} from "./lib/common.mjs";
import { grpcUnary } from "./lib/grpc-call.mjs";
import { chatRequestBytes, writeBodies } from "./lib/messages.mjs";
import { observePlan, observeSection, renderObserveOnly } from "./lib/observe-bench.mjs";
import { floorSection, predictPlan, predictSection, startFakeKserve } from "./lib/predict-bench.mjs";
import { predictPath, writePredictBodies } from "./lib/predict-messages.mjs";
import { embedPlan, embedSection } from "./lib/embed-bench.mjs";
import { renderEmbedOnly } from "./lib/embed-report.mjs";
import { summarizeProfiles } from "./lib/profile.mjs";
import { renderReport } from "./lib/report.mjs";

const benchDir = dirname(fileURLToPath(import.meta.url));
const root = join(benchDir, "..");
const { values: flags } = parseArgs({ options: { quick: { type: "boolean", default: false }, profile: { type: "boolean", default: false }, section: { type: "string" }, dist: { type: "string" } } });
const quick = flags.quick;
/** The sections --section can run alone. */
const sections = ["embeddings", "observe"];
if (flags.section !== undefined && !sections.includes(flags.section)) throw new Error(`--section ${flags.section}: one of ${sections.join(", ")}`);

/** How long and how much, per mode. */
const plan = quick
  ? { durationS: 1, warmupS: 1, rounds: 1, cacheRounds: 1, cacheDurationS: 1, concurrency: [1, 64, 256], ttftStreams: 20, holdStreams: 500, holdConnections: 4, holdTokens: 8, holdRampMs: 1000, rateStreams: 200, rateSteps: 1 }
  : { durationS: 5, warmupS: 1, rounds: 2, cacheRounds: 9, cacheDurationS: 3, concurrency: [1, 64, 256], ttftStreams: 300, holdStreams: 10_000, holdConnections: 20, holdTokens: 30, holdRampMs: 8000, rateStreams: 5_000, rateSteps: 4 };

const outDir = join(benchDir, "out");
const logDir = join(outDir, quick ? "logs-quick" : "logs");
mkdirSync(logDir, { recursive: true });
const resultsJson = quick ? join(outDir, "results-quick.json") : join(benchDir, "results.json");
const resultsMd = quick ? join(outDir, "RESULTS-quick.md") : join(benchDir, "RESULTS.md");
const beforeJson = join(benchDir, "results-before.json");

// infergate runs from a copy of dist/ taken now (bench/run.sh has just built it), so that a build
// made while the benchmarks run (a test run's, say) cannot change the code under test midway.
// It is what `node bin/infergate.js` runs; bin/ only imports dist/src/main.js.
const build = join(outDir, "build");
rmSync(build, { recursive: true, force: true });
cpSync(flags.dist === undefined ? join(root, "dist") : resolve(flags.dist), build, { recursive: true });
const infergateMain = join(build, "src/main.js");
/** What was measured: the compiled tree and the repository's HEAD then (RESULTS.md names them). */
const measured = { dist: flags.dist ?? "dist/ (built from the working tree)", head: (() => {
  try {
    return execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: root }).toString().trim();
  } catch {
    return undefined;
  }
})() };

const models = { chat: "chat", chatUpstream: "bench", cached: "cached", generate: "gen200", generateUpstream: "bench-t200", slow: "slow" };
const bodies = writeBodies(outDir, models);
const chatPath = "/infergate.v1.InferenceService/Chat";
const generatePath = "/infergate.v1.InferenceService/Generate";
const grpcHeaders = ["content-type: application/grpc", "te: trailers"];
const jsonHeaders = ["content-type: application/json"];

const children = [];
/** The KServe fake's ports for bench/infergate.yaml (BENCH_KSERVE_*), once it runs. */
let kserveEnv = {};
const say = (msg) => process.stdout.write(`[bench] ${msg}\n`);

/** The share of connections and streams per connection for a concurrency over HTTP/2. */
function h2Shape(c) {
  const clients = Math.min(c, 16);
  return { clients, streams: Math.ceil(c / clients) };
}

// --- processes -------------------------------------------------------------------------------

async function startFake() {
  const child = startChild("fake-openai", process.execPath, [join(benchDir, "fake-openai-server.mjs"), "--port", "0"], { logDir });
  children.push(child);
  const port = await portFromStdout(child);
  return { child, port, url: `http://127.0.0.1:${port}` };
}

/**
 * infergate as its own process; `nodeArgs` go to node (e.g. --cpu-prof). Its ports are probed
 * free first, but another process (a client's ephemeral port) may take one before infergate binds
 * it (seen: EADDRINUSE in a --workers worker): then it is started again on other ports, twice at most.
 */
async function startInfergate(name, fakePort, options = {}) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startInfergateOnce(name, fakePort, options);
    } catch (err) {
      if (attempt >= 3 || !/exited/.test(String(err))) throw err;
      console.error(`[bench] ${name}: ${err instanceof Error ? err.message : err}; starting it again on other ports`);
    }
  }
}

async function startInfergateOnce(name, fakePort, { workers = 1, nodeArgs = [], config = join(benchDir, "infergate.yaml"), callHeaders = {} } = {}) {
  const [grpc, http, admin] = [await freePort(), await freePort(), await freePort()];
  const args = [
    ...nodeArgs,
    infergateMain,
    "--config", config,
    "--listen", `127.0.0.1:${grpc}`,
    "--http-listen", `127.0.0.1:${http}`,
    "--admin-listen", `127.0.0.1:${admin}`,
    ...(workers > 1 ? ["--workers", String(workers)] : []),
  ];
  const child = startChild(name, process.execPath, args, {
    logDir,
    cwd: logDir,
    direct: true,
    // Per-call log lines go where a deployment's would: written, at info level, to stdout (here
    // a file), so their cost is in the figures.
    env: { BENCH_FAKE_PORT: String(fakePort), BENCH_SLOW_TOKENS: String(plan.holdTokens), ...kserveEnv },
  });
  children.push(child);
  const adminAddress = `127.0.0.1:${admin}`;
  await waitUntil(`${name} to be ready`, () => httpOk(`http://${adminAddress}/readyz`), { child });
  // With workers, each binds in its own time: wait until a call succeeds on several connections.
  const address = `127.0.0.1:${grpc}`;
  await waitUntil(`${name} to answer`, async () => (await grpcUnary(address, chatPath, readFileSync(bodies.chatGrpc), 10_000, callHeaders)).status === 0, { child });
  return { child, address, adminAddress, httpAddress: `127.0.0.1:${http}`, url: `http://${address}` };
}

async function startEcho(name, script, responseFile) {
  const child = startChild(name, process.execPath, [join(benchDir, script), "--port", "0", "--response", responseFile], { logDir });
  children.push(child);
  const port = await portFromStdout(child);
  return { child, address: `127.0.0.1:${port}`, url: `http://127.0.0.1:${port}` };
}

/** Portkey, when `make bench-peers` installed it; otherwise {skipped: reason}. */
async function startPortkey(fakeUrl) {
  const peers = join(benchDir, "peers");
  const main = join(peers, "node_modules/@portkey-ai/gateway/build/start-server.js");
  if (!existsSync(main)) return { skipped: "not installed (run `make bench-peers`)" };
  const version = JSON.parse(readFileSync(join(peers, "node_modules/@portkey-ai/gateway/package.json"), "utf8")).version;
  const port = await freePort();
  const child = startChild("portkey", process.execPath, ["--import", "./loopback-only.mjs", "--import", "./node20-compat.mjs", main, `--port=${port}`, "--headless"], { logDir, cwd: peers, direct: true });
  children.push(child);
  const headers = ["x-portkey-provider: openai", `x-portkey-custom-host: ${fakeUrl}/v1`, "authorization: Bearer sk-bench-not-a-secret"];
  const url = `http://127.0.0.1:${port}/v1/chat/completions`;
  try {
    await waitUntil("portkey to answer", async () => {
      const res = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json", ...Object.fromEntries(headers.map((h) => h.split(": "))) },
        body: readFileSync(bodies.chatJson),
        signal: AbortSignal.timeout(2000),
      });
      await res.arrayBuffer();
      return res.status === 200;
    }, { child, timeoutMs: 60_000 });
  } catch (err) {
    return { skipped: `could not be started here: ${err.message}` };
  }
  return { child, url, headers, version };
}

// --- load runs -------------------------------------------------------------------------------

/**
 * One measured h2load run against a target, with the target process's CPU time over the run and,
 * for infergate, its call counts by status from /metrics.
 */
async function measure(target, concurrency, tag, { warm = false, durationS = plan.durationS } = {}) {
  const shape = target.h1 ? { clients: concurrency, streams: 1 } : h2Shape(concurrency);
  const load = { ...shape, durationS, warmupS: 0 };
  if (warm) await h2load(target, { ...load, durationS: plan.warmupS }, { logDir, tag: `${tag}-warm` });
  const before = target.admin === undefined ? undefined : await scrape(target.admin);
  const cpu0 = cpuMs(target.pid);
  const r = await h2load(target, load, { logDir, tag });
  const cpu = cpuMs(target.pid) - cpu0;
  const out = { rps: r.rps, p50Ms: r.p50Ms, p90Ms: r.p90Ms, p99Ms: r.p99Ms, requests: r.done, succeeded: r.succeeded, failed: r.failed + r.errored + r.timeout, non2xx: r.non2xx, cpuMs: cpu, cpuUsPerCall: (cpu * 1000) / Math.max(1, r.done) };

  if (before !== undefined) {
    const after = await scrape(target.admin);
    const delta = (...parts) => sumMetric(after, "infergate_requests_total", ...parts) - sumMetric(before, "infergate_requests_total", ...parts);
    const calls = delta();
    const ok = delta('code="OK"');
    const cancelled = delta('code="CANCELLED"');
    out.calls = calls;
    out.ok = ok;
    // h2load resets the streams still open when its time is up: those few are cancels, not errors.
    out.cancelledAtEnd = cancelled;
    out.errors = calls - ok - cancelled;
    out.cpuUsPerCall = (cpu * 1000) / Math.max(1, calls);
  }
  return out;
}

/**
 * Pools rounds of one target: mean throughput; percentiles as the mean of the rounds'. Each
 * round's p50 is kept too (p50MsByRound), for ratios taken round by round.
 */
function pool(runs) {
  const mean = (k) => runs.reduce((s, r) => s + (r[k] ?? 0), 0) / runs.length;
  const sum = (k) => runs.reduce((s, r) => s + (r[k] ?? 0), 0);
  const out = { rounds: runs.length, p50MsByRound: runs.map((r) => r.p50Ms), cpuUsPerCallByRound: runs.map((r) => r.cpuUsPerCall), rps: mean("rps"), p50Ms: mean("p50Ms"), p90Ms: mean("p90Ms"), p99Ms: mean("p99Ms"), requests: sum("requests"), failed: sum("failed"), non2xx: sum("non2xx"), cpuUsPerCall: mean("cpuUsPerCall") };
  if (runs[0].calls !== undefined) {
    out.calls = sum("calls");
    out.errors = sum("errors");
    out.cancelledAtEnd = sum("cancelledAtEnd");
  }
  return out;
}

/**
 * Runs every target at one concurrency, interleaved: round 1 of each, then round 2 of each, so
 * that drift of the machine hits all alike. `rounds` and `durationS` (per run) default to the plan's.
 */
async function interleaved(targets, concurrency, label, { rounds = plan.rounds, durationS = plan.durationS } = {}) {
  const runs = Object.fromEntries(Object.keys(targets).map((k) => [k, []]));
  for (let round = 0; round < rounds; round++) {
    for (const [name, target] of Object.entries(targets)) {
      say(`${label} c=${concurrency} ${name} round ${round + 1}/${rounds}`);
      const tag = `${label}-${name}-c${concurrency}-r${round}`.replace(/[^A-Za-z0-9.-]+/g, "-");
      runs[name].push(await measure(target, concurrency, tag, { warm: round === 0, durationS }));
    }
  }
  return Object.fromEntries(Object.entries(runs).map(([k, v]) => [k, pool(v)]));
}

async function streamClient(args, timeoutMs = 600_000) {
  const out = await run(process.execPath, [join(benchDir, "stream-client.mjs"), ...args], timeoutMs);
  return JSON.parse(out.trim().split("\n").at(-1));
}

function summarizeTtft(r) {
  const ttft = [...r.ttftMs].sort((a, b) => a - b);
  const tokensPerS = r.totalMs.map((t, i) => (r.tokens[i] * 1000) / t).sort((a, b) => a - b);
  const tokens = [...new Set(r.tokens)];
  return { streams: r.streams, ok: r.ok, errors: r.errors, firstError: r.firstError, ttftP50Ms: quantile(ttft, 0.5), ttftP99Ms: quantile(ttft, 0.99), tokensPerStreamS: quantile(tokensPerS, 0.5), tokensSeen: tokens };
}

// --- the benchmarks --------------------------------------------------------------------------

async function main() {
  const started = new Date();
  const h2loadVersion = (await run("h2load", ["--version"])).trim();
  const results = {
    mode: quick ? "quick" : "full",
    date: started.toISOString(),
    machine: {
      cores: cpus().length,
      cpu: cpus()[0]?.model ?? "unknown",
      ramGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
      node: process.version,
      h2load: h2loadVersion,
    },
    plan,
  };

  const fake = await startFake();
  const kserve = await startFakeKserve({ startChild, logDir, children });
  kserveEnv = kserve.env;
  const ig = await startInfergate("infergate", fake.port);
  const igTarget = (body, path) => ({ url: `${ig.url}${path}`, body, headers: grpcHeaders, pid: ig.child.pid, admin: ig.adminAddress });
  const direct = { url: `${fake.url}/v1/chat/completions`, body: bodies.chatJson, headers: jsonHeaders, h1: true, pid: fake.child.pid };
  const portkey = await startPortkey(fake.url);
  results.peer = portkey.skipped === undefined ? { name: "Portkey AI gateway", version: portkey.version } : { name: "Portkey AI gateway", skipped: portkey.skipped };
  const portkeyTarget = (body) =>
    portkey.skipped === undefined ? { url: portkey.url, body, headers: [...jsonHeaders, ...portkey.headers], h1: true, pid: portkey.child.pid } : undefined;

  // Sanity: the answers the load will get, and the cache-hit path really hitting.
  const sample = await grpcUnary(ig.address, chatPath, readFileSync(bodies.cacheHitGrpc));
  const hit = await grpcUnary(ig.address, chatPath, readFileSync(bodies.cacheHitGrpc));
  const miss = await grpcUnary(ig.address, chatPath, readFileSync(bodies.cacheMissGrpc));
  if (sample.status !== 0 || hit.headers["infergate-cache"] !== "hit" || miss.headers["infergate-cache"] !== "miss") {
    throw new Error(`unexpected answers: ${JSON.stringify({ sample: sample.status, hit: hit.headers["infergate-cache"], miss: miss.headers["infergate-cache"] })}`);
  }
  const chatAnswer = fromBinary(ChatResponseSchema, hit.message);
  const responseFile = join(outDir, "chat-response.bin");
  writeFileSync(responseFile, hit.message);
  results.messages = { chatRequestBytes: readFileSync(bodies.chatGrpc).length - 5, chatResponseBytes: hit.message.length, openaiRequestBytes: readFileSync(bodies.chatJson).length, openaiAnswerBytes: 350, answerText: chatAnswer.message?.content[0]?.part.value?.length };

  // 1. Overhead: the same unary chat, direct vs through infergate (vs Portkey), interleaved.
  results.overhead = {};
  for (const c of plan.concurrency) {
    const targets = { direct, infergate: igTarget(bodies.chatGrpc, chatPath) };
    const pk = portkeyTarget(bodies.chatJson);
    if (pk !== undefined) targets.portkey = pk;
    results.overhead[c] = await interleaved(targets, c, "overhead");
  }

  // 2. Ceilings: trivial servers with the same messages, and infergate's cache-hit path.
  const echoGrpc = await startEcho("echo-grpc-js", "echo-grpc-js.mjs", responseFile);
  const echoConnect = await startEcho("echo-connect", "echo-connect.mjs", responseFile);
  results.ceiling = {};
  for (const c of [64, 256]) {
    results.ceiling[c] = await interleaved(
      {
        "grpc-js echo": { url: `${echoGrpc.url}${chatPath}`, body: bodies.chatGrpc, headers: grpcHeaders, pid: echoGrpc.child.pid },
        "connect-node echo": { url: `${echoConnect.url}${chatPath}`, body: bodies.chatGrpc, headers: grpcHeaders, pid: echoConnect.child.pid },
        "infergate cache hit": igTarget(bodies.cacheHitGrpc, chatPath),
      },
      c,
      "ceiling",
    );
  }
  await echoConnect.child.stop();

  // 3. Cache: a hit against a miss whose upstream answers in 1 ms, one call at a time; the
  // grpc-js echo at the same concurrency, in the same rounds, is the floor a hit cannot go below.
  // A hit is about 0.15 ms: a few busy seconds of this shared machine move one run's p50 by a
  // third, so this section runs many short rounds and its figure is the median of the rounds'
  // hit/miss ratios, each from a hit and a miss measured seconds apart.
  results.cache = await interleaved(
    {
      miss: igTarget(bodies.cacheMissGrpc, chatPath),
      hit: igTarget(bodies.cacheHitGrpc, chatPath),
      "grpc-js echo": { url: `${echoGrpc.url}${chatPath}`, body: bodies.chatGrpc, headers: grpcHeaders, pid: echoGrpc.child.pid },
    },
    1,
    "cache",
    { rounds: plan.cacheRounds, durationS: plan.cacheDurationS },
  );
  await echoGrpc.child.stop();

  // 4. Streaming: 200-token Generate; TTFT one stream at a time, then aggregate tokens/s.
  const ttftRuns = { direct: [], infergate: [], portkey: [] };
  const perRound = Math.ceil(plan.ttftStreams / 3);
  // Upstream connections infergate opened per stream it completed (issue 16): the fake's counts
  // around each infergate run (nothing else runs meanwhile).
  const upstreamStats = async () => (await fetch(`${fake.url}/stats`)).json();
  const ttftUpstream = { connections: 0, streams: 0 };
  for (let round = 0; round < 3; round++) {
    say(`streaming TTFT round ${round + 1}/3`);
    ttftRuns.direct.push(await streamClient(["--mode", "ttft", "--target", "sse", "--url", `${fake.url}/v1/chat/completions`, "--n", String(perRound), "--body", bodies.generateJson]));
    const up0 = await upstreamStats();
    ttftRuns.infergate.push(await streamClient(["--mode", "ttft", "--target", "grpc", "--url", `${ig.url}${generatePath}`, "--n", String(perRound), "--body", bodies.generateGrpc]));
    const up1 = await upstreamStats();
    ttftUpstream.connections += up1.connections - up0.connections;
    ttftUpstream.streams += up1.streams - up0.streams;
    if (portkey.skipped === undefined) {
      ttftRuns.portkey.push(
        await streamClient(["--mode", "ttft", "--target", "sse", "--url", portkey.url, "--n", String(perRound), "--body", bodies.generateJson, ...portkey.headers.flatMap((h) => ["--header", h])]),
      );
    }
  }
  const merge = (rs) => ({
    streams: rs.reduce((s, r) => s + r.streams, 0),
    ok: rs.reduce((s, r) => s + r.ok, 0),
    errors: rs.reduce((s, r) => s + r.errors, 0),
    firstError: rs.find((r) => r.firstError)?.firstError,
    ttftMs: rs.flatMap((r) => r.ttftMs),
    totalMs: rs.flatMap((r) => r.totalMs),
    tokens: rs.flatMap((r) => r.tokens),
  });
  results.streaming = { ttft: Object.fromEntries(Object.entries(ttftRuns).filter(([, v]) => v.length > 0).map(([k, v]) => [k, summarizeTtft(merge(v))])) };
  const streamTargets = { direct: { ...direct, body: bodies.generateJson }, infergate: igTarget(bodies.generateGrpc, generatePath) };
  const pkStream = portkeyTarget(bodies.generateJson);
  if (pkStream !== undefined) streamTargets.portkey = pkStream;
  results.streaming.aggregate = await interleaved(streamTargets, 64, "stream");
  // Streams paced like a model's tokens (20 tokens 5 ms apart), 64 at a time, each run to its end
  // (the stream client; h2load would cut off the streams in flight when its time is up, and a cut
  // stream rightly closes its upstream connection): each ends with its body's last chunk a
  // millisecond after [DONE] (the fake's default, as real servers send it). A first run fills
  // infergate's pool; the connections of the second are counted.
  const pacedBody = join(outDir, "generate-paced.grpc");
  writeFileSync(pacedBody, grpcFrame(chatRequestBytes("paced", { generate: true })));
  const pacedArgs = (n) => ["--mode", "ttft", "--target", "grpc", "--url", `${ig.url}${generatePath}`, "--n", String(n), "--concurrency", "64", "--body", pacedBody];
  say("streaming: paced streams, 64 at a time");
  await streamClient(pacedArgs(128));
  const up0 = await upstreamStats();
  const paced = await streamClient(pacedArgs(quick ? 640 : 3200));
  const up1 = await upstreamStats();
  results.streaming.upstreamConnections = {
    ttft: ttftUpstream,
    paced: { connections: up1.connections - up0.connections, streams: up1.streams - up0.streams, errors: paced.errors },
  };

  // 5. Cores: the same unary load through 1 and 2 workers.
  const ig2 = await startInfergate("infergate-2-workers", fake.port, { workers: 2 });
  results.workers = {};
  for (const c of [64, 256]) {
    results.workers[c] = await interleaved(
      { "1 worker": igTarget(bodies.chatGrpc, chatPath), "2 workers": { url: `${ig2.url}${chatPath}`, body: bodies.chatGrpc, headers: grpcHeaders, pid: ig2.child.pid } },
      c,
      "workers",
    );
  }
  await ig2.child.stop();
  if (portkey.skipped === undefined) await portkey.child.stop();
  await ig.child.stop();

  // 6. 10,000 streams held open in one fresh infergate process.
  results.hold = await holdStreams(fake.port);
  results.eventRate = await eventRateSteps(fake.port);

  // 8. Predict against the KServe fake: small calls direct vs infergate (gRPC and REST upstreams),
  // 4 MiB calls one at a time with a probe of small calls beside them (bench/lib/predict-bench.mjs).
  const pPlan = predictPlan(quick);
  results.predict = await predictSection({ plan: pPlan, say, interleaved, startInfergate, fakePort: fake.port, kserve, outDir, grpcHeaders, jsonHeaders });

  // 9. The upstream-client floors, no infergate: an undici client's own CPU per call to the fake
  // OpenAI upstream (a proxied Chat's client half), and a grpc-js client's to the KServe fake's
  // ModelInfer (a proxied Predict's client half).
  const floors = await floorSection({ plan: pPlan, say, fake, upstreamModel: models.chatUpstream, kserve });
  results.floor = floors.http;
  results.floorGrpc = floors.grpc;

  // 10. Embeddings: a batch of 64 texts direct vs through infergate, uncached and half cached
  // (bench/lib/embed-bench.mjs).
  results.embeddings = await runEmbedSection(fake);

  // 11. Issue 20: the CPU tracing and budgets add per call (bench/lib/observe-bench.mjs).
  results.observe = await observeSection({ say, startInfergate, measure, benchDir, outDir, bodies, chatPath, generatePath, grpcHeaders }, fake, observePlan(quick));

  // 7. Profiles (optional): where infergate spends its CPU under the unary and streaming loads,
  // and under small Predicts over the gRPC upstream.
  if (flags.profile) {
    results.profile = await profile(fake.port);
    results.profilePredict = await profilePredict(fake.port);
  }
  await kserve.stop();

  await fake.child.stop();
  results.finished = new Date().toISOString();
  results.elapsedS = Math.round((Date.now() - started.getTime()) / 1000);
  const before = !quick && existsSync(beforeJson) ? JSON.parse(readFileSync(beforeJson, "utf8")) : undefined;
  writeFileSync(resultsJson, `${JSON.stringify(results, null, 2)}\n`);
  writeFileSync(resultsMd, renderReport(results, before));
  say(`wrote ${resultsMd} and ${resultsJson} in ${results.elapsedS}s`);
}

/** Section 10 with run.mjs's helpers (bench/lib/embed-bench.mjs). */
function runEmbedSection(fake) {
  return embedSection({ plan: embedPlan(quick), measured, say, interleaved, startInfergate, fake, outDir, logDir, grpcHeaders, jsonHeaders, profile: flags.profile, h2load });
}

/**
 * One section alone (--section): the fakes, then the section. Quick mode writes its results to
 * bench/out/; full mode puts them into bench/results.json in place of that section's last ones and
 * renders bench/RESULTS.md again from the whole.
 */
async function sectionMain(name) {
  if (!quick && !existsSync(resultsJson)) throw new Error(`${resultsJson} is missing: run the whole bench (make bench) once, then sections alone`);
  const started = new Date();
  const fake = await startFake();
  const kserve = await startFakeKserve({ startChild, logDir, children });
  kserveEnv = kserve.env;
  const results = { mode: quick ? "quick" : "full", section: name, date: started.toISOString(), machine: { cores: cpus().length, cpu: cpus()[0]?.model ?? "unknown", ramGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10, node: process.version } };
  results[name] =
    name === "embeddings"
      ? await runEmbedSection(fake)
      : await observeSection({ say, startInfergate, measure, benchDir, outDir, bodies, chatPath, generatePath, grpcHeaders }, fake, observePlan(quick));
  await kserve.stop();
  await fake.child.stop();
  results.elapsedS = Math.round((Date.now() - started.getTime()) / 1000);
  results[name].elapsedS = results.elapsedS;
  results[name].machine = results.machine;
  if (quick) {
    const json = join(outDir, `results-${name}-quick.json`);
    const md = join(outDir, `RESULTS-${name}-quick.md`);
    writeFileSync(json, `${JSON.stringify(results, null, 2)}\n`);
    writeFileSync(md, name === "embeddings" ? renderEmbedOnly(results) : renderObserveOnly(results));
    say(`wrote ${md} and ${json} in ${results.elapsedS}s`);
    return;
  }
  const whole = JSON.parse(readFileSync(resultsJson, "utf8"));
  whole[name] = results[name];
  const before = existsSync(beforeJson) ? JSON.parse(readFileSync(beforeJson, "utf8")) : undefined;
  writeFileSync(resultsJson, `${JSON.stringify(whole, null, 2)}\n`);
  writeFileSync(resultsMd, renderReport(whole, before));
  say(`wrote the ${name} section into ${resultsMd} and ${resultsJson} in ${results.elapsedS}s`);
}

async function holdStreams(fakePort) {
  say(`holding ${plan.holdStreams} Generate streams (one token a second, ${plan.holdTokens} tokens each)`);
  return heldRun("infergate-hold", fakePort, { streams: plan.holdStreams, connections: plan.holdConnections, rampMs: plan.holdRampMs, body: bodies.generateSlowGrpc, scrapeMs: 2000 });
}

/**
 * Held streams in one fresh infergate process: the stream client opens `streams` Generate streams
 * over `connections` HTTP/2 connections within `rampMs` and holds each until it ends. infergate's
 * RSS every 200 ms, its event-loop delay p99 and max from /metrics every `scrapeMs` (each scrape
 * resets prom-client's histogram: one window per scrape), its CPU over the whole run and, from the
 * stream client, over the steady part (every stream open and past its first event, none ended):
 * CPU per event there, and the loop delay of the windows inside it.
 */
async function heldRun(name, fakePort, { streams, connections, rampMs, body, scrapeMs }) {
  const ig = await startInfergate(name, fakePort);
  const rss0 = memory(ig.child.pid).rssKiB;
  await scrape(ig.adminAddress); // resets the event-loop delay histogram
  const lag = [];
  let peakKiB = rss0;
  let openPeak = 0;
  let stop = false;
  let scrapeFailures = 0;
  const sampler = (async () => {
    let lastScrape = Date.now();
    while (!stop) {
      peakKiB = Math.max(peakKiB, memory(ig.child.pid).rssKiB);
      if (Date.now() - lastScrape >= scrapeMs) {
        const from = lastScrape;
        lastScrape = Date.now();
        try {
          const m = await scrape(ig.adminAddress);
          lag.push({ fromMs: from, atMs: Date.now(), p99Ms: sumMetric(m, "infergate_process_nodejs_eventloop_lag_p99_seconds") * 1000, maxMs: sumMetric(m, "infergate_process_nodejs_eventloop_lag_max_seconds") * 1000, inFlight: sumMetric(m, "infergate_in_flight_calls") });
          openPeak = Math.max(openPeak, lag.at(-1).inFlight);
        } catch {
          scrapeFailures++;
        }
      }
      await sleep(200);
    }
  })();
  const cpu0 = cpuMs(ig.child.pid);
  const r = await streamClient([
    "--mode", "hold",
    "--url", `${ig.url}${generatePath}`,
    "--streams", String(streams),
    "--connections", String(connections),
    "--ramp-ms", String(rampMs),
    "--timeout-ms", String(300_000),
    "--body", body,
    "--cpu-pid", String(ig.child.pid),
  ]);
  const cpu = cpuMs(ig.child.pid) - cpu0;
  stop = true;
  await sampler;
  const final = await scrape(ig.adminAddress);
  lag.push({ fromMs: Date.now(), atMs: Date.now(), p99Ms: sumMetric(final, "infergate_process_nodejs_eventloop_lag_p99_seconds") * 1000, maxMs: sumMetric(final, "infergate_process_nodejs_eventloop_lag_max_seconds") * 1000, inFlight: 0 });
  const errorsByMetrics = sumMetric(final, "infergate_requests_total", 'rpc="Generate"') - sumMetric(final, "infergate_requests_total", 'rpc="Generate"', 'code="OK"');
  const peakHwmKiB = memory(ig.child.pid).peakKiB;
  await ig.child.stop();
  const p99s = lag.map((l) => l.p99Ms);
  const steady = r.steady ?? undefined;
  const steadyLag = steady === undefined ? [] : lag.filter((l) => l.fromMs >= steady.fromEpochMs && l.atMs <= steady.toEpochMs).map((l) => l.p99Ms);
  return {
    streams: r.streams,
    ok: r.ok,
    errors: r.errors,
    errorsByMetrics,
    statuses: r.statuses,
    firstError: r.firstError,
    eventsReceived: r.events,
    maxInFlightSeen: openPeak,
    rampedMs: r.rampedMs,
    allFirstEventsMs: r.allFirstEventsMs,
    totalMs: r.totalMs,
    idleRssMiB: rss0 / 1024,
    peakRssMiB: Math.max(peakKiB, peakHwmKiB) / 1024,
    rssPerStreamKiB: (Math.max(peakKiB, peakHwmKiB) - rss0) / r.streams,
    eventLoopDelayP99Ms: Math.max(...p99s),
    eventLoopDelayP99WindowsMs: p99s.map((v) => Math.round(v * 10) / 10),
    eventLoopDelayMaxMs: Math.max(...lag.map((l) => l.maxMs)),
    cpuS: cpu / 1000,
    steady: steady === undefined ? undefined : { ms: steady.ms, events: steady.events, eventsPerS: steady.eventsPerS, cpuUsPerEvent: steady.cpuUsPerEvent, eventLoopDelayP99Ms: steadyLag.length === 0 ? undefined : Math.max(...steadyLag), windows: steadyLag.length },
    scrapeFailures,
  };
}

/**
 * The highest event rate one process sustains with an event-loop delay p99 ≤ 50 ms: held streams
 * (plan.rateStreams, about 12 s each) at a token every 500, 333, 250 and 200 ms, one fresh process
 * per step, in increasing order until a step's steady part has a window above 50 ms (or lost
 * events: errors). The loop delay is judged in the steady part only (no set-ups or teardowns).
 */
async function eventRateSteps(fakePort) {
  const steps = [
    { model: "rate500", intervalMs: 500 },
    { model: "rate333", intervalMs: 333 },
    { model: "rate250", intervalMs: 250 },
    { model: "rate200", intervalMs: 200 },
  ].slice(0, plan.rateSteps);
  const out = { streams: plan.rateStreams, steps: [] };
  for (const step of steps) {
    const body = join(outDir, `generate-${step.model}.grpc`);
    writeFileSync(body, grpcFrame(chatRequestBytes(step.model, { generate: true })));
    const rate = Math.round((plan.rateStreams * 1000) / step.intervalMs);
    say(`event rate: ${plan.rateStreams} held streams, a token every ${step.intervalMs} ms (${rate} events/s)`);
    const h = await heldRun(`infergate-rate-${step.intervalMs}`, fakePort, { streams: plan.rateStreams, connections: plan.holdConnections, rampMs: Math.max(1000, plan.holdRampMs / 2), body, scrapeMs: 1000 });
    const lagP99 = h.steady?.eventLoopDelayP99Ms;
    const ok = h.errors === 0 && h.errorsByMetrics === 0 && lagP99 !== undefined && lagP99 <= 50;
    out.steps.push({ intervalMs: step.intervalMs, targetEventsPerS: rate, eventsPerS: h.steady?.eventsPerS, cpuUsPerEvent: h.steady?.cpuUsPerEvent, eventLoopDelayP99Ms: lagP99, errors: h.errors + h.errorsByMetrics, ok });
    if (!ok) break;
    out.sustainedEventsPerS = h.steady.eventsPerS;
  }
  return out;
}

async function profile(fakePort) {
  const dir = join(outDir, "profiles");
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const ig = await startInfergate("infergate-profile", fakePort, { nodeArgs: ["--cpu-prof", "--cpu-prof-dir", dir] });
  const chat = { url: `${ig.url}${chatPath}`, body: bodies.chatGrpc, headers: grpcHeaders, pid: ig.child.pid };
  const gen = { url: `${ig.url}${generatePath}`, body: bodies.generateGrpc, headers: grpcHeaders, pid: ig.child.pid };
  say("profiling infergate: unary chat c=64, then 200-token Generate c=64");
  await h2load(chat, { ...h2Shape(64), durationS: plan.durationS, warmupS: 0 }, { logDir, tag: "profile-chat" });
  await h2load(gen, { ...h2Shape(64), durationS: plan.durationS, warmupS: 0 }, { logDir, tag: "profile-generate" });
  await ig.child.stop();
  return summarizeProfiles(dir, root);
}

/** infergate under `node --cpu-prof` for small Predicts over the KServe gRPC upstream, 64 at a time. */
async function profilePredict(fakePort) {
  const dir = join(outDir, "profiles-predict");
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const body = writePredictBodies(dir, { grpc: "simple-grpc", rest: "simple-rest", probe: "simple-probe", upstreamModel: "simple" }).predictGrpc;
  const ig = await startInfergate("infergate-profile-predict", fakePort, { nodeArgs: ["--cpu-prof", "--cpu-prof-dir", dir] });
  say("profiling infergate: small Predict over the gRPC upstream c=64");
  await h2load({ url: `${ig.url}${predictPath}`, body, headers: grpcHeaders, pid: ig.child.pid }, { ...h2Shape(64), durationS: plan.durationS, warmupS: 0 }, { logDir, tag: "profile-predict" });
  await ig.child.stop();
  return summarizeProfiles(dir, root);
}

// Whatever way the harness ends, nothing it started outlives it.
process.on("exit", () => {
  killAll();
  for (const c of children) if (c.proc.exitCode === null) c.proc.kill("SIGKILL");
});

try {
  await (flags.section === undefined ? main() : sectionMain(flags.section));
} catch (err) {
  process.stderr.write(`[bench] failed: ${err.stack ?? err}\n`);
  process.exitCode = 1;
} finally {
  await Promise.all(children.map((c) => c.stop().catch(() => {})));
}
