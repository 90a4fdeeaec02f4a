/**
 * The `infergate` kind end to end (chaining): a grpc-js client (contract loaded from proto/ at run
 * time) → infergate A (kind infergate) → infergate B (mock models, started in this process) over
 * real loopback ports. Then A in front of a recording gRPC server, to see exactly what the far end
 * receives (metadata, deadline, message). Last, table tests of the kind's pure parts.
 */
import { createHash } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ChatRequestSchema,
  EmbedRequestSchema,
  EmbedResponseSchema,
  EmbeddingEncoding,
  ListModelsResponseSchema,
  ModelState,
  PredictRequestSchema,
} from "../../gen/infergate/v1/inference_service_pb.js";
import { CachePolicy } from "../../gen/infergate/v1/chat_pb.js";
import { parseConfig } from "../../src/config/load-config.js";
import { configSchema } from "../../src/config/schema.js";
import { GatewayError } from "../../src/core/gateway-error.js";
import type { Upstream } from "../../src/core/upstream.js";
import { type App, startApp } from "../../src/server/app.js";
import {
  embedAnswer,
  forwardedChat,
  forwardedEmbed,
  forwardedGenerate,
  forwardedMetadata,
  forwardedPredict,
  modelStateOf,
  ownCredentialRefused,
} from "../../src/upstreams/infergate/infergate-translate.js";
import { infergateKind, infergateOptionsSchema } from "../../src/upstreams/infergate/infergate-upstream.js";
import { mockEmbed } from "../../src/upstreams/mock/mock-embed.js";
import { fp32FromNumbers, numbersFromFp32 } from "../../src/wire/fp32.js";
import { seen } from "../faults/helpers/harness.js";
import { refusingUrl } from "../faults/helpers/scripted-upstream.js";
import { gatewayErrorOf } from "../helpers/gateway-errors.js";
import { expectServiceError, inferenceClient, loaderOptions, type ProtoClient, protoUsage } from "../helpers/proto-clients.js";
import { startInProcess } from "../helpers/servers.js";

type Obj = Record<string, unknown>;

const SIDECAR_KEY = "ig-sidecar-key-7f3a9c";
const TEAM_KEY = "ig-team-key-1b2c3d";
const LIMITED_KEY = "ig-limited-key-4e5f60";
const sha256 = (s: string) => createHash("sha256").update(s, "utf8").digest("hex");

const userTurn = (text: string) => ({ role: "ROLE_USER", content: [{ text }] });
const chat = (model: string, text: string, metadata: Record<string, string> = {}) => ({ model, messages: [userTurn(text)], metadata });
const textDelta = (t: string) => ({ event: "text_delta", text_delta: t });

/** An EmbedResponse as proto-loader gives it. */
interface EmbedAnswer {
  embeddings: { index: number; values: number[]; fp32: Buffer; cached: boolean }[];
  model: string;
  model_version: string;
  upstream: string;
  cached: boolean;
  usage: { prompt_tokens: number; total_tokens: number };
  dimensions: number;
}
const usage = protoUsage;

/** B's per-call log lines (msg "call"), captured from its logger. */
interface CallLine {
  msg: string;
  requestId: string;
  tenant?: string;
  rpc: string;
  model: string;
  code: string;
  reason?: string;
}

/** infergate B: auth on (the sidecar's and a team's keys), mock models; its call log captured. */
async function startFarGateway(): Promise<{ app: App; lines: CallLine[] }> {
  const lines: CallLine[] = [];
  const config = parseConfig(
    `
auth:
  enabled: true
  keys:
    - { name: sidecar, sha256: ${sha256(SIDECAR_KEY)} }
    - { name: team-a, sha256: ${sha256(TEAM_KEY)} }
    - { name: limited, sha256: ${sha256(LIMITED_KEY)}, limits: { requestsPerMinute: 1 } }
upstreams:
  - { name: mock-up, kind: mock }
models:
  - { name: far-echo, upstream: mock-up, version: "far-7", cache: { policy: "off" } }
  - { name: far-embed, upstream: mock-up, version: "far-7", capabilities: [embed] }
`,
    "(test)",
    {},
  );
  config.server.listen = "127.0.0.1:0";
  config.server.httpListen = "127.0.0.1:0";
  config.server.adminListen = "127.0.0.1:0";
  const log = pino({ level: "info" }, { write: (s: string) => void lines.push(JSON.parse(s) as CallLine) });
  return { app: await startApp(config, log), lines: lines };
}

