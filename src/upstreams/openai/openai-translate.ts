/**
 * Pure translations between infergate's Chat/Generate messages and the OpenAI Chat Completions
 * API (openai-wire.ts). No I/O: the client in openai-upstream.ts sends what these build and feeds
 * back what arrives. docs/upstream-openai.md has the mapping table; every request field either
 * maps or is rejected here with INVALID_ARGUMENT naming it, never silently dropped.
 *
 * Over 400 lines, kept whole: it is one wire format's translator, the request writer, the answer
 * and stream readers and the enum tables of one mapping that the OpenAI-compatible ingress reads
 * the other way (src/ingress/openai/openai-ingress-translate.ts); split by direction, one change
 * of the API would touch several files that must stay in step.
 */
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import {
  type ContentPart,
  FinishReason,
  ImageDetail,
  type Message,
  MessageSchema,
  ResponseFormatType,
  Role,
  type ToolCall,
  ToolCallSchema,
  ToolChoiceMode,
  type Usage,
} from "../../../gen/infergate/v1/chat_pb.js";
import {
  type ChatResponse,
  ChatResponseSchema,
  type GenerateResponse,
  GenerateResponseSchema,
} from "../../../gen/infergate/v1/inference_service_pb.js";
import { GatewayError, invalidArgument, Reason } from "../../core/gateway-error.js";
import type { StreamTranslator } from "../http/event-stream.js";
import { badResponse, errorFromStatus, snippet, UpstreamFailure } from "../http/http-errors.js";
import { isObject, safeJson } from "../json-value.js";
import { tokenCount, usageFromCounts } from "../usage.js";
import type { ChatInput } from "../../core/upstream.js";
import {
  type AssistantMessageParam,
  type ChatCompletionRequest,
  type ChatMessageParam,
  type ContentPartParam,
  type ImagePartParam,
  type ResponseFormatParam,
  streamDoneData,
  type SystemMessageParam,
  type SystemRole,
  type ToolChoiceParam,
  type ToolParam,
  type UserMessageParam,
  type WireFinishReason,
  type WireUsage,
} from "./openai-wire.js";

// --- one mapping, both ways ----------------------------------------------------------------------
// The enum values of our contract and the API's strings, as tables that this adapter reads ours →
// wire and the OpenAI-compatible ingress (src/ingress/openai/openai-ingress-translate.ts) reads
// wire → ours.

/** A one-to-one table between an enum of ours and the API's strings. */
export interface EnumTable<E extends number, W extends string> {
  /** The API's string for `value`; undefined for a value the table does not hold. */
  toWire(value: E): W | undefined;
  /** Our value for `wire`; undefined for a string the table does not hold. */
  fromWire(wire: string): E | undefined;
  /** The API's strings, in table order (for error messages). */
  readonly wire: readonly W[];
}

function enumTable<E extends number, W extends string>(pairs: readonly (readonly [E, W])[]): EnumTable<E, W> {
  const out = new Map<E, W>(pairs);
  const back = new Map<string, E>(pairs.map(([e, w]) => [w, e]));
  return { toWire: (v) => out.get(v), fromWire: (w) => back.get(w), wire: pairs.map(([, w]) => w) };
}

/** Message roles. ROLE_DEVELOPER goes upstream with the role of the `developerRole` option. */
export const roles = enumTable<Role, ChatMessageParam["role"]>([
  [Role.SYSTEM, "system"],
  [Role.DEVELOPER, "developer"],
  [Role.USER, "user"],
  [Role.ASSISTANT, "assistant"],
  [Role.TOOL, "tool"],
]);

/** Image detail. UNSPECIFIED is no `detail` key, which the API reads as "auto". */
export const imageDetails = enumTable<ImageDetail, "low" | "high">([
  [ImageDetail.LOW, "low"],
  [ImageDetail.HIGH, "high"],
]);

/** tool_choice as a string; UNSPECIFIED is no `tool_choice` key. */
export const toolChoiceModes = enumTable<ToolChoiceMode, Exclude<ToolChoiceParam, object>>([
  [ToolChoiceMode.AUTO, "auto"],
  [ToolChoiceMode.NONE, "none"],
  [ToolChoiceMode.REQUIRED, "required"],
]);

