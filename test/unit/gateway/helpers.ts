import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Role } from "../../../gen/infergate/v1/chat_pb.js";
import {
  type ChatResponse,
  ChatResponseSchema,
  type GenerateRequest,
  GenerateRequestSchema,
  type GenerateResponse,
  GenerateResponseSchema,
  type ChatRequest,
  ChatRequestSchema,
} from "../../../gen/infergate/v1/inference_service_pb.js";
import { parseConfig } from "../../../src/config/load-config.js";
import { type CallContext, createCallContext, type OwnedCallContext } from "../../../src/core/call-context.js";
import type { ModelRoute } from "../../../src/core/model-route.js";
import type { Upstream } from "../../../src/core/upstream.js";
import type { Rpc } from "../../../src/core/rpc.js";
import { GatewayCall, type Runtime } from "../../../src/gateway/gateway-call.js";
import type { Router } from "../../../src/gateway/router.js";

/** A createCallContext context (it can abort itself), a minute long. */
export function context(): OwnedCallContext {
  return createCallContext({ timeoutMs: undefined, maxTimeoutMs: 60_000, timeoutHeader: "grpc-timeout" });
}

/** A context as a listener without createCallContext would make it: no abort, no isAborted. */
export function plainContext(): CallContext & { controller: AbortController } {
  const controller = new AbortController();
  return {
    controller,
    signal: controller.signal,
    deadline: Date.now() + 60_000,
    headers: {},
    tenant: "",
    requestId: "r1",
    peerCommonName: undefined,
    responseHeaders: {},
    trace: { attempts: 0, endpoint: undefined },
  };
}

export const user = (text: string) => [{ role: Role.USER, content: [{ part: { case: "text" as const, value: text } }] }];

export function chatRequest(init: MessageInitShape<typeof ChatRequestSchema> = {}): ChatRequest {
  return create(ChatRequestSchema, { model: "m", messages: user("hi"), ...init });
}

export function generateRequest(init: MessageInitShape<typeof GenerateRequestSchema> = {}): GenerateRequest {
  return create(GenerateRequestSchema, { model: "m", messages: user("hi"), ...init });
}

export function chatAnswer(text = "hello"): ChatResponse {
  return create(ChatResponseSchema, {
    message: { role: Role.ASSISTANT, content: [{ part: { case: "text", value: text } }] },
    usage: { promptTokens: 3, completionTokens: 2 },
  });
}

/** A stream's events: one text delta per word, then the final event. */
export function events(...words: string[]): GenerateResponse[] {
  return [
    ...words.map((w) => create(GenerateResponseSchema, { event: { case: "textDelta", value: w } })),
    create(GenerateResponseSchema, { event: { case: "final", value: { usage: { promptTokens: 1, completionTokens: words.length } } } }),
  ];
}

/** A model's cache settings as the configuration's defaults give them. */
const defaultModel = parseConfig("upstreams: [{ name: mock, kind: mock }]\nmodels: [{ name: m, upstream: mock }]\n", "(test)", {}).models[0]!;
const modelCache = defaultModel.cache;

/** A model route over `upstream` (a stub with a name), with `fallbacks`. */
export function route(name: string, upstream: Partial<Upstream> & { name: string }, fallbacks: ModelRoute[] = []): ModelRoute {
  return {
    name,
    version: "1",
    upstream: { kind: "stub", close: async () => {}, ...upstream },
    upstreamModel: name,
    capabilities: ["predict", "chat", "generate"],
    modelOptions: undefined,
    cache: modelCache,
    embedding: defaultModel.embedding,
    price: undefined,
    currency: "USD",
    fallbacks,
  };
}

/** A runtime whose router knows `routes` only. */
export function runtime(routes: ModelRoute[], admit?: Runtime["admit"]): Runtime {
  const router: Router = {
    resolve(model) {
      const r = routes.find((x) => x.name === model);
      if (r === undefined) throw new Error(`no route ${model}`);
      return r;
    },
    routes: () => routes,
  };
  return { router, admit };
}

/** A call as the steps after the drain step see it (its runtime set). */
export function callOf<Req>(rpc: Rpc, request: Req, ctx: CallContext = context(), rt?: Runtime): GatewayCall<Req> {
  const call = new GatewayCall(rpc, (request as { model?: string }).model ?? "", request, ctx);
  if (rt !== undefined) call.runtime = rt;
  return call;
}

/** Reads a stream to its end or first error. */
export async function drain<T>(it: AsyncIterable<T> | Iterable<T>): Promise<{ items: T[]; err: unknown }> {
  const items: T[] = [];
  try {
    for await (const x of it) items.push(x);
    return { items, err: undefined };
  } catch (err) {
    return { items, err };
  }
}