describe("infergate → infergate", () => {
  let appB: App;
  let linesB: CallLine[];
  let appA: App;
  let client: ProtoClient;

  beforeAll(async () => {
    ({ app: appB, lines: linesB } = await startFarGateway());
    const b = `http://${appB.grpcAddress}`;
    // One attempt per call and no breaker, so that each assertion sees exactly one hop's answer.
    const resilience = "{ retry: { maxAttempts: 1 }, breaker: { enabled: false } }";
    appA = await startInProcess(`
upstreams:
  - { name: hop, kind: infergate, endpoints: ["${b}"], apiKey: "${SIDECAR_KEY}", resilience: ${resilience},
      options: { forwardHeaders: [x-request-id], readinessTtlMs: 200 } }
  - { name: hop-pass, kind: infergate, endpoints: ["${b}"], resilience: ${resilience},
      options: { forwardHeaders: [authorization, x-request-id] } }
  - { name: hop-closed, kind: infergate, endpoints: ["${b}"], resilience: ${resilience} }
  - { name: hop-badkey, kind: infergate, endpoints: ["${b}"], apiKey: "ig-wrong-key-000000", resilience: ${resilience} }
  - { name: hop-down, kind: infergate, endpoints: ["${await refusingUrl()}"], resilience: ${resilience}, options: { readinessTtlMs: 200 } }
models:
  - { name: chained, upstream: hop, upstreamModel: far-echo, version: "near-3", cache: { policy: "off" } }
  - { name: ghost, upstream: hop, upstreamModel: not-on-b, cache: { policy: "off" } }
  - { name: pass, upstream: hop-pass, upstreamModel: far-echo, cache: { policy: "off" } }
  - { name: closed, upstream: hop-closed, upstreamModel: far-echo, cache: { policy: "off" } }
  - { name: badkey, upstream: hop-badkey, upstreamModel: far-echo, cache: { policy: "off" } }
  - { name: down, upstream: hop-down, upstreamModel: far-echo, cache: { policy: "off" } }
  - { name: chained-embed, upstream: hop, upstreamModel: far-embed, version: "near-3", capabilities: [embed] }
`);
    client = inferenceClient(appA.grpcAddress);
  });

  afterAll(async () => {
    client?.close();
    await appA?.shutdown();
    await appB?.shutdown();
  });

  /** B's log line of the call with this request id. */
  const lineOf = (requestId: string) => linesB.find((l) => l.msg === "call" && l.requestId === requestId);

  it("Predict: the far mock model answers; our gateway stamps its own model, version and upstream", async () => {
    const res = await client.unary<Obj>(
      "Predict",
      {
        model: "chained",
        id: "p-1",
        inputs: [
          { name: "a", datatype: "DATA_TYPE_INT32", shape: [2], contents: { int_contents: [1, 2] } },
          { name: "b", datatype: "DATA_TYPE_INT32", shape: [2], contents: { int_contents: [10, 20] } },
        ],
      },
      { headers: { "x-request-id": "chain-predict-1" } },
    );
    const outputs = (res["outputs"] as Obj[]).map((t) => [t["name"], t["datatype"], t["shape"], (t["contents"] as Obj)["int_contents"]]);
    expect({ ...res, outputs }).toMatchObject({
      model: "chained",
      model_version: "near-3",
      upstream: "hop",
      id: "p-1",
      cached: false,
      outputs: [
        ["OUTPUT0", "DATA_TYPE_INT32", ["2"], [11, 22]],
        ["OUTPUT1", "DATA_TYPE_INT32", ["2"], [-9, -18]],
      ],
    });
    // B served it for the sidecar, under the far model's name, with the forwarded request id.
    expect(lineOf("chain-predict-1")).toMatchObject({ rpc: "Predict", model: "far-echo", tenant: "sidecar", code: "OK" });
  });

  it("Chat: the far answer, its id kept, re-stamped here", async () => {
    const res = await client.unary<Obj>("Chat", chat("chained", "hello there"));
    expect(res).toMatchObject({
      message: { role: "ROLE_ASSISTANT", content: [{ text: "You said: hello there", part: "text", cache_breakpoint: null }], tool_calls: [] },
      finish_reason: "FINISH_REASON_STOP",
      usage: usage(2, 4),
      model: "chained",
      model_version: "near-3",
      upstream: "hop",
      cached: false,
    });
    expect(res["id"]).toMatch(/^mock-[0-9a-f]{16}$/);
  });

  it("Generate: the far events pass through, the far final event last, re-stamped", async () => {
    const { events, status, error } = await client.serverStream<Obj>("Generate", chat("chained", "one two three")).done;
    expect({ code: status.code, error }).toEqual({ code: grpc.status.OK, error: undefined });
    expect(events.slice(0, -1)).toEqual([textDelta("You"), textDelta(" said:"), textDelta(" one"), textDelta(" two"), textDelta(" three")]);
    expect(events.at(-1)).toMatchObject({
      event: "final",
      final: { finish_reason: "FINISH_REASON_STOP", usage: usage(3, 5), model: "chained", model_version: "near-3", upstream: "hop", cached: false },
    });
    expect(((events.at(-1) as { final: Obj }).final["id"] as string)).toMatch(/^mock-[0-9a-f]{16}$/);
  });

  it("Embed: B's mock vectors; A's cache answers the repeat, and B's cached flags are not A's", async () => {
    const b = inferenceClient(appB.grpcAddress);
    try {
      // "warm" is in B's cache (under the key A presents: B keys its cache by tenant), not in A's.
      await b.unary("Embed", { model: "far-embed", texts: ["warm"] }, { headers: { authorization: `Bearer ${SIDECAR_KEY}` } });
      const texts = ["warm", "cold two"];
      const mock = mockEmbed(create(EmbedRequestSchema, { texts })).embeddings.map((e) => numbersFromFp32(e.fp32));
      const res = await client.unary<EmbedAnswer>("Embed", { model: "chained-embed", texts }, { headers: { "x-request-id": "chain-embed-1" } });
      expect(res).toMatchObject({ model: "chained-embed", model_version: "near-3", upstream: "hop", cached: false, dimensions: 256 });
      // B counts only what its upstream embedded ("cold two"), and flags "warm" cached: A does not.
      expect(res.usage).toMatchObject({ prompt_tokens: 2, total_tokens: 2 });
      expect(res.embeddings.map((e) => [e.index, e.values, e.cached])).toEqual([
        [0, mock[0], false],
        [1, mock[1], false],
      ]);
      expect(lineOf("chain-embed-1")).toMatchObject({ rpc: "Embed", model: "far-embed", tenant: "sidecar", code: "OK" });

      // The repeat, in another order and encoding: all from A's cache, nothing reaches B.
      const callsOnB = linesB.filter((l) => l.msg === "call" && l.rpc === "Embed").length;
      const again = await client.unary<EmbedAnswer>("Embed", { model: "chained-embed", texts: ["cold two", "warm"], encoding: "EMBEDDING_ENCODING_FP32_BYTES" });
      expect(again).toMatchObject({ cached: true, upstream: "hop", usage: { prompt_tokens: 0 } });
      expect(again.embeddings.map((e) => [e.index, numbersFromFp32(new Uint8Array(e.fp32)), e.cached])).toEqual([
        [0, mock[1], true],
        [1, mock[0], true],
      ]);
      expect(linesB.filter((l) => l.msg === "call" && l.rpc === "Embed")).toHaveLength(callsOnB);
    } finally {
      b.close();
    }
  });

  it("ListModels: each chained model's state from the far gateway's ListModels", async () => {
    const states = async () =>
      (await client.unary<{ models: Obj[] }>("ListModels", {})).models.map((m) => [m["name"], m["upstream_kind"], m["state"], (m["capabilities"] as string[]).length]);
    await expect.poll(states, { timeout: 5000, interval: 50 }).toEqual([
      ["chained", "infergate", "MODEL_STATE_READY", 3],
      // B does not serve it.
      ["ghost", "infergate", "MODEL_STATE_NOT_READY", 3],
      // Without a credential of its own, the background ListModels is refused by B (auth on).
      ["pass", "infergate", "MODEL_STATE_NOT_READY", 3],
      ["closed", "infergate", "MODEL_STATE_NOT_READY", 3],
      ["badkey", "infergate", "MODEL_STATE_NOT_READY", 3],
      // B's address refuses connections.
      ["down", "infergate", "MODEL_STATE_NOT_READY", 3],
      ["chained-embed", "infergate", "MODEL_STATE_READY", 1],
    ]);
  });

  it("an unknown model on B: NOT_FOUND, MODEL_NOT_FOUND, B's message and metadata kept", async () => {
    const err = seen(await expectServiceError(client.unary("Chat", chat("ghost", "hi"))));
    expect(err).toEqual({
      code: grpc.status.NOT_FOUND,
      message: 'model "not-on-b" is not served by this gateway (see ListModels)',
      reason: "MODEL_NOT_FOUND",
      metadata: { model: "not-on-b", upstream: "hop" },
      retryAfterMs: undefined,
    });
  });

  it("the request's metadata map reaches B's mock model: the code B returned, with its reason", async () => {
    const err = seen(await expectServiceError(client.unary("Chat", chat("chained", "hi", { "mock.fail_code": "FAILED_PRECONDITION" }))));
    expect(err).toEqual({
      code: grpc.status.FAILED_PRECONDITION,
      message: "mock upstream: injected FAILED_PRECONDITION",
      reason: "UPSTREAM_ERROR",
      metadata: { upstream: "hop" },
      retryAfterMs: undefined,
    });
    const predictErr = seen(
      await expectServiceError(
        client.unary("Predict", {
          model: "chained",
          metadata: { "mock.fail_code": "PERMISSION_DENIED" },
          inputs: [{ name: "a", datatype: "DATA_TYPE_FP32", shape: [1], contents: { fp32_contents: [1] } }],
        }),
      ),
    );
    expect(predictErr).toMatchObject({ code: grpc.status.PERMISSION_DENIED, message: "mock upstream: injected PERMISSION_DENIED", reason: "UPSTREAM_ERROR" });
  });

  it("allowlisted headers reach B: the caller's own key and request id pass through hop-pass", async () => {
    const res = await client.unary<Obj>("Chat", chat("pass", "hi"), { headers: { authorization: `Bearer ${TEAM_KEY}`, "x-request-id": "chain-pass-1" } });
    expect(res).toMatchObject({ model: "pass", upstream: "hop-pass" });
    expect(lineOf("chain-pass-1")).toMatchObject({ rpc: "Chat", model: "far-echo", tenant: "team-a", code: "OK" });
  });

  it("headers not on the allowlist stay here: B sees no key and answers UNAUTHENTICATED, passed through", async () => {
    const err = seen(
      await expectServiceError(client.unary("Chat", chat("closed", "hi"), { headers: { authorization: `Bearer ${TEAM_KEY}`, "x-request-id": "chain-closed-1" } })),
    );
    expect(err).toEqual({
      code: grpc.status.UNAUTHENTICATED,
      message: "an API key is required: send `authorization: Bearer <key>` or `x-api-key`",
      reason: "UNAUTHENTICATED",
      metadata: { upstream: "hop-closed" },
      retryAfterMs: undefined,
    });
    // x-request-id was not forwarded either: B made its own.
    expect(lineOf("chain-closed-1")).toBeUndefined();
  });

  it("B refusing this gateway's own key is a configuration fault: INTERNAL, UPSTREAM_AUTH", async () => {
    const err = seen(await expectServiceError(client.unary("Chat", chat("badkey", "hi"))));
    expect(err).toEqual({
      code: grpc.status.INTERNAL,
      message: 'upstream "hop-badkey" refused the gateway\'s credentials',
      reason: "UPSTREAM_AUTH",
      metadata: { upstream: "hop-badkey" },
      retryAfterMs: undefined,
    });
  });

  it("B's rate limit: RESOURCE_EXHAUSTED, RATE_LIMITED, with its RetryInfo", async () => {
    const headers = { authorization: `Bearer ${LIMITED_KEY}` };
    await client.unary("Chat", chat("pass", "first"), { headers });
    const err = seen(await expectServiceError(client.unary("Chat", chat("pass", "second"), { headers })));
    expect(err).toMatchObject({
      code: grpc.status.RESOURCE_EXHAUSTED,
      message: "rate limit of 1 requests per minute reached; retry in 60s",
      reason: "RATE_LIMITED",
      metadata: { tenant: "limited", upstream: "hop-pass" },
    });
    expect(err.retryAfterMs).toBeGreaterThan(55_000);
    expect(err.retryAfterMs).toBeLessThanOrEqual(60_000);
  });

  it("a stream B cuts off: the client gets the events, then UNAVAILABLE, STREAM_TRUNCATED", async () => {
    const { events, status, error } = await client.serverStream<Obj>("Generate", chat("chained", "a b c d", { "mock.cut_after_tokens": "2" })).done;
    expect(events).toEqual([textDelta("You"), textDelta(" said:")]);
    expect(error).toBeDefined();
    expect(status.code).toBe(grpc.status.UNAVAILABLE);
    // B's own error, its message kept; the upstream in the metadata is ours.
    expect(seen(error!)).toEqual({
      code: grpc.status.UNAVAILABLE,
      message: "upstream stream ended before its final event",
      reason: "STREAM_TRUNCATED",
      metadata: { upstream: "hop" },
      retryAfterMs: undefined,
    });
  });

  it("the caller's deadline: DEADLINE_EXCEEDED, and B's call ends with it", async () => {
    const stream = client.serverStream<Obj>("Generate", chat("chained", "slow words here", { "mock.token_delay_ms": "2000" }), {
      timeoutMs: 500,
      headers: { "x-request-id": "chain-deadline-1" },
    });
    await expect.poll(() => appB.gateway.inFlight(), { timeout: 2000, interval: 5 }).toBe(1);
    // No event at all: the deadline ended the stream before B's first token (due 2 s in).
    const { status, events } = await stream.done;
    expect({ code: status.code, events }).toEqual({ code: grpc.status.DEADLINE_EXCEEDED, events: [] });
    // B's own deadline (the remaining time, propagated) or A's cancel ended it; never OK. Had
    // neither reached B, its answer (three tokens, 2 s apart) would end OK.
    await expect.poll(() => appB.gateway.inFlight(), { timeout: 5_000, interval: 5 }).toBe(0);
    await expect.poll(() => lineOf("chain-deadline-1")?.code, { timeout: 5_000 }).toMatch(/^(DEADLINE_EXCEEDED|CANCELLED)$/);
  });

  it("cancelling A's Generate mid-stream: B's in-flight count drops to 0 promptly", async () => {
    const stream = client.serverStream<Obj>("Generate", chat("chained", "many words to stream slowly one by one", { "mock.token_delay_ms": "100" }), {
      headers: { "x-request-id": "chain-cancel-1" },
    });
    await stream.waitFor((e) => e["event"] === "text_delta");
    expect(appB.gateway.inFlight()).toBe(1);
    stream.call.cancel();
    await expect.poll(() => appB.gateway.inFlight(), { timeout: 5_000, interval: 5 }).toBe(0);
    const { status, events } = await stream.done;
    expect(status.code).toBe(grpc.status.CANCELLED);
    expect(events.length).toBeLessThan(9);
    // B's call ended because the cancel reached it, not because its answer (a token each 100 ms)
    // ran to its end: that would be logged OK.
    await expect.poll(() => lineOf("chain-cancel-1")?.code, { timeout: 5_000 }).toBe("CANCELLED");
  });
});

