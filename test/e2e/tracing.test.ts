/**
 * Tracing end to end (issue 20, item 1): a grpc-js client → infergate A (kind infergate) →
 * infergate B (kind openai) → the OpenAI fake, over real loopback ports, both gateways exporting
 * to an OTLP/HTTP receiver in this process that decodes the protobuf payload
 * (test/helpers/otlp-receiver.ts). One trace id across A's and B's server and client spans and the
 * traceparent the fake received, each span the child of the one before; a caller's traceparent
 * continued (gRPC metadata, and HTTP headers on the Connect listener and the OpenAI ingress); retries and fallbacks as
 * separate attempt spans; the trace id in the call's log line; a collector that is down never
 * failing a call and logged once; sampling ratio 0 exporting nothing while the context still
 * travels; what is queued exported on graceful stop.
 */
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { App } from "../../src/server/app.js";
import { refusingUrl, type ScriptedUpstream, startScriptedUpstream } from "../faults/helpers/scripted-upstream.js";
import { createOpenAIFake, type OpenAIFake } from "../fakes/openai-fake.js";
import { type OtlpReceiver, type ReceivedSpan, startOtlpReceiver } from "../helpers/otlp-receiver.js";
import { inferenceClient, type ProtoClient } from "../helpers/proto-clients.js";
import { startInProcess } from "../helpers/servers.js";

type Obj = Record<string, unknown>;

const chat = (model: string, text: string) => ({ model, messages: [{ role: "ROLE_USER", content: [{ text }] }] });
const traceparentOf = /^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])$/;

/** A logger whose JSON lines land in `lines`. */
function capture(): { log: pino.Logger; lines: Obj[] } {
  const lines: Obj[] = [];
  return { log: pino({ level: "info" }, { write: (s: string) => void lines.push(JSON.parse(s) as Obj) }), lines };
}

function tracing(endpoint: string, service: string, extra = ""): string {
  return `
tracing:
  endpoint: "${endpoint}"
  serviceName: ${service}
  scheduledDelayMs: 20
  exportTimeoutMs: 200
${extra}`;
}

/** Waits for what takes several export rounds (each up to the export timeout above). */
const rounds = { timeout: 30_000, interval: 50 };

