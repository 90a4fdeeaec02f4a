#!/usr/bin/env node
/**
 * The CPU that budgets add to one call, in one process through dist/'s code (run `npm run build`
 * first): the admission with the budget check of a key with two limited budgets (its own: a day's
 * tokens and a month's money; a group's: an hour's tokens) and the charge of the call's record to
 * the key, the group and the total for three periods, on the memory store — against the admission
 * without budgets. docs/benchmarks.md, "Issue 20: budgets".
 *
 *   node bench/budgets-steps.mjs [--calls 1000000] [--rounds 5]
 */
import { parseArgs } from "node:util";
import { parseConfig } from "../dist/src/config/load-config.js";
import { createCallContext } from "../dist/src/core/call-context.js";
import { MemoryBudgetStore } from "../dist/src/security/budget-store.js";
import { createBudgets } from "../dist/src/security/budgets.js";

const { values: o } = parseArgs({ options: { calls: { type: "string", default: "1000000" }, rounds: { type: "string", default: "5" } } });
const config = parseConfig(
  `upstreams: [{name: u, kind: mock}]
models: [{name: chat, upstream: u}]
auth: {enabled: true, keys: [{name: bench, sha256: ${"a".repeat(64)}}]}
budgets:
  timeZone: Europe/Berlin
  keys: {bench: {day: {tokens: 1000000000000}, month: {money: 1000000000}}}
  groups: [{name: team, keys: [bench], limits: {hour: {tokens: 1000000000000}}}]
`,
  "(bench)",
  {},
);
const budgets = createBudgets(config.budgets, new MemoryBudgetStore(), { currency: "USD", callers: ["bench"], models: ["chat"] });
// The admission before budgets (auth, rate limits) reduced to what budgets need of it: the tenant.
const identify = ({ ctx }) => void (ctx.tenant = "bench");
const admit = budgets.admission(identify);
const ctx = createCallContext({ timeoutMs: 1000, maxTimeoutMs: 1000, timeoutHeader: "grpc-timeout", headers: {} });
const call = { rpc: "Chat", model: "chat", ctx };
const record = {
  rpc: "Chat", requestId: "r", tenant: "bench", model: "chat", upstream: "u", endpoint: undefined, attempts: 1, cache: undefined, code: 0,
  reason: undefined, latencyMs: 1, ttftMs: undefined, promptTokens: 20, completionTokens: 80, cachedPromptTokens: 0, cacheCreationTokens: 0,
  reasoningTokens: 0, cost: 0.001, currency: "USD", pricedModel: "chat",
};

/** CPU ns per call of `fn` over n calls. */
function measure(n, fn) {
  const t0 = process.cpuUsage();
  for (let i = 0; i < n; i++) fn();
  const d = process.cpuUsage(t0);
  return ((d.user + d.system) * 1000) / n;
}
const n = Number(o.calls);
for (let r = 0; r < Number(o.rounds); r++) {
  const off = measure(n, () => identify(call));
  const check = measure(n, () => admit(call));
  const charge = measure(n, () => budgets.charge(record));
  console.log(JSON.stringify({ round: r + 1, offNsPerCall: Math.round(off), checkNsPerCall: Math.round(check), chargeNsPerCall: Math.round(charge), addedNsPerCall: Math.round(check + charge - off) }));
}
