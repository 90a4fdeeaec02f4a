import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { CachePolicy, Role, ToolChoiceMode } from "../../gen/infergate/v1/chat_pb.js";
import { ChatRequestSchema, GenerateRequestSchema, PredictRequestSchema } from "../../gen/infergate/v1/inference_service_pb.js";
import { DataType } from "../../gen/infergate/v1/tensor_pb.js";
import { chatCacheKey, type KeyScope, predictCacheKey } from "../../src/cache/cache-key.js";
import { decodeKeyedRequest, rememberReceivedBytes } from "../../src/wire/fast-paths.js";
import { storedSize, ResponseStore } from "../../src/cache/response-store.js";
import { createCacheStats } from "../../src/cache/cache-stats.js";

const scope: KeyScope = { rpc: "chat", model: "m", version: "1", tenant: "", keyMetadata: [] };
/** `scope` and one change of each of its parts (keyed metadata: `team`). */
const scopeVariants: readonly KeyScope[] = [
  scope,
  { ...scope, version: "2" },
  { ...scope, model: "n" },
  { ...scope, tenant: "t" },
  { ...scope, rpc: "generate" },
  { ...scope, keyMetadata: ["team"] },
];

/** A JSON value for Struct fields, built so that objects can be filled in any key order. */
const jsonValue = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: "small" },
    fc.string(),
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.boolean(),
    fc.constant(null),
    fc.array(tie("value"), { maxLength: 3 }),
    fc.dictionary(fc.string({ maxLength: 5 }), tie("value"), { maxKeys: 4 }),
  ),
})).value;

/** The same plain object with its keys inserted in another order, recursively. */
function reorder(v: unknown, seed: number): unknown {
  if (Array.isArray(v)) return v.map((x) => reorder(x, seed));
  if (v !== null && typeof v === "object") {
    const keys = Object.keys(v);
    const shuffled = seed % 2 === 0 ? keys.reverse() : [...keys.slice(1), ...keys.slice(0, 1)];
    const out: Record<string, unknown> = {};
    for (const k of shuffled) out[k] = reorder((v as Record<string, unknown>)[k], seed + 1);
    return out;
  }
  return v;
}

const chatArb = fc.record({
  text: fc.string(),
  image: fc.uint8Array({ maxLength: 16 }),
  temperature: fc.option(fc.double({ min: 0, max: 2, noNaN: true }), { nil: undefined }),
  seed: fc.option(fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }), { nil: undefined }),
  maxTokens: fc.option(fc.integer({ min: 1, max: 100000 }), { nil: undefined }),
  stop: fc.array(fc.string({ minLength: 1 }), { maxLength: 4 }),
  params: fc.dictionary(fc.string({ maxLength: 6 }), jsonValue, { maxKeys: 5 }),
  metadata: fc.dictionary(fc.string({ maxLength: 6 }), fc.string(), { maxKeys: 4 }),
});

type ChatInit = {
  text: string;
  image: Uint8Array;
  temperature: number | undefined;
  seed: bigint | undefined;
  maxTokens: number | undefined;
  stop: string[];
  params: Record<string, unknown>;
  metadata: Record<string, string>;
};

function chat(a: ChatInit, order = 0) {
  return create(ChatRequestSchema, {
    model: "m",
    messages: [
      {
        role: Role.USER,
        content: [
          { part: { case: "text", value: a.text } },
          { part: { case: "imageData", value: { data: a.image, mimeType: "image/png" } } },
        ],
      },
    ],
    tools: [{ name: "f", parameters: reorder(a.params, order) as never }],
    temperature: a.temperature,
    seed: a.seed,
    maxTokens: a.maxTokens,
    stop: a.stop,
    metadata: reorder(a.metadata, order) as Record<string, string>,
  });
}

