/**
 * The request half of OpenAI's Responses API ingress (responses-ingress.ts): the body of
 * `POST /v1/responses` as an OpenAI SDK sends it → the messages and settings of our ChatRequest,
 * plus what the response object repeats. Pure functions, no I/O. Every key either maps, or is
 * accepted only with a value that asks for nothing, or is refused with INVALID_ARGUMENT whose
 * `field` (the error's `param`) names it, as the Chat Completions ingress does
 * (src/ingress/openai/openai-ingress-translate.ts, whose JSON readers and the openai kind's enum
 * tables this reuses). docs/responses-api.md has the mapping table.
 */
import type { JsonObject, MessageInitShape } from "@bufbuild/protobuf";
import {
  type ContentPartSchema,
  type MessageSchema,
  ResponseFormatType,
  Role,
  type ToolChoiceSchema,
  type ToolSchema,
} from "../../../gen/infergate/v1/chat_pb.js";
import type { ChatRequestSchema } from "../../../gen/infergate/v1/inference_service_pb.js";
import { echoed, invalidArgument } from "../../core/gateway-error.js";
import { isObject } from "../../upstreams/json-value.js";
import { toolChoiceModes } from "../../upstreams/openai/openai-translate.js";
import { arr, bool, count, imagePart, num, obj, opt, str } from "../openai/openai-ingress-translate.js";
import type { ResponseEcho } from "./responses-wire.js";
import { checkedKeys, type InertKeys } from "../request-keys.js";

type Json = Record<string, unknown>;
type ChatInit = MessageInitShape<typeof ChatRequestSchema>;
export type MessageInit = MessageInitShape<typeof MessageSchema>;
type PartInit = MessageInitShape<typeof ContentPartSchema>;

/** A `POST /v1/responses` request, read. */
export interface ResponsesCall {
  readonly stream: boolean;
  /** `store` (the API's default: true): keep the response for GET and for `previous_response_id`. */
  readonly store: boolean;
  readonly previousResponseId: string | undefined;
  /** `instructions` as a system message, sent first and never stored (the API does not carry them over). */
  readonly instructions: MessageInit | undefined;
  /** This turn's messages (`input`), which a stored response keeps after its history. */
  readonly input: MessageInit[];
  /** Where each of `input`'s messages came from (toResponsesField). */
  readonly origins: readonly InputOrigin[];
  /** The ChatRequest's settings; its messages are the ingress's to fill (instructions, history, input). */
  readonly settings: Omit<ChatInit, "messages" | "$typeName">;
  /** The request's settings as every response object repeats them. */
  readonly echo: ResponseEcho;
}

/** Top-level keys that map (see fromResponsesRequest). */
const mappedKeys = new Set([
  "model",
  "input",
  "instructions",
  "tools",
  "tool_choice",
  "parallel_tool_calls",
  "temperature",
  "top_p",
  "max_output_tokens",
  "text",
  "metadata",
  "store",
  "previous_response_id",
  "stream",
  "stream_options",
  "user",
  "safety_identifier",
]);

/**
 * Keys ChatRequest cannot carry, accepted only with the value that asks for nothing (what the API
 * does without them), so that clients which always send them still work.
 */
const inertKeys: InertKeys = new Map([
  ["include", { accepts: (v) => Array.isArray(v) && v.length === 0, problem: "infergate adds no extra output data; only []" }],
  ["truncation", { accepts: (v) => v === "disabled", problem: 'only "disabled": a history longer than the model\'s context fails the call' }],
  ["background", { accepts: (v) => v === false, problem: "background responses are not supported; only false" }],
  ["service_tier", { accepts: (v) => v === "auto" || v === "default", problem: 'only "auto" or "default" is supported' }],
  ["top_logprobs", { accepts: (v) => v === 0, problem: "log probabilities are not supported; only 0" }],
  ["reasoning", { accepts: (v) => isObject(v) && Object.values(v).every((x) => x === null), problem: "reasoning settings are not supported; only null" }],
]);

