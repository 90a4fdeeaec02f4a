/**
 * server.requestLimits (src/gateway/request-limits.ts): the scan of a request's protobuf bytes
 * (gRPC, Connect/gRPC-Web binary), the scan of its JSON text (Connect JSON, in proto or JSON
 * field names) and the check of a decoded message (the core, any path) refuse the same requests
 * naming the same field, and pass the same ones; the JSON decode refuses duplicate keys and
 * malformed text as protobuf-es's fromJsonString does; the OpenAI body's scan names its params.
 */
import { create, type DescMessage, fromJson, fromJsonString, type JsonValue, type MessageInitShape, toBinary, toJsonString } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { Role } from "../../gen/infergate/v1/chat_pb.js";
import {
  type ChatRequest,
  ChatRequestSchema,
  type EmbedRequest,
  EmbedRequestSchema,
  GenerateRequestSchema,
  type PredictRequest,
  PredictRequestSchema,
} from "../../gen/infergate/v1/inference_service_pb.js";
import { DataType } from "../../gen/infergate/v1/tensor_pb.js";
import { defaultRequestLimits, type RequestLimits } from "../../src/config/schema.js";
import { GatewayError } from "../../src/core/gateway-error.js";
import {
  checkChatLimits,
  checkEmbedLimits,
  checkOpenAIChatLimits,
  checkPredictLimits,
  checkWireLimits,
  decodeJsonRequest,
} from "../../src/gateway/request-limits.js";

const limits: RequestLimits = {
  messages: 3,
  contentParts: 4,
  toolCalls: 2,
  tools: 2,
  stopSequences: 2,
  schemaValues: 5,
  metadataEntries: 2,
  inputs: 2,
  outputs: 2,
  parameters: 2,
  shapeDims: 3,
  tensorElements: 10,
  bytesElements: 5,
  embedInputs: 3,
  tokenIds: 4,
};

const text = (value: string) => ({ part: { case: "text" as const, value } });
const user = (parts = 1) => ({ role: Role.USER, content: Array.from({ length: parts }, (_, i) => text(`t${i}`)) });
const calls = (n: number) => ({ role: Role.ASSISTANT, toolCalls: Array.from({ length: n }, (_, i) => ({ id: `c${i}`, name: "f", arguments: "{}" })) });
const entries = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, "v"]));
const params = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`p${i}`, { value: { case: "boolParam" as const, value: true } }]));
const fp32 = (name: string, n: number, more: object = {}) => ({ name, datatype: DataType.FP32, shape: [BigInt(n)], data: { case: "contents" as const, value: { fp32Contents: Array.from({ length: n }, (_, i) => i) } }, ...more });

/** A model name that makes each request long enough to be scanned (smaller ones are left to validation). */
const model = "m".repeat(4096);

/** A varint's bytes. */
function varint(n: number): Buffer {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return Buffer.from(out);
}

/** The error a check throws, or undefined. */
function refusal(check: () => unknown): GatewayError | undefined {
  try {
    check();
  } catch (err) {
    if (err instanceof GatewayError) return err;
    throw err;
  }
  return undefined;
}

/** The refusal of each path for one message, by path. */
function refusals(schema: DescMessage, message: ChatRequest | PredictRequest | EmbedRequest): Record<string, GatewayError | undefined> {
  const decoded =
    schema === PredictRequestSchema
      ? () => checkPredictLimits(message as PredictRequest, limits)
      : schema === EmbedRequestSchema
        ? () => checkEmbedLimits(message as EmbedRequest, limits)
        : () => checkChatLimits(message as ChatRequest, limits);
  const decodeJson = (json: string) => () => decodeJsonRequest(schema, json, limits, (j) => fromJson(schema, j as JsonValue));
  return {
    decoded: refusal(decoded),
    wire: refusal(() => checkWireLimits(schema, toBinary(schema, message), limits)),
    json: refusal(decodeJson(toJsonString(schema, message))),
    jsonProtoNames: refusal(decodeJson(toJsonString(schema, message, { useProtoFieldName: true }))),
  };
}

