/**
 * Section 11 of bench/run.mjs: issue 20's overheads (docs/benchmarks.md, "Issue 20: tracing" and
 * "Issue 20: budgets"). The same build in four configs against the same fake upstream:
 * - plain: bench/infergate.yaml;
 * - traced: the same plus `tracing:` at sampling ratio 1.0, exporting over OTLP/HTTP to a sink in
 *   this process that answers every export 200 (each call records and exports two spans);
 * - keyed: bench/infergate.yaml with API keys on (one key; the calls carry it);
 * - budgeted: keyed plus `budgets:` in memory (the key with a day's token limit and a month's money
 *   limit, in a group with an hour's limit, all far from reached: each call is checked against
 *   both and charged to the key, the group and the total).
 * Each round starts both processes of a pair afresh (a process of a build can run several per cent
 * faster or slower than another of the same build for its whole life), warms both, and measures
 * one after the other, the order alternating; the figure is the median of the rounds' ratios of
 * CPU µs per call (process user + system time over the calls counted in its /metrics), so that
 * the drift of a shared machine hits both alike. Internal to bench/.
 */
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { startSink } from "./otlp-sink.mjs";
import { pairedMedian, targetTable } from "./report-format.mjs";

/** How many rounds and how long, per mode. */
export function observePlan(quick) {
  return quick ? { rounds: 2, warmS: 1, durationS: 1, concurrency: 16 } : { rounds: 10, warmS: 6, durationS: 3, concurrency: 16 };
}

const key = "sk-bench-budgets-not-a-secret";

/**
 * Runs the section. `h` holds run.mjs's helpers: say, startInfergate (with `config` and
 * `callHeaders` options), measure, benchDir, outDir, bodies, chatPath, generatePath, grpcHeaders.
 */
export async function observeSection(h, fake, plan) {
  const sink = await startSink();
  try {
    const base = readFileSync(join(h.benchDir, "infergate.yaml"), "utf8");
    const sha256 = createHash("sha256").update(key).digest("hex");
    const keyed = `${base}\nauth:\n  enabled: true\n  keys:\n    - { name: bench, sha256: ${sha256} }\n`;
    const configs = {
      traced: `${base}\ntracing:\n  endpoint: "${sink.url}"\n  samplingRatio: 1.0\n`,
      keyed,
      budgeted: `${keyed}budgets:\n  timeZone: Europe/Berlin\n  keys:\n    bench: { day: { tokens: 1000000000000 }, month: { money: 1000000000 } }\n  groups:\n    - { name: team, keys: [bench], limits: { hour: { tokens: 1000000000000 } } }\n`,
    };
    const files = Object.fromEntries(
      Object.entries(configs).map(([name, text]) => {
        const file = join(h.outDir, `infergate-${name}.yaml`);
        writeFileSync(file, text);
        return [name, file];
      }),
    );
    const auth = { authorization: `Bearer ${key}` };
    const withKey = [...h.grpcHeaders, `authorization: Bearer ${key}`];
    // Each side of a pair: its process (name, config, the header its calls carry), request and path.
    const side = (name, config, body, path, keyed) => ({ name, config, body, path, keyed });
    const pairs = {
      "tracing, unary Chat": [side("plain", undefined, h.bodies.chatGrpc, h.chatPath), side("traced", files.traced, h.bodies.chatGrpc, h.chatPath)],
      "tracing, Generate of 200 tokens": [side("plain", undefined, h.bodies.generateGrpc, h.generatePath), side("traced", files.traced, h.bodies.generateGrpc, h.generatePath)],
      "budgets (memory), unary Chat": [side("keyed", files.keyed, h.bodies.chatGrpc, h.chatPath, true), side("budgeted", files.budgeted, h.bodies.chatGrpc, h.chatPath, true)],
    };
    const results = { date: new Date().toISOString(), plan, pairs: {} };
    for (const [label, [off, on]] of Object.entries(pairs)) {
      const offRuns = [];
      const onRuns = [];
      for (let round = 0; round < plan.rounds; round++) {
        h.say(`${label}: round ${round + 1}/${plan.rounds}`);
        const tag = `observe-${label}-r${round}`.replace(/[^A-Za-z0-9.-]+/g, "-");
        // Fresh processes each round: one process of a build can run several per cent faster or
        // slower than another of the same build for as long as it lives (an A/A run of long-lived
        // pairs gave 0.93× and 0.95×), which a pair of long-lived processes would take for the
        // difference between the configs. Which one starts and runs first alternates.
        const order = round % 2 === 0 ? [[off, offRuns, "off"], [on, onRuns, "on"]] : [[on, onRuns, "on"], [off, offRuns, "off"]];
        const started = [];
        try {
          for (const [s] of order) {
            const ig = await h.startInfergate(`infergate-${s.name}-r${round}`, fake.port, s.config === undefined ? {} : { config: s.config, callHeaders: s.keyed ? auth : {} });
            started.push(ig);
            s.target = { url: `${ig.url}${s.path}`, body: s.body, headers: s.keyed ? withKey : h.grpcHeaders, pid: ig.child.pid, admin: ig.adminAddress };
          }
          // Warmed alike, then measured one after the other.
          for (const [s] of order) await h.measure(s.target, plan.concurrency, `${tag}-${s.name}-warm`, { durationS: plan.warmS });
          for (const [s, runs, which] of order) runs.push(await h.measure(s.target, plan.concurrency, `${tag}-${which}`, { durationS: plan.durationS }));
        } finally {
          for (const ig of started) await ig.child.stop();
        }
      }
      const cpu = (runs) => runs.map((r) => r.cpuUsPerCall);
      results.pairs[label] = {
        off: { cpuUsPerCallByRound: cpu(offRuns), errors: offRuns.reduce((s, r) => s + (r.errors ?? 0), 0), calls: offRuns.reduce((s, r) => s + (r.calls ?? 0), 0) },
        on: { cpuUsPerCallByRound: cpu(onRuns), errors: onRuns.reduce((s, r) => s + (r.errors ?? 0), 0), calls: onRuns.reduce((s, r) => s + (r.calls ?? 0), 0) },
        cpuRatio: pairedMedian(cpu(onRuns), cpu(offRuns)),
      };
    }
    results.sink = { exports: sink.exports(), bytes: sink.bytes() };
    return results;
  } finally {
    sink.close();
  }
}

