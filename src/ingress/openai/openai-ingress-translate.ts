/**
 * The reverse of src/upstreams/openai/openai-translate.ts, for the OpenAI-compatible HTTP ingress
 * (openai-ingress.ts): a Chat Completions request as an OpenAI SDK sends it → our ChatRequest /
 * GenerateRequest, and our answers, stream events, model list and errors → the API's JSON. Pure
 * functions, no I/O. The enum tables and the data-URI helpers are openai-translate.ts's, so each
 * value has one mapping, read one way by the upstream adapter and the other way here (the ingress
 * imports from upstreams/, never the reverse). docs/openai-ingress.md has the mapping table.
 *
 * Requests: every key either maps, or is accepted only with a value that asks for nothing
 * (`n: 1`, `logprobs: false`, …), or is refused with INVALID_ARGUMENT whose `field` (the error's
 * `param`) names it — never silently dropped. `null` means "unset" everywhere, as in the API.
 *
 * Over 400 lines, kept whole: it is one wire format's translator, most of it the request reader
 * that maps or refuses each key of the Chat Completions body; the answer, chunk, model-list and
 * error writers are the same mapping's other half, tested against it in one file
 * (test/unit/openai-ingress-translate.test.ts).
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import type { JsonObject } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import {
  type ContentPartSchema,
  FinishReason,
  ImageDetail,
  type MessageSchema,
  ResponseFormatType,
  Role,
  type ToolChoiceSchema,
  type ToolSchema,
  type Usage,
} from "../../../gen/infergate/v1/chat_pb.js";
import {
  Capability,
  type ChatRequest,
  ChatRequestSchema,
  type ChatResponse,
  type GenerateRequest,
  GenerateRequestSchema,
  type GenerateResponse,
  type ListModelsResponse,
  type ModelInfo,
} from "../../../gen/infergate/v1/inference_service_pb.js";
import { echoed, GatewayError, invalidArgument, toStatus } from "../../core/gateway-error.js";
import { isObject } from "../../upstreams/json-value.js";
import {
  finishReasons,
  imageDetails,
  parseImageDataUrl,
  responseFormatTypes,
  roles,
  toolChoiceModes,
} from "../../upstreams/openai/openai-translate.js";
import type {
  ChatCompletion,
  ChatCompletionChunk,
  ErrorBody,
  ModelList,
  ModelObject,
  ToolCallChunk,
  WireFinishReason,
  WireToolCall,
  WireUsage,
} from "../../upstreams/openai/openai-wire.js";
import { checkedKeys, type InertKeys } from "../request-keys.js";

type Json = Record<string, unknown>;
type ChatInit = MessageInitShape<typeof ChatRequestSchema>;
type MessageInit = MessageInitShape<typeof MessageSchema>;
type PartInit = MessageInitShape<typeof ContentPartSchema>;

/** A request read from the API: a unary one for Chat, a streamed one for Generate. */
export type IngressRequest =
  | { readonly stream: false; readonly request: ChatRequest }
  | {
      readonly stream: true;
      readonly request: GenerateRequest;
      /** `stream_options.include_usage`: a `choices: []` chunk with the usage before `[DONE]`. */
      readonly includeUsage: boolean;
    };

const maxUint32 = 0xffff_ffff;

/** Top-level keys that map onto our request (see fromChatCompletionRequest). */
const mappedKeys = new Set([
  "model",
  "messages",
  "temperature",
  "top_p",
  "max_tokens",
  "max_completion_tokens",
  "seed",
  "presence_penalty",
  "frequency_penalty",
  "stop",
  "tools",
  "tool_choice",
  "parallel_tool_calls",
  "response_format",
  "stream",
  "stream_options",
  "metadata",
  "user",
  "safety_identifier",
]);

/**
 * Keys of the API that our contract cannot carry, accepted only with the value that asks for
 * nothing (what the API does without them), so that clients which always send them still work.
 */
