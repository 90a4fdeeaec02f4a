/**
 * Issue 17, defect 3: big messages under the size limit stalled the process (Chat with 500,000
 * content parts, 50,000 Predict inputs: seconds of decoding and per-element work with every other
 * call waiting). Element counts are bounded by server.requestLimits and a request over one is
 * refused before it is decoded, with INVALID_ARGUMENT naming the field (ErrorInfo reason
 * INVALID_ARGUMENT, metadata `field`, as every validation error): over gRPC, over the HTTP
 * listener (Connect JSON and proto, gRPC-Web, gRPC) and by the OpenAI-compatible API (HTTP 400,
 * `param`). src/gateway/request-limits.ts; docs/production.md, "Request limits".
 */
import { create, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type * as grpc from "@grpc/grpc-js";
import { Role } from "../../gen/infergate/v1/chat_pb.js";
import { ChatRequestSchema, GenerateRequestSchema, PredictRequestSchema } from "../../gen/infergate/v1/inference_service_pb.js";
import { DataType } from "../../gen/infergate/v1/tensor_pb.js";
import { defaultConfigYaml } from "../../src/config/default-config.js";
import type { App } from "../../src/server/app.js";
import { envelope, type InferenceMethod, rawGrpcCall, rawGrpcClient, rawHttpCall, type RawOutcome } from "../helpers/raw-calls.js";
import { startInProcess } from "../helpers/servers.js";

const text = (value: string) => ({ part: { case: "text" as const, value } });
const user = (parts: number) => ({ role: Role.USER, content: Array.from({ length: parts }, () => text("a")) });
const fp32 = (name: string) => ({ name, datatype: DataType.FP32, shape: [1n], data: { case: "contents" as const, value: { fp32Contents: [1] } } });

const chatBytes = (init: MessageInitShape<typeof ChatRequestSchema>) => toBinary(ChatRequestSchema, create(ChatRequestSchema, { model: "mock-chat", ...init }));
const generateBytes = (init: MessageInitShape<typeof GenerateRequestSchema>) => toBinary(GenerateRequestSchema, create(GenerateRequestSchema, { model: "mock-chat", ...init }));
const predictBytes = (init: MessageInitShape<typeof PredictRequestSchema>) => toBinary(PredictRequestSchema, create(PredictRequestSchema, { model: "mock-predict", ...init }));

/** The refusal every path must give: INVALID_ARGUMENT naming `field`. */
function expectRefusal(outcome: RawOutcome, field: string): void {
  expect(outcome.code, outcome.message).toBe("INVALID_ARGUMENT");
  expect(outcome.message.startsWith(`${field}: `), outcome.message).toBe(true);
  expect(outcome.errorInfo).toMatchObject({ reason: "INVALID_ARGUMENT", domain: "infergate", metadata: { field } });
}

/** POSTs an OpenAI Chat Completions body; resolves with the HTTP status and the error's param. */
async function openai(httpAddress: string, body: object): Promise<{ status: number; param: unknown; message: unknown }> {
  const res = await fetch(`http://${httpAddress}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const json = (await res.json()) as { error?: { param?: unknown; message?: unknown } };
  return { status: res.status, param: json.error?.param, message: json.error?.message };
}

describe("request limits with the defaults (issue 17, defect 3)", () => {
  let app: App;
  let client: grpc.Client;

  beforeAll(async () => {
    app = await startInProcess();
    client = rawGrpcClient(app.grpcAddress);
  });

  afterAll(async () => {
    client?.close();
    await app?.shutdown();
  });

  it("gRPC: a Chat with 500,000 content parts is INVALID_ARGUMENT naming messages[0].content", async () => {
    expectRefusal(await rawGrpcCall(client, "Chat", chatBytes({ messages: [user(500_000)] })), "messages[0].content");
  });

  it("gRPC: a Predict with 50,000 inputs is INVALID_ARGUMENT naming inputs", async () => {
    expectRefusal(await rawGrpcCall(client, "Predict", predictBytes({ inputs: Array.from({ length: 50_000 }, (_, i) => fp32(`INPUT${i}`)) })), "inputs");
  });

  it("gRPC: a tool whose parameters hold 150,000 values is INVALID_ARGUMENT naming tools[0].parameters", async () => {
    const parameters = Object.fromEntries(Array.from({ length: 150_000 }, (_, i) => [`k${i}`, i]));
    expectRefusal(await rawGrpcCall(client, "Chat", chatBytes({ messages: [user(1)], tools: [{ name: "f", parameters }] })), "tools[0].parameters");
  });

  it("gRPC: a BYTES tensor of 1,000,000 typed elements is INVALID_ARGUMENT naming its bytes_contents", async () => {
    const one = new Uint8Array([65]);
    const input = { name: "INPUT0", datatype: DataType.BYTES, shape: [1_000_000n], data: { case: "contents" as const, value: { bytesContents: Array.from({ length: 1_000_000 }, () => one) } } };
    expectRefusal(await rawGrpcCall(client, "Predict", predictBytes({ inputs: [input] })), "inputs[0].contents.bytes_contents");
  });

  it("Connect JSON: 300,000 content parts are HTTP 400 naming messages[0].content", async () => {
    const body = JSON.stringify({ model: "mock-chat", messages: [{ role: "ROLE_USER", content: Array.from({ length: 300_000 }, () => ({ text: "a" })) }] });
    const outcome = await rawHttpCall(app.httpAddress, "connect-json", "Chat", Buffer.from(body));
    expect(outcome.httpStatus).toBe(400);
    expectRefusal(outcome, "messages[0].content");
  });

  it("OpenAI API: 140,000 content parts are HTTP 400 with param messages[0].content", async () => {
    const res = await openai(app.httpAddress, { model: "mock-chat", messages: [{ role: "user", content: Array.from({ length: 140_000 }, () => ({ type: "text", text: "a" })) }] });
    expect(res).toMatchObject({ status: 400, param: "messages[0].content" });
  });

  it("requests at the limits are answered", async () => {
    expect((await rawGrpcCall(client, "Chat", chatBytes({ messages: [user(10_000)] }))).code).toBe("OK");
    expect((await rawGrpcCall(client, "Predict", predictBytes({ inputs: Array.from({ length: 1_024 }, (_, i) => fp32(`INPUT${i}`)) }))).code).toBe("OK");
  });
});

describe("request limits from the configuration (server.requestLimits)", () => {
  let app: App;
  let client: grpc.Client;
  const limits = { messages: 4, contentParts: 6, tools: 2, stopSequences: 2, schemaValues: 4, metadataEntries: 3, inputs: 2, outputs: 1, parameters: 2, shapeDims: 2, tensorElements: 8 };

  beforeAll(async () => {
    const yaml = `server:\n  requestLimits:\n${Object.entries(limits).map(([k, v]) => `    ${k}: ${v}\n`).join("")}${defaultConfigYaml}`;
    app = await startInProcess(yaml);
    client = rawGrpcClient(app.grpcAddress);
  });

  afterAll(async () => {
    client?.close();
    await app?.shutdown();
  });

  const over: [string, InferenceMethod, Uint8Array, string][] = [
    ["messages", "Chat", chatBytes({ messages: [user(1), user(1), user(1), user(1), user(1)] }), "messages"],
    ["content parts of all messages", "Chat", chatBytes({ messages: [user(4), user(3)] }), "messages[1].content"],
    ["tools", "Chat", chatBytes({ messages: [user(1)], tools: [{ name: "a" }, { name: "b" }, { name: "c" }] }), "tools"],
    ["stop sequences", "Chat", chatBytes({ messages: [user(1)], stop: ["x", "y", "z"] }), "stop"],
    ["values of tool parameters", "Chat", chatBytes({ messages: [user(1)], tools: [{ name: "a", parameters: { type: "object", properties: { x: { type: "string" } }, required: ["x"] } }] }), "tools[0].parameters"],
    ["metadata entries", "Chat", chatBytes({ messages: [user(1)], metadata: { a: "1", b: "2", c: "3", d: "4" } }), "metadata"],
    ["Generate's messages", "Generate", generateBytes({ messages: [user(1), user(1), user(1), user(1), user(1)] }), "messages"],
    ["inputs", "Predict", predictBytes({ inputs: [fp32("a"), fp32("b"), fp32("c")] }), "inputs"],
    ["outputs", "Predict", predictBytes({ inputs: [fp32("INPUT0")], outputs: [{ name: "OUTPUT0" }, { name: "OUTPUT1" }] }), "outputs"],
    ["shape dimensions", "Predict", predictBytes({ inputs: [{ ...fp32("a"), shape: [1n, 1n, 1n] }] }), "inputs[0].shape"],
    [
      "a tensor's typed values",
      "Predict",
      predictBytes({ inputs: [{ name: "a", datatype: DataType.FP32, shape: [9n], data: { case: "contents", value: { fp32Contents: Array.from({ length: 9 }, () => 1) } } }] }),
      "inputs[0].contents.fp32_contents",
    ],
    [
      "a tensor's shape product",
      "Predict",
      predictBytes({ inputs: [{ name: "a", datatype: DataType.UINT8, shape: [3n, 3n], data: { case: "rawContents", value: new Uint8Array(9) } }] }),
      "inputs[0].shape",
    ],
  ];

  it.each(over)("gRPC: %s over the limit", async (_name, method, body, field) => {
    expectRefusal(await rawGrpcCall(client, method, body), field);
  });

  it.each(over)("HTTP listener, Connect proto, gRPC-Web: %s over the limit", async (_name, method, body, field) => {
    if (method !== "Generate") {
      const outcome = await rawHttpCall(app.httpAddress, "connect-proto", method, body);
      expect(outcome.httpStatus).toBe(400);
      expectRefusal(outcome, field);
    }
    expectRefusal(await rawHttpCall(app.httpAddress, "grpc-web", method, envelope(body)), field);
  });

  it("HTTP listener, Connect JSON: over the limit is HTTP 400 naming the field, at the limit is answered", async () => {
    const chat = (messages: number) =>
      Buffer.from(JSON.stringify({ model: "mock-chat", messages: Array.from({ length: messages }, () => ({ role: "ROLE_USER", content: [{ text: "a" }] })) }));
    const outcome = await rawHttpCall(app.httpAddress, "connect-json", "Chat", chat(5));
    expect(outcome.httpStatus).toBe(400);
    expectRefusal(outcome, "messages");
    expect((await rawHttpCall(app.httpAddress, "connect-json", "Chat", chat(4))).code).toBe("OK");
    const predict = Buffer.from(JSON.stringify({ model: "mock-predict", inputs: [{ name: "INPUT0", datatype: "DATA_TYPE_FP32", shape: ["1"], contents: { fp32Contents: [1] }, parameters: { a: { boolParam: true }, b: { boolParam: true }, c: { boolParam: true } } }] }));
    expectRefusal(await rawHttpCall(app.httpAddress, "connect-json", "Predict", predict), "inputs[0].parameters");
  });

  it("OpenAI API: over the limit is HTTP 400 with param naming the field; at the limit is answered", async () => {
    const messages = (n: number) => Array.from({ length: n }, () => ({ role: "user", content: "a" }));
    expect(await openai(app.httpAddress, { model: "mock-chat", messages: messages(5) })).toMatchObject({ status: 400, param: "messages", message: "messages: at most 4 messages, got 5" });
    expect(await openai(app.httpAddress, { model: "mock-chat", messages: messages(1), stop: ["a", "b", "c"] })).toMatchObject({ status: 400, param: "stop" });
    expect(await openai(app.httpAddress, { model: "mock-chat", messages: messages(1), metadata: { a: "1", b: "2", c: "3", d: "4" } })).toMatchObject({ status: 400, param: "metadata" });
    expect((await openai(app.httpAddress, { model: "mock-chat", messages: messages(4) })).status).toBe(200);
  });

  it("requests within the limits are answered on every path", async () => {
    const chat = chatBytes({ messages: [user(3), user(3)], stop: ["x", "y"], metadata: { a: "1", b: "2", c: "3" } });
    expect((await rawGrpcCall(client, "Chat", chat)).code).toBe("OK");
    expect((await rawHttpCall(app.httpAddress, "connect-proto", "Chat", chat)).code).toBe("OK");
    expect((await rawGrpcCall(client, "Predict", predictBytes({ inputs: [fp32("INPUT0"), fp32("INPUT1")], outputs: [{ name: "OUTPUT0" }] }))).code).toBe("OK");
  });
});
