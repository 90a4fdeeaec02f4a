/**
 * The Embed cache input by input (src/cache/embedding-cache.ts through ResponseCache.embed): what
 * each call sends upstream when others fetch some of its inputs, who waits for whom, what a
 * caller's leaving does to a shared upstream request, and the keys.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { CachePolicy } from "../../gen/infergate/v1/chat_pb.js";
import { type EmbedRequest, EmbedRequestSchema, type EmbedResponse, EmbedResponseSchema } from "../../gen/infergate/v1/inference_service_pb.js";
import { inputKeys } from "../../src/cache/embedding-cache.js";
import type { KeyScope } from "../../src/cache/cache-key.js";
import { type CacheRoute, ResponseCache } from "../../src/cache/response-cache.js";
import { parseConfig } from "../../src/config/load-config.js";

const parsed = parseConfig("upstreams: [{ name: mock, kind: mock }]\nmodels: [{ name: e, upstream: mock, capabilities: [embed] }]\n", "(test)", {});
const route: CacheRoute = { name: "e", version: "1", cache: parsed.models[0]!.cache };

/** A vector that names its text: its one FP32 value is the text's first char code. */
const vectorOf = (text: string) => new Uint8Array(Float32Array.of(text.charCodeAt(0)).buffer);

/** An upstream whose answers the test releases, recording what each request sent. */
function upstream() {
  const sent: { texts: string[]; signal: AbortSignal; release: () => void; fail: (err: unknown) => void }[] = [];
  const send = (req: EmbedRequest, run: { signal: AbortSignal }) =>
    new Promise<EmbedResponse>((resolve, reject) => {
      sent.push({
        texts: [...req.texts],
        signal: run.signal,
        release: () =>
          resolve(
            create(EmbedResponseSchema, {
              embeddings: req.texts.map((t, index) => ({ index, fp32: vectorOf(t) })),
              dimensions: 1,
              usage: { promptTokens: req.texts.length, totalTokens: req.texts.length },
            }),
          ),
        fail: reject,
      });
    });
  return { sent, send };
}

const caller = (controller = new AbortController()) => ({ signal: controller.signal, deadline: Date.now() + 60_000, tenant: "" });
const request = (texts: string[], init: MessageInitShape<typeof EmbedRequestSchema> = {}) => create(EmbedRequestSchema, { model: "e", texts, ...init });
const firstValues = (res: EmbedResponse) => res.embeddings.map((e) => new Float32Array(e.fp32.slice().buffer)[0]);
const newCache = () => new ResponseCache(parsed.cache, 30_000);
/** Lets the promises that are due run (no timer). */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

