/**
 * Pure translations between infergate's Chat/Generate messages and the Gemini API
 * (gemini-wire.ts): the `generateContent` body, its answer, the events of
 * `streamGenerateContent?alt=sse`, finish reasons, usage, and Google's error bodies. No I/O: the
 * client in gemini-upstream.ts sends what these build and feeds back what arrives.
 * docs/upstream-gemini.md has the mapping tables; every request field either maps or is refused
 * here with INVALID_ARGUMENT naming it, never silently dropped.
 */
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
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
import type { StreamTranslator } from "../http/event-stream.js";
import { badResponse, snippet, UpstreamFailure } from "../http/http-errors.js";
import { isObject, safeJson } from "../json-value.js";
import { parseDataUrl, toolArgumentsObject } from "../message-parts.js";
import { tokenCount, usageFromCounts } from "../usage.js";
import type { Content, GenerateContentRequest, GenerationConfig, Part, SafetySetting, ToolConfig, UsageMetadata } from "./gemini-wire.js";

/** What a request needs beyond the caller's message: the model's options from config. */
export interface RequestContext {
  /** Safety settings sent with every request of the model. */
  readonly safetySettings: readonly SafetySetting[];
  /** maxOutputTokens when the request leaves max_tokens unset. */
  readonly defaultMaxTokens: number | undefined;
  /** thinkingConfig.thinkingBudget, when the model's options set one. */
  readonly thinkingBudget: number | undefined;
  /** The cached content (`cachedContents/…`) every request of the model continues. */
  readonly cachedContent: string | undefined;
  /**
   * Whether a model turn whose function calls carry no thought signature gets Google's sentinel
   * `skip_thought_signature_validator` on its first call (Gemini 3 refuses such a turn otherwise).
   */
  readonly skipThoughtSignatureValidator: boolean;
  /**
   * Whether functionCall / functionResponse parts carry the `id` Gemini gave the call (default
   * true). Google AI issues and takes these ids; Vertex AI issues none, so its requests send none.
   */
  readonly sendCallIds?: boolean;
}

/** The image types Gemini takes, by file extension, for file URIs (fileData needs a MIME type). */
const imageTypeByExtension: Readonly<Record<string, string>> = {
  png: "image/png",
  jpg: "image/jpeg",
  jpeg: "image/jpeg",
  webp: "image/webp",
  heic: "image/heic",
  heif: "image/heif",
  gif: "image/gif",
};

/**
 * Builds the body of `…:generateContent` (and of `…:streamGenerateContent`, the same). Throws
 * INVALID_ARGUMENT naming the field for anything Gemini cannot carry. `metadata`, `cache_policy`
 * and `session_id` are the gateway's and never reach an upstream.
 */
export function toGenerateContentRequest(req: ChatInput, ctx: RequestContext): GenerateContentRequest {
  const { system, contents } = translateMessages(req, ctx.skipThoughtSignatureValidator, ctx.sendCallIds ?? true);
  const body: GenerateContentRequest = { contents };
  if (system.length > 0) body.systemInstruction = { parts: system };
  if (req.tools.length > 0) {
    body.tools = [
      {
        functionDeclarations: req.tools.map((t, i) => {
          if (t.strict === true) {
            throw invalidArgument(`tools[${i}].strict`, "Gemini has no strict function calling; leave it unset");
          }
          return {
            name: t.name,
            ...(t.description !== "" ? { description: t.description } : {}),
            ...(t.parameters !== undefined ? { parametersJsonSchema: t.parameters } : {}),
          };
        }),
      },
    ];
    const config = toolConfig(req);
    if (config !== undefined) body.toolConfig = config;
  }
  if (req.parallelToolCalls === false) {
    throw invalidArgument("parallel_tool_calls", "Gemini cannot be told to call one function at most; leave it unset");
  }
  if (ctx.safetySettings.length > 0) body.safetySettings = ctx.safetySettings.map((s) => ({ ...s }));
  const generation = generationConfig(req, ctx);
  if (Object.keys(generation).length > 0) body.generationConfig = generation;
  if (ctx.cachedContent !== undefined) body.cachedContent = ctx.cachedContent;
  return body;
}

