import type { BudgetPeriod } from "./budget-periods.js";

/** One budget's count over one period: which period, its bounds, and when its count may go. */
export interface BudgetWindow {
  /** `<period>:<start>`: the window's name among a budget's windows (made once per window). */
  readonly id: string;
  readonly period: BudgetPeriod;
  readonly start: number;
  readonly end: number;
  /**
   * When the count may be dropped: a period after its end, so that the usage query still reads
   * it as the previous period.
   */
  readonly expireAt: number;
}

/** What was spent: tokens (prompt + completion) and money (in `pricing.currency`). */
export interface Spend {
  tokens: number;
  money: number;
}

/** A window's spend, with its parts by model and the calls of unpriced models (money unknown). */
export interface WindowUsage extends Spend {
  unpricedCalls: number;
  models: Record<string, Spend & { unpricedCalls: number }>;
}

/** One call's charge to a budget. */
export interface BudgetCharge {
  readonly model: string;
  readonly tokens: number;
  /** undefined: the model that answered has no price. */
  readonly money: number | undefined;
}

/**
 * Where budgets' counts live: in this process's memory, or on Redis (redis-budget-store.ts)
 * where every replica adds to and reads the same counts. A budget is a name (`key:alice`,
 * `group:team-a`, `all`); each of its windows is counted apart.
 */
export interface BudgetStore {
  /** The spend of `budget` in each window, in order (a window never charged spent nothing). */
  spent(budget: string, windows: readonly BudgetWindow[]): Promise<Spend[]> | Spend[];
  /** Adds a call's charge to each window of `budget`. */
  charge(budget: string, windows: readonly BudgetWindow[], charge: BudgetCharge): Promise<void> | void;
  /** The usage of `budget` in one window, by model (the usage query). */
  usage(budget: string, window: BudgetWindow): Promise<WindowUsage> | WindowUsage;
}

/** An empty usage. */
export function emptyUsage(): WindowUsage {
  return { tokens: 0, money: 0, unpricedCalls: 0, models: {} };
}

/** Adds a charge to a usage, in place. */
export function addCharge(u: WindowUsage, c: BudgetCharge): void {
  const m = (u.models[c.model] ??= { tokens: 0, money: 0, unpricedCalls: 0 });
  u.tokens += c.tokens;
  m.tokens += c.tokens;
  if (c.money === undefined) {
    u.unpricedCalls++;
    m.unpricedCalls++;
  } else {
    u.money += c.money;
    m.money += c.money;
  }
}

/** A window's id: `<period>:<start>`. */
export function windowId(period: BudgetPeriod, start: number): string {
  return `${period}:${start}`;
}

type StoredUsage = WindowUsage & { expireAt: number };

/**
 * Budgets counted in this process's memory: per budget, its windows by id (two lookups of strings
 * made once, where one key joined per call would be a new string to hash each time), dropped once
 * expired.
 */
export class MemoryBudgetStore implements BudgetStore {
  private readonly budgets = new Map<string, Map<string, StoredUsage>>();
  /** Next time expired windows are looked for. */
  private sweepAt = 0;

  constructor(private readonly now: () => number = Date.now) {}

  private static readonly none: Spend = Object.freeze({ tokens: 0, money: 0 });

  spent(budget: string, windows: readonly BudgetWindow[]): Spend[] {
    const ws = this.budgets.get(budget);
    const out: Spend[] = [];
    for (const w of windows) out.push(ws?.get(w.id) ?? MemoryBudgetStore.none);
    return out;
  }

  charge(budget: string, windows: readonly BudgetWindow[], charge: BudgetCharge): void {
    let ws = this.budgets.get(budget);
    if (ws === undefined) this.budgets.set(budget, (ws = new Map()));
    for (const w of windows) {
      let u = ws.get(w.id);
      if (u === undefined) {
        u = { ...emptyUsage(), expireAt: w.expireAt };
        ws.set(w.id, u);
        this.sweep();
      }
      addCharge(u, charge);
    }
  }

  usage(budget: string, window: BudgetWindow): WindowUsage {
    const u = this.budgets.get(budget)?.get(window.id);
    if (u === undefined) return emptyUsage();
    const { expireAt: _expireAt, ...usage } = u;
    return structuredClone(usage);
  }

  /** Drops expired windows, at most once a minute (a new window is what makes old ones expire). */
  private sweep(): void {
    const now = this.now();
    if (now < this.sweepAt) return;
    this.sweepAt = now + 60_000;
    for (const ws of this.budgets.values()) for (const [id, u] of ws) if (u.expireAt <= now) ws.delete(id);
  }
}