/** What a recording far end received for one call. */
interface Received {
  method: string;
  request: Obj;
  metadata: Record<string, string>;
  /** The call's deadline as the far end sees it, epoch ms. */
  deadline: number;
  /** Set when the caller cancelled the call before it was answered. */
  cancelled?: boolean;
}

/** A gRPC server with infergate's contract that records each call and answers from a script. */
async function startRecordingFarEnd(): Promise<{ address: string; received: Received[]; close(): Promise<void> }> {
  const def = protoLoader.loadSync("infergate/v1/inference_service.proto", loaderOptions);
  const service = (def["infergate.v1.InferenceService"] as grpc.ServiceDefinition);
  const received: Received[] = [];
  const record = (method: string, call: grpc.ServerUnaryCall<Obj, Obj> | grpc.ServerWritableStream<Obj, Obj>) => {
    const metadata: Record<string, string> = {};
    for (const [k, v] of Object.entries(call.metadata.getMap())) metadata[k] = String(v);
    const d = call.getDeadline();
    const r: Received = { method, request: call.request, metadata, deadline: d instanceof Date ? d.getTime() : Number(d) };
    received.push(r);
    return r;
  };
  const server = new grpc.Server();
  server.addService(service, {
    Chat(call: grpc.ServerUnaryCall<Obj, Obj>, callback: grpc.sendUnaryData<Obj>) {
      record("Chat", call);
      callback(null, { id: "far-chat-1", message: { role: "ROLE_ASSISTANT", content: [{ text: "far" }] }, finish_reason: "FINISH_REASON_STOP", model: "far-name", upstream: "far-up" });
    },
    Generate(call: grpc.ServerWritableStream<Obj, Obj>) {
      record("Generate", call);
      const text = ((call.request["messages"] as Obj[])[0]!["content"] as Obj[])[0]!["text"];
      call.write({ text_delta: "far " });
      call.write({ tool_call_delta: { index: 0, id: "call_1", name: "lookup", arguments: "{}" } });
      if (text !== "no final") {
        // Every count of the usage, its cached, cache-creation and reasoning parts too, comes through.
        call.write({ final: { id: "far-gen-1", finish_reason: "FINISH_REASON_TOOL_CALLS", usage: usage(7, 5, { cached: 3, creation: 2, reasoning: 4 }), model: "far-name", stop_sequence: "far-stop" } });
        // After the final event: never forwarded.
        call.write({ text_delta: "after the end" });
      }
      call.end();
    },
    Predict(call: grpc.ServerUnaryCall<Obj, Obj>, callback: grpc.sendUnaryData<Obj>) {
      record("Predict", call);
      callback(null, { outputs: [] });
    },
    // Vector i of text t is [t.length, i], every other one flagged cached; "hang" never answers,
    // "one short" answers one embedding too few.
    Embed(call: grpc.ServerUnaryCall<Obj, Obj>, callback: grpc.sendUnaryData<Obj>) {
      const r = record("Embed", call);
      const texts = call.request["texts"] as string[];
      if (texts[0] === "hang") {
        call.once("cancelled", () => (r.cancelled = true));
        return;
      }
      const embeddings = texts.map((t, i) => ({ index: i, fp32: Buffer.from(fp32FromNumbers([t.length, i])), cached: i % 2 === 0 }));
      if (texts[0] === "one short") embeddings.pop();
      callback(null, { embeddings, model: "far-name", model_version: "far-7", upstream: "far-up", cached: true, usage: usage(3 * texts.length, 0), dimensions: 2 });
    },
    ListModels(_call: grpc.ServerUnaryCall<Obj, Obj>, callback: grpc.sendUnaryData<Obj>) {
      callback(null, { models: [{ name: "far-name", state: "MODEL_STATE_READY" }] });
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err === null ? resolve(p) : reject(err))),
  );
  return {
    address: `127.0.0.1:${port}`,
    received,
    close: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())),
  };
}

