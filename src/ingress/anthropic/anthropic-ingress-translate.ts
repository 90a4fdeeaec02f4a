/**
 * The reverse of src/upstreams/anthropic/anthropic-translate.ts, for the Anthropic Messages API
 * ingress (anthropic-ingress.ts): a `POST /v1/messages` body as Anthropic's SDKs send it → our
 * ChatRequest / GenerateRequest, and our answers, stream events, model list and errors → the API's
 * JSON. Pure functions, no I/O. The wire types are src/upstreams/anthropic/anthropic-wire.ts's
 * (the ingress imports from upstreams/, never the reverse). docs/anthropic-ingress.md has the
 * mapping table.
 *
 * Requests: every key either maps, or is accepted only with a value that asks for nothing, or is
 * refused with INVALID_ARGUMENT whose `field` names it — never silently dropped. The one
 * exception is `cache_control` (prompt-caching breakpoints), which is a hint about billing, not
 * about the answer: it is ignored wherever it appears (docs/anthropic-ingress.md, "cache_control").
 *
 * Over 400 lines, kept whole: it is one wire format's translator (the request reader, the answer
 * writer and the stream's event machine), whose halves are tested against each other in one
 * file (test/e2e/anthropic-ingress.test.ts).
 */
import { create, type JsonObject, type MessageInitShape } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { type ContentPart, type ContentPartSchema, FinishReason, type MessageSchema, Role, ToolChoiceMode, type ToolSchema, type Usage } from "../../../gen/infergate/v1/chat_pb.js";
import {
  Capability,
  type ChatRequest,
  ChatRequestSchema,
  type ChatResponse,
  type GenerateRequest,
  GenerateRequestSchema,
  type GenerateResponse,
  type ListModelsResponse,
} from "../../../gen/infergate/v1/inference_service_pb.js";
import { echoed, GatewayError, invalidArgument, Reason, toStatus } from "../../core/gateway-error.js";
import { isObject } from "../../upstreams/json-value.js";
import { arr, bool, count, num, obj, opt, str } from "../openai/openai-ingress-translate.js";
import {
  anthropicImageMediaTypes,
  type ContentBlock,
  type ErrorBody,
  type MessagesResponse,
  type StopReason,
  type StreamEvent,
  type WireUsage,
} from "../../upstreams/anthropic/anthropic-wire.js";
import { checkedKeys, type InertKeys } from "../request-keys.js";

type Json = Record<string, unknown>;
/** A Chat request as plain fields (never a message already made), shared by Chat and Generate. */
type ChatInit = Exclude<MessageInitShape<typeof ChatRequestSchema>, ChatRequest>;
type MessageInit = MessageInitShape<typeof MessageSchema>;
/** A content part as plain fields (never a message already made). */
type PartInit = Exclude<MessageInitShape<typeof ContentPartSchema>, ContentPart>;

/** A request read from the API: a unary one for Chat, a streamed one for Generate. */
export type MessagesCall = (
  | { readonly stream: false; readonly request: ChatRequest }
  | { readonly stream: true; readonly request: GenerateRequest }
) & {
  /** Where each of the request's messages came from (toAnthropicField). */
  readonly origins: readonly MessageOrigin[];
};

/**
 * Where one of our messages came from: `system`, or a turn `messages[i]` (a user turn may give
 * several: its tool results, then its other blocks); the block index of each content part, of
 * each tool call, or of the tool result.
 */
export interface MessageOrigin {
  readonly at: string;
  readonly kind: "system" | "user" | "assistant" | "tool";
  readonly blocks: readonly number[];
  readonly calls: readonly number[];
  readonly block?: number;
  /** A system prompt given as a list of blocks (its parts are named system[j]). */
  readonly listed?: boolean;
}

/**
 * The Messages API's name of a field the gateway named in ChatRequest terms (an error's `field`
 * and message): `messages[k]…` → the turn and block it came from (or `system`),
 * `tool_calls[c].arguments` → the tool_use block's `input`, `tool_call_id` → the tool_result
 * block's `tool_use_id`, `tool_choice.function_name` → `tool_choice.name`, `stop` →
 * `stop_sequences`. Other names are the same in both.
 */
