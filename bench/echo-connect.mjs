#!/usr/bin/env node
/**
 * The connect-node ceiling: a trivial InferenceService.Chat on @connectrpc/connect-node over
 * node:http2 (h2c), run as its own process; it answers every ChatRequest with the same
 * ChatResponse (the file given: infergate's own answer), decoded once at start.
 *
 *   node bench/echo-connect.mjs --response FILE [--port N]     (prints {"port":N} when bound)
 */
import { fromBinary } from "@bufbuild/protobuf";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { readFileSync } from "node:fs";
import { createServer } from "node:http2";
import { parseArgs } from "node:util";
import { ChatResponseSchema, InferenceService } from "../dist/gen/infergate/v1/inference_service_pb.js";

const { values } = parseArgs({ options: { port: { type: "string", default: "0" }, response: { type: "string" } } });
const answer = fromBinary(ChatResponseSchema, readFileSync(values.response));

const handler = connectNodeAdapter({
  routes(router) {
    router.service(InferenceService, { chat: () => answer }, {});
  },
});
const server = createServer({ settings: { maxConcurrentStreams: 1000 } }, handler);
server.listen(Number(values.port), "127.0.0.1", () => {
  process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`);
});
const stop = () => server.close(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