const inertKeys: InertKeys = new Map([
  ["n", { accepts: (v) => v === 1, problem: "only 1 is supported: infergate answers with one choice" }],
  ["logprobs", { accepts: (v) => v === false, problem: "log probabilities are not supported; only false" }],
  ["top_logprobs", { accepts: (v) => v === 0, problem: "log probabilities are not supported; only 0" }],
  ["store", { accepts: (v) => v === false, problem: "infergate stores no completions; only false" }],
  ["logit_bias", { accepts: (v) => isObject(v) && Object.keys(v).length === 0, problem: "logit bias is not supported; only {}" }],
  ["modalities", { accepts: (v) => Array.isArray(v) && v.length === 1 && v[0] === "text", problem: 'only ["text"] is supported' }],
  ["service_tier", { accepts: (v) => v === "auto", problem: 'only "auto" is supported' }],
]);

const notSupported = "not supported by infergate's OpenAI-compatible API (docs/openai-ingress.md lists what is)";

/**
 * Reads the body of `POST /v1/chat/completions` (already parsed JSON). Throws INVALID_ARGUMENT
 * naming the key at fault, by its path in the API (`messages[2].content[0].image_url.url`), for
 * malformed input and for anything the core cannot carry. Checks that are the core's (ranges,
 * tool names, roles in order) are left to the gateway, which names the same paths.
 */
export function fromChatCompletionRequest(input: unknown): IngressRequest {
  const body = checkedKeys(input, mappedKeys, inertKeys, notSupported);
  const model = body["model"];
  if (typeof model !== "string" || model === "") {
    throw invalidArgument("model", "required: the name of a model this gateway serves (GET /v1/models)");
  }
  const messages = body["messages"];
  if (!Array.isArray(messages)) {
    throw invalidArgument("messages", "required: an array of messages");
  }
  const stream = opt(body, "stream", bool) ?? false;
  const streamOptions = opt(body, "stream_options", obj);
  let includeUsage = false;
  if (streamOptions !== undefined) {
    if (!stream) {
      throw invalidArgument("stream_options", "only allowed when stream is true");
    }
    onlyKeys(streamOptions, "stream_options", ["include_usage", "include_obfuscation"]);
    includeUsage = opt(streamOptions, "include_usage", bool, "stream_options.") ?? false;
    // No `obfuscation` padding is ever added, so either value asks for what infergate does.
    opt(streamOptions, "include_obfuscation", bool, "stream_options.");
  }

  const init: ChatInit = { model, messages: messages.map((m, i) => message(m, `messages[${i}]`)) };
  for (const [key, field] of [
    ["temperature", "temperature"],
    ["top_p", "topP"],
    ["presence_penalty", "presencePenalty"],
    ["frequency_penalty", "frequencyPenalty"],
  ] as const) {
    const v = opt(body, key, num);
    if (v !== undefined) init[field] = v;
  }
  const maxTokens = opt(body, "max_tokens", count);
  const maxCompletionTokens = opt(body, "max_completion_tokens", count);
  if (maxTokens !== undefined && maxCompletionTokens !== undefined) {
    throw invalidArgument("max_tokens", "set max_completion_tokens or max_tokens, not both");
  }
  const limit = maxCompletionTokens ?? maxTokens;
  if (limit !== undefined) init.maxTokens = limit;
  const seed = opt(body, "seed", (v, at) => {
    if (typeof v !== "number" || !Number.isSafeInteger(v)) {
      throw invalidArgument(at, `must be an integer between -${Number.MAX_SAFE_INTEGER} and ${Number.MAX_SAFE_INTEGER}`);
    }
    return BigInt(v);
  });
  if (seed !== undefined) init.seed = seed;
  const stop = opt(body, "stop", (v, at) => (typeof v === "string" ? [v] : arr(v, at).map((s, i) => str(s, `${at}[${i}]`))));
  if (stop !== undefined) init.stop = stop;
  const tools = opt(body, "tools", arr);
  if (tools !== undefined) init.tools = tools.map((t, i) => tool(t, `tools[${i}]`));
  const choice = opt(body, "tool_choice", toolChoice);
  if (choice !== undefined) init.toolChoice = choice;
  const parallel = opt(body, "parallel_tool_calls", bool);
  if (parallel !== undefined) init.parallelToolCalls = parallel;
  const format = opt(body, "response_format", responseFormat);
  if (format !== undefined) init.responseFormat = format;
  const metadata = opt(body, "metadata", (v, at) => {
    const o = obj(v, at);
    return Object.fromEntries(Object.entries(o).map(([k, s]) => [k, str(s, `${at}.${k}`)]));
  });
  if (metadata !== undefined) init.metadata = metadata;
  // End-user identifiers (abuse monitoring at OpenAI) do not change the answer: kept as request
  // metadata, so apps that always send them work unchanged; never sent to a model server.
  for (const key of ["user", "safety_identifier"] as const) {
    const id = opt(body, key, str);
    if (id !== undefined) init.metadata = { ...init.metadata, [`openai.${key}`]: id };
  }

  return stream
    ? { stream: true, request: create(GenerateRequestSchema, init), includeUsage }
    : { stream: false, request: create(ChatRequestSchema, init) };
}

