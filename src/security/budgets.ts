import { Code } from "@connectrpc/connect";
import type { BudgetLimitsConfig, BudgetsConfig } from "../config/schema.js";
import { GatewayError, Reason } from "../core/gateway-error.js";
import { type Admission, isModelCall } from "../core/rpc.js";
import type { CallRecord } from "../observability/call-record.js";
import { type BudgetPeriod, budgetPeriods, PeriodClock, periodBounds } from "./budget-periods.js";
import { type BudgetCharge, type BudgetStore, type BudgetWindow, type Spend, type WindowUsage, windowId } from "./budget-store.js";

/** What a budget limits: tokens (prompt + completion) or money (in `pricing.currency`). */
export type BudgetKind = "tokens" | "money";

interface Limit {
  readonly period: BudgetPeriod;
  readonly kind: BudgetKind;
  readonly value: number;
}

/** A budget with limits: `key:<caller>` or `group:<name>`. */
interface LimitedBudget {
  readonly name: string;
  readonly limits: readonly Limit[];
  /** The periods its limits name, each once, in the order of budgetPeriods. */
  readonly periods: readonly BudgetPeriod[];
  /** Its current windows, one per period, kept while they are current (the check's). */
  windows: readonly BudgetWindow[] | undefined;
}

/** One value of the budget gauges: a limit and what its budget has spent of it this period. */
export interface BudgetGauge {
  readonly budget: string;
  readonly kind: BudgetKind;
  readonly period: BudgetPeriod;
  readonly limit: number;
  readonly spent: number;
}

/** A budget's (or a caller's) usage in one window, with its limits there. */
export type UsageEntry = WindowUsage & { limits?: { tokens?: number; money?: number } };

/** One window of the usage query. */
export interface UsageWindowReport {
  readonly start: string;
  readonly end: string;
  /** Every configured caller's spend (a caller without calls: zeros). */
  readonly keys: Record<string, UsageEntry>;
  readonly groups: Record<string, UsageEntry & { keys: readonly string[] }>;
  /** Every call's spend together (with auth off too), with its parts by model. */
  readonly total: WindowUsage;
}

/** The usage query's answer (GET /admin/usage). */
export interface UsageReport {
  readonly currency: string;
  readonly timeZone: string;
  readonly periods: Partial<Record<BudgetPeriod, { current: UsageWindowReport; previous: UsageWindowReport }>>;
}

/** Budgets at run time: the check before a call, the charge after it, the usage query. */
export interface Budgets {
  /** `admit` followed by the budget check of the caller it identified (model calls only). */
  admission(admit: Admission): Admission;
  /** Charges a finished call to its caller's budgets; undefined when there is nothing to charge. */
  charge(record: CallRecord): Promise<void> | undefined;
  /** The spend per caller, group and model of the current and previous period of each (or one) kind. */
  usage(period?: BudgetPeriod): Promise<UsageReport>;
  /** Each limit and its spend this period (the metrics, at scrape time). */
  gauges(): Promise<BudgetGauge[]>;
  /** Calls refused so far, by budget. */
  readonly refused: ReadonlyMap<string, number>;
}

/** The budget counting every call, whoever made it: the usage query's totals and models. */
const allBudget = "all";

export interface BudgetsOptions {
  /** `pricing.currency`: the unit of money limits and of CallRecord.cost. */
  readonly currency: string;
  /** The configured callers (keys and certificate identities), listed by the usage query. */
  readonly callers: readonly string[];
  /** The configured models: the only model names counted apart (others as "other"). */
  readonly models: readonly string[];
  readonly now?: () => number;
  /** Where refusals are counted (kept across reloads, so that the counter never goes back). */
  readonly refused?: Map<string, number>;
}

function limitsOf(limits: BudgetLimitsConfig): Limit[] {
  const out: Limit[] = [];
  for (const period of budgetPeriods) {
    const l = limits[period];
    if (l?.tokens !== undefined) out.push({ period, kind: "tokens", value: l.tokens });
    if (l?.money !== undefined) out.push({ period, kind: "money", value: l.money });
  }
  return out;
}

function limited(name: string, limits: BudgetLimitsConfig): LimitedBudget | undefined {
  const ls = limitsOf(limits);
  if (ls.length === 0) return undefined;
  return { name, limits: ls, periods: budgetPeriods.filter((p) => ls.some((l) => l.period === p)), windows: undefined };
}

/** A duration as its two largest units ("3h 12m", "45s"). */
function humanDuration(ms: number): string {
  const s = Math.ceil(ms / 1000);
  const units: [number, string][] = [
    [Math.floor(s / 86_400), "d"],
    [Math.floor((s % 86_400) / 3600), "h"],
    [Math.floor((s % 3600) / 60), "m"],
    [s % 60, "s"],
  ];
  const first = units.findIndex(([n]) => n > 0);
  if (first < 0) return "0s";
  return units
    .slice(first, first + 2)
    .filter(([n]) => n > 0)
    .map(([n, u]) => `${n}${u}`)
    .join(" ");
}

