/**
 * Issue 17, defect 9: the scope of a breaker. One broken model on a Triton server (not ready,
 * unknown there) opens the breaker of that model on that server only; the server's other models
 * keep being served. Failures with nothing back from the server (connection refused) open the
 * server's own breaker, for every model (docs/resilience.md, "Breaker scope").
 *
 * The Triton fake (test/fakes/triton-fake.ts) on real loopback ports, over KServe v2 REST and
 * over gRPC, behind one upstream with one endpoint; a grpc-js client calls infergate.
 */
import { status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { createTritonFake, type TritonFake } from "../fakes/triton-fake.js";
import { closedAfterEach, failure, type Gateway } from "./helpers/harness.js";

const { gateway, later } = closedAfterEach();

interface ModelsList {
  models: { name: string; state: string; endpoints: { state: string; ejected: boolean }[] }[];
}

/** Each model's endpoint breaker states, as ListModels shows them. */
async function breakers(g: Gateway): Promise<Record<string, string[]>> {
  const res = await g.client.unary<ModelsList>("ListModels", {});
  return Object.fromEntries(res.models.map((m) => [m.name, m.endpoints.map((e) => e.state)]));
}

const int32 = (name: string, values: number[]) => ({
  name,
  datatype: "DATA_TYPE_INT32",
  shape: [String(values.length)],
  contents: { int_contents: values },
});
const predict = (model: string) => ({ model, inputs: [int32("INPUT0", [1, 2]), int32("INPUT1", [10, 20])] });

interface Predicted {
  model: string;
  outputs: { name: string; contents?: { int_contents: number[] } }[];
}

describe.each(["rest", "grpc"] as const)("breaker scope over %s (issue 17, defect 9)", (protocol) => {
  async function setUp(): Promise<{ fake: TritonFake; g: Gateway }> {
    const fake = await createTritonFake();
    later(() => fake.close());
    const url = protocol === "grpc" ? `http://${fake.grpcAddress}` : fake.restUrl;
    const g = await gateway(`
upstreams:
  - name: triton
    kind: kserve
    endpoints: ["${url}"]
    options: { protocol: ${protocol} }
    resilience: { retry: { maxAttempts: 1 }, breaker: { volumeThreshold: 3, resetTimeoutMs: 60000 } }
models:
  - { name: good, upstream: triton, upstreamModel: simple, cache: { policy: "off" } }
  - { name: broken, upstream: triton, upstreamModel: not_ready, cache: { policy: "off" } }
  - { name: ghost, upstream: triton, upstreamModel: not_on_this_server, cache: { policy: "off" } }
`);
    return { fake, g };
  }

  const infers = (fake: TritonFake, model: string) => fake.requests.filter((r) => r.method === "ModelInfer" && r.model === model).length;

  async function served(g: Gateway): Promise<void> {
    const res = await g.client.unary<Predicted>("Predict", predict("good"));
    expect(res.model).toBe("good");
    expect(res.outputs.find((o) => o.name === "OUTPUT0")).toBeDefined();
  }

  it("a model that is not ready opens its own breaker; the other model on the server keeps being served", async () => {
    const { fake, g } = await setUp();
    await served(g);
    for (let i = 0; i < 3; i++) {
      const err = await failure(g.client.unary("Predict", predict("broken")));
      expect([err.code, err.reason]).toEqual([status.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"]);
      // Interleaved with the failures, and after them: the good model is served.
      await served(g);
    }
    expect(await breakers(g)).toEqual({
      good: ["BREAKER_STATE_CLOSED"],
      broken: ["BREAKER_STATE_OPEN"],
      ghost: ["BREAKER_STATE_CLOSED"],
    });
    // The broken model fails fast now, without reaching the server; the good one is still served.
    const open = await failure(g.client.unary("Predict", predict("broken")));
    expect([open.code, open.reason]).toEqual([status.UNAVAILABLE, "CIRCUIT_OPEN"]);
    expect(infers(fake, "not_ready")).toBe(3);
    await served(g);
    expect(infers(fake, "simple")).toBe(5);
    const listedBroken = (await g.client.unary<ModelsList>("ListModels", {})).models.find((m) => m.name === "broken")!;
    expect(listedBroken.state).toBe("MODEL_STATE_NOT_READY");
  });

  it("a model the server does not have (NOT_FOUND) counts against that model there only", async () => {
    const { fake, g } = await setUp();
    for (let i = 0; i < 3; i++) {
      const err = await failure(g.client.unary("Predict", predict("ghost")));
      expect([err.code, err.reason]).toEqual([status.NOT_FOUND, "MODEL_NOT_FOUND"]);
    }
    const open = await failure(g.client.unary("Predict", predict("ghost")));
    expect([open.code, open.reason]).toEqual([status.UNAVAILABLE, "CIRCUIT_OPEN"]);
    expect(infers(fake, "not_on_this_server")).toBe(3);
    await served(g);
    expect((await breakers(g))["good"]).toEqual(["BREAKER_STATE_CLOSED"]);
  });

  it("connections refused (nothing back from the server) open the server's breaker, for every model", async () => {
    const { fake, g } = await setUp();
    await fake.close();
    for (let i = 0; i < 3; i++) {
      const err = await failure(g.client.unary("Predict", predict("good")));
      expect([err.code, err.reason]).toEqual([status.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"]);
    }
    expect(await breakers(g)).toEqual({
      good: ["BREAKER_STATE_OPEN"],
      broken: ["BREAKER_STATE_OPEN"],
      ghost: ["BREAKER_STATE_OPEN"],
    });
    const other = await failure(g.client.unary("Predict", predict("broken")));
    expect([other.code, other.reason]).toEqual([status.UNAVAILABLE, "CIRCUIT_OPEN"]);
  });
});
