/**
 * The formatting of bench/RESULTS.md shared by its renderers (bench/lib/report.mjs and
 * bench/lib/embed-report.mjs): numbers, ratios, verdicts, and the tables of targets and of load
 * runs. Internal to bench/.
 */

/** A number with `digits` decimals; — when there is none. */
export const f = (v, digits = 2) => (v === undefined || v === null || Number.isNaN(v) ? "—" : Number(v).toFixed(digits));
/** A whole number with thousands separators. */
export const int = (v) => (v === undefined || v === null || Number.isNaN(v) ? "—" : Math.round(v).toLocaleString("en-US"));
/** A ratio, as 0.42×. */
export const x = (v) => (v === undefined || Number.isNaN(v) || !Number.isFinite(v) ? "—" : `${v.toFixed(2)}×`);
/** A share, as 42%. */
export const pct = (v) => (v === undefined || Number.isNaN(v) ? "—" : `${(v * 100).toFixed(0)}%`);
/** A target's verdict. */
export const yes = (ok) => (ok === undefined ? "n/a" : ok ? "**met**" : "**not met**");

/** The median of the round-by-round ratios a[i] / b[i]. */
export function pairedMedian(a, b) {
  if (a === undefined || b === undefined || a.length !== b.length || a.length === 0) return undefined;
  const rs = a.map((x, i) => x / b[i]).sort((x, y) => x - y);
  const m = rs.length >> 1;
  return rs.length % 2 === 1 ? rs[m] : (rs[m - 1] + rs[m]) / 2;
}

/** The table of targets: rows of {target, measured, met}. */
export function targetTable(rows) {
  return ["| target | measured | |", "| --- | --- | --- |", ...rows.map((t) => `| ${t.target} | ${t.measured} | ${yes(t.met)} |`)].join("\n");
}

/** The table of load runs by target (pool() in bench/run.mjs): throughput, latency, CPU per call, errors. */
export function loadTable(rows, { cpu = true, errors = true } = {}) {
  const head = `| target | req/s | p50 ms | p90 ms | p99 ms |${cpu ? " CPU µs/call |" : ""}${errors ? " errors |" : ""}`;
  const sep = `| --- | ---: | ---: | ---: | ---: |${cpu ? " ---: |" : ""}${errors ? " ---: |" : ""}`;
  const lines = Object.entries(rows).map(([name, v]) => {
    const errs = v.errors !== undefined ? `${v.errors}${v.cancelledAtEnd ? ` (+${v.cancelledAtEnd} cancelled by the load tool at its end)` : ""}` : `${v.failed + (Number.isNaN(v.non2xx) ? 0 : v.non2xx)}`;
    return `| ${name} | ${int(v.rps)} | ${f(v.p50Ms, 3)} | ${f(v.p90Ms, 3)} | ${f(v.p99Ms, 3)} |${cpu ? ` ${f(v.cpuUsPerCall, 1)} |` : ""}${errors ? ` ${errs} |` : ""}`;
  });
  return [head, sep, ...lines].join("\n");
}
