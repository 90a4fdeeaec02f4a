import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config/load-config.js";
import { GatewayError } from "../../src/core/gateway-error.js";
import type { CallRecord } from "../../src/observability/call-record.js";
import { createCallContext } from "../../src/core/call-context.js";
import { createSecurity } from "../../src/security/admission.js";
import { globMatch, hashKey, matchKey, presentedKey } from "../../src/security/api-keys.js";
import { MemoryRateLimitStore } from "../../src/security/rate-limiter.js";

describe("token buckets (fake clock)", () => {
  it("admits the capacity at once, then refills continuously, with the exact wait", () => {
    let now = 0;
    const store = new MemoryRateLimitStore(() => now);
    const spec = { capacity: 60, perMinute: 60 };
    for (let i = 0; i < 60; i++) expect(store.take("k", spec, 1).ok).toBe(true);
    expect(store.take("k", spec, 1)).toEqual({ ok: false, retryAfterMs: 1000 });
    now += 400;
    expect(store.take("k", spec, 1)).toEqual({ ok: false, retryAfterMs: 600 });
    now += 600;
    expect(store.take("k", spec, 1).ok).toBe(true);
    now += 10 * 60_000;
    for (let i = 0; i < 60; i++) expect(store.take("k", spec, 1).ok).toBe(true);
    expect(store.take("k", spec, 1).ok).toBe(false);
  });

  it("lets a charge put the bucket in debt, refusing until repaid", () => {
    let now = 0;
    const store = new MemoryRateLimitStore(() => now);
    const spec = { capacity: 1000, perMinute: 1000 };
    expect(store.take("t", spec, 0).ok).toBe(true);
    store.charge("t", spec, 1600);
    // 600 tokens of debt at 1000/min: 36 s until the bucket is back at 0.
    expect(store.take("t", spec, 0)).toEqual({ ok: false, retryAfterMs: 36_000 });
    now += 36_000;
    expect(store.take("t", spec, 0).ok).toBe(true);
  });
});

describe("API keys", () => {
  it.each([
    [{ authorization: "Bearer sk-1" }, "sk-1"],
    [{ authorization: "bearer   sk-2  " }, "sk-2"],
    [{ "x-api-key": "sk-3" }, "sk-3"],
    [{ authorization: "Basic abc" }, undefined],
    [{}, undefined],
  ])("reads %j", (headers, key) => {
    expect(presentedKey(headers as Record<string, string>)).toBe(key);
  });

  it("matches by hash and globs", () => {
    const entries = [{ sha256: hashKey("a"), n: 1 }, { sha256: hashKey("b"), n: 2 }];
    expect(matchKey("b", entries)?.n).toBe(2);
    expect(matchKey("c", entries)).toBeUndefined();
    expect(globMatch("mock-*", "mock-chat")).toBe(true);
    expect(globMatch("mock-?hat", "mock-chat")).toBe(true);
    expect(globMatch("gpt-4.1", "gpt-401")).toBe(false);
    expect(globMatch("*", "anything")).toBe(true);
  });
});

describe("admission", () => {
  const config = parseConfig(
    `upstreams: [{name: mock, kind: mock}]
models: [{name: mock-chat, upstream: mock}, {name: secret-model, upstream: mock}]
auth:
  enabled: true
  keys:
    - {name: team-a, sha256: ${hashKey("key-a")}, models: ["mock-*"], limits: {requestsPerMinute: 2, tokensPerMinute: 100}}
    - {name: team-b, sha256: ${hashKey("key-b")}}
limits: {default: {requestsPerMinute: 1000}}`,
    "t",
    {},
  );
  const ctx = (headers: Record<string, string>) => createCallContext({ timeoutMs: 1000, maxTimeoutMs: 1000, timeoutHeader: "grpc-timeout", headers });
  const fail = async (p: Promise<void> | void) => {
    try {
      await p;
    } catch (e) {
      return e as GatewayError;
    }
    throw new Error("expected a refusal");
  };

  it("refuses a missing or unknown key with UNAUTHENTICATED, a disallowed model with PERMISSION_DENIED", async () => {
    const s = createSecurity(config.auth, config.limits.default, new MemoryRateLimitStore());
    expect((await fail(s.admit({ rpc: "Chat", model: "mock-chat", ctx: ctx({}) }))).code).toBe(Code.Unauthenticated);
    const bad = await fail(s.admit({ rpc: "Chat", model: "mock-chat", ctx: ctx({ authorization: "Bearer key-zzz" }) }));
    expect(bad.code).toBe(Code.Unauthenticated);
    expect(bad.message).not.toContain("key-zzz");
    const denied = await fail(s.admit({ rpc: "Chat", model: "secret-model", ctx: ctx({ "x-api-key": "key-a" }) }));
    expect(denied.code).toBe(Code.PermissionDenied);
    expect(denied.message).toContain('"secret-model"');
    const c = ctx({ "x-api-key": "key-b" });
    await s.admit({ rpc: "Chat", model: "secret-model", ctx: c });
    expect(c.tenant).toBe("team-b");
  });

  it("limits requests per key with RESOURCE_EXHAUSTED / RATE_LIMITED and the exact wait; tokens charged after the call", async () => {
    let now = 0;
    const s = createSecurity(config.auth, config.limits.default, new MemoryRateLimitStore(() => now));
    const a = () => ctx({ "x-api-key": "key-a" });
    await s.admit({ rpc: "Chat", model: "mock-chat", ctx: a() });
    await s.admit({ rpc: "Chat", model: "mock-chat", ctx: a() });
    const limited = await fail(s.admit({ rpc: "Chat", model: "mock-chat", ctx: a() }));
    expect(limited.code).toBe(Code.ResourceExhausted);
    expect(limited.reason).toBe("RATE_LIMITED");
    expect(limited.retryAfterMs).toBe(30_000);
    now += 30_000;
    await s.admit({ rpc: "Chat", model: "mock-chat", ctx: a() });
    // A stream that used 160 tokens is charged as it ends: 60 tokens of debt at 100/min = 36 s.
    await s.charge({ tenant: "team-a", promptTokens: 60, completionTokens: 100 } as CallRecord);
    now += 30_000;
    const inDebt = await fail(s.admit({ rpc: "Chat", model: "mock-chat", ctx: a() }));
    expect(inDebt.reason).toBe("RATE_LIMITED");
    expect(inDebt.retryAfterMs).toBe(6_000);
    // Other tenants have their own buckets.
    await s.admit({ rpc: "Chat", model: "mock-chat", ctx: ctx({ "x-api-key": "key-b" }) });
  });

  it("rejects auth config that cannot work", () => {
    expect(() => parseConfig(`upstreams: [{name: m, kind: mock}]\nmodels: [{name: x, upstream: m}]\nauth: {enabled: true}`, "t", {})).toThrow(
      /auth: enabled, but no keys/,
    );
    expect(() =>
      parseConfig(`upstreams: [{name: m, kind: mock}]\nmodels: [{name: x, upstream: m}]\nauth: {keys: [{name: a, sha256: abc}]}`, "t", {}),
    ).toThrow(/auth.keys\[0\].sha256: not a hex SHA-256/);
  });
});
