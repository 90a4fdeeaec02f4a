/**
 * Fault scenarios 23 and 24 (issue 6): gRPC upstreams — the Triton fake (KServe v2 over gRPC) and
 * another infergate (chaining) — over real ports, behind the resilience wrapper.
 *
 * INTERIM: the `kserve` and `infergate` upstream kinds are not registered yet, so these tests put
 * a minimal test adapter over the shared gRPC I/O layer (src/upstreams/grpc/grpc-upstream.ts, the
 * one those kinds build on) behind `createResilientUpstream`, and serve it through the real gateway
 * core. When the kinds land, the same scenarios should run through `kind: kserve` / `kind:
 * infergate` in a config file.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { GRPCInferenceService, ModelInferRequestSchema } from "../../gen/inference/grpc_service_pb.js";
import { Role } from "../../gen/infergate/v1/chat_pb.js";
import { ChatRequestSchema, InferenceService, PredictResponseSchema } from "../../gen/infergate/v1/inference_service_pb.js";
import { DataType } from "../../gen/infergate/v1/tensor_pb.js";
import { parseConfig } from "../../src/config/load-config.js";
import type { UpstreamConfig } from "../../src/config/schema.js";
import { createGateway } from "../../src/gateway/gateway.js";
import { createRouter } from "../../src/gateway/router.js";
import { createResilientUpstream, type ResilientUpstream } from "../../src/resilience/resilient-upstream.js";
import { inferenceRoutes } from "../../src/server/connect-routes.js";
import { GrpcUpstream } from "../../src/upstreams/grpc/grpc-upstream.js";
import type { Upstream } from "../../src/upstreams/upstream.js";
import { createTritonFake, type TritonFake } from "../fakes/triton-fake.js";
import { startInProcess } from "../helpers/servers.js";
import { refusingUrl } from "./helpers/scripted-upstream.js";

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

/** Test adapter: Predict as one KServe v2 ModelInfer (inputs passed as FP32 contents). */
function tritonAdapter(config: UpstreamConfig): Upstream {
  const io = new GrpcUpstream(config, { maxMessageBytes: 4 << 20, trustedErrors: false });
  return {
    name: config.name,
    kind: "kserve",
    async predict(call) {
      await io.unary(
        GRPCInferenceService.method.modelInfer,
        create(ModelInferRequestSchema, {
          modelName: call.upstreamModel,
          inputs: [{ name: "INPUT0", datatype: "FP32", shape: [1n], contents: { fp32Contents: [1] } }],
        }),
        call,
      );
      return create(PredictResponseSchema, {});
    },
    close: () => io.close(),
  };
}

/** Test adapter: Chat as one call of another infergate's Chat (its errors trusted, as the infergate kind does). */
function infergateAdapter(config: UpstreamConfig): Upstream {
  const io = new GrpcUpstream(config, { maxMessageBytes: 4 << 20, trustedErrors: true });
  return {
    name: config.name,
    kind: "infergate",
    chat: (call) =>
      io.unary(InferenceService.method.chat, create(ChatRequestSchema, { model: call.upstreamModel, messages: call.request.messages }), call),
    close: () => io.close(),
  };
}

/** The gateway core with one model on `upstream`, and an in-memory Connect client of it. */
function gatewayOver(yaml: string, make: (config: UpstreamConfig) => Upstream) {
  const config = parseConfig(yaml, "(test)", {});
  const upstreamConfig = config.upstreams[0]!;
  const upstream = createResilientUpstream(upstreamConfig, make);
  closers.push(() => upstream.close());
  const gateway = createGateway(createRouter(config, new Map([[upstreamConfig.name, upstream]])));
  const client = createClient(InferenceService, createRouterTransport(inferenceRoutes(gateway, 60_000)));
  return { client, upstream: upstream as ResilientUpstream };
}

function errorOf(e: unknown) {
  const err = ConnectError.from(e);
  const info = err.details.find((d) => "type" in d && d.type === "google.rpc.ErrorInfo") as { debug?: { reason?: string; metadata?: Record<string, string> } } | undefined;
  return { code: err.code, message: err.rawMessage, reason: info?.debug?.reason, metadata: info?.debug?.metadata };
}

const predict = (model: string) => ({
  model,
  inputs: [{ name: "x", datatype: DataType.FP32, shape: [1n], data: { case: "contents" as const, value: { fp32Contents: [1] } } }],
});

