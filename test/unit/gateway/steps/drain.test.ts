import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import type { ChatResponse } from "../../../../gen/infergate/v1/inference_service_pb.js";
import { ListModelsRequestSchema } from "../../../../gen/infergate/v1/inference_service_pb.js";
import { GatewayError, Reason } from "../../../../src/core/gateway-error.js";
import { composeStream, composeUnary } from "../../../../src/gateway/interceptor.js";
import { Lifecycle, LinkedContext } from "../../../../src/gateway/lifecycle.js";
import { drainStep } from "../../../../src/gateway/steps/drain.js";
import { callOf, chatAnswer, chatRequest, context, drain, events, generateRequest, plainContext, runtime } from "../helpers.js";

const shuttingDown = new GatewayError(Code.Unavailable, "shut down", { reason: Reason.ShuttingDown });

function setup(limit?: number) {
  const rt = runtime([]);
  const life = new Lifecycle(rt, limit);
  const logged: unknown[] = [];
  const step = drainStep(life, (err) => (logged.push(err), err));
  return { rt, life, logged, step };
}

describe("drain step", () => {
  it("pins the runtime, counts the call in flight while it runs, and releases it after", async () => {
    const { rt, life, step } = setup();
    let inside = -1;
    const chat = composeUnary([step], "Chat", async (call) => {
      inside = life.inFlight();
      expect(call.runtime).toBe(rt);
      return chatAnswer();
    });
    await chat(callOf("Chat", chatRequest()));
    expect([inside, life.inFlight()]).toEqual([1, 0]);
  });

  it("refuses while draining, before the rest of the chain, and does not log the refusal", async () => {
    const { life, logged, step } = setup();
    life.drain();
    let reached = false;
    const chat = composeUnary([step], "Chat", async () => ((reached = true), chatAnswer()));
    await expect(chat(callOf("Chat", chatRequest()))).rejects.toMatchObject({ reason: Reason.ShuttingDown });
    const stream = composeStream([step], () => ((reached = true), events()));
    const { err } = await drain(stream(callOf("Generate", generateRequest())));
    expect(err).toMatchObject({ reason: Reason.ShuttingDown });
    expect([reached, logged, life.inFlight()]).toEqual([false, [], 0]);
  });

  it("sheds model calls over the limit; ListModels does not count", async () => {
    const { step } = setup(1);
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const chat = composeUnary([step], "Chat", async () => (await held, chatAnswer()));
    const models = composeUnary([step], "ListModels", async () => ({}) as never);
    const first = chat(callOf("Chat", chatRequest()));
    await expect(chat(callOf("Chat", chatRequest()))).rejects.toMatchObject({ code: Code.ResourceExhausted, reason: Reason.Overloaded });
    await models(callOf("ListModels", create(ListModelsRequestSchema, {})));
    release();
    await first;
  });

  it("a call aborted by abortInFlight answers with the abort's reason, whatever the rest threw, and logs it", async () => {
    const { life, logged, step } = setup();
    const chat = composeUnary([step], "Chat", (call) =>
      new Promise<ChatResponse>((_, reject) => call.ctx.signal.addEventListener("abort", () => reject(new Error("socket closed")))),
    );
    const running = chat(callOf("Chat", chatRequest(), context()));
    life.abortInFlight(shuttingDown);
    await expect(running).rejects.toBe(shuttingDown);
    expect(logged).toEqual([shuttingDown]);
    expect(life.inFlight()).toBe(0);
  });

  it("a context that cannot abort itself is seen through a linked view, released after the call", async () => {
    const { life, step } = setup();
    const outer = plainContext();
    let view: unknown;
    const chat = composeUnary([step], "Chat", (call) => {
      view = call.ctx;
      return new Promise<ChatResponse>((_, reject) => call.ctx.signal.addEventListener("abort", () => reject(call.ctx.signal.reason)));
    });
    const running = chat(callOf("Chat", chatRequest(), outer));
    expect(view).toBeInstanceOf(LinkedContext);
    life.abortInFlight(shuttingDown);
    await expect(running).rejects.toBe(shuttingDown);
    // The listener's own signal is not aborted by the gateway.
    expect(outer.signal.aborted).toBe(false);
  });

  it("a stream: checks before each event that the call is still wanted; released and mapped at its end", async () => {
    const { life, logged, step } = setup();
    const stream = composeStream([step], () => events("a", "b"));
    const it = stream(callOf("Generate", generateRequest(), context()));
    await it.next();
    expect(life.inFlight()).toBe(1);
    life.abortInFlight(shuttingDown);
    await expect(it.next()).rejects.toBe(shuttingDown);
    expect([life.inFlight(), logged]).toEqual([0, [shuttingDown]]);
  });

  it("a stream whose consumer stops is released without a failure", async () => {
    const { life, logged, step } = setup();
    const it = composeStream([step], () => events("a", "b"))(callOf("Generate", generateRequest()));
    await it.next();
    await it.return();
    expect([life.inFlight(), logged]).toEqual([0, []]);
  });
});
