/**
 * Fake upstreams of every kind that echo the credential they received, for the redaction test
 * (issue 17, defect 7): wherever a real server could put text of its own — an error body, an
 * error status's message and details, a 200 answer that does not parse, a field of an answer
 * that a translator quotes, an error event in a stream — these put the key.
 *
 * ```ts
 * const fake = await createEchoKeyUpstreams();
 * // HTTP kinds: fake.httpUrl (+ "/v1" for openai); gRPC kinds: fake.grpcUrl
 * await fake.close();
 * ```
 *
 * One HTTP server answers the OpenAI Chat Completions (`POST /v1/chat/completions`), Anthropic
 * Messages (`POST /v1/messages`), KServe v2 REST (`POST /v2/models/{m}/infer`, `GET …/ready`) and
 * TF Serving REST (`POST /v1/models/{m}:predict`, `GET /v1/models/{m}`) APIs; one gRPC server
 * answers `inference.GRPCInferenceService` (ModelInfer, ModelReady) and `infergate.v1.
 * InferenceService` (Predict, Chat, Generate, ListModels). The received key is the Bearer token
 * of `authorization` (HTTP header or gRPC metadata), else the `x-api-key` header.
 *
 * The upstream model name (the request's `model`, or the model in the path) picks the answer:
 * - `echo-<status>` (HTTP, 400–599): that status, the key in the error body's message (with the
 *   whole Authorization value) and in its `param`, and an `x-echo-authorization` header.
 * - `echo-500` / `echo-401` (gRPC): INTERNAL / UNAUTHENTICATED, the key in the status message and
 *   in a `google.rpc.Status` detail whose ErrorInfo reason is the key (UNAUTHENTICATED for 401,
 *   as infergate's own admission says) and whose metadata holds it.
 * - `bad-200`: HTTP 200, JSON content type, a body that is not JSON and holds the key (an event
 *   stream whose first event is so, when `stream: true`).
 * - `html-200`: HTTP 200, an HTML body holding the key (a `text/html` "stream" too).
 * - `invalid-200`: a 200 answer that parses but is not what was asked, with the key where a
 *   translator quotes the answer: OpenAI `{"error": {"type": KEY}}` (an event of it when
 *   streaming); Anthropic a body without `content` (an `error` event when streaming); KServe an
 *   output whose datatype is the key (REST and gRPC); TF Serving an output named by the key.
 * - `stream-500` (infergate Generate): one text event, then INTERNAL as for `echo-500`.
 * - anything else: 404 / NOT_FOUND.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { anyPack } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { createServer, type IncomingHttpHeaders } from "node:http";
import type { AddressInfo } from "node:net";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../../gen/google/rpc/status_pb.js";
import { GRPCInferenceService, ModelInferResponseSchema, ModelReadyResponseSchema, type ModelInferRequest } from "../../gen/inference/grpc_service_pb.js";
import {
  ChatResponseSchema,
  GenerateResponseSchema,
  InferenceService,
  ListModelsResponseSchema,
  type ChatRequest,
  type GenerateRequest,
  type PredictRequest,
} from "../../gen/infergate/v1/inference_service_pb.js";
import { grpcServiceDefinition } from "./triton-fake.js";

/** One answer the fakes gave that carried the key they received. */
export interface Echo {
  /** e.g. "openai", "kserve-grpc", "infergate". */
  readonly api: string;
  readonly mode: string;
  /** The key the request carried, which the answer holds. */
  readonly key: string;
}

export interface EchoKeyUpstreams {
  /** `http://127.0.0.1:<port>` of the HTTP APIs. */
  readonly httpUrl: string;
  /** `http://127.0.0.1:<port>` of the gRPC services. */
  readonly grpcUrl: string;
  /** Every answer that echoed a key, in order. */
  readonly echoes: readonly Echo[];
  close(): Promise<void>;
}

