/**
 * The Predict and upstream-client-floor sections of the benchmarks (issue 16), called by
 * bench/run.mjs with its own helpers (`interleaved`, `startInfergate`, …) so that they measure
 * with the same method as the other sections. Internal to bench/.
 *
 * Predict: infergate in front of the KServe v2 fake (bench/fake-kserve-server.mjs), through a
 * `kserve` upstream over gRPC and one over REST (bench/infergate.yaml):
 *   - small calls (Triton's `simple`, 2 × [1,16] INT32) at concurrency 1 and 64 under h2load,
 *     direct (the request infergate itself sends upstream, to the fake) and through infergate,
 *     interleaved;
 *   - big calls (1M FP32, 4 MiB, `identity_fp32`) one at a time from bench/predict-client.mjs,
 *     direct and through infergate, raw and typed, with a second client process sending a small
 *     Predict through infergate every few milliseconds and timing each (the stall).
 * Floor: bench/upstream-client.mjs, an undici client sending infergate's OpenAI request to the
 * fake OpenAI server, its own CPU per call.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { PredictResponseSchema } from "../../dist/gen/infergate/v1/inference_service_pb.js";
import { cpuMs, quantile, run, scrape, sleep, sumMetric, waitUntil } from "./common.mjs";
import { grpcUnary } from "./grpc-call.mjs";
import { modelInferPath, predictPath, writePredictBodies } from "./predict-messages.mjs";

/** How long and how much, per mode. */
export function predictPlan(quick) {
  return quick
    ? { smallRounds: 1, smallDurationS: 1, bigElements: 1 << 20, bigCalls: 2, bigMaxSeconds: 10, probeIntervalMs: 5, baselineS: 1, floorRounds: 1, floorDurationS: 1 }
    : { smallRounds: 2, smallDurationS: 3, bigElements: 1 << 20, bigCalls: 10, bigMaxSeconds: 25, probeIntervalMs: 5, baselineS: 3, floorRounds: 2, floorDurationS: 5 };
}

/** infergate's model names in bench/infergate.yaml, and the fake's. */
const models = { grpc: "simple-grpc", rest: "simple-rest", probe: "simple-probe", bigGrpc: "identity-grpc", upstreamSmall: "simple", upstreamBig: "identity_fp32" };

const benchDir = join(dirname(fileURLToPath(import.meta.url)), "..");
const clientScript = join(benchDir, "predict-client.mjs");

/** Client processes started here (the probe), killed if the harness goes down first. */
const spawned = new Set();
process.on("exit", () => {
  for (const p of spawned) p.kill("SIGKILL");
});

/** Starts one KServe fake process: {child, grpcPort, restPort}. */
async function startOneFake(name, { startChild, logDir, children }) {
  const child = startChild(name, process.execPath, [join(benchDir, "fake-kserve-server.mjs")], { logDir });
  children.push(child);
  let ports;
  await waitUntil(`${name} to print its ports`, () => {
    const m = /\{"grpcPort":(\d+),"restPort":(\d+)\}/.exec(child.stdout());
    if (m !== null) ports = { grpc: Number(m[1]), rest: Number(m[2]) };
    return m !== null;
  }, { child });
  return { child, ...ports };
}

/**
 * Starts the KServe fakes, each its own process: the one every Predict goes to, and a second one
 * for the probe's small calls (so that the first one's work on a big tensor never delays them).
 * Resolves {child, grpcAddress, restUrl, env (BENCH_KSERVE_* for infergate), stop()}.
 */
export async function startFakeKserve(harness) {
  const main = await startOneFake("fake-kserve", harness);
  const probe = await startOneFake("fake-kserve-probe", harness);
  return {
    child: main.child,
    grpcAddress: `127.0.0.1:${main.grpc}`,
    restUrl: `http://127.0.0.1:${main.rest}`,
    env: { BENCH_KSERVE_GRPC_PORT: String(main.grpc), BENCH_KSERVE_REST_PORT: String(main.rest), BENCH_KSERVE_PROBE_PORT: String(probe.grpc) },
    stop: () => Promise.all([main.child.stop(), probe.child.stop()]),
  };
}

