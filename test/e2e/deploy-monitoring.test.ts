/**
 * The monitoring files of deploy/ (docs/production.md, "Dashboards and alerts"):
 * deploy/prometheus/alerts.yaml passes `promtool check rules` and its unit tests
 * (deploy/prometheus/alerts-test.yaml, `promtool test rules`); every PromQL expression of
 * deploy/grafana/infergate.json parses (promtool checks them as recording rules, Grafana's
 * variables given values); and every metric a panel, a dashboard variable or an alert rule reads is
 * one a running infergate exports, with samples and with the labels the queries match and group
 * by — scraped from the admin port of a gateway that has served the calls that make each series
 * appear (priced models, budgets, a failing model, a rate limit, a budget refusal, cache hits).
 * promtool comes with the Debian package `prometheus` (scripts/install-test-deps.sh, run by .ci/run).
 */
import { execFile } from "node:child_process";
import { accessSync, constants, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { promisify } from "node:util";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import { Role } from "../../gen/infergate/v1/chat_pb.js";
import { InferenceService } from "../../gen/infergate/v1/inference_service_pb.js";
import type { App } from "../../src/server/app.js";
import { hashKey } from "../../src/security/api-keys.js";
import { parseMetrics } from "../helpers/metrics.js";
import { repoRoot, startInProcess } from "../helpers/servers.js";

const execFileAsync = promisify(execFile);
const dashboardPath = join(repoRoot, "deploy/grafana/infergate.json");
const alertsPath = join(repoRoot, "deploy/prometheus/alerts.yaml");
const alertsTestPath = join(repoRoot, "deploy/prometheus/alerts-test.yaml");

// --- promtool ------------------------------------------------------------------------------------

/** promtool's absolute path, or an error saying how to install it. */
function promtool(): string {
  for (const dir of (process.env["PATH"] ?? "").split(delimiter)) {
    if (dir === "") continue;
    try {
      accessSync(join(dir, "promtool"), constants.X_OK);
      return join(dir, "promtool");
    } catch {
      // not in this directory
    }
  }
  throw new Error("promtool not found on PATH: install the Debian package prometheus (apt-get install -y prometheus; scripts/install-test-deps.sh does)");
}

/** Runs promtool; resolves with its exit code and output (stdout and stderr together). */
async function runPromtool(args: string[]): Promise<{ code: number; output: string }> {
  try {
    const { stdout, stderr } = await execFileAsync(promtool(), args, { cwd: repoRoot, timeout: 60_000, encoding: "utf8" });
    return { code: 0, output: stdout + stderr };
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { code?: number | string; stdout?: string; stderr?: string };
    if (typeof e.code !== "number") throw err;
    return { code: e.code, output: (e.stdout ?? "") + (e.stderr ?? "") };
  }
}

// --- the dashboard and the rules -----------------------------------------------------------------

interface Target {
  readonly expr?: string;
  readonly datasource?: { readonly type?: string; readonly uid?: string };
}
interface Panel {
  readonly type: string;
  readonly title: string;
  readonly description?: string;
  readonly datasource?: { readonly uid?: string };
  readonly fieldConfig?: { readonly defaults?: { readonly unit?: string } };
  readonly targets?: readonly Target[];
  readonly panels?: readonly Panel[];
}
interface Variable {
  readonly name: string;
  readonly type: string;
  readonly query?: string | { readonly query: string };
}
interface Dashboard {
  readonly schemaVersion: number;
  readonly templating: { readonly list: readonly Variable[] };
  readonly panels: readonly Panel[];
}
interface Rule {
  readonly alert: string;
  readonly expr: string;
  readonly for?: string;
  readonly labels?: Record<string, string>;
  readonly annotations?: Record<string, string>;
}

const dashboard = JSON.parse(readFileSync(dashboardPath, "utf8")) as Dashboard;
const rules = (parse(readFileSync(alertsPath, "utf8")) as { groups: { rules: Rule[] }[] }).groups.flatMap((g) => g.rules);
const panels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]).filter((p) => p.type !== "row");