const notSupported = "not supported by infergate's Responses API (docs/responses-api.md lists what is)";

/**
 * Reads the body of `POST /v1/responses` (already parsed JSON). Throws INVALID_ARGUMENT naming the
 * key at fault by its path in the API (`input[2].content[0].image_url`) for malformed input and
 * for anything ChatRequest cannot carry; checks that are the core's (ranges, tool names, roles in
 * order) are left to the gateway.
 */
export function fromResponsesRequest(raw: unknown): ResponsesCall {
  const body = checkedKeys(raw, mappedKeys, inertKeys, notSupported);
  const model = body["model"];
  if (typeof model !== "string" || model === "") {
    throw invalidArgument("model", "required: the name of a model this gateway serves (GET /v1/models)");
  }
  const stream = opt(body, "stream", bool) ?? false;
  const streamOptions = opt(body, "stream_options", obj);
  if (streamOptions !== undefined) {
    if (!stream) throw invalidArgument("stream_options", "only allowed when stream is true");
    onlyKeys(streamOptions, "stream_options", ["include_obfuscation"]);
    // No obfuscation padding is ever added, so either value asks for what infergate does.
    opt(streamOptions, "include_obfuscation", bool, "stream_options.");
  }
  const rawInput = body["input"];
  const origins: InputOrigin[] = [];
  const input = rawInput === undefined || rawInput === null ? [] : inputMessages(rawInput, "input", origins);
  const instructionsText = opt(body, "instructions", str);
  const previousResponseId = opt(body, "previous_response_id", str);

  const settings: Omit<ChatInit, "messages" | "$typeName"> = { model };
  const temperature = opt(body, "temperature", num);
  if (temperature !== undefined) settings.temperature = temperature;
  const topP = opt(body, "top_p", num);
  if (topP !== undefined) settings.topP = topP;
  const maxOutput = opt(body, "max_output_tokens", count);
  if (maxOutput !== undefined) settings.maxTokens = maxOutput;
  const rawTools = opt(body, "tools", arr) ?? [];
  settings.tools = rawTools.map((t, i) => tool(t, `tools[${i}]`));
  const choice = opt(body, "tool_choice", toolChoice);
  if (choice !== undefined) settings.toolChoice = choice;
  const parallel = opt(body, "parallel_tool_calls", bool);
  if (parallel !== undefined) settings.parallelToolCalls = parallel;
  const text = opt(body, "text", obj);
  let format: Json = { type: "text" };
  if (text !== undefined) {
    onlyKeys(text, "text", ["format"]);
    const f = opt(text, "format", obj, "text.");
    if (f !== undefined) {
      shallow(f, "text.format");
      settings.responseFormat = responseFormat(f, "text.format");
      format = f;
    }
  }
  const metadata = opt(body, "metadata", (v, at) => Object.fromEntries(Object.entries(obj(v, at)).map(([k, s]) => [k, str(s, `${at}.${k}`)])));
  if (metadata !== undefined) settings.metadata = { ...metadata };
  // End-user identifiers (abuse monitoring at OpenAI) do not change the answer: request metadata, as in Chat Completions.
  for (const key of ["user", "safety_identifier"] as const) {
    const id = opt(body, key, str);
    if (id !== undefined) settings.metadata = { ...settings.metadata, [`openai.${key}`]: id };
  }
  const store = opt(body, "store", bool) ?? true;

  return {
    stream,
    store,
    previousResponseId,
    instructions: instructionsText === undefined ? undefined : { role: Role.SYSTEM, content: [textPart(instructionsText)] },
    input,
    origins,
    settings,
    echo: {
      instructions: instructionsText ?? null,
      max_output_tokens: maxOutput ?? null,
      metadata: metadata ?? {},
      parallel_tool_calls: parallel ?? true,
      previous_response_id: previousResponseId ?? null,
      store,
      temperature: temperature ?? null,
      text: { format },
      tool_choice: body["tool_choice"] ?? "auto",
      tools: rawTools,
      top_p: topP ?? null,
    },
  };
}

