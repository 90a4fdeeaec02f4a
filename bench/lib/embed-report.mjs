/**
 * The embeddings section of bench/RESULTS.md (section 10, bench/lib/embed-bench.mjs) and issue
 * 19's targets, rendered from that section's results; bench/lib/report.mjs places them in the
 * whole report, `bench/run.sh --quick --section embeddings` writes them alone. Internal to bench/.
 */
import { cachedNames, uncachedNames } from "./embed-bench.mjs";
import { f, int, loadTable, pairedMedian, targetTable, x } from "./report-format.mjs";

/** The figures issue 19's targets are judged on, from the section's results `e`. */
export function embedFigures(e) {
  const u = e.uncached;
  const n = uncachedNames;
  const added = (ig, direct) => (u[ig] === undefined || u[direct] === undefined ? undefined : u[ig].p50Ms - u[direct].p50Ms);
  const addedByRound = (ig, direct) => u[ig]?.p50MsByRound.map((v, i) => v - u[direct].p50MsByRound[i]);
  const half = e.cached?.[cachedNames.half];
  const miss = e.cached?.[cachedNames.miss];
  const uncached = e.cached?.[cachedNames.uncached];
  const missing = e.plan.batch - e.plan.seen;
  const okCalls = (v) => v.calls - v.errors;
  return {
    addedP50Fp32: added(n.fp32, n.directBase64),
    addedP50Fp32ByRound: addedByRound(n.fp32, n.directBase64),
    addedP50Float: added(n.float, n.directBase64),
    addedP50FloatFloat: added(n.floatFloat, n.directFloat),
    addedP50Http: added(n.http, n.directBase64),
    addedP50Short: added(n.fp32Short, n.directShort),
    // The base64 path (upstream base64, caller FP32_BYTES) against the float path (upstream JSON
    // numbers, caller FLOAT): the median of the rounds' own ratios, and the ratio of the means.
    cpuBase64OverFloat: pairedMedian(u[n.fp32].cpuUsPerCallByRound, u[n.floatFloat].cpuUsPerCallByRound),
    cpuBase64OverFloatByRound: u[n.fp32].cpuUsPerCallByRound?.map((v, i) => v / u[n.floatFloat].cpuUsPerCallByRound[i]),
    cpuBase64OverFloatMeans: u[n.fp32].cpuUsPerCall / u[n.floatFloat].cpuUsPerCall,
    missing,
    halfInputsPerUpstreamRequest: half === undefined ? undefined : half.upstreamInputs / Math.max(1, half.upstreamRequests),
    halfUpstreamRequestsPerCall: half === undefined ? undefined : half.upstreamRequests / Math.max(1, okCalls(half)),
    halfOnlyMissing: half === undefined ? undefined : half.upstreamRequests === okCalls(half) && half.upstreamInputs === missing * okCalls(half) && half.errors === 0,
    halfOverMissP50: half && miss ? pairedMedian(half.p50MsByRound, miss.p50MsByRound) : undefined,
    halfOverMissCpu: half && miss ? pairedMedian(half.cpuUsPerCallByRound, miss.cpuUsPerCallByRound) : undefined,
    missOverUncachedCpu: miss && uncached ? pairedMedian(miss.cpuUsPerCallByRound, uncached.cpuUsPerCallByRound) : undefined,
    missOverUncachedP50: miss && uncached ? pairedMedian(miss.p50MsByRound, uncached.p50MsByRound) : undefined,
  };
}

