/**
 * Issue 17: a seeded fuzz run against the real server (its own process, loopback ports). 3,000
 * gRPC requests (every InferenceService method) and 2,000 HTTP requests (Connect application/proto,
 * Connect streaming and gRPC-Web envelopes, Connect JSON, and the OpenAI-compatible
 * /v1/chat/completions), each random bytes or text, or a valid request mutated (cut, bytes
 * flipped, inserted or deleted, fields of a wrong wire type, bad UTF-8, deep nesting, wrong JSON
 * types). No answer may be INTERNAL, UNKNOWN, UNAVAILABLE or an HTTP 5xx; every error carries
 * ErrorInfo; valid calls keep succeeding during the run and after it; the server's RSS after the
 * run stays near where it was before. The counts by status are printed (docs/production.md).
 *
 * The inputs are drawn with fast-check from a fixed seed: every run sends the same requests.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import fc from "fast-check";
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Role } from "../../gen/infergate/v1/chat_pb.js";
import {
  ChatRequestSchema,
  DeleteSessionRequestSchema,
  GenerateRequestSchema,
  ListModelsRequestSchema,
  PredictRequestSchema,
} from "../../gen/infergate/v1/inference_service_pb.js";
import { DataType } from "../../gen/infergate/v1/tensor_pb.js";
import { envelope, type HttpKind, type InferenceMethod, rawGrpcCall, rawGrpcClient, rawHttpCall, type RawOutcome } from "../helpers/raw-calls.js";
import { type ServerProcess, startProcess } from "../helpers/servers.js";

const seed = 17_006;
const grpcRuns = 3000;
/** By kind; 2,000 in all. */
const httpRuns: Record<HttpKind, number> = { "connect-proto": 600, "connect-stream-proto": 100, "grpc-web": 100, "connect-json": 600, openai: 600 };
/** Calls in flight at once. */
const concurrency = 16;
/** A round of valid calls after every this many fuzz calls. */
const validEvery = 100;
/** How far above its baseline the server's RSS may end, after the run. */
const rssSlackBytes = 64 * 1024 * 1024;

const text = (t: string) => ({ role: Role.USER, content: [{ part: { case: "text" as const, value: t } }] });

/** Valid encodings of each method's request, the seeds of the mutations. */
const bases: Record<InferenceMethod, Uint8Array[]> = {
  Chat: [
    toBinary(ChatRequestSchema, create(ChatRequestSchema, { model: "mock-chat", messages: [text("hello there")] })),
    toBinary(
      ChatRequestSchema,
      create(ChatRequestSchema, {
        model: "mock-chat",
        messages: [text("a"), { role: Role.ASSISTANT, content: [{ part: { case: "text", value: "b" } }] }, text("c")],
        temperature: 0.5,
        maxTokens: 20,
        stop: ["x"],
        metadata: { k: "v" },
        tools: [{ name: "t", description: "d" }],
      }),
    ),
  ],
  Generate: [toBinary(GenerateRequestSchema, create(GenerateRequestSchema, { model: "mock-chat", messages: [text("stream this")] }))],
  Predict: [
    toBinary(
      PredictRequestSchema,
      create(PredictRequestSchema, {
        model: "mock-predict",
        inputs: [
          { name: "INPUT0", datatype: DataType.FP32, shape: [2n], data: { case: "contents", value: { fp32Contents: [1, 2] } } },
          { name: "INPUT1", datatype: DataType.FP32, shape: [2n], data: { case: "contents", value: { fp32Contents: [10, 20] } } },
        ],
      }),
    ),
    toBinary(
      PredictRequestSchema,
      create(PredictRequestSchema, {
        model: "mock-predict",
        inputs: [{ name: "INPUT0", datatype: DataType.INT64, shape: [1n, 3n], data: { case: "contents", value: { int64Contents: [1n, -2n, 3n] } } }],
        outputs: [{ name: "OUTPUT0" }],
      }),
    ),
  ],
  // ListModelsRequest has no fields: its empty encoding, and one with unknown fields (valid too).
  ListModels: [toBinary(ListModelsRequestSchema, create(ListModelsRequestSchema, {})), Uint8Array.from([0x08, 0x01, 0x12, 0x01, 0x61])],
  DeleteSession: [toBinary(DeleteSessionRequestSchema, create(DeleteSessionRequestSchema, { sessionId: "s-1" }))],
};

/** A varint's bytes. */
function varint(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}

const concat = (...parts: (Uint8Array | number[])[]) => Uint8Array.from(parts.flatMap((p) => [...p]));

