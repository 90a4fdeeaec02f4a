/**
 * The embeddings section of the benchmarks (issue 19), called by bench/run.mjs with its own
 * helpers (`interleaved`, `startInfergate`, …) so that it measures with the same method as the
 * other sections. Internal to bench/.
 *
 * A batch of 64 short texts, 1536-dimensional vectors (text-embedding-3-small's), one call at a
 * time, against the fake OpenAI upstream's embeddings route (bench/lib/fake-embeddings.mjs):
 *   - uncached (model `embed`, cache off), h2load, interleaved rounds: the request infergate itself
 *     sends upstream, straight to the fake (base64, and float), against Embed through infergate
 *     asking FP32_BYTES and FLOAT of an upstream answering base64 (the openai kind's default), and
 *     FLOAT of an upstream answering JSON numbers (model `embed-float`), and the OpenAI-compatible
 *     `POST /v1/embeddings` of infergate's HTTP listener when it serves it: the added p50, the CPU
 *     per call, and the base64 path's CPU against the float path's; and the base64 path again
 *     with `dimensions: 384` (direct and through infergate), a quarter of the bytes, to tell the
 *     cost per call from the cost per byte;
 *   - half cached (model `embed-cached`, cached by default), bench/embed-client.mjs: every call 32
 *     texts infergate has cached and 32 it has never seen, against 64 new texts through infergate
 *     and 64 new texts straight to the fake, with the fake's counts of the requests and inputs it
 *     received around each run (the upstream must receive the 32 new ones only, once per call).
 * With --profile, infergate once under `node --cpu-prof` for each of the two uncached paths.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { mkdirSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { loadavg } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { EmbedResponseSchema } from "../../dist/gen/infergate/v1/inference_service_pb.js";
import { cpuMs, run, scrape, sumMetric } from "./common.mjs";
import { grpcUnary } from "./grpc-call.mjs";
import { embedPath, embedRequestFrame, texts, upstreamBody, writeBody } from "./embed-messages.mjs";
import { summarizeProfiles } from "./profile.mjs";

const benchDir = join(dirname(fileURLToPath(import.meta.url)), "..");

/** How long and how much, per mode. */
export function embedPlan(quick) {
  return quick
    ? { batch: 64, seen: 32, dimensions: 1536, shortDimensions: 384, rounds: 1, durationS: 1, cacheRounds: 1, cacheDurationS: 1, profileS: 1 }
    : { batch: 64, seen: 32, dimensions: 1536, shortDimensions: 384, rounds: 3, durationS: 3, cacheRounds: 3, cacheDurationS: 3, profileS: 5 };
}

/** infergate's model names in bench/infergate.yaml, and the fake's. */
export const embedModels = { uncached: "embed", uncachedFloat: "embed-float", cached: "embed-cached", upstream: "bench-emb" };

/** The targets of the uncached runs, by the names the tables show. */
export const uncachedNames = {
  directBase64: "direct, base64",
  fp32: "infergate FP32_BYTES ← base64",
  float: "infergate FLOAT ← base64",
  directFloat: "direct, float",
  floatFloat: "infergate FLOAT ← float",
  http: "infergate /v1/embeddings base64 ← base64",
  directShort: "direct, base64, 384 dimensions",
  fp32Short: "infergate FP32_BYTES ← base64, 384 dimensions",
};

/** The targets of the half-cached runs. */
export const cachedNames = { half: "32 cached + 32 new", miss: "64 new", uncached: "64 new, cache off", direct: "direct, 64 new" };

/**
 * The machine's load while the section runs: the load averages, and the share of all cores' time
 * busy (from /proc/stat) since `since` (a snapshot of this function's).
 */
export function machineLoad(since) {
  const cols = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  const idle = cols[3] + (cols[4] ?? 0);
  const total = cols.reduce((s, v) => s + v, 0);
  const out = { loadavg: loadavg().map((v) => Math.round(v * 100) / 100), idle, total };
  if (since !== undefined) out.busyShare = 1 - (idle - since.idle) / Math.max(1, total - since.total);
  return out;
}

async function fakeCounts(fake) {
  const s = await (await fetch(`${fake.url}/stats`)).json();
  return s.embeddings;
}

