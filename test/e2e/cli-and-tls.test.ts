import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Role } from "../../gen/infergate/v1/chat_pb.js";
import { InferenceService } from "../../gen/infergate/v1/inference_service_pb.js";
import { defaultConfigYaml } from "../../src/config/default-config.js";
import type { App } from "../../src/server/app.js";
import { hashKey } from "../../src/security/api-keys.js";
import { binPath, repoRoot, startInProcess } from "../helpers/servers.js";

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), "infergate-test-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [binPath, ...args], { cwd: repoRoot, env: { ...process.env, ...env }, timeout: 15_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

describe("infergate hash-key", () => {
  it("prints the SHA-256 of the key read from stdin", async () => {
    const { execFileSync: run2 } = await import("node:child_process");
    const out = run2(process.execPath, [binPath, "hash-key"], { input: "sk-live-123\n" }).toString();
    expect(out).toBe(`${hashKey("sk-live-123")}\n`);
  });
});

describe("infergate check-config", () => {
  it("exits 0 for a valid file", async () => {
    const path = file("ok.yaml", defaultConfigYaml);
    const r = await cli(["check-config", path]);
    expect(r).toMatchObject({ code: 0, stdout: `${path}: valid\n` });
  });

  it("exits 1 listing every problem by path", async () => {
    const path = file(
      "bad.yaml",
      `upstreams:\n  - {name: a, kind: mock}\n  - {name: b, kind: mock, endpoints: ["not a url"], apiKey: "\${MISSING_KEY_FOR_TEST}"}\nmodels: [{name: m, upstream: zz}]\n`,
    );
    const r = await cli(["check-config", path]);
    expect(r.code).toBe(1);
    // Environment variables are checked first: a missing one stops before schema validation.
    expect(r.stderr).toBe(`invalid configuration ${path}:\n  upstreams[1].apiKey: environment variable MISSING_KEY_FOR_TEST is not set\n`);
    const r2 = await cli(["check-config", path], { MISSING_KEY_FOR_TEST: "sk-test-secret" });
    expect(r2.code).toBe(1);
    expect(r2.stderr).toBe(
      `invalid configuration ${path}:\n  upstreams[1].endpoints[0]: not a URL\n`,
    );
    expect(r2.stderr).not.toContain("sk-test-secret");
  });

  it("refuses to start on an invalid file or flag, with the same messages", async () => {
    const path = file("bad2.yaml", `upstreams: [{name: a, kind: mock}]\nmodels: [{name: m, upstream: zz}]\n`);
    const r = await cli(["--config", path]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('models[0].upstream: no upstream named "zz"');
    const flag = await cli(["--listen", "nowhere"]);
    expect(flag.code).toBe(1);
    expect(flag.stderr).toContain("--listen: not HOST:PORT");
    const unknown = await cli(["--bogus"]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain("Usage:");
  });
});

describe("TLS and mTLS on both listeners", () => {
  let app: App;
  const pem = (n: string) => readFileSync(join(dir, n));

  beforeAll(async () => {
    const ssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
    ssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj", "/CN=test-ca", "-keyout", "ca.key", "-out", "ca.pem");
    writeFileSync(join(dir, "san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
    for (const who of ["server", "client"]) {
      ssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", `/CN=${who}`, "-keyout", `${who}.key`, "-out", `${who}.csr`);
      ssl("x509", "-req", "-in", `${who}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1", "-extfile", "san.ext", "-out", `${who}.pem`);
    }
    app = await startInProcess(
      `${defaultConfigYaml}\nserver:\n  tls: {certFile: ${join(dir, "server.pem")}, keyFile: ${join(dir, "server.key")}, clientCaFile: ${join(dir, "ca.pem")}}\n`,
    );
  });

  afterAll(async () => {
    await app?.shutdown();
  });

  const request = { model: "mock-chat", messages: [{ role: Role.USER, content: [{ part: { case: "text" as const, value: "over tls" } }] }] };
  const withCert = () => ({ ca: pem("ca.pem"), cert: pem("client.pem"), key: pem("client.key") });

  it.each([
    ["gRPC listener", () => createGrpcTransport({ baseUrl: `https://${app.grpcAddress}`, nodeOptions: withCert() })],
    ["HTTP listener, h2", () => createConnectTransport({ baseUrl: `https://${app.httpAddress}`, httpVersion: "2", nodeOptions: withCert() })],
    ["HTTP listener, HTTP/1.1", () => createConnectTransport({ baseUrl: `https://${app.httpAddress}`, httpVersion: "1.1", nodeOptions: withCert() })],
  ])("%s answers a client with a certificate", async (_name, transport) => {
    const res = await createClient(InferenceService, transport()).chat(request);
    expect(res.message?.content[0]?.part.value).toBe("You said: over tls");
  });

  it.each([
    ["gRPC listener", () => `https://${app.grpcAddress}`, "grpc"],
    ["HTTP listener", () => `https://${app.httpAddress}`, "connect"],
  ])("%s: with auth on, the client certificate's CN is the identity; an API key still works", async (_name, url, protocol) => {
    const authApp = await startInProcess(
      `upstreams: [{name: mock, kind: mock}]
models: [{name: mock-chat, upstream: mock}, {name: other, upstream: mock}]
server:
  tls: {certFile: ${join(dir, "server.pem")}, keyFile: ${join(dir, "server.key")}, clientCaFile: ${join(dir, "ca.pem")}}
auth:
  enabled: true
  keys: [{name: keyed, sha256: ${hashKey("sk-e2e")}, models: [other]}]
  clientCertificates: [{commonName: client, name: cert-team, models: [mock-chat]}]
`,
    );
    try {
      const base = url().replace(app.grpcAddress, authApp.grpcAddress).replace(app.httpAddress, authApp.httpAddress);
      const transport =
        protocol === "grpc"
          ? createGrpcTransport({ baseUrl: base, nodeOptions: withCert() })
          : createConnectTransport({ baseUrl: base, httpVersion: "2", nodeOptions: withCert() });
      const client = createClient(InferenceService, transport);
      const res = await client.chat(request);
      expect(res.message?.content[0]?.part.value).toBe("You said: over tls");
      // The certificate's identity may not use "other"; the key's identity may, and only that.
      const denied = ConnectError.from(await client.chat({ ...request, model: "other" }).catch((e: unknown) => e));
      expect(denied.code).toBe(Code.PermissionDenied);
      const keyed = await client.chat({ ...request, model: "other" }, { headers: { authorization: "Bearer sk-e2e" } });
      expect(keyed.model).toBe("other");
      const wrongKey = ConnectError.from(await client.chat(request, { headers: { "x-api-key": "sk-nope" } }).catch((e: unknown) => e));
      expect(wrongKey.code).toBe(Code.Unauthenticated);
    } finally {
      await authApp.shutdown();
    }
  });

  it.each([
    ["gRPC listener", () => createGrpcTransport({ baseUrl: `https://${app.grpcAddress}`, nodeOptions: { ca: pem("ca.pem") } })],
    ["HTTP listener", () => createConnectTransport({ baseUrl: `https://${app.httpAddress}`, httpVersion: "2", nodeOptions: { ca: pem("ca.pem") } })],
  ])("%s refuses a client without a certificate", async (_name, transport) => {
    const err = ConnectError.from(await createClient(InferenceService, transport()).chat(request, { timeoutMs: 5000 }).catch((e: unknown) => e));
    expect([Code.Unavailable, Code.Internal, Code.Unknown]).toContain(err.code);
  });
});