/** Mutations of protobuf bytes: most give bytes that do not decode; some decode to odd requests. */
function protoBytes(method: InferenceMethod): fc.Arbitrary<Uint8Array> {
  const base = fc.constantFrom(...bases[method].filter((b) => b.byteLength > 0));
  const anyBytes = fc.uint8Array({ maxLength: 300 });
  return fc.oneof(
    // Random bytes.
    anyBytes,
    // A valid request cut short.
    base.chain((b) => fc.nat({ max: b.byteLength - 1 }).map((n) => b.subarray(0, n))),
    // Bytes overwritten.
    base.chain((b) =>
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }).map((edits) => {
        const out = Uint8Array.from(b);
        for (const [i, v] of edits) out[i % out.byteLength] = v;
        return out;
      }),
    ),
    // Bytes inserted or deleted.
    base.chain((b) => fc.tuple(fc.nat({ max: b.byteLength }), anyBytes).map(([i, ins]) => concat(b.subarray(0, i), ins, b.subarray(i)))),
    base.chain((b) => fc.tuple(fc.nat({ max: b.byteLength }), fc.integer({ min: 1, max: 16 })).map(([i, n]) => concat(b.subarray(0, i), b.subarray(i + n)))),
    // A field of any number and wire type (0–7) with random payload, before or after a valid request.
    fc
      .tuple(base, fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: 7 }), anyBytes, fc.boolean())
      .map(([b, field, wire, payload, after]) => (after ? concat(b, varint(field * 8 + wire), payload) : concat(varint(field * 8 + wire), payload, b))),
    // A length-delimited field whose length runs past the end, or overflows.
    fc.tuple(fc.integer({ min: 1, max: 20 }), fc.integer({ min: 1, max: 2 ** 31 }), anyBytes).map(([field, len, payload]) => concat(varint(field * 8 + 2), varint(len), payload)),
    // A string field (1: model or session id) that is not UTF-8.
    fc.uint8Array({ minLength: 1, maxLength: 40 }).map((junk) => concat([0x0a], varint(junk.byteLength + 1), [0xc3], junk)),
    // Deep nesting: start-group tags, or length-delimited field 2 inside field 2.
    fc.integer({ min: 50, max: 2000 }).map((depth) => new Uint8Array(depth).fill(0x0b)),
    fc.integer({ min: 50, max: 400 }).map((depth) => {
      let m: Uint8Array = Uint8Array.from([0x0a, 0x01, 0x61]);
      for (let i = 0; i < depth; i++) m = concat([0x12], varint(m.byteLength), m);
      return m;
    }),
  );
}

/** A valid JSON request of each kind, the seeds of the JSON mutations. */
const jsonBases: Record<"connect" | "openai", string[]> = {
  connect: [
    JSON.stringify({ model: "mock-chat", messages: [{ role: "ROLE_USER", content: [{ text: "hello there" }] }] }),
    JSON.stringify({ model: "mock-chat", messages: [{ role: "ROLE_USER", content: [{ text: "a" }] }], temperature: 0.2, maxTokens: 10, metadata: { k: "v" } }),
  ],
  openai: [
    JSON.stringify({ model: "mock-chat", messages: [{ role: "user", content: "hello there" }] }),
    JSON.stringify({ model: "mock-chat", messages: [{ role: "system", content: "s" }, { role: "user", content: [{ type: "text", text: "a" }] }], max_tokens: 5, stream: false }),
    JSON.stringify({ model: "mock-chat", messages: [{ role: "user", content: "x" }], tools: [{ type: "function", function: { name: "f", parameters: {} } }], tool_choice: "auto" }),
  ],
};

/** Keys each kind's request has, for values of a wrong type. */
const jsonKeys: Record<"connect" | "openai", string[]> = {
  connect: ["model", "messages", "tools", "temperature", "maxTokens", "seed", "stop", "metadata", "sessionId", "toolChoice", "responseFormat"],
  openai: ["model", "messages", "tools", "tool_choice", "temperature", "max_tokens", "stream", "stop", "n", "seed", "response_format", "stream_options", "user"],
};

