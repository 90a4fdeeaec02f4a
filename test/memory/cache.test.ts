import { clone, create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport, type Client } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { CachePolicy, Role } from "../../gen/infergate/v1/chat_pb.js";
import { ChatRequestSchema, ChatResponseSchema, type GenerateResponse, GenerateResponseSchema, InferenceService } from "../../gen/infergate/v1/inference_service_pb.js";
import { DataType } from "../../gen/infergate/v1/tensor_pb.js";
import { parseConfig } from "../../src/config/load-config.js";
import { FLIGHT_GRACE_MS, ResponseCache } from "../../src/cache/response-cache.js";
import { createGateway, type Gateway } from "../../src/gateway/gateway.js";
import { createRouter } from "../../src/gateway/router.js";
import { inferenceRoutes } from "../../src/server/connect-routes.js";
import { createMockUpstream, mockOptionsSchema } from "../../src/upstreams/mock/mock-upstream.js";
import type { Upstream } from "../../src/core/upstream.js";

/** The mock upstream, counting the calls that reach it and the ones aborted. */
function counting(inner: Upstream) {
  const counts = { chat: 0, generate: 0, predict: 0, aborted: 0 };
  const watch = (signal: AbortSignal) => signal.addEventListener("abort", () => counts.aborted++, { once: true });
  const upstream: Upstream = {
    name: inner.name,
    kind: inner.kind,
    chat: (call) => {
      counts.chat++;
      watch(call.signal);
      return inner.chat!(call);
    },
    generate: (call) => {
      counts.generate++;
      watch(call.signal);
      return inner.generate!(call);
    },
    predict: (call) => {
      counts.predict++;
      watch(call.signal);
      return inner.predict!(call);
    },
    close: () => inner.close(),
  };
  return { upstream, counts };
}

function setup(version = "1", extraModel = ""): { client: Client<typeof InferenceService>; gateway: Gateway; cache: ResponseCache; counts: ReturnType<typeof counting>["counts"] } {
  const config = parseConfig(
    `upstreams: [{name: mock, kind: mock}]
models:
  - {name: chat, upstream: mock, version: "${version}", capabilities: [chat, generate]}
  - {name: predict, upstream: mock, capabilities: [predict]}
  - {name: always, upstream: mock, capabilities: [chat, generate], cache: {policy: always}}
  - {name: off, upstream: mock, capabilities: [predict], cache: {policy: "off"}}
${extraModel}`,
    "t",
    {},
  );
  const { upstream, counts } = counting(createMockUpstream({ name: "mock" }, mockOptionsSchema.parse({})));
  const cache = new ResponseCache(config.cache, 60_000);
  const gateway = createGateway(createRouter(config, new Map([["mock", upstream]])), { cache });
  const client = createClient(InferenceService, createRouterTransport(inferenceRoutes(gateway, 60_000)));
  return { client, gateway, cache, counts };
}

const msg = (text: string) => [{ role: Role.USER, content: [{ part: { case: "text" as const, value: text } }] }];
const predictReq = {
  model: "predict",
  inputs: [
    { name: "a", datatype: DataType.INT32, shape: [2n], data: { case: "contents" as const, value: { intContents: [1, 2] } } },
    { name: "b", datatype: DataType.INT32, shape: [2n], data: { case: "contents" as const, value: { intContents: [3, 4] } } },
  ],
};

async function collect(it: AsyncIterable<GenerateResponse>): Promise<GenerateResponse[]> {
  const out: GenerateResponse[] = [];
  for await (const e of it) out.push(e);
  return out;
}

function header(): { onHeader: (h: Headers) => void; value: () => string | null } {
  let v: string | null = null;
  return { onHeader: (h) => (v = h.get("infergate-cache")), value: () => v };
}