function generationConfig(req: ChatInput, ctx: RequestContext): GenerationConfig {
  const g: GenerationConfig = {};
  if (req.temperature !== undefined) g.temperature = req.temperature;
  if (req.topP !== undefined) g.topP = req.topP;
  if (req.topK !== undefined) g.topK = req.topK;
  const max = req.maxTokens ?? ctx.defaultMaxTokens;
  if (max !== undefined) g.maxOutputTokens = max;
  if (req.stop.length > 0) g.stopSequences = [...req.stop];
  if (req.seed !== undefined) {
    // Gemini's seed is an int32.
    if (req.seed < -(2n ** 31n) || req.seed > 2n ** 31n - 1n) {
      throw invalidArgument("seed", "Gemini takes a 32-bit seed (-2147483648 to 2147483647)");
    }
    g.seed = Number(req.seed);
  }
  if (req.presencePenalty !== undefined) g.presencePenalty = req.presencePenalty;
  if (req.frequencyPenalty !== undefined) g.frequencyPenalty = req.frequencyPenalty;
  const format = req.responseFormat;
  if (format !== undefined) {
    switch (format.type) {
      case ResponseFormatType.UNSPECIFIED:
      case ResponseFormatType.TEXT:
        break;
      case ResponseFormatType.JSON_OBJECT:
        g.responseMimeType = "application/json";
        break;
      case ResponseFormatType.JSON_SCHEMA: {
        const js = format.jsonSchema;
        if (js?.schema === undefined) throw invalidArgument("response_format.json_schema.schema", "required");
        if (js.description !== "") {
          throw invalidArgument("response_format.json_schema.description", "Gemini's response schema has no description; put it in a system message");
        }
        // Gemini always holds the answer to the schema, which satisfies strict and non-strict
        // requests alike; `name` is an identifier only and has no counterpart.
        g.responseMimeType = "application/json";
        g.responseJsonSchema = js.schema;
        break;
      }
      default:
        throw invalidArgument("response_format.type", `unknown value ${format.type}`);
    }
  }
  if (ctx.thinkingBudget !== undefined) g.thinkingConfig = { thinkingBudget: ctx.thinkingBudget };
  return g;
}

/**
 * SYSTEM and DEVELOPER messages become `systemInstruction` (text parts, in order); USER turns are
 * "user", ASSISTANT turns "model" (text parts, then one functionCall part per tool call); TOOL
 * messages become functionResponse parts of a "user" turn, consecutive ones sharing one turn, each
 * named after the call it answers (found by tool_call_id among the assistant's earlier calls).
 * Gemini pairs a turn's function responses with the preceding model turn's calls by position
 * unless they carry ids, so the responses of one turn go in the order of those calls (by
 * tool_call_id), whatever order the client answered them in; and a call whose id Gemini gave
 * (see callId) carries it on its functionCall and functionResponse parts.
 */