const chatCases: [string, MessageInitShape<typeof ChatRequestSchema>, string | undefined][] = [
  ["messages at the limit", { messages: [user(), user(), user()] }, undefined],
  ["one message over", { messages: [user(), user(), user(), user()] }, "messages"],
  ["content parts of one message over the request's", { messages: [user(5)] }, "messages[0].content"],
  ["content parts of all messages together over", { messages: [user(3), user(2)] }, "messages[1].content"],
  ["content parts at the limit", { messages: [user(2), user(2)] }, undefined],
  ["tool calls of all messages together over", { messages: [user(), calls(2), calls(1)] }, "messages[2].tool_calls"],
  ["tools over", { messages: [user()], tools: [{ name: "a" }, { name: "b" }, { name: "c" }] }, "tools"],
  ["stop sequences over", { messages: [user()], stop: ["a", "b", "c"] }, "stop"],
  ["metadata over", { messages: [user()], metadata: entries(3) }, "metadata"],
  ["metadata at the limit", { messages: [user()], metadata: entries(2) }, undefined],
  ["tool parameters at the limit", { messages: [user()], tools: [{ name: "a", parameters: { type: "object", properties: { x: { type: "string" } } } }] }, undefined],
  ["tool parameters over, at any depth", { messages: [user()], tools: [{ name: "a", parameters: { a: { b: { c: [1, [2, { d: 3 }]] } } } }] }, "tools[0].parameters"],
  ["tool parameters of all tools together over", { messages: [user()], tools: [{ name: "a", parameters: { a: 1, b: 2, c: 3 } }, { name: "b", parameters: { a: 1, b: [], c: 1 } }] }, "tools[1].parameters"],
  [
    "a JSON schema with the tools' parameters over",
    { messages: [user()], tools: [{ name: "a", parameters: { a: 1, b: 2, c: 3 } }], responseFormat: { type: 3, jsonSchema: { name: "s", schema: { type: "object", required: ["a"] } } } },
    "response_format.json_schema.schema",
  ],
];

const predictCases: [string, MessageInitShape<typeof PredictRequestSchema>, string | undefined][] = [
  ["inputs at the limit", { inputs: [fp32("a", 10), fp32("b", 10)] }, undefined],
  ["inputs over", { inputs: [fp32("a", 1), fp32("b", 1), fp32("c", 1)] }, "inputs"],
  ["outputs over", { inputs: [fp32("a", 1)], outputs: [{ name: "x" }, { name: "y" }, { name: "z" }] }, "outputs"],
  ["parameters over", { inputs: [fp32("a", 1)], parameters: params(3) }, "parameters"],
  ["an input's parameters over", { inputs: [fp32("a", 1), fp32("b", 1, { parameters: params(3) })] }, "inputs[1].parameters"],
  ["an output's parameters over", { inputs: [fp32("a", 1)], outputs: [{ name: "x", parameters: params(3) }] }, "outputs[0].parameters"],
  ["shape dimensions over", { inputs: [{ ...fp32("a", 1), shape: [1n, 1n, 1n, 1n] }] }, "inputs[0].shape"],
  ["typed values over", { inputs: [fp32("a", 11)] }, "inputs[0].contents.fp32_contents"],
  [
    "int64 values over",
    { inputs: [{ name: "a", datatype: DataType.INT64, shape: [11n], data: { case: "contents", value: { int64Contents: Array.from({ length: 11 }, (_, i) => BigInt(i)) } } }] },
    "inputs[0].contents.int64_contents",
  ],
  [
    "bytes values over",
    { inputs: [{ name: "a", datatype: DataType.BYTES, shape: [5n], data: { case: "contents", value: { bytesContents: Array.from({ length: 6 }, () => new Uint8Array([1])) } } }] },
    "inputs[0].contents.bytes_contents",
  ],
  ["metadata over", { inputs: [fp32("a", 1)], metadata: entries(3) }, "metadata"],
];

const ids = (n: number) => ({ ids: Array.from({ length: n }, (_, i) => i + 1) });
const embedCases: [string, MessageInitShape<typeof EmbedRequestSchema>, string | undefined][] = [
  ["texts at the limit", { texts: ["a", "b", "c"] }, undefined],
  ["texts over", { texts: ["a", "b", "c", "d"] }, "texts"],
  ["token inputs over", { tokens: [ids(1), ids(1), ids(1), ids(1)] }, "tokens"],
  ["texts and token inputs together over", { texts: ["a", "b"], tokens: [ids(1), ids(1)] }, "tokens"],
  ["token ids of one input over", { tokens: [ids(1), ids(5)] }, "tokens[1].ids"],
  ["token ids at the limit", { tokens: [ids(4)] }, undefined],
  ["metadata over", { texts: ["a"], metadata: entries(3) }, "metadata"],
];

