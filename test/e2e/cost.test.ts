/**
 * The cost of each call (issue 20) end to end: a grpc-js client (contract loaded from proto/ at
 * run time) → infergate on loopback ports → the OpenAI fakes (test/fakes/) and the mock kind.
 * The `infergate-cost` header of unary calls and trailer of Generate (gRPC and Connect), the call
 * log line, infergate_cost_total, the OpenAI ingress's `usage.cost` through the openai SDK,
 * fallbacks priced at the model that answered, unpriced models, Embed per 1k tokens, and the
 * estimate of a stream cut off after events.
 */
import { Writable } from "node:stream";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { pino } from "pino";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { Role } from "../../gen/infergate/v1/chat_pb.js";
import { InferenceService } from "../../gen/infergate/v1/inference_service_pb.js";
import type { App } from "../../src/server/app.js";
import { createOpenAIEmbeddingsFake, type OpenAIEmbeddingsFake } from "../fakes/openai-embeddings-fake.js";
import { createOpenAIFake, type OpenAIFake } from "../fakes/openai-fake.js";
import { parseMetrics } from "../helpers/metrics.js";
import { openaiSdk } from "../helpers/openai-sdk.js";
import { loaderOptions } from "../helpers/proto-clients.js";
import { startInProcess } from "../helpers/servers.js";

type Obj = Record<string, unknown>;

const userTurn = (t: string) => ({ role: "ROLE_USER", content: [{ text: t }] });
const chatRequest = (model: string, text = "Say hello") => ({ model, messages: [userTurn(text)] });

// The usage-details scenario (test/fakes/openai-fake.ts): 2006 prompt tokens of which 1920 cached,
// 198 completion tokens of which 192 reasoning. At o3's price below:
// 86 × 2 + 1920 × 0.5 + 6 × 8 + 192 × 10 = 172 + 960 + 48 + 1920 = 3100 millionths.
const O3_COST = 0.0031;

let fake: OpenAIFake;
let embFake: OpenAIEmbeddingsFake;
let app: App;
let grpcClient: grpc.Client;
const service = protoLoader.loadSync("infergate/v1/inference_service.proto", loaderOptions)["infergate.v1.InferenceService"] as protoLoader.ServiceDefinition;
/** Every `call` line infergate logged. */
const callLines: Obj[] = [];

beforeAll(async () => {
  fake = await createOpenAIFake();
  embFake = await createOpenAIEmbeddingsFake({ dimensions: 8 });
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const l of chunk.toString("utf8").split("\n")) {
        if (l === "") continue;
        const line = JSON.parse(l) as Obj;
        if (line["msg"] === "call") callLines.push(line);
      }
      done();
    },
  });
  app = await startInProcess(
    `
pricing: { currency: EUR }
upstreams:
  - name: oai
    kind: openai
    resilience: { retry: { maxAttempts: 1 }, breaker: { enabled: false } }
    endpoints: ["${fake.baseUrl}"]
    apiKey: sk-test-cost-7d1e
    options: { developerRole: developer, maxTokensField: max_completion_tokens }
  - name: emb-up
    kind: openai
    endpoints: ["${embFake.baseUrl}"]
    apiKey: sk-test-cost-7d1e
  - name: local
    kind: mock
models:
  - name: o3
    upstream: oai
    upstreamModel: o3-mini
    cache: { policy: "off" }
    price: { inputPerMTok: 2, cachedInputPerMTok: 0.5, outputPerMTok: 8, reasoningPerMTok: 10 }
  - name: plain
    upstream: oai
    cache: { policy: "off" }
  - name: primary
    upstream: oai
    cache: { policy: "off" }
    price: { inputPerMTok: 1000, outputPerMTok: 1000 }
    fallbacks: [backup]
  - name: backup
    upstream: local
    cache: { policy: "off" }
    price: { perRequest: 0.25, inputPerMTok: 3, outputPerMTok: 6 }
  - name: emb
    upstream: emb-up
    capabilities: [embed]
    price: { inputPerMTok: 999, embeddingPer1kTokens: 0.02 }
`,
    pino({ level: "info" }, sink),
  );
  grpcClient = new grpc.Client(app.grpcAddress, grpc.credentials.createInsecure());
});

afterAll(async () => {
  grpcClient?.close();
  await app?.shutdown();
  await fake?.close();
  await embFake?.close();
});

beforeEach(() => {
  fake.reset();
});

