/**
 * Issue 17, defect 4: log amplification. Before, a 3 MB `model` sent without a key was refused
 * (401) and written whole to the log, and every rate-limited call wrote a line of its own. Now the
 * call line cuts the model at 200 characters and refusals are logged once per caller and reason
 * per `server.refusalLogIntervalMs`, then summed up in one line (src/observability/refusal-log.ts);
 * the metrics still count every one. Requests over `server.requestLimits`, refused from their bytes
 * before any key is read, are sampled the same way.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Role } from "../../gen/infergate/v1/chat_pb.js";
import { InferenceService } from "../../gen/infergate/v1/inference_service_pb.js";
import { hashKey } from "../../src/security/api-keys.js";
import { parseMetrics } from "../helpers/metrics.js";
import { type ServerProcess, startProcess } from "../helpers/servers.js";

const dir = mkdtempSync(join(tmpdir(), "infergate-refusals-"));
let server: ServerProcess;

// The default interval (10 s); four messages at most in a request.
beforeAll(async () => {
  const config = join(dir, "infergate.yaml");
  writeFileSync(
    config,
    `upstreams: [{name: mock, kind: mock}]
models: [{name: mock-chat, upstream: mock, capabilities: [chat, generate]}]
server: {requestLimits: {messages: 4}}
auth:
  enabled: true
  keys:
    - {name: alpha, sha256: ${hashKey("sk-alpha")}, models: ["*"], limits: {requestsPerMinute: 2}}
`,
  );
  server = await startProcess(["--config", config]);
});

afterAll(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const messages = [{ role: Role.USER, content: [{ part: { case: "text" as const, value: "hi" } }] }];

type Line = Record<string, unknown>;
const records = (): Line[] =>
  server.lines.flatMap((l) => {
    try {
      return [JSON.parse(l) as Line];
    } catch {
      return [];
    }
  });

describe("refused calls in the log (issue 17, defect 4)", () => {
  it("a 3 MB model name without a key is refused with 401, and its log line stays small", async () => {
    const res = await fetch(`http://${server.httpAddress}/infergate.v1.InferenceService/Chat`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-request-id": "big-model-no-key" },
      body: JSON.stringify({ model: "m".repeat(3_000_000), messages: [{ role: "ROLE_USER", content: [{ text: "hi" }] }] }),
    });
    expect(res.status).toBe(401);
    await res.arrayBuffer();
    await expect.poll(() => records().some((r) => r["requestId"] === "big-model-no-key"), { timeout: 10_000 }).toBe(true);
    const line = server.lines.find((l) => l.includes('"big-model-no-key"'))!;
    expect(line.length).toBeLessThan(2048);
    expect(String(JSON.parse(line)["model"]).length).toBeLessThanOrEqual(200);
    expect(server.lines.every((l) => l.length < 64 * 1024)).toBe(true);
  });

  it("a flood of refusals is counted in full but logged once per caller and reason, then summed up", async () => {
    const client = createClient(InferenceService, createGrpcTransport({ baseUrl: `http://${server.grpcAddress}` }));
    const keyed = { headers: { "x-api-key": "sk-alpha" } };
    // The key's two requests a minute, then refusals.
    for (let i = 0; i < 2; i++) await client.chat({ model: "mock-chat", messages }, keyed);
    const refuse = async (n: number, opts: { headers?: Record<string, string> }, code: Code) => {
      for (let done = 0; done < n; done += 50) {
        const errs = await Promise.all(
          Array.from({ length: Math.min(50, n - done) }, () => client.chat({ model: "mock-chat", messages }, opts).then(() => undefined, (e: unknown) => ConnectError.from(e))),
        );
        for (const e of errs) expect(e?.code).toBe(code);
      }
    };
    await refuse(300, keyed, Code.ResourceExhausted);
    await refuse(200, {}, Code.Unauthenticated);
    // Over server.requestLimits: refused from the request's bytes (over 4 KiB: smaller ones are
    // checked after decoding, src/gateway/request-limits.ts), before its key is read.
    const tooMany = Array.from({ length: 5 }, () => ({ role: Role.USER, content: [{ part: { case: "text" as const, value: "x".repeat(1000) } }] }));
    for (let done = 0; done < 100; done += 50) {
      const errs = await Promise.all(
        Array.from({ length: 50 }, () => client.chat({ model: "mock-chat", messages: tooMany }).then(() => undefined, (e: unknown) => ConnectError.from(e))),
      );
      for (const e of errs) expect(e?.code).toBe(Code.InvalidArgument);
    }

    const m = parseMetrics(await (await fetch(`http://${server.adminAddress}/metrics`)).text());
    expect(m.get('infergate_requests_total{rpc="Chat",model="mock-chat",code="RESOURCE_EXHAUSTED"}')).toBe(300);
    expect(m.get('infergate_requests_total{rpc="Chat",model="mock-chat",code="UNAUTHENTICATED"}')).toBe(200);

    // SIGTERM: what is still owed is summed up before the process exits.
    await server.stop();
    const summaries = (reason: string) => records().filter((r) => r["msg"] === "refused calls not logged one by one" && r["reason"] === reason);
    await expect.poll(() => summaries("RATE_LIMITED").length, { timeout: 10_000 }).toBeGreaterThan(0);
    await expect.poll(() => summaries("UNAUTHENTICATED").length, { timeout: 10_000 }).toBeGreaterThan(0);

    const calls = (reason: string) => records().filter((r) => r["msg"] === "call" && r["reason"] === reason);
    const suppressed = (reason: string) => summaries(reason).reduce((n, r) => n + Number(r["suppressed"]), 0);
    // Rate-limited: one call line (the first), the other 299 in summaries, under the caller's name.
    expect(calls("RATE_LIMITED")).toHaveLength(1);
    expect(suppressed("RATE_LIMITED")).toBe(299);
    expect(summaries("RATE_LIMITED").every((r) => r["tenant"] === "alpha" && r["code"] === "RESOURCE_EXHAUSTED" && r["intervalMs"] === 10_000)).toBe(true);
    // Unauthenticated (the 3 MB call of the test before included): every one in a line or a summary.
    expect(calls("UNAUTHENTICATED").length + suppressed("UNAUTHENTICATED")).toBe(201);
    expect(calls("UNAUTHENTICATED").length).toBeLessThanOrEqual(2);
    expect(summaries("UNAUTHENTICATED").every((r) => r["tenant"] === undefined && r["code"] === "UNAUTHENTICATED")).toBe(true);
    // Over the request limits, without a key (before: a line per call).
    await expect.poll(() => summaries("INVALID_ARGUMENT").length, { timeout: 10_000 }).toBeGreaterThan(0);
    expect(calls("INVALID_ARGUMENT")).toHaveLength(1);
    expect(suppressed("INVALID_ARGUMENT")).toBe(99);
    expect(summaries("INVALID_ARGUMENT").every((r) => r["tenant"] === undefined && r["code"] === "INVALID_ARGUMENT")).toBe(true);
  });
});
