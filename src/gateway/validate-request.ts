import {
  ResponseFormatType,
  Role,
  ToolChoiceMode,
} from "../../gen/infergate/v1/chat_pb.js";
import type { PredictRequest } from "../../gen/infergate/v1/inference_service_pb.js";
import { checkTensor } from "../upstreams/tensor-codec.js";
import type { ChatInput } from "../core/upstream.js";
import { isSharedRequest } from "../wire/fast-paths.js";
import { defaultRequestLimits, type RequestLimits } from "../config/schema.js";
import { echoed, invalidArgument } from "../core/gateway-error.js";
import { checkChatLimits, checkPredictLimits } from "./request-limits.js";

/** Function and schema names as OpenAI and Anthropic accept them. */
const toolName = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * Checks what every upstream kind needs of a Chat or Generate request, so that bad input fails
 * fast with INVALID_ARGUMENT naming the field, before any upstream is called. Kind-specific limits
 * (e.g. a field an upstream cannot carry) are the adapters' to check.
 */
export function validateChatInput(req: ChatInput, limits: RequestLimits = defaultRequestLimits): void {
  // A shared (deep-frozen) request found valid once stays valid.
  if (validChatInputs.has(req)) return;
  // Element counts first: nothing below visits an element of a list over its limit.
  checkChatLimits(req, limits);
  checkChatInput(req);
  if (isSharedRequest(req)) validChatInputs.add(req);
}

/** Shared requests (see isSharedRequest) validateChatInput has passed. */
const validChatInputs = new WeakSet<ChatInput>();

function checkChatInput(req: ChatInput): void {
  if (req.messages.length === 0) {
    throw invalidArgument("messages", "at least one message is required");
  }
  req.messages.forEach((m, i) => {
    const at = `messages[${i}]`;
    if (m.role === Role.UNSPECIFIED || Role[m.role] === undefined) {
      throw invalidArgument(`${at}.role`, "required (one of the ROLE_* values)");
    }
    m.content.forEach((p, j) => {
      const pat = `${at}.content[${j}]`;
      switch (p.part.case) {
        case "text":
          return;
        case "imageUrl":
          if (p.part.value.url === "") {
            throw invalidArgument(`${pat}.image_url.url`, "required");
          }
          return;
        case "imageData":
          if (p.part.value.data.length === 0) {
            throw invalidArgument(`${pat}.image_data.data`, "required");
          }
          if (!/^image\/[a-z0-9.+-]+$/.test(p.part.value.mimeType)) {
            throw invalidArgument(`${pat}.image_data.mime_type`, "required, an image MIME type such as image/png");
          }
          return;
        default:
          throw invalidArgument(`${pat}`, "empty part: set text, image_url or image_data");
      }
    });
    if (m.toolCalls.length > 0 && m.role !== Role.ASSISTANT) {
      throw invalidArgument(`${at}.tool_calls`, "only assistant messages carry tool calls");
    }
    m.toolCalls.forEach((c, j) => {
      if (c.id === "") {
        throw invalidArgument(`${at}.tool_calls[${j}].id`, "required");
      }
      if (c.name === "") {
        throw invalidArgument(`${at}.tool_calls[${j}].name`, "required");
      }
    });
    if (m.role === Role.TOOL && m.toolCallId === "") {
      throw invalidArgument(`${at}.tool_call_id`, "required for tool messages");
    }
    if (m.role !== Role.TOOL && m.toolCallId !== "") {
      throw invalidArgument(`${at}.tool_call_id`, "only tool messages answer a tool call");
    }
    if (m.content.length === 0 && m.toolCalls.length === 0) {
      throw invalidArgument(`${at}.content`, "required (only an assistant message with tool calls may be empty)");
    }
  });
  const names = new Set<string>();
  req.tools.forEach((t, i) => {
    if (!toolName.test(t.name)) {
      throw invalidArgument(`tools[${i}].name`, "must be 1-64 letters, digits, underscores or dashes");
    }
    if (names.has(t.name)) {
      throw invalidArgument(`tools[${i}].name`, `duplicate tool name "${echoed(t.name)}"`);
    }
    names.add(t.name);
  });
  const choice = req.toolChoice?.choice;
  if (choice?.case === "functionName" && !names.has(choice.value)) {
    throw invalidArgument("tool_choice.function_name", `"${echoed(choice.value)}" is not in tools`);
  }
  if (choice?.case === "mode" && ToolChoiceMode[choice.value] === undefined) {
    throw invalidArgument("tool_choice.mode", `unknown value ${choice.value}`);
  }
  if (
    (choice?.case === "functionName" || (choice?.case === "mode" && choice.value === ToolChoiceMode.REQUIRED)) &&
    req.tools.length === 0
  ) {
    throw invalidArgument("tool_choice", "requires tools");
  }
  range("temperature", req.temperature, 0, 2);
  range("top_p", req.topP, 0, 1);
  range("presence_penalty", req.presencePenalty, -2, 2);
  range("frequency_penalty", req.frequencyPenalty, -2, 2);
  if (req.maxTokens === 0) {
    throw invalidArgument("max_tokens", "must be at least 1 when set");
  }
  req.stop.forEach((s, i) => {
    if (s === "") {
      throw invalidArgument(`stop[${i}]`, "must not be empty");
    }
  });
  const format = req.responseFormat;
  if (format !== undefined) {
    if (ResponseFormatType[format.type] === undefined) {
      throw invalidArgument("response_format.type", `unknown value ${format.type}`);
    }
    if (format.type === ResponseFormatType.JSON_SCHEMA) {
      if (format.jsonSchema === undefined) {
        throw invalidArgument("response_format.json_schema", "required when type is RESPONSE_FORMAT_TYPE_JSON_SCHEMA");
      }
      if (!toolName.test(format.jsonSchema.name)) {
        throw invalidArgument("response_format.json_schema.name", "must be 1-64 letters, digits, underscores or dashes");
      }
      if (format.jsonSchema.schema === undefined) {
        throw invalidArgument("response_format.json_schema.schema", "required");
      }
    } else if (format.jsonSchema !== undefined) {
      throw invalidArgument("response_format.json_schema", "only allowed when type is RESPONSE_FORMAT_TYPE_JSON_SCHEMA");
    }
  }
}

function range(field: string, v: number | undefined, min: number, max: number): void {
  if (v !== undefined && !(v >= min && v <= max)) {
    throw invalidArgument(field, `must be between ${min} and ${max}, got ${v}`);
  }
}

/** Checks a Predict request: inputs present, unique, and each consistent in shape and contents. */
export function validatePredictRequest(req: PredictRequest, limits: RequestLimits = defaultRequestLimits): void {
  checkPredictLimits(req, limits);
  if (req.inputs.length === 0) {
    throw invalidArgument("inputs", "at least one input tensor is required");
  }
  const names = new Set<string>();
  req.inputs.forEach((t, i) => {
    checkTensor(t, `inputs[${i}]`);
    if (names.has(t.name)) {
      throw invalidArgument(`inputs[${i}].name`, `duplicate input name "${echoed(t.name)}"`);
    }
    names.add(t.name);
  });
  req.outputs.forEach((o, i) => {
    if (o.name === "") {
      throw invalidArgument(`outputs[${i}].name`, "required");
    }
  });
  if (req.modelVersion === "") {
    throw invalidArgument("model_version", "must not be empty when set");
  }
}