/** Starts both servers on 127.0.0.1 with free ports. */
export async function createEchoKeyUpstreams(): Promise<EchoKeyUpstreams> {
  const echoes: Echo[] = [];
  const httpServer = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const path = (req.url ?? "/").split("?")[0] ?? "/";
      let body: { model?: unknown; stream?: unknown } = {};
      try {
        body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as typeof body;
      } catch {
        // GETs and bodies that are not JSON
      }
      const key = keyOf(req.headers);
      const authorization = String(req.headers["authorization"] ?? req.headers["x-api-key"] ?? "");
      const send = (status: number, contentType: string, text: string, headers: Record<string, string> = {}): void => {
        res.writeHead(status, { ...headers, "content-type": contentType, "content-length": String(Buffer.byteLength(text)) });
        res.end(text);
      };
      const route = httpRoute(req.method ?? "", path, body);
      if (route === undefined) {
        send(404, "application/json", JSON.stringify({ error: `no such path ${path}` }));
        return;
      }
      if (route.probe) {
        send(200, "application/json", "{}");
        return;
      }
      const { api, mode } = route;
      const stream = body.stream === true;
      const echoed = (m: string) => echoes.push({ api, mode: m, key });
      const status = /^echo-(\d{3})$/.exec(mode);
      if (status !== null) {
        const message = `Incorrect API key provided: ${key}. The request carried ${authorization}.`;
        const error = api === "openai" || api === "anthropic" ? { message, type: "echo_error", param: key } : message;
        echoed(mode);
        send(Number(status[1]), "application/json", JSON.stringify({ error }), { "x-echo-authorization": authorization });
        return;
      }
      if (mode === "bad-200") {
        echoed(mode);
        const broken = `{"echo": "${key}", "authorization": "${authorization}", "choices": [`;
        if (stream) send(200, "text/event-stream", api === "anthropic" ? `event: message_start\ndata: ${broken}\n\n` : `data: ${broken}\n\n`);
        else send(200, "application/json", broken);
        return;
      }
      if (mode === "html-200") {
        echoed(mode);
        send(200, "text/html", `<html><body>Your key ${key} (${authorization}) is not welcome here.</body></html>`);
        return;
      }
      if (mode === "invalid-200") {
        echoed(mode);
        send(200, stream ? "text/event-stream" : "application/json", invalidAnswer(api, key, stream));
        return;
      }
      send(404, "application/json", JSON.stringify({ error: { message: `model ${mode} not found`, type: "not_found" } }));
    });
  });
  await new Promise<void>((resolve, reject) => {
    httpServer.once("error", reject);
    httpServer.listen(0, "127.0.0.1", () => resolve());
  });

  const grpcServer = new grpc.Server();
  const grpcKey = (metadata: grpc.Metadata) => String(metadata.get("authorization")[0] ?? "").replace(/^Bearer\s+/i, "");
  /** The echoing error status of `mode`, or undefined when the mode is not an error. */
  const grpcError = (api: string, mode: string, metadata: grpc.Metadata): Partial<grpc.ServiceError> | undefined => {
    const key = grpcKey(metadata);
    const code = mode === "echo-401" ? grpc.status.UNAUTHENTICATED : mode === "echo-500" || mode === "stream-500" ? grpc.status.INTERNAL : undefined;
    if (code === undefined) return undefined;
    echoes.push({ api, mode, key });
    const message = `Incorrect API key provided: ${key}. The request carried authorization: Bearer ${key}.`;
    const info = create(ErrorInfoSchema, { reason: code === grpc.status.UNAUTHENTICATED ? "UNAUTHENTICATED" : key, domain: "echo", metadata: { key, authorization: `Bearer ${key}` } });
    const trailers = new grpc.Metadata();
    trailers.set("grpc-status-details-bin", Buffer.from(toBinary(StatusSchema, create(StatusSchema, { code, message, details: [anyPack(ErrorInfoSchema, info)] }))));
    trailers.set("x-echo-authorization", `Bearer ${key}`);
    return { code, details: message, metadata: trailers };
  };
  const notFound = (model: string): Partial<grpc.ServiceError> => ({ code: grpc.status.NOT_FOUND, details: `no model ${model}` });

  grpcServer.addService(grpcServiceDefinition(GRPCInferenceService), {
    ModelInfer: (call: grpc.ServerUnaryCall<ModelInferRequest, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      const mode = call.request.modelName;
      const failure = grpcError("kserve-grpc", mode, call.metadata);
      if (failure !== undefined) return callback(failure);
      if (mode === "invalid-200") {
        const key = grpcKey(call.metadata);
        echoes.push({ api: "kserve-grpc", mode, key });
        return callback(
          null,
          create(ModelInferResponseSchema, { modelName: mode, outputs: [{ name: "OUTPUT0", datatype: key, shape: [1n], contents: { intContents: [1] } }] }),
        );
      }
      callback(notFound(mode));
    },
    ModelReady: (_call: unknown, callback: grpc.sendUnaryData<unknown>) => callback(null, create(ModelReadyResponseSchema, { ready: true })),
  });
  const unaryInfergate = (req: { model: string }, metadata: grpc.Metadata, callback: grpc.sendUnaryData<unknown>) =>
    callback(grpcError("infergate", req.model, metadata) ?? notFound(req.model));
  grpcServer.addService(grpcServiceDefinition(InferenceService), {
    Predict: (call: grpc.ServerUnaryCall<PredictRequest, unknown>, callback: grpc.sendUnaryData<unknown>) => unaryInfergate(call.request, call.metadata, callback),
    Chat: (call: grpc.ServerUnaryCall<ChatRequest, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      if (call.request.model === "ok") return callback(null, create(ChatResponseSchema, { id: "ok" }));
      unaryInfergate(call.request, call.metadata, callback);
    },
    Generate: (call: grpc.ServerWritableStream<GenerateRequest, unknown>) => {
      const mode = call.request.model;
      if (mode === "stream-500") call.write(create(GenerateResponseSchema, { event: { case: "textDelta", value: "one " } }));
      call.emit("error", grpcError("infergate", mode, call.metadata) ?? notFound(mode));
    },
    ListModels: (_call: unknown, callback: grpc.sendUnaryData<unknown>) => callback(null, create(ListModelsResponseSchema, {})),
  });
  const grpcPort = await new Promise<number>((resolve, reject) =>
    grpcServer.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
  );

  return {
    httpUrl: `http://127.0.0.1:${(httpServer.address() as AddressInfo).port}`,
    grpcUrl: `http://127.0.0.1:${grpcPort}`,
    echoes,
    close: async () => {
      await new Promise<void>((resolve) => {
        httpServer.close(() => resolve());
        httpServer.closeAllConnections();
      });
      grpcServer.forceShutdown();
    },
  };
}

