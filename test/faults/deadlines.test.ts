/**
 * Fault scenarios 26 and 27 (issue 6): deadlines as callers send them. A malformed `grpc-timeout`
 * never reaches an upstream; a timeout above `server.maxTimeoutMs` is clamped to it (the call runs
 * with the gateway's maximum and ends DEADLINE_EXCEEDED naming `server.maxTimeoutMs`).
 *
 * Malformed headers cannot be sent with a gRPC library, so scenario 26 speaks HTTP/2 with
 * node:http2 to both listeners.
 */
import { connect, constants } from "node:http2";
import { status } from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { createClient, ConnectError } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InferenceService } from "../../gen/infergate/v1/inference_service_pb.js";
import { Role } from "../../gen/infergate/v1/chat_pb.js";
import { loaderOptions } from "../helpers/proto-clients.js";
import { chatRequest, failure, type Gateway, startGateway } from "./helpers/harness.js";
import { type ScriptedUpstream, startScriptedUpstream } from "./helpers/scripted-upstream.js";

/** One raw gRPC call over HTTP/2: the status and message from the trailers (or headers). */
async function rawGrpc(address: string, timeoutHeader: string): Promise<{ httpStatus: number; grpcStatus: number; message: string }> {
  const service = protoLoader.loadSync("infergate/v1/inference_service.proto", loaderOptions)["infergate.v1.InferenceService"] as protoLoader.ServiceDefinition;
  const chat = service["Chat"]!;
  const payload = chat.requestSerialize(chatRequest("chat", "malformed deadline")) as Buffer;
  const frame = Buffer.alloc(5 + payload.length);
  frame.writeUInt8(0, 0);
  frame.writeUInt32BE(payload.length, 1);
  payload.copy(frame, 5);
  const session = connect(`http://${address}`);
  try {
    return await new Promise((resolve, reject) => {
      const req = session.request({
        [constants.HTTP2_HEADER_METHOD]: "POST",
        [constants.HTTP2_HEADER_PATH]: chat.path,
        "content-type": "application/grpc",
        te: "trailers",
        "grpc-timeout": timeoutHeader,
      });
      let httpStatus = 0;
      let headers: Record<string, unknown> = {};
      req.on("response", (h) => {
        httpStatus = Number(h[":status"]);
        headers = h;
      });
      req.on("trailers", (t) => (headers = { ...headers, ...t }));
      req.on("data", () => {});
      req.on("end", () =>
        resolve({ httpStatus, grpcStatus: Number(headers["grpc-status"]), message: decodeURIComponent(String(headers["grpc-message"] ?? "")) }),
      );
      req.on("error", reject);
      req.end(frame);
    });
  } finally {
    session.close();
  }
}

describe("fault scenarios: deadlines from callers", () => {
  let up: ScriptedUpstream;
  let g: Gateway;

  beforeAll(async () => {
    up = await startScriptedUpstream(() => ({ kind: "answer", delayMs: 5_000 }));
    g = await startGateway(`
server:
  maxTimeoutMs: 800
upstreams:
  - name: llm
    kind: openai
    endpoints: ["${up.baseUrl}"]
models:
  - name: chat
    upstream: llm
`);
  });
  afterAll(async () => {
    await g?.close();
    await up?.close();
  });

  it("26. a malformed grpc-timeout is refused before any upstream call (Connect listener: INVALID_ARGUMENT)", async () => {
    const before = up.requests.length;
    const viaConnect = await rawGrpc(g.app.httpAddress, "soon");
    expect(viaConnect).toEqual({ httpStatus: 200, grpcStatus: status.INVALID_ARGUMENT, message: "protocol error: invalid grpc timeout value: soon" });
    // grpc-js, which serves the gRPC listener, answers a malformed timeout itself, with INTERNAL
    // (its own choice; the handler never runs). See docs/resilience.md.
    const viaGrpcJs = await rawGrpc(g.app.grpcAddress, "soon");
    expect(viaGrpcJs).toEqual({ httpStatus: 200, grpcStatus: status.INTERNAL, message: 'Invalid grpc-timeout value "soon"' });
    const tooLong = await rawGrpc(g.app.httpAddress, "123456789S");
    expect(tooLong.grpcStatus).toBe(status.INVALID_ARGUMENT);
    // Neither reached the upstream.
    await new Promise((r) => setTimeout(r, 100));
    expect(up.requests.length).toBe(before);
    expect(g.app.cache.stats.stores).toBe(0);
  });

  it("27. a timeout above server.maxTimeoutMs is clamped to it: DEADLINE_EXCEEDED at 800 ms, the upstream aborted", async () => {
    const before = up.requests.length;
    const started = Date.now();
    const err = await failure(g.client.unary("Chat", chatRequest("chat", "clamped"), { timeoutMs: 60_000 }));
    // The message says which timer ended the call: the 800 ms clamp, not the client's 60 s.
    expect(err).toEqual({
      code: status.DEADLINE_EXCEEDED,
      message: "deadline exceeded: the gateway's maximum call time of 800ms ran out",
      reason: "DEADLINE_EXCEEDED",
      metadata: { field: "server.maxTimeoutMs" },
      retryAfterMs: undefined,
    });
    // A lower bound only: the clamp's timer never fires early.
    expect(Date.now() - started).toBeGreaterThanOrEqual(780);
    // The call ended while the upstream still held its answer (due 5 s in), which was then aborted.
    expect(up.requests.at(-1)!.finishedAt).toBeUndefined();
    await up.waitIdle();
    expect(up.requests.length - before).toBe(1);
    expect(up.requests.at(-1)!.abortedAt).toBeDefined();

    // The Connect listener clamps the same way.
    const connectClient = createClient(InferenceService, createGrpcTransport({ baseUrl: `http://${g.app.httpAddress}` }));
    const e = await connectClient
      .chat({ model: "chat", messages: [{ role: Role.USER, content: [{ part: { case: "text", value: "clamped too" } }] }], temperature: 0 }, { timeoutMs: 60_000 })
      .then(() => undefined, (x: unknown) => ConnectError.from(x));
    expect(e?.code).toBe(status.DEADLINE_EXCEEDED);
    expect(e?.rawMessage).toBe("deadline exceeded: the gateway's maximum call time of 800ms ran out");
    expect(up.requests.at(-1)!.finishedAt).toBeUndefined();
    await up.waitIdle();
    expect(up.requests.length - before).toBe(2);
    expect(up.requests.at(-1)!.abortedAt).toBeDefined();
    expect(g.app.cache.stats.stores).toBe(0);
  });
});