describe("request limits: bytes, JSON text and decoded messages agree", () => {
  it.each(embedCases)("Embed: %s", (_name, init, field) => {
    const found = refusals(EmbedRequestSchema, create(EmbedRequestSchema, { model, ...init }));
    for (const [path, err] of Object.entries(found)) {
      expect(err?.metadata["field"], path).toBe(field);
      if (err !== undefined) expect(err.code).toBe(Code.InvalidArgument);
    }
  });

  it.each(chatCases)("Chat: %s", (_name, init, field) => {
    for (const schema of [ChatRequestSchema, GenerateRequestSchema]) {
      const found = refusals(schema, create(schema, { model, ...init }) as ChatRequest);
      for (const [path, err] of Object.entries(found)) {
        expect(err?.metadata["field"], `${schema.typeName} ${path}`).toBe(field);
        if (err !== undefined) expect(err.code).toBe(Code.InvalidArgument);
      }
    }
  });

  it.each(predictCases)("Predict: %s", (_name, init, field) => {
    const found = refusals(PredictRequestSchema, create(PredictRequestSchema, { model, ...init }));
    for (const [path, err] of Object.entries(found)) {
      expect(err?.metadata["field"], path).toBe(field);
      if (err !== undefined) {
        expect(err.code).toBe(Code.InvalidArgument);
        expect(err.metadata).toMatchObject({ limit: expect.stringMatching(/^\d+$/) });
      }
    }
  });

  it("a list over its limit says how many are allowed; a count of the request says so", () => {
    const req = create(ChatRequestSchema, { model, messages: [user(), user(), user(), user()], stop: ["a"] });
    expect(refusal(() => checkChatLimits(req, limits))?.message).toBe("messages: at most 3 messages, got 4");
    expect(refusal(() => checkWireLimits(ChatRequestSchema, toBinary(ChatRequestSchema, req), limits))?.message).toBe("messages: at most 3 messages, got 4");
    const parts = create(ChatRequestSchema, { model: "m", messages: [user(3), user(2)] });
    expect(refusal(() => checkChatLimits(parts, limits))?.message).toBe("messages[1].content: more than 4 content parts in the request");
  });

  it("a tensor's shape product is checked on the decoded message", () => {
    const raw = create(PredictRequestSchema, { model: "m", inputs: [{ name: "a", datatype: DataType.UINT8, shape: [4n, 4n], data: { case: "rawContents", value: new Uint8Array(16) } }] });
    expect(refusal(() => checkPredictLimits(raw, limits))?.metadata["field"]).toBe("inputs[0].shape");
    expect(refusal(() => checkPredictLimits(raw, { ...limits, tensorElements: 16 }))).toBeUndefined();
    const bytes = create(PredictRequestSchema, { model: "m", inputs: [{ name: "a", datatype: DataType.BYTES, shape: [6n], data: { case: "rawContents", value: new Uint8Array(24) } }] });
    expect(refusal(() => checkPredictLimits(bytes, limits))?.message).toBe("inputs[0].shape: at most 5 elements in a BYTES tensor, got 6");
  });

  it("a Struct nested 20,000 deep is counted without recursion (protobuf-es then refuses its depth)", () => {
    // Written by hand from the innermost value out (toBinary would recurse as deep).
    const value = (struct: Uint8Array) => Buffer.concat([Buffer.from([0x2a]), varint(struct.length), struct]);
    const struct = (v: Uint8Array) => {
      const entry = Buffer.concat([Buffer.from([0x0a, 1, 0x61, 0x12]), varint(v.length), v]);
      return Buffer.concat([Buffer.from([0x0a]), varint(entry.length), entry]);
    };
    let inner = struct(Buffer.from([0x20, 1]));
    for (let i = 0; i < 20_000; i++) inner = struct(value(inner));
    const tool = Buffer.concat([Buffer.from([0x0a, 1, 0x66, 0x1a]), varint(inner.length), inner]);
    const bytes = Buffer.concat([toBinary(ChatRequestSchema, create(ChatRequestSchema, { model: "m", messages: [user()] })), Buffer.from([0x1a]), varint(tool.length), tool]);
    expect(refusal(() => checkWireLimits(ChatRequestSchema, bytes, { ...limits, schemaValues: 100_000 }))).toBeUndefined();
    expect(refusal(() => checkWireLimits(ChatRequestSchema, bytes, limits))?.metadata["field"]).toBe("tools[0].parameters");
  });

  it("the defaults refuse 500,000 content parts and 50,000 inputs from their bytes", () => {
    const chat = create(ChatRequestSchema, { model: "m", messages: [{ role: Role.USER, content: Array.from({ length: 500_000 }, () => text("a")) }] });
    expect(refusal(() => checkWireLimits(ChatRequestSchema, toBinary(ChatRequestSchema, chat), defaultRequestLimits))?.metadata["field"]).toBe("messages[0].content");
    const predict = create(PredictRequestSchema, { model: "m", inputs: Array.from({ length: 50_000 }, (_, i) => fp32(`i${i}`, 1)) });
    expect(refusal(() => checkWireLimits(PredictRequestSchema, toBinary(PredictRequestSchema, predict), defaultRequestLimits))?.metadata["field"]).toBe("inputs");
  });

  it("requests under 4 KiB are not scanned: validation's check of the decoded message refuses them the same", () => {
    const req = create(ChatRequestSchema, { model: "m", messages: [user()], stop: ["a", "b", "c"] });
    expect(refusal(() => checkWireLimits(ChatRequestSchema, toBinary(ChatRequestSchema, req), limits))).toBeUndefined();
    expect(refusal(() => checkWireLimits(ChatRequestSchema, toBinary(ChatRequestSchema, { ...req, model }), limits))?.message).toBe("stop: at most 2 sequences, got 3");
    expect(refusal(() => checkChatLimits(req, limits))?.message).toBe("stop: at most 2 sequences, got 3");
  });

  it("bytes that are not a message pass the scan, for the decoder to refuse", () => {
    for (const bytes of [[0x12, 0x05, 0x08], [0xff, 0xff, 0xff], [0x0b], [0x12, 0x80]]) {
      const long = Buffer.concat([toBinary(ChatRequestSchema, create(ChatRequestSchema, { model })), Buffer.from(bytes)]);
      expect(() => checkWireLimits(ChatRequestSchema, long, limits)).not.toThrow();
    }
  });
});

