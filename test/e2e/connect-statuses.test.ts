/**
 * Issue 17, defect 10: statuses on the Connect protocol as an HTTP client sees them, with plain
 * fetch (no connect client in between): a zero `connect-timeout-ms` is a deadline (504), not a
 * cancellation (499); a rate-limited call (429) says when to come back in `Retry-After`.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { App } from "../../src/server/app.js";
import { hashKey } from "../../src/security/api-keys.js";
import { startInProcess } from "../helpers/servers.js";

let app: App;
beforeAll(async () => {
  app = await startInProcess(`upstreams: [{name: mock, kind: mock}]
models: [{name: mock-chat, upstream: mock}]
auth:
  enabled: true
  keys:
    - {name: alpha, sha256: ${hashKey("sk-alpha")}, models: ["mock-*"], limits: {requestsPerMinute: 2}}
    - {name: beta, sha256: ${hashKey("sk-beta")}, models: ["mock-*"]}
`);
});
afterAll(async () => {
  await app.shutdown();
});

const body = JSON.stringify({ model: "mock-chat", messages: [{ role: "ROLE_USER", content: [{ text: "hi" }] }] });

function chat(headers: Record<string, string>) {
  return fetch(`http://${app.httpAddress}/infergate.v1.InferenceService/Chat`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body,
  });
}

describe("Connect protocol statuses", () => {
  it.each(["0", "1"])("connect-timeout-ms: %s → 504 deadline_exceeded naming the header", async (ms) => {
    const res = await chat({ authorization: "Bearer sk-beta", "connect-timeout-ms": ms });
    const err = (await res.json()) as { code: string; message: string };
    expect([res.status, err.code]).toEqual([504, "deadline_exceeded"]);
    expect(err.message).toContain("connect-timeout-ms");
  });

  it("a rate-limited call is 429 with Retry-After in whole seconds, matching its RetryInfo", async () => {
    for (let i = 0; i < 2; i++) expect((await chat({ authorization: "Bearer sk-alpha" })).status).toBe(200);
    const res = await chat({ authorization: "Bearer sk-alpha" });
    const err = (await res.json()) as { code: string; details?: { type: string; debug?: { retryDelay?: string } }[] };
    expect([res.status, err.code]).toEqual([429, "resource_exhausted"]);
    // 2 per minute: one request refills in 30 s.
    const retryAfter = Number(res.headers.get("retry-after"));
    expect(retryAfter).toBeGreaterThan(25);
    expect(retryAfter).toBeLessThanOrEqual(30);
    const delay = err.details?.find((d) => d.type === "google.rpc.RetryInfo")?.debug?.retryDelay;
    expect(Math.ceil(Number.parseFloat(delay ?? "NaN"))).toBe(retryAfter);
  });
});