describe("cache policies", () => {
  it("Predict is cached by default: miss, then hit with cached=true and the caller's own id", async () => {
    const { client, counts } = setup();
    const h1 = header();
    const a = await client.predict({ ...predictReq, id: "one" }, { onHeader: h1.onHeader });
    const h2 = header();
    const b = await client.predict({ ...predictReq, id: "two" }, { onHeader: h2.onHeader });
    expect([h1.value(), h2.value()]).toEqual(["miss", "hit"]);
    expect([a.cached, b.cached]).toEqual([false, true]);
    expect([a.id, b.id]).toEqual(["one", "two"]);
    expect(b.outputs).toEqual(a.outputs);
    expect(counts.predict).toBe(1);
  });

  it("Chat is cached only when temperature is explicitly 0 or a seed is set (deterministic)", async () => {
    const { client, counts } = setup();
    await client.chat({ model: "chat", messages: msg("x") });
    await client.chat({ model: "chat", messages: msg("x") });
    expect(counts.chat).toBe(2);
    const h = header();
    await client.chat({ model: "chat", messages: msg("x"), temperature: 0 });
    await client.chat({ model: "chat", messages: msg("x"), temperature: 0 }, { onHeader: h.onHeader });
    expect(h.value()).toBe("hit");
    await client.chat({ model: "chat", messages: msg("x"), seed: 7n });
    await client.chat({ model: "chat", messages: msg("x"), seed: 7n });
    expect(counts.chat).toBe(4);
    await client.chat({ model: "always", messages: msg("x") });
    await client.chat({ model: "always", messages: msg("x") });
    expect(counts.chat).toBe(5);
  });

  it("policy off and per-request bypass neither read nor write; refresh skips the read and writes", async () => {
    const { client, counts } = setup();
    await client.predict({ ...predictReq, model: "off" });
    await client.predict({ ...predictReq, model: "off" });
    expect(counts.predict).toBe(2);
    const h = header();
    await client.predict({ ...predictReq, cachePolicy: CachePolicy.BYPASS }, { onHeader: h.onHeader });
    expect(h.value()).toBe("bypass");
    await client.predict(predictReq); // miss, stored
    expect(counts.predict).toBe(4);
    await client.predict({ ...predictReq, cachePolicy: CachePolicy.REFRESH }); // skips the read
    expect(counts.predict).toBe(5);
    await client.predict(predictReq); // hit
    expect(counts.predict).toBe(5);
  });

  it("a new model version makes old entries unreachable at once", async () => {
    const first = setup("1");
    await first.client.chat({ model: "chat", messages: msg("v"), temperature: 0 });
    // Same store, new config: build a second gateway on the first one's cache with version 2.
    const config2 = parseConfig(`upstreams: [{name: mock, kind: mock}]\nmodels: [{name: chat, upstream: mock, version: "2"}]`, "t", {});
    const { upstream, counts } = counting(createMockUpstream({ name: "mock" }, mockOptionsSchema.parse({})));
    const g2 = createGateway(createRouter(config2, new Map([["mock", upstream]])), { cache: first.cache });
    const c2 = createClient(InferenceService, createRouterTransport(inferenceRoutes(g2, 60_000)));
    const h = header();
    const r = await c2.chat({ model: "chat", messages: msg("v"), temperature: 0 }, { onHeader: h.onHeader });
    expect(h.value()).toBe("miss");
    expect(r.modelVersion).toBe("2");
    expect(counts.chat).toBe(1);
  });

  it("never stores errors, truncated streams or cancelled streams", async () => {
    const { client, counts, cache } = setup();
    const fail = { model: "always", messages: msg("e"), metadata: { "mock.fail_code": "UNAVAILABLE" } };
    for (let i = 0; i < 2; i++) {
      await expect(client.chat(fail)).rejects.toThrow();
    }
    expect(counts.chat).toBe(2);
    const cut = { model: "always", messages: msg("a b c d"), metadata: { "mock.cut_after_tokens": "2" } };
    for (let i = 0; i < 2; i++) {
      await expect(collect(client.generate(cut))).rejects.toThrow();
    }
    expect(counts.generate).toBe(2);
    const controller = new AbortController();
    const slow = { model: "always", messages: msg("a b c d e f"), metadata: { "mock.token_delay_ms": "20" } };
    await expect(
      (async () => {
        for await (const _ of client.generate(slow, { signal: controller.signal })) controller.abort();
      })(),
    ).rejects.toThrow();
    await collect(client.generate(slow));
    expect(counts.generate).toBe(4);
    expect(cache.stats.stores).toBe(1);
  });
});

