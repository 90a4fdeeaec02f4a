import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { createHash } from "node:crypto";
import { z } from "zod";
import {
  FinishReason,
  MessageSchema,
  ResponseFormatType,
  Role,
  ToolChoiceMode,
  UsageSchema,
  type Usage,
} from "../../../gen/infergate/v1/chat_pb.js";
import {
  type ChatResponse,
  ChatResponseSchema,
  type EmbedResponse,
  type GenerateResponse,
  GenerateResponseSchema,
  ModelState,
  type PredictRequest,
  type PredictResponse,
  PredictResponseSchema,
} from "../../../gen/infergate/v1/inference_service_pb.js";
import { Code } from "@connectrpc/connect";
import { GatewayError, grpcCodeNames, invalidArgument, Reason } from "../../core/gateway-error.js";
import type { UpstreamConfig } from "../../config/schema.js";
import type { ChatInput, TokenCount, Upstream, UpstreamCall, UpstreamKind } from "../../core/upstream.js";
import { mockEmbed } from "./mock-embed.js";
import { mockPredict } from "./mock-predict.js";

const codeName = z.enum(Object.keys(grpcCodeNames) as [string, ...string[]], {
  error: `a gRPC code name: ${Object.keys(grpcCodeNames).join(", ")}`,
});

/** Options of a `mock` upstream in config; each can be overridden per request (see below). */
export const mockOptionsSchema = z.strictObject({
  /** Delay before each streamed token, in milliseconds. */
  tokenDelayMs: z.number().int().nonnegative().max(60_000).default(0),
  /** Fail every call with this gRPC code before any token (e.g. UNAVAILABLE). */
  failCode: codeName.optional(),
  /** Cut every stream off after this many tokens, as an upstream that drops the connection. */
  cutAfterTokens: z.number().int().nonnegative().optional(),
});
export type MockOptions = z.infer<typeof mockOptionsSchema>;

/**
 * Request metadata keys that override the options for one call, so that tests and demos can show
 * faults through any client. They mean something to the mock kind only.
 */
export const mockMetadataKeys = {
  tokenDelayMs: "mock.token_delay_ms",
  failCode: "mock.fail_code",
  cutAfterTokens: "mock.cut_after_tokens",
} as const;

/** The `mock` kind: in process, deterministic, every capability. */
export const mockKind: UpstreamKind<MockOptions> = {
  capabilities: ["predict", "chat", "generate", "embed"],
  needsEndpoints: false,
  optionsSchema: mockOptionsSchema,
  create: (config, options) => createMockUpstream(config, options),
};

/**
 * A deterministic model for demos and tests: the same request always gets the same answer.
 *
 * Chat/Generate: the answer is `You said: <text of the last user message>` (or a JSON object
 * `{"reply": …}` when a JSON response format is asked for), streamed one word (with its leading
 * white space) per event. It calls a tool instead when tool_choice demands one, or when tools are
 * given and the last message, from the user, names one: arguments `{"text": …}`, streamed in two fragments.
 * max_tokens cuts the answer (finish LENGTH) and a stop sequence ends it before the sequence
 * (finish STOP, `stop_sequence` the sequence). `top_k` is refused (INVALID_ARGUMENT), as by every
 * kind that has no top-k sampling. Usage counts words: prompt = words and images of all messages, completion =
 * events emitted.
 *
 * Predict: see mock-predict.ts. Embed: see mock-embed.ts.
 */