function translateMessages(req: ChatInput, skipValidator: boolean, sendIds: boolean): { system: Part[]; contents: Content[] } {
  const system: Part[] = [];
  const contents: Content[] = [];
  const callNames = new Map<string, string>();
  /** The position of each call of the latest model turn, by tool call id. */
  let callOrder = new Map<string, number>();
  let toolTurn: Content | undefined;
  /** The position (in callOrder) of the call each part of toolTurn answers. */
  let toolRanks: number[] = [];
  req.messages.forEach((m, i) => {
    const at = `messages[${i}]`;
    if (m.name !== "") throw invalidArgument(`${at}.name`, "Gemini has no author names in messages");
    switch (m.role) {
      case Role.SYSTEM:
      case Role.DEVELOPER:
        m.content.forEach((p, j) => {
          if (p.part.case !== "text") throw invalidArgument(`${at}.content[${j}]`, "Gemini's system instruction takes text only");
          system.push({ text: p.part.value });
        });
        return;
      case Role.USER:
        contents.push({ role: "user", parts: m.content.map((p, j) => contentPart(p, `${at}.content[${j}]`)) });
        toolTurn = undefined;
        return;
      case Role.ASSISTANT: {
        const parts = m.content.map((p, j) => contentPart(p, `${at}.content[${j}]`));
        callOrder = new Map();
        const calls: Part[] = m.toolCalls.map((c, j) => {
          callNames.set(c.id, c.name);
          if (!callOrder.has(c.id)) callOrder.set(c.id, j);
          const signature = thoughtSignatureOf(c.id);
          const id = sendIds ? geminiCallIdOf(c.id) : undefined;
          return {
            functionCall: { ...(id === undefined ? {} : { id }), name: c.name, args: toolArgumentsObject(c, `${at}.tool_calls[${j}]`, "Gemini") },
            ...(signature === undefined ? {} : { thoughtSignature: signature }),
          };
        });
        if (skipValidator && calls.length > 0 && calls.every((c) => c.thoughtSignature === undefined)) {
          calls[0]!.thoughtSignature = skipThoughtSignature;
        }
        parts.push(...calls);
        if (parts.length === 0) throw invalidArgument(`${at}.content`, "Gemini needs at least one part in a model turn");
        contents.push({ role: "model", parts });
        toolTurn = undefined;
        return;
      }
      case Role.TOOL: {
        const name = callNames.get(m.toolCallId);
        if (name === undefined) {
          throw invalidArgument(`${at}.tool_call_id`, `no earlier assistant tool call has the id "${echoed(m.toolCallId)}" (Gemini needs the function's name)`);
        }
        const text = m.content.map((p, j) => {
          if (p.part.case !== "text") throw invalidArgument(`${at}.content[${j}]`, "Gemini takes a function's result as text (JSON) only");
          return p.part.value;
        });
        if (toolTurn === undefined) {
          toolTurn = { role: "user", parts: [] };
          toolRanks = [];
          contents.push(toolTurn);
        }
        const id = sendIds ? geminiCallIdOf(m.toolCallId) : undefined;
        // Inserted after every response to an earlier call (answers to calls of older turns last).
        const rank = callOrder.get(m.toolCallId) ?? Number.MAX_SAFE_INTEGER;
        let k = toolRanks.length;
        while (k > 0 && toolRanks[k - 1]! > rank) k--;
        toolRanks.splice(k, 0, rank);
        toolTurn.parts.splice(k, 0, { functionResponse: { ...(id === undefined ? {} : { id }), name, response: functionResponse(text.join("")) } });
        return;
      }
      default:
        throw invalidArgument(`${at}.role`, "required (one of the ROLE_* values)");
    }
  });
  if (contents.length === 0) {
    throw invalidArgument("messages", "Gemini needs at least one user or assistant message besides system messages");
  }
  return { system, contents };
}

/**
 * A function's result as Gemini's `response` object: a JSON object as it is; anything else (other
 * JSON, plain text) under `output`, the key the API documents for a function's output.
 */
function functionResponse(text: string): Record<string, unknown> {
  try {
    const parsed: unknown = JSON.parse(text);
    return isObject(parsed) ? parsed : { output: parsed };
  } catch {
    return { output: text };
  }
}

