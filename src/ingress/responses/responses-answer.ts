/**
 * The answer half of OpenAI's Responses API ingress (responses-ingress.ts): a Chat answer → the
 * API's response object, and a Generate stream → the API's stream events in their order, each
 * with its `sequence_number`. Pure: the ids of the response and of its output items are made by
 * the caller (`ItemIds`). docs/responses-api.md shows one stream of each kind.
 */
import { FinishReason, type Message, type Usage } from "../../../gen/infergate/v1/chat_pb.js";
import type { GenerateResponse } from "../../../gen/infergate/v1/inference_service_pb.js";
import { Code } from "@connectrpc/connect";
import { GatewayError } from "../../core/gateway-error.js";
import type { OutputFunctionCall, OutputItem, OutputMessage, OutputText, ResponseEcho, ResponseObject, ResponseUsage, StreamEvent } from "./responses-wire.js";

/** Makes the id of a new output item: `msg_…` for a message, `fc_…` for a function call. */
export type ItemIds = (prefix: "msg" | "fc") => string;

/** What a response object has before its answer: its id, creation time, model and the request's echo. */
export interface ResponseBase {
  readonly id: string;
  /** Unix seconds. */
  readonly createdAt: number;
  /** The model asked for (the answer's replaces it: a fallback's name when one answered). */
  readonly model: string;
  readonly echo: ResponseEcho;
}

/** The response object of `base` while it is being made: status in_progress, no output yet. */
export function inProgress(base: ResponseBase): ResponseObject {
  return {
    id: base.id,
    object: "response",
    created_at: base.createdAt,
    status: "in_progress",
    error: null,
    incomplete_details: null,
    model: base.model,
    output: [],
    reasoning: { effort: null, summary: null },
    truncation: "disabled",
    usage: null,
    ...base.echo,
  };
}

/**
 * The finished response object: status completed, or incomplete with the reason (the output-token
 * limit, a content filter); usage with the cached and reasoning token details, for any upstream kind.
 */
export function finished(base: ResponseBase, output: OutputItem[], end: { finishReason: FinishReason; usage?: Usage | undefined; model: string }): ResponseObject {
  const reason = end.finishReason === FinishReason.LENGTH ? "max_output_tokens" : end.finishReason === FinishReason.CONTENT_FILTER ? "content_filter" : undefined;
  const status = reason === undefined ? "completed" : "incomplete";
  for (const item of output) item.status = status;
  return {
    ...inProgress(base),
    model: end.model !== "" ? end.model : base.model,
    status,
    incomplete_details: reason === undefined ? null : { reason },
    output,
    usage: responseUsage(end.usage),
  };
}

/** The failed response object of a stream that broke after it started. */
export function failed(base: ResponseBase, output: OutputItem[], error: { code: string; message: string }): ResponseObject {
  for (const item of output) if (item.status === "in_progress") item.status = "incomplete";
  return { ...inProgress(base), status: "failed", error, output };
}

function responseUsage(u: Usage | undefined): ResponseUsage {
  return {
    input_tokens: u?.promptTokens ?? 0,
    input_tokens_details: { cached_tokens: u?.cachedPromptTokens ?? 0 },
    output_tokens: u?.completionTokens ?? 0,
    output_tokens_details: { reasoning_tokens: u?.reasoningTokens ?? 0 },
    total_tokens: u?.totalTokens ?? 0,
  };
}

function outputText(text: string): OutputText {
  return { type: "output_text", text, annotations: [], logprobs: [] };
}

/**
 * A Chat answer's output items: its text as one message (also when the answer is empty and calls
 * no tool), then one function_call item per tool call. An image part has no place in the API:
 * INTERNAL (no upstream kind produces one).
 */
export function outputItems(message: Message | undefined, ids: ItemIds): OutputItem[] {
  let text = "";
  for (const p of message?.content ?? []) {
    if (p.part.case !== "text") {
      throw new GatewayError(Code.Internal, "internal error", { cause: new Error(`an answer with a ${String(p.part.case)} part`) });
    }
    text += p.part.value;
  }
  const calls = message?.toolCalls ?? [];
  const items: OutputItem[] = [];
  if (text !== "" || calls.length === 0) {
    items.push({ id: ids("msg"), type: "message", status: "completed", role: "assistant", content: [outputText(text)] });
  }
  for (const c of calls) {
    items.push({ id: ids("fc"), type: "function_call", status: "completed", call_id: c.id, name: c.name, arguments: c.arguments });
  }
  return items;
}

/** Turns a Generate stream into the API's events. */
export interface EventEncoder {
  /** `response.created` and `response.in_progress`: the first events of every stream. */
  start(): StreamEvent[];
  /**
   * The events of one Generate event. The final event closes the open item and ends with
   * `response.completed` (or `response.incomplete`) carrying the whole response; nothing after.
   */
  push(event: GenerateResponse): StreamEvent[];
  /** The finished response, once the final event was pushed. */
  readonly response: ResponseObject | undefined;
  /** After a failure once the stream has started: `error`, then `response.failed`. */
  fail(error: { code: string; message: string; param: string | null }): StreamEvent[];
}