export function createMockUpstream(config: Pick<UpstreamConfig, "name">, options: MockOptions): Upstream {
  async function* generate(call: UpstreamCall<ChatInput>): AsyncGenerator<GenerateResponse> {
    const opts = effectiveOptions(options, call.request.metadata);
    const plan = planAnswer(call.request);
    if (opts.failCode !== undefined) {
      throw injectedFailure(opts.failCode);
    }
    let emitted = 0;
    for (const event of plan.events) {
      if (opts.cutAfterTokens !== undefined && emitted >= opts.cutAfterTokens) {
        throw new GatewayError(Code.Unavailable, "upstream stream ended before its final event", {
          reason: Reason.StreamTruncated,
          metadata: { upstream: config.name },
        });
      }
      if (opts.tokenDelayMs > 0) {
        await sleep(opts.tokenDelayMs, undefined, { signal: call.signal });
      }
      call.signal.throwIfAborted();
      emitted++;
      yield event;
    }
    yield create(GenerateResponseSchema, {
      event: {
        case: "final",
        value: { id: plan.id, finishReason: plan.finishReason, stopSequence: plan.stopSequence ?? "", usage: plan.usage },
      },
    });
  }

  return {
    name: config.name,
    kind: "mock",
    generate,
    async chat(call): Promise<ChatResponse> {
      // Chat is the joined stream, so Chat and Generate agree by construction.
      const opts = effectiveOptions(options, call.request.metadata);
      const plan = planAnswer(call.request);
      if (opts.failCode !== undefined) {
        throw injectedFailure(opts.failCode);
      }
      call.signal.throwIfAborted();
      return create(ChatResponseSchema, {
        id: plan.id,
        message: create(MessageSchema, {
          role: Role.ASSISTANT,
          content: plan.text === "" ? [] : [{ part: { case: "text", value: plan.text } }],
          toolCalls: plan.toolCall === undefined ? [] : [plan.toolCall],
        }),
        finishReason: plan.finishReason,
        stopSequence: plan.stopSequence ?? "",
        usage: plan.usage,
      });
    },
    async countTokens(call): Promise<TokenCount> {
      const opts = effectiveOptions(options, call.request.metadata);
      if (opts.failCode !== undefined) {
        throw injectedFailure(opts.failCode);
      }
      call.signal.throwIfAborted();
      // The mock's own count, the one its answers report: exact for the mock.
      return { inputTokens: promptTokensOf(call.request) };
    },
    async predict(call: UpstreamCall<PredictRequest>): Promise<PredictResponse> {
      const opts = effectiveOptions(options, call.request.metadata);
      if (opts.failCode !== undefined) {
        throw injectedFailure(opts.failCode);
      }
      call.signal.throwIfAborted();
      return create(PredictResponseSchema, { outputs: mockPredict(call.request) });
    },
    async embed(call): Promise<EmbedResponse> {
      const opts = effectiveOptions(options, call.request.metadata);
      if (opts.failCode !== undefined) {
        throw injectedFailure(opts.failCode);
      }
      call.signal.throwIfAborted();
      return mockEmbed(call.request);
    },
    modelState: () => ModelState.READY,
    async close() {},
  };
}

function injectedFailure(name: string): GatewayError {
  const code = grpcCodeNames[name] ?? Code.Unavailable;
  return new GatewayError(code, `mock upstream: injected ${name}`, {
    reason: code === Code.Unavailable ? Reason.UpstreamUnavailable : Reason.UpstreamError,
  });
}

function effectiveOptions(base: MockOptions, metadata: Record<string, string>): MockOptions {
  const out = { ...base };
  const delay = metadata[mockMetadataKeys.tokenDelayMs];
  if (delay !== undefined) {
    out.tokenDelayMs = metadataInt(mockMetadataKeys.tokenDelayMs, delay, 60_000);
  }
  const cut = metadata[mockMetadataKeys.cutAfterTokens];
  if (cut !== undefined) {
    out.cutAfterTokens = metadataInt(mockMetadataKeys.cutAfterTokens, cut, 1_000_000);
  }
  const fail = metadata[mockMetadataKeys.failCode];
  if (fail !== undefined) {
    if (grpcCodeNames[fail] === undefined) {
      throw invalidArgument(`metadata["${mockMetadataKeys.failCode}"]`, "not a gRPC code name such as UNAVAILABLE");
    }
    out.failCode = fail;
  }
  return out;
}

function metadataInt(key: string, value: string, max: number): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n > max) {
    throw invalidArgument(`metadata["${key}"]`, `not a whole number from 0 to ${max}`);
  }
  return n;
}

interface AnswerPlan {
  id: string;
  text: string;
  toolCall: { id: string; name: string; arguments: string } | undefined;
  /** Made as they are read (only a stream reads them): one per word of a long answer. */
  events: Iterable<GenerateResponse>;
  finishReason: FinishReason;
  /** The stop sequence that ended the answer; empty when none did. */
  stopSequence?: string;
  usage: Usage;
}

/** Whether a UTF-16 code unit is white space as the regular expression class \s has it. */
function isSpace(c: number): boolean {
  return c === 0x20 || (c >= 0x09 && c <= 0x0d) || (c >= 0xa0 && (c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) || c === 0x2028 || c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000 || c === 0xfeff));
}

/**
 * The words of `s` (runs of non-white-space, each a match of /\s*\S+/g with the white space before
 * it), at most `max` of them: how many, and where the last one counted ends. Counted without an
 * array or a string per word (a 3 MB prompt has a million words).
 */
function wordsIn(s: string, max = Infinity): { count: number; end: number } {
  let count = 0;
  let end = 0;
  let inWord = false;
  for (let i = 0; i < s.length; i++) {
    const space = isSpace(s.charCodeAt(i));
    if (!space) {
      if (!inWord) {
        if (count === max) break;
        count++;
      }
      end = i + 1;
    }
    inWord = !space;
  }
  return { count, end };
}