export function toAnthropicField(field: string, origins: readonly MessageOrigin[]): string {
  if (field === "tool_choice.function_name") return "tool_choice.name";
  if (field === "stop" || field.startsWith("stop[")) return `stop_sequences${field.slice(4)}`;
  const m = /^messages\[(\d+)\](.*)$/.exec(field);
  if (m === null) return field;
  const o = origins[Number(m[1])];
  if (o === undefined) return "messages";
  const rest = m[2]!;
  const part = /^\.content\[(\d+)\](.*)$/.exec(rest);
  switch (o.kind) {
    case "system":
      return o.listed === true && part !== null ? `system[${part[1]}]${part[2]}` : "system";
    case "tool": {
      const block = `${o.at}.content[${o.block ?? 0}]`;
      if (rest === ".tool_call_id") return `${block}.tool_use_id`;
      if (rest.startsWith(".content")) return `${block}${rest}`;
      return block;
    }
    default: {
      if (part !== null) {
        const j = o.blocks[Number(part[1])];
        return j === undefined ? `${o.at}.content` : `${o.at}.content[${j}]${part[2]}`;
      }
      const call = /^\.tool_calls\[(\d+)\](?:\.(\w+))?/.exec(rest);
      if (call !== null) {
        const j = o.calls[Number(call[1])];
        if (j === undefined) return `${o.at}.content`;
        const name = call[2] === "arguments" ? "input" : call[2];
        return name === undefined ? `${o.at}.content[${j}]` : `${o.at}.content[${j}].${name}`;
      }
      return `${o.at}${rest}`;
    }
  }
}

/** The request metadata key that carries `metadata.user_id` (as the OpenAI route's `openai.user`). */
export const userIdMetadataKey = "anthropic.user_id";

const notSupported = "not supported by infergate's Anthropic Messages API (docs/anthropic-ingress.md lists what is)";

/** Top-level keys that map onto our request (see fromMessagesRequest). */
const mappedKeys = new Set([
  "model",
  "max_tokens",
  "messages",
  "system",
  "temperature",
  "top_p",
  "top_k",
  "stop_sequences",
  "stream",
  "metadata",
  "tools",
  "tool_choice",
]);

/** Keys accepted only with the value that asks for nothing (what the API does without them). */
const inertKeys: InertKeys = new Map([
  ["thinking", { accepts: (v) => isObject(v) && v["type"] === "disabled", problem: 'extended thinking is not supported; only {"type": "disabled"}' }],
  ["service_tier", { accepts: (v) => v === "auto" || v === "standard_only", problem: 'only "auto" or "standard_only"' }],
]);


/**
 * Reads the body of `POST /v1/messages` (already parsed JSON). Throws INVALID_ARGUMENT naming the
 * key at fault by its path in the API (`messages[1].content[0].source.media_type`).
 */
export function fromMessagesRequest(body: unknown): MessagesCall {
  const json = checkedBody(body, mappedKeys);
  if (json["max_tokens"] === undefined || json["max_tokens"] === null) {
    throw invalidArgument("max_tokens", "Field required (the Messages API has no default)");
  }
  const origins: MessageOrigin[] = [];
  const init = chatInit(json, origins);
  init.maxTokens = count(json["max_tokens"], "max_tokens");
  const stream = opt(json, "stream", bool) ?? false;
  return stream ? { stream: true, request: create(GenerateRequestSchema, init), origins } : { stream: false, request: create(ChatRequestSchema, init), origins };
}

/**
 * The keys of `POST /v1/messages/count_tokens`: what makes up a prompt (the API takes no sampling
 * or output settings there, so neither does this route).
 */
const countTokensKeys = new Set(["model", "messages", "system", "tools", "tool_choice"]);

/**
 * Reads the body of `POST /v1/messages/count_tokens` into the Chat request whose prompt is to be
 * counted, with the checks of fromMessagesRequest (a key the route does not take is a 400 naming
 * it).
 */
export function fromCountTokensRequest(body: unknown): { request: ChatRequest; origins: readonly MessageOrigin[] } {
  const origins: MessageOrigin[] = [];
  return { request: create(ChatRequestSchema, chatInit(checkedBody(body, countTokensKeys), origins)), origins };
}

