/**
 * `server.connections` (issue 17, defect 2): its defaults, whom a connection is counted against,
 * and that changing it on reload needs a restart. The listeners' behaviour is
 * test/e2e/slow-clients.test.ts's.
 */
import { describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config/load-config.js";
import { restartOnlyChanges } from "../../src/server/config-reload.js";
import { clientKey } from "../../src/server/connection-limits.js";

const base = "upstreams: [{name: u, kind: mock}]\nmodels: [{name: m, upstream: u}]\n";
const config = (extra = "") => parseConfig(`${base}${extra}`, "(test)", {});

describe("server.connections", () => {
  it("has production defaults", () => {
    expect(config().server.connections).toEqual({
      max: 10_000,
      maxPerIp: 1_000,
      headersTimeoutMs: 30_000,
      requestTimeoutMs: 300_000,
      keepAliveTimeoutMs: 5_000,
      idleTimeoutMs: 300_000,
      maxAgeMs: 1_800_000,
    });
  });

  it("takes positive integers only, and timers setTimeout can hold", () => {
    expect(() => config("server: {connections: {maxPerIp: 0}}\n")).toThrow(/server\.connections\.maxPerIp/);
    expect(() => config("server: {connections: {idleTimeoutMs: 2147483648}}\n")).toThrow(/server\.connections\.idleTimeoutMs/);
    expect(() => config("server: {connections: {idleTimeout: 5}}\n")).toThrow(/server\.connections/);
    expect(config("server: {connections: {max: 5, requestTimeoutMs: 1000}}\n").server.connections).toMatchObject({ max: 5, maxPerIp: 1_000, headersTimeoutMs: 30_000, requestTimeoutMs: 1000 });
  });

  it("needs a restart to change", () => {
    expect(restartOnlyChanges(config(), config("server: {connections: {maxPerIp: 10, idleTimeoutMs: 60000}}\n"))).toEqual([
      "server.connections.maxPerIp",
      "server.connections.idleTimeoutMs",
    ]);
  });
});

describe("clientKey: whom a connection counts against", () => {
  it("an IPv4 address, mapped or not, as it is", () => {
    expect(clientKey("10.1.2.3")).toBe("10.1.2.3");
    expect(clientKey("::ffff:10.1.2.3")).toBe("10.1.2.3");
    expect(clientKey("::FFFF:127.0.0.1")).toBe("127.0.0.1");
  });

  it("an IPv6 address by its /64, however it is written", () => {
    const key = "2001:db8:0:1::/64";
    expect(clientKey("2001:db8:0:1::5")).toBe(key);
    expect(clientKey("2001:0db8:0000:0001:ffff:1:2:3")).toBe(key);
    expect(clientKey("2001:DB8:0:1:0:0:0:9")).toBe(key);
    expect(clientKey("2001:db8::1")).toBe("2001:db8:0:0::/64");
    expect(clientKey("2001:db8:0:2::5")).not.toBe(key);
    expect(clientKey("::1")).toBe("0:0:0:0::/64");
    expect(clientKey("fe80::1")).toBe("fe80:0:0:0::/64");
    expect(clientKey(undefined)).toBe("");
  });
});
