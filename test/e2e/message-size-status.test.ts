/**
 * Issue 17, defect 8: a call that fails because a message is over a size limit is recorded with
 * the status the client got, and the client gets a reason. The real process runs with
 * `server.maxMessageBytes: 65536` in front of fakes on loopback that answer as big as asked (the
 * upstream model `big-<n>`: n characters of text, or n INT32 elements); a real gRPC client calls,
 * and connect-es's clients call the HTTP listener in each of its protocols (there connect-node
 * encodes an answer after the handler returned: before, such a call was logged and counted OK).
 *
 * - An answer too big for the client (Chat, Generate's second event, Predict from the mock): the
 *   client gets RESOURCE_EXHAUSTED with ErrorInfo reason MESSAGE_TOO_LARGE, and the call's log
 *   line and `infergate_requests_total` say RESOURCE_EXHAUSTED, not OK (before: grpc-js refused
 *   to send the answer after the gateway had reported the call OK, and the client's error had no
 *   ErrorInfo).
 * - An upstream's answer over the upstream's own limit (gRPC kinds' `maxMessageBytes`, HTTP kinds'
 *   `http.maxResponseBytes`): RESOURCE_EXHAUSTED, reason UPSTREAM_MESSAGE_TOO_LARGE (before: gRPC
 *   ones were UPSTREAM_RATE_LIMITED, HTTP ones UNAVAILABLE UPSTREAM_BAD_RESPONSE).
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import type { Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { GRPCInferenceService, ModelInferResponseSchema, ModelReadyResponseSchema, type ModelInferRequest } from "../../gen/inference/grpc_service_pb.js";
import { Role } from "../../gen/infergate/v1/chat_pb.js";
import {
  ChatResponseSchema,
  type ChatRequest,
  GenerateResponseSchema,
  type GenerateRequest,
  InferenceService,
  ListModelsResponseSchema,
} from "../../gen/infergate/v1/inference_service_pb.js";
import { DataType } from "../../gen/infergate/v1/tensor_pb.js";
import { grpcServiceDefinition } from "../fakes/triton-fake.js";
import { parseMetrics } from "../helpers/metrics.js";
import { type ServerProcess, startProcess } from "../helpers/servers.js";

const sizeOf = (model: string) => Number(/^big-(\d+)$/.exec(model)?.[1] ?? 0);

/** An OpenAI-compatible upstream whose answer to model `big-<n>` is n characters (a stream: "ok ", then them). */
async function startHttpFake(): Promise<Server> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { model: string; stream?: boolean };
      const text = "x".repeat(sizeOf(body.model));
      if (body.stream === true) {
        const chunk = (delta: object, finish: string | null) => `data: ${JSON.stringify({ id: "c", object: "chat.completion.chunk", created: 0, model: body.model, choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;
        res.writeHead(200, { "content-type": "text/event-stream" });
        res.end(`${chunk({ role: "assistant", content: "ok " }, null)}${chunk({ content: text }, null)}${chunk({}, "stop")}data: [DONE]\n\n`);
        return;
      }
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ id: "c", object: "chat.completion", created: 0, model: body.model, choices: [{ index: 0, message: { role: "assistant", content: text }, finish_reason: "stop" }] }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  return server;
}

/** Another infergate (Chat, Generate) and a KServe server (ModelInfer) answering `big-<n>` as big. */
async function startGrpcFake(): Promise<{ server: grpc.Server; port: number }> {
  const server = new grpc.Server();
  server.addService(grpcServiceDefinition(InferenceService), {
    Chat: (call: grpc.ServerUnaryCall<ChatRequest, unknown>, callback: grpc.sendUnaryData<unknown>) =>
      callback(null, create(ChatResponseSchema, { id: "c", message: { role: Role.ASSISTANT, content: [{ part: { case: "text", value: "x".repeat(sizeOf(call.request.model)) } }] } })),
    Generate: (call: grpc.ServerWritableStream<GenerateRequest, unknown>) => {
      call.write(create(GenerateResponseSchema, { event: { case: "textDelta", value: "ok " } }));
      call.write(create(GenerateResponseSchema, { event: { case: "textDelta", value: "x".repeat(sizeOf(call.request.model)) } }));
      call.end();
    },
    ListModels: (_call: unknown, callback: grpc.sendUnaryData<unknown>) => callback(null, create(ListModelsResponseSchema, {})),
  });
  server.addService(grpcServiceDefinition(GRPCInferenceService), {
    ModelInfer: (call: grpc.ServerUnaryCall<ModelInferRequest, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      const n = sizeOf(call.request.modelName);
      callback(null, create(ModelInferResponseSchema, { modelName: call.request.modelName, outputs: [{ name: "OUTPUT0", datatype: "INT32", shape: [BigInt(n)], contents: { intContents: new Array<number>(n).fill(7) } }] }));
    },
    ModelReady: (_call: unknown, callback: grpc.sendUnaryData<unknown>) => callback(null, create(ModelReadyResponseSchema, { ready: true })),
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { server, port };
}

let httpFake: Server;
let grpcFake: { server: grpc.Server; port: number };
let gateway: ServerProcess;
let gatewayClosed: Promise<unknown>;
const dir = mkdtempSync(join(tmpdir(), "infergate-message-size-"));

beforeAll(async () => {
  httpFake = await startHttpFake();
  grpcFake = await startGrpcFake();
  const http = `http://127.0.0.1:${(httpFake.address() as AddressInfo).port}/v1`;
  const grpcUrl = `http://127.0.0.1:${grpcFake.port}`;
  const once1 = "resilience: { breaker: { enabled: false }, retry: { maxAttempts: 1 } }";
  const yaml = `server: { maxMessageBytes: 65536 }
upstreams:
  - { name: mock, kind: mock }
  - { name: oai, kind: openai, endpoints: ["${http}"], ${once1} }
  - { name: oai-small, kind: openai, endpoints: ["${http}"], ${once1}, options: { http: { maxResponseBytes: 4096 } } }
  - { name: far, kind: infergate, endpoints: ["${grpcUrl}"], ${once1}, options: { maxMessageBytes: 4096 } }
  - { name: triton, kind: kserve, endpoints: ["${grpcUrl}"], ${once1}, options: { maxMessageBytes: 4096 } }
models:
  - { name: mock-predict, upstream: mock, cache: { policy: "off" } }
  - { name: fits, upstream: oai, upstreamModel: big-1000, cache: { policy: "off" } }
  - { name: too-big, upstream: oai, upstreamModel: big-100000, cache: { policy: "off" } }
  - { name: up-http, upstream: oai-small, upstreamModel: big-8000, cache: { policy: "off" } }
  - { name: up-far, upstream: far, upstreamModel: big-8000, cache: { policy: "off" } }
  - { name: up-kserve, upstream: triton, upstreamModel: big-8000, cache: { policy: "off" } }
`;
  const path = join(dir, "gateway.yaml");
  writeFileSync(path, yaml);
  gateway = await startProcess(["--config", path]);
  gatewayClosed = once(gateway.proc, "close");
});