describe("Embed through the cache, input by input", () => {
  it("a call sends only the inputs no one has or fetches; it waits for the others' fetches", async () => {
    const cache = newCache();
    const up = upstream();
    const a = cache.embed(route, request(["apple", "banana"]), caller(), up.send);
    await settle();
    const b = cache.embed(route, request(["banana", "cherry"]), caller(), up.send);
    await settle();
    expect(up.sent.map((s) => s.texts)).toEqual([["apple", "banana"], ["cherry"]]);
    up.sent[1]!.release();
    await settle();
    up.sent[0]!.release();
    const [ra, rb] = await Promise.all([a, b]);
    expect(ra.outcome).toBe("miss");
    expect(rb.outcome).toBe("partial");
    expect(firstValues(rb.value)).toEqual([98, 99]);
    expect(rb.value.usage?.promptTokens).toBe(1);
    expect(cache.inputFlights.size).toBe(0);

    const c = await cache.embed(route, request(["cherry", "apple"]), caller(), up.send);
    expect(c.outcome).toBe("hit");
    expect(c.value.cached).toBe(true);
    expect(c.value.usage?.promptTokens).toBe(0);
    expect(firstValues(c.value)).toEqual([99, 97]);
    expect(up.sent).toHaveLength(2);
    expect(cache.stats).toMatchObject({ hits: 2, misses: 3, coalesced: 1 });
  });

  it("a call whose inputs are all being fetched sends nothing: coalesced", async () => {
    const cache = newCache();
    const up = upstream();
    const a = cache.embed(route, request(["x", "y"]), caller(), up.send);
    await settle();
    const b = cache.embed(route, request(["y", "x", "y"]), caller(), up.send);
    await settle();
    expect(up.sent).toHaveLength(1);
    up.sent[0]!.release();
    expect((await a).outcome).toBe("miss");
    const rb = await b;
    expect(rb.outcome).toBe("coalesced");
    expect(firstValues(rb.value)).toEqual([121, 120, 121]);
  });

  it("an input repeated in one request goes upstream once, and comes back at every position", async () => {
    const cache = newCache();
    const up = upstream();
    const a = cache.embed(route, request(["dup", "one", "dup"]), caller(), up.send);
    await settle();
    expect(up.sent.map((s) => s.texts)).toEqual([["dup", "one"]]);
    up.sent[0]!.release();
    const r = await a;
    expect(firstValues(r.value)).toEqual([100, 111, 100]);
    expect(r.value.embeddings.map((e) => e.index)).toEqual([0, 1, 2]);
  });

  it("the first caller leaving does not abort the request others wait on; the last one leaving does", async () => {
    const cache = newCache();
    const up = upstream();
    const first = new AbortController();
    const a = cache.embed(route, request(["p", "q"]), caller(first), up.send);
    await settle();
    const second = new AbortController();
    const b = cache.embed(route, request(["q"]), caller(second), up.send);
    await settle();
    first.abort(new Error("first caller left"));
    await expect(a).rejects.toThrow("first caller left");
    expect(up.sent[0]!.signal.aborted).toBe(false);
    second.abort(new Error("second caller left"));
    await expect(b).rejects.toThrow("second caller left");
    expect(up.sent[0]!.signal.aborted).toBe(true);
    expect(cache.inputFlights.size).toBe(0);
  });

  it("a failed request fails every call waiting on its inputs, and nothing is stored", async () => {
    const cache = newCache();
    const up = upstream();
    const a = cache.embed(route, request(["m"]), caller(), up.send);
    await settle();
    const b = cache.embed(route, request(["m", "n"]), caller(), up.send);
    await settle();
    up.sent[1]!.release();
    up.sent[0]!.fail(new Error("upstream down"));
    await expect(a).rejects.toThrow("upstream down");
    await expect(b).rejects.toThrow("upstream down");
    const again = cache.embed(route, request(["m", "n"]), caller(), up.send);
    await settle();
    expect(up.sent[2]!.texts).toEqual(["m"]);
    up.sent[2]!.release();
    expect((await again).outcome).toBe("partial");
  });

  it("REFRESH sends every input and stores the answers; BYPASS neither reads nor stores", async () => {
    const cache = newCache();
    const up = upstream();
    const warm = cache.embed(route, request(["r"]), caller(), up.send);
    await settle();
    up.sent[0]!.release();
    await warm;
    const refresh = cache.embed(route, request(["r"], { cachePolicy: CachePolicy.REFRESH }), caller(), up.send);
    await settle();
    expect(up.sent).toHaveLength(2);
    up.sent[1]!.release();
    expect((await refresh).outcome).toBe("miss");
    const bypass = cache.embed(route, request(["s"], { cachePolicy: CachePolicy.BYPASS }), caller(), up.send);
    await settle();
    up.sent[2]!.release();
    expect((await bypass).outcome).toBe("bypass");
    const after = cache.embed(route, request(["s"]), caller(), up.send);
    await settle();
    expect(up.sent).toHaveLength(4);
    up.sent[3]!.release();
    expect((await after).outcome).toBe("miss");
  });
});

describe("input keys", () => {
  const scope: KeyScope = { rpc: "embed", model: "e", version: "1", tenant: "", keyMetadata: ["team"] };
  const key = (req: EmbedRequest, s: KeyScope = scope) => inputKeys(req, s)[0];
  const base = request(["hello"]);

  it("differ by everything that changes a vector, and only by that", () => {
    const variants = [
      key(base),
      key(base, { ...scope, version: "2" }),
      key(base, { ...scope, model: "f" }),
      key(base, { ...scope, tenant: "t" }),
      key(request(["hello"], { dimensions: 8 })),
      key(request(["hello"], { modelVersion: "3" })),
      key(request(["hello"], { metadata: { team: "a" } })),
      key(request(["hellp"])),
      key(create(EmbedRequestSchema, { model: "e", tokens: [{ ids: [104, 101, 108, 108, 111] }] })),
    ];
    expect(new Set(variants).size).toBe(variants.length);
    expect(key(request(["hello"], { encoding: 2, metadata: { other: "x" } }))).toBe(key(base));
  });

  it("of a batch are the keys of its inputs alone", () => {
    expect(inputKeys(request(["a", "b"]), scope)).toEqual([key(request(["a"])), key(request(["b"]))]);
  });
});