/** A unary call over gRPC: its answer and its response headers. */
function unary(method: string, request: object): Promise<{ res: Obj; headers: grpc.Metadata }> {
  const def = service[method]!;
  return new Promise((resolve, reject) => {
    let headers = new grpc.Metadata();
    const call = grpcClient.makeUnaryRequest(def.path, def.requestSerialize, def.responseDeserialize, request, new grpc.Metadata(), { deadline: Date.now() + 20_000 }, (err, res) =>
      err === null ? resolve({ res: res as Obj, headers }) : reject(err),
    );
    call.on("metadata", (md: grpc.Metadata) => (headers = md));
  });
}

/** A Generate over gRPC: its events, response headers, status and trailers. */
function generate(request: object): Promise<{ events: Obj[]; headers: grpc.Metadata; status: grpc.StatusObject }> {
  const def = service["Generate"]!;
  return new Promise((resolve) => {
    const events: Obj[] = [];
    let headers = new grpc.Metadata();
    const call = grpcClient.makeServerStreamRequest(def.path, def.requestSerialize, def.responseDeserialize, request, new grpc.Metadata(), { deadline: Date.now() + 20_000 });
    call.on("metadata", (md: grpc.Metadata) => (headers = md));
    call.on("data", (e: Obj) => events.push(e));
    call.on("error", () => {});
    call.on("status", (status: grpc.StatusObject) => resolve({ events, headers, status }));
  });
}

/** The `call` line of the call with this request id, once it is written. */
async function lineOf(requestId: string): Promise<Obj> {
  await expect.poll(() => callLines.some((l) => l["requestId"] === requestId)).toBe(true);
  return callLines.find((l) => l["requestId"] === requestId)!;
}

/** infergate_cost_total's series: `model/caller/currency` → value. */
async function costSeries(): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const [key, value] of parseMetrics(await (await fetch(`http://${app.adminAddress}/metrics`)).text())) {
    const m = /^infergate_cost_total\{model="([^"]*)",caller="([^"]*)",currency="([^"]*)"\}$/.exec(key);
    if (m !== null) out[`${m[1]}/${m[2]}/${m[3]}`] = value;
  }
  return out;
}

const text = (md: grpc.Metadata, key: string) => md.get(key)[0];