describe("cache key", () => {
  it("is the same for the same request whatever order its maps were built in", () => {
    fc.assert(
      fc.property(chatArb, fc.nat(10), (a, order) => {
        expect(chatCacheKey(chat(a, order), scope)).toBe(chatCacheKey(chat(a), scope));
      }),
    );
  });

  it("is the same for a Generate request with the same fields as a Chat request", () => {
    fc.assert(
      fc.property(chatArb, (a) => {
        const c = chat(a);
        const g = create(GenerateRequestSchema, { ...c, $typeName: undefined } as never);
        expect(chatCacheKey(g, scope)).toBe(chatCacheKey(c, scope));
      }),
    );
  });

  it("changes with any single semantic change", () => {
    const mutations: [string, (a: ChatInit) => ChatInit][] = [
      ["text", (a) => ({ ...a, text: `${a.text}x` })],
      ["image byte", (a) => ({ ...a, image: new Uint8Array([...a.image, 1]) })],
      ["temperature", (a) => ({ ...a, temperature: a.temperature === undefined ? 0 : a.temperature + 0.5 })],
      ["seed", (a) => ({ ...a, seed: a.seed === undefined ? 0n : a.seed ^ 1n })],
      ["max_tokens", (a) => ({ ...a, maxTokens: a.maxTokens === undefined ? 0 : a.maxTokens + 1 })],
      ["stop", (a) => ({ ...a, stop: [...a.stop, "zz"] })],
      ["tool schema", (a) => ({ ...a, params: { ...a.params, __added: 1 } })],
    ];
    fc.assert(
      fc.property(chatArb, fc.constantFrom(...mutations), (a, [, mutate]) => {
        expect(chatCacheKey(chat(mutate(a)), scope)).not.toBe(chatCacheKey(chat(a), scope));
      }),
    );
  });

  it("keeps unset apart from zero", () => {
    const base = create(ChatRequestSchema, { model: "m", messages: [{ role: Role.USER, content: [{ part: { case: "text", value: "x" } }] }] });
    const zeroes = [{ temperature: 0 }, { topP: 0 }, { seed: 0n }, { presencePenalty: 0 }, { frequencyPenalty: 0 }, { parallelToolCalls: false }];
    const keys = new Set([chatCacheKey(base, scope), ...zeroes.map((z) => chatCacheKey(create(ChatRequestSchema, { ...base, ...z }), scope))]);
    expect(keys.size).toBe(zeroes.length + 1);
  });

  it("ignores non-semantic fields, includes model version, tenant and keyed metadata", () => {
    const init = { model: "m", messages: [{ role: Role.USER, content: [{ part: { case: "text" as const, value: "x" } }] }], temperature: 0 };
    const a = create(ChatRequestSchema, init);
    const k = chatCacheKey(a, scope);
    expect(chatCacheKey(create(ChatRequestSchema, { ...init, cachePolicy: CachePolicy.REFRESH, metadata: { trace: "1" }, sessionId: "s" }), scope)).toBe(k);
    expect(chatCacheKey(a, { ...scope, version: "2" })).not.toBe(k);
    expect(chatCacheKey(a, { ...scope, model: "other" })).not.toBe(k);
    expect(chatCacheKey(a, { ...scope, tenant: "acme" })).not.toBe(k);
    expect(chatCacheKey(a, { ...scope, rpc: "generate" })).not.toBe(k);
    const keyed = { ...scope, keyMetadata: ["locale"] };
    const de = create(ChatRequestSchema, { ...init, metadata: { locale: "de" } });
    const fr = create(ChatRequestSchema, { ...init, metadata: { locale: "fr" } });
    expect(chatCacheKey(de, keyed)).not.toBe(chatCacheKey(fr, keyed));
    expect(chatCacheKey(de, keyed)).not.toBe(chatCacheKey(a, keyed));
    const withTools = { ...init, tools: [{ name: "f" }] };
    const forced = create(ChatRequestSchema, { ...withTools, toolChoice: { choice: { case: "mode", value: ToolChoiceMode.REQUIRED } } });
    expect(chatCacheKey(forced, scope)).not.toBe(chatCacheKey(create(ChatRequestSchema, withTools), scope));
  });

  it("covers tensors: datatype, shape, contents, outputs and parameters, but not the id", () => {
    const input = { name: "x", datatype: DataType.FP32, shape: [2n], data: { case: "contents" as const, value: { fp32Contents: [1, 2] } } };
    const a = { value: { case: "int64Param" as const, value: 1n } };
    const b = { value: { case: "stringParam" as const, value: "s" } };
    const init = { model: "m", id: "a", inputs: [input], parameters: { a, b } };
    const s = { ...scope, rpc: "predict" as const };
    const k = predictCacheKey(create(PredictRequestSchema, init), s);
    expect(predictCacheKey(create(PredictRequestSchema, { ...init, id: "b", metadata: { x: "y" } }), s)).toBe(k);
    expect(predictCacheKey(create(PredictRequestSchema, { ...init, parameters: { b, a } }), s)).toBe(k);
    const variants = [
      { ...init, inputs: [{ ...input, datatype: DataType.FP64 }] },
      { ...init, inputs: [{ ...input, shape: [1n, 2n] }] },
      { ...init, inputs: [{ ...input, data: { case: "contents" as const, value: { fp32Contents: [1, 3] } } }] },
      { ...init, inputs: [{ ...input, data: { case: "rawContents" as const, value: new Uint8Array(8) } }] },
      { ...init, outputs: [{ name: "OUTPUT0" }] },
      { ...init, parameters: { a } },
      { ...init, modelVersion: "2" },
    ];
    for (const v of variants) {
      expect(predictCacheKey(create(PredictRequestSchema, v), s)).not.toBe(k);
    }
  });
});

