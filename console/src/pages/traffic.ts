import uPlot from "uplot";
import type { TrafficPoint } from "../api.js";
import { h, ms, percent, table } from "../dom.js";
import type { Page } from "./page.js";

/** Series are told apart by their dash pattern and legend label, not only by colour. */
const dashes = [[], [8, 4], [2, 3], [12, 3, 2, 3], [4, 4], [1, 6]];
const strokes = ["#1f5fbf", "#b0480c", "#2a7a2a", "#8a2a8a", "#555555", "#a07800"];

interface ChartSpec {
  readonly title: string;
  readonly unit: string;
  /** The series' names for these points (may grow: a new model, a new reason). */
  names(points: readonly TrafficPoint[]): string[];
  value(p: TrafficPoint, name: string): number | null;
}

const keysOf = (points: readonly TrafficPoint[], pick: (p: TrafficPoint) => Record<string, number>) => [...new Set(points.flatMap((p) => Object.keys(pick(p))))].sort();

const specs: ChartSpec[] = [
  { title: "Calls per second", unit: "calls/s", names: () => ["calls/s", "in flight"], value: (p, n) => (n === "calls/s" ? p.callsPerS : p.inFlight) },
  {
    title: "Errors per second by reason",
    unit: "errors/s",
    names: (ps) => ["all reasons", ...keysOf(ps, (p) => p.errorsPerSByReason)],
    value: (p, n) => (n === "all reasons" ? Object.values(p.errorsPerSByReason).reduce((a, b) => a + b, 0) : (p.errorsPerSByReason[n] ?? 0)),
  },
  { title: "Latency", unit: "ms", names: () => ["p50", "p95", "p99"], value: (p, n) => p.latencyMs[n as "p50"] },
  { title: "Time to first token (Generate)", unit: "ms", names: () => ["p50", "p95", "p99"], value: (p, n) => p.ttftMs[n as "p50"] },
  { title: "Cache hit ratio", unit: "%", names: () => ["hits"], value: (p) => (p.cacheHitRatio === null ? null : p.cacheHitRatio * 100) },
  { title: "Tokens per second by model", unit: "tokens/s", names: (ps) => keysOf(ps, (p) => p.tokensPerSByModel), value: (p, n) => p.tokensPerSByModel[n] ?? 0 },
  { title: "Cost per minute by model", unit: "per min", names: (ps) => keysOf(ps, (p) => p.costPerMinByModel), value: (p, n) => p.costPerMinByModel[n] ?? 0 },
];

class Chart {
  private plot: uPlot | undefined;
  private names = "";
  readonly figure: HTMLElement;
  private readonly box: HTMLElement;

  constructor(private readonly spec: ChartSpec) {
    this.box = h("div", {});
    this.figure = h("figure", {}, h("figcaption", {}, `${spec.title} (${spec.unit})`), this.box);
  }

  update(points: readonly TrafficPoint[]): void {
    const names = this.spec.names(points);
    const data: uPlot.AlignedData = [points.map((p) => p.t / 1000), ...names.map((n) => points.map((p) => this.spec.value(p, n)))];
    const width = Math.max(260, Math.min(640, this.figure.clientWidth || 320));
    if (this.plot === undefined || this.names !== names.join("\n")) {
      this.plot?.destroy();
      this.names = names.join("\n");
      this.plot = new uPlot(
        {
          width,
          height: 180,
          scales: { x: { time: true } },
          series: [{}, ...names.map((label, i) => ({ label, stroke: strokes[i % strokes.length], dash: dashes[i % dashes.length], width: 2, spanGaps: false }))],
          axes: [{}, { label: this.spec.unit, size: 60 }],
        },
        data,
        this.box,
      );
    } else {
      if (Math.abs(this.plot.width - width) > 20) this.plot.setSize({ width, height: 180 });
      this.plot.setData(data);
    }
  }

  destroy(): void {
    this.plot?.destroy();
  }
}

function latest(p: TrafficPoint | undefined): HTMLElement {
  if (p === undefined) return h("p", { class: "muted" }, "Waiting for the first point (one a second)…");
  const reasons = Object.entries(p.errorsPerSByReason).map(([r, v]) => `${r} ${v.toFixed(2)}/s`).join(", ") || "none";
  const tokens = Object.entries(p.tokensPerSByModel).map(([m, v]) => `${m} ${v.toFixed(1)}/s`).join(", ") || "none";
  const cost = Object.entries(p.costPerMinByModel).map(([m, v]) => `${m} ${v.toFixed(6)}/min`).join(", ") || "none";
  return table(
    `Last ${p.intervalS.toFixed(1)} s (${new Date(p.t).toLocaleTimeString()})`,
    ["Measure", "Value"],
    [
      ["Calls per second", p.callsPerS.toFixed(2)],
      ["In flight", String(p.inFlight)],
      ["Error ratio", percent(p.errorRatio)],
      ["Errors by reason", reasons],
      ["Latency p50 / p95 / p99", `${ms(p.latencyMs.p50)} / ${ms(p.latencyMs.p95)} / ${ms(p.latencyMs.p99)}`],
      ["TTFT p50 / p95 / p99", `${ms(p.ttftMs.p50)} / ${ms(p.ttftMs.p95)} / ${ms(p.ttftMs.p99)}`],
      ["Cache hit ratio", percent(p.cacheHitRatio)],
      ["Tokens per second", tokens],
      ["Cost per minute", cost],
    ],
  );
}

/** Traffic: charts of the traffic stream's points, and the last point as a table. */
export const trafficPage: Page = (main, { store }) => {
  const charts = specs.map((s) => new Chart(s));
  const now = h("section", { "aria-label": "Latest values" });
  main.append(
    h("h1", {}, "Traffic"),
    h("p", { class: "muted" }, "From infergate's own metrics, one point a second since this page opened (up to 10 minutes)."),
    now,
    h("div", { class: "charts" }, ...charts.map((c) => c.figure)),
  );
  const draw = () => {
    now.replaceChildren(store.problem === undefined ? latest(store.points.at(-1)) : h("p", { class: "error" }, store.problem));
    for (const c of charts) c.update(store.points);
  };
  draw();
  const stop = store.subscribe(draw);
  return () => {
    stop();
    for (const c of charts) c.destroy();
  };
};