describe("infergate → a recording far end", () => {
  let far: Awaited<ReturnType<typeof startRecordingFarEnd>>;
  let app: App;
  let client: ProtoClient;

  beforeAll(async () => {
    far = await startRecordingFarEnd();
    const resilience = "{ retry: { maxAttempts: 1 }, breaker: { enabled: false } }";
    app = await startInProcess(`
upstreams:
  - name: rec
    kind: infergate
    endpoints: ["http://${far.address}"]
    apiKey: sidecar-secret-key
    headers: { x-sidecar: eu-west-1, X-Tenant: ops }
    resilience: ${resilience}
    options: { forwardHeaders: [x-request-id, x-tenant, x-trace] }
  - name: rec-short
    kind: infergate
    endpoints: ["http://${far.address}"]
    timeoutMs: 1000
    resilience: ${resilience}
models:
  - { name: near, upstream: rec, upstreamModel: far-name, cache: { policy: "off" } }
  - { name: near-short, upstream: rec-short, upstreamModel: far-name, cache: { policy: "off" } }
`);
    client = inferenceClient(app.grpcAddress);
  });

  afterAll(async () => {
    client?.close();
    await app?.shutdown();
    await far?.close();
  });

  /** The metadata the far end got, without what gRPC itself adds. */
  const own = (m: Record<string, string>) => Object.fromEntries(Object.entries(m).filter(([k]) => k.startsWith("x-") || k === "authorization"));

  it("forwards the whole message with the upstream model's name, the allowlisted headers and the remaining deadline", async () => {
    far.received.length = 0;
    const sentAt = Date.now();
    const res = await client.unary<Obj>(
      "Chat",
      { model: "near", messages: [userTurn("hi")], temperature: 0.5, stop: ["END"], session_id: "s-1", metadata: { "mock.fail_code": "UNAVAILABLE", locale: "fr" } },
      { timeoutMs: 3000, headers: { "x-request-id": "r-1", "x-tenant": "caller-tenant", "x-trace": "t-9", "x-secret": "stays-here", authorization: "Bearer caller-key" } },
    );
    expect(res).toMatchObject({ id: "far-chat-1", model: "near", upstream: "rec", message: { content: [{ text: "far" }] } });
    expect(far.received).toHaveLength(1);
    const got = far.received[0]!;
    expect(got.request).toMatchObject({
      model: "far-name",
      temperature: 0.5,
      stop: ["END"],
      // This gateway keeps the session (its history is already in the messages): the far one
      // must not add a second history.
      session_id: "",
      metadata: { "mock.fail_code": "UNAVAILABLE", locale: "fr" },
      messages: [{ role: "ROLE_USER", content: [{ text: "hi" }] }],
    });
    // Caller's allowlisted headers, then the configured headers (which win), then the apiKey.
    expect(own(got.metadata)).toEqual({
      "x-request-id": "r-1",
      "x-tenant": "ops",
      "x-trace": "t-9",
      "x-sidecar": "eu-west-1",
      authorization: "Bearer sidecar-secret-key",
    });
    // The remaining time of the caller's 3 s, not the upstream's 60 s timeoutMs (each hop re-bases
    // grpc-timeout on its own clock, a few milliseconds of rounding each).
    expect(got.deadline - sentAt).toBeGreaterThan(2500);
    expect(got.deadline - sentAt).toBeLessThanOrEqual(3050);
  });

  it("the upstream's timeoutMs caps the deadline sent when the caller's is longer", async () => {
    far.received.length = 0;
    const sentAt = Date.now();
    await client.unary("Chat", chat("near-short", "hi"), { timeoutMs: 30_000 });
    const got = far.received[0]!;
    expect(got.deadline - sentAt).toBeGreaterThan(500);
    expect(got.deadline - sentAt).toBeLessThanOrEqual(1050);
    expect(own(got.metadata)).toEqual({});
  });

  it("Generate: the far events, the far final event last; what follows it is dropped", async () => {
    const { events, status } = await client.serverStream<Obj>("Generate", chat("near", "hi")).done;
    expect(status.code).toBe(grpc.status.OK);
    expect(events).toEqual([
      textDelta("far "),
      { event: "tool_call_delta", tool_call_delta: { index: 0, id: "call_1", name: "lookup", arguments: "{}" } },
      {
        event: "final",
        final: {
          id: "far-gen-1",
          finish_reason: "FINISH_REASON_TOOL_CALLS",
          usage: usage(7, 5, { cached: 3, creation: 2, reasoning: 4 }),
          model: "near",
          model_version: "1",
          upstream: "rec",
          cached: false,
          stop_sequence: "far-stop",
        },
      },
    ]);
    expect(far.received.at(-1)).toMatchObject({ method: "Generate", request: { model: "far-name" } });
  });

  it("a far stream that ends OK without its final event: UNAVAILABLE, STREAM_TRUNCATED after the events", async () => {
    const { events, error } = await client.serverStream<Obj>("Generate", chat("near", "no final")).done;
    expect(events).toHaveLength(2);
    expect(seen(error!)).toMatchObject({ code: grpc.status.UNAVAILABLE, reason: "STREAM_TRUNCATED", metadata: { upstream: "rec" } });
  });
});