afterAll(async () => {
  await gateway?.stop();
  await new Promise((resolve) => httpFake?.close(resolve));
  grpcFake?.server.forceShutdown();
  rmSync(dir, { recursive: true, force: true });
});

/** The gRPC listener, and the HTTP listener in each of its protocols and codecs. */
const transports: Record<string, () => Transport> = {
  grpc: () => createGrpcTransport({ baseUrl: `http://${gateway.grpcAddress}` }),
  "connect-json": () => createConnectTransport({ baseUrl: `http://${gateway.httpAddress}`, httpVersion: "1.1" }),
  "connect-proto": () => createConnectTransport({ baseUrl: `http://${gateway.httpAddress}`, httpVersion: "1.1", useBinaryFormat: true }),
  "grpc-web": () => createGrpcWebTransport({ baseUrl: `http://${gateway.httpAddress}`, httpVersion: "1.1" }),
  "http-grpc": () => createGrpcTransport({ baseUrl: `http://${gateway.httpAddress}` }),
};
const overHttp = Object.keys(transports).filter((t) => t !== "grpc");
const ask = (model: string) => ({ model, messages: [{ role: Role.USER, content: [{ part: { case: "text" as const, value: "hello" } }] }] });
/** One FP32 input of n elements: the mock answers two outputs as big (OUTPUT0 = OUTPUT1 = the input). */
const predictOf = (model: string, n: number) => ({
  model,
  inputs: [{ name: "INPUT0", datatype: DataType.FP32, shape: [BigInt(n)], data: { case: "contents" as const, value: { fp32Contents: new Array<number>(n).fill(1.5) } } }],
});

/** What each call gave, by its request id: [code, reason, events received before the end]. */
const outcomes = new Map<string, [Code | "OK", string | undefined, number]>();

async function run(id: string, rpc: "chat" | "generate" | "predict", arg: ReturnType<typeof ask> | ReturnType<typeof predictOf>, transport = "grpc"): Promise<void> {
  const c = createClient(InferenceService, transports[transport]!());
  const headers = { "x-request-id": id };
  let events = 0;
  try {
    if (rpc === "chat") await c.chat(arg as ReturnType<typeof ask>, { headers });
    else if (rpc === "predict") await c.predict(arg as ReturnType<typeof predictOf>, { headers });
    else for await (const _ of c.generate(arg as ReturnType<typeof ask>, { headers })) events++;
    outcomes.set(id, ["OK", undefined, events]);
  } catch (e) {
    const err = ConnectError.from(e);
    outcomes.set(id, [err.code, err.findDetails(ErrorInfoSchema)[0]?.reason, events]);
  }
}