/** Keys each role's message may have; anything else non-null is refused. */
const messageKeys: Readonly<Record<Role, readonly string[]>> = {
  [Role.UNSPECIFIED]: [],
  [Role.SYSTEM]: ["role", "content", "name"],
  [Role.DEVELOPER]: ["role", "content", "name"],
  [Role.USER]: ["role", "content", "name"],
  [Role.ASSISTANT]: ["role", "content", "name", "tool_calls", "refusal"],
  [Role.TOOL]: ["role", "content", "tool_call_id"],
};

function message(m: unknown, at: string): MessageInit {
  const o = obj(m, at);
  const roleName = o["role"];
  const role = typeof roleName === "string" ? roles.fromWire(roleName) : undefined;
  if (role === undefined) {
    const hint = roleName === "function" ? "; the deprecated function role is not supported, use tool" : "";
    throw invalidArgument(`${at}.role`, `one of ${roles.wire.join(", ")}${hint}`);
  }
  onlyKeys(o, at, messageKeys[role]);
  const out: MessageInit = { role };
  const name = opt(o, "name", str, `${at}.`);
  if (name !== undefined) out.name = name;
  switch (role) {
    case Role.USER:
      out.content = content(o["content"], `${at}.content`, { images: true, refusals: false });
      break;
    case Role.ASSISTANT: {
      const toolCalls = opt(o, "tool_calls", arr, `${at}.`)?.map((c, j) => toolCall(c, `${at}.tool_calls[${j}]`)) ?? [];
      const raw = o["content"];
      // The forward mapping sends an assistant turn without text as `content: null`; "" is the same.
      out.content = raw === undefined || raw === null || raw === "" ? [] : content(raw, `${at}.content`, { images: false, refusals: true });
      const refusal = opt(o, "refusal", str, `${at}.`);
      if (refusal !== undefined && refusal !== "") out.content.push(textPart(refusal));
      out.toolCalls = toolCalls;
      break;
    }
    case Role.TOOL:
      out.toolCallId = str(o["tool_call_id"], `${at}.tool_call_id`);
      out.content = content(o["content"], `${at}.content`, { images: false, refusals: false });
      break;
    default:
      out.content = content(o["content"], `${at}.content`, { images: false, refusals: false });
  }
  return out;
}

/** Message content: a string (one text part), or an array of parts. */
function content(v: unknown, at: string, allow: { images: boolean; refusals: boolean }): PartInit[] {
  if (typeof v === "string") {
    return [textPart(v)];
  }
  if (v === undefined || v === null) {
    throw invalidArgument(at, "required");
  }
  return arr(v, at).map((p, j) => part(p, `${at}[${j}]`, allow));
}

function part(p: unknown, at: string, allow: { images: boolean; refusals: boolean }): PartInit {
  const o = obj(p, at);
  const type = o["type"];
  if (type === "text") {
    onlyKeys(o, at, ["type", "text"]);
    return textPart(str(o["text"], `${at}.text`));
  }
  if (type === "refusal" && allow.refusals) {
    onlyKeys(o, at, ["type", "refusal"]);
    return textPart(str(o["refusal"], `${at}.refusal`));
  }
  if (type === "image_url") {
    if (!allow.images) {
      throw invalidArgument(`${at}.type`, "images are allowed in user messages only");
    }
    onlyKeys(o, at, ["type", "image_url"]);
    const img = obj(o["image_url"], `${at}.image_url`);
    onlyKeys(img, `${at}.image_url`, ["url", "detail"]);
    return imagePart(img, "url", `${at}.image_url`);
  }
  const kinds = ["text", ...(allow.images ? ["image_url"] : []), ...(allow.refusals ? ["refusal"] : [])];
  throw invalidArgument(`${at}.type`, `${typeof type === "string" ? `"${echoed(type, 64)}" parts are not supported` : "required"}; one of ${kinds.join(", ")}`);
}

