/**
 * Summarizes the V8 CPU profiles that `node --cpu-prof` wrote: self time by function and by
 * where the code lives (infergate's own files, each package, Node internals, GC, idle). Internal.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

/** Where a function lives, for grouping. */
function area(url, name, root) {
  if (url === "") return name.startsWith("(") ? name : "(native)";
  if (url.startsWith("node:")) return "node internals";
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg !== null) return pkg[1];
  const path = url.replace(/^file:\/\//, "").replace(`${root}/`, "");
  // Compiled files: dist/src/… or the harness's copy of dist/, bench/out/build/src/….
  const own = /(?:^|\/)(?:dist\/|build\/)?(src|gen)\/([^/]+)/.exec(path);
  return own === null ? path : `infergate ${own[1]}/${own[2]}`;
}

/**
 * Top functions and areas by self time across every profile in `dir`; with `fromUs` (a time of the
 * monotonic clock in µs, as `process.hrtime.bigint() / 1000n` reads it, which V8's profiles use),
 * only the samples taken from then on (a process's start left out).
 */
export function summarizeProfiles(dir, root, { fromUs } = {}) {
  const byFunction = new Map();
  const byArea = new Map();
  // Time with an own function (src/, gen/) anywhere on the stack, by function: where a call's time
  // goes from infergate's side, callees included.
  const ownInclusive = new Map();
  let totalUs = 0;
  const files = readdirSync(dir).filter((f) => f.endsWith(".cpuprofile"));
  for (const f of files) {
    const prof = JSON.parse(readFileSync(join(dir, f), "utf8"));
    const nodes = new Map(prof.nodes.map((n) => [n.id, n]));
    const parent = new Map();
    for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
    let at = prof.startTime;
    prof.samples.forEach((id, i) => {
      const n = nodes.get(id);
      const dt = prof.timeDeltas[i] ?? 0;
      at += dt;
      if (fromUs !== undefined && at < fromUs) return;
      const { functionName, url, lineNumber } = n.callFrame;
      const name = functionName || "(anonymous)";
      if (name === "(idle)") return;
      totalUs += dt;
      const where = area(url, name, root);
      const key = `${name} — ${url === "" ? where : `${url.replace(/^file:\/\//, "").replace(`${root}/`, "")}:${lineNumber + 1}`}`;
      byFunction.set(key, (byFunction.get(key) ?? 0) + dt);
      byArea.set(where, (byArea.get(where) ?? 0) + dt);
      const seen = new Set();
      for (let id2 = id; id2 !== undefined; id2 = parent.get(id2)) {
        const c = nodes.get(id2).callFrame;
        if (!/\/(?:dist\/|build\/)(?:src|gen)\//.test(c.url)) continue;
        const k = `${c.functionName || "(anonymous)"} — ${c.url.replace(/^file:\/\//, "").replace(`${root}/`, "")}:${c.lineNumber + 1}`;
        if (seen.has(k)) continue;
        seen.add(k);
        ownInclusive.set(k, (ownInclusive.get(k) ?? 0) + dt);
      }
    });
  }
  const top = (m, n) =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([k, us]) => ({ name: k, ms: Math.round(us / 100) / 10, percent: Math.round((us / totalUs) * 1000) / 10 }));
  return { files: files.length, busyMs: Math.round(totalUs / 1000), areas: top(byArea, 20), functions: top(byFunction, 30), ownInclusive: top(ownInclusive, 20) };
}