/** The model a call's spend is counted under: the one whose price it cost (a fallback), else the one asked for. */
function modelOf(record: CallRecord): string {
  return record.pricedModel ?? record.model;
}

/**
 * Builds the budgets of `config` over `store`. Every call of a known caller is charged to the
 * caller's own count (`key:<name>`), each of its groups' (`group:<name>`) and the total (`all`),
 * for the current hour, day and month, whether or not they have limits (the usage query reads
 * them). Before a model call, each limited budget of its caller is read: a budget at or over one
 * of its limits refuses the call (RESOURCE_EXHAUSTED, BUDGET_EXCEEDED, RetryInfo = the time until
 * that period ends). A call admitted runs to its end whatever it spends: the next one is refused.
 * So several calls in flight, on one gateway or several sharing Redis, may together go past a
 * limit by what those calls spend (one call per gateway for callers that call one at a time).
 */
export function createBudgets(config: BudgetsConfig, store: BudgetStore, options: BudgetsOptions): Budgets {
  const clock = new PeriodClock(config.timeZone, options.now);
  const models = new Set(options.models);
  const groupsOf = new Map<string, string[]>();
  const limitedOf = new Map<string, LimitedBudget[]>();
  const allLimited: LimitedBudget[] = [];
  const addLimited = (caller: string, b: LimitedBudget | undefined) => {
    if (b === undefined) return;
    let list = limitedOf.get(caller);
    if (list === undefined) limitedOf.set(caller, (list = []));
    list.push(b);
  };
  for (const [caller, limits] of Object.entries(config.keys)) {
    const b = limited(`key:${caller}`, limits);
    addLimited(caller, b);
    if (b !== undefined) allLimited.push(b);
  }
  for (const g of config.groups) {
    const b = limited(`group:${g.name}`, g.limits);
    if (b !== undefined) allLimited.push(b);
    for (const caller of new Set(g.keys)) {
      addLimited(caller, b);
      let list = groupsOf.get(caller);
      if (list === undefined) groupsOf.set(caller, (list = []));
      list.push(`group:${g.name}`);
    }
  }
  /** The budgets a caller's calls are charged to. */
  const chargedTo = new Map<string, readonly string[]>();
  const budgetsOf = (caller: string): readonly string[] => {
    let list = chargedTo.get(caller);
    if (list === undefined) {
      list = caller === "" ? [allBudget] : [`key:${caller}`, ...(groupsOf.get(caller) ?? []), allBudget];
      // Tenants are configured names (admission sets them): the map stays as small as the config.
      chargedTo.set(caller, list);
    }
    return list;
  };

  /** The window of a period holding now; kept until the clock leaves it. */
  const windows = new Map<BudgetPeriod, BudgetWindow>();
  const window = (period: BudgetPeriod, now: number): BudgetWindow => {
    const w = windows.get(period);
    if (w !== undefined && now >= w.start && now < w.end) return w;
    const b = clock.bounds(period, now);
    // Kept through the next period, when the usage query reads it as the previous one.
    const next: BudgetWindow = { id: windowId(period, b.start), period, start: b.start, end: b.end, expireAt: periodBounds(period, b.end, config.timeZone).end + 60_000 };
    windows.set(period, next);
    allWindows = undefined;
    return next;
  };
  /** The current window of every period (what a call is charged to), kept while they are current. */
  let allWindows: BudgetWindow[] | undefined;
  const currentWindows = (now: number): readonly BudgetWindow[] => {
    if (allWindows !== undefined && allWindows.every((w) => now < w.end)) return allWindows;
    const ws = budgetPeriods.map((p) => window(p, now));
    allWindows = ws;
    return ws;
  };
  const windowAt = (bounds: { start: number; end: number }, period: BudgetPeriod): BudgetWindow => ({ id: windowId(period, bounds.start), period, ...bounds, expireAt: bounds.end });

  const refused = options.refused ?? new Map<string, number>();
  const exceeded = (b: LimitedBudget, l: Limit, w: BudgetWindow, now: number): GatewayError => {
    refused.set(b.name, (refused.get(b.name) ?? 0) + 1);
    const retryAfterMs = Math.max(1, w.end - now);
    const amount = l.kind === "tokens" ? `${l.value} tokens` : `${l.value} ${options.currency}`;
    return new GatewayError(Code.ResourceExhausted, `budget ${b.name} has spent its ${amount} per ${l.period}; it resets in ${humanDuration(retryAfterMs)}`, {
      reason: Reason.BudgetExceeded,
      retryAfterMs,
      metadata: { budget: b.name, period: l.period, kind: l.kind },
    });
  };

  /** The limit a budget's spend has reached, if any (the one whose period ends last). */
  const over = (b: LimitedBudget, ws: readonly BudgetWindow[], spent: readonly Spend[]): { limit: Limit; window: BudgetWindow } | undefined => {
    let found: { limit: Limit; window: BudgetWindow } | undefined;
    for (const l of b.limits) {
      const i = b.periods.indexOf(l.period);
      const s = spent[i]!;
      if ((l.kind === "tokens" ? s.tokens : s.money) >= l.value && (found === undefined || ws[i]!.end > found.window.end)) {
        found = { limit: l, window: ws[i]! };
      }
    }
    return found;
  };

  /** A budget's current windows (the same array while they are current). */
  const windowsOf = (b: LimitedBudget, now: number): readonly BudgetWindow[] => {
    let ws = b.windows;
    if (ws === undefined || !ws.every((w) => now < w.end)) b.windows = ws = b.periods.map((p) => window(p, now));
    return ws;
  };
  const decide = (b: LimitedBudget, ws: readonly BudgetWindow[], spent: readonly Spend[], now: number): void => {
    const o = over(b, ws, spent);
    if (o !== undefined) throw exceeded(b, o.limit, o.window, now);
  };

  const check = (caller: string): void | Promise<void> => {
    const budgets = limitedOf.get(caller);
    if (budgets === undefined) return;
    const now = clock.now();
    let pending: Promise<void>[] | undefined;
    for (const b of budgets) {
      const ws = windowsOf(b, now);
      const spent = store.spent(b.name, ws);
      if (spent instanceof Promise) (pending ??= []).push(spent.then((s) => decide(b, ws, s, now)));
      else decide(b, ws, spent, now);
    }
    if (pending !== undefined) return Promise.all(pending).then(() => undefined);
  };

  const usageEntry = (u: WindowUsage, limits: BudgetLimitsConfig | undefined, period: BudgetPeriod): UsageEntry => {
    const l = limits?.[period];
    return l === undefined ? u : { ...u, limits: { ...l } };
  };

  async function windowReport(period: BudgetPeriod, w: BudgetWindow): Promise<UsageWindowReport> {
    const keys: Record<string, UsageEntry> = {};
    const groups: Record<string, UsageEntry & { keys: readonly string[] }> = {};
    await Promise.all([
      ...options.callers.map(async (c) => {
        keys[c] = usageEntry(await store.usage(`key:${c}`, w), config.keys[c], period);
      }),
      ...config.groups.map(async (g) => {
        groups[g.name] = { ...usageEntry(await store.usage(`group:${g.name}`, w), g.limits, period), keys: g.keys };
      }),
    ]);
    const total = await store.usage(allBudget, w);
    return { start: new Date(w.start).toISOString(), end: new Date(w.end).toISOString(), keys, groups, total };
  }

  return {
    refused,
    admission(admit) {
      return (call) => {
        const wait = admit(call);
        if (!isModelCall(call.rpc)) return wait;
        if (wait === undefined) return check(call.ctx.tenant);
        return wait.then(() => check(call.ctx.tenant));
      };
    },
    charge(record) {
      const tokens = record.promptTokens + record.completionTokens;
      const money = record.cost;
      if (tokens <= 0 && (money === undefined || money <= 0)) return undefined;
      const ws = currentWindows(clock.now());
      const model = modelOf(record);
      const c: BudgetCharge = { model: models.has(model) ? model : "other", tokens, money };
      const pending: Promise<void>[] = [];
      for (const b of budgetsOf(record.tenant)) {
        const r = store.charge(b, ws, c);
        if (r instanceof Promise) pending.push(r);
      }
      return pending.length === 0 ? undefined : Promise.all(pending).then(() => undefined);
    },
    async usage(period) {
      const now = clock.now();
      const out: UsageReport["periods"] = {};
      for (const p of period === undefined ? budgetPeriods : [period]) {
        const [current, previous] = await Promise.all([windowReport(p, window(p, now)), windowReport(p, windowAt(clock.previous(p, now), p))]);
        out[p] = { current, previous };
      }
      return { currency: options.currency, timeZone: config.timeZone, periods: out };
    },
    async gauges() {
      const now = clock.now();
      const out: BudgetGauge[] = [];
      await Promise.all(
        allLimited.map(async (b) => {
          const spent = await store.spent(
            b.name,
            b.periods.map((p) => window(p, now)),
          );
          for (const l of b.limits) {
            const s = spent[b.periods.indexOf(l.period)]!;
            out.push({ budget: b.name, kind: l.kind, period: l.period, limit: l.value, spent: l.kind === "tokens" ? s.tokens : s.money });
          }
        }),
      );
      return out;
    },
  };
}