/** response_format.type. */
export const responseFormatTypes = enumTable<ResponseFormatType, ResponseFormatParam["type"]>([
  [ResponseFormatType.TEXT, "text"],
  [ResponseFormatType.JSON_OBJECT, "json_object"],
  [ResponseFormatType.JSON_SCHEMA, "json_schema"],
]);

/** finish_reason; `finishReasonAliases` has the other names servers use for the same ends. */
export const finishReasons = enumTable<FinishReason, WireFinishReason>([
  [FinishReason.STOP, "stop"],
  [FinishReason.LENGTH, "length"],
  [FinishReason.TOOL_CALLS, "tool_calls"],
  [FinishReason.CONTENT_FILTER, "content_filter"],
]);

/** `function_call` is the deprecated form of `tool_calls`; TGI says `eos_token` and `stop_sequence`. */
const finishReasonAliases = new Map<string, FinishReason>([
  ["function_call", FinishReason.TOOL_CALLS],
  ["eos_token", FinishReason.STOP],
  ["stop_sequence", FinishReason.STOP],
]);

/** An inline image as the API takes it: an RFC 2397 `data:<mime>;base64,<data>` URI. */
export function imageDataUrl(mimeType: string, data: Uint8Array): string {
  return `data:${mimeType};base64,${Buffer.from(data).toString("base64")}`;
}

/**
 * The MIME type and bytes of a base64 `data:` URI (the inverse of imageDataUrl); undefined for any
 * other URL, and for a data URI that is not base64 (percent-encoded) or whose base64 is malformed.
 */
export function parseImageDataUrl(url: string): { mimeType: string; data: Uint8Array } | undefined {
  const m = /^data:([^;,]*)((?:;[^;,]*)*);base64,/i.exec(url);
  if (m === null) return undefined;
  const b64 = url.slice(m[0].length);
  if (b64.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(b64)) return undefined;
  return { mimeType: m[1]!.toLowerCase(), data: new Uint8Array(Buffer.from(b64, "base64")) };
}

/** What a request needs beyond the caller's message. */
export interface RequestContext {
  /** The model's name at the upstream; undefined leaves `model` out (Azure: the deployment names it). */
  readonly model: string | undefined;
  /** The role ROLE_DEVELOPER messages are sent with. */
  readonly developerRole: SystemRole;
  /** The JSON key that carries max_tokens. */
  readonly maxTokensField: "max_tokens" | "max_completion_tokens";
  /** Whether to ask for an event stream (with a usage chunk before `[DONE]`). */
  readonly stream: boolean;
}

/**
 * Builds the body of `POST /chat/completions`. Throws INVALID_ARGUMENT naming the field for
 * anything the API cannot carry faithfully. Unset optional fields leave their JSON key out, so the
 * upstream's own default applies. `metadata`, `cache_policy` and `session_id` are the gateway's
 * and never reach an upstream.
 */
export function toChatCompletionRequest(req: ChatInput, ctx: RequestContext): ChatCompletionRequest {
  // Built key by key in the order the JSON has always had (model, messages, stream, …), without
  // the spreads of empty objects and a field path string per message (made only for an error).
  const messages: ChatMessageParam[] = new Array(req.messages.length);
  for (let i = 0; i < messages.length; i++) messages[i] = message(req.messages[i]!, i, ctx.developerRole);
  const body: ChatCompletionRequest = ctx.model !== undefined ? { model: ctx.model, messages, stream: ctx.stream } : { messages, stream: ctx.stream };
  if (ctx.stream) body.stream_options = { include_usage: true };
  if (req.temperature !== undefined) body.temperature = req.temperature;
  if (req.topP !== undefined) body.top_p = req.topP;
  if (req.topK !== undefined) {
    // OpenAI's Chat Completions has no top-k; a server that has one as an extension (vLLM) is
    // not told apart from one that would ignore or refuse it.
    throw invalidArgument("top_k", "the OpenAI Chat Completions API has no top-k sampling (use temperature or top_p)");
  }
  if (req.maxTokens !== undefined) body[ctx.maxTokensField] = req.maxTokens;
  if (req.presencePenalty !== undefined) body.presence_penalty = req.presencePenalty;
  if (req.frequencyPenalty !== undefined) body.frequency_penalty = req.frequencyPenalty;
  if (req.seed !== undefined) {
    // JSON numbers are IEEE doubles at nearly every server; beyond 2^53 the seed would change.
    const limit = BigInt(Number.MAX_SAFE_INTEGER);
    if (req.seed > limit || req.seed < -limit) {
      throw invalidArgument("seed", `must be between -${limit} and ${limit} to survive JSON, got ${req.seed}`);
    }
    body.seed = Number(req.seed);
  }
  if (req.stop.length > 0) body.stop = [...req.stop];
  if (req.tools.length > 0) {
    body.tools = req.tools.map(
      (t): ToolParam => ({
        type: "function",
        function: {
          name: t.name,
          ...(t.description !== "" ? { description: t.description } : {}),
          // Unset: a function without parameters, which is what OpenAI makes of a missing key.
          ...(t.parameters !== undefined ? { parameters: t.parameters } : {}),
          ...(t.strict !== undefined ? { strict: t.strict } : {}),
        },
      }),
    );
    const choice = toolChoice(req);
    if (choice !== undefined) body.tool_choice = choice;
    if (req.parallelToolCalls !== undefined) body.parallel_tool_calls = req.parallelToolCalls;
  }
  // Without tools, tool_choice AUTO/NONE and parallel_tool_calls constrain nothing (no tool can be
  // called; the gateway refused REQUIRED or a function name without tools), and OpenAI answers 400
  // to either key without `tools`, so they are not sent.
  const format = responseFormat(req);
  if (format !== undefined) body.response_format = format;
  return body;
}