describe("Chat hits", () => {
  it("share one frozen answer per entry: the same content for every hit, which no caller can change", async () => {
    const config = parseConfig("models: [{ name: m, upstream: mock }]\nupstreams: [{ name: mock, kind: mock }]", "(test)", {});
    const cache = new ResponseCache(config.cache, 60_000);
    const route = { name: "m", version: "", cache: { keyMetadata: [], shared: false } };
    const caller = { signal: new AbortController().signal, deadline: Date.now() + 60_000, tenant: "" };
    const req = create(ChatRequestSchema, { model: "m", temperature: 0, messages: msg("hello") });
    const answer = create(ChatResponseSchema, { id: "a1", model: "m", upstream: "mock", message: { role: Role.ASSISTANT, content: [{ part: { case: "text", value: "hi there" } }] } });
    const first = await cache.chat(route, req, caller, async () => clone(ChatResponseSchema, answer));
    expect(first.outcome).toBe("miss");
    const a = await cache.chat(route, req, caller, () => Promise.reject(new Error("not called")));
    const b = await cache.chat(route, req, caller, () => Promise.reject(new Error("not called")));
    expect([a.outcome, b.outcome]).toEqual(["hit", "hit"]);
    expect(a.value).toBe(b.value);
    expect(a.value.cached).toBe(true);
    expect(toBinary(ChatResponseSchema, a.value)).toEqual(toBinary(ChatResponseSchema, { ...clone(ChatResponseSchema, answer), cached: true }));
    expect(() => {
      (a.value as { id: string }).id = "changed";
    }).toThrow(TypeError);
    expect(() => {
      (a.value.message!.content[0]!.part as { value: string }).value = "changed";
    }).toThrow(TypeError);
    const c = await cache.chat(route, req, caller, () => Promise.reject(new Error("not called")));
    expect(c.value.id).toBe("a1");
    expect(c.value.message?.content[0]?.part.value).toBe("hi there");
  });
});

describe("stream replay", () => {
  it("a hit replays the same events and usage, with the final marked cached", async () => {
    const { client, counts } = setup();
    const req = { model: "always", messages: msg("replay me now") };
    const first = await collect(client.generate(req));
    const h = header();
    const second = await collect(client.generate(req, { onHeader: h.onHeader }));
    expect(h.value()).toBe("hit");
    expect(counts.generate).toBe(1);
    const strip = (events: GenerateResponse[]) =>
      events.map((e) => {
        const c = clone(GenerateResponseSchema, e);
        if (c.event.case === "final") c.event.value.cached = false;
        return toBinary(GenerateResponseSchema, c);
      });
    expect(strip(second)).toEqual(strip(first));
    expect(second.at(-1)?.event.value).toMatchObject({ cached: true });
    expect(first.at(-1)?.event.value).toMatchObject({ cached: false });
  });
});

