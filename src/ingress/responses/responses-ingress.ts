/**
 * OpenAI's Responses API on the HTTP listener (server.httpListen), beside the Chat Completions
 * API: an app written for `client.responses` switches to infergate by changing its base URL to
 * `http://<httpListen>/v1`, multi-turn included. Served over the same gateway core (`gateway.chat`,
 * `gateway.generate`), so keys, rate limits, budgets, routing, fallbacks, the cache, breakers,
 * deadlines and cancellation are those of Chat. Translation is responses-translate.ts and
 * responses-answer.ts; stored responses response-store.ts; this file does only HTTP.
 * docs/responses-api.md.
 *
 * - `POST /v1/responses`: unary → Chat; `"stream": true` → Generate as the API's server-sent
 *   events (`event: <type>` / `data: <json>`). With `previous_response_id` the stored conversation
 *   goes in front of this turn's input before the gateway sees the request (so the cache key
 *   covers it); with `store` (default true) the response and its conversation are kept.
 * - `GET /v1/responses/{id}`, `DELETE /v1/responses/{id}`: a stored response of the caller's key
 *   (another key's is a 404, as a missing or expired one). The key is checked by the gateway as
 *   for a ListModels call (admission, recorded as one).
 *
 * A stream is committed (status 200 and headers sent) when its first event is ready: until then a
 * failure is an HTTP status with the API's `{"error": …}` body; after it, an `error` event and a
 * `response.failed` event end the body.
 */
import { randomBytes } from "node:crypto";
import type * as http from "node:http";
import type * as http2 from "node:http2";
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { type Message, MessageSchema, Role } from "../../../gen/infergate/v1/chat_pb.js";
import { ChatRequestSchema, type GenerateRequest, GenerateRequestSchema, ListModelsRequestSchema } from "../../../gen/infergate/v1/inference_service_pb.js";
import type { OwnedCallContext } from "../../core/call-context.js";
import { echoed, GatewayError, withFieldRenamed } from "../../core/gateway-error.js";
import type { Gateway } from "../../gateway/gateway.js";
import { costHeader } from "../../gateway/steps/call-record.js";
import { AnswerAssembler } from "../../sessions/sessions.js";
import type { SessionStore } from "../../sessions/session-store.js";
import { toErrorAnswer, usageCost } from "../openai/openai-ingress-translate.js";
import {
  allow,
  badTimeoutError,
  closed,
  type HttpHandler,
  HttpRefusal,
  ingressCallContext,
  type OpenAIIngressOptions,
  readJson,
  sendError,
  sendJson,
  write,
} from "../openai/openai-ingress.js";
import { createEventEncoder, finished, outputItems, type ResponseBase } from "./responses-answer.js";
import { ownerOf, ResponseStore } from "./response-store.js";
import { fromResponsesRequest, type MessageLayout, toResponsesField } from "./responses-translate.js";
import type { ResponseObject, StreamEvent } from "./responses-wire.js";

type Request = http.IncomingMessage | http2.Http2ServerRequest;
type Response = http.ServerResponse | http2.Http2ServerResponse;

/** The ingress's options: the OpenAI-compatible API's (the same server settings). */
export type ResponsesIngressOptions = Pick<OpenAIIngressOptions, "maxTimeoutMs" | "maxBodyBytes"> & {
  /** `sessions.maxBytes`: a response object larger than this is not stored (ResponseStore.save). */
  readonly sessionMaxBytes: number;
};

const responsesPath = "/v1/responses";

/** A response id as this ingress makes them (`resp_` and 48 hex digits); anything else is not one. */
const idPattern = /^resp_[0-9a-f]{48}$/;

/** Sends `/v1/responses` and `/v1/responses/…` to `ingress`, everything else to `other`. */
export function withResponsesIngress(ingress: HttpHandler, other: HttpHandler): HttpHandler {
  return (req, res) => {
    const path = (req.url ?? "").split("?")[0]!;
    return path === responsesPath || path.startsWith(`${responsesPath}/`) ? ingress(req, res) : other(req, res);
  };
}