/** Mutations of JSON text: broken syntax, wrong types, odd values, random text. */
function jsonText(kind: "connect" | "openai"): fc.Arbitrary<string> {
  const base = fc.constantFrom(...jsonBases[kind]);
  return fc.oneof(
    // Random text, and random JSON.
    fc.string({ maxLength: 200, unit: "binary" }),
    fc.json({ maxDepth: 4 }),
    // Valid text cut, or characters overwritten or inserted.
    base.chain((t) => fc.nat({ max: t.length - 1 }).map((n) => t.slice(0, n))),
    base.chain((t) =>
      fc.array(fc.tuple(fc.nat(), fc.string({ minLength: 1, maxLength: 3, unit: "binary" })), { minLength: 1, maxLength: 5 }).map((edits) => {
        let out = t;
        for (const [i, s] of edits) {
          const at = i % out.length;
          out = out.slice(0, at) + s + out.slice(at + 1);
        }
        return out;
      }),
    ),
    // A key of the request set to a value of any type.
    fc
      .tuple(base, fc.constantFrom(...jsonKeys[kind]), fc.jsonValue({ maxDepth: 3 }))
      .map(([t, key, value]) => JSON.stringify({ ...(JSON.parse(t) as object), [key]: value })),
    // A message whose fields are of any type.
    fc
      .tuple(base, fc.dictionary(fc.constantFrom("role", "content", "text", "name", "tool_calls", "toolCalls", "type"), fc.jsonValue({ maxDepth: 2 })))
      .map(([t, message]) => JSON.stringify({ ...(JSON.parse(t) as object), messages: [message] })),
    // A long enum name or string (the error must not echo it whole).
    fc.integer({ min: 1000, max: 50_000 }).map((n) => JSON.stringify({ model: "mock-chat", messages: [{ role: "R".repeat(n), content: "x" }] })),
    // Deep nesting.
    fc.integer({ min: 100, max: 5000 }).map((depth) => `{"model":"mock-chat","messages":${"[".repeat(depth)}${"]".repeat(depth)}}`),
  );
}

/** One fuzz input: where it goes, and its bytes. */
interface FuzzCall {
  readonly transport: "grpc" | HttpKind;
  readonly method: InferenceMethod;
  readonly body: Uint8Array;
}

const grpcMethods: InferenceMethod[] = ["Chat", "Predict", "Generate", "ListModels", "DeleteSession"];
const unaryMethods: InferenceMethod[] = ["Chat", "Predict", "ListModels", "DeleteSession"];

function fuzzCalls(): FuzzCall[] {
  const sample = <T>(arb: fc.Arbitrary<T>, numRuns: number, salt: number) => fc.sample(arb, { seed: seed + salt, numRuns });
  const onMethods = (methods: InferenceMethod[]) => fc.constantFrom(...methods).chain((method) => protoBytes(method).map((body) => ({ method, body })));
  const calls: FuzzCall[] = [];
  for (const c of sample(onMethods(grpcMethods), grpcRuns, 1)) calls.push({ transport: "grpc", ...c });
  for (const c of sample(onMethods(unaryMethods), httpRuns["connect-proto"], 2)) calls.push({ transport: "connect-proto", ...c });
  for (const c of sample(protoBytes("Generate"), httpRuns["connect-stream-proto"], 3)) calls.push({ transport: "connect-stream-proto", method: "Generate", body: envelope(c) });
  for (const c of sample(onMethods(grpcMethods), httpRuns["grpc-web"], 4)) calls.push({ transport: "grpc-web", method: c.method, body: envelope(c.body) });
  for (const t of sample(jsonText("connect"), httpRuns["connect-json"], 5)) calls.push({ transport: "connect-json", method: "Chat", body: Buffer.from(t) });
  for (const t of sample(jsonText("openai"), httpRuns.openai, 6)) calls.push({ transport: "openai", method: "Chat", body: Buffer.from(t) });
  // Interleaved, so that every kind runs beside the others.
  return fc.sample(fc.shuffledSubarray(calls, { minLength: calls.length, maxLength: calls.length }), { seed, numRuns: 1 })[0]!;
}

/** The server's resident set size, from /proc (Linux). */
function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (m === null) throw new Error("no VmRSS");
  return Number(m[1]) * 1024;
}