/**
 * Makes the encoder of one stream. Items come one after another, as the API sends them: a text
 * delta opens a message item (output_item.added, content_part.added) unless one is open; a
 * tool-call delta of a new index closes the open item (output_text.done, content_part.done,
 * output_item.done; or function_call_arguments.done, output_item.done) and opens a function_call
 * item. A delta of a call whose item was closed (an upstream interleaving parallel calls) is added
 * to that item's arguments without an event of its own.
 */
export function createEventEncoder(base: ResponseBase, ids: ItemIds): EventEncoder {
  let seq = 0;
  const output: OutputItem[] = [];
  let open: { index: number; item: OutputMessage } | { index: number; item: OutputFunctionCall; tool: number } | undefined;
  const callItems = new Map<number, OutputFunctionCall>();
  let response: ResponseObject | undefined;
  const ev = (type: string, fields: Record<string, unknown>): StreamEvent => ({ type, sequence_number: seq++, ...fields });
  const snapshot = <T>(v: T): T => structuredClone(v);

  function close(): StreamEvent[] {
    if (open === undefined) return [];
    const { index, item } = open;
    open = undefined;
    const out: StreamEvent[] = [];
    if (item.type === "message") {
      const part = item.content[0]!;
      out.push(ev("response.output_text.done", { item_id: item.id, output_index: index, content_index: 0, text: part.text, logprobs: [] }));
      out.push(ev("response.content_part.done", { item_id: item.id, output_index: index, content_index: 0, part: snapshot(part) }));
    } else {
      out.push(ev("response.function_call_arguments.done", { item_id: item.id, output_index: index, name: item.name, arguments: item.arguments }));
    }
    item.status = "completed";
    out.push(ev("response.output_item.done", { output_index: index, item: snapshot(item) }));
    return out;
  }

  function text(delta: string): StreamEvent[] {
    const out: StreamEvent[] = [];
    if (open?.item.type !== "message") {
      out.push(...close());
      const item: OutputMessage = { id: ids("msg"), type: "message", status: "in_progress", role: "assistant", content: [] };
      const index = output.push(item) - 1;
      open = { index, item };
      out.push(ev("response.output_item.added", { output_index: index, item: snapshot(item) }));
      item.content.push(outputText(""));
      out.push(ev("response.content_part.added", { item_id: item.id, output_index: index, content_index: 0, part: outputText("") }));
    }
    const { index, item } = open as { index: number; item: OutputMessage };
    if (delta !== "") {
      item.content[0]!.text += delta;
      out.push(ev("response.output_text.delta", { item_id: item.id, output_index: index, content_index: 0, delta, logprobs: [] }));
    }
    return out;
  }

  function toolCall(d: { index: number; id: string; name: string; arguments: string }): StreamEvent[] {
    const out: StreamEvent[] = [];
    const known = callItems.get(d.index);
    if (known !== undefined && !(open !== undefined && "tool" in open && open.tool === d.index)) {
      known.arguments += d.arguments;
      return out;
    }
    if (known === undefined) {
      out.push(...close());
      const item: OutputFunctionCall = { id: ids("fc"), type: "function_call", status: "in_progress", call_id: d.id, name: d.name, arguments: "" };
      callItems.set(d.index, item);
      const index = output.push(item) - 1;
      open = { index, item, tool: d.index };
      out.push(ev("response.output_item.added", { output_index: index, item: snapshot(item) }));
    }
    const { index, item } = open as { index: number; item: OutputFunctionCall };
    if (d.arguments !== "") {
      item.arguments += d.arguments;
      out.push(ev("response.function_call_arguments.delta", { item_id: item.id, output_index: index, delta: d.arguments }));
    }
    return out;
  }

  return {
    start: () => [ev("response.created", { response: inProgress(base) }), ev("response.in_progress", { response: inProgress(base) })],
    push(event) {
      if (response !== undefined) return [];
      const e = event.event;
      switch (e.case) {
        case "textDelta":
          return e.value === "" ? [] : text(e.value);
        case "toolCallDelta":
          return toolCall(e.value);
        case "final": {
          // An answer with nothing at all is still one (empty) message, as a unary one is.
          const out = output.length === 0 ? [...text(""), ...close()] : close();
          response = finished(base, output, { finishReason: e.value.finishReason, usage: e.value.usage, model: e.value.model });
          out.push(ev(response.status === "completed" ? "response.completed" : "response.incomplete", { response: snapshot(response) }));
          return out;
        }
        default:
          return [];
      }
    },
    get response() {
      return response;
    },
    fail(error) {
      return [ev("error", { ...error }), ev("response.failed", { response: failed(base, output, { code: error.code, message: error.message }) })];
    },
  };
}