/** One text delta per word of `text`, each with the white space before it. */
function* textEvents(text: string): Generator<GenerateResponse> {
  for (const [word] of text.matchAll(/\s*\S+/g)) yield create(GenerateResponseSchema, { event: { case: "textDelta", value: word } });
}

function planAnswer(req: ChatInput): AnswerPlan {
  if (req.topK !== undefined) {
    // The mock does not sample; refused as every kind without top-k refuses it (docs/anthropic-ingress.md).
    throw invalidArgument("top_k", "the mock upstream has no top-k sampling");
  }
  const promptTokens = promptTokensOf(req);
  let lastUserText = "";
  for (const m of req.messages) {
    if (m.role === Role.USER) {
      lastUserText = m.content.flatMap((p) => (p.part.case === "text" ? [p.part.value] : [])).join(" ");
    }
  }
  const id = `mock-${createHash("sha256").update(JSON.stringify([req.messages.length, lastUserText, req.tools.map((t) => t.name)])).digest("hex").slice(0, 16)}`;

  const lastIsUser = req.messages.at(-1)?.role === Role.USER;
  const tool = chooseTool(req, lastIsUser ? lastUserText : "");
  if (tool !== undefined) {
    const args = JSON.stringify({ text: lastUserText });
    const half = Math.ceil(args.length / 2);
    const fragments = [args.slice(0, half), args.slice(half)];
    const callId = `call_${id.slice(5, 17)}`;
    const events = fragments.map((f, i) =>
      create(GenerateResponseSchema, {
        event: {
          case: "toolCallDelta",
          value: i === 0 ? { index: 0, id: callId, name: tool, arguments: f } : { index: 0, arguments: f },
        },
      }),
    );
    return {
      id,
      text: "",
      toolCall: { id: callId, name: tool, arguments: args },
      events,
      finishReason: FinishReason.TOOL_CALLS,
      usage: usage(promptTokens, events.length),
    };
  }

  const reply = `You said: ${lastUserText === "" ? "(nothing)" : lastUserText}`;
  const json = req.responseFormat !== undefined && req.responseFormat.type !== ResponseFormatType.TEXT &&
    req.responseFormat.type !== ResponseFormatType.UNSPECIFIED;
  let text = json ? JSON.stringify({ reply }) : reply;
  let finishReason = FinishReason.STOP;
  // The sequence that ended the answer: the last one that cut it (each cuts what is left).
  let stopSequence = "";
  for (const s of req.stop) {
    const at = text.indexOf(s);
    if (at >= 0) {
      text = text.slice(0, at);
      stopSequence = s;
    }
  }
  let words = wordsIn(text);
  if (req.maxTokens !== undefined && words.count > req.maxTokens) {
    words = wordsIn(text, req.maxTokens);
    finishReason = FinishReason.LENGTH;
    stopSequence = "";
  }
  // The words joined: the text up to the end of the last word kept.
  const answer = text.slice(0, words.end);
  return {
    id,
    text: answer,
    toolCall: undefined,
    events: { [Symbol.iterator]: () => textEvents(answer) },
    finishReason,
    stopSequence,
    usage: usage(promptTokens, words.count),
  };
}

/**
 * The mock's prompt tokens (its answers' usage.prompt_tokens, and its exact count_tokens): a token
 * per word of text, one per other content part (an image), and per tool call one plus the words of
 * its arguments.
 */
function promptTokensOf(req: ChatInput): number {
  let n = 0;
  for (const m of req.messages) {
    for (const p of m.content) n += p.part.case === "text" ? wordsIn(p.part.value).count : 1;
    for (const c of m.toolCalls) n += wordsIn(c.arguments).count + 1;
  }
  return n;
}

function chooseTool(req: ChatInput, lastUserText: string): string | undefined {
  const choice = req.toolChoice?.choice;
  if (choice?.case === "functionName") {
    return choice.value;
  }
  if (req.tools.length === 0 || (choice?.case === "mode" && choice.value === ToolChoiceMode.NONE)) {
    return undefined;
  }
  // Only a fresh user turn can name a tool; after a tool result the model answers in text.
  const named = lastUserText === "" ? undefined : req.tools.find((t) => lastUserText.includes(t.name));
  if (named !== undefined) {
    return named.name;
  }
  return choice?.case === "mode" && choice.value === ToolChoiceMode.REQUIRED ? req.tools[0]?.name : undefined;
}

function usage(prompt: number, completion: number): Usage {
  return create(UsageSchema, { promptTokens: prompt, completionTokens: completion, totalTokens: prompt + completion });
}
