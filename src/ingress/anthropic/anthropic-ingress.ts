/**
 * The Anthropic Messages API on the HTTP listener (server.httpListen), beside the OpenAI-compatible
 * API and Connect: an app that uses one of Anthropic's SDKs switches to infergate by changing its
 * base URL to `http://<httpListen>` (the SDKs append `/v1/messages`). Served over the same gateway
 * core, so admission (API keys in `x-api-key` or `authorization: Bearer`, rate limits, budgets),
 * routing, fallbacks, cache, deadlines and cancellation are the same as everywhere. Translation
 * is anthropic-ingress-translate.ts; this file does only HTTP. docs/anthropic-ingress.md.
 *
 * - `POST /v1/messages`: unary → Chat; `"stream": true` → Generate as Anthropic's server-sent
 *   events (`event: <type>` / `data: <json>`), with `ping` events while the stream waits.
 * - `POST /v1/messages/count_tokens`: the prompt's input tokens at its model, from the upstream
 *   kind's count (the anthropic kind asks Anthropic's own endpoint, so it is exact); a model whose
 *   kind cannot count gets 501 (see the doc).
 * - `GET /v1/models`, `GET /v1/models/{model}` when the request carries `anthropic-version`
 *   (what Anthropic's SDKs send); without it they stay the OpenAI-compatible API's.
 *
 * A stream is committed (status 200 and headers sent) when its first event is ready, or when a
 * keep-alive interval passes without one (then message_start and a ping go out). Until then every
 * failure is an HTTP error status with the API's error body; after it, a failure is one `event:
 * error` and the end of the body, without message_stop.
 */
import { randomUUID } from "node:crypto";
import type * as http from "node:http";
import type * as http2 from "node:http2";
import { create } from "@bufbuild/protobuf";
import { ListModelsRequestSchema } from "../../../gen/infergate/v1/inference_service_pb.js";
import type { GenerateResponse } from "../../../gen/infergate/v1/inference_service_pb.js";
import { Code } from "@connectrpc/connect";
import { type Gateway, servedByHeader, type TokenCountAnswer } from "../../gateway/gateway.js";
import { echoed, GatewayError, withFieldRenamed } from "../../core/gateway-error.js";
import type { OwnedCallContext } from "../../core/call-context.js";
import {
  allow,
  badTimeoutError,
  closed,
  type HttpHandler,
  HttpRefusal,
  ingressCallContext,
  type OpenAIIngressOptions,
  readJson,
  sendErrorAnswer,
  sendJson,
  sendModels,
  write,
} from "../openai/openai-ingress.js";
import {
  type AnthropicErrorAnswer,
  createEventEncoder,
  errorBody,
  fromCountTokensRequest,
  fromMessagesRequest,
  type MessageOrigin,
  toAnthropicField,
  sseEvent,
  toAnthropicError,
  toAnthropicModelList,
  toMessage,
} from "./anthropic-ingress-translate.js";

type Request = http.IncomingMessage | http2.Http2ServerRequest;
type Response = http.ServerResponse | http2.Http2ServerResponse;

/** The ingress's options: the OpenAI-compatible API's (the same server settings). */
export type AnthropicIngressOptions = Pick<OpenAIIngressOptions, "maxTimeoutMs" | "maxBodyBytes">;

/**
 * How long a stream may go without an event before a `ping` is sent, so that proxies and clients
 * that close idle connections keep it. A setting object rather than a constant so that tests can
 * shorten it (test/e2e/anthropic-ingress.test.ts).
 */
export const keepAlive = { intervalMs: 10_000 };

/** Paths of this API. */
const messagesPath = "/v1/messages";
const countTokensPath = "/v1/messages/count_tokens";

/**
 * Sends the Messages API's paths (and `/v1/models…` with `anthropic-version`) to `ingress`, and
 * everything else to `other` (the OpenAI-compatible API and Connect).
 */
export function withAnthropicIngress(ingress: HttpHandler, other: HttpHandler): HttpHandler {
  return (req, res) => {
    const path = (req.url ?? "").split("?")[0]!;
    // Every /v1/messages/… path is this API's (batches, unknown ones: a 404 in its error shape).
    const ours =
      path === messagesPath || path.startsWith(`${messagesPath}/`) || ((path === "/v1/models" || path.startsWith("/v1/models/")) && req.headers["anthropic-version"] !== undefined);
    return ours ? ingress(req, res) : other(req, res);
  };
}

/** Makes the handler of the Anthropic Messages API over `gateway`. */
export function createAnthropicIngress(gateway: Gateway, options: AnthropicIngressOptions): HttpHandler {
  return (req, res) => {
    res.on("error", () => {});
    req.on("error", () => {});
    serve(gateway, options, req, res).catch(() => {
      if (!closed.has(res)) res.destroy();
    });
  };
}

async function serve(gateway: Gateway, options: AnthropicIngressOptions, req: Request, res: Response): Promise<void> {
  // The client going away aborts the call, and with it the upstream request (ingressCallContext).
  const { ctx, badTimeout } = ingressCallContext(req, res, options.maxTimeoutMs);
  try {
    if (badTimeout) {
      throw badTimeoutError();
    }
    const path = (req.url ?? "/").split("?")[0]!;
    if (path === messagesPath) {
      allow(req, "POST");
      await messages(gateway, options, req, res, ctx);
    } else if (path === countTokensPath) {
      allow(req, "POST");
      await countTokens(gateway, options, req, res, ctx);
    } else if (path.startsWith(`${messagesPath}/`)) {
      // Message Batches and anything else under /v1/messages/: not served (docs/anthropic-ingress.md).
      throw new HttpRefusal(404, `unknown request URL: ${echoed(path)} (infergate serves POST /v1/messages and /v1/messages/count_tokens)`, "not_found");
    } else {
      allow(req, "GET");
      await models(gateway, path, res, ctx);
    }
  } catch (err) {
    sendError(req, res, err, ctx);
  } finally {
    ctx.dispose();
  }
}

