import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { PredictRequestSchema, PredictResponseSchema } from "../../../../gen/infergate/v1/inference_service_pb.js";
import { GatewayError, Reason } from "../../../../src/core/gateway-error.js";
import type { ModelRoute } from "../../../../src/core/model-route.js";
import { composeStream, composeUnary, type StreamCall } from "../../../../src/gateway/interceptor.js";
import { fallbacksStep } from "../../../../src/gateway/steps/fallbacks.js";
import { originOf } from "../../../../src/gateway/steps/provenance.js";
import { callOf, chatAnswer, chatRequest, context, drain, events, generateRequest, route } from "../helpers.js";

const down = (upstream: string) => new GatewayError(Code.Unavailable, `${upstream} down`, { reason: Reason.UpstreamUnavailable, retryAfterMs: upstream === "b" ? 100 : 500 });
const fallbackA = route("fa", { name: "a" });
const fallbackB = route("fb", { name: "b" });
const primary = route("m", { name: "p" }, [fallbackA, fallbackB]);

function callFor<Req>(rpc: "Chat" | "Predict" | "Generate", req: Req, r: ModelRoute) {
  const ctx = context();
  const call = callOf(rpc, req, ctx);
  call.route = r;
  call.run = ctx;
  return call;
}

describe("fallbacks step", () => {
  it("one model: its answer, stamped with the model and upstream, or its own error", async () => {
    const solo = route("solo", { name: "s" });
    const tried: string[] = [];
    const chat = composeUnary([fallbacksStep], "Chat", async (call) => (tried.push(call.candidate.name), chatAnswer()));
    const res = await chat(callFor("Chat", chatRequest(), solo));
    expect([tried, res.model, res.modelVersion, res.upstream, res.id.length]).toEqual([["solo"], "solo", "1", "s", 36]);
    const failing = composeUnary([fallbacksStep], "Chat", async () => {
      throw down("s");
    });
    await expect(failing(callFor("Chat", chatRequest(), solo))).rejects.toMatchObject({ message: "s down" });
  });

  it("an upstream fault moves on to the next fallback; when all fail, one UNAVAILABLE naming each", async () => {
    const tried: string[] = [];
    const chat = composeUnary([fallbacksStep], "Chat", async (call) => {
      tried.push(call.candidate.name);
      if (call.candidate !== fallbackB) throw down(call.candidate.upstream.name);
      return chatAnswer();
    });
    expect((await chat(callFor("Chat", chatRequest(), primary))).upstream).toBe("b");
    expect(tried).toEqual(["m", "fa", "fb"]);
    const none = composeUnary([fallbacksStep], "Chat", async (call) => {
      throw down(call.candidate.upstream.name);
    });
    const err = (await none(callFor("Chat", chatRequest(), primary)).catch((e: unknown) => e)) as GatewayError;
    expect([err.code, err.reason, err.metadata.tried, err.retryAfterMs]).toEqual([Code.Unavailable, Reason.UpstreamUnavailable, "m/p,fa/a,fb/b", 100]);
  });

  it("a failure that is not an upstream fault ends the call with it: no fallback", async () => {
    const tried: string[] = [];
    const chat = composeUnary([fallbacksStep], "Chat", async (call) => {
      tried.push(call.candidate.name);
      throw new GatewayError(Code.InvalidArgument, "bad", { reason: Reason.InvalidArgument });
    });
    await expect(chat(callFor("Chat", chatRequest(), primary))).rejects.toMatchObject({ code: Code.InvalidArgument });
    expect(tried).toEqual(["m"]);
  });

  it("a Predict pinning a model version names one model exactly: no fallback, the pinned version stamped", async () => {
    const tried: string[] = [];
    const predict = composeUnary([fallbacksStep], "Predict", async (call) => {
      tried.push(call.candidate.name);
      return create(PredictResponseSchema, {});
    });
    const res = await predict(callFor("Predict", create(PredictRequestSchema, { model: "m", modelVersion: "7" }), primary));
    expect([tried, res.model, res.modelVersion, res.upstream]).toEqual([["m"], "m", "7", "p"]);
  });

  it("a stream falls back only before its first event; stamped, cut at its final event, marked with its origin", async () => {
    const stream = composeStream([fallbacksStep], (call: StreamCall) => {
      if (call.candidate === primary) throw down("p");
      return [...events("x"), ...events("after the final")];
    });
    const { items, err } = await drain(stream(callFor("Generate", generateRequest(), primary)));
    expect(err).toBeUndefined();
    expect(items.map((e) => e.event.case)).toEqual(["textDelta", "final"]);
    expect(originOf(items[0]!)).toBe("fa/a");
    const final = items[1]!.event;
    expect(final.case === "final" && [final.value.model, final.value.upstream]).toEqual(["fa", "a"]);

    const broken = composeStream([fallbacksStep], () =>
      (async function* () {
        yield events("x")[0]!;
        throw down("p");
      })(),
    );
    const cut = await drain(broken(callFor("Generate", generateRequest(), primary)));
    expect([cut.items.length, (cut.err as Error).message]).toEqual([1, "p down"]);
  });

  it("a stream that ends without its final event is STREAM_TRUNCATED, as the resilience wrapper says it", async () => {
    const solo = route("solo", { name: "s" });
    const stream = composeStream([fallbacksStep], () => events("a", "b").slice(0, 2));
    const { err } = await drain(stream(callFor("Generate", generateRequest(), solo)));
    expect(err).toMatchObject({ code: Code.Unavailable, reason: Reason.StreamTruncated, message: 'upstream "s" ended the stream without its final event after 2 events' });
  });
});
