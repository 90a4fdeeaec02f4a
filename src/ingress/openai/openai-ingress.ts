/**
 * The OpenAI-compatible HTTP API on the HTTP listener (server.httpListen), beside Connect,
 * gRPC-Web and JSON: an app that uses an OpenAI SDK switches to infergate by changing its base URL
 * to `http://<httpListen>/v1`. Served over the same gateway core as the gRPC and Connect
 * listeners, so admission (API keys, rate limits), routing, fallbacks, cache, deadlines and
 * cancellation are the same. Translation is openai-ingress-translate.ts (the openai kind's mapping
 * read the other way); this file does only HTTP. docs/openai-ingress.md.
 *
 * - `POST /v1/chat/completions`: unary → Chat; `"stream": true` → Generate as server-sent events,
 *   `data: <chunk>` per event and `data: [DONE]` after a complete answer.
 * - `POST /v1/embeddings`: Embed; translation in openai-embeddings.ts.
 * - `GET /v1/models`, `GET /v1/models/{model}`: the configured models that serve Chat, Generate or Embed.
 *
 * A stream is committed (status 200 and headers sent) when its first event is ready: until then
 * every failure is an HTTP error status with the API's `{"error": …}` body. After it, a failure
 * is one `data: {"error": …}` event and the end of the body without `[DONE]`, which the OpenAI
 * SDKs raise as an error (and a client that reads the raw stream sees no `[DONE]`).
 */
import { randomUUID } from "node:crypto";
import type * as http from "node:http";
import type * as http2 from "node:http2";
import type { TLSSocket } from "node:tls";
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { ListModelsRequestSchema } from "../../../gen/infergate/v1/inference_service_pb.js";
import type { Gateway } from "../../gateway/gateway.js";
import { defaultRequestLimits, type RequestLimits } from "../../config/schema.js";
import { echoed, GatewayError, invalidArgument, maxErrorMessageChars, Reason } from "../../core/gateway-error.js";
import { checkOpenAIChatLimits } from "../../gateway/request-limits.js";
import { costHeader } from "../../gateway/steps/call-record.js";
import { callerHeaders, createCallContext, type OwnedCallContext, peerCommonName } from "../../core/call-context.js";
import {
  createChunkEncoder,
  errorType,
  fromChatCompletionRequest,
  type HttpErrorAnswer,
  toChatCompletion,
  usageCost,
  toErrorAnswer,
  toModelList,
} from "./openai-ingress-translate.js";
import { streamDoneData } from "../../upstreams/openai/openai-wire.js";
import { fromEmbeddingsRequest, toEmbeddingList, withApiField } from "./openai-embeddings.js";

type Request = http.IncomingMessage | http2.Http2ServerRequest;
type Response = http.ServerResponse | http2.Http2ServerResponse;

/** A node:http / node:http2 compatibility-API request handler, as the HTTP listener takes. */
export type HttpHandler = (req: Request, res: Response) => void;

/** Paths under this prefix are the OpenAI-compatible API's; the rest of the port is Connect's. */
export const openaiPathPrefix = "/v1/";

/**
 * Request header with the call's timeout in milliseconds (a whole number), capped by
 * `server.maxTimeoutMs` as every deadline is. Without it the call may take `server.maxTimeoutMs`.
 * The SDKs' own `x-stainless-timeout` is not read: it is in whole seconds rounded down (a
 * deadline shorter than the client's), and the client's own timer closing the connection already
 * aborts the upstream call.
 */
export const timeoutHeader = "infergate-timeout-ms";

export interface OpenAIIngressOptions {
  /** `server.maxTimeoutMs`: the longest deadline, and the deadline of calls that set none. */
  readonly maxTimeoutMs: number;
  /** `server.maxMessageBytes`: the largest request body; a larger one is refused with 413. */
  readonly maxBodyBytes: number;
  /** `server.requestLimits`: element counts, checked on the body's text before it is parsed. */
  readonly requestLimits?: RequestLimits;
}