/** The INT32 values of an answer's tensor, raw or typed. */
function int32Values(t) {
  if (t?.data.case === "contents") return t.data.value.intContents;
  if (t?.data.case === "rawContents") {
    const b = new Uint8Array(t.data.value);
    return Array.from(new Int32Array(b.buffer, 0, b.byteLength >> 2));
  }
  return [];
}

/** Checks that a small Predict through infergate answers `simple`'s sum; returns the answer's form. */
async function checkSmallPredict(address, body) {
  const r = await grpcUnary(address, predictPath, readFileSync(body));
  if (r.status !== 0) throw new Error(`Predict through infergate failed: status ${r.status} ${r.grpcMessage}`);
  const out = fromBinary(PredictResponseSchema, r.message).outputs;
  const sum = int32Values(out.find((t) => t.name === "OUTPUT0"));
  if (sum.join() !== Array.from({ length: 16 }, (_, i) => i + 1).join()) throw new Error(`Predict through infergate answered OUTPUT0 = [${sum}]`);
  return out[0].data.case === "rawContents" ? "raw" : "typed";
}

/** Latency summary of the probe's calls that were in flight during [start, end] (epoch ms). */
function probeStats(probe, start, end) {
  const inWindow = probe.samples.filter(([sent, ms]) => sent <= end && (ms < 0 || sent + ms >= start));
  const ok = inWindow.filter(([, ms]) => ms >= 0).map(([, ms]) => ms).sort((a, b) => a - b);
  return {
    calls: inWindow.length,
    errors: inWindow.length - ok.length,
    callsPerS: (inWindow.length * 1000) / Math.max(1, end - start),
    p50Ms: quantile(ok, 0.5),
    p99Ms: quantile(ok, 0.99),
    maxMs: ok.at(-1),
    skipped: probe.skipped,
    firstError: probe.firstError,
  };
}

/**
 * Runs `fn` while a probe process sends a small Predict through infergate every interval; resolves
 * {result, probe} once the probe has collected its answers.
 */
async function withProbe(address, body, intervalMs, fn) {
  const p = spawn(process.execPath, [clientScript, "--mode", "probe", "--address", address, "--body", body, "--interval-ms", String(intervalMs)], { stdio: ["pipe", "pipe", "pipe"] });
  spawned.add(p);
  let out = "";
  let err = "";
  p.stdout.on("data", (d) => (out += d));
  p.stderr.on("data", (d) => (err += d));
  const exited = new Promise((resolve) => p.once("exit", resolve));
  await waitUntil("the probe to be ready", () => {
    if (p.exitCode !== null) throw new Error(`probe exited ${p.exitCode}: ${err.slice(-500)}`);
    return out.startsWith("ready\n");
  }, { timeoutMs: 60_000 });
  let result;
  try {
    result = await fn();
  } finally {
    p.stdin.end();
  }
  const code = await exited;
  spawned.delete(p);
  if (code !== 0) throw new Error(`probe exited ${code}: ${err.slice(-500)}`);
  return { result, probe: JSON.parse(out.trim().split("\n").at(-1)) };
}

/** One run of big calls from the client process. */
async function bigCalls(args, plan) {
  const out = await run(process.execPath, [clientScript, "--mode", "big", "--elements", String(plan.bigElements), "--calls", String(plan.bigCalls), "--max-seconds", String(plan.bigMaxSeconds), ...args], (plan.bigMaxSeconds + 120) * 1000);
  const r = JSON.parse(out.trim().split("\n").at(-1));
  const sorted = [...r.msPerCall].sort((a, b) => a - b);
  return { ...r, medianMs: quantile(sorted, 0.5), minMs: sorted[0], maxMs: sorted.at(-1) };
}

/**
 * Section "Predict". `h` holds run.mjs's helpers: {say, interleaved, startInfergate, fakePort,
 * kserve, outDir, grpcHeaders, jsonHeaders, plan (predictPlan)}.
 */
