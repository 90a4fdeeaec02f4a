import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import type { ChatInput } from "../../../../src/core/upstream.js";
import { GatewayError, Reason } from "../../../../src/core/gateway-error.js";
import { composeStream, composeUnary } from "../../../../src/gateway/interceptor.js";
import { sessionsStep } from "../../../../src/gateway/steps/sessions.js";
import { MemorySessionStore } from "../../../../src/sessions/memory-session-store.js";
import type { SessionStore } from "../../../../src/sessions/session-store.js";
import { Sessions } from "../../../../src/sessions/sessions.js";
import { callOf, chatAnswer, chatRequest, drain, events, generateRequest, user } from "../helpers.js";

function setup(over: Partial<SessionStore> = {}) {
  const store = new MemorySessionStore({ ttlMs: 60_000, maxMessages: 100, maxBytes: 100_000, maxSessions: 100 });
  const loads: string[] = [];
  const load = store.load.bind(store);
  const wrapped: SessionStore = Object.assign(Object.create(store) as SessionStore, {
    load: (tenant: string, id: string) => (loads.push(id), load(tenant, id)),
    ...over,
  });
  return { store, loads, step: sessionsStep(new Sessions(wrapped)) };
}

const texts = (req: ChatInput) => req.messages.map((m) => (m.content[0]?.part.case === "text" ? m.content[0].part.value : ""));

describe("sessions step", () => {
  it("a call without session_id goes on as it is, without the store", async () => {
    const { loads, step } = setup();
    const req = chatRequest();
    const chat = composeUnary([step], "Chat", async (call) => (expect(call.request).toBe(req), chatAnswer()));
    await chat(callOf("Chat", req));
    expect(loads).toEqual([]);
  });

  it("a Chat: the history goes in front of the request; the turn is recorded once the answer is back", async () => {
    const { store, step } = setup();
    const seen: string[][] = [];
    const chat = composeUnary([step], "Chat", async (call) => (seen.push(texts(call.request)), chatAnswer(`re ${seen.length}`)));
    await chat(callOf("Chat", chatRequest({ sessionId: "s", messages: user("one") })));
    await chat(callOf("Chat", chatRequest({ sessionId: "s", messages: user("two") })));
    expect(seen).toEqual([["one"], ["one", "re 1", "two"]]);
    expect(await store.load("", "s")).toHaveLength(4);
  });

  it("a failed Chat leaves its session as it was", async () => {
    const { store, step } = setup();
    const chat = composeUnary([step], "Chat", async () => {
      throw new GatewayError(Code.Unavailable, "down", { reason: Reason.UpstreamUnavailable });
    });
    await expect(chat(callOf("Chat", chatRequest({ sessionId: "s" })))).rejects.toMatchObject({ code: Code.Unavailable });
    expect(await store.load("", "s")).toEqual([]);
  });

  it("a Generate: the answer is assembled from the events and recorded before the final event goes out", async () => {
    const { store, step } = setup();
    const stream = composeStream([step], () => events("a", "b"));
    const it = stream(callOf("Generate", generateRequest({ sessionId: "s" })));
    await it.next();
    await it.next();
    expect(await store.load("", "s")).toEqual([]);
    const final = await it.next();
    expect(final.value?.event.case).toBe("final");
    const turn = await store.load("", "s");
    expect(turn).toHaveLength(2);
  });

  it("a Generate cut off before its final event, or whose turn cannot be recorded, records nothing and fails", async () => {
    const { store, step } = setup();
    const cut = composeStream([step], () => events("a", "b"))(callOf("Generate", generateRequest({ sessionId: "s" })));
    await cut.next();
    await cut.return();
    expect(await store.load("", "s")).toEqual([]);

    const failing = setup({
      append: async () => {
        throw new GatewayError(Code.Unavailable, "store down", { reason: Reason.UpstreamUnavailable });
      },
    });
    const { items, err } = await drain(composeStream([failing.step], () => events("a"))(callOf("Generate", generateRequest({ sessionId: "s" }))));
    expect([items.map((e) => e.event.case), err]).toEqual([["textDelta"], expect.objectContaining({ message: "store down" })]);
  });
});
