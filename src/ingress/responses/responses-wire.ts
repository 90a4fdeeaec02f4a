/**
 * The JSON shapes of OpenAI's Responses API (`POST /v1/responses` and its stream) that infergate
 * writes: the response object, its output items and its stream events. Only the fields infergate
 * sets; docs/responses-api.md says which request fields map where.
 */

/** The text of a message output item, as the API gives it (no annotations, no log probabilities). */
export interface OutputText {
  type: "output_text";
  text: string;
  annotations: never[];
  logprobs: never[];
}

/** An assistant message of the output. */
export interface OutputMessage {
  id: string;
  type: "message";
  status: "in_progress" | "completed" | "incomplete";
  role: "assistant";
  content: OutputText[];
}

/** A call of one of the request's function tools. */
export interface OutputFunctionCall {
  id: string;
  type: "function_call";
  status: "in_progress" | "completed" | "incomplete";
  call_id: string;
  name: string;
  arguments: string;
}

export type OutputItem = OutputMessage | OutputFunctionCall;

/** Token counts, with the details objects always present (0 where nothing was cached or reasoned). */
export interface ResponseUsage {
  input_tokens: number;
  input_tokens_details: { cached_tokens: number };
  output_tokens: number;
  output_tokens_details: { reasoning_tokens: number };
  total_tokens: number;
}

/** The request's settings that every response object repeats (see ResponsesCall.echo). */
export interface ResponseEcho {
  instructions: string | null;
  max_output_tokens: number | null;
  metadata: Record<string, string>;
  parallel_tool_calls: boolean;
  previous_response_id: string | null;
  store: boolean;
  temperature: number | null;
  text: { format: Record<string, unknown> };
  tool_choice: unknown;
  tools: unknown[];
  top_p: number | null;
}

/** A response object: what `POST /v1/responses` answers and `GET /v1/responses/{id}` returns. */
export interface ResponseObject extends ResponseEcho {
  id: string;
  object: "response";
  created_at: number;
  status: "in_progress" | "completed" | "incomplete" | "failed";
  error: { code: string; message: string } | null;
  incomplete_details: { reason: "max_output_tokens" | "content_filter" } | null;
  model: string;
  output: OutputItem[];
  reasoning: { effort: null; summary: null };
  truncation: "disabled";
  usage: ResponseUsage | null;
}

/** One server-sent event of a streamed response: its `type` is also the SSE `event:` name. */
export interface StreamEvent {
  type: string;
  sequence_number: number;
  [field: string]: unknown;
}
