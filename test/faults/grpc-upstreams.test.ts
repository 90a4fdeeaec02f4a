/**
 * Fault scenarios 23 and 24 (issue 6): gRPC upstreams — the Triton fake (KServe v2 over gRPC,
 * `kind: kserve`) and another infergate (`kind: infergate`, chaining) — over real ports, behind
 * the resilience layer, called through the gRPC listener by a grpc-js client.
 */
import { status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { createTritonFake, type TritonFake } from "../fakes/triton-fake.js";
import { startInProcess } from "../helpers/servers.js";
import { chatRequest, closedAfterEach, failure, type Gateway } from "./helpers/harness.js";
import { refusingUrl } from "./helpers/scripted-upstream.js";

const { gateway, later } = closedAfterEach();

const predict = (model: string) => ({
  model,
  inputs: [{ name: "INPUT0", datatype: "DATA_TYPE_FP32", shape: ["1"], contents: { fp32_contents: [1] } }],
});

interface Listed {
  models: { name: string; endpoints: { state: string }[] }[];
}

/** The breaker states ListModels reports for `model`'s endpoints. */
async function breakerStates(g: Gateway, model: string): Promise<string[]> {
  const res = await g.client.unary<Listed>("ListModels", {});
  return res.models.find((m) => m.name === model)!.endpoints.map((e) => e.state);
}

describe("fault scenarios: gRPC upstreams", () => {
  async function triton(): Promise<TritonFake> {
    const fake = await createTritonFake();
    later(() => fake.close());
    return fake;
  }

  function tritonYaml(fake: TritonFake, upstreamModel: string, breaker = "{}"): string {
    return `
upstreams:
  - name: triton
    kind: kserve
    endpoints: ["http://${fake.grpcAddress}"]
    resilience: { retry: { backoffBaseMs: 5 }, breaker: ${breaker} }
models:
  - { name: m, upstream: triton, upstreamModel: ${upstreamModel}, cache: { policy: "off" } }
`;
  }

  const inferCalls = (fake: TritonFake) => fake.requests.filter((r) => r.method === "ModelInfer");

  it("23a. Triton answers UNAVAILABLE: retried, then UNAVAILABLE", async () => {
    const fake = await triton();
    const g = await gateway(tritonYaml(fake, "fail_unavailable"));
    const err = await failure(g.client.unary("Predict", predict("m")));
    expect(err).toMatchObject({
      code: status.UNAVAILABLE,
      reason: "UPSTREAM_UNAVAILABLE",
      metadata: { upstream: "triton", attempts: "3" },
    });
    expect(inferCalls(fake).map((r) => r.status)).toEqual([status.UNAVAILABLE, status.UNAVAILABLE, status.UNAVAILABLE]);
  });

  it("23b. Triton answers RESOURCE_EXHAUSTED: not retried, the breaker untouched", async () => {
    const fake = await triton();
    // A breaker that would open at the first counted failure.
    const g = await gateway(tritonYaml(fake, "fail_exhausted", "{ volumeThreshold: 1 }"));
    for (let i = 0; i < 5; i++) {
      const err = await failure(g.client.unary("Predict", predict("m")));
      expect(err).toMatchObject({ code: status.RESOURCE_EXHAUSTED, reason: "UPSTREAM_RATE_LIMITED", metadata: { upstream: "triton" } });
    }
    expect(inferCalls(fake)).toHaveLength(5);
    expect(await breakerStates(g, "m")).toEqual(["BREAKER_STATE_CLOSED"]);
  });

  it("24. a chained infergate: down, or its own upstream down — the same semantics one hop further", async () => {
    // The next hop itself is down: connection refused on every attempt.
    const down = await gateway(`
upstreams: [{ name: hop, kind: infergate, endpoints: ["${await refusingUrl()}"], resilience: { retry: { backoffBaseMs: 5 } } }]
models: [{ name: m, upstream: hop, upstreamModel: remote }]
`);
    const err = await failure(down.client.unary("Chat", chatRequest("m", "hi")));
    expect(err).toMatchObject({ code: status.UNAVAILABLE, metadata: { upstream: "hop", attempts: "3" } });

    // The next hop is up, but its only upstream is down: it answers UNAVAILABLE after its own
    // retries, then CIRCUIT_OPEN once its breaker opened; both arrive here with its reason.
    const remote = await startInProcess(`
upstreams:
  - { name: dead, kind: openai, endpoints: ["${await refusingUrl()}"], resilience: { retry: { maxAttempts: 2, backoffBaseMs: 5 }, breaker: { volumeThreshold: 2, resetTimeoutMs: 60000 } } }
models: [{ name: remote, upstream: dead }]
`);
    later(() => remote.shutdown());
    const up = await gateway(`
upstreams: [{ name: hop, kind: infergate, endpoints: ["http://${remote.grpcAddress}"], resilience: { retry: { maxAttempts: 2, backoffBaseMs: 5 } } }]
models: [{ name: m, upstream: hop, upstreamModel: remote }]
`);
    const first = await failure(up.client.unary("Chat", chatRequest("m", "hi")));
    // Our first attempt got the remote's UNAVAILABLE (after its 2 attempts, which opened its
    // breaker); our retry got its CIRCUIT_OPEN, which is the error the client sees.
    expect(first).toMatchObject({ code: status.UNAVAILABLE, reason: "CIRCUIT_OPEN", metadata: { upstream: "hop", attempts: "2" } });
    // The far gateway's failures are its upstream's, not the hop's: our breaker stays closed.
    expect(await breakerStates(up, "m")).toEqual(["BREAKER_STATE_CLOSED"]);
  });
});