async function messages(gateway: Gateway, options: AnthropicIngressOptions, req: Request, res: Response, ctx: OwnedCallContext): Promise<void> {
  // Element counts are the gateway's validation's (server.requestLimits on the decoded request);
  // the text is bounded by maxBodyBytes.
  const call = fromMessagesRequest(await readJson(req, options.maxBodyBytes, () => {}));
  // Errors name the request's fields, not the ChatRequest's (toAnthropicField).
  const renamed = (err: unknown) => withFieldRenamed(err, (f) => toAnthropicField(f, call.origins));
  if (!call.stream) {
    const answer = await gateway.chat(call.request, ctx).catch((err: unknown) => {
      throw renamed(err);
    });
    sendJson(res, 200, toMessage(answer, answer.id !== "" ? answer.id : newId()), ctx.responseHeaders);
    return;
  }
  const events = gateway.generate(call.request, ctx);
  // message_start names the model that answers (a fallback's name when one did), which the
  // gateway says in infergate-served-by (`<model>/<upstream>`) by the stream's first event; a
  // ping before it names the model asked for.
  const encoder = createEventEncoder({ id: newId(), model: () => servedModel(ctx.responseHeaders[servedByHeader]) ?? call.request.model });
  let pending: Promise<IteratorResult<GenerateResponse>> | undefined;
  /** The next event, or "idle" when a keep-alive interval passes first. */
  const nextOrIdle = async (): Promise<IteratorResult<GenerateResponse> | "idle"> => {
    pending ??= events.next();
    let timer: NodeJS.Timeout | undefined;
    const idle = new Promise<"idle">((resolve) => (timer = setTimeout(() => resolve("idle"), keepAlive.intervalMs)));
    try {
      const r = await Promise.race([pending, idle]);
      if (r !== "idle") pending = undefined;
      return r;
    } finally {
      clearTimeout(timer);
    }
  };
  try {
    // Before the first event (or the first idle interval) every failure is an HTTP status.
    let next = await nextOrIdle().catch((err: unknown) => {
      throw renamed(err);
    });
    if (closed.has(res)) return;
    res.writeHead(200, { ...ctx.responseHeaders, "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache" });
    try {
      for (;;) {
        const out = next === "idle" ? [...encoder.start(), { type: "ping" as const }] : next.done === true ? [] : encoder.push(next.value);
        for (const e of out) await write(res, sseEvent(e), ctx.signal);
        if (next !== "idle" && next.done === true) break;
        if (closed.has(res)) return;
        next = await nextOrIdle();
      }
    } catch (err) {
      // Committed: the failure is one error event, and the body ends without message_stop.
      if (!closed.has(res)) {
        await write(res, `event: error\ndata: ${JSON.stringify(toAnthropicError(renamed(err)).body)}\n\n`, ctx.signal);
      }
    }
    res.end();
  } finally {
    // Ends the gateway's stream when the loop left early (the client went away).
    pending?.catch(() => {});
    await events.return(undefined);
  }
}

async function countTokens(gateway: Gateway, options: AnthropicIngressOptions, req: Request, res: Response, ctx: OwnedCallContext): Promise<void> {
  const { request, origins } = fromCountTokensRequest(await readJson(req, options.maxBodyBytes, () => {}));
  let count: TokenCountAnswer;
  try {
    count = await gateway.countTokens(request, ctx);
  } catch (caught) {
    const err = withFieldRenamed(caught, (f) => toAnthropicField(f, origins));
    // A model whose upstream kind cannot count: the route exists, this model cannot serve it.
    if (err instanceof GatewayError && err.code === Code.Unimplemented && err.metadata["rpc"] === "CountTokens") {
      throw new HttpRefusal(501, err.message, "not_implemented");
    }
    throw err;
  }
  sendJson(res, 200, { input_tokens: count.inputTokens }, ctx.responseHeaders);
}

/** The model of an `infergate-served-by` value (`<model>/<upstream>`; a model name may hold "/"). */
function servedModel(servedBy: string | undefined): string | undefined {
  const cut = servedBy?.lastIndexOf("/") ?? -1;
  return cut > 0 ? servedBy!.slice(0, cut) : undefined;
}

function newId(): string {
  return `msg_${randomUUID().replaceAll("-", "")}`;
}

async function models(gateway: Gateway, path: string, res: Response, ctx: OwnedCallContext): Promise<void> {
  const list = toAnthropicModelList(await gateway.listModels(create(ListModelsRequestSchema, {}), ctx), new Date().toISOString());
  sendModels(res, path, list, ctx);
}

function sendError(req: Request, res: Response, err: unknown, ctx: OwnedCallContext): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const answer: AnthropicErrorAnswer =
    err instanceof HttpRefusal ? { status: err.status, body: errorBody(err.status, err.message), headers: err.headers } : toAnthropicError(err);
  sendErrorAnswer(req, res, answer, ctx);
}
