import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config/load-config.js";
import { createCallContext } from "../../src/core/call-context.js";
import { GatewayError } from "../../src/core/gateway-error.js";
import type { Rpc } from "../../src/core/rpc.js";
import type { CallRecord } from "../../src/observability/call-record.js";
import { hashKey } from "../../src/security/api-keys.js";
import { MemoryBudgetStore } from "../../src/security/budget-store.js";
import { createBudgets } from "../../src/security/budgets.js";
import { callRecord } from "../helpers/call-records.js";

/** A finished call's record as the gateway makes it (the fields budgets read, the rest neutral). */
function record(tenant: string, promptTokens: number, completionTokens: number, cost?: number, model = "m"): CallRecord {
  return callRecord({ tenant, model, upstream: "u", promptTokens, completionTokens, cost, currency: "EUR", pricedModel: cost === undefined ? undefined : model });
}

const yaml = `
upstreams: [{name: u, kind: mock}]
models: [{name: m, upstream: u}, {name: n, upstream: u}]
pricing: {currency: EUR}
auth:
  enabled: true
  keys:
    - {name: alice, sha256: ${hashKey("a")}}
    - {name: bob, sha256: ${hashKey("b")}}
    - {name: carol, sha256: ${hashKey("c")}}
budgets:
  timeZone: Europe/Berlin
  keys:
    alice: {day: {tokens: 100}, month: {money: 2}}
  groups:
    - {name: team, keys: [alice, bob], limits: {hour: {tokens: 150}}}
`;

function setup(now: { t: number }) {
  const config = parseConfig(yaml, "(test)", {});
  const store = new MemoryBudgetStore(() => now.t);
  const budgets = createBudgets(config.budgets!, store, { currency: "EUR", callers: ["alice", "bob", "carol"], models: ["m", "n"], now: () => now.t });
  // The admission before budgets identified the caller: here, the tenant is set directly.
  const admit = budgets.admission(({ ctx }) => void (ctx.tenant = (ctx.headers["x-caller"] as string) ?? ""));
  const call = async (caller: string, rpc: Rpc = "Chat") => {
    const ctx = createCallContext({ timeoutMs: 1000, maxTimeoutMs: 1000, timeoutHeader: "grpc-timeout", headers: { "x-caller": caller } });
    await admit({ rpc, model: "m", ctx });
  };
  return { budgets, store, call };
}

async function refusal(p: Promise<unknown>): Promise<GatewayError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(GatewayError);
  return err as GatewayError;
}

