import { Counter, Gauge, type Registry } from "prom-client";
import type { BudgetGauge, Budgets } from "../security/budgets.js";

/**
 * The budgets' metrics, read at scrape time from the budgets running now (a reload replaces
 * them): `infergate_budget_spent` and `infergate_budget_limit` per limited budget, kind and period
 * (this period's spend, read from the store) and `infergate_budget_refused_total` per budget
 * (the checks decided without Redis are metrics.ts's, with the other Redis counters). The `budget` label is `key:<caller>` or
 * `group:<name>`: configured names, a set bounded by the configuration.
 */
export function registerBudgetMetrics(registry: Registry, budgets: () => Budgets | undefined): void {
  /** One read of the store serves both gauges of a scrape. */
  let reading: Promise<BudgetGauge[]> | undefined;
  const read = (): Promise<BudgetGauge[]> => {
    if (reading === undefined) {
      const b = budgets();
      // A store that cannot be read (Redis down) leaves the gauges empty for this scrape.
      reading = (b === undefined ? Promise.resolve([]) : b.gauges().catch(() => [])).finally(() => setImmediate(() => (reading = undefined)));
    }
    return reading;
  };
  const gauge = (name: string, help: string, value: (g: BudgetGauge) => number) =>
    new Gauge({
      name,
      help,
      labelNames: ["budget", "kind", "period"] as const,
      registers: [registry],
      async collect() {
        this.reset();
        for (const g of await read()) this.set({ budget: g.budget, kind: g.kind, period: g.period }, value(g));
      },
    });
  gauge("infergate_budget_spent", "Budgets: spent this period (kind tokens: prompt + completion; money: pricing.currency), by budget (key:<caller> or group:<name>), kind and period.", (g) => g.spent);
  gauge("infergate_budget_limit", "Budgets: the configured limit, by budget, kind and period.", (g) => g.limit);
  new Counter({
    name: "infergate_budget_refused_total",
    help: "Calls refused because a budget was spent (reason BUDGET_EXCEEDED), by budget.",
    labelNames: ["budget"] as const,
    registers: [registry],
    collect() {
      const b = budgets();
      if (b === undefined) return;
      this.reset();
      for (const [budget, n] of b.refused) this.inc({ budget }, n);
    },
  });
}
