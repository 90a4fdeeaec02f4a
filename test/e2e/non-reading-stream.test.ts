/**
 * Issue 17, defect 10: a Generate stream whose client never reads. Its flow-control window stays
 * shut, so nothing infergate writes can leave; at the call's deadline infergate ends the call,
 * and the stream must then end on the wire too (its trailers, or RST_STREAM when they cannot be
 * sent behind the unsent data), not stay open with its buffers for as long as the connection
 * lives. A raw HTTP/2 client, so that nothing reads for it.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { connect, constants, type ClientHttp2Session } from "node:http2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Role } from "../../gen/infergate/v1/chat_pb.js";
import { GenerateRequestSchema } from "../../gen/infergate/v1/inference_service_pb.js";
import type { App } from "../../src/server/app.js";
import { startInProcess } from "../helpers/servers.js";

let app: App;
let session: ClientHttp2Session;
beforeAll(async () => {
  app = await startInProcess();
  // A window of 0 bytes: the server may send headers, and no DATA at all until the client reads.
  session = connect(`http://${app.grpcAddress}`, { settings: { initialWindowSize: 0 } });
  await new Promise<void>((resolve, reject) => session.once("remoteSettings", () => resolve()).once("error", reject));
});
afterAll(async () => {
  session?.close();
  await app.shutdown();
});

function grpcFrame(message: Uint8Array): Buffer {
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  return frame;
}

describe("a Generate stream that is never read", () => {
  it("ends on the wire after its deadline: trailers or RST_STREAM, not an open stream", async () => {
    const text = "word ".repeat(200);
    const request = create(GenerateRequestSchema, {
      model: "mock-chat",
      messages: [{ role: Role.USER, content: [{ part: { case: "text", value: text } }] }],
    });
    const stream = session.request({
      ":method": "POST",
      ":path": "/infergate.v1.InferenceService/Generate",
      "content-type": "application/grpc",
      te: "trailers",
      "grpc-timeout": "1000m",
      // The mock writes a token every 20 ms: events are still coming when the deadline passes.
      "mock.token_delay_ms": "20",
    });
    stream.end(grpcFrame(toBinary(GenerateRequestSchema, request)));
    stream.pause(); // and never resumed: nothing is read, no window is given back
    const ended: { how?: string } = {};
    stream.once("response", (headers) => {
      // Headers fit in no window; a trailers-only answer would end the call here.
      if (headers["grpc-status"] !== undefined) ended.how = `trailers-only ${headers["grpc-status"]}`;
    });
    stream.once("trailers", (trailers) => (ended.how = `trailers ${trailers["grpc-status"]}`));
    stream.once("close", () => {
      ended.how ??= stream.rstCode === constants.NGHTTP2_NO_ERROR ? "closed" : `rst ${stream.rstCode}`;
    });
    // The deadline is 1 s; the bound only keeps a failing run from hanging the suite.
    await expect.poll(() => ended.how, { timeout: 15_000, interval: 50 }).toBeDefined();
    expect(ended.how).toMatch(/^(rst 8|trailers 4|trailers-only 4)$/);
  });
});