/** The body as an object whose keys are all `mapped` (or inert), else INVALID_ARGUMENT naming one. */
function checkedBody(body: unknown, mapped: ReadonlySet<string>): Json {
  return checkedKeys(body, mapped, inertKeys, notSupported);
}

/** The request fields both routes share: model, system and messages, then whichever others are in `body`. */
function chatInit(body: Json, origins: MessageOrigin[]): ChatInit {
  const model = body["model"];
  if (typeof model !== "string" || model === "") {
    throw invalidArgument("model", "Field required: the name of a model this gateway serves (GET /v1/models)");
  }
  const messages = arr(body["messages"] ?? missing("messages"), "messages");
  const init: ChatInit = { model, messages: [] };
  const system = opt(body, "system", (v, at) => (typeof v === "string" ? [textPart(v)] : arr(v, at).map((b, i) => textBlock(b, `${at}[${i}]`))));
  if (system !== undefined && system.length > 0) {
    init.messages!.push({ role: Role.SYSTEM, content: system });
    origins.push({ at: "system", kind: "system", blocks: [], calls: [], listed: typeof body["system"] !== "string" });
  }
  messages.forEach((m, i) => init.messages!.push(...message(m, `messages[${i}]`, origins)));
  const temperature = opt(body, "temperature", num);
  if (temperature !== undefined) init.temperature = temperature;
  const topP = opt(body, "top_p", num);
  if (topP !== undefined) init.topP = topP;
  // Passed on: the anthropic kind sends it, other kinds refuse it naming top_k.
  const topK = opt(body, "top_k", count);
  if (topK !== undefined) init.topK = topK;
  const stop = opt(body, "stop_sequences", (v, at) => arr(v, at).map((s, i) => str(s, `${at}[${i}]`)));
  if (stop !== undefined) init.stop = stop;
  const tools = opt(body, "tools", arr);
  if (tools !== undefined) init.tools = tools.map((t, i) => tool(t, `tools[${i}]`));
  const choice = opt(body, "tool_choice", obj);
  if (choice !== undefined) toolChoice(choice, init);
  const metadata = opt(body, "metadata", obj);
  if (metadata !== undefined) {
    // user_id identifies the end user (abuse monitoring at Anthropic): kept as request metadata,
    // never sent to a model server. Other string entries are infergate's own request metadata
    // (e.g. `mock.token_delay_ms` for the mock kind), as the OpenAI route's `metadata`.
    const entries: Record<string, string> = {};
    for (const [k, v] of Object.entries(metadata)) {
      if (v === null) continue;
      entries[k === "user_id" ? userIdMetadataKey : k] = str(v, `metadata.${k}`);
    }
    init.metadata = entries;
  }
  return init;
}

/**
 * One turn of the API → our messages. A user turn's `tool_result` blocks become TOOL messages
 * (first, in order: the API puts them first), its other blocks one USER message after them; an
 * assistant turn's `tool_use` blocks become its tool calls.
 */