/**
 * An image by URL with its `detail`, read from `holder` (at path `at`): the Chat Completions API's
 * `image_url` object (`url`, `detail`) and the Responses API's `input_image` part (`image_url`,
 * `detail`; src/ingress/responses/responses-translate.ts). An https: URL stays a URL; a data: URL
 * becomes bytes + MIME type, which every upstream kind can carry. Errors name `at.<key>`.
 */
export function imagePart(holder: Json, urlKey: string, at: string): PartInit {
  const url = str(holder[urlKey], `${at}.${urlKey}`);
  const detail = opt(holder, "detail", (d, dat) => {
    // "auto" is the API's default: the same as leaving it out.
    const v = d === "auto" ? ImageDetail.UNSPECIFIED : typeof d === "string" ? imageDetails.fromWire(d) : undefined;
    if (v === undefined) {
      throw invalidArgument(dat, `one of auto, ${imageDetails.wire.join(", ")}`);
    }
    return v;
  }, `${at}.`) ?? ImageDetail.UNSPECIFIED;
  if (!/^data:/i.test(url)) {
    return { part: { case: "imageUrl", value: { url, detail } } };
  }
  const inline = parseImageDataUrl(url);
  if (inline === undefined || !/^image\/[a-z0-9.+-]+$/.test(inline.mimeType)) {
    throw invalidArgument(`${at}.${urlKey}`, "a data: URL must be data:image/<type>;base64,<base64 data>");
  }
  return { part: { case: "imageData", value: { data: inline.data, mimeType: inline.mimeType, detail } } };
}

function textPart(value: string): PartInit {
  return { part: { case: "text", value } };
}

function toolCall(c: unknown, at: string): { id: string; name: string; arguments: string } {
  const o = obj(c, at);
  onlyKeys(o, at, ["id", "type", "function"]);
  if (o["type"] !== undefined && o["type"] !== "function") {
    throw invalidArgument(`${at}.type`, 'only "function" tool calls are supported');
  }
  const fn = obj(o["function"], `${at}.function`);
  onlyKeys(fn, `${at}.function`, ["name", "arguments"]);
  return { id: str(o["id"], `${at}.id`), name: str(fn["name"], `${at}.function.name`), arguments: str(fn["arguments"], `${at}.function.arguments`) };
}

function tool(t: unknown, at: string): MessageInitShape<typeof ToolSchema> {
  const o = obj(t, at);
  if (o["type"] !== "function") {
    throw invalidArgument(`${at}.type`, 'only "function" tools are supported');
  }
  onlyKeys(o, at, ["type", "function"]);
  const fn = obj(o["function"], `${at}.function`);
  onlyKeys(fn, `${at}.function`, ["name", "description", "parameters", "strict"]);
  const description = opt(fn, "description", str, `${at}.function.`);
  const parameters = opt(fn, "parameters", obj, `${at}.function.`);
  const strict = opt(fn, "strict", bool, `${at}.function.`);
  return {
    name: str(fn["name"], `${at}.function.name`),
    ...(description !== undefined ? { description } : {}),
    ...(parameters !== undefined ? { parameters: parameters as JsonObject } : {}),
    ...(strict !== undefined ? { strict } : {}),
  };
}

function toolChoice(v: unknown, at: string): MessageInitShape<typeof ToolChoiceSchema> {
  const expected = `${toolChoiceModes.wire.map((w) => `"${w}"`).join(", ")} or {"type": "function", "function": {"name": …}}`;
  if (typeof v === "string") {
    const mode = toolChoiceModes.fromWire(v);
    if (mode === undefined) {
      throw invalidArgument(at, `one of ${expected}`);
    }
    return { choice: { case: "mode", value: mode } };
  }
  const o = obj(v, at);
  if (o["type"] !== "function") {
    throw invalidArgument(`${at}.type`, `only "function" is supported; tool_choice is ${expected}`);
  }
  onlyKeys(o, at, ["type", "function"]);
  const fn = obj(o["function"], `${at}.function`);
  onlyKeys(fn, `${at}.function`, ["name"]);
  return { choice: { case: "functionName", value: str(fn["name"], `${at}.function.name`) } };
}