async function fakeLast(fake) {
  return (await fetch(`${fake.url}/embeddings/last`)).json();
}

/** An Embed through infergate, checked: one vector per input of the plan's length; resolves {headers, answer, bytes}. */
async function embedOnce(address, frame, inputs, dims, encoding) {
  const r = await grpcUnary(address, embedPath, frame);
  if (r.status !== 0) throw new Error(`Embed through infergate failed: status ${r.status} ${r.grpcMessage}`);
  const answer = fromBinary(EmbedResponseSchema, r.message);
  const lengths = answer.embeddings.map((e) => (encoding === "fp32" ? e.fp32.length / 4 : e.values.length));
  if (answer.embeddings.length !== inputs || lengths.some((l) => l !== dims) || answer.embeddings.some((e, i) => e.index !== i)) {
    throw new Error(`Embed through infergate answered ${answer.embeddings.length} embeddings of ${[...new Set(lengths)].join("/")} values for ${inputs} inputs of ${dims}`);
  }
  return { headers: r.headers, answer, bytes: r.message.length };
}

/** Fails unless the fake's last embeddings request is `expected` (a JSON text), key for key. */
async function expectLastBody(fake, expected, what) {
  const last = JSON.stringify(await fakeLast(fake));
  if (last !== expected) throw new Error(`${what}: the fake received ${last.slice(0, 300)}…, not the body the bench sends direct (${expected.slice(0, 300)}…)`);
}

async function postJson(url, body) {
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body });
  return { status: res.status, bytes: (await res.arrayBuffer()).byteLength };
}

/**
 * Section "Embeddings". `h` holds run.mjs's helpers: {plan (embedPlan), measured (the build and
 * HEAD, for the report), say, interleaved,
 * startInfergate, fake ({url, port, child}), outDir, logDir, grpcHeaders, jsonHeaders, profile
 * (boolean), h2load, h2Shape}.
 */