/** Issue 19's benchmark targets, as rows of the targets table. */
export function issue19Targets(e) {
  const q = embedFigures(e);
  const n = uncachedNames;
  const judge = (v, ok) => (v === undefined || Number.isNaN(v) ? undefined : ok(v));
  const half = e.cached?.[cachedNames.half];
  return [
    {
      target: `Embed of ${e.plan.batch} short texts (${e.plan.dimensions} dimensions), one call at a time, uncached: added p50 ≤ 0.5 ms (${n.fp32})`,
      measured: `${f(q.addedP50Fp32, 3)} ms (${n.float}: ${f(q.addedP50Float, 3)} ms; ${n.floatFloat}, against the fake's float answer: ${f(q.addedP50FloatFloat, 3)} ms${q.addedP50Http === undefined ? "" : `; /v1/embeddings: ${f(q.addedP50Http, 3)} ms`}; ${e.plan.shortDimensions} dimensions: ${f(q.addedP50Short, 3)} ms)`,
      met: judge(q.addedP50Fp32, (v) => v <= 0.5),
    },
    {
      target: `${e.plan.seen} of the ${e.plan.batch} inputs cached: the upstream receives only the ${q.missing} missing ones, in one request per call`,
      measured:
        half === undefined
          ? "—"
          : `${f(q.halfInputsPerUpstreamRequest, 2)} inputs per upstream request, ${f(q.halfUpstreamRequestsPerCall, 3)} upstream requests per call (${int(half.upstreamInputs)} inputs in ${int(half.upstreamRequests)} requests for ${int(half.calls - half.errors)} calls)`,
      met: q.halfOnlyMissing,
    },
    {
      target: `${e.plan.dimensions}-dim vectors: infergate's CPU per call, base64 path (${n.fp32}) / float path (${n.floatFloat}) ≤ 0.5×`,
      measured: `${x(q.cpuBase64OverFloat)} (${f(e.uncached[n.fp32].cpuUsPerCall, 1)} µs / ${f(e.uncached[n.floatFloat].cpuUsPerCall, 1)} µs; median of the rounds' ratios)`,
      met: judge(q.cpuBase64OverFloat, (v) => v <= 0.5),
    },
  ];
}

/** The table of the half-cached runs. */
function cachedTable(rows) {
  const out = [
    "| target | calls/s | p50 ms | p90 ms | p99 ms | CPU µs/call | upstream requests | inputs sent upstream | per upstream request | `infergate-cache` | errors |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
  ];
  for (const [name, v] of Object.entries(rows)) {
    const headers = Object.entries(v.cacheHeaders).map(([k, c]) => `${k} ${int(c)}`).join(", ") || "—";
    out.push(
      `| ${name} | ${int(v.rps)} | ${f(v.p50Ms, 3)} | ${f(v.p90Ms, 3)} | ${f(v.p99Ms, 3)} | ${f(v.cpuUsPerCall, 1)} | ${int(v.upstreamRequests)} | ${int(v.upstreamInputs)} | ${f(v.upstreamInputs / Math.max(1, v.upstreamRequests), 2)} | ${headers} | ${v.errors}${v.firstError ? ` (${v.firstError})` : ""}${v.firstAnswer?.ok === false ? `; **a wrong answer**: ${v.firstAnswer.problem}` : ""} |`,
    );
  }
  return out.join("\n");
}

/** The machine's load during the section, in words. */
function loadWords(e) {
  const l = e.machineLoad;
  if (l === undefined) return "";
  return `The machine while the section ran: load average (1, 5, 15 min) ${l.start.loadavg.join(", ")} at its start and ${l.end.loadavg.join(", ")} at its end; all cores together were busy ${f(l.end.busyShare * 100, 0)}% of the time (/proc/stat, the section's own processes included).`;
}