describe("decodeJsonRequest", () => {
  const decode = (json: string) => decodeJsonRequest(ChatRequestSchema, json, defaultRequestLimits, (j) => fromJson(ChatRequestSchema, j as JsonValue, { ignoreUnknownFields: true }));
  const errorOf = (f: () => unknown) => {
    try {
      f();
    } catch (err) {
      return (err as Error).message;
    }
    return undefined;
  };

  it("gives what fromJsonString gives", () => {
    for (const json of [
      '{"model":"m","messages":[{"role":"ROLE_USER","content":[{"text":"a \\"quoted\\" \\\\ text ]}"}]}],"metadata":{"a":"1","b":"2"}}',
      '{ "model" : "m" , "stop" : [ "x" , "y" ] , "temperature" : 0.5 , "seed" : "12" }',
      '{"model":"m","tools":[{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"string"}}}}]}',
    ]) {
      expect(decode(json)).toEqual(fromJsonString(ChatRequestSchema, json, { ignoreUnknownFields: true }));
    }
  });

  it("refuses duplicate keys and malformed text with fromJsonString's messages", () => {
    for (const json of [
      '{"model":"m","model":"n"}',
      '{"messages":[{"role":"ROLE_USER","content":[{"text":"a","text":"b"}]}]}',
      '{"metadata":{"a":"1","b":"2","\\u0061":"3"}}',
      '{"model":"m"',
      '{"model":"m",}',
      "[1, 2",
    ]) {
      expect(errorOf(() => decode(json)), json).toBe(errorOf(() => fromJsonString(ChatRequestSchema, json, { ignoreUnknownFields: true })));
    }
  });
});

describe("checkOpenAIChatLimits", () => {
  const body = (over: object) => JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }], ...over });
  const fieldOf = (json: string) => refusal(() => checkOpenAIChatLimits(json, limits))?.metadata["field"];

  it("names the OpenAI API's params", () => {
    const parts = (n: number) => Array.from({ length: n }, () => ({ type: "text", text: "a" }));
    expect(fieldOf(body({}))).toBeUndefined();
    expect(fieldOf(body({ messages: Array.from({ length: 4 }, () => ({ role: "user", content: "a" })) }))).toBe("messages");
    expect(fieldOf(body({ messages: [{ role: "user", content: parts(3) }, { role: "user", content: parts(2) }] }))).toBe("messages[1].content");
    expect(fieldOf(body({ messages: [{ role: "user", content: "x".repeat(100) }, { role: "user", content: parts(4) }] }))).toBeUndefined();
    const toolCalls = [{ id: "a", type: "function", function: { name: "f", arguments: "{}" } }];
    expect(fieldOf(body({ messages: [{ role: "assistant", tool_calls: [...toolCalls, ...toolCalls, ...toolCalls] }] }))).toBe("messages[0].tool_calls");
    expect(fieldOf(body({ tools: [1, 2, 3] }))).toBe("tools");
    expect(fieldOf(body({ stop: ["a", "b", "c"] }))).toBe("stop");
    expect(fieldOf(body({ stop: "abc" }))).toBeUndefined();
    expect(fieldOf(body({ metadata: { a: "1", b: "2", c: "3" } }))).toBe("metadata");
    const fn = (parameters: object) => ({ type: "function", function: { name: "f", parameters } });
    expect(fieldOf(body({ tools: [fn({ a: 1, b: { c: 1 } })] }))).toBeUndefined();
    expect(fieldOf(body({ tools: [fn({ a: 1, b: { c: [1, 2, 3] } })] }))).toBe("tools[0].function.parameters");
    expect(fieldOf(body({ response_format: { type: "json_schema", json_schema: { name: "s", schema: { a: [1, 2, 3, 4, 5, 6] } } } }))).toBe("response_format.json_schema.schema");
  });
});