function message(m: unknown, at: string, origins: MessageOrigin[]): MessageInit[] {
  const o = obj(m, at);
  onlyKeys(o, at, ["role", "content"]);
  const role = o["role"];
  if (role !== "user" && role !== "assistant") {
    throw invalidArgument(`${at}.role`, 'one of "user", "assistant" (the system prompt is the top-level "system")');
  }
  const raw = o["content"] ?? missing(`${at}.content`);
  const blocks = typeof raw === "string" ? [{ type: "text", text: raw }] : arr(raw, `${at}.content`);
  if (role === "assistant") {
    const content: PartInit[] = [];
    const toolCalls: { id: string; name: string; arguments: string; cacheBreakpoint?: { ttl: string } }[] = [];
    const origin = { at, kind: "assistant" as const, blocks: [] as number[], calls: [] as number[] };
    blocks.forEach((b, j) => {
      const bat = `${at}.content[${j}]`;
      const block = obj(b, bat);
      if (block["type"] === "tool_use") {
        onlyKeys(block, bat, ["type", "id", "name", "input", "cache_control"]);
        const cacheBreakpoint = breakpointOf(block, bat);
        toolCalls.push({
          id: str(block["id"], `${bat}.id`),
          name: str(block["name"], `${bat}.name`),
          arguments: JSON.stringify(obj(block["input"], `${bat}.input`)),
          ...(cacheBreakpoint === undefined ? {} : { cacheBreakpoint }),
        });
        origin.calls.push(j);
      } else {
        content.push(textBlock(block, bat));
        origin.blocks.push(j);
      }
    });
    origins.push(origin);
    return [{ role: Role.ASSISTANT, content, toolCalls }];
  }
  const results: MessageInit[] = [];
  const parts: PartInit[] = [];
  const partBlocks: number[] = [];
  blocks.forEach((b, j) => {
    const bat = `${at}.content[${j}]`;
    const block = obj(b, bat);
    if (block["type"] === "tool_result") {
      onlyKeys(block, bat, ["type", "tool_use_id", "content", "is_error", "cache_control"]);
      if (opt(block, "is_error", bool, `${bat}.`) === true) {
        throw invalidArgument(`${bat}.is_error`, "infergate's tool messages cannot mark an error; say it in the content");
      }
      const c = block["content"];
      const content = c === undefined || c === null ? [] : typeof c === "string" ? [textPart(c)] : arr(c, `${bat}.content`).map((p, k) => userBlock(p, `${bat}.content[${k}]`));
      // The result's breakpoint ends the prefix at its last part (what the anthropic kind marks).
      const cacheBreakpoint = breakpointOf(block, bat);
      if (cacheBreakpoint !== undefined) {
        const last = content.at(-1);
        if (last === undefined) throw invalidArgument(`${bat}.cache_control`, "a tool_result with a cache breakpoint needs content");
        last.cacheBreakpoint = cacheBreakpoint;
      }
      results.push({ role: Role.TOOL, toolCallId: str(block["tool_use_id"], `${bat}.tool_use_id`), content });
      origins.push({ at, kind: "tool", blocks: [], calls: [], block: j });
    } else {
      parts.push(userBlock(block, bat));
      partBlocks.push(j);
    }
  });
  if (parts.length > 0 || results.length === 0) {
    results.push({ role: Role.USER, content: parts });
    origins.push({ at, kind: "user", blocks: partBlocks, calls: [] });
  }
  return results;
}

/** A block of a user turn (or a tool result): text or image. */
function userBlock(b: unknown, at: string): PartInit {
  const block = obj(b, at);
  return block["type"] === "image" ? withBreakpoint(image(block, at), block, at) : textBlock(block, at);
}

/**
 * A block's `cache_control` (a prompt-caching breakpoint: `{"type": "ephemeral", "ttl"?: "5m" |
 * "1h"}`) as the core carries it (CacheBreakpoint, proto/infergate/v1/chat.proto), or undefined.
 */
function breakpointOf(block: Json, at: string): { ttl: string } | undefined {
  const c = block["cache_control"];
  if (c === undefined || c === null) return undefined;
  const cat = `${at}.cache_control`;
  const o = obj(c, cat);
  onlyKeys(o, cat, ["type", "ttl"]);
  if (o["type"] !== "ephemeral") throw invalidArgument(`${cat}.type`, 'only "ephemeral"');
  const ttl = opt(o, "ttl", str, `${cat}.`) ?? "";
  if (ttl !== "" && ttl !== "5m" && ttl !== "1h") throw invalidArgument(`${cat}.ttl`, 'one of "5m", "1h"');
  return { ttl };
}

/** `part` with the block's breakpoint, when it has one. */
function withBreakpoint(part: PartInit, block: Json, at: string): PartInit {
  const cacheBreakpoint = breakpointOf(block, at);
  return cacheBreakpoint === undefined ? part : { ...part, cacheBreakpoint };
}

function textBlock(b: unknown, at: string): PartInit {
  const block = obj(b, at);
  if (block["type"] !== "text") {
    const t = block["type"];
    throw invalidArgument(`${at}.type`, `${typeof t === "string" ? `"${echoed(t, 64)}" blocks are not supported here` : "required"}; see docs/anthropic-ingress.md`);
  }
  onlyKeys(block, at, ["type", "text", "cache_control", "citations"]);
  return withBreakpoint(textPart(str(block["text"], `${at}.text`)), block, at);
}