/** Section 10 of RESULTS.md; `fileDate` is the date of the rest of the file (when it differs, it says so). */
export function renderEmbedSection(e, p, fileDate) {
  const n = uncachedNames;
  const q = embedFigures(e);
  const m = e.messages;
  const pl = e.plan;
  p(`## 10. Embeddings: a batch of ${pl.batch} short texts`);
  p();
  if (fileDate !== undefined && e.date.slice(0, 10) !== fileDate.slice(0, 10)) {
    p(`Measured on ${e.date.slice(0, 10)} by \`bench/run.sh --section embeddings\` (${e.elapsedS ?? "?"} s), apart from the rest of this file.`);
    p();
  }
  if (e.measured !== undefined) {
    p(`Build measured: ${e.measured.dist}${e.measured.head ? ` (the repository's HEAD then: ${e.measured.head})` : ""}.`);
    p();
  }
  p(loadWords(e));
  p();
  p(
    `The fake's embeddings route (\`bench/lib/fake-embeddings.mjs\`) answers in OpenAI's wire shape from answers built once (fixed unit vectors of ${pl.dimensions} values, text-embedding-3-small's length; base64 or JSON numbers as \`encoding_format\` asks), so its own cost per call is small and the same for any texts. The texts are about 70 characters each. Through infergate: an EmbedRequest of the ${pl.batch} texts (${int(m.requestBytes)} bytes) over gRPC; infergate's \`openai\` upstream sends the fake a ${int(m.upstreamRequestBytes)}-byte JSON body. Answers: ${int(m.fp32AnswerBytes)} bytes of EmbedResponse with FP32_BYTES, ${int(m.floatAnswerBytes)} with FLOAT; the fake's ${int(m.upstreamBase64AnswerBytes)} bytes of base64, ${int(m.upstreamFloatAnswerBytes)} of JSON numbers.`,
  );
  p();
  p("### Uncached, one call at a time");
  p();
  p(
    `Models \`embed\` (upstream base64, the openai kind's default) and \`embed-float\` (\`options: { embeddingEncoding: float }\`: JSON numbers), both with \`cache: { policy: off }\`. h2load, one connection, ${pl.rounds} interleaved round(s) of ${pl.durationS} s per target after an unmeasured second; the figures are the means of the rounds. Direct: the body infergate itself sends (checked: the fake received exactly it), over HTTP/1.1 keep-alive; CPU per call is the fake's there, infergate's for infergate. \`A ← B\`: the caller asked A (EmbedRequest.encoding), the upstream answered B.` +
      (e.httpIngress?.served ? " `/v1/embeddings`: infergate's OpenAI-compatible route on its HTTP listener, the same JSON with model `embed`." : ` infergate's \`POST /v1/embeddings\` was not measured: it answered ${e.httpIngress?.status} (not served by this build).`),
  );
  p();
  p(loadTable(e.uncached));
  p();
  p(
    `Added p50: **${f(q.addedP50Fp32, 3)} ms** for ${n.fp32} (each round: ${(q.addedP50Fp32ByRound ?? []).map((v) => f(v, 3)).join(", ")}), ${f(q.addedP50Float, 3)} ms for ${n.float}, ${f(q.addedP50FloatFloat, 3)} ms for ${n.floatFloat} (against the fake's float answer)${q.addedP50Http === undefined ? "" : `, ${f(q.addedP50Http, 3)} ms for /v1/embeddings`}, ${f(q.addedP50Short, 3)} ms for ${n.fp32Short} (a quarter of the bytes). infergate's non-OK Embed statuses over the section (cancels excluded): ${e.errorsByMetrics}.`,
  );
  p();
  p(
    `CPU per call, base64 path / float path: **${x(q.cpuBase64OverFloat)}** (median of the rounds' ratios: ${(q.cpuBase64OverFloatByRound ?? []).map((v) => f(v, 3)).join(", ")}; ratio of the means ${x(q.cpuBase64OverFloatMeans)}).`,
  );
  p();

  if (e.cached !== undefined) {
    const half = e.cached[cachedNames.half];
    p("### Half the batch cached");
    p();
    p(
      `Model \`embed-cached\` (cache policy \`always\`, the default for Embed; cached input by input). \`bench/embed-client.mjs\`, one call at a time over one HTTP/2 connection (direct: one keep-alive HTTP/1.1 connection), ${e.cached[cachedNames.half].rounds} interleaved round(s) of ${pl.cacheDurationS} s per target after an unmeasured second; each call sends the same ${pl.seen} texts, cached once before the runs, and ${pl.batch - pl.seen} texts never sent before (\`${cachedNames.miss}\`: ${pl.batch} never sent before; \`${cachedNames.uncached}\`: the same to model \`embed\`, whose cache is off). A call's time runs from writing the request (built beforehand) to the end of the answer. The upstream columns are the fake's own counts (\`GET /stats\`) around each run; before the runs, one call's upstream request was checked to hold exactly its ${pl.batch - pl.seen} new texts, in order, and its answer to flag exactly the ${pl.seen} others cached.`,
    );
    p();
    p(cachedTable(e.cached));
    p();
    p(
      `The upstream received **${f(q.halfInputsPerUpstreamRequest, 2)} inputs per request** and ${f(q.halfUpstreamRequestsPerCall, 3)} requests per call with half the batch cached (${int(half.upstreamInputs)} inputs for ${int(half.calls - half.errors)} calls). Half cached / all new: p50 ${f(q.halfOverMissP50, 3)}, infergate's CPU per call ${f(q.halfOverMissCpu, 3)}; all new through the cache / with the cache off: p50 ${f(q.missOverUncachedP50, 3)}, CPU per call ${f(q.missOverUncachedCpu, 3)} (medians of the rounds' ratios).`,
    );
    p();
  }

  if (e.profile !== undefined && Object.keys(e.profile).length > 0) {
    p("### Where infergate's CPU goes (node --cpu-prof)");
    p();
    p(
      `infergate under each path, one call at a time (uncached: h2load, one connection; half cached: bench/embed-client.mjs), in a process of its own: a second of calls, then ${pl.profileS} s whose samples alone are counted (the process's start and first calls left out). µs per call: the samples' time over the calls of those ${pl.profileS} s (the profiler's own cost included: the CPU per call of the process there, from /proc, is given beside it).`,
    );
    p();
    const table = (rows, perCall) => {
      p("| function | ms | µs per call | % |");
      p("| --- | ---: | ---: | ---: |");
      for (const fn of rows) p(`| ${fn.name.replace(/\|/g, "\\|")} | ${fn.ms} | ${f(perCall(fn.ms), 1)} | ${fn.percent} |`);
      p();
    };
    for (const [name, prof] of Object.entries(e.profile)) {
      const label = prof.label ?? (name === "base64" ? n.fp32 : n.floatFloat);
      const perCall = (ms) => (ms * 1000) / Math.max(1, prof.calls);
      p(`#### ${label}: ${int(prof.calls)} calls, ${int(prof.busyMs)} ms of samples (idle excluded), ${f(perCall(prof.busyMs), 1)} µs per call (/proc: ${f(perCall(prof.cpuMs), 1)} µs)`);
      p();
      p("By where the code lives (self time):");
      p();
      p("| area | ms | µs per call | % |");
      p("| --- | ---: | ---: | ---: |");
      for (const a of prof.areas.slice(0, 10)) p(`| ${a.name} | ${a.ms} | ${f(perCall(a.ms), 1)} | ${a.percent} |`);
      p();
      p("Hottest functions (self time):");
      p();
      table(prof.functions.slice(0, 15), perCall);
      if (prof.ownInclusive !== undefined) {
        p("infergate's own functions with their callees (time with the function anywhere on the stack; after an `await` the stack starts at the resumed function):");
        p();
        table(prof.ownInclusive.slice(0, 15), perCall);
      }
    }
  }
}

/** The section alone, as `--section embeddings --quick` writes it (bench/out/RESULTS-embeddings-quick.md). */
export function renderEmbedOnly(r) {
  const out = [];
  const p = (s = "") => out.push(s);
  const m = r.machine;
  p("# infergate benchmarks: the embeddings section alone");
  p();
  p(`Generated by \`bench/run.mjs --section embeddings\` on ${r.date.slice(0, 10)}${r.mode === "quick" ? " in quick mode (about a second per step: these figures are not meaningful)" : ""}. Machine: ${m.cores} cores (${m.cpu}), ${m.ramGiB} GiB RAM, Node ${m.node}. Run time ${r.elapsedS} s.`);
  p();
  p("## Issue 19 targets");
  p();
  p(targetTable(issue19Targets(r.embeddings)));
  p();
  renderEmbedSection(r.embeddings, p);
  return `${out.join("\n")}\n`;
}