describe("tracing across two chained gateways", () => {
  let receiver: OtlpReceiver;
  let fake: OpenAIFake;
  let scripted: ScriptedUpstream;
  let appB: App;
  let appA: App;
  let logA: Obj[];
  let clientA: ProtoClient;
  let clientB: ProtoClient;

  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    fake = await createOpenAIFake();
    scripted = await startScriptedUpstream(() => ({ kind: "answer", tokens: ["ok"] }));
    const down = await refusingUrl();
    appB = await startInProcess(`
${tracing(receiver.url, "gateway-b")}
upstreams:
  - { name: oa, kind: openai, endpoints: ["${fake.baseUrl}"], apiKey: "sk-fake-secret-123" }
  - name: flaky
    kind: openai
    endpoints: ["${scripted.baseUrl}"]
    resilience: { retry: { maxAttempts: 3, backoffBaseMs: 1, backoffMaxMs: 2 } }
  - { name: gone, kind: openai, endpoints: ["${down}/v1"], resilience: { retry: { maxAttempts: 1 } } }
models:
  - { name: far-chat, upstream: oa, upstreamModel: gpt-fake, cache: { policy: "off" } }
  - { name: flaky-chat, upstream: flaky, upstreamModel: gpt-flaky, cache: { policy: "off" } }
  - { name: gone-chat, upstream: gone, upstreamModel: gpt-gone, cache: { policy: "off" }, fallbacks: [far-chat] }
`);
    const a = capture();
    logA = a.lines;
    appA = await startInProcess(
      `
${tracing(receiver.url, "gateway-a")}
upstreams:
  - { name: hop, kind: infergate, endpoints: ["http://${appB.grpcAddress}"], resilience: { retry: { maxAttempts: 1 } } }
models:
  - { name: near-chat, upstream: hop, upstreamModel: far-chat, cache: { policy: "off" } }
`,
      a.log,
    );
    clientA = inferenceClient(appA.grpcAddress);
    clientB = inferenceClient(appB.grpcAddress);
  });

  afterAll(async () => {
    clientA?.close();
    clientB?.close();
    await appA?.shutdown();
    await appB?.shutdown();
    await fake?.close();
    await scripted?.close();
    await receiver?.close();
  });

  /** The spans of one trace once `count` have arrived. */
  async function traceSpans(traceId: string, count: number): Promise<ReceivedSpan[]> {
    await expect.poll(() => receiver.spans.filter((s) => s.traceId === traceId).length).toBeGreaterThanOrEqual(count);
    return receiver.spans.filter((s) => s.traceId === traceId);
  }

  const only = (spans: ReceivedSpan[], service: string, kind: ReceivedSpan["kind"]) => {
    const found = spans.filter((s) => s.service === service && s.kind === kind);
    expect(found, `${service} ${kind}`).toHaveLength(1);
    return found[0]!;
  };

  it("one trace: A's server and client spans, B's server and client spans, and the traceparent the fake received", async () => {
    const before = fake.requests.length;
    const res = await clientA.unary<Obj>("Chat", chat("near-chat", "trace me please"), { headers: { "x-request-id": "trace-chain-1" } });
    expect(res).toMatchObject({ model: "near-chat", upstream: "hop" });

    // The fake got a W3C traceparent: the trace id and B's attempt span as its parent.
    const sent = fake.requests[before]!.headers["traceparent"];
    const [, traceId, parentOfFake, flags] = traceparentOf.exec(String(sent)) ?? [];
    expect(flags).toBe("01");

    const spans = await traceSpans(traceId!, 4);
    expect(spans).toHaveLength(4);
    const aServer = only(spans, "gateway-a", "SERVER");
    const aClient = only(spans, "gateway-a", "CLIENT");
    const bServer = only(spans, "gateway-b", "SERVER");
    const bClient = only(spans, "gateway-b", "CLIENT");
    // Parent → child, hop by hop.
    expect(aServer.parentSpanId).toBe("");
    expect(aClient.parentSpanId).toBe(aServer.spanId);
    expect(bServer.parentSpanId).toBe(aClient.spanId);
    expect(bClient.parentSpanId).toBe(bServer.spanId);
    expect(parentOfFake).toBe(bClient.spanId);

    expect(aServer).toMatchObject({ name: "infergate.v1.InferenceService/Chat", status: { code: "UNSET" } });
    expect(aServer.attributes).toMatchObject({
      "rpc.method": "Chat",
      "rpc.grpc.status_code": 0,
      "gen_ai.operation.name": "chat",
      "gen_ai.request.model": "near-chat",
      "gen_ai.response.model": "near-chat",
      "gen_ai.response.finish_reasons": ["stop"],
      "gen_ai.usage.input_tokens": 3,
      "gen_ai.usage.output_tokens": 3,
      "infergate.request_id": "trace-chain-1",
      "infergate.served_by": "hop",
      "infergate.attempts": 1,
      "infergate.session": false,
    });
    expect(aClient).toMatchObject({ name: "chat far-chat" });
    expect(aClient.attributes).toMatchObject({
      "gen_ai.operation.name": "chat",
      "gen_ai.provider.name": "infergate",
      "gen_ai.request.model": "far-chat",
      "infergate.upstream": "hop",
      "infergate.attempt": 1,
      "infergate.breaker.state": "closed",
      "url.full": `http://${appB.grpcAddress}`,
    });
    expect(bServer.attributes).toMatchObject({ "gen_ai.request.model": "far-chat", "infergate.served_by": "oa", "gen_ai.usage.output_tokens": 3 });
    expect(bClient).toMatchObject({ name: "chat gpt-fake" });
    expect(bClient).toMatchObject({ status: { code: "UNSET" } });
    expect(bClient.attributes).toMatchObject({
      "gen_ai.operation.name": "chat",
      "gen_ai.provider.name": "openai",
      "gen_ai.request.model": "gpt-fake",
      "infergate.upstream": "oa",
      "url.full": fake.baseUrl,
    });
    // No prompt or completion text, and no credential, in any attribute.
    const everything = JSON.stringify(spans);
    expect(everything).not.toContain("trace me please");
    expect(everything).not.toContain("You said");
    expect(everything).not.toContain("sk-fake-secret-123");

    // The trace id is in A's log line of the call; x-request-id as before.
    await expect.poll(() => logA.find((l) => l["msg"] === "call" && l["requestId"] === "trace-chain-1")).toMatchObject({ traceId });
  });

  it("continues the trace a client sent in gRPC metadata (traceparent, tracestate)", async () => {
    const clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736";
    const clientSpan = "00f067aa0ba902b7";
    const before = fake.requests.length;
    await clientA.serverStream<Obj>("Generate", chat("near-chat", "a streamed one"), {
      headers: { traceparent: `00-${clientTrace}-${clientSpan}-01`, tracestate: "vendor=opaque" },
    }).done;
    expect(String(fake.requests[before]!.headers["traceparent"])).toMatch(new RegExp(`^00-${clientTrace}-[0-9a-f]{16}-01$`));
    expect(fake.requests[before]!.headers["tracestate"]).toBe("vendor=opaque");
    const spans = await traceSpans(clientTrace, 4);
    const aServer = only(spans, "gateway-a", "SERVER");
    expect(aServer).toMatchObject({ parentSpanId: clientSpan, traceState: "vendor=opaque", name: "infergate.v1.InferenceService/Generate" });
    expect(only(spans, "gateway-b", "CLIENT").attributes).toMatchObject({ "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-fake" });
    expect(only(spans, "gateway-b", "SERVER").attributes).toMatchObject({ "rpc.method": "Generate", "gen_ai.response.finish_reasons": ["stop"] });
  });

  it("continues the trace a client sent in HTTP headers to the OpenAI ingress", async () => {
    const clientTrace = "0af7651916cd43dd8448eb211c80319c";
    const clientSpan = "b7ad6b7169203331";
    const res = await fetch(`http://${appA.httpAddress}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", traceparent: `00-${clientTrace}-${clientSpan}-01` },
      body: JSON.stringify({ model: "near-chat", messages: [{ role: "user", content: "over http" }] }),
    });
    expect(res.status).toBe(200);
    const spans = await traceSpans(clientTrace, 4);
    expect(only(spans, "gateway-a", "SERVER").parentSpanId).toBe(clientSpan);
    expect(only(spans, "gateway-b", "SERVER").parentSpanId).toBe(only(spans, "gateway-a", "CLIENT").spanId);
  });

  it.each([
    ["the Anthropic Messages API", "/v1/messages", "1a2b3c4d5e6f70811a2b3c4d5e6f7081", { model: "near-chat", max_tokens: 16, messages: [{ role: "user", content: "over anthropic" }] }],
    ["the Responses API", "/v1/responses", "9f8e7d6c5b4a39289f8e7d6c5b4a3928", { model: "near-chat", input: "over responses" }],
  ])("continues the trace a client sent in HTTP headers to %s", async (_name, path, clientTrace, body) => {
    const clientSpan = "00f067aa0ba902b7";
    const res = await fetch(`http://${appA.httpAddress}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json", traceparent: `00-${clientTrace}-${clientSpan}-01` },
      body: JSON.stringify(body),
    });
    expect(res.status, await res.clone().text()).toBe(200);
    const spans = await traceSpans(clientTrace, 4);
    expect(only(spans, "gateway-a", "SERVER").parentSpanId).toBe(clientSpan);
    expect(only(spans, "gateway-b", "SERVER").parentSpanId).toBe(only(spans, "gateway-a", "CLIENT").spanId);
  });

  it("continues the trace a client sent in HTTP headers to the Connect listener", async () => {
    const clientTrace = "c0ffee00c0ffee00c0ffee00c0ffee00";
    const clientSpan = "0123456789abcdef";
    const res = await fetch(`http://${appA.httpAddress}/infergate.v1.InferenceService/Chat`, {
      method: "POST",
      headers: { "content-type": "application/json", traceparent: `00-${clientTrace}-${clientSpan}-01` },
      body: JSON.stringify({ model: "near-chat", messages: [{ role: "ROLE_USER", content: [{ text: "over connect" }] }] }),
    });
    expect(res.status).toBe(200);
    const spans = await traceSpans(clientTrace, 4);
    expect(only(spans, "gateway-a", "SERVER").parentSpanId).toBe(clientSpan);
    expect(only(spans, "gateway-b", "CLIENT").parentSpanId).toBe(only(spans, "gateway-b", "SERVER").spanId);
  });

  it("retries are separate attempt spans under the call's server span", async () => {
    scripted.script((i) => (i === 0 ? { kind: "status", status: 503 } : { kind: "answer", tokens: ["fine"] }));
    const traceId = "11111111111111111111111111111111";
    await clientB.unary<Obj>("Chat", chat("flaky-chat", "retry me"), { headers: { traceparent: `00-${traceId}-2222222222222222-01` } });
    const spans = await traceSpans(traceId, 3);
    const server = only(spans, "gateway-b", "SERVER");
    const attempts = spans.filter((s) => s.kind === "CLIENT").sort((x, y) => Number(x.attributes["infergate.attempt"]) - Number(y.attributes["infergate.attempt"]));
    expect(attempts.map((s) => [s.parentSpanId, s.attributes["infergate.attempt"], s.status.code, s.attributes["url.full"]])).toEqual([
      [server.spanId, 1, "ERROR", scripted.baseUrl],
      [server.spanId, 2, "UNSET", scripted.baseUrl],
    ]);
    expect(attempts[0]!.attributes["error.type"]).toBe("UPSTREAM_UNAVAILABLE");
    expect(server.attributes).toMatchObject({ "infergate.attempts": 2, "rpc.grpc.status_code": 0 });
  });

  it("a fallback is its own attempt span, under the same server span", async () => {
    const traceId = "33333333333333333333333333333333";
    await clientB.unary<Obj>("Chat", chat("gone-chat", "fall back"), { headers: { traceparent: `00-${traceId}-4444444444444444-01` } });
    const spans = await traceSpans(traceId, 3);
    const server = only(spans, "gateway-b", "SERVER");
    const clients = spans.filter((s) => s.kind === "CLIENT");
    expect(clients.map((s) => [s.parentSpanId, s.attributes["infergate.upstream"], s.status.code]).sort()).toEqual(
      [
        [server.spanId, "gone", "ERROR"],
        [server.spanId, "oa", "UNSET"],
      ].sort(),
    );
    expect(server.attributes).toMatchObject({ "infergate.served_by": "oa", "infergate.attempts": 2 });
  });
});