function image(block: Json, at: string): PartInit {
  onlyKeys(block, at, ["type", "source", "cache_control"]);
  const source = obj(block["source"], `${at}.source`);
  const type = source["type"];
  if (type === "base64") {
    onlyKeys(source, `${at}.source`, ["type", "media_type", "data"]);
    const mediaType = str(source["media_type"], `${at}.source.media_type`);
    if (!(anthropicImageMediaTypes as readonly string[]).includes(mediaType)) {
      throw invalidArgument(`${at}.source.media_type`, `one of ${anthropicImageMediaTypes.join(", ")}`);
    }
    const data = str(source["data"], `${at}.source.data`);
    if (data === "" || !/^[A-Za-z0-9+/]*={0,2}$/.test(data) || data.length % 4 !== 0) {
      throw invalidArgument(`${at}.source.data`, "must be base64 data");
    }
    return { part: { case: "imageData", value: { data: Buffer.from(data, "base64"), mimeType: mediaType } } };
  }
  if (type === "url") {
    onlyKeys(source, `${at}.source`, ["type", "url"]);
    return { part: { case: "imageUrl", value: { url: str(source["url"], `${at}.source.url`) } } };
  }
  throw invalidArgument(`${at}.source.type`, 'one of "base64", "url"');
}

function textPart(value: string): PartInit {
  return { part: { case: "text", value } };
}

function tool(t: unknown, at: string): MessageInitShape<typeof ToolSchema> {
  const o = obj(t, at);
  if (o["type"] !== undefined && o["type"] !== null && o["type"] !== "custom") {
    throw invalidArgument(`${at}.type`, 'only custom tools (no type, or "custom"): server tools run at Anthropic');
  }
  onlyKeys(o, at, ["type", "name", "description", "input_schema", "strict", "cache_control"]);
  const description = opt(o, "description", str, `${at}.`);
  const strict = opt(o, "strict", bool, `${at}.`);
  const cacheBreakpoint = breakpointOf(o, at);
  return {
    name: str(o["name"], `${at}.name`),
    parameters: obj(o["input_schema"] ?? missing(`${at}.input_schema`), `${at}.input_schema`) as JsonObject,
    ...(description !== undefined ? { description } : {}),
    ...(strict !== undefined ? { strict } : {}),
    ...(cacheBreakpoint !== undefined ? { cacheBreakpoint } : {}),
  };
}

/** `tool_choice` → our tool choice; `disable_parallel_tool_use: true` → parallel_tool_calls false. */
function toolChoice(o: Json, init: ChatInit): void {
  const type = o["type"];
  if (type === "none") {
    onlyKeys(o, "tool_choice", ["type"]);
    init.toolChoice = { choice: { case: "mode", value: ToolChoiceMode.NONE } };
    return;
  }
  if (type === "auto" || type === "any") {
    onlyKeys(o, "tool_choice", ["type", "disable_parallel_tool_use"]);
    init.toolChoice = { choice: { case: "mode", value: type === "auto" ? ToolChoiceMode.AUTO : ToolChoiceMode.REQUIRED } };
  } else if (type === "tool") {
    onlyKeys(o, "tool_choice", ["type", "name", "disable_parallel_tool_use"]);
    init.toolChoice = { choice: { case: "functionName", value: str(o["name"], "tool_choice.name") } };
  } else {
    throw invalidArgument("tool_choice.type", 'one of "auto", "any", "tool", "none"');
  }
  if (opt(o, "disable_parallel_tool_use", bool, "tool_choice.") === true) {
    init.parallelToolCalls = false;
  }
}

// --- answers ------------------------------------------------------------------------------------

/**
 * The API's `stop_reason` and `stop_sequence` of an answer: `stop_sequence` with the sequence when
 * the upstream said one ended the answer (the answer's `stop_sequence`; Anthropic and the mock say
 * it), else stopReasonOf and null (docs/anthropic-ingress.md).
 */
export function stopOf(reason: FinishReason, stopSequence: string, calledTools: boolean): { stop_reason: StopReason; stop_sequence: string | null } {
  if (stopSequence !== "" && (reason === FinishReason.STOP || reason === FinishReason.UNSPECIFIED) && !calledTools) {
    return { stop_reason: "stop_sequence", stop_sequence: stopSequence };
  }
  return { stop_reason: stopReasonOf(reason, calledTools), stop_sequence: null };
}