describe("budgets (memory store, fake clock)", () => {
  it("admits while under every limit, refuses at the limit with BUDGET_EXCEEDED and the time to the period's end", async () => {
    // 10:00 in Berlin (UTC+1) on 2026-12-06: the day ends at 23:00Z, in 14 hours.
    const now = { t: Date.parse("2026-12-06T09:00:00Z") };
    const { budgets, call } = setup(now);
    await call("alice");
    budgets.charge(record("alice", 60, 30));
    await call("alice");
    budgets.charge(record("alice", 5, 5));
    const err = await refusal(call("alice"));
    expect(err.code).toBe(Code.ResourceExhausted);
    expect(err.reason).toBe("BUDGET_EXCEEDED");
    expect(err.metadata).toEqual({ budget: "key:alice", period: "day", kind: "tokens" });
    expect(err.retryAfterMs).toBe(14 * 3_600_000);
    expect(err.message).toBe("budget key:alice has spent its 100 tokens per day; it resets in 14h");
    expect(budgets.refused.get("key:alice")).toBe(1);
    // The next day (Berlin's midnight, 23:00Z) the day's budget is new again.
    now.t = Date.parse("2026-12-06T23:00:00Z");
    await call("alice");
  });

  it("a group's limit is shared by its keys, and the tightest applies to each", async () => {
    const now = { t: Date.parse("2026-12-06T09:10:00Z") };
    const { budgets, call } = setup(now);
    budgets.charge(record("bob", 100, 0));
    await call("alice");
    await call("bob");
    budgets.charge(record("alice", 30, 20));
    // alice: 50 of her day's 100; the team: 150 of its hour's 150.
    const err = await refusal(call("bob"));
    expect(err.metadata).toEqual({ budget: "group:team", period: "hour", kind: "tokens" });
    expect(err.retryAfterMs).toBe(50 * 60_000);
    expect((await refusal(call("alice"))).metadata["budget"]).toBe("group:team");
    // carol is in no group and has no limit.
    await call("carol");
    // The next hour the team may spend again; alice still has 50 of her day.
    now.t = Date.parse("2026-12-06T10:00:00Z");
    await call("bob");
    await call("alice");
  });

  it("money limits count the record's cost; unpriced calls count their tokens and are counted apart", async () => {
    const now = { t: Date.parse("2026-12-31T22:00:00Z") };
    const { budgets, call } = setup(now);
    budgets.charge(record("alice", 10, 10, 1.25));
    budgets.charge(record("alice", 10, 10, undefined, "n"));
    await call("alice");
    budgets.charge(record("alice", 1, 1, 0.75));
    const err = await refusal(call("alice"));
    expect(err.metadata).toEqual({ budget: "key:alice", period: "month", kind: "money" });
    expect(err.message).toBe("budget key:alice has spent its 2 EUR per month; it resets in 1h");
    // Berlin's January begins at 2026-12-31T23:00Z.
    expect(err.retryAfterMs).toBe(3_600_000);
    const usage = await budgets.usage("month");
    const current = usage.periods.month!.current;
    expect(usage.currency).toBe("EUR");
    expect(usage.timeZone).toBe("Europe/Berlin");
    expect(current.start).toBe("2026-11-30T23:00:00.000Z");
    expect(current.keys["alice"]).toEqual({
      tokens: 42,
      money: 2,
      unpricedCalls: 1,
      models: { m: { tokens: 22, money: 2, unpricedCalls: 0 }, n: { tokens: 20, money: 0, unpricedCalls: 1 } },
      limits: { money: 2 },
    });
    expect(current.groups["team"]).toMatchObject({ tokens: 42, keys: ["alice", "bob"] });
    expect(current.keys["bob"]).toEqual({ tokens: 0, money: 0, unpricedCalls: 0, models: {} });
    expect(current.total.tokens).toBe(42);
    // A month later, that spend is the previous period's.
    now.t = Date.parse("2027-01-15T12:00:00Z");
    const later = (await budgets.usage("month")).periods.month!;
    expect(later.current.keys["alice"]!.tokens).toBe(0);
    expect(later.previous.keys["alice"]!.tokens).toBe(42);
    expect(later.previous.start).toBe("2026-11-30T23:00:00.000Z");
    await call("alice");
  });

  it("checks model calls only, charges nothing for a call without usage or cost, and counts other models as other", async () => {
    const now = { t: Date.parse("2026-12-06T09:00:00Z") };
    const { budgets, call } = setup(now);
    expect(budgets.charge(record("alice", 0, 0))).toBeUndefined();
    budgets.charge(record("alice", 100, 0, undefined, "not-configured"));
    await refusal(call("alice"));
    await call("alice", "ListModels");
    await call("alice", "DeleteSession");
    const day = (await budgets.usage("day")).periods.day!.current;
    expect(Object.keys(day.keys["alice"]!.models)).toEqual(["other"]);
    expect(await budgets.gauges()).toEqual(
      expect.arrayContaining([
        { budget: "key:alice", kind: "tokens", period: "day", limit: 100, spent: 100 },
        { budget: "key:alice", kind: "money", period: "month", limit: 2, spent: 0 },
        { budget: "group:team", kind: "tokens", period: "hour", limit: 150, spent: 100 },
      ]),
    );
  });

  it("the memory store drops windows a period after their end", () => {
    const now = { t: 0 };
    const store = new MemoryBudgetStore(() => now.t);
    const w = { id: "hour:0", period: "hour" as const, start: 0, end: 3_600_000, expireAt: 7_200_000 };
    store.charge("b", [w], { model: "m", tokens: 5, money: 1 });
    expect(store.spent("b", [w])).toEqual([expect.objectContaining({ tokens: 5, money: 1 })]);
    now.t = 7_200_000;
    // A new window makes the store look for expired ones.
    store.charge("b", [{ ...w, id: "hour:7200000", start: 7_200_000, end: 10_800_000, expireAt: 14_400_000 }], { model: "m", tokens: 1, money: 0 });
    expect(store.spent("b", [w])).toEqual([{ tokens: 0, money: 0 }]);
  });
});

describe("budgets config", () => {
  it("refuses unknown callers, a bad time zone and a limit without tokens or money, naming the path", () => {
    const bad = `
upstreams: [{name: u, kind: mock}]
models: [{name: m, upstream: u}]
auth: {enabled: true, keys: [{name: alice, sha256: ${hashKey("a")}}]}
budgets:
  timeZone: Mars/Base
  keys: {alice: {day: {}}, nobody: {day: {tokens: 1}}}
  groups: [{name: g, keys: [alice, ghost], limits: {month: {money: 5}}}]
`;
    expect(() => parseConfig(bad, "(test)", {})).toThrow(/budgets\.timeZone.*IANA/s);
    expect(() => parseConfig(bad, "(test)", {})).toThrow(/budgets\.keys\.alice\.day.*tokens, money or both/s);
    const unknown = bad.replace("timeZone: Mars/Base", "timeZone: UTC").replace("alice: {day: {}}, ", "");
    expect(() => parseConfig(unknown, "(test)", {})).toThrow(/budgets\.keys\.nobody.*no caller named "nobody"/s);
    expect(() => parseConfig(unknown, "(test)", {})).toThrow(/budgets\.groups\[0\]\.keys\[1\].*"ghost"/s);
  });
});