/** The key a request carried: the Bearer token, else `x-api-key`. */
function keyOf(headers: IncomingHttpHeaders): string {
  const auth = headers["authorization"];
  if (typeof auth === "string" && auth !== "") return auth.replace(/^Bearer\s+/i, "");
  const apiKey = headers["x-api-key"];
  return typeof apiKey === "string" ? apiKey : "";
}

/** Which API a request is for, and the upstream model that picks the answer; probes answer 200. */
function httpRoute(method: string, path: string, body: { model?: unknown }): { api: string; mode: string; probe: boolean } | undefined {
  const model = typeof body.model === "string" ? body.model : "";
  if (method === "POST" && path === "/v1/chat/completions") return { api: "openai", mode: model, probe: false };
  if (method === "POST" && path === "/v1/messages") return { api: "anthropic", mode: model, probe: false };
  let m = /^\/v2\/models\/([^/]+)(?:\/versions\/[^/]+)?\/(infer|ready)$/.exec(path);
  if (m !== null) return { api: "kserve-rest", mode: decodeURIComponent(m[1]!), probe: m[2] === "ready" };
  m = /^\/v1\/models\/([^/:]+)(?:\/versions\/[^/:]+)?(:predict)?$/.exec(path);
  if (m !== null) return { api: "tfserving", mode: decodeURIComponent(m[1]!), probe: m[2] === undefined };
  return undefined;
}

/** A 200 answer that parses but that the kind's translator refuses, quoting the key. */
function invalidAnswer(api: string, key: string, stream: boolean): string {
  switch (api) {
    case "openai": {
      const error = JSON.stringify({ error: { type: key, code: key, message: `key ${key}` } });
      return stream ? `data: ${error}\n\n` : error;
    }
    case "anthropic":
      return stream
        ? `event: error\ndata: ${JSON.stringify({ type: "error", error: { type: "overloaded_error", message: `key ${key}` } })}\n\n`
        : JSON.stringify({ id: key, type: "message", role: "assistant", content: key });
    case "kserve-rest":
      return JSON.stringify({ model_name: "invalid-200", outputs: [{ name: "OUTPUT0", datatype: key, shape: [1], data: [1] }] });
    default:
      // TF Serving, row format: one output named by the key, whose rows are ragged.
      return JSON.stringify({ predictions: [{ [key]: [[1], [1, 2]] }] });
  }
}