describe("cache key of a request received as bytes (the gRPC listener's)", () => {
  /** The request decoded from `bytes`, with the digest of those bytes remembered. */
  const received = (bytes: Uint8Array) => {
    const m = fromBinary(ChatRequestSchema, bytes);
    rememberReceivedBytes(m, bytes);
    return m;
  };

  it("is the canonical key, also for bytes in another field order and for the second time they come", () => {
    fc.assert(
      fc.property(chatArb, (a) => {
        const req = chat(a);
        const canonical = chatCacheKey(req, scope);
        // The same request, encoded with its messages after its scalar fields and before them:
        // different bytes, one request.
        const { messages, ...rest } = req;
        const tail = toBinary(ChatRequestSchema, create(ChatRequestSchema, { messages }));
        const head = toBinary(ChatRequestSchema, create(ChatRequestSchema, { ...rest, messages: [] }));
        const forward = new Uint8Array([...head, ...tail]);
        const backward = new Uint8Array([...tail, ...head]);
        for (const bytes of [forward, backward, forward, backward]) {
          expect(chatCacheKey(received(bytes), scope)).toBe(canonical);
        }
      }),
      { numRuns: 50 },
    );
  });

  it("changes with the scope for the same bytes: version, model, tenant, rpc, keyed metadata", () => {
    const bytes = toBinary(ChatRequestSchema, create(ChatRequestSchema, { model: "m", temperature: 0, metadata: { team: "a" } }));
    const scopes = scopeVariants;
    const keys = scopes.map((s) => chatCacheKey(received(bytes), s));
    expect(new Set(keys).size).toBe(scopes.length);
    scopes.forEach((s, i) => expect(keys[i]).toBe(chatCacheKey(fromBinary(ChatRequestSchema, bytes), s)));
  });

  it("changes with the bytes' meaning: one field of a request seen before", () => {
    const one = toBinary(ChatRequestSchema, create(ChatRequestSchema, { model: "m", temperature: 0, messages: [{ role: Role.USER, content: [{ part: { case: "text", value: "hi" } }] }] }));
    const other = toBinary(ChatRequestSchema, create(ChatRequestSchema, { model: "m", temperature: 0, messages: [{ role: Role.USER, content: [{ part: { case: "text", value: "ho" } }] }] }));
    const k1 = chatCacheKey(received(one), scope);
    expect(chatCacheKey(received(other), scope)).not.toBe(k1);
    expect(chatCacheKey(received(one), scope)).toBe(k1);
  });
});