function message(m: Message, i: number, developerRole: SystemRole): ChatMessageParam {
  switch (m.role) {
    case Role.SYSTEM:
      return named<SystemMessageParam>({ role: "system", content: textOf(m, i, "system") }, m);
    case Role.DEVELOPER:
      return named<SystemMessageParam>({ role: developerRole, content: textOf(m, i, "developer") }, m);
    case Role.USER: {
      let images = false;
      for (const p of m.content) if (p.part.case === "imageUrl" || p.part.case === "imageData") images = true;
      // Several compatible servers refuse the array form, so only messages with images use it.
      const content = images ? m.content.map((p, j) => contentPart(p, `messages[${i}].content[${j}]`)) : textOf(m, i, "user");
      return named<UserMessageParam>({ role: "user", content }, m);
    }
    case Role.ASSISTANT: {
      const content = m.content.length === 0 ? null : textOf(m, i, "assistant");
      const out: AssistantMessageParam = { role: "assistant", content };
      if (m.toolCalls.length > 0) {
        out.tool_calls = m.toolCalls.map((c) => ({
          id: c.id,
          type: "function" as const,
          function: { name: c.name, arguments: c.arguments },
        }));
      }
      return named(out, m);
    }
    case Role.TOOL:
      if (m.name !== "") {
        throw invalidArgument(`messages[${i}].name`, "OpenAI tool messages have no author name");
      }
      return { role: "tool", tool_call_id: m.toolCallId, content: textOf(m, i, "tool") };
    default:
      throw invalidArgument(`messages[${i}].role`, "required (one of the ROLE_* values)");
  }
}

/** Adds the message's author name, when it has one, as the last key. */
function named<T extends { name?: string }>(out: T, m: Message): T {
  if (m.name !== "") out.name = m.name;
  return out;
}

/** The text parts of message `i` joined with "\n"; any other part is refused. */
function textOf(m: Message, i: number, role: string): string {
  const parts = m.content;
  // The common case, one text part: its text as it is.
  if (parts.length === 1 && parts[0]!.part.case === "text") return parts[0]!.part.value;
  let text = "";
  for (let j = 0; j < parts.length; j++) {
    const p = parts[j]!;
    switch (p.part.case) {
      case "text":
        text = j === 0 ? p.part.value : `${text}\n${p.part.value}`;
        break;
      case "imageUrl":
      case "imageData":
        throw invalidArgument(`messages[${i}].content[${j}]`, `images are allowed in user messages only; OpenAI ${role} messages take text`);
      default:
        throw invalidArgument(`messages[${i}].content[${j}]`, "empty part: set text, image_url or image_data");
    }
  }
  return text;
}

