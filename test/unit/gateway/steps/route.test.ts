import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { PredictRequestSchema, PredictResponseSchema } from "../../../../gen/infergate/v1/inference_service_pb.js";
import { DataType, TensorForm } from "../../../../gen/infergate/v1/tensor_pb.js";
import { createRouter } from "../../../../src/gateway/router.js";
import { composeStream, composeUnary } from "../../../../src/gateway/interceptor.js";
import { routeStep } from "../../../../src/gateway/steps/route.js";
import { parseConfig } from "../../../../src/config/load-config.js";
import { createMockUpstream, mockOptionsSchema } from "../../../../src/upstreams/mock/mock-upstream.js";
import { callOf, chatAnswer, chatRequest, context, drain, events, generateRequest } from "../helpers.js";

const config = parseConfig("upstreams: [{ name: mock, kind: mock }]\nmodels: [{ name: m, upstream: mock }, { name: p, upstream: mock, capabilities: [predict] }]\n", "(test)", {});
const rt = { router: createRouter(config, new Map([["mock", createMockUpstream({ name: "mock" }, mockOptionsSchema.parse({}))]])) };
const input = (name: string) => ({ name, datatype: DataType.INT32, shape: [2n], data: { case: "contents" as const, value: { intContents: [1, 2] } } });

describe("route step", () => {
  it("routes a Chat to its model and validates it before the rest sees it", async () => {
    const chat = composeUnary([routeStep(undefined)], "Chat", async (call) => {
      expect(call.route.name).toBe("m");
      return chatAnswer();
    });
    await chat(callOf("Chat", chatRequest({ model: "m" }), context(), rt));
    expect(() => chat(callOf("Chat", chatRequest({ model: "nope" }), context(), rt))).toThrow(expect.objectContaining({ code: Code.NotFound }));
    expect(() => chat(callOf("Chat", chatRequest({ model: "p" }), context(), rt))).toThrow(expect.objectContaining({ code: Code.Unimplemented }));
    expect(() => chat(callOf("Chat", chatRequest({ model: "m", messages: [] }), context(), rt))).toThrow(expect.objectContaining({ code: Code.InvalidArgument }));
  });

  it("routes a Generate for generation", async () => {
    const stream = composeStream([routeStep(undefined)], () => events());
    const { err } = await drain(stream(callOf("Generate", generateRequest({ model: "p" }), context(), rt)));
    expect(err).toMatchObject({ code: Code.Unimplemented });
  });

  it("gives a Predict's answer this request's id (or a new one) and the output form asked for", async () => {
    const answer = () =>
      create(PredictResponseSchema, {
        id: "stored",
        outputs: [{ name: "y", datatype: DataType.INT32, shape: [2n], data: { case: "contents", value: { intContents: [1, 2] } } }],
      });
    const predict = composeUnary([routeStep(undefined)], "Predict", async () => answer());
    const mine = await predict(callOf("Predict", create(PredictRequestSchema, { model: "p", id: "mine", inputs: [input("x")] }), context(), rt));
    expect(mine.id).toBe("mine");
    const raw = await predict(callOf("Predict", create(PredictRequestSchema, { model: "p", inputs: [input("x")], outputForm: TensorForm.RAW }), context(), rt));
    expect(raw.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(raw.outputs[0]!.data.case).toBe("rawContents");
  });
});