describe("requests decoded by the gRPC listener (decodeKeyedRequest)", () => {
  const image = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0, 1, 2, 3]);
  const small = (text: string) =>
    Buffer.from(
      toBinary(
        ChatRequestSchema,
        create(ChatRequestSchema, {
          model: "m",
          temperature: 0,
          metadata: { team: "a" },
          messages: [{ role: Role.USER, content: [{ part: { case: "text", value: text } }, { part: { case: "imageData", value: { data: image, mimeType: "image/png" } } }] }],
        }),
      ),
    );

  it("decodes what fromBinary decodes, with the key of the canonical form", () => {
    const bytes = small("decodes");
    const m = decodeKeyedRequest(ChatRequestSchema, bytes) as ReturnType<typeof fromBinary<typeof ChatRequestSchema>>;
    const plain = fromBinary(ChatRequestSchema, bytes);
    expect(m).toEqual(plain);
    expect(chatCacheKey(m, scope)).toBe(chatCacheKey(plain, scope));
  });

  it("gives the same frozen message for the same small body, and another for other bytes", () => {
    const a = decodeKeyedRequest(ChatRequestSchema, small("same"));
    // A copy of the bytes in another buffer: the bytes decide, not the buffer.
    const again = decodeKeyedRequest(ChatRequestSchema, Buffer.from(small("same")));
    expect(again).toBe(a);
    expect(decodeKeyedRequest(ChatRequestSchema, small("other"))).not.toBe(a);
    // The same bytes read as another message type are another message.
    expect(decodeKeyedRequest(GenerateRequestSchema, small("same"))).not.toBe(a);
  });

  it("freezes the shared message all the way down, so that no call can change another's request", () => {
    // The body as a slice of a larger buffer, as a receive buffer often is.
    const body = small("frozen");
    const slab = Buffer.alloc(8192);
    body.copy(slab, 100);
    const m = decodeKeyedRequest(ChatRequestSchema, slab.subarray(100, 100 + body.length)) as ReturnType<typeof fromBinary<typeof ChatRequestSchema>>;
    expect(Object.isFrozen(m)).toBe(true);
    expect(Object.isFrozen(m.messages)).toBe(true);
    expect(Object.isFrozen(m.messages[0]!.content[0]!.part)).toBe(true);
    expect(Object.isFrozen(m.metadata)).toBe(true);
    expect(() => {
      (m as { model: string }).model = "x";
    }).toThrow(TypeError);
    expect(() => {
      m.messages.push(create(ChatRequestSchema).messages[0]!);
    }).toThrow(TypeError);
    const part = m.messages[0]!.content[1]!.part;
    // Byte arrays cannot be frozen: they are left as they are (nothing writes into them).
    expect(part.case === "imageData" && [...part.value.data]).toEqual([...image]);
    expect(Object.isFrozen(part.value)).toBe(true);
    // The kept message holds a copy of the body, not a view of the slab it arrived in.
    expect(part.case === "imageData" && part.value.data.buffer).not.toBe(slab.buffer);
    expect(part.case === "imageData" && part.value.data.buffer.byteLength).toBe(body.length);
  });

  it("gives a shared request the canonical key of each scope it is asked in, in any order", () => {
    const m = decodeKeyedRequest(ChatRequestSchema, small("scopes")) as ReturnType<typeof fromBinary<typeof ChatRequestSchema>>;
    const plain = fromBinary(ChatRequestSchema, small("scopes"));
    // The same scope again, and an equal one in another object, after the others.
    const scopes: KeyScope[] = [...scopeVariants, scope, { ...scope }];
    for (const s of [...scopes, ...scopes.reverse()]) {
      expect(chatCacheKey(m, s)).toBe(chatCacheKey(plain, s));
    }
    expect(new Set(scopes.map((s) => chatCacheKey(m, s))).size).toBe(6);
  });

  it("decodes a large body each time, unfrozen, with its digest remembered", () => {
    const big = small("x".repeat(2000));
    const a = decodeKeyedRequest(ChatRequestSchema, big) as ReturnType<typeof fromBinary<typeof ChatRequestSchema>>;
    const b = decodeKeyedRequest(ChatRequestSchema, big) as ReturnType<typeof fromBinary<typeof ChatRequestSchema>>;
    expect(b).not.toBe(a);
    expect(Object.isFrozen(a)).toBe(false);
    expect(chatCacheKey(a, scope)).toBe(chatCacheKey(fromBinary(ChatRequestSchema, big), scope));
    expect(chatCacheKey(b, scope)).toBe(chatCacheKey(a, scope));
  });

  it("stays bounded: after more distinct bodies than it keeps, the first one decodes anew", () => {
    const first = decodeKeyedRequest(ChatRequestSchema, small("bounded-0"));
    for (let i = 1; i <= 1100; i++) decodeKeyedRequest(ChatRequestSchema, small(`bounded-${i}`));
    const again = decodeKeyedRequest(ChatRequestSchema, small("bounded-0"));
    expect(again).not.toBe(first);
    expect(again).toEqual(first);
  });
});

describe("response store", () => {
  it("holds its byte bound under random large entries and counts evictions", () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 5000 }), { minLength: 1, maxLength: 60 }), (sizes) => {
        const stats = createCacheStats();
        const store = new ResponseStore({ maxBytes: 20_000, maxEntries: 1000, maxEntryBytes: 4096 }, stats);
        sizes.forEach((n, i) => store.set(`k${i}`, { kind: "message", bytes: new Uint8Array(n) }, 60_000));
        expect(stats.bytes).toBeLessThanOrEqual(20_000);
        const stored = sizes.filter((n) => storedSize({ kind: "message", bytes: new Uint8Array(n) }) <= 4096).length;
        expect(stats.entries + stats.evictions).toBe(stored);
      }),
    );
  });

  it("expires entries after their TTL (fake clock)", () => {
    let now = 1_000_000;
    const store = new ResponseStore({ maxBytes: 1 << 20, maxEntries: 10, maxEntryBytes: 1 << 20, now: () => now }, createCacheStats());
    store.set("a", { kind: "message", bytes: new Uint8Array(3) }, 1000);
    now += 999;
    expect(store.get("a")).toBeDefined();
    now += 2;
    expect(store.get("a")).toBeUndefined();
  });

  it("bounds the number of entries", () => {
    const stats = createCacheStats();
    const store = new ResponseStore({ maxBytes: 1 << 20, maxEntries: 3, maxEntryBytes: 1 << 20 }, stats);
    for (let i = 0; i < 5; i++) store.set(`k${i}`, { kind: "message", bytes: new Uint8Array(1) }, 60_000);
    expect(stats.entries).toBe(3);
    expect(store.get("k0")).toBeUndefined();
    expect(store.get("k4")).toBeDefined();
  });
});