/** A refusal of the HTTP layer itself (path, method, body framing), before any call. */
export class HttpRefusal extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code: string,
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    // Cut as GatewayError's are: a refusal may repeat what the caller sent (a method, a path).
    super(echoed(message, maxErrorMessageChars));
  }
}

/**
 * Responses whose connection or HTTP/2 stream has closed. (Http2ServerResponse has no `destroyed`;
 * both kinds of response emit 'close'.)
 */
export const closed = new WeakSet<Response>();

/** Sends `/v1/…` to the OpenAI-compatible API and everything else to `other` (Connect). */
export function withOpenAIIngress(ingress: HttpHandler, other: HttpHandler): HttpHandler {
  return (req, res) => ((req.url ?? "").startsWith(openaiPathPrefix) ? ingress(req, res) : other(req, res));
}

/** Makes the handler of the OpenAI-compatible API over `gateway`. */
export function createOpenAIIngress(gateway: Gateway, options: OpenAIIngressOptions): HttpHandler {
  return (req, res) => {
    // Nothing a request does may reach the process as an unhandled rejection or 'error' event.
    res.on("error", () => {});
    req.on("error", () => {});
    serve(gateway, options, req, res).catch(() => {
      if (!closed.has(res)) {
        res.destroy();
      }
    });
  };
}

/**
 * The call context of an ingress request (every ingress's): the deadline of the
 * `infergate-timeout-ms` header capped by `maxTimeoutMs`, the caller's headers (for admission),
 * the verified client certificate's name. `badTimeout` when the header is not a whole number, for
 * the caller to refuse inside its error handling (the context must be disposed either way).
 */
export function ingressCallContext(req: Request, res: Response, maxTimeoutMs: number): { ctx: OwnedCallContext; badTimeout: boolean } {
  const headers = callerHeaders(Object.entries(req.headers));
  const rawTimeout = headers[timeoutHeader];
  const timeoutMs = rawTimeout !== undefined && /^\d{1,12}$/.test(rawTimeout) ? Number(rawTimeout) : undefined;
  const socket = req.socket as TLSSocket | undefined;
  const ctx = createCallContext({
    timeoutMs,
    maxTimeoutMs,
    timeoutHeader,
    headers,
    peerCommonName: socket?.authorized === true ? peerCommonName(socket.getPeerCertificate().subject) : undefined,
  });
  // The client going away (connection or HTTP/2 stream closed before the answer ended) aborts the
  // call, and with it the upstream request. After dispose() this does nothing.
  res.once("close", () => {
    closed.add(res);
    ctx.cancel();
  });
  return { ctx, badTimeout: rawTimeout !== undefined && timeoutMs === undefined };
}

/** The refusal of a malformed `infergate-timeout-ms` header (ingressCallContext's `badTimeout`). */
export function badTimeoutError(): GatewayError {
  return invalidArgument(timeoutHeader, "must be a whole number of milliseconds");
}

async function serve(gateway: Gateway, options: OpenAIIngressOptions, req: Request, res: Response): Promise<void> {
  const { ctx, badTimeout } = ingressCallContext(req, res, options.maxTimeoutMs);
  try {
    if (badTimeout) {
      throw badTimeoutError();
    }
    const path = (req.url ?? "/").split("?")[0]!;
    if (path === "/v1/chat/completions") {
      allow(req, "POST");
      await chatCompletions(gateway, options, req, res, ctx);
    } else if (path === "/v1/embeddings") {
      allow(req, "POST");
      await embeddings(gateway, options, req, res, ctx);
    } else if (path === "/v1/models" || path.startsWith("/v1/models/")) {
      allow(req, "GET");
      await models(gateway, path, res, ctx);
    } else {
      throw new HttpRefusal(404, `unknown request URL: ${echoed(req.method ?? "", 32)} ${echoed(path)}`, "unknown_url");
    }
  } catch (err) {
    sendError(req, res, err, ctx);
  } finally {
    ctx.dispose();
  }
}

/** Refuses (405) a request whose method is not `method`. */
export function allow(req: Request, method: string): void {
  if (req.method !== method) {
    throw new HttpRefusal(405, `${echoed(req.method ?? "", 32)} is not allowed here; use ${method}`, "method_not_allowed", { allow: method });
  }
}