/**
 * Our finish reason as the API's stop_reason, when no stop sequence ended the answer (stopOf).
 * STOP and UNSPECIFIED are `tool_use` when the answer calls tools, else `end_turn`.
 */
export function stopReasonOf(reason: FinishReason, calledTools: boolean): StopReason {
  switch (reason) {
    case FinishReason.LENGTH:
      return "max_tokens";
    case FinishReason.TOOL_CALLS:
      return "tool_use";
    case FinishReason.CONTENT_FILTER:
      return "refusal";
    default:
      // STOP (some servers say it after tool calls) and UNSPECIFIED.
      return calledTools ? "tool_use" : "end_turn";
  }
}

/**
 * Our Usage as the API's: `input_tokens` is the prompt's tokens that were neither read from nor
 * written to the provider's prompt cache (the API counts those apart), so that the three input
 * counts add up to the prompt.
 */
export function wireUsage(u: Usage | undefined): Required<{ [K in keyof WireUsage]: number }> {
  const cached = u?.cachedPromptTokens ?? 0;
  const creation = u?.cacheCreationTokens ?? 0;
  return {
    input_tokens: Math.max(0, (u?.promptTokens ?? 0) - cached - creation),
    output_tokens: u?.completionTokens ?? 0,
    cache_creation_input_tokens: creation,
    cache_read_input_tokens: cached,
  };
}

/** A tool call's arguments as the `input` object of a tool_use block ("" is `{}`). */
function toolInput(args: string): Record<string, unknown> {
  if (args.trim() === "") return {};
  let v: unknown;
  try {
    v = JSON.parse(args);
  } catch {
    v = undefined;
  }
  if (!isObject(v)) {
    throw new GatewayError(Code.Internal, "the model's tool call arguments are not a JSON object", { reason: Reason.UpstreamBadResponse });
  }
  return v;
}

/**
 * A Chat answer as the API's `message`: its text parts joined into one text block (left out when
 * empty), then one tool_use block per tool call with its parsed input. `model` is the model that
 * answered (a fallback's name when one did).
 */
export function toMessage(res: ChatResponse, id: string): MessagesResponse {
  let text = "";
  for (const p of res.message?.content ?? []) {
    if (p.part.case !== "text") {
      throw new GatewayError(Code.Internal, "internal error", { cause: new Error(`an answer with a ${String(p.part.case)} part`) });
    }
    text += p.part.value;
  }
  const content: ContentBlock[] = text === "" ? [] : [{ type: "text", text }];
  for (const c of res.message?.toolCalls ?? []) {
    content.push({ type: "tool_use", id: c.id, name: c.name, input: toolInput(c.arguments) });
  }
  const calledTools = (res.message?.toolCalls.length ?? 0) > 0;
  return {
    id,
    type: "message",
    role: "assistant",
    model: res.model,
    content,
    ...stopOf(res.finishReason, res.stopSequence, calledTools),
    usage: wireUsage(res.usage),
  };
}

/** Turns a Generate stream into the API's stream events, one gateway event at a time. */
export interface EventEncoder {
  /** The events `event` becomes, message_start first; nothing after the final event. */
  push(event: GenerateResponse): StreamEvent[];
  /** message_start, if not sent yet (a stream committed before its first event sends it alone). */
  start(): StreamEvent[];
}

/**
 * Makes the encoder of one stream (the API's order: message_start; per content block
 * content_block_start, content_block_delta…, content_block_stop; message_delta with the
 * stop_reason and usage; message_stop). A text delta continues the open text block or opens one;
 * a tool-call delta with an id opens a tool_use block (input `{}`, its arguments following as
 * `input_json_delta`s), one without continues the open tool_use block of its index.
 */
/**
 * `init.model`: the model message_start names, read when it is sent (a function: the model that
 * answers, once the stream's first event says which, src/ingress/anthropic/anthropic-ingress.ts).
 */