function contentPart(p: ContentPart, at: string): ContentPartParam {
  switch (p.part.case) {
    case "text":
      return { type: "text", text: p.part.value };
    case "imageUrl":
      return image(p.part.value.url, p.part.value.detail, `${at}.image_url.detail`);
    case "imageData": {
      const img = p.part.value;
      // RFC 2397 data URI: what OpenAI documents for inline images ("Base64 encoded image").
      return image(imageDataUrl(img.mimeType, img.data), img.detail, `${at}.image_data.detail`);
    }
    default:
      throw invalidArgument(at, "empty part: set text, image_url or image_data");
  }
}

function image(url: string, detail: ImageDetail, field: string): ImagePartParam {
  if (detail === ImageDetail.UNSPECIFIED) {
    // The upstream decides ("auto" is OpenAI's default).
    return { type: "image_url", image_url: { url } };
  }
  const wire = imageDetails.toWire(detail);
  if (wire === undefined) {
    throw invalidArgument(field, `unknown value ${detail}`);
  }
  return { type: "image_url", image_url: { url, detail: wire } };
}

function toolChoice(req: ChatInput): ToolChoiceParam | undefined {
  const c = req.toolChoice?.choice;
  if (c?.case === "functionName") {
    return { type: "function", function: { name: c.value } };
  }
  if (c?.case === "mode") {
    const mode = c.value;
    if (mode === ToolChoiceMode.UNSPECIFIED) {
      return undefined;
    }
    const wire = toolChoiceModes.toWire(mode);
    if (wire === undefined) {
      throw invalidArgument("tool_choice.mode", `unknown value ${mode}`);
    }
    return wire;
  }
  return undefined;
}

function responseFormat(req: ChatInput): ResponseFormatParam | undefined {
  const format = req.responseFormat;
  if (format === undefined) {
    return undefined;
  }
  switch (format.type) {
    case ResponseFormatType.UNSPECIFIED:
    case ResponseFormatType.TEXT:
      // Free text is every server's default, and TGI refuses `{"type": "text"}`.
      return undefined;
    case ResponseFormatType.JSON_OBJECT:
      return { type: "json_object" };
    case ResponseFormatType.JSON_SCHEMA: {
      const js = format.jsonSchema;
      if (js?.schema === undefined) {
        // The gateway's validation already requires it; this keeps the type checker honest.
        throw invalidArgument("response_format.json_schema.schema", "required");
      }
      return {
        type: "json_schema",
        json_schema: {
          name: js.name,
          ...(js.description !== "" ? { description: js.description } : {}),
          schema: js.schema,
          ...(js.strict !== undefined ? { strict: js.strict } : {}),
        },
      };
    }
    default:
      throw invalidArgument("response_format.type", `unknown value ${format.type}`);
  }
}

// --- answers ------------------------------------------------------------------------------------

/** What reading an answer needs: the upstream's name for errors, and the secrets to scrub. */
export interface AnswerContext {
  readonly upstream: string;
  /** Secrets that must never reach the client (the upstream's API key). */
  readonly secrets: readonly string[];
}

/**
 * The finish reason as ours. `function_call` is the deprecated form of `tool_calls`; `eos_token`
 * and `stop_sequence` are TGI's names of `stop`. null or unknown values are UNSPECIFIED.
 */
export function finishReasonOf(finish: unknown): FinishReason {
  if (typeof finish !== "string") {
    return FinishReason.UNSPECIFIED;
  }
  return finishReasons.fromWire(finish) ?? finishReasonAliases.get(finish) ?? FinishReason.UNSPECIFIED;
}

const maxUint32 = 0xffff_ffff;

/**
 * Token counts; missing, null or nonsense counts (and details that are no object) are 0, and total
 * is always prompt + completion. The cached prompt tokens (`prompt_tokens_details.cached_tokens`)
 * and the reasoning tokens (`completion_tokens_details.reasoning_tokens`) are parts of the
 * prompt and the completion, as in the API.
 */
export function usageOf(u: WireUsage): Usage {
  const promptDetails: unknown = u.prompt_tokens_details;
  const completionDetails: unknown = u.completion_tokens_details;
  return usageFromCounts({
    prompt: tokenCount(u.prompt_tokens),
    completion: tokenCount(u.completion_tokens),
    cachedPrompt: isObject(promptDetails) ? tokenCount(promptDetails["cached_tokens"]) : 0,
    reasoning: isObject(completionDetails) ? tokenCount(completionDetails["reasoning_tokens"]) : 0,
  });
}

