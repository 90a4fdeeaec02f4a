/**
 * Pure translations between infergate's Chat/Generate messages and Amazon Bedrock's Converse API,
 * whose wire shapes are the request and answer types of `@aws-sdk/client-bedrock-runtime` (the
 * SDK serialises them to the REST JSON and decodes the event stream). No I/O: the client in
 * bedrock-upstream.ts sends what these build and feeds back what arrives. docs/upstream-bedrock.md
 * has the mapping table; every request field either maps or is refused here with INVALID_ARGUMENT
 * naming it, never silently dropped.
 */
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import type {
  ContentBlock,
  ConverseResponse,
  ConverseStreamOutput,
  ConverseStreamRequest,
  GuardrailStreamConfiguration,
  ImageFormat,
  Message as WireMessage,
  SystemContentBlock,
  TokenUsage,
  Tool,
  ToolChoice,
} from "@aws-sdk/client-bedrock-runtime";
import {
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
import { type ChatResponse, ChatResponseSchema, type GenerateResponse, GenerateResponseSchema } from "../../../gen/infergate/v1/inference_service_pb.js";
import { echoed, GatewayError, invalidArgument, Reason } from "../../core/gateway-error.js";
import type { ChatInput } from "../../core/upstream.js";
import { badResponse } from "../http/http-errors.js";
import { isObject, safeJson } from "../json-value.js";
import { parseDataUrl, toolArgumentsObject } from "../message-parts.js";
import { tokenCount, usageFromCounts } from "../usage.js";

/** The Converse request without its model id (the same body serves Converse and ConverseStream). */
export type ConverseBody = Omit<ConverseStreamRequest, "modelId">;

/** A model's guardrail (its `guardrail` option): sent as `guardrailConfig` on every call. */
export interface GuardrailOption {
  readonly identifier: string;
  readonly version: string;
  readonly trace?: "enabled" | "disabled" | "enabled_full" | undefined;
  /** ConverseStream only: `sync` (the default) or `async` guardrail processing of the stream. */
  readonly streamProcessingMode?: "sync" | "async" | undefined;
}

/** What a request needs beyond the caller's message: the model's options. */
export interface RequestContext {
  /** maxTokens when the request leaves it unset; undefined leaves it to the model's default. */
  readonly defaultMaxTokens?: number | undefined;
  readonly guardrail?: GuardrailOption | undefined;
  /**
   * The field of `additionalModelRequestFields` that carries top_k for this model (`top_k` for
   * Anthropic's and Mistral's models); undefined refuses top_k (Converse has no common one).
   */
  readonly topKField?: string | undefined;
  /** Model-specific fields sent as `additionalModelRequestFields` (the model's option). */
  readonly additionalModelRequestFields?: Readonly<Record<string, unknown>> | undefined;
  /** Whether the body is for ConverseStream (guardrail stream mode applies). */
  readonly stream: boolean;
}

/** Image media types Converse takes, by its `format` name. */
const imageFormats: Readonly<Record<string, ImageFormat>> = {
  "image/png": "png",
  "image/jpeg": "jpeg",
  "image/jpg": "jpeg",
  "image/gif": "gif",
  "image/webp": "webp",
};

/**
 * Builds the body of Converse / ConverseStream. Throws INVALID_ARGUMENT naming the field for
 * anything Converse cannot carry faithfully. `metadata`, `cache_policy` and `session_id` are the
 * gateway's and never reach an upstream.
 */
export function toConverseRequest(req: ChatInput, ctx: RequestContext): ConverseBody {
  checkSampling(req, ctx);
  const { system, messages } = translateMessages(req);
  const body: ConverseBody = { messages };
  if (system.length > 0) body.system = system;
  const maxTokens = req.maxTokens ?? ctx.defaultMaxTokens;
  const inference = {
    ...(maxTokens !== undefined ? { maxTokens } : {}),
    ...(req.temperature !== undefined ? { temperature: req.temperature } : {}),
    ...(req.topP !== undefined ? { topP: req.topP } : {}),
    ...(req.stop.length > 0 ? { stopSequences: [...req.stop] } : {}),
  };
  if (Object.keys(inference).length > 0) body.inferenceConfig = inference;
  const additional: Record<string, unknown> = { ...ctx.additionalModelRequestFields };
  if (req.topK !== undefined) additional[ctx.topKField!] = req.topK;
  if (Object.keys(additional).length > 0) body.additionalModelRequestFields = additional as ConverseBody["additionalModelRequestFields"];
  // Without tools, a tool choice of AUTO or NONE and parallel_tool_calls say nothing (the gateway
  // refused REQUIRED or a function name without tools).
  if (req.tools.length > 0) {
    body.toolConfig = { tools: req.tools.map(toolSpec) };
    const choice = toolChoice(req);
    if (choice !== undefined) body.toolConfig.toolChoice = choice;
  }
  responseFormat(req, body);
  if (ctx.guardrail !== undefined) body.guardrailConfig = guardrailConfig(ctx.guardrail, ctx.stream);
  return body;
}

function checkSampling(req: ChatInput, ctx: RequestContext): void {
  if (req.seed !== undefined) {
    throw invalidArgument("seed", "Bedrock's Converse API has no seed");
  }
  // A zero penalty is no penalty, which is what Converse does; anything else cannot be honoured.
  if (req.presencePenalty !== undefined && req.presencePenalty !== 0) {
    throw invalidArgument("presence_penalty", "Bedrock's Converse API has no presence penalty");
  }
  if (req.frequencyPenalty !== undefined && req.frequencyPenalty !== 0) {
    throw invalidArgument("frequency_penalty", "Bedrock's Converse API has no frequency penalty");
  }
  if (req.topK !== undefined && ctx.topKField === undefined) {
    throw invalidArgument("top_k", "this Bedrock model has no top_k configured (model option topKField)");
  }
}

function guardrailConfig(g: GuardrailOption, stream: boolean): GuardrailStreamConfiguration {
  return {
    guardrailIdentifier: g.identifier,
    guardrailVersion: g.version,
    ...(g.trace !== undefined ? { trace: g.trace } : {}),
    ...(stream && g.streamProcessingMode !== undefined ? { streamProcessingMode: g.streamProcessingMode } : {}),
  };
}

/**
 * SYSTEM and DEVELOPER messages become `system` (text blocks, in order); TOOL messages become
 * `toolResult` blocks of a user turn. Converse wants user and assistant turns to alternate, so
 * consecutive messages of one role (tool results and the user's next words) share one turn.
 */
function translateMessages(req: ChatInput): { system: SystemContentBlock[]; messages: WireMessage[] } {
  const system: SystemContentBlock[] = [];
  const messages: WireMessage[] = [];
  const push = (role: "user" | "assistant", content: ContentBlock[]): void => {
    const last = messages.at(-1);
    if (last?.role === role) {
      last.content!.push(...content);
    } else {
      messages.push({ role, content });
    }
  };
  req.messages.forEach((m, i) => {
    const at = `messages[${i}]`;
    if (m.name !== "") {
      throw invalidArgument(`${at}.name`, "Converse has no author names in messages");
    }
    switch (m.role) {
      case Role.SYSTEM:
      case Role.DEVELOPER:
        m.content.forEach((p, j) => {
          if (p.part.case !== "text") {
            throw invalidArgument(`${at}.content[${j}]`, "Converse's system prompt takes text only");
          }
          system.push({ text: p.part.value });
        });
        return;
      case Role.USER:
        push("user", m.content.map((p, j) => contentBlock(p, `${at}.content[${j}]`)));
        return;
      case Role.ASSISTANT: {
        const content: ContentBlock[] = m.content.map((p, j) => contentBlock(p, `${at}.content[${j}]`));
        m.toolCalls.forEach((c, j) => content.push(toolUse(c, `${at}.tool_calls[${j}]`)));
        push("assistant", content);
        return;
      }
      case Role.TOOL: {
        const content = m.content.map((p, j) => {
          const b = contentBlock(p, `${at}.content[${j}]`);
          return b.text !== undefined ? { text: b.text } : { image: b.image! };
        });
        push("user", [{ toolResult: { toolUseId: m.toolCallId, content } }]);
        return;
      }
      default:
        throw invalidArgument(`${at}.role`, "required (one of the ROLE_* values)");
    }
  });
  if (messages.length === 0) {
    throw invalidArgument("messages", "Converse needs at least one user or assistant message besides system messages");
  }
  return { system, messages };
}

/** A text or image part as a Converse content block (images as bytes, or an S3 location). */
function contentBlock(p: ContentPart, at: string): ContentBlock.TextMember | ContentBlock.ImageMember {
  switch (p.part.case) {
    case "text":
      return { text: p.part.value };
    case "imageData": {
      const img = p.part.value;
      checkDetail(img.detail, `${at}.image_data.detail`);
      return { image: { format: imageFormat(img.mimeType, `${at}.image_data.mime_type`), source: { bytes: img.data } } };
    }
    case "imageUrl": {
      const img = p.part.value;
      const field = `${at}.image_url.url`;
      checkDetail(img.detail, `${at}.image_url.detail`);
      if (/^data:/i.test(img.url)) {
        const { mediaType, base64 } = parseDataUrl(img.url, field);
        return { image: { format: imageFormat(mediaType, field), source: { bytes: Buffer.from(base64, "base64") } } };
      }
      const s3 = /^s3:\/\/[^/]+\/.+\.(png|jpe?g|gif|webp)$/i.exec(img.url);
      if (s3 !== null) {
        return { image: { format: imageFormat(`image/${s3[1]!.toLowerCase()}`, field), source: { s3Location: { uri: img.url } } } };
      }
      throw invalidArgument(field, "Converse takes images as bytes (image_data or a data: URL) or as s3://bucket/key.png|jpeg|gif|webp, not by web URL");
    }
    default:
      throw invalidArgument(at, "empty part: set text, image_url or image_data");
  }
}

function checkDetail(detail: ImageDetail, field: string): void {
  if (detail !== ImageDetail.UNSPECIFIED) {
    throw invalidArgument(field, "Converse has no image resolution setting; leave it unspecified");
  }
}

function imageFormat(mime: string, field: string): ImageFormat {
  const format = imageFormats[mime.toLowerCase()];
  if (format === undefined) {
    throw invalidArgument(field, `Converse accepts image/png, image/jpeg, image/gif, image/webp; got "${echoed(mime)}"`);
  }
  return format;
}

function toolSpec(t: ChatInput["tools"][number], i: number): Tool {
  const schema = t.parameters ?? { type: "object", properties: {} };
  if (schema["type"] !== "object") {
    throw invalidArgument(`tools[${i}].parameters`, 'Converse needs a JSON Schema with "type": "object"');
  }
  return {
    toolSpec: {
      name: t.name,
      ...(t.description !== "" ? { description: t.description } : {}),
      inputSchema: { json: schema as never },
      ...(t.strict !== undefined ? { strict: t.strict } : {}),
    },
  };
}

function toolUse(c: ToolCall, at: string): ContentBlock.ToolUseMember {
  return { toolUse: { toolUseId: c.id, name: c.name, input: toolArgumentsObject(c, at, "Converse") as never } };
}

/**
 * Converse's toolChoice: auto, any (REQUIRED) or one tool. It has no "none" and no switch for
 * parallel calls, so TOOL_CHOICE_MODE_NONE with tools and parallel_tool_calls=false are refused
 * rather than ignored.
 */
function toolChoice(req: ChatInput): ToolChoice | undefined {
  if (req.parallelToolCalls === false) {
    throw invalidArgument("parallel_tool_calls", "Converse cannot forbid parallel tool calls; leave it unset or true");
  }
  const c = req.toolChoice?.choice;
  if (c?.case === "functionName") return { tool: { name: c.value } };
  if (c?.case === "mode") {
    switch (c.value) {
      case ToolChoiceMode.AUTO:
        return { auto: {} };
      case ToolChoiceMode.REQUIRED:
        return { any: {} };
      case ToolChoiceMode.NONE:
        throw invalidArgument("tool_choice.mode", "Converse has no tool choice \"none\"; send the request without tools");
      default:
        break;
    }
  }
  return undefined;
}

function responseFormat(req: ChatInput, body: ConverseBody): void {
  const format = req.responseFormat;
  if (format === undefined) return;
  switch (format.type) {
    case ResponseFormatType.UNSPECIFIED:
    case ResponseFormatType.TEXT:
      return;
    case ResponseFormatType.JSON_OBJECT:
      throw invalidArgument("response_format.type", "Converse has no free-form JSON mode; use RESPONSE_FORMAT_TYPE_JSON_SCHEMA with a schema");
    case ResponseFormatType.JSON_SCHEMA: {
      const js = format.jsonSchema;
      if (js?.schema === undefined) throw invalidArgument("response_format.json_schema.schema", "required");
      // Converse's structured output (outputConfig.textFormat) takes the schema as JSON text.
      body.outputConfig = {
        textFormat: {
          type: "json_schema",
          structure: {
            jsonSchema: {
              schema: JSON.stringify(js.schema),
              ...(js.name !== "" ? { name: js.name } : {}),
              ...(js.description !== "" ? { description: js.description } : {}),
            },
          },
        },
      };
      return;
    }
    default:
      throw invalidArgument("response_format.type", `unknown value ${format.type}`);
  }
}

// --- answers ------------------------------------------------------------------------------------

/**
 * Converse's stopReason as our finish reason: end_turn and stop_sequence are STOP, max_tokens and
 * model_context_window_exceeded LENGTH, tool_use TOOL_CALLS, guardrail_intervened and
 * content_filtered CONTENT_FILTER; the rest (malformed_model_output, malformed_tool_use, values
 * added later) UNSPECIFIED.
 */
export function finishReasonOf(stopReason: unknown): FinishReason {
  switch (stopReason) {
    case "end_turn":
    case "stop_sequence":
      return FinishReason.STOP;
    case "max_tokens":
    case "model_context_window_exceeded":
      return FinishReason.LENGTH;
    case "tool_use":
      return FinishReason.TOOL_CALLS;
    case "guardrail_intervened":
    case "content_filtered":
      return FinishReason.CONTENT_FILTER;
    default:
      return FinishReason.UNSPECIFIED;
  }
}

/**
 * Token counts: Converse's inputTokens leaves out the tokens read from and written to the prompt
 * cache (its totalTokens counts all three), so the prompt is their sum, of which the cache reads
 * are the cached prompt tokens and the cache writes the cache-creation tokens.
 */
export function usageOf(u: Partial<TokenUsage> | undefined): Usage {
  const cachedPrompt = tokenCount(u?.cacheReadInputTokens);
  const cacheCreation = tokenCount(u?.cacheWriteInputTokens);
  return usageFromCounts({
    prompt: tokenCount(u?.inputTokens) + cachedPrompt + cacheCreation,
    completion: tokenCount(u?.outputTokens),
    cachedPrompt,
    cacheCreation,
  });
}

/**
 * Reads a Converse answer (`id`: the request id Bedrock gave it, as Converse has no answer id): text blocks joined into one text part, toolUse blocks as tool calls
 * (arguments = the input as JSON). Blocks never asked for (reasoning, citations) are skipped.
 * Throws UNAVAILABLE UPSTREAM_BAD_RESPONSE for a malformed answer.
 */
export function fromConverseResponse(upstream: string, res: Partial<ConverseResponse>, id: string): ChatResponse {
  const bad = (problem: string): GatewayError => badResponse(upstream, problem, safeJson(res));
  const content = res.output?.message?.content;
  if (!Array.isArray(content)) {
    throw bad("the answer has no output message");
  }
  let text = "";
  const toolCalls: ToolCall[] = [];
  for (const block of content) {
    if (typeof block.text === "string") {
      text += block.text;
    } else if (block.toolUse !== undefined) {
      const { toolUseId, name, input } = block.toolUse;
      if (typeof toolUseId !== "string" || typeof name !== "string" || !isObject(input)) {
        throw bad("a toolUse block lacks its toolUseId, name or input object");
      }
      toolCalls.push(create(ToolCallSchema, { id: toolUseId, name, arguments: JSON.stringify(input) }));
    }
  }
  return create(ChatResponseSchema, {
    id,
    message: create(MessageSchema, {
      role: Role.ASSISTANT,
      content: text === "" ? [] : [{ part: { case: "text", value: text } }],
      toolCalls,
    }),
    finishReason: finishReasonOf(res.stopReason),
    usage: usageOf(res.usage),
  });
}

/** One ConverseStream's translator: its events in, our events out. */
export interface ConverseStreamTranslator {
  /** Our events for one of ConverseStream's; throws UPSTREAM_BAD_RESPONSE for one out of place. */
  push(event: ConverseStreamOutput): GenerateResponse[];
  /** Whether the final event was returned (the `metadata` event came); later events are ignored. */
  readonly done: boolean;
  /**
   * The stream ended: the final event when messageStop came without the `metadata` event after it
   * (usage then 0); throws UNAVAILABLE STREAM_TRUNCATED when messageStop never came.
   */
  end(): GenerateResponse[];
}

type BlockState = { readonly kind: "text" } | { readonly kind: "tool"; readonly index: number; hasArguments: boolean } | { readonly kind: "other" };

/**
 * Makes the translator of one ConverseStream (`id`: its request id, the final event's id): messageStart, then per content block an optional
 * contentBlockStart (tool use blocks have one, text blocks need none), contentBlockDelta… and
 * contentBlockStop, then messageStop (the stop reason) and metadata (usage), the last event.
 * Tool-call deltas are indexed by position among the tool calls, not by content block; a tool call
 * whose input streams no fragment gets "{}" at its block's end, so that the joined arguments
 * equal Chat's. Events the SDK does not know ($unknown) are ignored.
 */
export function createConverseStreamTranslator(upstream: string, id: string): ConverseStreamTranslator {
  let started = false;
  let stopped = false;
  let finished = false;
  let stopReason: unknown;
  const blocks = new Map<number, BlockState>();
  let toolCount = 0;

  const bad = (problem: string, event?: unknown): GatewayError => badResponse(upstream, problem, safeJson(event));
  const text = (value: string): GenerateResponse => create(GenerateResponseSchema, { event: { case: "textDelta", value } });
  const tool = (value: { index: number; id?: string; name?: string; arguments: string }): GenerateResponse =>
    create(GenerateResponseSchema, { event: { case: "toolCallDelta", value } });
  const final = (usage: Partial<TokenUsage> | undefined): GenerateResponse[] => {
    finished = true;
    return [create(GenerateResponseSchema, { event: { case: "final", value: { id, finishReason: finishReasonOf(stopReason), usage: usageOf(usage) } } })];
  };
  const indexOf = (e: { contentBlockIndex?: number | undefined }, ev: unknown): number => {
    if (typeof e.contentBlockIndex !== "number") throw bad("a content block event without contentBlockIndex", ev);
    return e.contentBlockIndex;
  };

  return {
    get done() {
      return finished;
    },
    push(ev) {
      if (finished) return [];
      if (ev.messageStart !== undefined) {
        if (started) throw bad("a second messageStart", ev);
        started = true;
        return [];
      }
      const known = ev.contentBlockStart ?? ev.contentBlockDelta ?? ev.contentBlockStop ?? ev.messageStop ?? ev.metadata;
      if (known === undefined) return [];
      if (!started) throw bad("an event before messageStart", ev);
      if (ev.contentBlockStart !== undefined) {
        const index = indexOf(ev.contentBlockStart, ev);
        if (blocks.has(index)) throw bad(`content block ${index} started twice`, ev);
        const start = ev.contentBlockStart.start;
        if (start?.toolUse !== undefined) {
          const { toolUseId, name } = start.toolUse;
          if (typeof toolUseId !== "string" || typeof name !== "string") throw bad("a toolUse block start without its toolUseId or name", ev);
          const position = toolCount++;
          blocks.set(index, { kind: "tool", index: position, hasArguments: false });
          return [tool({ index: position, id: toolUseId, name, arguments: "" })];
        }
        blocks.set(index, { kind: "other" });
        return [];
      }
      if (ev.contentBlockDelta !== undefined) {
        const index = indexOf(ev.contentBlockDelta, ev);
        const delta = ev.contentBlockDelta.delta;
        let block = blocks.get(index);
        if (typeof delta?.text === "string") {
          // Text blocks start with their first delta.
          if (block === undefined) blocks.set(index, (block = { kind: "text" }));
          if (block.kind !== "text") throw bad("a text delta in a block that is not text", ev);
          return delta.text === "" ? [] : [text(delta.text)];
        }
        if (delta?.toolUse !== undefined) {
          if (block?.kind !== "tool" || typeof delta.toolUse.input !== "string") throw bad("a toolUse delta that does not fit its block", ev);
          if (delta.toolUse.input === "") return [];
          block.hasArguments = true;
          return [tool({ index: block.index, arguments: delta.toolUse.input })];
        }
        // reasoningContent, citation…: never asked for.
        return [];
      }
      if (ev.contentBlockStop !== undefined) {
        const block = blocks.get(indexOf(ev.contentBlockStop, ev));
        if (block?.kind === "tool" && !block.hasArguments) {
          block.hasArguments = true;
          return [tool({ index: block.index, arguments: "{}" })];
        }
        return [];
      }
      if (ev.messageStop !== undefined) {
        stopped = true;
        stopReason = ev.messageStop.stopReason;
        return [];
      }
      // metadata: the last event, after messageStop.
      if (!stopped) throw bad("metadata before messageStop", ev);
      return final(ev.metadata!.usage);
    },
    end() {
      if (finished) return [];
      if (stopped) return final(undefined);
      throw new GatewayError(Code.Unavailable, `upstream "${upstream}" ended the stream before messageStop`, {
        reason: Reason.StreamTruncated,
        metadata: { upstream },
      });
    },
  };
}
