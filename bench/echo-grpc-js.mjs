#!/usr/bin/env node
/**
 * The grpc-js ceiling: a trivial InferenceService.Chat on @grpc/grpc-js, run as its own process.
 * It decodes each ChatRequest with the generated schema and answers with the same ChatResponse,
 * encoded each time (the file given: infergate's own answer, decoded
 * once at start, so message sizes match). What infergate adds on top of this is its own work.
 *
 *   node bench/echo-grpc-js.mjs --response FILE [--port N]     (prints {"port":N} when bound)
 */
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { ChatRequestSchema, ChatResponseSchema } from "../dist/gen/infergate/v1/inference_service_pb.js";

const { values } = parseArgs({ options: { port: { type: "string", default: "0" }, response: { type: "string" } } });
const answer = fromBinary(ChatResponseSchema, readFileSync(values.response));

const server = new grpc.Server({ "grpc.max_concurrent_streams": 1000 });
server.addService(
  {
    Chat: {
      path: "/infergate.v1.InferenceService/Chat",
      requestStream: false,
      responseStream: false,
      requestDeserialize: (b) => fromBinary(ChatRequestSchema, b),
      requestSerialize: () => Buffer.alloc(0),
      responseSerialize: (m) => Buffer.from(toBinary(ChatResponseSchema, m)),
      responseDeserialize: (b) => b,
    },
  },
  {
    Chat(call, callback) {
      callback(null, answer);
    },
  },
);
server.bindAsync(`127.0.0.1:${values.port}`, grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) throw err;
  process.stdout.write(`${JSON.stringify({ port })}\n`);
});
const stop = () => server.tryShutdown(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