/**
 * Reads the answer of a non-streaming request: the first (only) choice's content as one text
 * part, its tool calls as returned. A refusal (structured outputs) becomes the text, with finish
 * reason CONTENT_FILTER. An `{"error": …}` body is the upstream's failure (see errorFromBody); any
 * other malformed answer is UNAVAILABLE UPSTREAM_BAD_RESPONSE.
 */
export function fromChatCompletion(ctx: AnswerContext, body: unknown): ChatResponse {
  // The body as text, for error messages only: serialised when an error needs it, not on every
  // answer (it was 1% of a proxied call's CPU).
  const bad = (problem: string): GatewayError => badResponse(ctx.upstream, problem, safeJson(body));
  if (isObject(body) && body["error"] !== undefined && body["error"] !== null) {
    throw errorFromBody(ctx, body, safeJson(body) ?? "", "answer");
  }
  if (!isObject(body) || !Array.isArray(body["choices"])) {
    throw bad("the answer has no choices array");
  }
  const choice: unknown = body["choices"][0];
  if (!isObject(choice)) {
    throw bad("the answer has no choice");
  }
  const message = choice["message"];
  if (!isObject(message)) {
    throw bad("the choice has no message");
  }
  const content = message["content"];
  if (content !== undefined && content !== null && typeof content !== "string") {
    throw bad("the message content is neither text nor null");
  }
  const refusal = message["refusal"];
  if (refusal !== undefined && refusal !== null && typeof refusal !== "string") {
    throw bad("the message refusal is neither text nor null");
  }
  const text = (content ?? "") + (refusal ?? "");
  const toolCalls: ToolCall[] = [];
  const calls = message["tool_calls"];
  if (calls !== undefined && calls !== null) {
    if (!Array.isArray(calls)) {
      throw bad("tool_calls is not an array");
    }
    for (const c of calls as unknown[]) {
      const fn = isObject(c) ? c["function"] : undefined;
      if (!isObject(c) || (c["type"] !== undefined && c["type"] !== "function") || typeof c["id"] !== "string" || !isObject(fn)) {
        throw bad("a tool call is not a function call with an id");
      }
      toolCalls.push(create(ToolCallSchema, { id: c["id"], ...functionOf(fn, bad) }));
    }
  }
  const legacy = message["function_call"];
  if (toolCalls.length === 0 && legacy !== undefined && legacy !== null) {
    if (!isObject(legacy)) {
      throw bad("function_call is not an object");
    }
    // The deprecated single call has no id.
    toolCalls.push(create(ToolCallSchema, { id: "", ...functionOf(legacy, bad) }));
  }
  const usage = body["usage"];
  if (usage !== undefined && usage !== null && !isObject(usage)) {
    throw bad("usage is not an object");
  }
  return create(ChatResponseSchema, {
    id: typeof body["id"] === "string" ? body["id"] : "",
    message: create(MessageSchema, {
      role: Role.ASSISTANT,
      content: text === "" ? [] : [{ part: { case: "text", value: text } }],
      toolCalls,
    }),
    finishReason: typeof refusal === "string" && refusal !== "" ? FinishReason.CONTENT_FILTER : finishReasonOf(choice["finish_reason"]),
    usage: usageOf((usage ?? {}) as WireUsage),
  });
}

function functionOf(fn: Record<string, unknown>, bad: (problem: string) => GatewayError): { name: string; arguments: string } {
  const name = fn["name"];
  const args = fn["arguments"];
  if (typeof name !== "string" || name === "") {
    throw bad("a tool call has no function name");
  }
  if (typeof args === "string") {
    return { name, arguments: args };
  }
  // Some servers send the arguments as a JSON object instead of its text.
  if (isObject(args)) {
    return { name, arguments: JSON.stringify(args) };
  }
  if (args === undefined || args === null) {
    return { name, arguments: "" };
  }
  throw bad("a tool call's arguments are neither text nor an object");
}

/**
 * Makes the translator of one stream. OpenAI streams `data: <chunk JSON>` events and ends with
 * `data: [DONE]`; with `stream_options.include_usage` the last chunk before it has `choices: []`
 * and the usage. Text deltas and tool-call deltas pass through as they arrive, tool calls with
 * their index; the final event, sent on `[DONE]`, carries the last finish reason and usage seen
 * (usage zero when the server sent none). Repeats of a call's id or name in later fragments are
 * not forwarded (our contract: the first delta of a call carries them). A server that leaves out
 * a fragment's `index` is followed by id: a new id is the next call, no id continues the last one.
 */