/**
 * Where a message of `input` came from: the index of its item (-1: `input` was a string), the
 * item's type, and the item of each of its tool calls (consecutive function_call items are merged
 * into one assistant message).
 */
export interface InputOrigin {
  readonly item: number;
  readonly type: "message" | "function_call" | "function_call_output";
  readonly calls: number[];
}

/** `input`: a string (one user message) or a list of items, merged into messages (`origins` noted). */
function inputMessages(v: unknown, at: string, origins: InputOrigin[]): MessageInit[] {
  if (typeof v === "string") {
    origins.push({ item: -1, type: "message", calls: [] });
    return [{ role: Role.USER, content: [textPart(v)] }];
  }
  const out: MessageInit[] = [];
  arr(v, at).forEach((item, i) => {
    const before = out.length;
    const calls = out.at(-1)?.toolCalls?.length ?? 0;
    inputItem(item, `${at}[${i}]`, out);
    if (out.length > before) {
      const o = item as Json;
      const type = o["type"] === "function_call" || o["type"] === "function_call_output" ? o["type"] : "message";
      origins.push({ item: i, type, calls: type === "function_call" ? [i] : [] });
    } else if ((out.at(-1)?.toolCalls?.length ?? 0) > calls) {
      // A function_call merged into the assistant message before it.
      origins.at(-1)?.calls.push(i);
    }
  });
  return out;
}

/** How a call's messages were laid out: [instructions?, ...history, ...input]. */
export interface MessageLayout {
  readonly instructions: boolean;
  readonly history: number;
  readonly origins: readonly InputOrigin[];
}

/**
 * The Responses API's name of a field the gateway named in its ChatRequest terms (an error's
 * `field`, the answer's `param`): `messages[k]…` → the input item it came from (or `instructions`,
 * `previous_response_id` for the stored history), `max_tokens` → `max_output_tokens`,
 * `response_format.json_schema…` → `text.format…`, `tool_choice.function_name` → `tool_choice.name`.
 * Names that are the same in both (model, tools[i]…, temperature, top_p, metadata) stay.
 */
export function toResponsesField(field: string, layout: MessageLayout): string {
  if (field === "messages") return "input";
  if (field === "max_tokens") return "max_output_tokens";
  if (field === "tool_choice.function_name") return "tool_choice.name";
  if (field === "response_format") return "text.format";
  if (field.startsWith("response_format.json_schema")) return `text.format${field.slice("response_format.json_schema".length)}`;
  const m = /^messages\[(\d+)\](.*)$/.exec(field);
  if (m === null) return field;
  let k = Number(m[1]);
  const rest = m[2]!;
  if (layout.instructions) {
    if (k === 0) return "instructions";
    k--;
  }
  if (k < layout.history) return "previous_response_id";
  const origin = layout.origins[k - layout.history];
  if (origin === undefined) return "input";
  if (origin.item < 0) return "input";
  const at = `input[${origin.item}]`;
  const call = /^\.tool_calls\[(\d+)\](?:\.(\w+))?/.exec(rest);
  if (call !== null) {
    const item = origin.calls[Number(call[1])];
    if (item === undefined) return at;
    const name = call[2] === "id" ? "call_id" : call[2];
    return name === undefined ? `input[${item}]` : `input[${item}].${name}`;
  }
  if (rest.startsWith(".content")) return origin.type === "function_call_output" ? `${at}.output${rest.slice(".content".length)}` : `${at}${rest}`;
  if (rest === ".tool_call_id") return `${at}.call_id`;
  return at;
}

/** Roles an input message may have. */
const messageRoles = new Map<string, Role>([
  ["user", Role.USER],
  ["system", Role.SYSTEM],
  ["developer", Role.DEVELOPER],
  ["assistant", Role.ASSISTANT],
]);

