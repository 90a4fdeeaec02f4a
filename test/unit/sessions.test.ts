import { create, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { MessageSchema, Role } from "../../gen/infergate/v1/chat_pb.js";
import { ChatRequestSchema, GenerateResponseSchema } from "../../gen/infergate/v1/inference_service_pb.js";
import { GatewayError } from "../../src/core/gateway-error.js";
import { MemorySessionStore } from "../../src/sessions/memory-session-store.js";
import { boundHistory } from "../../src/sessions/session-store.js";
import { AnswerAssembler, Sessions } from "../../src/sessions/sessions.js";

const bytes = (n: number) => new Uint8Array(n).fill(n);

function store(over: Partial<ConstructorParameters<typeof MemorySessionStore>[0]> = {}) {
  let now = 1_000;
  const s = new MemorySessionStore({ ttlMs: 60_000, maxMessages: 5, maxBytes: 1_000, maxSessions: 100, now: () => now, ...over });
  return { s, advance: (ms: number) => (now += ms) };
}

describe("MemorySessionStore", () => {
  it("keeps at most maxMessages, dropping the oldest first", async () => {
    const { s } = store();
    await s.append("t", "a", [bytes(1), bytes(2), bytes(3)]);
    await s.append("t", "a", [bytes(4), bytes(5), bytes(6), bytes(7)]);
    expect((await s.load("t", "a")).map((m) => m.length)).toEqual([3, 4, 5, 6, 7]);
  });

  it("keeps at most maxBytes, dropping the oldest first; a turn larger than the bound leaves nothing", async () => {
    const { s } = store({ maxBytes: 10, maxMessages: 100 });
    await s.append("t", "a", [bytes(4), bytes(3), bytes(2)]);
    await s.append("t", "a", [bytes(4)]);
    expect((await s.load("t", "a")).map((m) => m.length)).toEqual([3, 2, 4]);
    await s.append("t", "a", [bytes(11)]);
    expect(await s.load("t", "a")).toEqual([]);
    expect(await s.delete("t", "a")).toBe(false);
  });

  it("expires a session ttlMs after its last use (sliding), not after its start", async () => {
    const { s, advance } = store({ ttlMs: 1_000 });
    await s.append("t", "a", [bytes(1)]);
    advance(800);
    expect(await s.load("t", "a")).toHaveLength(1); // renews
    advance(800);
    await s.append("t", "a", [bytes(2)]); // renews
    advance(999);
    expect(await s.load("t", "a")).toHaveLength(2);
    advance(1_001);
    expect(await s.load("t", "a")).toEqual([]);
    expect(await s.delete("t", "a")).toBe(false);
  });

  it("keeps tenants apart: the same id of another tenant is another session, and cannot be deleted by it", async () => {
    const { s } = store();
    await s.append("alpha", "conv", [bytes(1)]);
    expect(await s.load("beta", "conv")).toEqual([]);
    expect(await s.delete("beta", "conv")).toBe(false);
    expect(await s.load("alpha", "conv")).toHaveLength(1);
    // Length-prefixed keys: tenant "a:1" + id "x" is not tenant "a" + id "1:x".
    await s.append("a:1", "x", [bytes(2)]);
    expect(await s.load("a", "1:x")).toEqual([]);
    expect(await s.delete("alpha", "conv")).toBe(true);
    expect(await s.load("alpha", "conv")).toEqual([]);
  });

  it("holds at most maxSessions sessions, dropping the least recently used", async () => {
    const { s } = store({ maxSessions: 2 });
    await s.append("t", "a", [bytes(1)]);
    await s.append("t", "b", [bytes(1)]);
    await s.load("t", "a");
    await s.append("t", "c", [bytes(1)]);
    expect(await s.load("t", "b")).toEqual([]);
    expect(await s.load("t", "a")).toHaveLength(1);
  });

  it("hands out copies: changing a loaded history changes nothing stored", async () => {
    const { s } = store();
    await s.append("t", "a", [bytes(1)]);
    (await s.load("t", "a")).push(bytes(2));
    expect(await s.load("t", "a")).toHaveLength(1);
  });
});

describe("boundHistory", () => {
  it.each([
    [[1, 2, 3], 5, 100, [1, 2, 3]],
    [[1, 2, 3], 2, 100, [2, 3]],
    [[5, 5, 5], 10, 10, [5, 5]],
    [[5, 5, 5], 10, 4, []],
    [[], 10, 10, []],
  ])("%j with maxMessages %i, maxBytes %i → %j", (sizes, maxMessages, maxBytes, want) => {
    expect(boundHistory(sizes.map(bytes), { maxMessages, maxBytes }).map((m) => m.length)).toEqual(want);
  });
});

const user = (t: string) => create(MessageSchema, { role: Role.USER, content: [{ part: { case: "text", value: t } }] });
const assistant = (t: string) => create(MessageSchema, { role: Role.ASSISTANT, content: [{ part: { case: "text", value: t } }] });

describe("Sessions", () => {
  it("prepends the history, clears session_id on the way on, and records the turn on commit", async () => {
    const sessions = new Sessions(store().s);
    const req = create(ChatRequestSchema, { model: "m", sessionId: "s1", messages: [user("one")] });
    const first = (await sessions.open(req, "t"))!;
    expect(first.request.messages).toEqual([user("one")]);
    expect(first.request.sessionId).toBe("");
    expect(req.sessionId).toBe("s1"); // the caller's message is not changed
    await first.commit(assistant("You said: one"));
    const second = (await sessions.open(create(ChatRequestSchema, { model: "m", sessionId: "s1", messages: [user("two")] }), "t"))!;
    expect(second.request.messages).toEqual([user("one"), assistant("You said: one"), user("two")]);
  });

  it("records nothing until commit: an abandoned turn leaves the session as it was", async () => {
    const sessions = new Sessions(store().s);
    await sessions.open(create(ChatRequestSchema, { sessionId: "s1", messages: [user("lost")] }), "t");
    const next = (await sessions.open(create(ChatRequestSchema, { sessionId: "s1", messages: [user("two")] }), "t"))!;
    expect(next.request.messages).toEqual([user("two")]);
  });

  it("never starts a history with a tool result whose call the bounds dropped", async () => {
    const s = store({ maxMessages: 2 }).s;
    const toolCall = create(MessageSchema, { role: Role.ASSISTANT, toolCalls: [{ id: "c1", name: "f", arguments: "{}" }] });
    const toolResult = create(MessageSchema, { role: Role.TOOL, toolCallId: "c1", content: [{ part: { case: "text", value: "42" } }] });
    await s.append("t", "s", [toolCall, toolResult, assistant("it is 42")].map((m) => toBinary(MessageSchema, m)));
    const turn = (await new Sessions(s).open(create(ChatRequestSchema, { sessionId: "s", messages: [user("and?")] }), "t"))!;
    expect(turn.request.messages).toEqual([assistant("it is 42"), user("and?")]);
  });

  it("ignores requests without a session, refuses malformed ids, and deletes only what exists", async () => {
    const sessions = new Sessions(store().s);
    expect(await sessions.open(create(ChatRequestSchema, { messages: [user("x")] }), "t")).toBeUndefined();
    for (const bad of ["has space", "x".repeat(129), "é"]) {
      const err = await sessions.open(create(ChatRequestSchema, { sessionId: bad, messages: [user("x")] }), "t").catch((e: unknown) => e);
      expect(err).toBeInstanceOf(GatewayError);
      expect((err as GatewayError).code).toBe(Code.InvalidArgument);
      expect((err as GatewayError).metadata).toEqual({ field: "session_id" });
    }
    const missing = (await sessions.delete("t", "nope").catch((e: unknown) => e)) as GatewayError;
    expect(missing.code).toBe(Code.NotFound);
    expect(missing.reason).toBe("SESSION_NOT_FOUND");
  });
});

describe("AnswerAssembler", () => {
  it("joins text deltas and tool-call fragments by index into one assistant message", () => {
    const a = new AnswerAssembler();
    const events = [
      { event: { case: "textDelta" as const, value: "Hello" } },
      { event: { case: "textDelta" as const, value: " world" } },
      { event: { case: "toolCallDelta" as const, value: { index: 1, id: "c2", name: "g", arguments: "{\"b\":" } } },
      { event: { case: "toolCallDelta" as const, value: { index: 0, id: "c1", name: "f", arguments: "{}" } } },
      { event: { case: "toolCallDelta" as const, value: { index: 1, arguments: "2}" } } },
    ];
    for (const e of events) a.add(create(GenerateResponseSchema, e));
    const m = a.message();
    expect(m.role).toBe(Role.ASSISTANT);
    expect(m.content.map((p) => p.part.value)).toEqual(["Hello world"]);
    expect(m.toolCalls.map((c) => [c.id, c.name, c.arguments])).toEqual([
      ["c1", "f", "{}"],
      ["c2", "g", '{"b":2}'],
    ]);
  });
});