async function chatCompletions(gateway: Gateway, options: OpenAIIngressOptions, req: Request, res: Response, ctx: OwnedCallContext): Promise<void> {
  const body = await readJson(req, options.maxBodyBytes, (text) => checkOpenAIChatLimits(text, options.requestLimits ?? defaultRequestLimits));
  const call = fromChatCompletionRequest(body);
  const created = Math.floor(Date.now() / 1000);
  if (!call.stream) {
    const answer = await gateway.chat(call.request, ctx);
    const completion = toChatCompletion(answer, created);
    withCost(completion.usage, ctx);
    sendJson(res, 200, completion, ctx.responseHeaders);
    return;
  }
  const events = gateway.generate(call.request, ctx);
  try {
    // Before the first event every failure is still an HTTP status (thrown to serve()).
    let next = await events.next();
    if (closed.has(res)) return;
    res.writeHead(200, {
      ...ctx.responseHeaders,
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
    });
    const encoder = createChunkEncoder({ id: `chatcmpl-${randomUUID().replaceAll("-", "")}`, created, model: call.request.model, includeUsage: call.includeUsage });
    // The usage chunk (include_usage) waits for the stream's end, when its cost is known.
    let usageChunk: { usage?: object | null } | undefined;
    try {
      while (next.done !== true) {
        for (const chunk of encoder.push(next.value)) {
          if (chunk.usage != null) {
            usageChunk = chunk;
            continue;
          }
          await write(res, `data: ${JSON.stringify(chunk)}\n\n`, ctx.signal);
        }
        if (closed.has(res)) return;
        next = await events.next();
      }
      if (usageChunk !== undefined) {
        withCost(usageChunk.usage, ctx);
        await write(res, `data: ${JSON.stringify(usageChunk)}\n\n`, ctx.signal);
      }
      await write(res, `data: ${streamDoneData}\n\n`, ctx.signal);
    } catch (err) {
      // Committed: the failure is one error event, and the body ends without [DONE].
      if (!closed.has(res)) {
        await write(res, `data: ${JSON.stringify(toErrorAnswer(err).body)}\n\n`, ctx.signal);
      }
    }
    res.end();
  } finally {
    // Ends the gateway's stream when the loop left early (the client went away).
    await events.return(undefined);
  }
}

/** Adds the call's cost to an answer's `usage` (UsageCost), once the gateway has set it. */
function withCost(usage: object | null | undefined, ctx: OwnedCallContext): void {
  if (usage != null) Object.assign(usage, usageCost(ctx.responseHeaders[costHeader]));
}

async function embeddings(gateway: Gateway, options: OpenAIIngressOptions, req: Request, res: Response, ctx: OwnedCallContext): Promise<void> {
  // No element counts to check on the text: the inputs are the gateway's to count (the model's
  // embedding.maxInputs), and the body is already bounded by maxBodyBytes.
  const call = fromEmbeddingsRequest(await readJson(req, options.maxBodyBytes, () => {}));
  let answer;
  try {
    answer = await gateway.embed(call.request, ctx);
  } catch (err) {
    throw withApiField(err, call.shape);
  }
  const list = toEmbeddingList(answer, call.base64);
  withCost(list.usage, ctx);
  sendJson(res, 200, list, ctx.responseHeaders);
}

async function models(gateway: Gateway, path: string, res: Response, ctx: OwnedCallContext): Promise<void> {
  const list = toModelList(await gateway.listModels(create(ListModelsRequestSchema, {}), ctx), Math.floor(Date.now() / 1000));
  sendModels(res, path, list, ctx);
}

/**
 * Answers `GET /v1/models` with `list`, and `GET /v1/models/{id}` with the model of that id in it
 * (404 MODEL_NOT_FOUND when there is none): every ingress's model routes, each with its own shape.
 */