describe("fuzz: malformed and mutated requests on every listener (issue 17)", () => {
  let server: ServerProcess;
  let grpcClient: grpc.Client;

  beforeAll(async () => {
    server = await startProcess();
    grpcClient = rawGrpcClient(server.grpcAddress);
  });

  afterAll(async () => {
    grpcClient?.close();
    await server?.stop();
  });

  /** One valid call of each kind; returns their outcomes' codes. */
  async function validRound(): Promise<string[]> {
    const outcomes = await Promise.all([
      rawGrpcCall(grpcClient, "Chat", bases.Chat[0]!),
      rawGrpcCall(grpcClient, "Predict", bases.Predict[0]!),
      rawGrpcCall(grpcClient, "Generate", bases.Generate[0]!),
      rawHttpCall(server.httpAddress, "connect-proto", "Chat", bases.Chat[0]!),
      rawHttpCall(server.httpAddress, "connect-json", "Chat", Buffer.from(jsonBases.connect[0]!)),
      rawHttpCall(server.httpAddress, "openai", "Chat", Buffer.from(jsonBases.openai[0]!)),
    ]);
    return outcomes.map((o) => o.code);
  }

  it("answers every input with a client error or success, never INTERNAL, UNKNOWN or 5xx; valid calls keep working; RSS returns near its baseline", async () => {
    const calls = fuzzCalls();
    expect(calls.length).toBe(grpcRuns + Object.values(httpRuns).reduce((a, b) => a + b, 0));

    // Warm up, then the baseline.
    for (let i = 0; i < 20; i++) expect(await validRound()).toEqual(Array(6).fill("OK"));
    const rssBefore = rssBytes(server.proc.pid!);

    const counts = new Map<string, number>();
    const bad: { call: FuzzCall; outcome: RawOutcome }[] = [];
    const validFailures: string[] = [];
    let rssPeak = rssBefore;
    for (let start = 0; start < calls.length; start += concurrency) {
      const batch = calls.slice(start, start + concurrency);
      const outcomes = await Promise.all(
        batch.map((c) =>
          (c.transport === "grpc" ? rawGrpcCall(grpcClient, c.method, c.body) : rawHttpCall(server.httpAddress, c.transport, c.method, c.body)).catch(
            (err: unknown): RawOutcome => ({ code: `client error: ${err instanceof Error ? err.message : String(err)}`, message: "", errorBytes: 0 }),
          ),
        ),
      );
      batch.forEach((call, i) => {
        const outcome = outcomes[i]!;
        const label = call.transport === "openai" ? `${outcome.code}` : outcome.code + (outcome.errorInfo === undefined ? "" : ` ${outcome.errorInfo.reason}`);
        const key = `${call.transport}\t${label}`;
        counts.set(key, (counts.get(key) ?? 0) + 1);
        if (!acceptable(call, outcome)) bad.push({ call, outcome });
      });
      if (Math.floor((start + concurrency) / validEvery) !== Math.floor(start / validEvery)) {
        const codes = await validRound();
        if (codes.some((c) => c !== "OK")) validFailures.push(`after ${start + concurrency} calls: ${codes.join(",")}`);
        rssPeak = Math.max(rssPeak, rssBytes(server.proc.pid!));
      }
    }

    // After the run: valid calls again, then RSS once the server has been idle a moment.
    for (let i = 0; i < 20; i++) expect(await validRound()).toEqual(Array(6).fill("OK"));
    await new Promise((r) => setTimeout(r, 1000));
    const rssAfter = rssBytes(server.proc.pid!);

    const mib = (b: number) => (b / 1024 / 1024).toFixed(1);
    const table = [...counts.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([k, n]) => `${k}\t${n}`);
    console.log(`fuzz counts (seed ${seed}):\n${table.join("\n")}\nRSS MiB: before ${mib(rssBefore)}, peak ${mib(rssPeak)}, after ${mib(rssAfter)}`);
    expect(bad.slice(0, 10).map(describeBad)).toEqual([]);
    expect(bad.length).toBe(0);
    expect(validFailures).toEqual([]);
    // The fuzz reaches the decoders: most gRPC inputs are malformed.
    const malformedGrpc = [...counts.entries()].filter(([k]) => k.startsWith("grpc\t") && k.endsWith("MALFORMED_REQUEST")).reduce((a, [, n]) => a + n, 0);
    expect(malformedGrpc).toBeGreaterThan(grpcRuns / 3);
    expect(rssAfter).toBeLessThan(rssBefore + rssSlackBytes);
    // Each malformed request was counted once, by the server, as the clients saw them.
    const metrics = await (await fetch(`http://${server.adminAddress}/metrics`)).text();
    const counted = [...metrics.matchAll(/^infergate_malformed_requests_total\{rpc="\w+"\} (\d+)$/gm)].reduce((a, m) => a + Number(m[1]), 0);
    const seen = [...counts.entries()].filter(([k]) => k.endsWith("MALFORMED_REQUEST")).reduce((a, [, n]) => a + n, 0);
    expect(counted).toBe(seen);
  }, 180_000);
});

/** Codes that say the server failed, not the request. */
const serverFailures = new Set(["INTERNAL", "UNKNOWN", "UNAVAILABLE", "DATA_LOSS"]);

function acceptable(call: FuzzCall, o: RawOutcome): boolean {
  if (o.code.startsWith("client error") || o.code.startsWith("HTTP 200") || o.code.startsWith("grpc-status")) return false;
  if (o.httpStatus !== undefined && o.httpStatus >= 500) return false;
  if (call.transport === "openai") return o.httpStatus !== undefined && o.httpStatus < 500;
  if (serverFailures.has(o.code)) return false;
  // Every infergate error carries ErrorInfo in its domain; an error message is never long.
  if (o.code !== "OK" && (o.errorInfo?.domain !== "infergate" || o.message.length > 1024)) return false;
  return true;
}

function describeBad({ call, outcome }: { call: FuzzCall; outcome: RawOutcome }): string {
  const head = Buffer.from(call.body.subarray(0, 48)).toString("hex");
  return `${call.transport} ${call.method} ${call.body.byteLength} bytes (${head}…): ${outcome.code} ${outcome.httpStatus ?? ""} ${outcome.message.slice(0, 160)} ${outcome.errorInfo?.reason ?? "(no ErrorInfo)"}`;
}
