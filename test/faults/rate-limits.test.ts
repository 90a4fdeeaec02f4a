/**
 * Fault scenarios 8, 9 and 10 (issue 6), end to end against the OpenAI fake: an upstream 429 is
 * retried only when its Retry-After fits in the caller's deadline, and a Retry-After of any shape
 * (seconds, an HTTP date, garbage, negative, huge) never crashes the call or makes it wait past
 * its deadline.
 */
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createOpenAIFake, type OpenAIFake } from "../fakes/openai-fake.js";
import { chatRequest, failure, type Gateway, startGateway } from "./helpers/harness.js";

describe("fault scenarios: upstream rate limits", () => {
  let fake: OpenAIFake;
  let g: Gateway;

  beforeAll(async () => {
    fake = await createOpenAIFake();
    g = await startGateway(`
upstreams:
  - name: llm
    kind: openai
    endpoints: ["${fake.baseUrl}"]
    resilience: { retry: { backoffBaseMs: 5 } }
models:
  - name: chat
    upstream: llm
`);
  });
  afterAll(async () => {
    await g?.close();
    await fake?.close();
  });
  beforeEach(() => {
    fake.reset();
  });

  /** The text of a successful Chat answer (the fake echoes the user's message). */
  const answerText = (res: { message: { content: { text: string }[] } }) => res.message.content.map((c) => c.text).join("");

  it("8. 429 with Retry-After: 1 and a 5 s deadline: waits, retries, succeeds", async () => {
    fake.enqueueScenario("rate-limited", { retryAfter: "1" });
    const stores = g.app.cache.stats.stores;
    const started = Date.now();
    // An answer at all shows the wait ended within the 5 s deadline.
    const res = await g.client.unary<{ message: { content: { text: string }[] } }>("Chat", chatRequest("chat", "wait for me"), { timeoutMs: 5_000 });
    expect(answerText(res)).toBe("wait for me");
    // Lower bounds only: the wait's timer never fires early.
    expect(Date.now() - started).toBeGreaterThanOrEqual(998);
    expect(fake.requests.map((r) => [r.scenario, r.status])).toEqual([
      ["rate-limited", 429],
      ["echo", 200],
    ]);
    expect(fake.requests[1]!.receivedAt - fake.requests[0]!.receivedAt).toBeGreaterThanOrEqual(998);
    // Only the answer was stored, not the 429.
    expect(g.app.cache.stats.stores - stores).toBe(1);
  });

  it("9. 429 with Retry-After: 30 and a 2 s deadline: fails at once with RetryInfo 30 s", async () => {
    fake.setScenario("rate-limited", { retryAfter: "30" });
    const stores = g.app.cache.stats.stores;
    // The 429's own status, not DEADLINE_EXCEEDED: the gateway did not wait (a wait would have run into the 2 s deadline).
    const err = await failure(g.client.unary("Chat", chatRequest("chat", "too long to wait"), { timeoutMs: 2_000 }));
    expect(err).toEqual({
      code: status.RESOURCE_EXHAUSTED,
      message: 'upstream "llm" is rate limiting the gateway',
      reason: "UPSTREAM_RATE_LIMITED",
      metadata: { upstream: "llm", http_status: "429" },
      retryAfterMs: 30_000,
    });
    expect(fake.requests).toHaveLength(1);
    expect(g.app.cache.stats.stores).toBe(stores);
  });

  it("10a. Retry-After as an HTTP date a few seconds ahead: waits until then (within the deadline), then succeeds", async () => {
    fake.enqueueScenario("rate-limited-date");
    const started = Date.now();
    // An answer at all shows the wait ended within the 6 s deadline.
    const res = await g.client.unary<{ message: { content: { text: string }[] } }>("Chat", chatRequest("chat", "dated"), { timeoutMs: 6_000 });
    expect(answerText(res)).toBe("dated");
    // A lower bound only: the date has a resolution of one second and is about 3 s ahead.
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_500);
    expect(fake.requests.map((r) => r.status)).toEqual([429, 200]);
  });

  it.each([
    ["an HTTP date an hour ahead", () => new Date(Date.now() + 3_600_000).toUTCString(), 3_600_000],
    ["huge delay-seconds", () => "99999999999", 99_999_999_999_000],
  ])("10b. Retry-After as %s: no wait at all, RetryInfo says when", async (_name, header, expectedMs) => {
    const retryAfter = header();
    fake.setScenario("rate-limited", { retryAfter });
    // The 429's own status, not DEADLINE_EXCEEDED: the gateway did not wait (a wait would have run into the 5 s deadline).
    const err = await failure(g.client.unary("Chat", chatRequest("chat", `late ${retryAfter}`), { timeoutMs: 5_000 }));
    expect([err.code, err.reason]).toEqual([status.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED"]);
    expect(err.retryAfterMs).toBeGreaterThan(expectedMs - 5_000);
    expect(err.retryAfterMs).toBeLessThanOrEqual(expectedMs);
    expect(fake.requests).toHaveLength(1);
  });

  it("10c. Retry-After as garbage: unreadable, so not retried; no RetryInfo, no wait", async () => {
    fake.setScenario("rate-limited", { retryAfter: "soon-ish" });
    const stores = g.app.cache.stats.stores;
    // The 429's own status, not DEADLINE_EXCEEDED: the gateway did not wait (a wait would have run into the 5 s deadline).
    const err = await failure(g.client.unary("Chat", chatRequest("chat", "garbage"), { timeoutMs: 5_000 }));
    expect([err.code, err.reason, err.retryAfterMs]).toEqual([status.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED", undefined]);
    expect(fake.requests).toHaveLength(1);
    expect(g.app.cache.stats.stores).toBe(stores);
  });

  it("10d. Retry-After negative: read as a moment already past, so the retry comes after the usual backoff only", async () => {
    fake.enqueueScenario("rate-limited", { retryAfter: "-5" });
    // Retried within the 5 s deadline: read as 5 s (or as unreadable) it would not have been retried at all.
    const res = await g.client.unary<{ message: { content: { text: string }[] } }>("Chat", chatRequest("chat", "negative"), { timeoutMs: 5_000 });
    expect(answerText(res)).toBe("negative");
    expect(fake.requests.map((r) => r.status)).toEqual([429, 200]);
  });
});
