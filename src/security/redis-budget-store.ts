import { Code } from "@connectrpc/connect";
import { GatewayError, Reason } from "../core/gateway-error.js";
import type { Logger } from "../observability/logger.js";
import type { RedisConnection } from "../redis/redis-client.js";
import type { RedisStats } from "../redis/redis-stats.js";
import { type BudgetCharge, type BudgetStore, type BudgetWindow, emptyUsage, type Spend, type WindowUsage } from "./budget-store.js";

/** What to do with a call when Redis cannot be asked for its budget (config `budgets.onRedisFailure`). */
export type OnBudgetStoreFailure = "open" | "closed";

/**
 * Budgets on Redis, shared by every replica: each window of a budget is a hash
 * (`<prefix>budget:{<budget>}:<period>:<start>`; the hash tag keeps one budget's windows on one
 * Cluster node), added to by one Lua script per budget and call (redis-scripts.ts,
 * budgetChargeScript), so replicas never lose each other's charges. The key expires a period
 * after its period ended (the usage query reads it as the previous period).
 *
 * When Redis fails, `open` admits the call as if the budget were unspent and `closed` refuses it
 * (UNAVAILABLE, BUDGET_STORE_UNAVAILABLE); a charge that cannot be written is lost. Either way it
 * is counted and logged once per outage.
 */
export class RedisBudgetStore implements BudgetStore {
  private failing = false;

  constructor(
    private readonly redis: RedisConnection,
    private readonly onFailure: OnBudgetStoreFailure,
    private readonly stats: RedisStats,
    private readonly log: Logger,
  ) {}

  private key(budget: string, w: BudgetWindow): string {
    return `${this.redis.prefix}budget:{${budget}}:${w.period}:${w.start}`;
  }

  private failed(err: unknown): void {
    this.stats.errors.budgets++;
    if (!this.failing) {
      this.failing = true;
      this.log.warn(
        { err: err instanceof Error ? err.message : String(err), onFailure: this.onFailure },
        this.onFailure === "open" ? "budgets: redis failed; admitting calls unchecked, charges are lost" : "budgets: redis failed; refusing calls",
      );
    }
  }

  private recovered(): void {
    if (this.failing) {
      this.failing = false;
      this.log.info("budgets: redis answers again");
    }
  }

  async spent(budget: string, windows: readonly BudgetWindow[]): Promise<Spend[]> {
    try {
      const v = await this.redis.client.igBudgetSpent(windows.length, ...windows.map((w) => this.key(budget, w)));
      this.recovered();
      return windows.map((_, i) => ({ tokens: Number(v[2 * i] ?? 0), money: Number(v[2 * i + 1] ?? 0) }));
    } catch (err) {
      this.failed(err);
      if (this.onFailure === "closed") {
        this.stats.budgetFailClosed++;
        throw new GatewayError(Code.Unavailable, "the budget store is unavailable; retry shortly", {
          reason: Reason.BudgetStoreUnavailable,
          retryAfterMs: 1000,
          cause: err,
        });
      }
      this.stats.budgetFailOpen++;
      return windows.map(() => ({ tokens: 0, money: 0 }));
    }
  }

  async charge(budget: string, windows: readonly BudgetWindow[], charge: BudgetCharge): Promise<void> {
    try {
      await this.redis.client.igBudgetCharge(
        windows.length,
        ...windows.map((w) => this.key(budget, w)),
        charge.tokens,
        charge.money === undefined ? "" : String(charge.money),
        charge.model,
        ...windows.map((w) => w.expireAt),
      );
      this.recovered();
    } catch (err) {
      this.failed(err);
    }
  }

  /** The usage query; throws (a 503 of the admin endpoint) when Redis fails. */
  async usage(budget: string, window: BudgetWindow): Promise<WindowUsage> {
    const h = await this.redis.client.hgetall(this.key(budget, window));
    const u = emptyUsage();
    for (const [field, value] of Object.entries(h)) {
      const n = Number(value);
      const i = field.indexOf(":");
      const what = i < 0 ? field : field.slice(0, i);
      const target = i < 0 ? u : (u.models[field.slice(i + 1)] ??= { tokens: 0, money: 0, unpricedCalls: 0 });
      if (what === "t") target.tokens = n;
      else if (what === "c") target.money = n;
      else if (what === "u") target.unpricedCalls = n;
    }
    return u;
  }
}