describe("infergate adapter's embed, against a recording far end", () => {
  let far: Awaited<ReturnType<typeof startRecordingFarEnd>>;
  let upstream: Upstream;

  beforeAll(async () => {
    far = await startRecordingFarEnd();
    const config = configSchema.parse({
      upstreams: [
        {
          name: "rec",
          kind: "infergate",
          endpoints: [`http://${far.address}`],
          apiKey: "sidecar-secret-key",
          headers: { "x-sidecar": "eu-west-1" },
          options: { forwardHeaders: ["x-request-id"] },
        },
      ],
      models: [{ name: "near", upstream: "rec" }],
    }).upstreams[0]!;
    upstream = infergateKind.create(config, infergateOptionsSchema.parse(config.options));
  });

  afterAll(async () => {
    await upstream?.close();
    await far?.close();
  });

  const embed = (texts: string[], signal = new AbortController().signal, deadline = Date.now() + 10_000) =>
    upstream.embed!({
      request: create(EmbedRequestSchema, {
        model: "near",
        modelVersion: "3",
        texts,
        dimensions: 2,
        encoding: EmbeddingEncoding.FLOAT,
        cachePolicy: CachePolicy.BYPASS,
        metadata: { locale: "fr" },
      }),
      upstreamModel: "far-name",
      modelOptions: {},
      signal,
      deadline,
      headers: { "x-request-id": "r-9", "x-secret": "stays-here" },
    });

  it("asks for packed FP32 whatever the caller's encoding, forwards the rest, and answers the far vectors without its cached flags", async () => {
    far.received.length = 0;
    const sentAt = Date.now();
    const res = await embed(["ab", "cde", "f"], undefined, sentAt + 3000);
    expect(res.embeddings.map((e) => [e.index, numbersFromFp32(e.fp32), e.values, e.cached])).toEqual([
      [0, [2, 0], [], false],
      [1, [3, 1], [], false],
      [2, [1, 2], [], false],
    ]);
    // Each vector copied out of the received message.
    for (const e of res.embeddings) expect(e.fp32.buffer.byteLength).toBe(8);
    expect(res).toMatchObject({ dimensions: 2, usage: { promptTokens: 9, totalTokens: 9 }, model: "", modelVersion: "", upstream: "", cached: false });
    expect(far.received).toHaveLength(1);
    const got = far.received[0]!;
    expect(got.method).toBe("Embed");
    expect(got.request).toMatchObject({
      model: "far-name",
      model_version: "3",
      texts: ["ab", "cde", "f"],
      dimensions: 2,
      encoding: "EMBEDDING_ENCODING_FP32_BYTES",
      cache_policy: "CACHE_POLICY_BYPASS",
      metadata: { locale: "fr" },
    });
    const own = Object.fromEntries(Object.entries(got.metadata).filter(([k]) => k.startsWith("x-") || k === "authorization"));
    expect(own).toEqual({ "x-request-id": "r-9", "x-sidecar": "eu-west-1", authorization: "Bearer sidecar-secret-key" });
    // The caller's deadline, not the upstream's 60 s timeoutMs.
    expect(got.deadline - sentAt).toBeLessThan(30_000);
  });

  it("a far answer with the wrong count is UNAVAILABLE UPSTREAM_BAD_RESPONSE", async () => {
    const err = await embed(["one short", "b"]).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(GatewayError);
    expect(err).toMatchObject({ code: Code.Unavailable, reason: "UPSTREAM_BAD_RESPONSE", metadata: { upstream: "rec" } });
  });

  it("the caller's cancel cancels the far call", async () => {
    far.received.length = 0;
    const caller = new AbortController();
    const call = embed(["hang"], caller.signal).then(
      () => "answered",
      () => "failed",
    );
    await expect.poll(() => far.received.length, { timeout: 5_000 }).toBe(1);
    caller.abort(new Error("the caller went away"));
    expect(await call).toBe("failed");
    await expect.poll(() => far.received[0]!.cancelled, { timeout: 5_000 }).toBe(true);
  });
});