export function createEventEncoder(init: { id: string; model: string | (() => string) }): EventEncoder {
  let started = false;
  let over = false;
  let blocks = 0;
  /**
   * A tool call of the stream. Its block starts once its id and name are known (an upstream may
   * send them on separate fragments). Anthropic's blocks are contiguous, while the core's
   * fragments of parallel calls may interleave (joined by index, proto/infergate/v1/chat.proto):
   * one call streams live in its open block; the others are held and sent whole, each a block of
   * its own, when the calls end (a text delta or the final event).
   */
  interface Call {
    id: string;
    name: string;
    args: string;
    sent: boolean;
  }
  const calls = new Map<number, Call>();
  let open: "text" | Call | undefined;
  let calledTools = false;
  const start = (): StreamEvent[] => {
    if (started) return [];
    started = true;
    const message: MessagesResponse = {
      id: init.id,
      type: "message",
      role: "assistant",
      model: typeof init.model === "string" ? init.model : init.model(),
      content: [],
      stop_reason: null,
      stop_sequence: null,
      usage: { input_tokens: 0, output_tokens: 0 },
    };
    return [{ type: "message_start", message }];
  };
  const close = (): StreamEvent[] => {
    if (open === undefined) return [];
    open = undefined;
    return [{ type: "content_block_stop", index: blocks - 1 }];
  };
  /** Opens the block of `c`, with what it has of its arguments. */
  const startCall = (c: Call, out: StreamEvent[]): void => {
    out.push({ type: "content_block_start", index: blocks++, content_block: { type: "tool_use", id: c.id, name: c.name, input: {} } });
    if (c.args !== "") out.push({ type: "content_block_delta", index: blocks - 1, delta: { type: "input_json_delta", partial_json: c.args } });
    c.sent = true;
  };
  /** Ends the open block and sends every held call whole, in the order of their indexes. */
  const flush = (out: StreamEvent[]): void => {
    out.push(...close());
    for (const [index, c] of [...calls].sort(([a], [b]) => a - b)) {
      if (c.sent) continue;
      if (c.id === "" || c.name === "") {
        throw new GatewayError(Code.Unavailable, `the upstream's tool call ${index} ended without its ${c.id === "" ? "id" : "name"}`, { reason: Reason.UpstreamBadResponse });
      }
      startCall(c, out);
      out.push({ type: "content_block_stop", index: blocks - 1 });
    }
  };
  return {
    start,
    push(event) {
      if (over) return [];
      const out = start();
      const e = event.event;
      switch (e.case) {
        case "textDelta":
          if (open !== "text") {
            flush(out);
            out.push({ type: "content_block_start", index: blocks++, content_block: { type: "text", text: "" } });
            open = "text";
          }
          if (e.value !== "") out.push({ type: "content_block_delta", index: blocks - 1, delta: { type: "text_delta", text: e.value } });
          return out;
        case "toolCallDelta": {
          calledTools = true;
          const d = e.value;
          let c = calls.get(d.index);
          if (c === undefined) calls.set(d.index, (c = { id: "", name: "", args: "", sent: false }));
          else if (c.sent && c !== open) {
            throw new GatewayError(Code.Internal, "internal error", { cause: new Error(`a fragment of tool call ${d.index} after its block ended`) });
          }
          if (c.id === "") c.id = d.id;
          if (c.name === "") c.name = d.name;
          if (c === open) {
            if (d.arguments !== "") out.push({ type: "content_block_delta", index: blocks - 1, delta: { type: "input_json_delta", partial_json: d.arguments } });
            return out;
          }
          c.args += d.arguments;
          // Live when no other call is open or held, and it can be named.
          const others = [...calls.values()].some((o) => o !== c && (o === open || !o.sent));
          if (!others && c.id !== "" && c.name !== "") {
            out.push(...close());
            startCall(c, out);
            c.args = "";
            open = c;
          }
          return out;
        }
        case "final": {
          over = true;
          const f = e.value;
          flush(out);
          out.push({
            type: "message_delta",
            delta: stopOf(f.finishReason, f.stopSequence, calledTools),
            usage: wireUsage(f.usage),
          });
          out.push({ type: "message_stop" });
          return out;
        }
        default:
          return out;
      }
    },
  };
}

/** The SSE text of one event: `event: <type>` and `data: <json>`. */
export function sseEvent(e: StreamEvent): string {
  return `event: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`;
}

