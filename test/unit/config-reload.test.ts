import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ConfigError } from "../../src/config/config-error.js";
import { parseConfig } from "../../src/config/load-config.js";
import { appliedConfig, restartOnlyChanges, upstreamFingerprint } from "../../src/server/config-reload.js";
import { readServerTls } from "../../src/server/server-tls.js";
import { createTestPki, issueServerCertificate } from "../helpers/certs.js";

const dir = mkdtempSync(join(tmpdir(), "infergate-reload-unit-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const base = "upstreams: [{name: u, kind: mock}]\nmodels: [{name: m, upstream: u}]\n";
const config = (extra = "", body = base) => parseConfig(`${body}${extra}`, "(test)", {});

describe("restartOnlyChanges and appliedConfig", () => {
  it("names each setting bound at start that changed, and keeps its running value", () => {
    const running = config("server: {listen: '127.0.0.1:1', tls: {certFile: a.pem, keyFile: a.key}}\n");
    const next = config(
      "server: {listen: '127.0.0.1:2', maxMessageBytes: 1000, maxConcurrentStreams: 7, tls: {certFile: b.pem, keyFile: b.key}}\ncache: {maxEntries: 5}\nsessions: {ttlMs: 10}\nlimits: {default: {requestsPerMinute: 3}}\n",
      "upstreams: [{name: u, kind: mock}]\nmodels: [{name: other, upstream: u}]\n",
    );
    expect(restartOnlyChanges(running, next)).toEqual(["server.listen", "server.maxMessageBytes", "server.maxConcurrentStreams", "cache.maxEntries", "sessions.ttlMs"]);
    const applied = appliedConfig(running, next);
    expect(applied.server).toEqual({ ...running.server, tls: { certFile: "b.pem", keyFile: "b.key" } });
    expect(applied.cache).toBe(running.cache);
    expect(applied.sessions).toBe(running.sessions);
    expect(applied.models.map((m) => m.name)).toEqual(["other"]);
    expect(applied.limits.default.requestsPerMinute).toBe(3);
  });

  it("turning TLS or client certificates on or off needs a restart; the running TLS settings stay", () => {
    const plain = config();
    const tls = config("server: {tls: {certFile: a.pem, keyFile: a.key}}\n");
    const mtls = config("server: {tls: {certFile: a.pem, keyFile: a.key, clientCaFile: ca.pem}}\n");
    expect(restartOnlyChanges(plain, tls)).toEqual(["server.tls"]);
    expect(appliedConfig(plain, tls).server.tls).toBeUndefined();
    expect(restartOnlyChanges(tls, mtls)).toEqual(["server.tls.clientCaFile"]);
    expect(appliedConfig(tls, mtls).server.tls).toEqual(tls.server.tls);
    expect(restartOnlyChanges(mtls, config("server: {tls: {certFile: a.pem, keyFile: a.key, clientCaFile: other.pem}}\n"))).toEqual([]);
  });

  it("an unchanged file changes nothing", () => {
    expect(restartOnlyChanges(config(), config())).toEqual([]);
  });
});

describe("upstreamFingerprint", () => {
  it("changes with the upstream's configuration and with the contents of its TLS files", () => {
    const ca = join(dir, "ca.pem");
    writeFileSync(ca, "first");
    const yaml = (timeoutMs: number) => `upstreams: [{name: u, kind: openai, endpoints: ["https://x/v1"], timeoutMs: ${timeoutMs}, tls: {caFile: ${ca}}}]\nmodels: [{name: m, upstream: u}]\n`;
    const fp = (timeoutMs = 1000) => upstreamFingerprint(parseConfig(yaml(timeoutMs), "(test)", {}).upstreams[0]!);
    const first = fp();
    expect(fp()).toBe(first);
    expect(fp(2000)).not.toBe(first);
    writeFileSync(ca, "second");
    expect(fp()).not.toBe(first);
  });
});

describe("readServerTls", () => {
  const pki = createTestPki();
  const other = issueServerCertificate(pki, "other");
  afterAll(() => rmSync(pki.dir, { recursive: true, force: true }));
  const problems = (tls: { certFile: string; keyFile: string; clientCaFile?: string }) => {
    try {
      readServerTls(tls, "(test)");
      return [];
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      return (err as ConfigError).issues.map((i) => `${i.path}: ${i.message}`);
    }
  };

  it("accepts a certificate, its key and a CA bundle", () => {
    const m = readServerTls({ certFile: pki.serverPem, keyFile: pki.serverKey, clientCaFile: pki.caPem }, "(test)");
    expect(m.ca).toBeDefined();
  });

  it("names the field and the problem, never the contents", () => {
    const garbage = join(dir, "garbage.pem");
    writeFileSync(garbage, "-----BEGIN CERTIFICATE-----\nc2VjcmV0LXN0dWZm\n-----END CERTIFICATE-----\n");
    const notPem = join(dir, "not-pem.key");
    writeFileSync(notPem, "secret-stuff\n");
    expect(problems({ certFile: pki.serverPem, keyFile: other.key })).toEqual(["server.tls.keyFile: does not match the certificate of server.tls.certFile"]);
    expect(problems({ certFile: join(dir, "missing.pem"), keyFile: pki.serverKey })).toEqual([`server.tls.certFile: cannot read ${join(dir, "missing.pem")} (ENOENT)`]);
    const bad = problems({ certFile: garbage, keyFile: notPem, clientCaFile: notPem });
    expect(bad.map((p) => p.split(":")[0])).toEqual(["server.tls.certFile", "server.tls.keyFile", "server.tls.clientCaFile"]);
    expect(bad.join("\n")).not.toMatch(/secret|c2VjcmV0/);
  });
});