describe("tracing when the collector is down, when nothing is sampled, and at a graceful stop", () => {
  it("a collector that is down never fails a call: its failures are counted, and logged once", async () => {
    const receiver = await startOtlpReceiver();
    receiver.failing = true;
    const { log, lines } = capture();
    const app = await startInProcess(
      `${tracing(receiver.url, "gateway-down")}
upstreams: [{ name: m, kind: mock }]
models: [{ name: echo, upstream: m, cache: { policy: "off" } }]
`,
      log,
    );
    const client = inferenceClient(app.grpcAddress);
    try {
      const failures = async () => {
        const text = await (await fetch(`http://${app.adminAddress}/metrics`)).text();
        return Number(/^infergate_tracing_export_failures_total (\d+)/m.exec(text)?.[1] ?? "0");
      };
      // Calls go on while exports fail, one after another.
      await expect
        .poll(async () => {
          await client.unary<Obj>("Chat", chat("echo", "still answered"));
          return failures();
        }, rounds)
        .toBeGreaterThanOrEqual(3);
      const text = await (await fetch(`http://${app.adminAddress}/metrics`)).text();
      expect(Number(/^infergate_tracing_dropped_spans_total (\d+)/m.exec(text)?.[1])).toBeGreaterThanOrEqual(3);
      const outage = lines.filter((l) => String(l["msg"]).startsWith("tracing: exporting spans failed"));
      expect(outage).toHaveLength(1);
      expect(outage[0]).toMatchObject({ level: 40, endpoint: receiver.url });
      expect(lines.filter((l) => l["msg"] === "call").every((l) => l["code"] === "OK")).toBe(true);
      // Back up: the recovery is logged once, and spans arrive.
      receiver.failing = false;
      await expect
        .poll(async () => {
          await client.unary<Obj>("Chat", chat("echo", "after the outage"));
          return receiver.spans.length;
        }, rounds)
        .toBeGreaterThan(0);
      expect(lines.filter((l) => l["msg"] === "tracing: exporting spans works again")).toHaveLength(1);
    } finally {
      client.close();
      await app.shutdown();
      await receiver.close();
    }
  });

  it("sampling ratio 0: nothing is exported, and the trace context still reaches the upstream (not sampled)", async () => {
    const receiver = await startOtlpReceiver();
    const fake = await createOpenAIFake();
    // B records what its caller sampled (parent-based); A samples nothing of its own.
    const appB = await startInProcess(`${tracing(receiver.url, "b")}
upstreams: [{ name: oa, kind: openai, endpoints: ["${fake.baseUrl}"] }]
models: [{ name: far-chat, upstream: oa, cache: { policy: "off" } }]
`);
    const appA = await startInProcess(`${tracing(receiver.url, "a", "  samplingRatio: 0\n  scheduledDelayMs: 600000")}
upstreams: [{ name: hop, kind: infergate, endpoints: ["http://${appB.grpcAddress}"] }]
models: [{ name: near-chat, upstream: hop, upstreamModel: far-chat, cache: { policy: "off" } }]
`.replace("  scheduledDelayMs: 20\n", ""));
    const clientA = inferenceClient(appA.grpcAddress);
    const clientB = inferenceClient(appB.grpcAddress);
    try {
      await clientA.unary<Obj>("Chat", chat("near-chat", "unsampled"));
      const [, traceId, , flags] = traceparentOf.exec(String(fake.requests[0]!.headers["traceparent"])) ?? [];
      expect(flags).toBe("00");
      // A sampled call to B afterwards: once its spans are in, B's export of anything before it is too.
      const marker = "55555555555555555555555555555555";
      await clientB.unary<Obj>("Chat", chat("far-chat", "sampled"), { headers: { traceparent: `00-${marker}-6666666666666666-01` } });
      await expect.poll(() => receiver.spans.filter((s) => s.traceId === marker).length).toBe(2);
      // A's graceful stop exports whatever it holds: nothing.
      await appA.shutdown();
      expect(receiver.spans.filter((s) => s.traceId === traceId)).toEqual([]);
      expect(receiver.spans.filter((s) => s.service === "a")).toEqual([]);
    } finally {
      clientA.close();
      clientB.close();
      await appA.shutdown();
      await appB.shutdown();
      await fake.close();
      await receiver.close();
    }
  });

  it("off (no tracing.endpoint): no trace context goes upstream, no trace id in the log line, no tracing metrics but zeros", async () => {
    const fake = await createOpenAIFake();
    const { log, lines } = capture();
    const app = await startInProcess(
      `
upstreams: [{ name: oa, kind: openai, endpoints: ["${fake.baseUrl}"] }]
models: [{ name: far-chat, upstream: oa, cache: { policy: "off" } }]
`,
      log,
    );
    const client = inferenceClient(app.grpcAddress);
    try {
      await client.unary<Obj>("Chat", chat("far-chat", "untraced"), {
        headers: { "x-request-id": "untraced-1", traceparent: "00-99999999999999999999999999999999-aaaaaaaaaaaaaaaa-01" },
      });
      expect(fake.requests[0]!.headers["traceparent"]).toBeUndefined();
      expect(fake.requests[0]!.headers["tracestate"]).toBeUndefined();
      await expect.poll(() => lines.find((l) => l["msg"] === "call" && l["requestId"] === "untraced-1")).toBeDefined();
      expect(lines.find((l) => l["requestId"] === "untraced-1")!["traceId"]).toBeUndefined();
      const text = await (await fetch(`http://${app.adminAddress}/metrics`)).text();
      expect(text).toMatch(/^infergate_tracing_export_failures_total 0$/m);
      expect(text).toMatch(/^infergate_tracing_dropped_spans_total 0$/m);
    } finally {
      client.close();
      await app.shutdown();
      await fake.close();
    }
  });

  it("a graceful stop exports the spans still queued", async () => {
    const receiver = await startOtlpReceiver();
    const app = await startInProcess(
      `${tracing(receiver.url, "stopping").replace("scheduledDelayMs: 20", "scheduledDelayMs: 600000")}
upstreams: [{ name: m, kind: mock }]
models: [{ name: echo, upstream: m, cache: { policy: "off" } }]
`,
    );
    const client = inferenceClient(app.grpcAddress);
    const traceId = "77777777777777777777777777777777";
    await client.unary<Obj>("Chat", chat("echo", "queued"), { headers: { traceparent: `00-${traceId}-8888888888888888-01` } });
    client.close();
    expect(receiver.requests).toBe(0);
    await app.shutdown();
    // The server span and the mock's attempt span (an in-process upstream: no endpoint).
    const spans = receiver.spans.filter((s) => s.traceId === traceId);
    expect(spans.map((s) => s.kind).sort()).toEqual(["CLIENT", "SERVER"]);
    expect(spans.find((s) => s.kind === "CLIENT")!.attributes).toMatchObject({ "gen_ai.provider.name": "mock", "infergate.upstream": "m" });
    expect(spans.find((s) => s.kind === "CLIENT")!.attributes["url.full"]).toBeUndefined();
    await receiver.close();
  });
});