export function createStreamTranslator(ctx: AnswerContext): StreamTranslator {
  let finished = false;
  let id = "";
  let finish: unknown = null;
  let refused = false;
  let usage: WireUsage = {};
  /** Tool calls seen so far, by index: the id and name already forwarded. */
  const calls = new Map<number, { id: string; name: string }>();
  let lastCall: number | undefined;

  const text = (value: string): GenerateResponse => create(GenerateResponseSchema, { event: { case: "textDelta", value } });

  function toolDelta(fragment: unknown, data: string): GenerateResponse[] {
    const bad = (problem: string): GatewayError => badResponse(ctx.upstream, problem, data);
    if (!isObject(fragment)) {
      throw bad("a tool call fragment is not an object");
    }
    const fragmentId = typeof fragment["id"] === "string" ? fragment["id"] : "";
    let index: number;
    const given = fragment["index"];
    if (typeof given === "number") {
      if (!Number.isInteger(given) || given < 0 || given > maxUint32) {
        throw bad(`a tool call fragment with index ${given}`);
      }
      index = given;
    } else if (given !== undefined && given !== null) {
      throw bad("a tool call fragment whose index is not a number");
    } else if (fragmentId !== "") {
      index = [...calls].find(([, c]) => c.id === fragmentId)?.[0] ?? calls.size;
    } else if (lastCall !== undefined) {
      index = lastCall;
    } else {
      throw bad("a tool call fragment without index or id");
    }
    lastCall = index;
    let call = calls.get(index);
    if (call === undefined) {
      call = { id: "", name: "" };
      calls.set(index, call);
    }
    const fn = fragment["function"];
    if (fn !== undefined && fn !== null && !isObject(fn)) {
      throw bad("a tool call fragment's function is not an object");
    }
    const name = isObject(fn) && typeof fn["name"] === "string" ? fn["name"] : "";
    const rawArgs = isObject(fn) ? fn["arguments"] : undefined;
    let args: string;
    if (typeof rawArgs === "string") {
      args = rawArgs;
    } else if (isObject(rawArgs)) {
      args = JSON.stringify(rawArgs);
    } else if (rawArgs === undefined || rawArgs === null) {
      args = "";
    } else {
      throw bad("a tool call fragment's arguments are not text");
    }
    const delta: { index: number; id?: string; name?: string; arguments: string } = { index, arguments: args };
    if (fragmentId !== "" && fragmentId !== call.id) {
      if (call.id !== "") {
        throw bad(`tool call ${index} changed its id`);
      }
      call.id = fragmentId;
      delta.id = fragmentId;
    }
    if (name !== "" && name !== call.name) {
      if (call.name !== "") {
        throw bad(`tool call ${index} changed its name`);
      }
      call.name = name;
      delta.name = name;
    }
    if (delta.id === undefined && delta.name === undefined && args === "") {
      return [];
    }
    return [create(GenerateResponseSchema, { event: { case: "toolCallDelta", value: delta } })];
  }

  function choiceEvents(choice: unknown, data: string): GenerateResponse[] {
    const bad = (problem: string): GatewayError => badResponse(ctx.upstream, problem, data);
    if (!isObject(choice)) {
      throw bad("a choice is not an object");
    }
    const index = choice["index"] ?? 0;
    if (index !== 0) {
      throw bad(`a chunk for choice ${String(index)}; only one was asked for`);
    }
    const out: GenerateResponse[] = [];
    const delta = choice["delta"] ?? {};
    if (!isObject(delta)) {
      throw bad("a choice's delta is not an object");
    }
    for (const key of ["content", "refusal"] as const) {
      const v = delta[key];
      if (v !== undefined && v !== null && typeof v !== "string") {
        throw bad(`a delta's ${key} is not text`);
      }
      if (typeof v === "string" && v !== "") {
        refused ||= key === "refusal";
        out.push(text(v));
      }
    }
    const toolCalls = delta["tool_calls"];
    if (toolCalls !== undefined && toolCalls !== null) {
      if (!Array.isArray(toolCalls)) {
        throw bad("a delta's tool_calls is not an array");
      }
      for (const fragment of toolCalls as unknown[]) {
        out.push(...toolDelta(fragment, data));
      }
    }
    const legacy = delta["function_call"];
    if (legacy !== undefined && legacy !== null) {
      // The deprecated single call: index 0, no id.
      out.push(...toolDelta({ index: 0, function: legacy }, data));
    }
    const f = choice["finish_reason"];
    if (f !== undefined && f !== null) {
      finish = f;
    }
    return out;
  }

  return {
    get done() {
      return finished;
    },
    push(ev) {
      if (finished) {
        return [];
      }
      if (ev.data.trim() === streamDoneData) {
        finished = true;
        return [
          create(GenerateResponseSchema, {
            event: {
              case: "final",
              value: { id, finishReason: refused ? FinishReason.CONTENT_FILTER : finishReasonOf(finish), usage: usageOf(usage) },
            },
          }),
        ];
      }
      let e: unknown;
      try {
        e = JSON.parse(ev.data);
      } catch {
        throw badResponse(ctx.upstream, "malformed JSON in an event", ev.data);
      }
      if (!isObject(e)) {
        throw badResponse(ctx.upstream, "an event that is not a JSON object", ev.data);
      }
      if ((e["error"] !== undefined && e["error"] !== null) || ev.event === "error") {
        throw errorFromBody(ctx, e, ev.data, "stream");
      }
      if (id === "" && typeof e["id"] === "string") {
        id = e["id"];
      }
      const u = e["usage"];
      if (u !== undefined && u !== null) {
        if (!isObject(u)) {
          throw badResponse(ctx.upstream, "usage is not an object", ev.data);
        }
        // The usage chunk; servers that report usage on every chunk count cumulatively.
        usage = u as WireUsage;
      }
      const choices = e["choices"] ?? [];
      if (!Array.isArray(choices)) {
        throw badResponse(ctx.upstream, "choices is not an array", ev.data);
      }
      return (choices as unknown[]).flatMap((c) => choiceEvents(c, ev.data));
    },
    end() {
      if (!finished) {
        throw new GatewayError(Code.Unavailable, `upstream "${ctx.upstream}" ended the stream before data: [DONE]`, {
          reason: Reason.StreamTruncated,
          metadata: { upstream: ctx.upstream },
        });
      }
    },
  };
}

