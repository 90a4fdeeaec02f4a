/**
 * Issue 17, defect 6: a request whose bytes are not a valid message of its method. Before, grpc-js
 * answered INTERNAL "Error deserializing request" (the deserializer threw) and connect-node HTTP
 * 500 "parse binary", with no ErrorInfo, no log line and no metric. Now every listener and protocol
 * answers INVALID_ARGUMENT with ErrorInfo reason MALFORMED_REQUEST (domain "infergate"), the call
 * is counted (infergate_malformed_requests_total, and infergate_requests_total with its code) and
 * logged like any other call, and nothing of the caller's bytes is echoed past 200 characters.
 */
import { toBinary, create } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChatRequestSchema, PredictRequestSchema } from "../../gen/infergate/v1/inference_service_pb.js";
import { Role } from "../../gen/infergate/v1/chat_pb.js";
import { DataType } from "../../gen/infergate/v1/tensor_pb.js";
import { envelope, type InferenceMethod, rawGrpcCall, rawGrpcClient, rawHttpCall, type RawOutcome } from "../helpers/raw-calls.js";
import { type ServerProcess, startProcess } from "../helpers/servers.js";

const validChat = toBinary(
  ChatRequestSchema,
  create(ChatRequestSchema, { model: "mock-chat", messages: [{ role: Role.USER, content: [{ part: { case: "text", value: "hello" } }] }] }),
);

/** A field-1 string (model) of `n` ASCII bytes, then a length that runs past the end. */
const longThenTruncated = (n: number) => Uint8Array.from([...Buffer.from([0x0a, ...varint(n)]), ...Buffer.alloc(n, "x"), 0x12, 0x7f, 0x01]);

function varint(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return out;
}

/** Field 1 (a string in every request that has one) holding bytes that are not UTF-8. */
const invalidUtf8 = Uint8Array.from([0x0a, 0x02, 0xff, 0xfe]);

/** Bytes that no InferenceService request decodes from, each for a different reason. */
const malformed: [string, Uint8Array][] = [
  ["a truncated length-delimited field", Uint8Array.from([0x0a, 0x05, 0x61])],
  ["wire type 7", Uint8Array.from([0x0f, 0x01])],
  ["field number 0", Uint8Array.from([0x02, 0x00])],
  ["an unterminated varint", Uint8Array.from([0x08, 0xff, 0xff, 0xff])],
  ["invalid UTF-8 in a string field", invalidUtf8],
  ["a valid request cut short", validChat.subarray(0, validChat.byteLength - 3)],
  ["an end-group tag without a start", Uint8Array.from([0x0c])],
];

/** A big (over 64 KiB) Predict request whose last tensor is cut short: the gRPC listener's bulk path. */
function bigBrokenPredict(): Uint8Array {
  const bytes = toBinary(
    PredictRequestSchema,
    create(PredictRequestSchema, {
      model: "mock-predict",
      inputs: [{ name: "INPUT0", datatype: DataType.FP32, shape: [20_000n], data: { case: "contents", value: { fp32Contents: new Array(20_000).fill(1.5) } } }],
    }),
  );
  return bytes.subarray(0, bytes.byteLength - 7);
}

function expectMalformed(o: RawOutcome): void {
  expect(o.code).toBe("INVALID_ARGUMENT");
  expect(o.errorInfo).toMatchObject({ reason: "MALFORMED_REQUEST", domain: "infergate" });
  expect(o.message.length).toBeLessThanOrEqual(1024);
}

