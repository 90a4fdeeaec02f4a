import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { GatewayError, Reason } from "../../../../src/core/gateway-error.js";
import type { Admission } from "../../../../src/core/rpc.js";
import { composeStream, composeUnary } from "../../../../src/gateway/interceptor.js";
import { admissionStep } from "../../../../src/gateway/steps/admission.js";
import { callOf, chatAnswer, chatRequest, context, drain, events, generateRequest, runtime } from "../helpers.js";

describe("admission step", () => {
  it("admits with the call's rpc, model and context, and goes on in the same turn when admission has nothing to wait for", async () => {
    const seen: unknown[] = [];
    const admit: Admission = ({ rpc, model, ctx }) => {
      seen.push([rpc, model]);
      ctx.tenant = "alice";
    };
    const answer = Promise.resolve(chatAnswer());
    const chat = composeUnary([admissionStep], "Chat", (call) => {
      expect(call.ctx.tenant).toBe("alice");
      return answer;
    });
    // No promise of its own: the handler's is returned as it is.
    expect(chat(callOf("Chat", chatRequest({ model: "m" }), context(), runtime([], admit)))).toBe(answer);
    expect(seen).toEqual([["Chat", "m"]]);
  });

  it("waits for an admission that gives a promise, and refuses with what it throws, before the rest", async () => {
    let reached = 0;
    const refused = new GatewayError(Code.Unauthenticated, "no key", { reason: Reason.Unauthenticated });
    const waiting: Admission = () => new Promise((r) => setTimeout(r, 5));
    const refusing: Admission = async () => {
      throw refused;
    };
    const chat = composeUnary([admissionStep], "Chat", async () => (reached++, chatAnswer()));
    await chat(callOf("Chat", chatRequest(), context(), runtime([], waiting)));
    await expect(chat(callOf("Chat", chatRequest(), context(), runtime([], refusing)))).rejects.toBe(refused);
    const stream = composeStream([admissionStep], () => (reached++, events()));
    const { err } = await drain(stream(callOf("Generate", generateRequest(), context(), runtime([], refusing))));
    expect([reached, err]).toEqual([1, refused]);
  });

  it("a caller that already left goes no further, not even to admission", async () => {
    let admitted = false;
    const ctx = context();
    ctx.cancel();
    const chat = composeUnary([admissionStep], "Chat", async () => chatAnswer());
    expect(() => chat(callOf("Chat", chatRequest(), ctx, runtime([], () => void (admitted = true))))).toThrow(expect.objectContaining({ code: Code.Canceled }));
    expect(admitted).toBe(false);
  });
});
