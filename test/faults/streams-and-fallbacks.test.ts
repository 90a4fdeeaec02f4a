/**
 * Fault scenarios 11, 13, 14, 15, 16, 17, 18 and 30 (issue 6), end to end: Generate streams that
 * fail before or after their first event, fallback models, and answers that are not what they
 * claim to be. A stream is committed at its first event: before it, retries and fallbacks; after
 * it, the failure is the client's status, and no token is ever replayed.
 */
import { status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { createOpenAIFake } from "../fakes/openai-fake.js";
import { closedAfterEach, chatRequest, deltas, failure, headersOf, seen, unaryWithHeaders } from "./helpers/harness.js";
import { refusingUrl, tokens } from "./helpers/scripted-upstream.js";

const { gateway, later, scripted } = closedAfterEach();

async function openaiFake() {
  const fake = await createOpenAIFake();
  later(() => fake.close());
  return fake;
}

/** A primary model on `primaryKind` at `primaryUrl`, with model `backup` (the OpenAI fake at `backupUrl`) as its fallback. */
function withFallback(primaryUrl: string, backupUrl: string, primaryKind = "openai", resilience = "{ retry: { maxAttempts: 2, backoffBaseMs: 5 } }"): string {
  return `
upstreams:
  - name: primary-up
    kind: ${primaryKind}
    endpoints: ["${primaryUrl}"]
    resilience: ${resilience}
  - name: backup-up
    kind: openai
    endpoints: ["${backupUrl}"]
models:
  - name: primary
    upstream: primary-up
    fallbacks: [backup]
  - name: backup
    upstream: backup-up
`;
}

type Event = Record<string, unknown>;

describe("fault scenarios: streams and fallbacks", () => {
  it("11. the deadline expires before the first token: DEADLINE_EXCEEDED, and the upstream request is aborted", async () => {
    const up = await scripted(() => ({ kind: "answer", delayMs: 5_000 }));
    const g = await gateway(`
upstreams: [{ name: llm, kind: openai, endpoints: ["${up.baseUrl}"] }]
models: [{ name: chat, upstream: llm }]
`);
    const r = await g.client.serverStream<Event>("Generate", chatRequest("chat"), { timeoutMs: 500 }).done;
    expect(r.status.code).toBe(status.DEADLINE_EXCEEDED);
    expect(r.events).toEqual([]);
    // The call ended while the upstream still held its first token (due 5 s in): it did not wait for it.
    expect(up.requests[0]?.finishedAt).toBeUndefined();
    // Then the request was aborted before the upstream wrote that token: not by the upstream's
    // own write 5 s in, and not answered.
    await up.waitIdle();
    expect(up.requests).toHaveLength(1);
    expect(up.requests[0]!.abortedAt).toBeDefined();
    expect(up.requests[0]!.finishedAt).toBeUndefined();
    expect(up.bytesWritten).toBe(0);
    expect(g.app.cache.stats.stores).toBe(0);
  });

  it("13. a reset after 5 tokens: the client has the 5 tokens, then UNAVAILABLE STREAM_TRUNCATED; no retry, no fallback", async () => {
    const up = await scripted(() => ({ kind: "reset", tokens: 5 }));
    const backup = await openaiFake();
    const g = await gateway(withFallback(up.baseUrl, backup.baseUrl));
    const r = await g.client.serverStream<Event>("Generate", chatRequest("primary")).done;
    expect(deltas(r.events)).toEqual(tokens(5));
    expect(r.events).toHaveLength(5);
    expect(r.status.code).toBe(status.UNAVAILABLE);
    expect(r.status.details).toBe('upstream "primary-up" broke off the stream after 5 events');
    expect(r.error!.metadata.get("grpc-status-details-bin")).toHaveLength(1);
    expect(seen(r.error!)).toMatchObject({ reason: "STREAM_TRUNCATED", metadata: { upstream: "primary-up" } });
    expect(up.requests).toHaveLength(1);
    expect(backup.requests).toHaveLength(0);
    expect(g.app.cache.stats.stores).toBe(0);
  });

  it("14. a reset before the first token: the fallback model serves, the client sees one clean stream", async () => {
    const up = await scripted(() => ({ kind: "reset", tokens: 0 }));
    const backup = await openaiFake();
    const g = await gateway(withFallback(up.baseUrl, backup.baseUrl));
    const stream = g.client.serverStream<Event>("Generate", chatRequest("primary", "one clean stream"));
    const headers = headersOf(stream.call);
    const r = await stream.done;
    expect(r.status.code).toBe(status.OK);
    expect(deltas(r.events)).toEqual(["one ", "clean ", "stream"]);
    expect(r.events.at(-1)).toMatchObject({ event: "final", final: { model: "backup", upstream: "backup-up", finish_reason: "FINISH_REASON_STOP" } });
    expect(r.events.filter((e) => e["event"] === "final")).toHaveLength(1);
    expect(headers["infergate-served-by"]).toBe("backup/backup-up");
    // Both attempts at the primary were reset before any token; the backup answered once.
    expect(up.requests).toHaveLength(2);
    expect(backup.requests).toHaveLength(1);
    // The failed attempts left nothing in the cache; the fallback's complete answer is stored
    // under the requested model's key (and says which model answered).
    expect(g.app.cache.stats.stores).toBe(1);
  });

  it("15. Anthropic overloaded_error after HTTP 200, before any content: the fallback model serves", async () => {
    const up = await scripted(() => ({ kind: "anthropic-overloaded" }));
    const backup = await openaiFake();
    const g = await gateway(withFallback(up.url, backup.baseUrl, "anthropic"));
    const stream = g.client.serverStream<Event>("Generate", chatRequest("primary", "overloaded upstream"));
    const headers = headersOf(stream.call);
    const r = await stream.done;
    expect(r.status.code).toBe(status.OK);
    expect(deltas(r.events)).toEqual(["overloaded ", "upstream"]);
    expect(r.events.at(-1)).toMatchObject({ final: { model: "backup", upstream: "backup-up" } });
    expect(headers["infergate-served-by"]).toBe("backup/backup-up");
    expect(up.requests.map((q) => q.path)).toEqual(["/v1/messages", "/v1/messages"]);
    expect(backup.requests).toHaveLength(1);

    // Chat falls back the same way, and names the model that answered.
    const chat = await unaryWithHeaders<{ model: string; upstream: string }>(g.client, "Chat", chatRequest("primary", "chat too"));
    expect([chat.response.model, chat.response.upstream, chat.headers["infergate-served-by"]]).toEqual(["backup", "backup-up", "backup/backup-up"]);
  });

  it("16. an event stream that ends without its terminator is an error, never OK", async () => {
    const up = await scripted(() => ({ kind: "no-terminator", tokens: 3 }));
    const g = await gateway(`
upstreams: [{ name: llm, kind: openai, endpoints: ["${up.baseUrl}"] }]
models: [{ name: chat, upstream: llm }]
`);
    const r = await g.client.serverStream<Event>("Generate", chatRequest("chat")).done;
    expect(deltas(r.events)).toEqual(tokens(3));
    expect(r.status.code).toBe(status.UNAVAILABLE);
    expect(seen(r.error!).reason).toBe("STREAM_TRUNCATED");
    expect(up.requests).toHaveLength(1);
    expect(g.app.cache.stats.stores).toBe(0);
  });

  it("17. HTTP 200 with an HTML body: UNAVAILABLE UPSTREAM_BAD_RESPONSE (retried as any unavailable answer)", async () => {
    const up = await scripted(() => ({ kind: "html" }));
    const g = await gateway(`
upstreams: [{ name: llm, kind: openai, endpoints: ["${up.baseUrl}"], resilience: { retry: { backoffBaseMs: 5 } } }]
models: [{ name: chat, upstream: llm }]
`);
    const chat = await failure(g.client.unary("Chat", chatRequest("chat")));
    expect(chat).toMatchObject({ code: status.UNAVAILABLE, reason: "UPSTREAM_BAD_RESPONSE", metadata: { upstream: "llm", attempts: "3" } });
    expect(chat.message).toBe('upstream "llm" sent an invalid response: content-type "text/html; charset=utf-8" where JSON was expected');
    const r = await g.client.serverStream<Event>("Generate", chatRequest("chat")).done;
    expect([r.status.code, r.events]).toEqual([status.UNAVAILABLE, []]);
    expect(r.status.details).toBe('upstream "llm" sent an invalid response: content-type "text/html; charset=utf-8" where an event stream was expected');
    expect(up.requests).toHaveLength(6);
    expect(g.app.cache.stats.stores).toBe(0);
  });

  it("18. every endpoint of the primary and of the fallback down: one UNAVAILABLE naming what was tried, names only", async () => {
    const [a1, a2, b1] = [await refusingUrl(), await refusingUrl(), await refusingUrl()];
    const g = await gateway(`
upstreams:
  - { name: up-a, kind: openai, endpoints: ["${a1}", "${a2}"], resilience: { retry: { backoffBaseMs: 5 } } }
  - { name: up-b, kind: openai, endpoints: ["${b1}"], resilience: { retry: { backoffBaseMs: 5 } } }
models:
  - { name: primary, upstream: up-a, fallbacks: [backup] }
  - { name: backup, upstream: up-b }
`);
    for (const call of [
      failure(g.client.unary("Chat", chatRequest("primary"))),
      g.client.serverStream<Event>("Generate", chatRequest("primary")).done.then((r) => {
        expect(r.events).toEqual([]);
        return failure(Promise.reject(r.error));
      }),
    ]) {
      const err = await call;
      expect(err).toEqual({
        code: status.UNAVAILABLE,
        message: 'model "primary" could not be served; tried primary (upstream "up-a": UPSTREAM_UNAVAILABLE), backup (upstream "up-b": UPSTREAM_UNAVAILABLE)',
        reason: "UPSTREAM_UNAVAILABLE",
        metadata: { model: "primary", tried: "primary/up-a,backup/up-b" },
        retryAfterMs: undefined,
      });
      expect(err.message).not.toContain("127.0.0.1");
    }
    expect(g.app.cache.stats.stores).toBe(0);
  });

  it("30. headers, then a stall mid-stream longer than the idle timeout: UNAVAILABLE, and the upstream request is aborted", async () => {
    const up = await scripted(() => ({ kind: "stall", tokens: 2 }));
    const g = await gateway(`
upstreams: [{ name: llm, kind: openai, endpoints: ["${up.baseUrl}"], resilience: { streamIdleTimeoutMs: 300 } }]
models: [{ name: chat, upstream: llm }]
`);
    const started = Date.now();
    const r = await g.client.serverStream<Event>("Generate", chatRequest("chat"), { timeoutMs: 10_000 }).done;
    expect(deltas(r.events)).toEqual(tokens(2));
    // The message says which timer ended the stream: the 300 ms idle timeout, not the 10 s deadline.
    expect(r.status.code).toBe(status.UNAVAILABLE);
    expect(r.status.details).toBe('upstream "llm" sent nothing for 300ms in the middle of the stream');
    expect(seen(r.error!)).toMatchObject({ reason: "UPSTREAM_TIMEOUT", metadata: { upstream: "llm" } });
    // A lower bound only: the idle timer never fires early.
    expect(Date.now() - started).toBeGreaterThanOrEqual(298);
    await up.waitIdle();
    expect(up.requests).toHaveLength(1);
    expect(up.requests[0]!.abortedAt).toBeDefined();
    expect(g.app.cache.stats.stores).toBe(0);
  });
});
