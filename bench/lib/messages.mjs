/**
 * The request bodies of the benchmarks, built once per run: the same chat turn as protobuf
 * (ChatRequest / GenerateRequest, with the generated schemas of dist/gen) and as the OpenAI JSON
 * that infergate itself sends upstream. Internal to bench/.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { CachePolicy, Role } from "../../dist/gen/infergate/v1/chat_pb.js";
import { ChatRequestSchema, GenerateRequestSchema } from "../../dist/gen/infergate/v1/inference_service_pb.js";
import { grpcFrame } from "./common.mjs";

/** The user's turn of every request. */
export const prompt = "Write one short sentence about a quick brown fox.";

/** A ChatRequest (or GenerateRequest) for `model`, serialized. */
export function chatRequestBytes(model, { temperature, cachePolicy, generate = false } = {}) {
  const init = {
    model,
    messages: [{ role: Role.USER, content: [{ part: { case: "text", value: prompt } }] }],
    ...(temperature === undefined ? {} : { temperature }),
    ...(cachePolicy === undefined ? {} : { cachePolicy }),
  };
  return generate ? toBinary(GenerateRequestSchema, create(GenerateRequestSchema, init)) : toBinary(ChatRequestSchema, create(ChatRequestSchema, init));
}

/** The JSON body infergate's openai adapter sends for the same turn (as sent: compact). */
export function openaiBody(upstreamModel, stream) {
  return JSON.stringify({
    model: upstreamModel,
    messages: [{ role: "user", content: prompt }],
    stream,
    ...(stream ? { stream_options: { include_usage: true } } : {}),
  });
}

/**
 * Writes every body file h2load sends into `dir` and returns their paths: gRPC bodies carry the
 * 5-byte message prefix.
 */
export function writeBodies(dir, models) {
  const file = (name, bytes) => {
    const path = join(dir, name);
    writeFileSync(path, bytes);
    return path;
  };
  return {
    chatGrpc: file("chat.grpc", grpcFrame(chatRequestBytes(models.chat))),
    cacheHitGrpc: file("cache-hit.grpc", grpcFrame(chatRequestBytes(models.cached, { temperature: 0 }))),
    cacheMissGrpc: file("cache-miss.grpc", grpcFrame(chatRequestBytes(models.cached, { temperature: 0, cachePolicy: CachePolicy.REFRESH }))),
    generateGrpc: file("generate.grpc", grpcFrame(chatRequestBytes(models.generate, { generate: true }))),
    generateSlowGrpc: file("generate-slow.grpc", grpcFrame(chatRequestBytes(models.slow, { generate: true }))),
    chatJson: file("chat.json", openaiBody(models.chatUpstream, false)),
    generateJson: file("generate.json", openaiBody(models.generateUpstream, true)),
  };
}