export async function predictSection(h) {
  const { plan, say } = h;
  const bodies = writePredictBodies(h.outDir, { grpc: models.grpc, rest: models.rest, probe: models.probe, upstreamModel: models.upstreamSmall });
  const ig = await h.startInfergate("infergate-predict", h.fakePort);
  const results = { plan, models };

  // Sanity: the fake answers the direct requests, infergate answers through both upstreams.
  const direct = await grpcUnary(h.kserve.grpcAddress, modelInferPath, readFileSync(bodies.modelInfer));
  if (direct.status !== 0) throw new Error(`ModelInfer to the fake failed: status ${direct.status} ${direct.grpcMessage}`);
  const rest = await fetch(`${h.kserve.restUrl}/v2/models/${models.upstreamSmall}/infer`, { method: "POST", headers: { "content-type": "application/json" }, body: readFileSync(bodies.restJson) });
  if (rest.status !== 200) throw new Error(`REST infer to the fake failed: ${rest.status} ${await rest.text()}`);
  await rest.arrayBuffer();
  results.answerForm = { grpc: await checkSmallPredict(ig.address, bodies.predictGrpc), rest: await checkSmallPredict(ig.address, bodies.predictRest) };
  await checkSmallPredict(ig.address, bodies.predictProbe);
  results.messages = { predictRequestBytes: readFileSync(bodies.predictGrpc).length - 5, modelInferRequestBytes: readFileSync(bodies.modelInfer).length - 5, restRequestBytes: readFileSync(bodies.restJson).length };

  // Small calls, direct vs through infergate, interleaved like section 1.
  const igTarget = (body) => ({ url: `${ig.url}${predictPath}`, body, headers: h.grpcHeaders, pid: ig.child.pid, admin: ig.adminAddress });
  const fakePid = h.kserve.child.pid;
  const small = {
    grpc: { direct: { url: `http://${h.kserve.grpcAddress}${modelInferPath}`, body: bodies.modelInfer, headers: h.grpcHeaders, pid: fakePid }, infergate: igTarget(bodies.predictGrpc) },
    rest: { direct: { url: `${h.kserve.restUrl}/v2/models/${models.upstreamSmall}/infer`, body: bodies.restJson, headers: h.jsonHeaders, h1: true, pid: fakePid }, infergate: igTarget(bodies.predictRest) },
  };
  results.small = {};
  for (const [protocol, targets] of Object.entries(small)) {
    results.small[protocol] = {};
    for (const c of [1, 64]) {
      results.small[protocol][c] = await h.interleaved(targets, c, `predict-${protocol}`, { rounds: plan.smallRounds, durationS: plan.smallDurationS });
    }
  }

  // Big calls, one at a time, with the probe beside them. Baseline first: the probe alone.
  say(`Predict: probe alone for ${plan.baselineS} s`);
  const base = await withProbe(ig.address, bodies.predictProbe, plan.probeIntervalMs, async () => {
    const start = Date.now();
    await sleep(plan.baselineS * 1000);
    return { windowStart: start, windowEnd: Date.now() };
  });
  results.probeBaseline = probeStats(base.probe, base.result.windowStart, base.result.windowEnd);

  const cases = [
    { name: "raw", form: "raw", direct: true },
    { name: "typed", form: "typed", direct: true },
    // The direct call of this case is the typed one: the fake answers raw whatever is asked.
    { name: "typed, output_form TYPED", form: "typed", outputForm: "typed", direct: false },
  ];
  results.big = {};
  for (const k of cases) {
    const row = {};
    const runs = [];
    if (k.direct) runs.push(["direct", ["--target", "direct", "--address", h.kserve.grpcAddress, "--model", models.upstreamBig, "--form", k.form]]);
    runs.push(["infergate", ["--target", "infergate", "--address", ig.address, "--model", models.bigGrpc, "--form", k.form, ...(k.outputForm ? ["--output-form", k.outputForm] : [])]]);
    for (const [who, args] of runs) {
      say(`Predict: 4 MiB ${k.name}, ${who}, ${plan.bigCalls} calls one at a time with the probe`);
      const m0 = await scrape(ig.adminAddress); // also resets the event-loop delay histogram
      const cpu0 = cpuMs(ig.child.pid);
      const { result, probe } = await withProbe(ig.address, bodies.predictProbe, plan.probeIntervalMs, () => bigCalls(args, plan));
      const cpu = cpuMs(ig.child.pid) - cpu0;
      const m = await scrape(ig.adminAddress);
      // infergate's garbage collections over the run (prom-client's GC histogram, by kind).
      const gc = (name, kind) => sumMetric(m, name, `kind="${kind}"`) - sumMetric(m0, name, `kind="${kind}"`);
      row[who] = {
        calls: result.calls,
        errors: result.errors,
        firstError: result.firstError,
        medianMs: result.medianMs,
        minMs: result.minMs,
        maxMs: result.maxMs,
        msPerCall: result.msPerCall.map((v) => Math.round(v * 10) / 10),
        requestBytes: result.requestBytes,
        answer: result.answer,
        probe: probeStats(probe, result.windowStart, result.windowEnd),
        infergateLoopDelayMaxMs: sumMetric(m, "infergate_process_nodejs_eventloop_lag_max_seconds") * 1000,
        // infergate's CPU and GC over the run (the probe's small calls included).
        infergateCpuMs: cpu,
        infergateGcMajor: gc("infergate_process_nodejs_gc_duration_seconds_count", "major"),
        infergateGcMs: ["major", "minor", "incremental", "weakcb"].reduce((n, k) => n + gc("infergate_process_nodejs_gc_duration_seconds_sum", k) * 1000, 0),
      };
    }
    results.big[k.name] = row;
  }
  const errorsByMetrics = await scrape(ig.adminAddress);
  results.predictErrorsByMetrics = sumMetric(errorsByMetrics, "infergate_requests_total", 'rpc="Predict"') - sumMetric(errorsByMetrics, "infergate_requests_total", 'rpc="Predict"', 'code="OK"') - sumMetric(errorsByMetrics, "infergate_requests_total", 'rpc="Predict"', 'code="CANCELLED"');
  await ig.child.stop();
  return results;
}

