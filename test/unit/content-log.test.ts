import { AsyncLocalStorage } from "node:async_hooks";
import { describe, expect, it } from "vitest";
import { Role } from "../../gen/infergate/v1/chat_pb.js";
import { composeUnary, type Interceptor } from "../../src/gateway/interceptor.js";
import type { Logger } from "../../src/observability/logger.js";
import type { PendingLine } from "../../src/server/call-recorder.js";
import { contentLogStep } from "../../src/server/content-log.js";
import { callOf, chatAnswer, chatRequest } from "./gateway/helpers.js";

function setup() {
  const lines = new AsyncLocalStorage<PendingLine>();
  const written: object[] = [];
  const log = { info: (obj: object) => written.push(obj) } as unknown as Logger;
  // As the call recorder does with server.logContent: the Chat call's line parked in its context.
  const parking: Interceptor = {
    name: "record",
    unary: {
      Chat: (next) => async (call) => {
        try {
          return await next(call);
        } finally {
          const pending = lines.getStore();
          if (pending !== undefined) pending.line = { rpc: "Chat" };
        }
      },
    },
  };
  return { written, steps: [contentLogStep(lines, log), parking] };
}

describe("content log step (server.logContent)", () => {
  it("writes the parked line with the last user message and the answer's text", async () => {
    const { written, steps } = setup();
    const chat = composeUnary(steps, "Chat", async () => chatAnswer("the answer"));
    const req = chatRequest({
      messages: [
        { role: Role.USER, content: [{ part: { case: "text", value: "first" } }] },
        { role: Role.ASSISTANT, content: [{ part: { case: "text", value: "reply" } }] },
        { role: Role.USER, content: [{ part: { case: "text", value: "second" } }] },
      ],
    });
    await chat(callOf("Chat", req));
    expect(written).toEqual([{ rpc: "Chat", prompt: "second", completion: "the answer" }]);
  });

  it("a failed call's line has the prompt and no completion; the prompt is the caller's, not a session's history", async () => {
    const { written, steps } = setup();
    const chat = composeUnary(steps, "Chat", async (call) => {
      call.request = chatRequest({ messages: [] });
      throw new Error("failed");
    });
    await expect(chat(callOf("Chat", chatRequest()))).rejects.toThrow("failed");
    expect(written).toEqual([{ rpc: "Chat", prompt: "hi", completion: undefined }]);
  });
});