export async function embedSection(h) {
  const { plan, say } = h;
  const load0 = machineLoad();
  const results = { date: new Date().toISOString(), measured: h.measured, plan, models: embedModels };
  const dir = join(h.outDir, "embed");
  mkdirSync(dir, { recursive: true });
  const batch = texts("batch", plan.batch);
  const bodies = {
    fp32: writeBody(dir, "embed-fp32.grpc", embedRequestFrame(embedModels.uncached, batch, "fp32")),
    float: writeBody(dir, "embed-float.grpc", embedRequestFrame(embedModels.uncached, batch, "float")),
    floatFloat: writeBody(dir, "embed-float-float.grpc", embedRequestFrame(embedModels.uncachedFloat, batch, "float")),
    directBase64: writeBody(dir, "embeddings-base64.json", upstreamBody(embedModels.upstream, batch, "base64")),
    directFloat: writeBody(dir, "embeddings-float.json", upstreamBody(embedModels.upstream, batch, "float")),
    http: writeBody(dir, "v1-embeddings-base64.json", JSON.stringify({ model: embedModels.uncached, input: batch, encoding_format: "base64" })),
    fp32Short: writeBody(dir, "embed-fp32-short.grpc", embedRequestFrame(embedModels.uncached, batch, "fp32", plan.shortDimensions)),
    directShort: writeBody(dir, "embeddings-base64-short.json", upstreamBody(embedModels.upstream, batch, "base64", plan.shortDimensions)),
  };
  const ig = await h.startInfergate("infergate-embed", h.fake.port);

  // Sanity: each path answers 64 vectors of 1536 values, and what infergate sends upstream is
  // byte for byte the body the direct runs send.
  const fp32 = await embedOnce(ig.address, readFileSync(bodies.fp32), plan.batch, plan.dimensions, "fp32");
  await expectLastBody(h.fake, readFileSync(bodies.directBase64, "utf8"), "model embed");
  const float = await embedOnce(ig.address, readFileSync(bodies.float), plan.batch, plan.dimensions, "float");
  const floatFloat = await embedOnce(ig.address, readFileSync(bodies.floatFloat), plan.batch, plan.dimensions, "float");
  await expectLastBody(h.fake, readFileSync(bodies.directFloat, "utf8"), "model embed-float");
  await embedOnce(ig.address, readFileSync(bodies.fp32Short), plan.batch, plan.shortDimensions, "fp32");
  await expectLastBody(h.fake, readFileSync(bodies.directShort, "utf8"), "model embed, dimensions 384");
  const directBase64 = await postJson(`${h.fake.url}/v1/embeddings`, readFileSync(bodies.directBase64));
  const directFloat = await postJson(`${h.fake.url}/v1/embeddings`, readFileSync(bodies.directFloat));
  if (directBase64.status !== 200 || directFloat.status !== 200) throw new Error(`the fake answered the direct bodies ${directBase64.status} and ${directFloat.status}`);
  const viaHttp = await postJson(`http://${ig.httpAddress}/v1/embeddings`, readFileSync(bodies.http));
  results.httpIngress = viaHttp.status === 200 ? { served: true } : { served: false, status: viaHttp.status };
  results.messages = {
    requestBytes: readFileSync(bodies.fp32).length - 5,
    upstreamRequestBytes: readFileSync(bodies.directBase64).length,
    fp32AnswerBytes: fp32.bytes,
    floatAnswerBytes: float.bytes,
    upstreamBase64AnswerBytes: directBase64.bytes,
    upstreamFloatAnswerBytes: directFloat.bytes,
    httpAnswerBytes: viaHttp.status === 200 ? viaHttp.bytes : undefined,
    sameFloatAnswer: float.bytes === floatFloat.bytes,
  };

  // 1. Uncached, one call at a time: direct against through infergate, interleaved.
  const igTarget = (body, http = false) => ({ url: `${http ? `http://${ig.httpAddress}/v1/embeddings` : `${ig.url}${embedPath}`}`, body, headers: http ? h.jsonHeaders : h.grpcHeaders, h1: http, pid: ig.child.pid, admin: ig.adminAddress });
  const direct = (body) => ({ url: `${h.fake.url}/v1/embeddings`, body, headers: h.jsonHeaders, h1: true, pid: h.fake.child.pid });
  const n = uncachedNames;
  const targets = {
    [n.directBase64]: direct(bodies.directBase64),
    [n.fp32]: igTarget(bodies.fp32),
    [n.float]: igTarget(bodies.float),
    [n.directFloat]: direct(bodies.directFloat),
    [n.floatFloat]: igTarget(bodies.floatFloat),
  };
  if (results.httpIngress.served) targets[n.http] = igTarget(bodies.http, true);
  targets[n.directShort] = direct(bodies.directShort);
  targets[n.fp32Short] = igTarget(bodies.fp32Short);
  results.uncached = await h.interleaved(targets, 1, "embed", { rounds: plan.rounds, durationS: plan.durationS });

  // 2. Half cached: 32 texts infergate has cached and 32 new ones per call.
  const seen = texts("seen", plan.seen);
  const warm = await embedOnce(ig.address, embedRequestFrame(embedModels.cached, seen, "fp32"), plan.seen, plan.dimensions, "fp32");
  const checkNew = texts("check", plan.batch - plan.seen);
  const c0 = await fakeCounts(h.fake);
  const check = await embedOnce(ig.address, embedRequestFrame(embedModels.cached, [...seen, ...checkNew], "fp32"), plan.batch, plan.dimensions, "fp32");
  const c1 = await fakeCounts(h.fake);
  const lastInput = (await fakeLast(h.fake)).input;
  const flags = check.answer.embeddings.map((e) => e.cached);
  if (
    warm.headers["infergate-cache"] !== "miss" ||
    check.headers["infergate-cache"] !== "partial" ||
    c1.requests - c0.requests !== 1 ||
    c1.inputs - c0.inputs !== checkNew.length ||
    JSON.stringify(lastInput) !== JSON.stringify(checkNew) ||
    flags.some((cached, i) => cached !== i < plan.seen)
  ) {
    throw new Error(
      `half-cached Embed: ${JSON.stringify({ warm: warm.headers["infergate-cache"], check: check.headers["infergate-cache"], upstreamRequests: c1.requests - c0.requests, upstreamInputs: c1.inputs - c0.inputs, lastInputs: Array.isArray(lastInput) ? lastInput.length : lastInput, cachedFlags: flags.filter(Boolean).length })}`,
    );
  }
  results.cachedCheck = { cacheHeader: check.headers["infergate-cache"], upstreamInputs: c1.inputs - c0.inputs, cachedFlags: flags.filter(Boolean).length };
  results.cached = await cachedRuns(h, ig);

  const m = await scrape(ig.adminAddress);
  results.errorsByMetrics = sumMetric(m, "infergate_requests_total", 'rpc="Embed"') - sumMetric(m, "infergate_requests_total", 'rpc="Embed"', 'code="OK"') - sumMetric(m, "infergate_requests_total", 'rpc="Embed"', 'code="CANCELLED"');
  await ig.child.stop();

  if (h.profile) results.profile = await profileEmbed(h, bodies);
  results.machineLoad = { start: { loadavg: load0.loadavg }, end: machineLoad(load0) };
  delete results.machineLoad.end.idle;
  delete results.machineLoad.end.total;
  return results;
}

/**
 * The half-cached runs: bench/embed-client.mjs, one call at a time, rounds interleaved (half, all
 * new, all new to the uncached model, direct, half, …), each target's first run after an unmeasured second of its own. Around each
 * run: infergate's CPU (/proc), its Embed calls (/metrics), and the fake's embeddings counts.
 */
/** One run of bench/embed-client.mjs for `seconds`; resolves its line of JSON. */
function embedClient(plan, args, seconds, tag) {
  return run(process.execPath, [join(benchDir, "embed-client.mjs"), ...args, "--seconds", String(seconds), "--tag", tag, "--dims", String(plan.dimensions)], (seconds + 60) * 1000).then((out) => JSON.parse(out.trim().split("\n").at(-1)));
}

/**
 * The client's arguments for Embed through infergate at `address`: `seen` cached texts and `fresh`
 * new ones per call, FP32_BYTES, to `model` (default the cached one).
 */
function viaInfergate(address, seen, fresh, model = embedModels.cached) {
  return ["--target", "grpc", "--address", address, "--model", model, "--seen", String(seen), "--new", String(fresh), "--encoding", "fp32"];
}

async function cachedRuns(h, ig) {
  const { plan, say } = h;
  const client = (args, seconds, tag) => embedClient(plan, args, seconds, tag);
  const viaIg = (seen, fresh) => viaInfergate(ig.address, seen, fresh);
  const targets = {
    [cachedNames.half]: { args: viaIg(plan.seen, plan.batch - plan.seen), infergate: true },
    [cachedNames.miss]: { args: viaIg(0, plan.batch), infergate: true },
    // The same calls to the uncached model: what the cache itself costs a batch it lacks.
    [cachedNames.uncached]: { args: viaInfergate(ig.address, 0, plan.batch, embedModels.uncached), infergate: true },
    [cachedNames.direct]: { args: ["--target", "http", "--url", `${h.fake.url}/v1/embeddings`, "--model", embedModels.upstream, "--new", String(plan.batch), "--format", "base64"], infergate: false },
  };
  const runs = Object.fromEntries(Object.keys(targets).map((k) => [k, []]));
  // Every run's new texts are its own: the tag names the run, and a number the harness's start.
  const stamp = Date.now().toString(36);
  for (let round = 0; round < plan.cacheRounds; round++) {
    for (const [name, t] of Object.entries(targets)) {
      const tag = `${stamp} ${name.replace(/\W+/g, "-")} r${round}`;
      if (round === 0) await client(t.args, 1, `${tag} warm`);
      say(`embeddings, half cached: ${name} round ${round + 1}/${plan.cacheRounds}`);
      const up0 = await fakeCounts(h.fake);
      const m0 = t.infergate ? await scrape(ig.adminAddress) : undefined;
      const cpu0 = cpuMs(t.infergate ? ig.child.pid : h.fake.child.pid);
      const r = await client(t.args, plan.cacheDurationS, tag);
      const cpu = cpuMs(t.infergate ? ig.child.pid : h.fake.child.pid) - cpu0;
      const up1 = await fakeCounts(h.fake);
      const row = { ...r, cpuMs: cpu, upstreamRequests: up1.requests - up0.requests, upstreamInputs: up1.inputs - up0.inputs };
      if (m0 !== undefined) {
        const m1 = await scrape(ig.adminAddress);
        row.infergateCalls = sumMetric(m1, "infergate_requests_total", 'rpc="Embed"') - sumMetric(m0, "infergate_requests_total", 'rpc="Embed"');
      }
      row.cpuUsPerCall = (cpu * 1000) / Math.max(1, row.infergateCalls ?? r.calls);
      runs[name].push(row);
    }
  }
  const pooled = {};
  for (const [name, rs] of Object.entries(runs)) {
    const mean = (k) => rs.reduce((s, x) => s + x[k], 0) / rs.length;
    const sum = (k) => rs.reduce((s, x) => s + (x[k] ?? 0), 0);
    const headers = {};
    for (const x of rs) for (const [k, v] of Object.entries(x.cacheHeaders)) headers[k] = (headers[k] ?? 0) + v;
    pooled[name] = {
      rounds: rs.length,
      p50Ms: mean("p50Ms"),
      p90Ms: mean("p90Ms"),
      p99Ms: mean("p99Ms"),
      p50MsByRound: rs.map((x) => x.p50Ms),
      cpuUsPerCall: mean("cpuUsPerCall"),
      cpuUsPerCallByRound: rs.map((x) => x.cpuUsPerCall),
      calls: sum("calls"),
      errors: sum("errors"),
      firstError: rs.find((x) => x.firstError)?.firstError,
      rps: sum("calls") / (rs.length * plan.cacheDurationS),
      upstreamRequests: sum("upstreamRequests"),
      upstreamInputs: sum("upstreamInputs"),
      cacheHeaders: headers,
      firstAnswer: rs.find((x) => x.firstAnswer && !x.firstAnswer.ok)?.firstAnswer ?? rs[0].firstAnswer,
    };
  }
  return pooled;
}

/**
 * infergate under `node --cpu-prof`, one process per path, one call at a time: the two uncached
 * paths under h2load, and under bench/embed-client.mjs the half-cached one (its 32 texts cached by
 * a first call) and 64 new texts through the cache.
 */
async function profileEmbed(h, bodies) {
  const out = {};
  const cases = {
    base64: { body: bodies.fp32, label: uncachedNames.fp32 },
    float: { body: bodies.floatFloat, label: uncachedNames.floatFloat },
    half: { label: `infergate FP32_BYTES ← base64, ${cachedNames.half}`, seen: h.plan.seen },
    miss: { label: `infergate FP32_BYTES ← base64, ${cachedNames.miss} through the cache`, seen: 0 },
  };
  for (const [name, c] of Object.entries(cases)) {
    const dir = join(h.outDir, `profiles-embed-${name}`);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    const ig = await h.startInfergate(`infergate-profile-embed-${name}`, h.fake.port, { nodeArgs: ["--cpu-prof", "--cpu-prof-dir", dir] });
    h.say(`profiling infergate: Embed ${c.label}, one call at a time`);
    const target = { url: `${ig.url}${embedPath}`, body: c.body, headers: h.grpcHeaders, pid: ig.child.pid };
    const stamp = `${Date.now().toString(36)} profile`;
    const load = (seconds, tag) =>
      c.body === undefined
        ? embedClient(h.plan, viaInfergate(ig.address, c.seen, h.plan.batch - c.seen), seconds, `${stamp} ${tag}`).then((r) => r.calls)
        : h.h2load(target, { clients: 1, streams: 1, durationS: seconds, warmupS: 0 }, { logDir: h.logDir, tag: `profile-embed-${name}-${tag}` }).then((r) => r.done);
    if (c.seen > 0) await embedOnce(ig.address, embedRequestFrame(embedModels.cached, texts("seen", h.plan.seen), "fp32"), h.plan.seen, h.plan.dimensions, "fp32");
    // A second of calls first, and only the samples after it: the process's start and first
    // calls (loading, compiling) left out.
    await load(1, "warm");
    const fromUs = Number(process.hrtime.bigint() / 1000n);
    const cpu0 = cpuMs(ig.child.pid);
    const calls = await load(h.plan.profileS, "measured");
    const cpu = cpuMs(ig.child.pid) - cpu0;
    await ig.child.stop();
    if (readdirSync(dir).length === 0) continue;
    out[name] = { label: c.label, calls, cpuMs: cpu, ...summarizeProfiles(dir, join(benchDir, ".."), { fromUs }) };
  }
  return out;
}
