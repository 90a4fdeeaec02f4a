/**
 * The part of the Anthropic Messages API (`POST /v1/messages`, `anthropic-version: 2023-06-01`)
 * that infergate speaks, as TypeScript types of its JSON. Names and shapes follow the public API
 * reference (https://docs.anthropic.com/en/api/messages) and the OpenAPI-generated official SDK
 * (anthropics/anthropic-sdk-typescript, src/resources/messages/messages.ts). Requests are typed
 * exactly; answers are typed as what the API promises, and the translators still check every field
 * they read, because an upstream that breaks its promise must fail cleanly, not crash.
 */

/** The request body of `POST /v1/messages`. */
export interface MessagesRequest {
  model: string;
  /** Required by the API (no server-side default). */
  max_tokens: number;
  messages: MessageParam[];
  /** The system prompt, as text blocks in order. */
  system?: TextBlockParam[];
  temperature?: number;
  top_p?: number;
  top_k?: number;
  stop_sequences?: string[];
  tools?: ToolParam[];
  tool_choice?: ToolChoiceParam;
  /** Structured outputs (GA): constrains the answer's text to a JSON Schema. */
  output_config?: { format: JsonOutputFormat };
  stream: boolean;
}

/**
 * The body of `POST /v1/messages/count_tokens`: the prompt part of a Messages request (the API
 * takes no sampling, output or stream settings there).
 */
export type CountTokensRequest = Pick<MessagesRequest, "model" | "messages" | "system" | "tools" | "tool_choice">;

/** The answer of `POST /v1/messages/count_tokens`. */
export interface CountTokensResponse {
  input_tokens: number;
}

/** One turn; the API allows consecutive turns of the same role and joins them itself. */
export interface MessageParam {
  role: "user" | "assistant";
  content: ContentBlockParam[];
}

export type ContentBlockParam = TextBlockParam | ImageBlockParam | ToolUseBlockParam | ToolResultBlockParam;

export interface TextBlockParam {
  type: "text";
  text: string;
  cache_control?: CacheControlParam;
}

/**
 * A prompt-caching breakpoint: the prompt up to and including the block it is on is cached
 * (`ttl` "5m", the default, or "1h").
 */
export interface CacheControlParam {
  type: "ephemeral";
  ttl?: "5m" | "1h";
}

/** Media types the API accepts for base64 image sources. */
export const anthropicImageMediaTypes = ["image/jpeg", "image/png", "image/gif", "image/webp"] as const;
export type AnthropicImageMediaType = (typeof anthropicImageMediaTypes)[number];

export interface ImageBlockParam {
  type: "image";
  source: Base64ImageSource | UrlImageSource;
  cache_control?: CacheControlParam;
}

export interface Base64ImageSource {
  type: "base64";
  media_type: AnthropicImageMediaType;
  data: string;
}

export interface UrlImageSource {
  type: "url";
  url: string;
}

/** A tool call the assistant made, sent back in later turns. `input` is a JSON object. */
export interface ToolUseBlockParam {
  type: "tool_use";
  id: string;
  name: string;
  input: Record<string, unknown>;
  cache_control?: CacheControlParam;
}

/** The result of a tool call; it goes in a `user` turn. */
export interface ToolResultBlockParam {
  type: "tool_result";
  tool_use_id: string;
  content: (TextBlockParam | ImageBlockParam)[];
}

export interface ToolParam {
  name: string;
  description?: string;
  /** A JSON Schema whose `type` is "object". */
  input_schema: Record<string, unknown>;
  /** Strict tool use (GA): the model's input is guaranteed to follow `input_schema`. */
  strict?: boolean;
  cache_control?: CacheControlParam;
}

export type ToolChoiceParam =
  | { type: "auto"; disable_parallel_tool_use?: boolean }
  | { type: "any"; disable_parallel_tool_use?: boolean }
  | { type: "tool"; name: string; disable_parallel_tool_use?: boolean }
  | { type: "none" };

export interface JsonOutputFormat {
  type: "json_schema";
  schema: Record<string, unknown>;
}

/** Why the model stopped. Newer API versions may add values; unknown ones are tolerated. */
export type StopReason =
  | "end_turn"
  | "max_tokens"
  | "stop_sequence"
  | "tool_use"
  | "pause_turn"
  | "refusal"
  | "model_context_window_exceeded";

/** Token counts. Total input = input_tokens + cache_creation_input_tokens + cache_read_input_tokens. */
export interface WireUsage {
  input_tokens?: number | null;
  output_tokens?: number | null;
  cache_creation_input_tokens?: number | null;
  cache_read_input_tokens?: number | null;
}

export interface TextBlock {
  type: "text";
  text: string;
}

export interface ToolUseBlock {
  type: "tool_use";
  id: string;
  name: string;
  input: unknown;
}

/** A block of an answer; other types (thinking, server tools) exist but are never asked for. */
export type ContentBlock = TextBlock | ToolUseBlock | { type: string };

/** The answer of a non-streaming request. */
export interface MessagesResponse {
  id: string;
  type: "message";
  role: "assistant";
  model: string;
  content: ContentBlock[];
  stop_reason: StopReason | null;
  stop_sequence: string | null;
  usage: WireUsage;
}

/** The JSON of an error, as an error status body or as an `error` stream event. */
export interface ErrorBody {
  type: "error";
  error: { type: string; message: string };
}

/** The `data` of each event of a streamed answer (its `type` repeats the SSE `event` name). */
export type StreamEvent =
  | { type: "message_start"; message: MessagesResponse }
  | { type: "content_block_start"; index: number; content_block: ContentBlock }
  | { type: "content_block_delta"; index: number; delta: ContentDelta }
  | { type: "content_block_stop"; index: number }
  | {
      type: "message_delta";
      delta: { stop_reason: StopReason | null; stop_sequence: string | null };
      /** Cumulative counts; input fields appear in newer API versions. */
      usage: WireUsage;
    }
  | { type: "message_stop" }
  | { type: "ping" }
  | ErrorBody;

/** A delta of a content block; other types (thinking, signature, citations) are never asked for. */
export type ContentDelta =
  | { type: "text_delta"; text: string }
  | { type: "input_json_delta"; partial_json: string }
  | { type: string };
