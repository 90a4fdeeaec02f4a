/**
 * Pieces of a chat request that every upstream kind reads the same way, whatever its wire: a
 * `data:` image URL, and a tool call's arguments as the JSON object the providers' tool-use
 * blocks carry. Pure; each throws INVALID_ARGUMENT naming the field.
 */
import type { ToolCall } from "../../gen/infergate/v1/chat_pb.js";
import { invalidArgument } from "../core/gateway-error.js";
import { isObject } from "./json-value.js";

/**
 * A `data:` URL's media type and base64 data (RFC 2397: data:[<mediatype>][;base64],<data>); only
 * base64 data with something in it is taken.
 */
export function parseDataUrl(url: string, field: string): { mediaType: string; base64: string } {
  const m = /^data:([^;,]*)((?:;[^;,]*)*),(.*)$/is.exec(url);
  if (m === null || !/;base64$/i.test(m[2] ?? "") || m[3] === "") {
    throw invalidArgument(field, "a data: URL must be data:<image type>;base64,<data>");
  }
  return { mediaType: m[1]!, base64: m[3]! };
}

/**
 * A tool call's arguments as a JSON object (`provider` names the API in the error): "" is `{}`, as
 * a stream of a parameterless tool can leave it; anything but a JSON object is refused.
 */
export function toolArgumentsObject(c: ToolCall, at: string, provider: string): Record<string, unknown> {
  if (c.arguments.trim() === "") return {};
  let input: unknown;
  try {
    input = JSON.parse(c.arguments);
  } catch {
    throw invalidArgument(`${at}.arguments`, `not valid JSON (${provider} needs the arguments as a JSON object)`);
  }
  if (!isObject(input)) {
    throw invalidArgument(`${at}.arguments`, `not a JSON object (${provider} needs the arguments as a JSON object)`);
  }
  return input;
}