function responseFormat(v: unknown, at: string): NonNullable<ChatInit["responseFormat"]> {
  const o = obj(v, at);
  const typeName = o["type"];
  const type = typeof typeName === "string" ? responseFormatTypes.fromWire(typeName) : undefined;
  if (type === undefined) {
    throw invalidArgument(`${at}.type`, `one of ${responseFormatTypes.wire.join(", ")}`);
  }
  if (type !== ResponseFormatType.JSON_SCHEMA) {
    onlyKeys(o, at, ["type"]);
    return { type };
  }
  onlyKeys(o, at, ["type", "json_schema"]);
  const js = obj(o["json_schema"], `${at}.json_schema`);
  onlyKeys(js, `${at}.json_schema`, ["name", "description", "schema", "strict"]);
  const description = opt(js, "description", str, `${at}.json_schema.`);
  const schema = opt(js, "schema", obj, `${at}.json_schema.`);
  const strict = opt(js, "strict", bool, `${at}.json_schema.`);
  return {
    type,
    jsonSchema: {
      name: str(js["name"], `${at}.json_schema.name`),
      ...(description !== undefined ? { description } : {}),
      ...(schema !== undefined ? { schema: schema as JsonObject } : {}),
      ...(strict !== undefined ? { strict } : {}),
    },
  };
}

// --- answers ------------------------------------------------------------------------------------

/**
 * The finish reason as the API says it. UNSPECIFIED (an upstream that gave none the adapter knew)
 * has no API value and the API promises one: "tool_calls" when the answer calls tools, else "stop".
 */
function wireFinish(reason: FinishReason, calledTools: boolean): WireFinishReason {
  return finishReasons.toWire(reason) ?? (calledTools ? "tool_calls" : "stop");
}

/**
 * infergate's extension fields of an answer's `usage` object (docs/openai-ingress.md, "Cost"):
 * `cost`, what the call cost, a number in `cost_currency` (an ISO 4217 code); or `cost:
 * "unpriced"` when the model has no price. OpenAI's SDKs keep fields they do not know.
 */
export type UsageCost = { cost: number; cost_currency: string } | { cost: "unpriced" };

/**
 * The usage extension of a call whose `infergate-cost` header (src/gateway/steps/call-record.ts)
 * is `header`: `0.000123 USD` or `unpriced`. Undefined when the call set none.
 */
export function usageCost(header: string | undefined): UsageCost | undefined {
  if (header === undefined) return undefined;
  if (header === "unpriced") return { cost: "unpriced" };
  const space = header.indexOf(" ");
  return { cost: Number(header.slice(0, space)), cost_currency: header.slice(space + 1) };
}

/**
 * An answer's usage as the API gives it: the totals, and (always, as OpenAI sends them) the
 * cached prompt tokens and the reasoning tokens in their details objects. Cache-creation tokens
 * (Anthropic's) have no field in the API; they stay inside prompt_tokens.
 */
function wireUsage(u: Usage | undefined): Required<WireUsage> {
  return {
    prompt_tokens: u?.promptTokens ?? 0,
    completion_tokens: u?.completionTokens ?? 0,
    total_tokens: u?.totalTokens ?? 0,
    prompt_tokens_details: { cached_tokens: u?.cachedPromptTokens ?? 0 },
    completion_tokens_details: { reasoning_tokens: u?.reasoningTokens ?? 0 },
  };
}

/**
 * A Chat answer as `chat.completion`: one choice, its text parts concatenated (as a stream's
 * deltas are), `content: null` when the answer only calls tools. `model` is the model that
 * answered (a fallback's name when one did); `id` is the answer's. An image part in an answer has
 * no place in the API: INTERNAL (no upstream kind produces one).
 */
export function toChatCompletion(res: ChatResponse, created: number): ChatCompletion {
  const message = res.message;
  let text = "";
  for (const p of message?.content ?? []) {
    if (p.part.case !== "text") {
      throw new GatewayError(Code.Internal, "internal error", { cause: new Error(`an answer with a ${String(p.part.case)} part`) });
    }
    text += p.part.value;
  }
  const toolCalls: WireToolCall[] = (message?.toolCalls ?? []).map((c) => ({
    id: c.id,
    type: "function",
    function: { name: c.name, arguments: c.arguments },
  }));
  return {
    id: res.id,
    object: "chat.completion",
    created,
    model: res.model,
    choices: [
      {
        index: 0,
        message: {
          role: "assistant",
          content: text === "" && toolCalls.length > 0 ? null : text,
          refusal: null,
          ...(toolCalls.length > 0 ? { tool_calls: toolCalls } : {}),
        },
        finish_reason: wireFinish(res.finishReason, toolCalls.length > 0),
        logprobs: null,
      },
    ],
    usage: wireUsage(res.usage),
  };
}

