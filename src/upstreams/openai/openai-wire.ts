/**
 * The part of the OpenAI Chat Completions API (`POST /v1/chat/completions`) that infergate
 * speaks, as TypeScript types of its JSON. Names and shapes follow the public API reference
 * (https://platform.openai.com/docs/api-reference/chat) and the OpenAPI-generated official SDK
 * (openai/openai-node, src/resources/chat/completions/completions.ts). The same shapes are what
 * the "OpenAI-compatible" servers accept (vLLM, Ollama `/v1`, llama.cpp server, TGI's Messages
 * API, LM Studio, DeepSeek, Qwen/DashScope compatible mode) and Azure OpenAI under its deployment
 * path. Requests are typed exactly; answers are typed as what the API promises, and the
 * translators still check every field they read, because an upstream that breaks its promise
 * must fail cleanly, not crash.
 */

/** The request body of `POST /chat/completions`. */
export interface ChatCompletionRequest {
  /** The model; Azure OpenAI takes it from the deployment in the path, so it may be absent there. */
  model?: string;
  messages: ChatMessageParam[];
  temperature?: number;
  top_p?: number;
  /** The classic name of the output token limit; most compatible servers know only this one. */
  max_tokens?: number;
  /** The newer name, which OpenAI's reasoning models require instead of `max_tokens`. */
  max_completion_tokens?: number;
  seed?: number;
  presence_penalty?: number;
  frequency_penalty?: number;
  /** Up to 4 sequences (OpenAI also takes a single string). */
  stop?: string[];
  tools?: ToolParam[];
  tool_choice?: ToolChoiceParam;
  parallel_tool_calls?: boolean;
  response_format?: ResponseFormatParam;
  stream: boolean;
  /** Streams only: `include_usage` adds a last chunk with `choices: []` and the usage. */
  stream_options?: { include_usage: boolean };
}

/** The role of a system prompt: OpenAI's newer models also take `developer`, many servers do not. */
export type SystemRole = "system" | "developer";

export type ChatMessageParam = SystemMessageParam | UserMessageParam | AssistantMessageParam | ToolMessageParam;

export interface SystemMessageParam {
  role: SystemRole;
  content: string;
  name?: string;
}

/** Text-only content is a string; content with images is the array-of-parts form. */
export interface UserMessageParam {
  role: "user";
  content: string | ContentPartParam[];
  name?: string;
}

/** `content` is null when the message carries only tool calls. */
export interface AssistantMessageParam {
  role: "assistant";
  content: string | null;
  tool_calls?: ToolCallParam[];
  name?: string;
}

/** The result of a tool call (no `name`: the API has none on tool messages). */
export interface ToolMessageParam {
  role: "tool";
  tool_call_id: string;
  content: string;
}

export type ContentPartParam = TextPartParam | ImagePartParam;

export interface TextPartParam {
  type: "text";
  text: string;
}

/** `url` is an https: URL or a `data:<mime>;base64,<data>` URI. `detail` defaults to "auto". */
export interface ImagePartParam {
  type: "image_url";
  image_url: { url: string; detail?: "low" | "high" | "auto" };
}

/** A tool call of an earlier assistant turn; `arguments` is the JSON text as the model wrote it. */
export interface ToolCallParam {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

export interface ToolParam {
  type: "function";
  function: FunctionDefinition;
}

export interface FunctionDefinition {
  name: string;
  description?: string;
  /** A JSON Schema object; omitted means a function without parameters. */
  parameters?: Record<string, unknown>;
  /** Structured outputs: the model's arguments follow `parameters` exactly. */
  strict?: boolean;
}

export type ToolChoiceParam = "auto" | "none" | "required" | { type: "function"; function: { name: string } };

export type ResponseFormatParam =
  | { type: "text" }
  | { type: "json_object" }
  | { type: "json_schema"; json_schema: JsonSchemaParam };

export interface JsonSchemaParam {
  name: string;
  description?: string;
  schema: Record<string, unknown>;
  strict?: boolean;
}

/**
 * Why the model stopped. `function_call` is the deprecated form of `tool_calls`; TGI says
 * `eos_token` and `stop_sequence` where OpenAI says `stop`. Other values are tolerated.
 */
export type WireFinishReason =
  | "stop"
  | "length"
  | "tool_calls"
  | "content_filter"
  | "function_call"
  | "eos_token"
  | "stop_sequence";

/** Token counts (details such as cached or reasoning tokens are inside these totals). */
export interface WireUsage {
  prompt_tokens?: number | null;
  completion_tokens?: number | null;
  total_tokens?: number | null;
  /** Parts of prompt_tokens; OpenAI also sends `audio_tokens`, which we do not read. */
  prompt_tokens_details?: { cached_tokens?: number | null } | null;
  /** Parts of completion_tokens; OpenAI also sends audio and prediction counts, which we do not read. */
  completion_tokens_details?: { reasoning_tokens?: number | null } | null;
}

/** A tool call in an answer. */
export interface WireToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

/** The assistant message of a non-streaming answer. */
export interface WireMessage {
  role: "assistant";
  content: string | null;
  /** Set instead of content when the model refused (structured outputs). */
  refusal?: string | null;
  tool_calls?: WireToolCall[];
  /** The deprecated single function call. */
  function_call?: { name: string; arguments: string } | null;
}

/** The answer of a non-streaming request (`object: "chat.completion"`). */
export interface ChatCompletion {
  id: string;
  object: "chat.completion";
  created: number;
  model: string;
  choices: { index: number; message: WireMessage; finish_reason: WireFinishReason | null; logprobs?: null }[];
  usage?: WireUsage;
}

/** A piece of a tool call in a stream: the first carries id and name, later ones argument text. */
export interface ToolCallChunk {
  /** The call's position; some servers leave it out (see the stream translator). */
  index?: number;
  id?: string | null;
  type?: "function";
  function?: { name?: string | null; arguments?: string | null };
}

/** One event of a streamed answer (`object: "chat.completion.chunk"`), the `data` of an SSE event. */
export interface ChatCompletionChunk {
  id: string;
  object: "chat.completion.chunk";
  created: number;
  model: string;
  /** Empty in the usage chunk that `stream_options.include_usage` adds before `[DONE]`. */
  choices: {
    index: number;
    delta: {
      role?: "assistant";
      content?: string | null;
      refusal?: string | null;
      tool_calls?: ToolCallChunk[];
      function_call?: { name?: string | null; arguments?: string | null } | null;
    };
    finish_reason: WireFinishReason | null;
    /** Always null from infergate's ingress (log probabilities are not supported). */
    logprobs?: null;
  }[];
  /** null on every chunk but the usage chunk (with include_usage). */
  usage?: WireUsage | null;
}

/**
 * The JSON of an error: the body of an error status, and what some servers put in a 200 stream
 * (`data: {"error": …}`). vLLM puts the HTTP status it means in `code` as a number.
 */
export interface ErrorBody {
  error: { message: string; type?: string | null; param?: string | null; code?: string | number | null };
}

/** The `data` of the event that ends a successful stream. */
export const streamDoneData = "[DONE]";

/** One model of `GET /v1/models` (`object: "model"`). */
export interface ModelObject {
  id: string;
  object: "model";
  /** Unix seconds. */
  created: number;
  owned_by: string;
}

/** The answer of `GET /v1/models`. */
export interface ModelList {
  object: "list";
  data: ModelObject[];
}