export function sendModels(res: Response, path: string, list: { data: readonly { id: string }[] }, ctx: OwnedCallContext): void {
  if (path === "/v1/models") {
    sendJson(res, 200, list, ctx.responseHeaders);
    return;
  }
  let id: string;
  try {
    id = decodeURIComponent(path.slice("/v1/models/".length));
  } catch {
    throw invalidArgument("model", "the path is not valid percent-encoding");
  }
  const model = list.data.find((m) => m.id === id);
  if (model === undefined) {
    throw new GatewayError(Code.NotFound, `model "${echoed(id)}" is not served by this gateway (see GET /v1/models)`, {
      reason: Reason.ModelNotFound,
      metadata: { model: echoed(id) },
    });
  }
  sendJson(res, 200, model, ctx.responseHeaders);
}

/**
 * Reads the body as JSON, at most `limit` bytes (413 beyond, without reading the rest), its text
 * first given to `check` (which throws to refuse it).
 */
export async function readJson(req: Request, limit: number, check: (text: string) => void): Promise<unknown> {
  const encoding = req.headers["content-encoding"];
  if (encoding !== undefined && encoding !== "identity") {
    throw new HttpRefusal(415, "compressed request bodies are not supported; send the body without content-encoding", "unsupported_content_encoding");
  }
  const tooLarge = () =>
    new HttpRefusal(413, `the request body is larger than the gateway's limit of ${limit} bytes (server.maxMessageBytes)`, "request_too_large");
  const declared = Number(req.headers["content-length"]);
  if (Number.isFinite(declared) && declared > limit) {
    throw tooLarge();
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) {
      throw tooLarge();
    }
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks, size).toString("utf8");
  check(text);
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new GatewayError(Code.InvalidArgument, `the body is not valid JSON: ${err instanceof Error ? echoed(err.message) : "parse error"}`);
  }
}

/**
 * Writes, and waits while the client reads slower than the stream comes (or until it leaves).
 * The wait also ends when the call is aborted (its deadline, the shutdown's cut-off): a client
 * that stops reading must not hold the call, its upstream request and its concurrency slot past
 * the deadline. After an abort nothing waits: what follows is at most the error event.
 */
export function write(res: Response, data: string, signal: AbortSignal): Promise<void> {
  if (closed.has(res) || (res as http.ServerResponse).write(data) || signal.aborted) {
    return Promise.resolve();
  }
  return new Promise((resolve) => {
    const done = () => {
      res.off("drain", done);
      res.off("close", done);
      signal.removeEventListener("abort", done);
      resolve();
    };
    res.on("drain", done);
    res.on("close", done);
    signal.addEventListener("abort", done, { once: true });
  });
}

export function sendJson(res: Response, status: number, body: unknown, headers: Readonly<Record<string, string>>): void {
  if (closed.has(res) || res.headersSent) return;
  const text = JSON.stringify(body);
  res.writeHead(status, { ...headers, "content-type": "application/json", "content-length": String(Buffer.byteLength(text)) });
  res.end(text);
}

/** Answers a failure in the API's error shape (also the Responses API's: src/ingress/responses/). */
export function sendError(req: Request, res: Response, err: unknown, ctx: OwnedCallContext): void {
  if (res.headersSent) {
    // A stream that failed while writing: nothing more can be said.
    res.end();
    return;
  }
  const answer: HttpErrorAnswer =
    err instanceof HttpRefusal
      ? {
          status: err.status,
          body: { error: { message: err.message, type: errorType(err.status), param: null, code: err.code } },
          headers: err.headers,
        }
      : toErrorAnswer(err);
  sendErrorAnswer(req, res, answer, ctx);
}

/** Sends an ingress's error answer (status, body, headers) with the call's response headers. */
export function sendErrorAnswer(
  req: Request,
  res: Response,
  answer: { status: number; body: unknown; headers: Readonly<Record<string, string>> },
  ctx: OwnedCallContext,
): void {
  const headers = { ...ctx.responseHeaders, ...answer.headers };
  if (req.httpVersionMajor === 1 && !req.complete) {
    // HTTP/1.1 refused before its body was read (413, 415, 405, 404, a bad header): to reuse the
    // connection Node would read and discard the rest of the body, without any size limit.
    headers["connection"] = "close";
  }
  sendJson(res, answer.status, answer.body, headers);
}