describe("infergate kind, pure parts", () => {
  const chatReq = create(ChatRequestSchema, { model: "near", messages: [{ role: 2, content: [{ part: { case: "text", value: "x" } }] }], metadata: { k: "v" } });

  it("forwarded requests replace the model only, without touching the caller's message", () => {
    expect(forwardedChat(chatReq, "far")).toEqual({ ...chatReq, model: "far" });
    expect(forwardedGenerate(chatReq, "far")).toEqual({ ...chatReq, $typeName: "infergate.v1.GenerateRequest", model: "far" });
    const p = create(PredictRequestSchema, { model: "near", modelVersion: "3", id: "i" });
    expect(forwardedPredict(p, "far")).toEqual({ ...p, model: "far" });
    expect([chatReq.model, p.model]).toEqual(["near", "near"]);
  });

  it("a forwarded Embed also asks for packed FP32", () => {
    const e = create(EmbedRequestSchema, { model: "near", texts: ["a"], dimensions: 4, encoding: EmbeddingEncoding.FLOAT, metadata: { k: "v" } });
    expect(forwardedEmbed(e, "far")).toEqual({ ...e, model: "far", encoding: EmbeddingEncoding.FP32_BYTES });
    expect([e.model, e.encoding]).toEqual(["near", EmbeddingEncoding.FLOAT]);
  });

  const far = (embeddings: { index: number; fp32?: Uint8Array; values?: number[]; cached?: boolean }[], dimensions = 2) =>
    create(EmbedResponseSchema, { embeddings, dimensions, model: "m", upstream: "u", cached: true, usage: { promptTokens: 5, totalTokens: 5 } });

  it("the far answer: vectors packed (numbers too), cached flags and names dropped, usage and dimensions kept", () => {
    const res = embedAnswer("hop", far([{ index: 0, fp32: fp32FromNumbers([1, 2]), cached: true }, { index: 1, values: [3, 4] }]), 2);
    expect(res.embeddings.map((e) => [e.index, numbersFromFp32(e.fp32), e.cached])).toEqual([
      [0, [1, 2], false],
      [1, [3, 4], false],
    ]);
    expect(res).toMatchObject({ dimensions: 2, model: "", upstream: "", cached: false, usage: { promptTokens: 5, totalTokens: 5 } });
  });

  it.each<[string, ReturnType<typeof far>, RegExp]>([
    ["too few", far([{ index: 0, fp32: fp32FromNumbers([1, 2]) }]), /1 embeddings for 2 inputs/],
    ["out of order", far([{ index: 1, fp32: fp32FromNumbers([1, 2]) }, { index: 0, fp32: fp32FromNumbers([1, 2]) }]), /embeddings\[0\] has index 1/],
    ["a vector of another length", far([{ index: 0, fp32: fp32FromNumbers([1, 2]) }, { index: 1, fp32: fp32FromNumbers([1]) }]), /embeddings\[1\] has 1 values where dimensions is 2/],
    ["no vector", far([{ index: 0, fp32: fp32FromNumbers([1, 2]) }, { index: 1 }]), /embeddings\[1\] has 0 values/],
    ["no dimensions", far([{ index: 0 }, { index: 1 }], 0), /embeddings\[0\] has 0 values where dimensions is 0/],
  ])("the far answer refused: %s", (_name, res, message) => {
    const err = gatewayErrorOf(() => embedAnswer("hop", res, 2));
    expect(err).toMatchObject({ code: Code.Unavailable, reason: "UPSTREAM_BAD_RESPONSE", metadata: { upstream: "hop" } });
    expect(err.message).toMatch(message);
  });

  it.each<[string, Record<string, string>, Parameters<typeof forwardedMetadata>[1], Record<string, string>]>([
    ["nothing configured", { "x-a": "1" }, { forwardHeaders: [], headers: {}, apiKey: undefined }, {}],
    ["allowlisted and present only", { "x-a": "1", "x-b": "2" }, { forwardHeaders: ["x-a", "x-c"], headers: {}, apiKey: undefined }, { "x-a": "1" }],
    ["configured headers win, lower-cased", { "x-a": "1" }, { forwardHeaders: ["x-a"], headers: { "X-A": "cfg", "X-Z": "z" }, apiKey: undefined }, { "x-a": "cfg", "x-z": "z" }],
    ["the apiKey wins over a forwarded authorization", { authorization: "Bearer caller" }, { forwardHeaders: ["authorization"], headers: {}, apiKey: "own" }, { authorization: "Bearer own" }],
    ["a forwarded authorization without an apiKey", { authorization: "Bearer caller" }, { forwardHeaders: ["authorization"], headers: {}, apiKey: undefined }, { authorization: "Bearer caller" }],
  ])("metadata: %s", (_name, caller, policy, metadata) => {
    expect(forwardedMetadata(caller, policy)).toEqual(metadata);
  });

  const listing = create(ListModelsResponseSchema, {
    models: [
      { name: "a", state: ModelState.READY },
      { name: "b", state: ModelState.NOT_READY },
      { name: "c", state: ModelState.UNSPECIFIED },
    ],
  });
  it.each<[string, Parameters<typeof modelStateOf>[0], string, ModelState]>([
    ["listed ready", listing, "a", ModelState.READY],
    ["listed not ready", listing, "b", ModelState.NOT_READY],
    ["listed, state unknown there", listing, "c", ModelState.UNSPECIFIED],
    ["not listed", listing, "z", ModelState.NOT_READY],
    ["far gateway not answering", undefined, "a", ModelState.NOT_READY],
    ["before the first answer", "pending", "a", ModelState.UNSPECIFIED],
  ])("state: %s", (_name, l, model, state) => {
    expect(modelStateOf(l, model)).toBe(state);
  });

  it.each<[string, GatewayError, boolean, Code, string]>([
    ["UNAUTHENTICATED with an own key", new GatewayError(Code.Unauthenticated, "no", { reason: "UNAUTHENTICATED" }), true, Code.Internal, "UPSTREAM_AUTH"],
    ["PERMISSION_DENIED with an own key", new GatewayError(Code.PermissionDenied, "no", { reason: "MODEL_NOT_ALLOWED" }), true, Code.Internal, "UPSTREAM_AUTH"],
    ["UNAUTHENTICATED of the caller's forwarded key", new GatewayError(Code.Unauthenticated, "no", { reason: "UNAUTHENTICATED" }), false, Code.Unauthenticated, "UNAUTHENTICATED"],
    ["PERMISSION_DENIED for another reason (the far upstream's own)", new GatewayError(Code.PermissionDenied, "no", { reason: "UPSTREAM_ERROR" }), true, Code.PermissionDenied, "UPSTREAM_ERROR"],
    ["other errors", new GatewayError(Code.NotFound, "no", { reason: "MODEL_NOT_FOUND" }), true, Code.NotFound, "MODEL_NOT_FOUND"],
  ])("errors: %s", (_name, err, hasKey, code, reason) => {
    const out = ownCredentialRefused(err, "hop", hasKey) as GatewayError;
    expect([out.code, out.reason]).toEqual([code, reason]);
  });

  it.each([
    [{ forwardHeaders: ["X-Request-Id"] }, "forwardHeaders.0"],
    [{ forwardHeaders: ["grpc-timeout"] }, "forwardHeaders.0"],
    [{ forwardHeaders: ["x-trace-bin"] }, "forwardHeaders.0"],
    [{ readinessTtlMs: 0 }, "readinessTtlMs"],
    [{ retries: 2 }, ""],
  ])("options: rejects %j", (options, path) => {
    const r = infergateOptionsSchema.safeParse(options);
    expect(r.success).toBe(false);
    expect(r.error!.issues.map((i) => i.path.join("."))).toEqual([path]);
  });

  it("options: defaults", () => {
    expect(infergateOptionsSchema.parse({})).toEqual({ forwardHeaders: [], readinessTtlMs: 5000, maxMessageBytes: 4 * 1024 * 1024 });
  });
});