/** Makes the handler of the Responses API over `gateway`, keeping responses in `store` (the session store). */
export function createResponsesIngress(gateway: Gateway, store: SessionStore, options: ResponsesIngressOptions): HttpHandler {
  const responses = new ResponseStore(store, options.sessionMaxBytes);
  return (req, res) => {
    res.on("error", () => {});
    req.on("error", () => {});
    serve(gateway, responses, options, req, res).catch(() => {
      if (!closed.has(res)) res.destroy();
    });
  };
}

async function serve(gateway: Gateway, store: ResponseStore, options: ResponsesIngressOptions, req: Request, res: Response): Promise<void> {
  // The client going away aborts the call, and with it the upstream request (ingressCallContext).
  const { ctx, badTimeout } = ingressCallContext(req, res, options.maxTimeoutMs);
  try {
    if (badTimeout) throw badTimeoutError();
    const [path, query = ""] = (req.url ?? "/").split("?");
    if (path === responsesPath) {
      allow(req, "POST");
      await createResponse(gateway, store, options, req, res, ctx);
      return;
    }
    const id = path!.slice(responsesPath.length + 1);
    if (id.includes("/")) {
      throw new HttpRefusal(404, `unknown request URL: ${echoed(req.method ?? "", 32)} ${echoed(path!)} (docs/responses-api.md lists the routes)`, "unknown_url");
    }
    if (req.method !== "GET" && req.method !== "DELETE") {
      throw new HttpRefusal(405, `${echoed(req.method ?? "", 32)} is not allowed here; use GET or DELETE`, "method_not_allowed", { allow: "GET, DELETE" });
    }
    if (new URLSearchParams(query).get("stream") === "true") {
      throw new GatewayError(Code.InvalidArgument, "stream: replaying a stored response as a stream is not supported", { metadata: { field: "stream" } });
    }
    // The caller's key is checked as for any call (admission), before the store is read.
    await gateway.listModels(create(ListModelsRequestSchema, {}), ctx);
    const owner = ownerOf(ctx);
    if (req.method === "GET") {
      const stored = idPattern.test(id) ? await store.load(owner, id) : undefined;
      if (stored === undefined) throw notFound(id);
      sendJson(res, 200, stored.response, ctx.responseHeaders);
    } else {
      if (!idPattern.test(id) || !(await store.delete(owner, id))) throw notFound(id);
      sendJson(res, 200, { id, object: "response", deleted: true }, ctx.responseHeaders);
    }
  } catch (err) {
    sendError(req, res, err, ctx);
  } finally {
    ctx.dispose();
  }
}

/** A response id nobody (of this key) stored: 404 in the API's error shape. */
function notFound(id: string, field?: string): GatewayError {
  return new GatewayError(Code.NotFound, `Response with id '${echoed(id, 64)}' not found (never stored, expired, deleted, or made with another key).`, {
    reason: field === undefined ? "RESPONSE_NOT_FOUND" : "PREVIOUS_RESPONSE_NOT_FOUND",
    metadata: field === undefined ? {} : { field },
  });
}

function newId(prefix: string): string {
  return `${prefix}_${randomBytes(24).toString("hex")}`;
}

const itemId = (prefix: "msg" | "fc") => newId(prefix);