/** Issue 20's benchmark targets, from the section's results. */
export function issue20Targets(o) {
  const median = (v) => [...v].sort((a, b) => a - b)[v.length >> 1];
  const row = (label, limit, what) => {
    const p = o.pairs[label];
    if (p === undefined) return undefined;
    const errors = p.off.errors + p.on.errors;
    return {
      target: `${what}: CPU per call on / off ≤ ${limit.toFixed(2)}× (${label})`,
      measured: `${p.cpuRatio === undefined ? "—" : `${p.cpuRatio.toFixed(3)}×`} (median of ${p.on.cpuUsPerCallByRound.length} paired rounds; ${median(p.on.cpuUsPerCallByRound).toFixed(1)} µs on, ${median(p.off.cpuUsPerCallByRound).toFixed(1)} µs off${errors > 0 ? `; ${errors} errors` : ""})`,
      met: p.cpuRatio === undefined ? undefined : p.cpuRatio <= limit && errors === 0,
    };
  };
  return [
    row("tracing, unary Chat", 1.15, "tracing on (ratio 1.0, OTLP export)"),
    row("tracing, Generate of 200 tokens", 1.15, "tracing on (ratio 1.0, OTLP export)"),
    row("budgets (memory), unary Chat", 1.05, "budgets on, in memory"),
  ].filter((r) => r !== undefined);
}

/** Section 11 of RESULTS.md; `fileDate` is the date of the rest of the file (when it differs, it says so). */
export function renderObserveSection(o, p, fileDate) {
  p("## 11. Tracing and budgets: CPU per call on and off (issue 20)");
  p();
  if (fileDate !== undefined && o.date !== undefined && o.date.slice(0, 10) !== fileDate.slice(0, 10)) {
    p(`Measured on ${o.date.slice(0, 10)} by \`bench/run.sh --section observe\` (${o.elapsedS ?? "?"} s), apart from the rest of this file.`);
    p();
  }
  p(
    `Pairs of processes of the same build against the same fake: bench/infergate.yaml without and with \`tracing:\` (sampling ratio 1.0, every call's two spans exported over OTLP/HTTP protobuf to a sink in the bench process: ${o.sink.exports} export requests, ${(o.sink.bytes / 2 ** 20).toFixed(1)} MiB), and with API keys on, without and with in-memory \`budgets:\` (a key and a group, three periods, far from their limits). gRPC at concurrency ${o.plan.concurrency}, ${o.plan.rounds} rounds; each round starts both processes afresh, warms each for ${o.plan.warmS ?? 1} s, then measures each for ${o.plan.durationS} s (which one starts and goes first alternates); the figure is the median of the rounds' on/off ratios of CPU µs per call.`,
  );
  p();
  p("| pair | CPU µs/call off, by round | CPU µs/call on, by round | median ratio |");
  p("| --- | --- | --- | ---: |");
  for (const [label, v] of Object.entries(o.pairs)) {
    const list = (xs) => xs.map((x) => x.toFixed(0)).join(", ");
    p(`| ${label} | ${list(v.off.cpuUsPerCallByRound)} | ${list(v.on.cpuUsPerCallByRound)} | ${v.cpuRatio === undefined ? "—" : `${v.cpuRatio.toFixed(3)}×`} |`);
  }
  p();
}

/** RESULTS-observe-quick.md: the section alone (bench/run.mjs --section observe --quick). */
export function renderObserveOnly(r) {
  const out = [];
  const p = (s = "") => out.push(s);
  const m = r.machine;
  p("# infergate benchmarks: the tracing and budgets section alone");
  p();
  p(`Generated by \`bench/run.mjs --section observe\` on ${r.date.slice(0, 10)}${r.mode === "quick" ? " in quick mode (about a second per step: these figures are not meaningful)" : ""}. Machine: ${m.cores} cores (${m.cpu}), ${m.ramGiB} GiB RAM, Node ${m.node}. Run time ${r.elapsedS} s.`);
  p();
  p("## Issue 20 targets");
  p();
  p(targetTable(issue20Targets(r.observe)));
  p();
  renderObserveSection(r.observe, p);
  return `${out.join("\n")}\n`;
}