/** Error codes and types that mean the upstream is rate limiting (OpenAI, Azure, DashScope). */
const rateLimitNames = new Set(["rate_limit_exceeded", "rate_limit_error", "insufficient_quota"]);

/**
 * An `{"error": …}` object in a 200 answer (a stream event, or a unary body): the upstream gave
 * up. When the error names an HTTP status (vLLM puts it in `code`) or a rate limit, the one
 * HTTP mapping gives the fitting code (e.g. 400 → INVALID_ARGUMENT, 429 → RESOURCE_EXHAUSTED);
 * otherwise UNAVAILABLE, with the error's type in metadata `upstream_error` and the upstream's
 * message in the log only.
 */
export function errorFromBody(ctx: AnswerContext, e: Record<string, unknown>, data: string, where: "stream" | "answer"): GatewayError {
  const err = isObject(e["error"]) ? e["error"] : typeof e["error"] === "string" ? { message: e["error"] } : e;
  const code = err["code"];
  const status = typeof code === "number" ? code : typeof code === "string" && /^[45]\d\d$/.test(code) ? Number(code) : undefined;
  if (status !== undefined && status >= 400 && status <= 599) {
    return errorFromStatus(ctx.upstream, status, {}, data, ctx.secrets);
  }
  const type = [err["type"], code].find((v): v is string => typeof v === "string" && /^[A-Za-z0-9_.-]{1,64}$/.test(v)) ?? "error";
  if ([err["type"], code].some((v) => typeof v === "string" && rateLimitNames.has(v))) {
    return errorFromStatus(ctx.upstream, 429, {}, data, ctx.secrets);
  }
  const what = where === "stream" ? "failed during the stream" : "answered with an error";
  return new GatewayError(Code.Unavailable, `upstream "${ctx.upstream}" ${what} (${type})`, {
    reason: Reason.UpstreamUnavailable,
    metadata: { upstream: ctx.upstream, upstream_error: type },
    cause: new UpstreamFailure(`upstream ${ctx.upstream} sent an error object: ${type}`, 200, snippet(data)),
  });
}