describe.sequential("issue 17, defect 8: message-size failures are recorded as the client got them", () => {
  it("answers within the limit are OK", async () => {
    await run("fits-chat", "chat", ask("fits"));
    await run("fits-generate", "generate", ask("fits"));
    await run("fits-predict", "predict", predictOf("mock-predict", 4000));
    expect(outcomes.get("fits-chat")).toEqual(["OK", undefined, 0]);
    // "ok ", the text, the final event
    expect(outcomes.get("fits-generate")).toEqual(["OK", undefined, 3]);
    expect(outcomes.get("fits-predict")).toEqual(["OK", undefined, 0]);
  });

  it("an answer too big for the client: RESOURCE_EXHAUSTED, MESSAGE_TOO_LARGE (Chat, Generate, Predict)", async () => {
    await run("client-chat", "chat", ask("too-big"));
    await run("client-generate", "generate", ask("too-big"));
    // 10,000 FP32 elements in (40 KB), two outputs of 40 KB each out: over 64 KiB.
    await run("client-predict", "predict", predictOf("mock-predict", 10_000));
    expect(outcomes.get("client-chat")).toEqual([Code.ResourceExhausted, "MESSAGE_TOO_LARGE", 0]);
    // The first event went out; the second was too big.
    expect(outcomes.get("client-generate")).toEqual([Code.ResourceExhausted, "MESSAGE_TOO_LARGE", 1]);
    expect(outcomes.get("client-predict")).toEqual([Code.ResourceExhausted, "MESSAGE_TOO_LARGE", 0]);
    // The gateway keeps serving on the same connections.
    await run("after", "chat", ask("fits"));
    expect(outcomes.get("after")).toEqual(["OK", undefined, 0]);
  });

  it("the same over the HTTP listener: Connect (JSON and binary), gRPC-Web, gRPC", async () => {
    for (const t of overHttp) {
      await run(`${t}-client-chat`, "chat", ask("too-big"), t);
      await run(`${t}-client-generate`, "generate", ask("too-big"), t);
      await run(`${t}-client-predict`, "predict", predictOf("mock-predict", 10_000), t);
      await run(`${t}-fits-chat`, "chat", ask("fits"), t);
      expect([t, outcomes.get(`${t}-client-chat`)]).toEqual([t, [Code.ResourceExhausted, "MESSAGE_TOO_LARGE", 0]]);
      expect([t, outcomes.get(`${t}-client-generate`)]).toEqual([t, [Code.ResourceExhausted, "MESSAGE_TOO_LARGE", 1]]);
      expect([t, outcomes.get(`${t}-client-predict`)]).toEqual([t, [Code.ResourceExhausted, "MESSAGE_TOO_LARGE", 0]]);
      expect([t, outcomes.get(`${t}-fits-chat`)]).toEqual([t, ["OK", undefined, 0]]);
    }
  });

  it("an upstream's answer over its own limit: RESOURCE_EXHAUSTED, UPSTREAM_MESSAGE_TOO_LARGE", async () => {
    await run("up-http-chat", "chat", ask("up-http"));
    await run("up-far-chat", "chat", ask("up-far"));
    await run("up-far-generate", "generate", ask("up-far"));
    await run("up-kserve-predict", "predict", predictOf("up-kserve", 1));
    for (const id of ["up-http-chat", "up-far-chat", "up-kserve-predict"]) {
      expect([id, outcomes.get(id)]).toEqual([id, [Code.ResourceExhausted, "UPSTREAM_MESSAGE_TOO_LARGE", 0]]);
    }
    expect(outcomes.get("up-far-generate")).toEqual([Code.ResourceExhausted, "UPSTREAM_MESSAGE_TOO_LARGE", 1]);
  });

  it("the call log lines and infergate_requests_total record the status each client got", async () => {
    const metrics = parseMetrics(await (await fetch(`http://${gateway.adminAddress}/metrics`)).text());
    expect(await gateway.stop()).toBe(0);
    await gatewayClosed;
    const calls = gateway.lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l["msg"] === "call");
    const codeName = (c: Code | "OK") => (c === "OK" ? "OK" : c === Code.ResourceExhausted ? "RESOURCE_EXHAUSTED" : String(c));
    for (const [id, [code, reason]] of outcomes) {
      const line = calls.filter((c) => c["requestId"] === id);
      expect(line.map((l) => [id, l["code"], l["reason"]])).toEqual([[id, codeName(code), reason]]);
    }
    const counted = (rpc: string, model: string, code: string) =>
      [...metrics].filter(([k]) => k.startsWith("infergate_requests_total{") && k.includes(`rpc="${rpc}"`) && k.includes(`model="${model}"`) && k.includes(`code="${code}"`)).reduce((n, [, v]) => n + v, 0);
    // One of each from the gRPC listener, and one per protocol of the HTTP listener.
    const n = 1 + overHttp.length;
    expect(counted("Chat", "too-big", "RESOURCE_EXHAUSTED")).toBe(n);
    expect(counted("Chat", "too-big", "OK")).toBe(0);
    expect(counted("Generate", "too-big", "RESOURCE_EXHAUSTED")).toBe(n);
    expect(counted("Generate", "too-big", "OK")).toBe(0);
    expect(counted("Predict", "mock-predict", "RESOURCE_EXHAUSTED")).toBe(n);
    expect(counted("Predict", "mock-predict", "OK")).toBe(1);
    expect(counted("Chat", "fits", "OK")).toBe(2 + overHttp.length);
    expect(counted("Predict", "up-kserve", "RESOURCE_EXHAUSTED")).toBe(1);
  });
});