describe("fault scenarios: gRPC upstreams", () => {
  async function triton(): Promise<TritonFake> {
    const fake = await createTritonFake();
    closers.push(() => fake.close());
    return fake;
  }

  function tritonYaml(fake: TritonFake, upstreamModel: string, breaker = "{}"): string {
    return `
upstreams:
  - name: triton
    kind: mock
    endpoints: ["http://${fake.grpcAddress}"]
    resilience: { retry: { backoffBaseMs: 5 }, breaker: ${breaker} }
models:
  - { name: m, upstream: triton, upstreamModel: ${upstreamModel}, capabilities: [predict] }
`;
  }

  it("23a. Triton answers UNAVAILABLE: retried, then UNAVAILABLE", async () => {
    const fake = await triton();
    const { client, upstream } = gatewayOver(tritonYaml(fake, "fail_unavailable"), tritonAdapter);
    const err = await client.predict(predict("m")).then(() => undefined, errorOf);
    expect(err).toEqual({
      code: Code.Unavailable,
      message: 'upstream "triton" failed: injected failure: server unavailable',
      reason: "UPSTREAM_UNAVAILABLE",
      metadata: { upstream: "triton", attempts: "3" },
    });
    expect(fake.requests.filter((r) => r.method === "ModelInfer").map((r) => r.status)).toEqual([Code.Unavailable, Code.Unavailable, Code.Unavailable]);
    expect(upstream.snapshot()[0]).toMatchObject({ failures: 3 });
  });

  it("23b. Triton answers RESOURCE_EXHAUSTED: not retried, the breaker untouched", async () => {
    const fake = await triton();
    // A breaker that would open at the first counted failure.
    const { client, upstream } = gatewayOver(tritonYaml(fake, "fail_exhausted", "{ volumeThreshold: 1 }"), tritonAdapter);
    for (let i = 0; i < 5; i++) {
      const err = await client.predict(predict("m")).then(() => undefined, errorOf);
      expect(err).toMatchObject({ code: Code.ResourceExhausted, reason: "UPSTREAM_RATE_LIMITED", metadata: { upstream: "triton" } });
    }
    expect(fake.requests.filter((r) => r.method === "ModelInfer")).toHaveLength(5);
    expect(upstream.snapshot()[0]).toMatchObject({ state: "closed", failures: 0 });
  });

  it("24. a chained infergate: down, or its own upstream down — the same semantics one hop further", async () => {
    // The next hop itself is down: connection refused on every attempt.
    const down = gatewayOver(
      `
upstreams: [{ name: hop, kind: mock, endpoints: ["${await refusingUrl()}"], resilience: { retry: { backoffBaseMs: 5 } } }]
models: [{ name: m, upstream: hop, upstreamModel: remote, capabilities: [chat] }]
`,
      infergateAdapter,
    );
    const err = await down.client.chat({ model: "m", messages: [{ role: Role.USER, content: [{ part: { case: "text", value: "hi" } }] }] }).then(() => undefined, errorOf);
    expect(err).toMatchObject({ code: Code.Unavailable, metadata: { upstream: "hop", attempts: "3" } });

    // The next hop is up, but its only upstream is down: it answers UNAVAILABLE after its own
    // retries, then CIRCUIT_OPEN once its breaker opened; both arrive here with its reason.
    const remote = await startInProcess(`
upstreams:
  - { name: dead, kind: openai, endpoints: ["${await refusingUrl()}"], resilience: { retry: { maxAttempts: 2, backoffBaseMs: 5 }, breaker: { volumeThreshold: 2, resetTimeoutMs: 60000 } } }
models: [{ name: remote, upstream: dead }]
`);
    closers.push(() => remote.shutdown());
    const up = gatewayOver(
      `
upstreams: [{ name: hop, kind: mock, endpoints: ["http://${remote.grpcAddress}"], resilience: { retry: { maxAttempts: 2, backoffBaseMs: 5 } } }]
models: [{ name: m, upstream: hop, upstreamModel: remote, capabilities: [chat] }]
`,
      infergateAdapter,
    );
    const first = await up.client.chat({ model: "m", messages: [{ role: Role.USER, content: [{ part: { case: "text", value: "hi" } }] }] }).then(() => undefined, errorOf);
    // Our first attempt got the remote's UNAVAILABLE (after its 2 attempts, which opened its
    // breaker); our retry got its CIRCUIT_OPEN, which is the error the client sees.
    expect(first).toMatchObject({ code: Code.Unavailable, reason: "CIRCUIT_OPEN", metadata: { upstream: "hop", attempts: "2" } });
    expect(up.upstream.snapshot()[0]).toMatchObject({ state: "closed", failures: 2 });
  });
});