/**
 * Section "Upstream-client floor": the own CPU per call, at 64 and 1, of the undici client (a
 * proxied Chat's client half) and of the grpc-js client (a proxied Predict's). `h`: {plan, say,
 * fake (the fake OpenAI server: {url}), upstreamModel (the model name infergate sends it), kserve
 * (startFakeKserve's result)}. Resolves {http: {64, 1}, grpc: {64, 1}}.
 */
export async function floorSection(h) {
  const { plan, say } = h;
  const clients = {
    http: { label: "undici client → fake", args: ["--url", `${h.fake.url}/v1/chat/completions`, "--model", h.upstreamModel] },
    grpc: { label: "grpc-js client → KServe fake", args: ["--grpc", h.kserve.grpcAddress, "--model", models.upstreamSmall] },
  };
  const out = { http: {}, grpc: {} };
  for (const [kind, client] of Object.entries(clients)) {
    for (const c of [64, 1]) {
      const runs = [];
      for (let round = 0; round < plan.floorRounds; round++) {
        say(`floor: ${client.label} c=${c} round ${round + 1}/${plan.floorRounds}`);
        const text = await run(process.execPath, [join(benchDir, "upstream-client.mjs"), ...client.args, "--concurrency", String(c), "--seconds", String(plan.floorDurationS), "--warmup-seconds", "1"], (plan.floorDurationS + 60) * 1000);
        runs.push(JSON.parse(text.trim().split("\n").at(-1)));
      }
      const mean = (k) => runs.reduce((s, r) => s + r[k], 0) / runs.length;
      out[kind][c] = { rounds: runs.length, rps: mean("rps"), p50Ms: mean("p50Ms"), p99Ms: mean("p99Ms"), cpuUsPerCall: mean("cpuUsPerCall"), cpuUsPerCallByRound: runs.map((r) => r.cpuUsPerCall), calls: runs.reduce((s, r) => s + r.calls, 0), errors: runs.reduce((s, r) => s + r.errors, 0), firstError: runs.find((r) => r.firstError)?.firstError };
    }
  }
  return out;
}