async function createResponse(gateway: Gateway, store: ResponseStore, options: ResponsesIngressOptions, req: Request, res: Response, ctx: OwnedCallContext): Promise<void> {
  // Element counts are the gateway's validation's (server.requestLimits on the decoded request,
  // history included); the text is bounded by maxBodyBytes.
  const call = fromResponsesRequest(await readJson(req, options.maxBodyBytes, () => {}));
  const owner = ownerOf(ctx);
  let history: Message[] = [];
  if (call.previousResponseId !== undefined) {
    // Stored responses are kept under the hash of the key that made them (ownerOf): one found was
    // made with this key, whose call below is admitted as any other (once: one request of its
    // rate limit). One not found: the key is checked first, so that a bad key is 401, not 404.
    const previous = idPattern.test(call.previousResponseId) ? await store.load(owner, call.previousResponseId) : undefined;
    if (previous === undefined) {
      await gateway.listModels(create(ListModelsRequestSchema, {}), ctx);
      throw notFound(call.previousResponseId, "previous_response_id");
    }
    history = previous.history;
  }
  const input = call.input.map((m) => create(MessageSchema, m));
  const messages = [...(call.instructions === undefined ? [] : [create(MessageSchema, call.instructions)]), ...history, ...input];
  // Errors name the request's fields, not the ChatRequest's (toResponsesField).
  const layout: MessageLayout = { instructions: call.instructions !== undefined, history: history.length, origins: call.origins };
  const base: ResponseBase = { id: newId("resp"), createdAt: Math.floor(Date.now() / 1000), model: call.settings.model ?? "", echo: call.echo };
  /**
   * Keeps the finished response with its conversation: the history, this turn's input, the
   * answer. One too large to keep (sessions.maxBytes) says so: `store: false` in what is sent.
   */
  const keep = async (response: ResponseObject, answer: Message, ...sent: ResponseObject[]): Promise<void> => {
    if (!call.store) return;
    if (await store.save(owner, response, [...history, ...input, answer])) return;
    for (const r of [response, ...sent]) r.store = false;
  };

  if (!call.stream) {
    const answer = await gateway.chat(create(ChatRequestSchema, { ...call.settings, messages }), ctx).catch((err: unknown) => {
      throw withFieldRenamed(err, (f) => toResponsesField(f, layout));
    });
    const response = finished(base, outputItems(answer.message, itemId), answer);
    withCost(response, ctx);
    await keep(response, answer.message ?? create(MessageSchema, { role: Role.ASSISTANT }));
    sendJson(res, 200, response, ctx.responseHeaders);
    return;
  }
  await stream(gateway, create(GenerateRequestSchema, { ...call.settings, messages }), base, keep, res, ctx, layout);
}

async function stream(
  gateway: Gateway,
  request: GenerateRequest,
  base: ResponseBase,
  keep: (response: ResponseObject, answer: Message, ...sent: ResponseObject[]) => Promise<void>,
  res: Response,
  ctx: OwnedCallContext,
  layout: MessageLayout,
): Promise<void> {
  const events = gateway.generate(request, ctx);
  const encoder = createEventEncoder(base, itemId);
  const answer = new AnswerAssembler();
  // Numbered as they are written, so that the numbers have no gap whatever was built and not sent
  // (the last events, made before the response is stored, are not sent when that fails).
  let sent = 0;
  const send = (e: StreamEvent) => write(res, sseEvent({ ...e, sequence_number: sent++ }), ctx.signal);
  try {
    // Before the first event every failure is still an HTTP status (thrown to serve()).
    let next = await events.next().catch((err: unknown) => {
      throw withFieldRenamed(err, (f) => toResponsesField(f, layout));
    });
    if (closed.has(res)) return;
    res.writeHead(200, { ...ctx.responseHeaders, "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache" });
    try {
      for (const e of encoder.start()) await send(e);
      // The last events (from the final one) wait for the stream's end, when the cost is known.
      let last: StreamEvent[] = [];
      while (next.done !== true) {
        answer.add(next.value);
        const out = encoder.push(next.value);
        if (encoder.response !== undefined) last = out;
        else for (const e of out) await send(e);
        if (closed.has(res)) return;
        next = await events.next();
      }
      const response = encoder.response;
      if (response === undefined) throw new GatewayError(Code.Internal, "internal error", { cause: new Error("a stream without its final event") });
      const terminal = last.at(-1)!;
      withCost(terminal["response"] as ResponseObject, ctx);
      withCost(response, ctx);
      // Stored before the client hears it finished, so that a continuation right after finds it.
      await keep(response, answer.message(), terminal["response"] as ResponseObject);
      for (const e of last) await send(e);
    } catch (err) {
      // Committed: the failure is an error event and response.failed, and the body ends.
      if (!closed.has(res)) {
        const { error } = toErrorAnswer(withFieldRenamed(err, (f) => toResponsesField(f, layout))).body;
        for (const e of encoder.fail({ code: error.code, message: error.message, param: error.param })) await send(e);
      }
    }
    res.end();
  } finally {
    // Ends the gateway's stream when the loop left early (the client went away).
    await events.return(undefined);
  }
}

/** One server-sent event: the event's type as its name, the event as its data. */
function sseEvent(e: StreamEvent): string {
  return `event: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`;
}

/** Adds the call's cost to a response's `usage` (UsageCost, as Chat Completions answers have it). */
function withCost(response: ResponseObject, ctx: OwnedCallContext): void {
  if (response.usage !== null) Object.assign(response.usage, usageCost(ctx.responseHeaders[costHeader]));
}