/** Each panel's expressions, named `panel "<title>" <refId index>`. */
const panelExprs: [string, string][] = panels.flatMap((p) => (p.targets ?? []).map((t, i): [string, string] => [`panel "${p.title}" target ${i}`, t.expr ?? ""]));

/** The dashboard variables' queries: `label_values(<selector>, <label>)`, as PromQL (the selector) and a label. */
const variableQueries = dashboard.templating.list
  .filter((v) => v.type === "query")
  .map((v) => {
    const q = typeof v.query === "string" ? v.query : (v.query?.query ?? "");
    const m = /^label_values\((.+),\s*([a-zA-Z_]\w*)\)$/.exec(q);
    if (m === null) throw new Error(`variable ${v.name}: not label_values(selector, label): ${q}`);
    return { name: v.name, selector: m[1]!, label: m[2]! };
  });

/** The values Grafana gives its variables, for a check of the expressions' syntax. */
function withVariables(expr: string): string {
  return expr.replaceAll("$__rate_interval", "5m").replaceAll("$__range", "1h").replaceAll("$job", ".*").replaceAll("$model", ".*");
}

// --- PromQL: the metrics and labels an expression reads ------------------------------------------

/** One metric an expression reads, with the labels its matchers name. */
interface Selector {
  readonly metric: string;
  readonly labels: readonly string[];
}

const keywords = new Set(["by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset", "inf", "nan"]);

/**
 * The metrics an expression reads (each selector's name and its matchers' label names), and the
 * labels its `by`/`without`/`on`/`ignoring`/`group_*` clauses name. Enough of PromQL for these
 * files: string literals and range/subquery brackets are dropped first, a name followed by `(` is a
 * function or aggregation, any other name outside braces a metric.
 */