describe("the cost of each call", () => {
  it("unary Chat: cached and reasoning tokens each at their price, in the header, the log line and infergate_cost_total", async () => {
    fake.setScenario("usage-details");
    const before = (await costSeries())["o3//EUR"] ?? 0;
    const { res, headers } = await unary("Chat", chatRequest("o3"));
    expect(res["usage"]).toMatchObject({ prompt_tokens: 2006, cached_prompt_tokens: 1920, completion_tokens: 198, reasoning_tokens: 192 });
    expect(text(headers, "infergate-cost")).toBe("0.0031 EUR");
    const line = await lineOf(text(headers, "x-request-id") as string);
    expect(line).toMatchObject({ model: "o3", cost: O3_COST, currency: "EUR", cachedPromptTokens: 1920, reasoningTokens: 192 });
    expect(line["usageEstimated"]).toBeUndefined();
    await expect.poll(async () => (await costSeries())["o3//EUR"]).toBeCloseTo(before + O3_COST, 12);
  });

  it("Generate over gRPC: the cost is a trailer, once the stream has ended", async () => {
    fake.setScenario("usage-details");
    const { events, headers, status } = await generate(chatRequest("o3"));
    expect(status.code).toBe(grpc.status.OK);
    expect(events.at(-1)!["event"]).toBe("final");
    // Not in the headers, which leave with the first event, before the usage is known.
    expect(text(headers, "infergate-cost")).toBeUndefined();
    expect(text(status.metadata, "infergate-cost")).toBe("0.0031 EUR");
    expect(await lineOf(text(headers, "x-request-id") as string)).toMatchObject({ rpc: "Generate", cost: O3_COST, currency: "EUR" });
  });

  it("Generate over Connect: the cost is in the stream's trailers", async () => {
    fake.setScenario("usage-details");
    const client = createClient(InferenceService, createConnectTransport({ baseUrl: `http://${app.httpAddress}`, httpVersion: "1.1" }));
    let trailers: Headers | undefined;
    const events = [];
    for await (const e of client.generate(
      { model: "o3", messages: [{ role: Role.USER, content: [{ part: { case: "text", value: "Say hello" } }] }] },
      { onTrailer: (t) => (trailers = t) },
    )) {
      events.push(e);
    }
    expect(events.at(-1)!.event.case).toBe("final");
    expect(trailers?.get("infergate-cost")).toBe("0.0031 EUR");
  });

  it("a model without a price is unpriced: header, log line and no metric, never 0", async () => {
    fake.setScenario("usage-details");
    const { headers } = await unary("Chat", chatRequest("plain"));
    expect(text(headers, "infergate-cost")).toBe("unpriced");
    const line = await lineOf(text(headers, "x-request-id") as string);
    expect(line).toMatchObject({ model: "plain", cost: "unpriced", promptTokens: 2006 });
    expect(line["currency"]).toBeUndefined();
    const { status } = await generate(chatRequest("plain"));
    expect(text(status.metadata, "infergate-cost")).toBe("unpriced");
    expect(Object.keys(await costSeries()).filter((k) => k.startsWith("plain/"))).toEqual([]);
  });

  it("a fallback that answered is priced at its own price, not the model asked for", async () => {
    fake.setScenario("server-error");
    const { res, headers } = await unary("Chat", chatRequest("primary", "fall back please"));
    expect(res).toMatchObject({ model: "backup", upstream: "local" });
    const usage = res["usage"] as { prompt_tokens: number; completion_tokens: number };
    expect(usage.prompt_tokens).toBeGreaterThan(0);
    // 0.25 per request + 3 per million prompt tokens + 6 per million completion tokens, in nano-units.
    const nanos = 250_000_000 + 3_000 * usage.prompt_tokens + 6_000 * usage.completion_tokens;
    const [amount, currency] = (text(headers, "infergate-cost") as string).split(" ");
    expect([Number(amount), currency]).toEqual([nanos / 1e9, "EUR"]);
    expect(await lineOf(text(headers, "x-request-id") as string)).toMatchObject({ model: "primary", cost: nanos / 1e9 });
    await expect.poll(async () => (await costSeries())["backup//EUR"]).toBeCloseTo(nanos / 1e9, 12);
    expect((await costSeries())["primary//EUR"]).toBeUndefined();
  });

  it("Embed: per 1,000 prompt tokens instead of the input price", async () => {
    // The fake counts one token per word: 5 tokens × 0.02 / 1000.
    const { res, headers } = await unary("Embed", { model: "emb", texts: ["one two three", "four five"] });
    expect(res["usage"]).toMatchObject({ prompt_tokens: 5 });
    expect(text(headers, "infergate-cost")).toBe("0.0001 EUR");
    // The same inputs again: answered from the cache, nothing went upstream, nothing billed.
    const again = await unary("Embed", { model: "emb", texts: ["one two three", "four five"] });
    expect(text(again.headers, "infergate-cost")).toBe("0 EUR");
  });

  it("a stream cut off after events carries an estimated usage (a token per delta) and its cost", async () => {
    // "Hello", " from", then an error event: no final event, no usage from the upstream.
    fake.setScenario("mid-stream-error");
    const { events, status } = await generate(chatRequest("o3"));
    expect(events).toHaveLength(2);
    expect(status.code).not.toBe(grpc.status.OK);
    // 2 completion tokens × 8 per million.
    expect(text(status.metadata, "infergate-cost")).toBe("0.000016 EUR");
    const line = await lineOf(text(status.metadata, "x-request-id") as string);
    expect(line).toMatchObject({ rpc: "Generate", usageEstimated: true, promptTokens: 0, completionTokens: 2, cost: 0.000016 });
  });
});

describe("the OpenAI ingress", () => {
  it("unary: usage.cost and usage.cost_currency, and the infergate-cost header", async () => {
    fake.setScenario("usage-details");
    const { data, response } = await openaiSdk(app).chat.completions.create({ model: "o3", messages: [{ role: "user", content: "Say hello" }] }).withResponse();
    expect(data.usage).toMatchObject({ prompt_tokens: 2006, completion_tokens: 198, cost: O3_COST, cost_currency: "EUR" });
    expect(response.headers.get("infergate-cost")).toBe("0.0031 EUR");
  });

  it("streaming: the include_usage chunk carries the cost", async () => {
    fake.setScenario("usage-details");
    const stream = await openaiSdk(app).chat.completions.create({ model: "o3", messages: [{ role: "user", content: "Say hello" }], stream: true, stream_options: { include_usage: true } });
    const usages = [];
    for await (const chunk of stream) if (chunk.usage != null) usages.push(chunk.usage);
    expect(usages).toEqual([expect.objectContaining({ prompt_tokens: 2006, cost: O3_COST, cost_currency: "EUR" })]);
  });

  it("an unpriced model: usage.cost is \"unpriced\"", async () => {
    fake.setScenario("usage-details");
    const res = await openaiSdk(app).chat.completions.create({ model: "plain", messages: [{ role: "user", content: "Say hello" }] });
    expect(res.usage).toMatchObject({ cost: "unpriced" });
    expect(res.usage).not.toHaveProperty("cost_currency");
  });

  it("embeddings: usage.cost", async () => {
    const res = await openaiSdk(app).embeddings.create({ model: "emb", input: ["six seven eight nine"] });
    expect(res.usage).toMatchObject({ prompt_tokens: 4, cost: 0.00008, cost_currency: "EUR" });
  });
});