/** The models of ListModels this API can call (Chat or Generate), in Anthropic's list shape. */
export function toAnthropicModelList(res: ListModelsResponse, createdAt: string): AnthropicModelList {
  const data = res.models
    .filter((m) => m.capabilities.some((c) => c === Capability.CHAT || c === Capability.GENERATE))
    .map((m): AnthropicModel => ({ type: "model", id: m.name, display_name: m.name, created_at: createdAt }));
  return { data, has_more: false, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null };
}

/** One model of `GET /v1/models` in Anthropic's shape. */
export interface AnthropicModel {
  type: "model";
  id: string;
  display_name: string;
  /** RFC 3339. infergate knows no release date: the time of the answer. */
  created_at: string;
}

export interface AnthropicModelList {
  data: AnthropicModel[];
  has_more: false;
  first_id: string | null;
  last_id: string | null;
}

// --- errors -------------------------------------------------------------------------------------

/** An error as the API answers it: HTTP status, `{"type": "error", …}` body, headers (retry-after). */
export interface AnthropicErrorAnswer {
  readonly status: number;
  readonly body: ErrorBody;
  readonly headers: Readonly<Record<string, string>>;
}

/** The API's error type by HTTP status (https://docs.claude.com/en/api/errors). */
export function anthropicErrorType(status: number): string {
  switch (status) {
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 413:
      return "request_too_large";
    case 429:
      return "rate_limit_error";
    case 504:
      return "timeout_error";
    case 529:
      return "overloaded_error";
    default:
      return status >= 500 ? "api_error" : "invalid_request_error";
  }
}

/** The HTTP status of a core error in this API (docs/anthropic-ingress.md, "Errors"). */
function statusOf(code: Code, reason: string): number {
  switch (code) {
    case Code.InvalidArgument:
    case Code.OutOfRange:
    case Code.FailedPrecondition:
    case Code.Unimplemented:
      return 400;
    case Code.Unauthenticated:
      return 401;
    case Code.PermissionDenied:
      return 403;
    case Code.NotFound:
      return 404;
    case Code.ResourceExhausted:
      // Shedding (a concurrency limit) is the API's "overloaded"; an answer over a size limit is
      // no rate limit; the rest (rate limits, budgets) are.
      if (reason === Reason.Overloaded) return 529;
      if (reason === Reason.MessageTooLarge || reason === Reason.UpstreamMessageTooLarge) return 500;
      return 429;
    case Code.DeadlineExceeded:
      return 504;
    case Code.Unavailable:
      // Every endpoint's breaker open: the model is shedding all calls.
      return reason === Reason.CircuitOpen ? 529 : 503;
    default:
      return 500;
  }
}

/**
 * The one mapping from anything thrown in the core to the API's error: the status by code and
 * reason, `message` the status's client-safe message. 429, 503 and 529 with a retry delay get
 * `retry-after` in whole seconds, rounded up, and `retry-after-ms` (which the SDKs prefer).
 */
export function toAnthropicError(err: unknown): AnthropicErrorAnswer {
  const s = toStatus(err);
  const status = statusOf(s.code, s.reason);
  const headers: Record<string, string> = {};
  if (s.retryAfterMs !== undefined && (status === 429 || status === 503 || status === 529)) {
    headers["retry-after"] = String(Math.ceil(s.retryAfterMs / 1000));
    headers["retry-after-ms"] = String(Math.ceil(s.retryAfterMs));
  }
  return { status, body: errorBody(status, s.message), headers };
}

/** The API's error body. */
export function errorBody(status: number, message: string): ErrorBody {
  return { type: "error", error: { type: anthropicErrorType(status), message } };
}

// --- reading JSON -------------------------------------------------------------------------------

function missing(at: string): never {
  throw invalidArgument(at, "Field required");
}

/** Refuses keys other than `allowed` that carry a value (null is unset). */
function onlyKeys(o: Json, at: string, allowed: readonly string[]): void {
  for (const [key, v] of Object.entries(o)) {
    if (v !== null && !allowed.includes(key)) {
      throw invalidArgument(`${at}.${key}`, notSupported);
    }
  }
}