function readsOf(expr: string): { selectors: Selector[]; grouping: string[] } {
  let rest = expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""').replace(/\[[^\]]*\]/g, "");
  const grouping: string[] = [];
  rest = rest.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)/g, (_, _kw: string, list: string) => {
    grouping.push(...list.split(",").map((s) => s.trim()).filter((s) => s !== ""));
    return " ";
  });
  const selectors: Selector[] = [];
  rest = rest.replace(/([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}/g, (_, name: string | undefined, matchers: string) => {
    const labels = [...matchers.matchAll(/([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)/g)].map((m) => m[1]!);
    if (name === undefined || keywords.has(name)) throw new Error(`a selector without a metric name in ${expr}`);
    selectors.push({ metric: name, labels });
    return " ";
  });
  for (const m of rest.matchAll(/(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?/g)) {
    if (m[2] === undefined && !keywords.has(m[1]!)) selectors.push({ metric: m[1]!, labels: [] });
  }
  return { selectors, grouping };
}

// --- the running gateway's /metrics --------------------------------------------------------------

/** The metric families of a scrape: type, and each sample name's label names. */
interface Exported {
  readonly types: Map<string, string>;
  readonly samples: Map<string, Set<string>>;
}

function parseExposition(text: string): Exported {
  const types = new Map<string, string>();
  const samples = new Map<string, Set<string>>();
  for (const line of text.split("\n")) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type !== null) types.set(type[1]!, type[2]!);
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? /.exec(line);
    if (m === null) throw new Error(`not a sample line: ${line}`);
    const labels = samples.get(m[1]!) ?? new Set<string>();
    for (const l of (m[2] ?? "").matchAll(/([a-zA-Z_]\w*)="/g)) labels.add(l[1]!);
    samples.set(m[1]!, labels);
  }
  return { types, samples };
}

/** Labels Prometheus adds to every scraped series (the target's), which infergate does not export. */
const targetLabels = new Set(["job", "instance"]);

/**
 * What is wrong with `metric` (read with matchers on `labels`) against the scrape: not exported,
 * no sample, or a label its samples do not have. A histogram's `_bucket`, `_sum` and `_count`
 * belong to the histogram's family.
 */
function problemsOf(exported: Exported, metric: string, labels: readonly string[]): string[] {
  const suffix = /_(bucket|sum|count)$/.exec(metric);
  const family = exported.types.has(metric) ? metric : suffix !== null ? metric.slice(0, -suffix[0].length) : metric;
  const type = exported.types.get(family);
  if (type === undefined || (family !== metric && type !== "histogram" && type !== "summary")) return [`${metric}: not exported`];
  const sampleLabels = exported.samples.get(metric);
  if (sampleLabels === undefined) return [`${metric}: exported (${type}) but without a sample`];
  return labels.filter((l) => !targetLabels.has(l) && !sampleLabels.has(l)).map((l) => `${metric}: no label ${l}`);
}

// --- the gateway ---------------------------------------------------------------------------------

const keys = { team: "sk-monitoring-team", limited: "sk-monitoring-limited", tiny: "sk-monitoring-tiny" };

/**
 * A gateway with auth, prices, budgets and a failing model: the calls below make every labelled
 * series that the dashboard and the rules read appear.
 */
const config = `
auth:
  enabled: true
  keys:
    - { name: team, sha256: ${hashKey(keys.team)} }
    - { name: limited, sha256: ${hashKey(keys.limited)}, limits: { requestsPerMinute: 1 } }
    - { name: tiny, sha256: ${hashKey(keys.tiny)} }
pricing: { currency: USD }
budgets:
  keys:
    team: { day: { money: 100, tokens: 1000000 } }
    tiny: { hour: { tokens: 1 } }
  groups:
    - { name: everyone, keys: [team, limited, tiny], limits: { month: { money: 1000 } } }
upstreams:
  - { name: mock, kind: mock }
  - { name: down, kind: mock, options: { failCode: UNAVAILABLE }, resilience: { retry: { maxAttempts: 1 }, breaker: { consecutiveFailures: 5, resetTimeoutMs: 3600000 } } }
models:
  - { name: chat, version: "1", upstream: mock, capabilities: [chat, generate], price: { inputPerMTok: 3, outputPerMTok: 15 } }
  - { name: embed, version: "1", upstream: mock, capabilities: [embed], price: { embeddingPer1kTokens: 0.02 } }
  - { name: broken, version: "1", upstream: down, capabilities: [chat] }
`;

let app: App;
let exported: Exported;
let samples: Map<string, number>;

beforeAll(async () => {
  app = await startInProcess(config);
  const client = createClient(InferenceService, createGrpcTransport({ baseUrl: `http://${app.grpcAddress}` }));
  const as = (key: string) => ({ headers: { authorization: `Bearer ${key}` } });
  const messages = [{ role: Role.USER, content: [{ part: { case: "text" as const, value: "how much is this" } }] }];
  const code = (p: Promise<unknown>) => p.then(() => "OK", (e: unknown) => Code[ConnectError.from(e).code]);

  // Traffic, latency, tokens, cost: Chat twice alike (a cache miss, then a hit), Generate (TTFT), Embed.
  await client.chat({ model: "chat", messages, temperature: 0 }, as(keys.team));
  await client.chat({ model: "chat", messages, temperature: 0 }, as(keys.team));
  for await (const _ of client.generate({ model: "chat", messages }, as(keys.team))) {
    // drain
  }
  await client.embed({ model: "embed", texts: ["one", "two"] }, as(keys.team));
  // Errors: a failing upstream, an unknown model; a rate limit; a budget spent by one call.
  // Five failures in a row open the broken model's breaker (breaker.consecutiveFailures), which
  // stays open for the rest of the test (resetTimeoutMs an hour); the sixth call fails fast.
  for (let i = 0; i < 6; i++) expect(await code(client.chat({ model: "broken", messages }, as(keys.team)))).toBe("Unavailable");
  expect(await code(client.chat({ model: "nope", messages }, as(keys.team)))).toBe("NotFound");
  expect(await code(client.chat({ model: "chat", messages }, as(keys.limited)))).toBe("OK");
  expect(await code(client.chat({ model: "chat", messages }, as(keys.limited)))).toBe("ResourceExhausted");
  expect(await code(client.chat({ model: "chat", messages }, as(keys.tiny)))).toBe("OK");
  expect(await code(client.chat({ model: "chat", messages }, as(keys.tiny)))).toBe("ResourceExhausted");

  const res = await fetch(`http://${app.adminAddress}/metrics`);
  expect(res.status).toBe(200);
  const text = await res.text();
  exported = parseExposition(text);
  samples = parseMetrics(text);
});

afterAll(async () => {
  await app?.shutdown();
});

// --- the tests -----------------------------------------------------------------------------------

describe("deploy/prometheus/alerts.yaml", () => {
  it("passes promtool check rules", async () => {
    const { code, output } = await runPromtool(["check", "rules", alertsPath]);
    expect(output).toContain(`SUCCESS: ${rules.length} rules found`);
    expect(code, output).toBe(0);
  });

  it("passes its unit tests (promtool test rules deploy/prometheus/alerts-test.yaml), which cover every alert", async () => {
    const { code, output } = await runPromtool(["test", "rules", alertsTestPath]);
    expect(code, output).toBe(0);
    expect(output).toContain("SUCCESS");
    const tested = new Set(
      (parse(readFileSync(alertsTestPath, "utf8")) as { tests: { alert_rule_test: { alertname: string; exp_alerts: unknown[] }[] }[] }).tests.flatMap((t) =>
        t.alert_rule_test.filter((a) => a.exp_alerts.length > 0).map((a) => a.alertname),
      ),
    );
    expect(rules.map((r) => r.alert).filter((a) => !tested.has(a))).toEqual([]);
  });

  it("gives every rule a for:, a severity and a summary and description", () => {
    expect(rules.length).toBeGreaterThan(0);
    for (const r of rules) {
      expect(r.for, r.alert).toMatch(/^\d+[smh]$/);
      expect(["warning", "critical"], r.alert).toContain(r.labels?.["severity"]);
      expect(r.annotations?.["summary"], r.alert).toBeTruthy();
      expect(r.annotations?.["description"], r.alert).toBeTruthy();
    }
  });
});

describe("deploy/grafana/infergate.json", () => {
  it("has a Prometheus data source variable, job and model variables, and panels that use the data source variable", () => {
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(39);
    expect(dashboard.templating.list.find((v) => v.name === "datasource")).toMatchObject({ type: "datasource", query: "prometheus" });
    expect(variableQueries.map((v) => v.name)).toEqual(["job", "model"]);
    expect(panels.length).toBeGreaterThan(10);
    for (const p of panels) {
      expect(p.description, p.title).toBeTruthy();
      expect(p.datasource?.uid, p.title).toBe("${datasource}");
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets ?? []) {
        expect(t.datasource?.uid, p.title).toBe("${datasource}");
        expect(t.expr, p.title).toBeTruthy();
      }
      if (p.type === "timeseries" || p.type === "stat" || p.type === "bargauge") expect(p.fieldConfig?.defaults?.unit, p.title).toBeTruthy();
    }
  });

  it("has PromQL that parses: promtool checks every expression as a recording rule", async () => {
    const dir = mkdtempSync(join(tmpdir(), "infergate-dashboard-"));
    try {
      const exprs = [...panelExprs.map(([, e]) => e), ...variableQueries.map((v) => v.selector)];
      const file = join(dir, "dashboard-rules.yaml");
      writeFileSync(file, stringify({ groups: [{ name: "dashboard", rules: exprs.map((e, i) => ({ record: `dashboard:expr_${i}`, expr: withVariables(e) })) }] }));
      const { code, output } = await runPromtool(["check", "rules", file]);
      expect(code, output).toBe(0);
      expect(output).toContain(`SUCCESS: ${exprs.length} rules found`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("every metric the dashboard and the alerts read is exported by a running infergate", () => {
  const uses: [string, string][] = [
    ...panelExprs,
    ...variableQueries.map((v): [string, string] => [`variable ${v.name}`, `sum by (${v.label}) (${v.selector})`]),
    ...rules.map((r): [string, string] => [`alert ${r.alert}`, r.expr]),
  ];

  it("reads only infergate's metrics, with samples, and the labels they carry", () => {
    const problems: string[] = [];
    for (const [where, expr] of uses) {
      const { selectors, grouping } = readsOf(expr);
      if (selectors.length === 0) problems.push(`${where}: reads no metric`);
      for (const s of selectors) problems.push(...problemsOf(exported, s.metric, s.labels).map((p) => `${where}: ${p}`));
      // A grouping label must be on a series the expression reads (le: a histogram's buckets).
      const known = new Set([...targetLabels, ...selectors.flatMap((s) => [...(exported.samples.get(s.metric) ?? [])])]);
      for (const l of grouping) if (!known.has(l)) problems.push(`${where}: groups by ${l}, a label of none of its metrics`);
    }
    expect(problems).toEqual([]);
  });

  it("the check can fail: a made-up metric, a histogram suffix on a counter, and an unknown label are reported", () => {
    expect(problemsOf(exported, "infergate_made_up_total", [])).toEqual(["infergate_made_up_total: not exported"]);
    expect(problemsOf(exported, "infergate_requests_total_bucket", [])).toEqual(["infergate_requests_total_bucket: not exported"]);
    expect(problemsOf(exported, "infergate_requests_total", ["tenant"])).toEqual(["infergate_requests_total: no label tenant"]);
    expect(problemsOf(exported, "infergate_request_duration_seconds_bucket", ["le", "rpc", "job"])).toEqual([]);
    expect(readsOf('histogram_quantile(0.9, sum by (le) (rate(x_bucket{job=~"$job"}[$__rate_interval]))) / on (a) y')).toEqual({
      selectors: [
        { metric: "x_bucket", labels: ["job"] },
        { metric: "y", labels: [] },
      ],
      grouping: ["le", "a"],
    });
  });
});

describe("the metrics added for the dashboard and the alerts", () => {
  it("infergate_breaker_state: the broken model's breaker open (2), the others closed (0)", () => {
    expect(samples.get('infergate_breaker_state{model="broken",upstream="down",endpoint=""}')).toBe(2);
    expect(samples.get('infergate_breaker_state{model="chat",upstream="mock",endpoint=""}')).toBe(0);
    expect(samples.get('infergate_breaker_state{model="embed",upstream="mock",endpoint=""}')).toBe(0);
  });

  it("infergate_errors_total: each failed call once, by its reason", () => {
    const errors = (model: string, reason: string) => samples.get(`infergate_errors_total{rpc="Chat",model="${model}",reason="${reason}"}`) ?? 0;
    expect(errors("broken", "UPSTREAM_UNAVAILABLE")).toBe(5);
    expect(errors("broken", "CIRCUIT_OPEN")).toBe(1);
    expect(errors("other", "MODEL_NOT_FOUND")).toBe(1);
    expect(errors("chat", "RATE_LIMITED")).toBe(1);
    expect(errors("chat", "BUDGET_EXCEEDED")).toBe(1);
    const failed = [...samples].filter(([k]) => k.startsWith("infergate_requests_total{") && !k.includes('code="OK"')).reduce((n, [, v]) => n + v, 0);
    const counted = [...samples].filter(([k]) => k.startsWith("infergate_errors_total{")).reduce((n, [, v]) => n + v, 0);
    expect(counted).toBe(failed);
    expect(failed).toBe(9);
  });
});