/** Turns a Generate stream into `chat.completion.chunk` objects, one event at a time. */
export interface ChunkEncoder {
  /** The chunks `event` becomes (each the `data` of one SSE event); nothing after the final event. */
  push(event: GenerateResponse): ChatCompletionChunk[];
}

/** What every chunk of one stream repeats. */
export interface ChunkStreamInit {
  /** The completion's id (the same on every chunk, as the API does). */
  readonly id: string;
  /** Unix seconds. */
  readonly created: number;
  /** The model the client asked for. */
  readonly model: string;
  /** `stream_options.include_usage`: `"usage": null` on every chunk and a usage chunk at the end. */
  readonly includeUsage: boolean;
}

/**
 * Makes the encoder of one stream, the inverse of openai-translate.ts's stream translator: the
 * first chunk's delta carries `role: "assistant"`; a text delta is `delta.content`; a tool-call
 * delta is `delta.tool_calls[0]` with its `index`, and `id`, `type` and `function.name` on the
 * call's first fragment; the final event is a chunk with an empty delta and the finish reason,
 * then, with include_usage, a chunk with `choices: []` and the usage. `data: [DONE]` is the
 * ingress's to write once the stream ended.
 */
export function createChunkEncoder(init: ChunkStreamInit): ChunkEncoder {
  let first = true;
  let over = false;
  let calledTools = false;
  const chunk = (delta: ChatCompletionChunk["choices"][number]["delta"], finish: WireFinishReason | null): ChatCompletionChunk => {
    const role = first ? { role: "assistant" as const } : {};
    first = false;
    return {
      id: init.id,
      object: "chat.completion.chunk",
      created: init.created,
      model: init.model,
      choices: [{ index: 0, delta: { ...role, ...delta }, finish_reason: finish, logprobs: null }],
      ...(init.includeUsage ? { usage: null } : {}),
    };
  };
  return {
    push(event) {
      if (over) return [];
      const e = event.event;
      switch (e.case) {
        case "textDelta":
          return [chunk({ content: e.value }, null)];
        case "toolCallDelta": {
          calledTools = true;
          const d = e.value;
          const call: ToolCallChunk = {
            index: d.index,
            ...(d.id !== "" ? { id: d.id } : {}),
            ...(d.id !== "" || d.name !== "" ? { type: "function" as const } : {}),
            function: { ...(d.name !== "" ? { name: d.name } : {}), arguments: d.arguments },
          };
          return [chunk({ tool_calls: [call] }, null)];
        }
        case "final": {
          over = true;
          const f = e.value;
          const out = [chunk(first ? { content: "" } : {}, wireFinish(f.finishReason, calledTools))];
          if (init.includeUsage) {
            out.push({ id: init.id, object: "chat.completion.chunk", created: init.created, model: init.model, choices: [], usage: wireUsage(f.usage) });
          }
          return out;
        }
        default:
          return [];
      }
    },
  };
}

/** One model as `GET /v1/models` lists it; `owned_by` is the upstream that serves it. */
export function toModelObject(m: ModelInfo, created: number): ModelObject {
  return { id: m.name, object: "model", created, owned_by: m.upstream };
}

/**
 * The models of ListModels that this API can call — those that serve Chat (unary), Generate
 * (`stream: true`) or Embed (`/v1/embeddings`), as OpenAI lists its embedding models too;
 * Predict-only models are left out.
 */
export function toModelList(res: ListModelsResponse, created: number): ModelList {
  return {
    object: "list",
    data: res.models
      .filter((m) => m.capabilities.some((c) => c === Capability.CHAT || c === Capability.GENERATE || c === Capability.EMBED))
      .map((m) => toModelObject(m, created)),
  };
}

// --- errors -------------------------------------------------------------------------------------

