import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { GenerateResponseSchema } from "../../../../gen/infergate/v1/inference_service_pb.js";
import { ResponseCache } from "../../../../src/cache/response-cache.js";
import { parseConfig } from "../../../../src/config/load-config.js";
import { composeStream, composeUnary } from "../../../../src/gateway/interceptor.js";
import { cacheStep } from "../../../../src/gateway/steps/cache.js";
import { markOrigin, stampProvenance } from "../../../../src/gateway/steps/provenance.js";
import { callOf, chatAnswer, chatRequest, context, drain, events, generateRequest, route } from "../helpers.js";

const model = route("m", { name: "up" });
const cacheConfig = parseConfig("upstreams: [{ name: mock, kind: mock }]\nmodels: [{ name: m, upstream: mock }]\n", "(test)", {}).cache;

function chatOf(cache: ResponseCache | undefined, answered: { n: number }) {
  return composeUnary([cacheStep(cache)], "Chat", async (call) => {
    answered.n++;
    expect(call.run.deadline).toBeGreaterThan(Date.now());
    return stampProvenance(model, chatAnswer());
  });
}

describe("cache step", () => {
  it("without a cache, every call runs on the caller's own signal and says it bypassed", async () => {
    const answered = { n: 0 };
    const ctx = context();
    const call = callOf("Chat", chatRequest({ temperature: 0 }), ctx);
    call.route = model;
    await chatOf(undefined, answered)(call);
    expect([call.run, answered.n, ctx.responseHeaders["infergate-cache"], ctx.responseHeaders["infergate-served-by"]]).toEqual([ctx, 1, "bypass", "m/up"]);
  });

  it("an identical deterministic call is a hit: the rest of the chain runs once", async () => {
    const answered = { n: 0 };
    const chat = chatOf(new ResponseCache(cacheConfig, 60_000), answered);
    const outcomes: (string | undefined)[] = [];
    for (let i = 0; i < 2; i++) {
      const ctx = context();
      const call = callOf("Chat", chatRequest({ temperature: 0 }), ctx);
      call.route = model;
      const res = await chat(call);
      outcomes.push(ctx.responseHeaders["infergate-cache"]);
      expect(ctx.responseHeaders["infergate-served-by"]).toBe("m/up");
      expect(res.cached).toBe(i === 1);
    }
    expect([answered.n, outcomes]).toEqual([1, ["miss", "hit"]]);
  });

  it("a Chat whose caller left while the answer came is not answered", async () => {
    const ctx = context();
    const call = callOf("Chat", chatRequest(), ctx);
    call.route = model;
    const chat = composeUnary([cacheStep(undefined)], "Chat", async () => {
      ctx.cancel();
      return stampProvenance(model, chatAnswer());
    });
    await expect(chat(call)).rejects.toMatchObject({ reason: "CANCELLED" });
  });

  it("a stream names who served it from its first event, and a hit from its stored final event before any", async () => {
    const cache = new ResponseCache(cacheConfig, 60_000);
    let ran = 0;
    const stream = composeStream([cacheStep(cache)], () => {
      ran++;
      const evs = events("a");
      markOrigin(evs[0]!, model);
      stampProvenance(model, (evs[1]!.event as { value: { id: string; model: string; modelVersion: string; upstream: string } }).value);
      return (async function* () {
        yield* evs;
      })();
    });
    const headers: Record<string, string>[] = [];
    for (let i = 0; i < 2; i++) {
      const ctx = context();
      const call = callOf("Generate", generateRequest({ temperature: 0 }), ctx);
      call.route = model;
      const it = stream(call)[Symbol.asyncIterator]();
      const first = await it.next();
      expect(first.value).toEqual(expect.objectContaining({ $typeName: create(GenerateResponseSchema).$typeName }));
      headers.push({ ...ctx.responseHeaders });
      await drain({ [Symbol.asyncIterator]: () => it });
    }
    expect(ran).toBe(1);
    expect(headers.map((h) => [h["infergate-cache"], h["infergate-served-by"]])).toEqual([
      ["miss", "m/up"],
      ["hit", "m/up"],
    ]);
  });
});