function contentPart(p: ContentPart, at: string): Part {
  switch (p.part.case) {
    case "text":
      return { text: p.part.value };
    case "imageData": {
      const img = p.part.value;
      checkDetail(img.detail, `${at}.image_data.detail`);
      if (!/^image\/[a-z0-9.+-]+$/i.test(img.mimeType)) {
        throw invalidArgument(`${at}.image_data.mime_type`, `an image type is required (image/png, image/jpeg, …); got "${echoed(img.mimeType)}"`);
      }
      return { inlineData: { mimeType: img.mimeType.toLowerCase(), data: Buffer.from(img.data).toString("base64") } };
    }
    case "imageUrl": {
      const img = p.part.value;
      checkDetail(img.detail, `${at}.image_url.detail`);
      if (/^data:/i.test(img.url)) {
        const { mediaType, base64 } = parseDataUrl(img.url, `${at}.image_url.url`);
        if (!/^image\//i.test(mediaType)) throw invalidArgument(`${at}.image_url.url`, "a data: URL must be data:<image type>;base64,<data>");
        return { inlineData: { mimeType: mediaType.toLowerCase(), data: base64 } };
      }
      const ext = /\.([a-z0-9]+)(?:[?#].*)?$/i.exec(img.url)?.[1]?.toLowerCase();
      const mimeType = ext === undefined ? undefined : imageTypeByExtension[ext];
      if (mimeType === undefined) {
        throw invalidArgument(
          `${at}.image_url.url`,
          `Gemini needs a file URI's image type: the URL must end in ${Object.keys(imageTypeByExtension).map((e) => `.${e}`).join(", ")}, or send the bytes`,
        );
      }
      return { fileData: { mimeType, fileUri: img.url } };
    }
    default:
      throw invalidArgument(at, "empty part: set text, image_url or image_data");
  }
}

function checkDetail(detail: ImageDetail, field: string): void {
  if (detail !== ImageDetail.UNSPECIFIED) {
    throw invalidArgument(field, "Gemini has no per-image resolution setting; leave it unspecified");
  }
}

/**
 * tool_choice as `toolConfig.functionCallingConfig`: AUTO → AUTO, NONE → NONE, REQUIRED → ANY, a
 * function name → ANY limited to that function. Unset: none (Gemini's default is AUTO).
 */
function toolConfig(req: ChatInput): ToolConfig | undefined {
  const c = req.toolChoice?.choice;
  if (c?.case === "functionName") return { functionCallingConfig: { mode: "ANY", allowedFunctionNames: [c.value] } };
  if (c?.case === "mode") {
    switch (c.value) {
      case ToolChoiceMode.AUTO:
        return { functionCallingConfig: { mode: "AUTO" } };
      case ToolChoiceMode.NONE:
        return { functionCallingConfig: { mode: "NONE" } };
      case ToolChoiceMode.REQUIRED:
        return { functionCallingConfig: { mode: "ANY" } };
      default:
        return undefined;
    }
  }
  return undefined;
}

// --- answers ------------------------------------------------------------------------------------

/**
 * Gemini's finish reason as ours: STOP is STOP (TOOL_CALLS when the answer calls functions, as
 * Gemini says STOP then too), MAX_TOKENS is LENGTH, the reasons that withhold content (SAFETY,
 * RECITATION, LANGUAGE, BLOCKLIST, PROHIBITED_CONTENT, SPII, IMAGE_SAFETY) are CONTENT_FILTER;
 * the rest (OTHER, MALFORMED_FUNCTION_CALL, UNEXPECTED_TOOL_CALL, TOO_MANY_TOOL_CALLS, unknown
 * values) UNSPECIFIED.
 */
export function finishReasonOf(reason: unknown, calledFunctions: boolean): FinishReason {
  switch (reason) {
    case "STOP":
      return calledFunctions ? FinishReason.TOOL_CALLS : FinishReason.STOP;
    case "MAX_TOKENS":
      return FinishReason.LENGTH;
    case "SAFETY":
    case "RECITATION":
    case "LANGUAGE":
    case "BLOCKLIST":
    case "PROHIBITED_CONTENT":
    case "SPII":
    case "IMAGE_SAFETY":
      return FinishReason.CONTENT_FILTER;
    default:
      return FinishReason.UNSPECIFIED;
  }
}

/**
 * Token counts: the prompt is `promptTokenCount` (cached content included, of which
 * `cachedContentTokenCount` are the cached prompt tokens) plus `toolUsePromptTokenCount`; the
 * completion is `candidatesTokenCount` plus `thoughtsTokenCount` (Gemini counts thinking apart from
 * the candidates), of which the thoughts are the reasoning tokens.
 */
export function usageOf(u: UsageMetadata): Usage {
  const thoughts = tokenCount(u.thoughtsTokenCount);
  return usageFromCounts({
    prompt: tokenCount(u.promptTokenCount) + tokenCount(u.toolUsePromptTokenCount),
    completion: tokenCount(u.candidatesTokenCount) + thoughts,
    cachedPrompt: tokenCount(u.cachedContentTokenCount),
    reasoning: thoughts,
  });
}

/** What one answer (or stream chunk) holds, read and checked. */
interface Chunk {
  readonly id: string;
  readonly text: string[];
  readonly calls: { id: string | undefined; name: string; args: string; signature: string | undefined }[];
  /** The candidate's finishReason, or the prompt's blockReason (as "SAFETY"-like content filter). */
  readonly finish: unknown;
  readonly blocked: boolean;
  readonly usage: UsageMetadata | undefined;
}

/** Reads one GenerateContentResponse; throws UPSTREAM_BAD_RESPONSE for a malformed one, the upstream's error for an error body. */
function readChunk(upstream: string, body: unknown, data: () => string | undefined): Chunk {
  const bad = (problem: string): GatewayError => badResponse(upstream, problem, data());
  if (!isObject(body)) throw bad("the answer is not a JSON object");
  // An error body in a 200 answer (not expected of Google; seen from proxies): as a stream's error.
  if (isObject(body["error"])) throw streamError(upstream, body["error"], data() ?? "");
  const candidates = body["candidates"];
  if (candidates !== undefined && !Array.isArray(candidates)) throw bad("candidates is not an array");
  const usage = body["usageMetadata"];
  if (usage !== undefined && !isObject(usage)) throw bad("usageMetadata is not an object");
  const id = typeof body["responseId"] === "string" ? body["responseId"] : "";
  const text: string[] = [];
  const calls: Chunk["calls"] = [];
  const first = (candidates as unknown[] | undefined)?.[0];
  if (first === undefined) {
    const feedback = body["promptFeedback"];
    const blockReason = isObject(feedback) ? feedback["blockReason"] : undefined;
    return { id, text, calls, finish: blockReason, blocked: blockReason !== undefined, usage: usage as UsageMetadata | undefined };
  }
  if (!isObject(first)) throw bad("a candidate is not an object");
  const content = first["content"];
  if (content !== undefined && !isObject(content)) throw bad("a candidate's content is not an object");
  const parts = isObject(content) ? content["parts"] : undefined;
  if (parts !== undefined && !Array.isArray(parts)) throw bad("a candidate's parts is not an array");
  for (const p of (parts as unknown[] | undefined) ?? []) {
    if (!isObject(p)) throw bad("a part is not an object");
    if (typeof p["text"] === "string") {
      // Thought summaries are the model's thinking, not its answer.
      if (p["thought"] !== true && p["text"] !== "") text.push(p["text"]);
    } else if (p["functionCall"] !== undefined) {
      const fc = p["functionCall"];
      if (!isObject(fc) || typeof fc["name"] !== "string" || (fc["args"] !== undefined && !isObject(fc["args"]))) {
        throw bad("a functionCall part lacks its name or has arguments that are not an object");
      }
      calls.push({
        id: typeof fc["id"] === "string" && fc["id"] !== "" ? fc["id"] : undefined,
        name: fc["name"],
        args: JSON.stringify(fc["args"] ?? {}),
        signature: typeof p["thoughtSignature"] === "string" && p["thoughtSignature"] !== "" ? p["thoughtSignature"] : undefined,
      });
    }
    // Other parts (executable code, inline data the model made) are never asked for.
  }
  return { id, text, calls, finish: first["finishReason"], blocked: false, usage: usage as UsageMetadata | undefined };
}

/** Google's sentinel for a function call whose thought signature is lost (Gemini API docs, "Thought signatures"). */
const skipThoughtSignature = "skip_thought_signature_validator";

/** What joins a tool call's id and the thought signature it carries. */
const signatureMark = "__ts_";

/**
 * A tool call's id: Gemini's own when it gave one, else `call_<n>` by position in the answer; and
 * when the call carries a thought signature (Gemini's thinking models put one on the first call of
 * a turn and need it back with the call), `__ts_` and the signature in base64url. infergate's
 * messages have no field for it, so it travels in the id, which every client sends back with the
 * call (only letters, digits, `_` and `-`, which any client's id rules allow).
 */
function callId(id: string | undefined, position: number, signature: string | undefined): string {
  const base = id ?? `call_${position}`;
  return signature === undefined ? base : `${base}${signatureMark}${Buffer.from(signature, "base64").toString("base64url")}`;
}

/**
 * The id Gemini gave a call, from the tool call id callId made of it: without the thought
 * signature; undefined for the gateway's own `call_<n>` (Gemini gave none).
 */
export function geminiCallIdOf(id: string): string | undefined {
  const at = id.indexOf(signatureMark);
  const base = at < 0 ? id : id.slice(0, at);
  return base === "" || /^call_\d+$/.test(base) ? undefined : base;
}

/** The thought signature a tool call's id carries (see callId), in base64 as Gemini sent it. */
export function thoughtSignatureOf(id: string): string | undefined {
  const at = id.indexOf(signatureMark);
  if (at < 0) return undefined;
  const encoded = id.slice(at + signatureMark.length);
  return /^[A-Za-z0-9_-]+$/.test(encoded) ? Buffer.from(encoded, "base64url").toString("base64") : undefined;
}

/**
 * Reads the answer of `…:generateContent`: the first candidate's text parts joined into one text
 * part (thoughts left out), its functionCall parts as tool calls (arguments = args as JSON). A
 * prompt blocked before any candidate (`promptFeedback.blockReason`) is an empty answer with
 * CONTENT_FILTER. Throws UNAVAILABLE UPSTREAM_BAD_RESPONSE for a malformed answer.
 */
export function fromGenerateContentResponse(upstream: string, body: unknown): ChatResponse {
  const c = readChunk(upstream, body, () => safeJson(body));
  const text = c.text.join("");
  return create(ChatResponseSchema, {
    id: c.id,
    message: create(MessageSchema, {
      role: Role.ASSISTANT,
      content: text === "" ? [] : [{ part: { case: "text", value: text } }],
      toolCalls: c.calls.map((call, i) => create(ToolCallSchema, { id: callId(call.id, i, call.signature), name: call.name, arguments: call.args })),
    }),
    finishReason: c.blocked ? FinishReason.CONTENT_FILTER : finishReasonOf(c.finish, c.calls.length > 0),
    usage: usageOf(c.usage ?? {}),
  });
}

/**
 * Makes the translator of one `streamGenerateContent?alt=sse` stream: every `data:` event is a
 * whole GenerateContentResponse holding the next piece of the answer. Text parts become text
 * deltas; a functionCall part arrives whole and becomes one tool-call delta with its id, name and
 * all its arguments. The chunk with the candidate's finishReason (or a prompt's blockReason) ends
 * the answer: its usageMetadata, else the last one seen, is the final event's. Gemini sends no
 * terminator after it: a body that ends without a finish reason was cut off (STREAM_TRUNCATED).
 * An `{"error": …}` event is the upstream giving up mid-answer.
 */
export function createStreamTranslator(upstream: string): StreamTranslator {
  let finished = false;
  let id = "";
  let usage: UsageMetadata | undefined;
  let calls = 0;
  return {
    get done() {
      return finished;
    },
    push(ev) {
      if (finished) return [];
      let body: unknown;
      try {
        body = JSON.parse(ev.data);
      } catch {
        throw badResponse(upstream, "malformed JSON in an event", ev.data);
      }
      const c = readChunk(upstream, body, () => ev.data);
      if (c.id !== "") id = c.id;
      if (c.usage !== undefined) usage = c.usage;
      const out: GenerateResponse[] = [];
      for (const t of c.text) out.push(create(GenerateResponseSchema, { event: { case: "textDelta", value: t } }));
      for (const call of c.calls) {
        const index = calls++;
        out.push(
          create(GenerateResponseSchema, {
            event: { case: "toolCallDelta", value: { index, id: callId(call.id, index, call.signature), name: call.name, arguments: call.args } },
          }),
        );
      }
      if (c.blocked || (c.finish !== undefined && c.finish !== null && c.finish !== "FINISH_REASON_UNSPECIFIED")) {
        finished = true;
        const finishReason = c.blocked ? FinishReason.CONTENT_FILTER : finishReasonOf(c.finish, calls > 0);
        out.push(create(GenerateResponseSchema, { event: { case: "final", value: { id, finishReason, usage: usageOf(usage ?? {}) } } }));
      }
      return out;
    },
    end() {
      if (!finished) {
        throw new GatewayError(Code.Unavailable, `upstream "${upstream}" ended the stream before a finish reason`, {
          reason: Reason.StreamTruncated,
          metadata: { upstream },
        });
      }
    },
  };
}

/** Google's error `status` (a google.rpc.Code name) when it is one, else "UNKNOWN". */
function statusName(err: Record<string, unknown>): string {
  const s = err["status"];
  return typeof s === "string" && /^[A-Z_]{1,40}$/.test(s) ? s : "UNKNOWN";
}

/**
 * An `{"error": …}` event after HTTP 200: the upstream gave up mid-answer. UNAVAILABLE, the
 * client seeing Google's status name; the upstream's message goes to the log only.
 */
function streamError(upstream: string, err: Record<string, unknown>, data: string): GatewayError {
  const s = statusName(err);
  return new GatewayError(Code.Unavailable, `upstream "${upstream}" failed during the stream (${s})`, {
    reason: Reason.UpstreamUnavailable,
    metadata: { upstream, upstream_error: s },
    cause: new UpstreamFailure(`upstream ${upstream} sent an error event: ${s}`, 200, snippet(data)),
  });
}

/**
 * The delay Google's `google.rpc.RetryInfo` detail asks for (`"retryDelay": "37s"` or
 * `"1.5s"`), in milliseconds, from an error body as text (whole or cut: it is searched, not
 * parsed). Undefined when there is none.
 */
export function retryDelayOf(body: string): number | undefined {
  const m = /"retryDelay"\s*:\s*"(\d{1,9})(?:\.(\d{1,9}))?s"/.exec(body);
  if (m === null) return undefined;
  return Number(m[1]) * 1000 + Math.round(Number(`0.${m[2] ?? "0"}`) * 1000);
}

/** Whether a Google error body says the API key is not valid (HTTP 400 `API_KEY_INVALID`). */
export function isInvalidApiKey(body: string): boolean {
  return /"reason"\s*:\s*"API_KEY_INVALID"/.test(body);
}
