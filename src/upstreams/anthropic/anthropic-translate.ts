/**
 * Pure translations between infergate's Chat/Generate messages and the Anthropic Messages API
 * (anthropic-wire.ts). No I/O: the client in anthropic-upstream.ts sends what these build and
 * feeds back what arrives. docs/upstream-anthropic.md has the mapping table; every request field
 * either maps or is rejected here with INVALID_ARGUMENT naming it, never silently dropped.
 *
 * Over 400 lines, kept whole: it is one wire format's translator (the request, the answer and the
 * stream's event machine of the Messages API), whose parts change together when the API does;
 * the stream contract it implements and the stream plumbing are in http/event-stream.ts.
 */
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import {
  type CacheBreakpoint,
  type ContentPart,
  FinishReason,
  ImageDetail,
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
import { echoed, GatewayError, invalidArgument, Reason } from "../../core/gateway-error.js";
import type { StreamTranslator } from "../http/event-stream.js";
import { badResponse, snippet, UpstreamFailure } from "../http/http-errors.js";
import { isObject, safeJson } from "../json-value.js";
import { parseDataUrl, toolArgumentsObject } from "../message-parts.js";
import { tokenCount, usageFromCounts } from "../usage.js";
import type { ChatInput } from "../../core/upstream.js";
import {
  type AnthropicImageMediaType,
  anthropicImageMediaTypes,
  type CacheControlParam,
  type ContentBlockParam,
  type CountTokensRequest,
  type ImageBlockParam,
  type MessageParam,
  type MessagesRequest,
  type TextBlockParam,
  type ToolChoiceParam,
  type ToolParam,
  type ToolResultBlockParam,
  type ToolUseBlockParam,
  type WireUsage,
} from "./anthropic-wire.js";

/** What a request needs beyond the caller's message. */
export interface RequestContext {
  /** The model's name at Anthropic. */
  readonly upstreamModel: string;
  /** max_tokens when the request leaves it unset (the model's `maxTokens` option). */
  readonly defaultMaxTokens: number;
  /** Whether to ask for an event stream. */
  readonly stream: boolean;
}

/** A tool with no declared parameters: Anthropic requires an object schema for every tool. */
const noParameters = (): Record<string, unknown> => ({ type: "object", properties: {} });

/**
 * Builds the body of `POST /v1/messages`. Throws INVALID_ARGUMENT naming the field for anything
 * Anthropic cannot carry faithfully. `metadata`, `cache_policy` and `session_id` are the gateway's
 * and never reach an upstream.
 */
export function toMessagesRequest(req: ChatInput, ctx: RequestContext): MessagesRequest {
  checkSampling(req);
  const { system, messages } = translateMessages(req);
  const body: MessagesRequest = {
    model: ctx.upstreamModel,
    max_tokens: req.maxTokens ?? ctx.defaultMaxTokens,
    ...(system.length > 0 ? { system } : {}),
    messages,
    ...(req.temperature !== undefined ? { temperature: req.temperature } : {}),
    ...(req.topP !== undefined ? { top_p: req.topP } : {}),
    ...(req.topK !== undefined ? { top_k: req.topK } : {}),
    ...(req.stop.length > 0 ? { stop_sequences: [...req.stop] } : {}),
    stream: ctx.stream,
  };
  if (req.tools.length > 0) {
    body.tools = req.tools.map((t, i): ToolParam => {
      const schema = t.parameters ?? noParameters();
      if (schema["type"] !== "object") {
        throw invalidArgument(`tools[${i}].parameters`, 'Anthropic needs a JSON Schema with "type": "object"');
      }
      const param: ToolParam = {
        name: t.name,
        ...(t.description !== "" ? { description: t.description } : {}),
        input_schema: schema,
        // Strict tool use is generally available on the Messages API (`strict` on a tool).
        ...(t.strict !== undefined ? { strict: t.strict } : {}),
      };
      return withCacheControl(param, t.cacheBreakpoint, `tools[${i}]`);
    });
  }
  const choice = toolChoice(req);
  if (choice !== undefined) {
    body.tool_choice = choice;
  }
  const format = req.responseFormat;
  if (format !== undefined) {
    switch (format.type) {
      case ResponseFormatType.UNSPECIFIED:
      case ResponseFormatType.TEXT:
        break;
      case ResponseFormatType.JSON_OBJECT:
        throw invalidArgument(
          "response_format.type",
          "Anthropic has no free-form JSON mode; use RESPONSE_FORMAT_TYPE_JSON_SCHEMA with a schema",
        );
      case ResponseFormatType.JSON_SCHEMA: {
        const js = format.jsonSchema;
        if (js?.schema === undefined) {
          // The gateway's validation already requires it; this keeps the type checker honest.
          throw invalidArgument("response_format.json_schema.schema", "required");
        }
        if (js.description !== "") {
          throw invalidArgument(
            "response_format.json_schema.description",
            "Anthropic's JSON output format has no description; put it in a system message",
          );
        }
        // Structured outputs (GA): `output_config.format` is always enforced, which satisfies both
        // strict and non-strict requests. `name` is an identifier only and has no counterpart.
        body.output_config = { format: { type: "json_schema", schema: js.schema } };
        break;
      }
      default:
        throw invalidArgument("response_format.type", `unknown value ${format.type}`);
    }
  }
  return body;
}

function checkSampling(req: ChatInput): void {
  if (req.temperature !== undefined && req.temperature > 1) {
    throw invalidArgument("temperature", `Anthropic accepts 0 to 1, got ${req.temperature}`);
  }
  if (req.seed !== undefined) {
    throw invalidArgument("seed", "the Anthropic Messages API has no seed");
  }
  // A zero penalty is no penalty, which is what Anthropic does; anything else cannot be honoured.
  if (req.presencePenalty !== undefined && req.presencePenalty !== 0) {
    throw invalidArgument("presence_penalty", "the Anthropic Messages API has no presence penalty");
  }
  if (req.frequencyPenalty !== undefined && req.frequencyPenalty !== 0) {
    throw invalidArgument("frequency_penalty", "the Anthropic Messages API has no frequency penalty");
  }
}

/**
 * SYSTEM and DEVELOPER messages become the top-level `system` (text blocks, in order); TOOL
 * messages become `tool_result` blocks of a user turn, consecutive ones sharing one turn.
 */
function translateMessages(req: ChatInput): { system: TextBlockParam[]; messages: MessageParam[] } {
  const system: TextBlockParam[] = [];
  const messages: MessageParam[] = [];
  // The user turn that holds the tool results of the latest run of TOOL messages, if the last turn
  // pushed is one.
  let toolTurn: MessageParam | undefined;
  req.messages.forEach((m, i) => {
    const at = `messages[${i}]`;
    if (m.name !== "") {
      throw invalidArgument(`${at}.name`, "Anthropic has no author names in messages");
    }
    switch (m.role) {
      case Role.SYSTEM:
      case Role.DEVELOPER:
        m.content.forEach((p, j) => {
          if (p.part.case !== "text") {
            throw invalidArgument(`${at}.content[${j}]`, "Anthropic's system prompt takes text only");
          }
          system.push(withCacheControl<TextBlockParam>({ type: "text", text: p.part.value }, p.cacheBreakpoint, `${at}.content[${j}]`));
        });
        return;
      case Role.USER:
        messages.push({ role: "user", content: m.content.map((p, j) => contentBlock(p, `${at}.content[${j}]`)) });
        toolTurn = undefined;
        return;
      case Role.ASSISTANT: {
        const content: ContentBlockParam[] = m.content.map((p, j) => contentBlock(p, `${at}.content[${j}]`));
        m.toolCalls.forEach((c, j) => content.push(toolUse(c, `${at}.tool_calls[${j}]`)));
        messages.push({ role: "assistant", content });
        toolTurn = undefined;
        return;
      }
      case Role.TOOL: {
        const result: ToolResultBlockParam = {
          type: "tool_result",
          tool_use_id: m.toolCallId,
          content: m.content.map((p, j) => contentBlock(p, `${at}.content[${j}]`)),
        };
        if (toolTurn === undefined) {
          toolTurn = { role: "user", content: [] };
          messages.push(toolTurn);
        }
        toolTurn.content.push(result);
        return;
      }
      default:
        throw invalidArgument(`${at}.role`, "required (one of the ROLE_* values)");
    }
  });
  if (messages.length === 0) {
    throw invalidArgument("messages", "Anthropic needs at least one user or assistant message besides system messages");
  }
  return { system, messages };
}

function contentBlock(p: ContentPart, at: string): TextBlockParam | ImageBlockParam {
  return withCacheControl(partBlock(p, at), p.cacheBreakpoint, at);
}

/**
 * `block` with the `cache_control` of a prompt-caching breakpoint (proto/infergate/v1/chat.proto
 * CacheBreakpoint) when the part, call or tool it stands for has one.
 */
function withCacheControl<B extends { cache_control?: CacheControlParam }>(block: B, breakpoint: CacheBreakpoint | undefined, at: string): B {
  if (breakpoint === undefined) return block;
  const ttl = breakpoint.ttl;
  if (ttl !== "" && ttl !== "5m" && ttl !== "1h") {
    throw invalidArgument(`${at}.cache_breakpoint.ttl`, 'Anthropic caches for "5m" or "1h" (empty: 5m)');
  }
  block.cache_control = ttl === "" ? { type: "ephemeral" } : { type: "ephemeral", ttl };
  return block;
}

function partBlock(p: ContentPart, at: string): TextBlockParam | ImageBlockParam {
  switch (p.part.case) {
    case "text":
      return { type: "text", text: p.part.value };
    case "imageData": {
      const img = p.part.value;
      checkDetail(img.detail, `${at}.image_data.detail`);
      return {
        type: "image",
        source: { type: "base64", media_type: mediaType(img.mimeType, `${at}.image_data.mime_type`), data: Buffer.from(img.data).toString("base64") },
      };
    }
    case "imageUrl": {
      const img = p.part.value;
      checkDetail(img.detail, `${at}.image_url.detail`);
      if (/^data:/i.test(img.url)) {
        const data = parseDataUrl(img.url, `${at}.image_url.url`);
        return { type: "image", source: { type: "base64", media_type: mediaType(data.mediaType, `${at}.image_url.url`), data: data.base64 } };
      }
      return { type: "image", source: { type: "url", url: img.url } };
    }
    default:
      throw invalidArgument(at, "empty part: set text, image_url or image_data");
  }
}

function checkDetail(detail: ImageDetail, field: string): void {
  if (detail !== ImageDetail.UNSPECIFIED) {
    throw invalidArgument(field, "Anthropic has no image resolution setting; leave it unspecified");
  }
}

function mediaType(mime: string, field: string): AnthropicImageMediaType {
  const t = mime.toLowerCase();
  if (!(anthropicImageMediaTypes as readonly string[]).includes(t)) {
    throw invalidArgument(field, `Anthropic accepts ${anthropicImageMediaTypes.join(", ")}; got "${echoed(mime)}"`);
  }
  return t as AnthropicImageMediaType;
}

function toolUse(c: ToolCall, at: string): ToolUseBlockParam {
  const input = toolArgumentsObject(c, at, "Anthropic");
  return withCacheControl<ToolUseBlockParam>({ type: "tool_use", id: c.id, name: c.name, input }, c.cacheBreakpoint, at);
}

/**
 * Anthropic's tool_choice carries parallel_tool_calls=false as `disable_parallel_tool_use`.
 * Without tools, a tool choice of AUTO or NONE and parallel_tool_calls say nothing (the gateway
 * already refused REQUIRED or a function name without tools), and Anthropic refuses a
 * `tool_choice` without tools, so none is sent.
 */
function toolChoice(req: ChatInput): ToolChoiceParam | undefined {
  if (req.tools.length === 0) {
    return undefined;
  }
  const single = req.parallelToolCalls === false ? { disable_parallel_tool_use: true } : {};
  const c = req.toolChoice?.choice;
  if (c?.case === "functionName") {
    return { type: "tool", name: c.value, ...single };
  }
  if (c?.case === "mode") {
    switch (c.value) {
      case ToolChoiceMode.AUTO:
        return { type: "auto", ...single };
      case ToolChoiceMode.NONE:
        // No tool call at all: one at most holds trivially.
        return { type: "none" };
      case ToolChoiceMode.REQUIRED:
        return { type: "any", ...single };
      default:
        // UNSPECIFIED: as if unset (the gateway refused unknown values).
        break;
    }
  }
  return req.parallelToolCalls === false ? { type: "auto", disable_parallel_tool_use: true } : undefined;
}

// --- answers ------------------------------------------------------------------------------------

/**
 * The stop sequence that ended the answer: Anthropic's `stop_sequence` when `stop_reason` says one
 * did, else empty.
 */
export function stopSequenceOf(stopReason: unknown, stopSequence: unknown): string {
  return stopReason === "stop_sequence" && typeof stopSequence === "string" ? stopSequence : "";
}

/** Anthropic's stop_reason as our finish reason; null or unknown values are UNSPECIFIED. */
export function finishReasonOf(stopReason: unknown): FinishReason {
  switch (stopReason) {
    case "end_turn":
    case "stop_sequence":
    case "pause_turn":
      return FinishReason.STOP;
    case "max_tokens":
    case "model_context_window_exceeded":
      return FinishReason.LENGTH;
    case "tool_use":
      return FinishReason.TOOL_CALLS;
    case "refusal":
      return FinishReason.CONTENT_FILTER;
    default:
      return FinishReason.UNSPECIFIED;
  }
}

/**
 * Token counts: the prompt is every input token, cached or not (Anthropic bills them apart), of
 * which the cache reads (`cache_read_input_tokens`) are the cached prompt tokens and the cache
 * writes (`cache_creation_input_tokens`) the cache-creation tokens. Missing, null or nonsense
 * counts are 0.
 */
export function usageOf(u: WireUsage): Usage {
  const cachedPrompt = tokenCount(u.cache_read_input_tokens);
  const cacheCreation = tokenCount(u.cache_creation_input_tokens);
  return usageFromCounts({
    prompt: tokenCount(u.input_tokens) + cacheCreation + cachedPrompt,
    completion: tokenCount(u.output_tokens),
    cachedPrompt,
    cacheCreation,
  });
}

/**
 * Reads the answer of a non-streaming request: text blocks joined into one text part, tool_use
 * blocks as tool calls (arguments = the input as JSON). Block types we never ask for (thinking,
 * server tools) are skipped. Throws UNAVAILABLE UPSTREAM_BAD_RESPONSE for a malformed answer.
 */
export function fromMessagesResponse(upstream: string, body: unknown): ChatResponse {
  const bad = (problem: string): GatewayError => badResponse(upstream, problem, safeJson(body));
  if (!isObject(body) || !Array.isArray(body["content"])) {
    throw bad("the answer has no content array");
  }
  let text = "";
  const toolCalls: ToolCall[] = [];
  for (const block of body["content"] as unknown[]) {
    if (!isObject(block)) {
      throw bad("a content block is not an object");
    }
    if (block["type"] === "text") {
      if (typeof block["text"] !== "string") {
        throw bad("a text block has no text");
      }
      text += block["text"];
    } else if (block["type"] === "tool_use") {
      const { id, name, input } = block;
      if (typeof id !== "string" || typeof name !== "string" || !isObject(input)) {
        throw bad("a tool_use block lacks its id, name or input object");
      }
      toolCalls.push(create(ToolCallSchema, { id, name, arguments: JSON.stringify(input) }));
    }
  }
  const usage = body["usage"];
  if (usage !== undefined && !isObject(usage)) {
    throw bad("usage is not an object");
  }
  return create(ChatResponseSchema, {
    id: typeof body["id"] === "string" ? body["id"] : "",
    message: create(MessageSchema, {
      role: Role.ASSISTANT,
      content: text === "" ? [] : [{ part: { case: "text", value: text } }],
      toolCalls,
    }),
    finishReason: finishReasonOf(body["stop_reason"]),
    stopSequence: stopSequenceOf(body["stop_reason"], body["stop_sequence"]),
    usage: usageOf((usage ?? {}) as WireUsage),
  });
}

type BlockState =
  | { readonly kind: "text" }
  | { readonly kind: "tool"; readonly index: number; hasArguments: boolean }
  | { readonly kind: "other" };

/**
 * Makes the translator of one stream (Anthropic "Streaming Messages": message_start, then per
 * content block content_block_start / content_block_delta… / content_block_stop, message_delta,
 * message_stop; `ping` anywhere; `error` at any point; unknown event types are ignored, as the
 * API's versioning policy asks). Tool-call deltas are indexed by position among the tool calls,
 * not by content block. A tool call whose input streams no fragment gets "{}" at its block's end,
 * so that the joined arguments equal Chat's.
 */
export function createStreamTranslator(upstream: string): StreamTranslator {
  let started = false;
  let finished = false;
  let id = "";
  let stopReason: unknown = null;
  let stopSequence: unknown = null;
  let usage: WireUsage = {};
  const blocks = new Map<number, BlockState>();
  let toolCount = 0;

  const bad = (problem: string, data?: string): GatewayError => badResponse(upstream, problem, data);
  const text = (value: string): GenerateResponse => create(GenerateResponseSchema, { event: { case: "textDelta", value } });
  const tool = (value: { index: number; id?: string; name?: string; arguments: string }): GenerateResponse =>
    create(GenerateResponseSchema, { event: { case: "toolCallDelta", value } });

  function mergeUsage(u: unknown, data: string): void {
    if (u === undefined || u === null) {
      return;
    }
    if (!isObject(u)) {
      throw bad("usage is not an object", data);
    }
    // Counts are cumulative; fields missing or null in a later event keep their earlier value.
    for (const [k, v] of Object.entries(u)) {
      if (typeof v === "number") {
        usage = { ...usage, [k]: v };
      }
    }
  }

  function blockAt(e: Record<string, unknown>, data: string): [number, BlockState] {
    const index = e["index"];
    const block = typeof index === "number" ? blocks.get(index) : undefined;
    if (block === undefined) {
      throw bad(`a ${String(e["type"])} event for a content block that was not started`, data);
    }
    return [index as number, block];
  }

  return {
    get done() {
      return finished;
    },
    push(ev) {
      if (finished) {
        return [];
      }
      let e: unknown;
      try {
        e = JSON.parse(ev.data);
      } catch {
        throw bad(`malformed JSON in a "${ev.event}" event`, ev.data);
      }
      if (!isObject(e) || typeof e["type"] !== "string") {
        throw bad(`a "${ev.event}" event without a type`, ev.data);
      }
      const type = e["type"];
      switch (type) {
        case "ping":
          return [];
        case "error":
          throw streamError(upstream, e, ev.data);
        case "message_start": {
          if (started) {
            throw bad("a second message_start", ev.data);
          }
          const message = e["message"];
          if (!isObject(message)) {
            throw bad("message_start without a message", ev.data);
          }
          started = true;
          id = typeof message["id"] === "string" ? message["id"] : "";
          mergeUsage(message["usage"], ev.data);
          return [];
        }
        case "content_block_start":
        case "content_block_delta":
        case "content_block_stop":
        case "message_delta":
        case "message_stop":
          if (!started) {
            throw bad(`${type} before message_start`, ev.data);
          }
          break;
        default:
          return [];
      }
      switch (type) {
        case "content_block_start": {
          const index = e["index"];
          const cb = e["content_block"];
          if (typeof index !== "number" || !isObject(cb)) {
            throw bad("content_block_start without an index or a content_block", ev.data);
          }
          if (blocks.has(index)) {
            throw bad(`content block ${index} started twice`, ev.data);
          }
          if (cb["type"] === "text") {
            blocks.set(index, { kind: "text" });
            return typeof cb["text"] === "string" && cb["text"] !== "" ? [text(cb["text"])] : [];
          }
          if (cb["type"] === "tool_use") {
            if (typeof cb["id"] !== "string" || typeof cb["name"] !== "string") {
              throw bad("a tool_use block without its id or name", ev.data);
            }
            const position = toolCount++;
            blocks.set(index, { kind: "tool", index: position, hasArguments: false });
            return [tool({ index: position, id: cb["id"], name: cb["name"], arguments: "" })];
          }
          blocks.set(index, { kind: "other" });
          return [];
        }
        case "content_block_delta": {
          const [, block] = blockAt(e, ev.data);
          const delta = e["delta"];
          if (!isObject(delta)) {
            throw bad("content_block_delta without a delta", ev.data);
          }
          if (delta["type"] === "text_delta") {
            if (block.kind !== "text" || typeof delta["text"] !== "string") {
              throw bad("a text_delta that does not fit its block", ev.data);
            }
            return delta["text"] === "" ? [] : [text(delta["text"])];
          }
          if (delta["type"] === "input_json_delta") {
            if (block.kind !== "tool" || typeof delta["partial_json"] !== "string") {
              throw bad("an input_json_delta that does not fit its block", ev.data);
            }
            if (delta["partial_json"] === "") {
              return [];
            }
            block.hasArguments = true;
            return [tool({ index: block.index, arguments: delta["partial_json"] })];
          }
          // thinking_delta, signature_delta, citations_delta…: never asked for.
          return [];
        }
        case "content_block_stop": {
          const [, block] = blockAt(e, ev.data);
          if (block.kind === "tool" && !block.hasArguments) {
            block.hasArguments = true;
            return [tool({ index: block.index, arguments: "{}" })];
          }
          return [];
        }
        case "message_delta": {
          const delta = e["delta"];
          if (isObject(delta) && delta["stop_reason"] !== undefined && delta["stop_reason"] !== null) {
            stopReason = delta["stop_reason"];
            stopSequence = delta["stop_sequence"];
          }
          mergeUsage(e["usage"], ev.data);
          return [];
        }
        default: {
          // message_stop
          finished = true;
          return [
            create(GenerateResponseSchema, {
              event: { case: "final", value: { id, finishReason: finishReasonOf(stopReason), stopSequence: stopSequenceOf(stopReason, stopSequence), usage: usageOf(usage) } },
            }),
          ];
        }
      }
    },
    end() {
      if (!finished) {
        throw new GatewayError(Code.Unavailable, `upstream "${upstream}" ended the stream before message_stop`, {
          reason: Reason.StreamTruncated,
          metadata: { upstream },
        });
      }
    },
  };
}

/**
 * An `error` event after HTTP 200 (e.g. `overloaded_error`): the upstream gave up mid-answer.
 * The client sees the error type; the upstream's message goes to the log only.
 */
function streamError(upstream: string, e: Record<string, unknown>, data: string): GatewayError {
  const err = e["error"];
  const t = isObject(err) && typeof err["type"] === "string" && /^[a-z_]{1,64}$/.test(err["type"]) ? err["type"] : "error";
  return new GatewayError(Code.Unavailable, `upstream "${upstream}" failed during the stream (${t})`, {
    reason: Reason.UpstreamUnavailable,
    metadata: { upstream, upstream_error: t },
    cause: new UpstreamFailure(`upstream ${upstream} sent an error event: ${t}`, 200, snippet(data)),
  });
}

/**
 * Builds the body of `POST /v1/messages/count_tokens` from a Chat request: the Messages request's
 * prompt (model, system, messages, tools, tool_choice), with the same checks.
 */
export function toCountTokensRequest(req: ChatInput, upstreamModel: string): CountTokensRequest {
  const { model, system, messages, tools, tool_choice } = toMessagesRequest(req, { upstreamModel, defaultMaxTokens: 1, stream: false });
  return { model, messages, ...(system === undefined ? {} : { system }), ...(tools === undefined ? {} : { tools }), ...(tool_choice === undefined ? {} : { tool_choice }) };
}

/** Reads count_tokens' answer; anything but a non-negative integer `input_tokens` is a bad response. */
export function fromCountTokensResponse(upstream: string, body: unknown): number {
  const n = isObject(body) ? body["input_tokens"] : undefined;
  if (typeof n !== "number" || !Number.isSafeInteger(n) || n < 0) {
    throw badResponse(upstream, "count_tokens answered without a non-negative integer input_tokens");
  }
  return n;
}