/**
 * One input item onto `out`. A `function_call` item joins the assistant message just before it
 * (a message, or other calls: one turn that calls several tools), as Chat carries them.
 */
function inputItem(item: unknown, at: string, out: MessageInit[]): void {
  const o = obj(item, at);
  const type = o["type"] ?? (o["role"] !== undefined ? "message" : undefined);
  switch (type) {
    case "message": {
      // `id` and `status` come with output items sent back as input; they change nothing.
      onlyKeys(o, at, ["type", "role", "content", "id", "status"]);
      const roleName = o["role"];
      const role = typeof roleName === "string" ? messageRoles.get(roleName) : undefined;
      if (role === undefined) throw invalidArgument(`${at}.role`, `one of ${[...messageRoles.keys()].join(", ")}`);
      out.push({ role, content: content(o["content"], `${at}.content`, role) });
      return;
    }
    case "function_call": {
      onlyKeys(o, at, ["type", "call_id", "name", "arguments", "id", "status"]);
      const call = { id: str(o["call_id"], `${at}.call_id`), name: str(o["name"], `${at}.name`), arguments: str(o["arguments"], `${at}.arguments`) };
      const last = out.at(-1);
      if (last?.role === Role.ASSISTANT) (last.toolCalls ??= []).push(call);
      else out.push({ role: Role.ASSISTANT, content: [], toolCalls: [call] });
      return;
    }
    case "function_call_output": {
      onlyKeys(o, at, ["type", "call_id", "output", "id", "status"]);
      const output = o["output"];
      out.push({
        role: Role.TOOL,
        toolCallId: str(o["call_id"], `${at}.call_id`),
        content: typeof output === "string" ? [textPart(output)] : content(output, `${at}.output`, Role.TOOL),
      });
      return;
    }
    default:
      throw invalidArgument(
        `${at}.type`,
        `${typeof type === "string" ? `"${echoed(type, 64)}" items are not supported` : "required"}; one of message, function_call, function_call_output`,
      );
  }
}

/** A message's content: a string (one text part) or a list of parts, by role. */
function content(v: unknown, at: string, role: Role): PartInit[] {
  if (typeof v === "string") return [textPart(v)];
  if (v === undefined || v === null) throw invalidArgument(at, "required");
  const kinds = role === Role.ASSISTANT ? ["output_text", "refusal"] : role === Role.USER ? ["input_text", "input_image"] : ["input_text"];
  return arr(v, at).map((p, j) => {
    const pat = `${at}[${j}]`;
    const o = obj(p, pat);
    const type = o["type"];
    if (typeof type !== "string" || !kinds.includes(type)) {
      throw invalidArgument(`${pat}.type`, `${typeof type === "string" ? `"${echoed(type, 64)}" parts are not supported here` : "required"}; one of ${kinds.join(", ")}`);
    }
    switch (type) {
      case "input_image":
        return image(o, pat);
      case "refusal":
        onlyKeys(o, pat, ["type", "refusal"]);
        return textPart(str(o["refusal"], `${pat}.refusal`));
      default:
        // output_text's annotations and log probabilities are the model's own; they change nothing.
        onlyKeys(o, pat, type === "output_text" ? ["type", "text", "annotations", "logprobs"] : ["type", "text"]);
        return textPart(str(o["text"], `${pat}.text`));
    }
  });
}

/** An `input_image` part: an https: or data: URL (files are not supported). */
function image(o: Json, at: string): PartInit {
  onlyKeys(o, at, ["type", "image_url", "detail"]);
  return imagePart(o, "image_url", at);
}

function textPart(value: string): PartInit {
  return { part: { case: "text", value } };
}

/** How deep a JSON schema (tool parameters, text.format) may nest: deeper ones are refused. */
export const maxSchemaDepth = 64;

/**
 * Refuses a JSON value nested deeper than {@link maxSchemaDepth} (a 400 naming `at`): the request's
 * tools and format are repeated in every response object, which is serialized and copied
 * recursively, so a value thousands of levels deep would overflow the stack there.
 */