/** An error as the API answers it: HTTP status, `{"error": …}` body, and headers (Retry-After). */
export interface HttpErrorAnswer {
  readonly status: number;
  readonly body: ErrorBody & { error: { type: string; param: string | null; code: string } };
  readonly headers: Readonly<Record<string, string>>;
}

/** HTTP status by gRPC code; anything not listed is 500. */
const statusByCode = new Map<Code, number>([
  [Code.InvalidArgument, 400],
  [Code.OutOfRange, 400],
  [Code.FailedPrecondition, 400],
  // A model that does not serve the call (e.g. `stream: true` on a Chat-only model): the request's fault.
  [Code.Unimplemented, 400],
  [Code.Unauthenticated, 401],
  [Code.PermissionDenied, 403],
  [Code.NotFound, 404],
  [Code.ResourceExhausted, 429],
  // The gateway gave up waiting for the upstream: a gateway timeout, which OpenAI SDKs retry.
  [Code.DeadlineExceeded, 504],
  [Code.Unavailable, 503],
]);

/** The API's `error.type` by HTTP status (OpenAI's names where it has them). */
export function errorType(status: number): string {
  switch (status) {
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 429:
      return "rate_limit_error";
    default:
      return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

/**
 * The one mapping from anything thrown in the core to the API's error: the status by code (see
 * statusByCode), `message` the status's client-safe message, `code` the stable ErrorInfo reason in
 * lower case (`model_not_found`, `rate_limited`, …), `param` the field at fault for client errors
 * (`metadata.field`, or `model` when the error is about the model). RESOURCE_EXHAUSTED and
 * UNAVAILABLE with a retry delay get `Retry-After` in whole seconds, rounded up, and
 * `retry-after-ms` (which the OpenAI SDKs prefer).
 */
export function toErrorAnswer(err: unknown): HttpErrorAnswer {
  const s = toStatus(err);
  const status = statusByCode.get(s.code) ?? 500;
  const param = status < 500 ? (s.metadata["field"] ?? (s.metadata["model"] !== undefined ? "model" : null)) : null;
  const headers: Record<string, string> = {};
  // RFC 9110 §10.2.3: with 503, how long the service is expected to be unavailable (an open
  // breaker's next probe, a Redis piece failing closed); the SDKs wait that long before retrying
  // instead of spending their retries on the same refusal.
  if (s.retryAfterMs !== undefined && (status === 429 || status === 503)) {
    headers["retry-after"] = String(Math.ceil(s.retryAfterMs / 1000));
    headers["retry-after-ms"] = String(Math.ceil(s.retryAfterMs));
  }
  return { status, body: { error: { message: s.message, type: errorType(status), param, code: s.reason.toLowerCase() } }, headers };
}

// --- reading JSON -------------------------------------------------------------------------------

/** `o[key]` read with `read`, or undefined when the key is absent or null (the API's "unset"). */
export function opt<T>(o: Json, key: string, read: (v: unknown, at: string) => T, prefix = ""): T | undefined {
  const v = o[key];
  return v === undefined || v === null ? undefined : read(v, prefix + key);
}

/** Refuses keys other than `allowed` that carry a value (null is unset). */
function onlyKeys(o: Json, at: string, allowed: readonly string[]): void {
  for (const [key, v] of Object.entries(o)) {
    if (v !== null && !allowed.includes(key)) {
      throw invalidArgument(`${at}.${key}`, notSupported);
    }
  }
}

export function obj(v: unknown, at: string): Json {
  if (!isObject(v)) throw invalidArgument(at, "must be an object");
  return v;
}

export function arr(v: unknown, at: string): unknown[] {
  if (!Array.isArray(v)) throw invalidArgument(at, "must be an array");
  return v;
}

export function str(v: unknown, at: string): string {
  if (typeof v !== "string") throw invalidArgument(at, "must be a string");
  return v;
}

export function bool(v: unknown, at: string): boolean {
  if (typeof v !== "boolean") throw invalidArgument(at, "must be true or false");
  return v;
}

export function num(v: unknown, at: string): number {
  if (typeof v !== "number" || !Number.isFinite(v)) throw invalidArgument(at, "must be a number");
  return v;
}

/** A token count: a whole number from 1 to 2^32 − 1. */
export function count(v: unknown, at: string): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1 || v > maxUint32) {
    throw invalidArgument(at, `must be a whole number from 1 to ${maxUint32}`);
  }
  return v;
}