describe("coalescing", () => {
  it("100 concurrent identical Chat calls make exactly one upstream call", async () => {
    const { client, counts, cache } = setup();
    const req = { model: "always", messages: msg("same"), metadata: { "mock.token_delay_ms": "5" } };
    // The mock's Chat does not wait per token: make the upstream slow enough to overlap.
    const results = await Promise.all(Array.from({ length: 100 }, () => client.chat({ ...req, model: "always" })));
    expect(new Set(results.map((r) => r.message?.content[0]?.part.value))).toEqual(new Set(["You said: same"]));
    expect(counts.chat).toBe(1);
    expect(cache.stats.misses + cache.stats.coalesced + cache.stats.hits).toBe(100);
    expect(cache.stats.misses).toBe(1);
  });

  it("50 concurrent identical Generate calls joining at different moments each get the complete, identical stream", async () => {
    const { client, counts, cache } = setup();
    const req = { model: "always", messages: msg("one two three four five six seven eight"), metadata: { "mock.token_delay_ms": "10" } };
    const runs: Promise<GenerateResponse[]>[] = [];
    for (let i = 0; i < 50; i++) {
      runs.push(collect(client.generate(req)));
      if (i % 10 === 9) await new Promise((r) => setTimeout(r, 15));
    }
    const all = await Promise.all(runs);
    expect(counts.generate).toBe(1);
    const bytes = all.map((events) => events.map((e) => Buffer.from(toBinary(GenerateResponseSchema, e)).toString("hex")).join());
    expect(new Set(bytes).size).toBe(1);
    expect(all[0]!.length).toBe(11);
    expect(cache.stats.coalesced).toBe(49);
  });

  it("one waiter's cancel does not affect the others; when the last leaves, the upstream call is aborted", async () => {
    const { client, counts, cache } = setup();
    const req = { model: "always", messages: msg("a b c d e f g h"), metadata: { "mock.token_delay_ms": "20" } };
    const leaving = new AbortController();
    const staying = collect(client.generate(req));
    const left = (async () => {
      let n = 0;
      for await (const _ of client.generate(req, { signal: leaving.signal })) {
        if (++n === 2) leaving.abort();
      }
    })();
    await expect(left).rejects.toSatisfy((e: unknown) => ConnectError.from(e).code === Code.Canceled);
    const events = await staying;
    expect(events.at(-1)?.event.case).toBe("final");
    expect(counts.generate).toBe(1);
    expect(counts.aborted).toBe(0);

    // Now every waiter leaves: the shared upstream call is aborted.
    const a = new AbortController();
    const b = new AbortController();
    const other = { ...req, messages: msg("x y z w v u t s") };
    const runA = collect(client.generate(other, { signal: a.signal })).catch(() => "cancelled");
    const runB = collect(client.generate(other, { signal: b.signal })).catch(() => "cancelled");
    await new Promise((r) => setTimeout(r, 50));
    a.abort();
    b.abort();
    expect(await runA).toBe("cancelled");
    expect(await runB).toBe("cancelled");
    await new Promise((r) => setTimeout(r, 10));
    expect(counts.aborted).toBe(1);
    expect(cache.flights.size).toBe(0);
    expect(cache.stats.stores).toBe(1);
  });

  it("a failure reaches every waiter and is not cached", async () => {
    const { client, counts, cache } = setup();
    const req = { model: "always", messages: msg("a b c d e"), metadata: { "mock.token_delay_ms": "10", "mock.cut_after_tokens": "3" } };
    const results = await Promise.all(
      Array.from({ length: 10 }, () => collect(client.generate(req)).then(() => "ok", (e: unknown) => ConnectError.from(e).code)),
    );
    expect(results).toEqual(Array(10).fill(Code.Unavailable));
    expect(counts.generate).toBe(1);
    expect(cache.stats.stores).toBe(0);
    await collect(client.generate(req)).catch(() => undefined);
    expect(counts.generate).toBe(2);
  });

  it("a shared call outlives every waiter's deadline, so a waiter that runs out answers with its own reason", async () => {
    const config = parseConfig(`upstreams: [{name: mock, kind: mock}]\nmodels: [{name: chat, upstream: mock}]`, "t", {});
    const cache = new ResponseCache(config.cache, 300);
    const route = { name: "chat", version: "", cache: config.models[0]!.cache };
    const req = create(ChatRequestSchema, { model: "chat", messages: msg("slow"), temperature: 0 });
    const ownReason = new Error("the waiter's own deadline");
    // The waiter's deadline is the longest one allowed (the flight timeout), as for a call whose
    // timeout was clamped to server.maxTimeoutMs; its signal aborts at that deadline.
    const waiter = new AbortController();
    const deadline = Date.now() + 300;
    setTimeout(() => waiter.abort(ownReason), 300);
    let runDeadline = 0;
    const outcome = await cache
      .chat(route, req, { signal: waiter.signal, deadline, tenant: "" }, (run) => {
        runDeadline = run.deadline;
        // An upstream that answers nothing and gives up at the run's deadline, as the HTTP and
        // gRPC upstreams do.
        return new Promise((_, reject) => {
          const t = setTimeout(() => reject(new Error("the shared call's timeout")), Math.max(0, run.deadline - Date.now()));
          run.signal.addEventListener("abort", () => (clearTimeout(t), reject(run.signal.reason)), { once: true });
        });
      })
      .then(() => undefined, (e: unknown) => e);
    expect(outcome).toBe(ownReason);
    expect(runDeadline - deadline).toBeGreaterThanOrEqual(FLIGHT_GRACE_MS - 5);
    expect(cache.flights.size).toBe(0);
  });
});