function shallow(root: unknown, at: string): void {
  const todo: [unknown, number][] = [[root, 1]];
  while (todo.length > 0) {
    const [v, depth] = todo.pop()!;
    if (v === null || typeof v !== "object") continue;
    if (depth > maxSchemaDepth) throw invalidArgument(at, `nested more than ${maxSchemaDepth} levels deep`);
    for (const x of Array.isArray(v) ? v : Object.values(v)) if (x !== null && typeof x === "object") todo.push([x, depth + 1]);
  }
}

/** A function tool (the API's flat shape); built-in tools are refused by name. */
function tool(t: unknown, at: string): MessageInitShape<typeof ToolSchema> {
  const o = obj(t, at);
  const type = o["type"];
  if (type !== "function") {
    const what = typeof type === "string" ? `built-in tool "${echoed(type, 64)}" is not supported` : "required";
    throw invalidArgument(`${at}.type`, `${what}; only "function" tools (the model calls them, the app runs them)`);
  }
  onlyKeys(o, at, ["type", "name", "description", "parameters", "strict"]);
  const description = opt(o, "description", str, `${at}.`);
  const parameters = opt(o, "parameters", obj, `${at}.`);
  if (parameters !== undefined) shallow(parameters, `${at}.parameters`);
  const strict = opt(o, "strict", bool, `${at}.`);
  return {
    name: str(o["name"], `${at}.name`),
    ...(description !== undefined ? { description } : {}),
    ...(parameters !== undefined ? { parameters: parameters as JsonObject } : {}),
    ...(strict !== undefined ? { strict } : {}),
  };
}

function toolChoice(v: unknown, at: string): MessageInitShape<typeof ToolChoiceSchema> {
  const expected = `${toolChoiceModes.wire.map((w) => `"${w}"`).join(", ")} or {"type": "function", "name": …}`;
  if (typeof v === "string") {
    const mode = toolChoiceModes.fromWire(v);
    if (mode === undefined) throw invalidArgument(at, `one of ${expected}`);
    return { choice: { case: "mode", value: mode } };
  }
  const o = obj(v, at);
  if (o["type"] !== "function") {
    throw invalidArgument(`${at}.type`, `only "function" is supported (built-in tools are not); tool_choice is ${expected}`);
  }
  onlyKeys(o, at, ["type", "name"]);
  return { choice: { case: "functionName", value: str(o["name"], `${at}.name`) } };
}

/** `text.format`: text, json_object, or json_schema (the API's flat shape). */
function responseFormat(o: Json, at: string): NonNullable<ChatInit["responseFormat"]> {
  switch (o["type"]) {
    case "text":
      onlyKeys(o, at, ["type"]);
      return { type: ResponseFormatType.TEXT };
    case "json_object":
      onlyKeys(o, at, ["type"]);
      return { type: ResponseFormatType.JSON_OBJECT };
    case "json_schema": {
      onlyKeys(o, at, ["type", "name", "description", "schema", "strict"]);
      const description = opt(o, "description", str, `${at}.`);
      const strict = opt(o, "strict", bool, `${at}.`);
      return {
        type: ResponseFormatType.JSON_SCHEMA,
        jsonSchema: {
          name: str(o["name"], `${at}.name`),
          schema: obj(o["schema"], `${at}.schema`) as JsonObject,
          ...(description !== undefined ? { description } : {}),
          ...(strict !== undefined ? { strict } : {}),
        },
      };
    }
    default:
      throw invalidArgument(`${at}.type`, "one of text, json_object, json_schema");
  }
}

/** Refuses keys other than `allowed` that carry a value (null is unset). */
function onlyKeys(o: Json, at: string, allowed: readonly string[]): void {
  for (const [key, v] of Object.entries(o)) {
    if (v !== null && !allowed.includes(key)) throw invalidArgument(`${at}.${key}`, notSupported);
  }
}