describe("malformed protobuf requests (issue 17, defect 6)", () => {
  let server: ServerProcess;
  let grpcClient: grpc.Client;
  let httpGrpcClient: grpc.Client;

  beforeAll(async () => {
    server = await startProcess();
    grpcClient = rawGrpcClient(server.grpcAddress);
    // connect-node serves gRPC too, on the HTTP listener.
    httpGrpcClient = rawGrpcClient(server.httpAddress);
  });

  afterAll(async () => {
    grpcClient?.close();
    httpGrpcClient?.close();
    await server?.stop();
  });

  const methods: InferenceMethod[] = ["Chat", "Predict", "Generate", "ListModels", "DeleteSession"];

  describe.each(methods)("%s", (method) => {
    it.each(malformed)("gRPC listener, %s: INVALID_ARGUMENT, MALFORMED_REQUEST, and the channel keeps working", async (_, bytes) => {
      const outcome = await rawGrpcCall(grpcClient, method, bytes);
      if (method === "ListModels" && bytes === invalidUtf8) {
        // ListModelsRequest has no fields: a field 1 is an unknown field, kept as bytes, not malformed.
        expect(outcome.code).toBe("OK");
      } else {
        expectMalformed(outcome);
      }
      expect((await rawGrpcCall(grpcClient, "Chat", validChat)).code).toBe("OK");
    });

    // Generate is a server stream: Connect serves it as application/connect+proto (below).
    it.skipIf(method === "Generate")("Connect application/proto: HTTP 400, invalid_argument, MALFORMED_REQUEST", async () => {
      const outcome = await rawHttpCall(server.httpAddress, "connect-proto", method, Uint8Array.from([0x0a, 0x05, 0x61]));
      expect(outcome.httpStatus).toBe(400);
      expectMalformed(outcome);
    });

    it("gRPC over the HTTP listener: INVALID_ARGUMENT, MALFORMED_REQUEST", async () => {
      expectMalformed(await rawGrpcCall(httpGrpcClient, method, Uint8Array.from([0x0f, 0x01])));
    });

    it("gRPC-Web: INVALID_ARGUMENT, MALFORMED_REQUEST", async () => {
      expectMalformed(await rawHttpCall(server.httpAddress, "grpc-web", method, envelope(Uint8Array.from([0x0a, 0x05, 0x61]))));
    });
  });

  it("a big Predict cut short (the gRPC listener's bulk decoding) is MALFORMED_REQUEST", async () => {
    expectMalformed(await rawGrpcCall(grpcClient, "Predict", bigBrokenPredict()));
    expectMalformed(await rawHttpCall(server.httpAddress, "connect-proto", "Predict", bigBrokenPredict()));
  });

  it("Connect streaming (Generate, application/connect+proto): the end-stream error is MALFORMED_REQUEST", async () => {
    expectMalformed(await rawHttpCall(server.httpAddress, "connect-stream-proto", "Generate", envelope(Uint8Array.from([0x0a, 0x05, 0x61]))));
  });

  it.each([
    ["not JSON", "{"],
    ["a number for a string field", '{"model": 5}'],
    ["an object for an enum", JSON.stringify({ model: "mock-chat", messages: [{ role: { x: 1 } }] })],
    ["a 100,000-character string for a repeated field (echoed by the decoder)", JSON.stringify({ model: "mock-chat", messages: "m".repeat(100_000) })],
  ])("Connect JSON, %s: HTTP 400, MALFORMED_REQUEST, no long echo", async (_, body) => {
    const outcome = await rawHttpCall(server.httpAddress, "connect-json", "Chat", Buffer.from(body));
    expect(outcome.httpStatus).toBe(400);
    expectMalformed(outcome);
    expect(outcome.errorBytes).toBeLessThan(2048);
  });

  it("a gzip-compressed body is decompressed first: malformed inside is MALFORMED_REQUEST, valid inside succeeds", async () => {
    const post = async (contentType: string, headers: Record<string, string>, body: Uint8Array) => {
      const res = await fetch(`http://${server.httpAddress}/infergate.v1.InferenceService/Chat`, { method: "POST", headers: { "content-type": contentType, ...headers }, body });
      return { status: res.status, body: Buffer.from(await res.arrayBuffer()) };
    };
    const bad = await post("application/proto", { "content-encoding": "gzip" }, gzipSync(Uint8Array.from([0x0a, 0x05, 0x61])));
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body.toString())).toMatchObject({ code: "invalid_argument" });
    const good = await post("application/proto", { "content-encoding": "gzip", "accept-encoding": "identity" }, gzipSync(validChat));
    expect(good.status).toBe(200);
    // gRPC-Web: a compressed envelope (flag 1) of a malformed message.
    const compressed = gzipSync(Uint8Array.from([0x0f, 0x01]));
    const web = await post("application/grpc-web+proto", { "grpc-encoding": "gzip", "x-grpc-web": "1" }, envelope(compressed, 1));
    expect(web.status).toBe(200);
    expect(web.body.toString("latin1")).toMatch(/grpc-status: ?3/);
  });

  it("valid calls still succeed on every path", async () => {
    expect((await rawGrpcCall(grpcClient, "Chat", validChat)).code).toBe("OK");
    expect((await rawGrpcCall(httpGrpcClient, "Chat", validChat)).code).toBe("OK");
    expect((await rawHttpCall(server.httpAddress, "connect-proto", "Chat", validChat)).code).toBe("OK");
    expect((await rawHttpCall(server.httpAddress, "grpc-web", "Chat", envelope(validChat))).code).toBe("OK");
    expect((await rawHttpCall(server.httpAddress, "connect-stream-proto", "Generate", envelope(validChat))).code).toBe("OK");
    const json = JSON.stringify({ model: "mock-chat", messages: [{ role: "ROLE_USER", content: [{ text: "hello" }] }] });
    expect((await rawHttpCall(server.httpAddress, "connect-json", "Chat", Buffer.from(json))).code).toBe("OK");
  });

  it("is counted in the metrics, one by one, and logged without the caller's bytes", async () => {
    const before = await malformedCount(server, "Chat");
    const outcome = await rawGrpcCall(grpcClient, "Chat", longThenTruncated(5000));
    expectMalformed(outcome);
    expect(outcome.message).not.toContain("x".repeat(201));
    expect(await malformedCount(server, "Chat", before + 1)).toBe(before + 1);
    const metrics = await (await fetch(`http://${server.adminAddress}/metrics`)).text();
    expect(metrics).toMatch(/^infergate_requests_total\{rpc="Chat",model="",code="INVALID_ARGUMENT"\} [1-9]/m);

    // Log lines are buffered (one write per 8 KiB or 25 ms): wait for them, the process runs on.
    // Malformed requests are refusals (src/observability/refusal-log.ts): the first of an
    // interval gets its call line, the others are summed up in one line when it ends.
    const logged = () => server.lines.filter((l) => l.includes("MALFORMED_REQUEST")).map((l) => JSON.parse(l) as Record<string, unknown>);
    for (let i = 0; i < 300 && logged().length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    const lines = logged();
    expect(lines.length).toBeGreaterThan(0);
    expect(lines[0]).toMatchObject({ msg: "call", code: "INVALID_ARGUMENT", reason: "MALFORMED_REQUEST" });
    expect(server.lines.join("\n")).not.toContain("x".repeat(201));
  });
});

/**
 * infergate_malformed_requests_total for `rpc` from the admin listener (0 when absent), once it is
 * at least `atLeast` or after a short wait: a call is recorded a turn or two after its answer.
 */
async function malformedCount(server: ServerProcess, rpc: string, atLeast = 0): Promise<number> {
  const pattern = new RegExp(`^infergate_malformed_requests_total\\{rpc="${rpc}"\\} (\\d+)`, "m");
  let n = 0;
  for (let i = 0; i < 100; i++) {
    const m = pattern.exec(await (await fetch(`http://${server.adminAddress}/metrics`)).text());
    n = m === null ? 0 : Number(m[1]);
    if (n >= atLeast) break;
    await new Promise((r) => setTimeout(r, 10));
  }
  return n;
}
