import type { DescMessage } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import {
  ChatRequestSchema,
  type EmbedRequest,
  EmbedRequestSchema,
  GenerateRequestSchema,
  type PredictRequest,
  PredictRequestSchema,
} from "../../gen/infergate/v1/inference_service_pb.js";
import { DataType } from "../../gen/infergate/v1/tensor_pb.js";
import type { RequestLimits } from "../config/schema.js";
import type { ChatInput } from "../core/upstream.js";
import { echoed, GatewayError, Reason } from "../core/gateway-error.js";

/**
 * Over 400 lines on purpose: one table of the counted lists of each request type (chatLists,
 * tensorLists, …) and the four readers that apply it — protobuf bytes, Connect JSON text, OpenAI
 * JSON text, decoded messages. They must name the same field and count the same way (the tests of
 * test/unit/request-limits.test.ts compare them); kept with their table, a new limit or a new list
 * is one edit that every path sees.
 *
 * Element counts of one request (`server.requestLimits`), checked before any per-element work:
 *
 * - checkWireLimits: on a request's protobuf bytes, before they are decoded (the gRPC listener;
 *   Connect and gRPC-Web in binary). It reads tags and lengths only: no object per element.
 * - decodeJsonRequest: a Connect/JSON request's text is scanned once for its counts (and its
 *   duplicate keys, which protobuf-es's fromJsonString refuses) before JSON.parse and fromJson.
 * - checkOpenAIChatLimits: the same scan of an OpenAI Chat Completions body, before JSON.parse.
 * - checkChatLimits / checkPredictLimits: on a decoded message, first in validation (any path,
 *   the in-process one included), and the only check of a tensor's shape product.
 *
 * Every path names the same field and says the same: a list over its own limit is `<list path>:
 * at most L <what>, got N` (a scan counts the rest of such a list, without visiting its elements);
 * a count over the whole request (content parts, tool calls) is refused at the list where it
 * passes its limit, `<list path>: more than L <what> in the request`. INVALID_ARGUMENT, with
 * ErrorInfo reason INVALID_ARGUMENT and metadata `field` as every validation error, and `limit`.
 */

type LimitKey = keyof RequestLimits;

/** A counted list (repeated field or map) of a message, in each form the request may take. */
interface ListSpec {
  /** The field's name in error paths: the proto name (the OpenAI API's name for its body). */
  readonly name: string;
  /** The protobuf-es property. */
  readonly local: string;
  /** The field number on the wire (0: JSON only). */
  readonly number: number;
  /** The JSON keys that name it (proto JSON: the JSON name and the proto name). */
  readonly json: readonly string[];
  /** The limit it counts against; undefined for a single message whose own lists are checked. */
  readonly limit?: LimitKey;
  /** Counted over the whole request instead of per list. */
  readonly total?: boolean;
  /** A map (a JSON object), not a repeated field (a JSON array). */
  readonly map?: boolean;
  /** Scalars that may come packed: "varint", or the width of a fixed-size element. */
  readonly packed?: "varint" | 4 | 8;
  /** The lists of each element (or of the single message). */
  readonly each?: readonly ListSpec[];
  /** A single message that is a member of this oneof (protobuf-es: `{case, value}`). */
  readonly oneof?: string;
  /** A google.protobuf.Struct (protobuf-es: a JSON object): its values at any depth are counted. */
  readonly struct?: boolean;
}

const list = (name: string, local: string, number: number, limit: LimitKey | undefined, more: Partial<ListSpec> = {}): ListSpec => ({
  name,
  local,
  number,
  json: local === name ? [name] : [local, name],
  ...(limit === undefined ? {} : { limit }),
  ...more,
});

/** A Struct field whose values count against schemaValues. */
const schema = (name: string, number: number) => list(name, name, number, "schemaValues", { total: true, struct: true });

const chatLists: readonly ListSpec[] = [
  list("messages", "messages", 2, "messages", {
    each: [list("content", "content", 2, "contentParts", { total: true }), list("tool_calls", "toolCalls", 3, "toolCalls", { total: true })],
  }),
  list("tools", "tools", 3, "tools", { each: [schema("parameters", 3)] }),
  list("response_format", "responseFormat", 12, undefined, { each: [list("json_schema", "jsonSchema", 2, undefined, { each: [schema("schema", 3)] })] }),
  list("stop", "stop", 11, "stopSequences"),
  list("metadata", "metadata", 15, "metadataEntries", { map: true }),
];

const elements = (name: string, local: string, number: number, packed?: "varint" | 4 | 8) =>
  list(name, local, number, "tensorElements", packed === undefined ? {} : { packed });

const tensorLists: readonly ListSpec[] = [
  list("shape", "shape", 3, "shapeDims", { packed: "varint" }),
  list("contents", "contents", 4, undefined, {
    oneof: "data",
    each: [
      elements("bool_contents", "boolContents", 1, "varint"),
      elements("int_contents", "intContents", 2, "varint"),
      elements("int64_contents", "int64Contents", 3, "varint"),
      elements("uint_contents", "uintContents", 4, "varint"),
      elements("uint64_contents", "uint64Contents", 5, "varint"),
      elements("fp32_contents", "fp32Contents", 6, 4),
      elements("fp64_contents", "fp64Contents", 7, 8),
      list("bytes_contents", "bytesContents", 8, "bytesElements"),
    ],
  }),
  list("parameters", "parameters", 6, "parameters", { map: true }),
];

const predictLists: readonly ListSpec[] = [
  list("inputs", "inputs", 3, "inputs", { each: tensorLists }),
  list("outputs", "outputs", 4, "outputs", { each: [list("parameters", "parameters", 2, "parameters", { map: true })] }),
  list("parameters", "parameters", 5, "parameters", { map: true }),
  list("metadata", "metadata", 7, "metadataEntries", { map: true }),
];

const embedLists: readonly ListSpec[] = [
  list("texts", "texts", 3, "embedInputs", { total: true }),
  list("tokens", "tokens", 4, "embedInputs", { total: true, each: [list("ids", "ids", 1, "tokenIds", { packed: "varint" })] }),
  list("metadata", "metadata", 8, "metadataEntries", { map: true }),
];

/** The OpenAI Chat Completions body (src/ingress/openai/openai-ingress-translate.ts reads it). */
const openaiChatLists: readonly ListSpec[] = [
  list("messages", "messages", 0, "messages", {
    each: [list("content", "content", 0, "contentParts", { total: true }), list("tool_calls", "tool_calls", 0, "toolCalls", { total: true })],
  }),
  list("tools", "tools", 0, "tools", { each: [list("function", "function", 0, undefined, { each: [schema("parameters", 0)] })] }),
  list("response_format", "response_format", 0, undefined, { each: [list("json_schema", "json_schema", 0, undefined, { each: [schema("schema", 0)] })] }),
  list("stop", "stop", 0, "stopSequences"),
  list("metadata", "metadata", 0, "metadataEntries", { map: true }),
];

/** The lists of each request message the limits apply to. */
const listsBySchema: ReadonlyMap<DescMessage, readonly ListSpec[]> = new Map<DescMessage, readonly ListSpec[]>([
  [ChatRequestSchema, chatLists],
  [GenerateRequestSchema, chatLists],
  [PredictRequestSchema, predictLists],
  [EmbedRequestSchema, embedLists],
]);

/** What each limit counts, in its error message. */
const counted: Readonly<Record<LimitKey, string>> = {
  messages: "messages",
  contentParts: "content parts",
  toolCalls: "tool calls",
  tools: "tools",
  stopSequences: "sequences",
  schemaValues: "values in tool parameters and JSON schemas",
  metadataEntries: "entries",
  inputs: "input tensors",
  outputs: "outputs",
  parameters: "entries",
  shapeDims: "dimensions",
  tensorElements: "elements",
  bytesElements: "elements",
  embedInputs: "inputs",
  tokenIds: "token ids",
};

function refusal(field: string, limit: number, problem: string): GatewayError {
  const path = echoed(field);
  return new GatewayError(Code.InvalidArgument, `${path}: ${problem}`, {
    reason: Reason.InvalidArgument,
    metadata: { field: path, limit: String(limit) },
  });
}

/** A list over its own limit. */
function overList(field: string, key: LimitKey, limits: RequestLimits, got: number): GatewayError {
  return refusal(field, limits[key], `at most ${limits[key]} ${counted[key]}, got ${got}`);
}

/** A count over the whole request passed its limit in the list at `field`. */
function overTotal(field: string, key: LimitKey, limits: RequestLimits): GatewayError {
  return refusal(field, limits[key], `more than ${limits[key]} ${counted[key]} in the request`);
}

const join = (path: string, name: string) => (path === "" ? name : `${path}.${name}`);

// --- decoded messages ---------------------------------------------------------------------------

/** Counts of the whole request, by limit. */
type Totals = Partial<Record<LimitKey, number>>;

function checkDecoded(message: object, lists: readonly ListSpec[], path: string, limits: RequestLimits, totals: Totals): void {
  const m = message as Record<string, unknown>;
  for (const spec of lists) {
    if (spec.limit === undefined) {
      // A single message (Tensor.contents, a member of the oneof `data`).
      const o = m[spec.oneof ?? spec.local] as { case?: string; value?: object } | undefined;
      const value = spec.oneof === undefined ? o : o?.case === spec.local ? o.value : undefined;
      if (value !== undefined && spec.each !== undefined) checkDecoded(value, spec.each, join(path, spec.name), limits, totals);
      continue;
    }
    const v = m[spec.local];
    if (v === undefined || v === null) continue;
    const field = join(path, spec.name);
    const n = spec.struct === true ? countJsonValues(v, limits[spec.limit] + 1) : spec.map ? countKeys(v as object, limits[spec.limit]) : (v as unknown[]).length;
    if (spec.total === true) {
      const sum = (totals[spec.limit] ?? 0) + n;
      totals[spec.limit] = sum;
      if (sum > limits[spec.limit]) throw overTotal(field, spec.limit, limits);
    } else if (n > limits[spec.limit]) {
      throw overList(field, spec.limit, limits, spec.map ? Object.keys(v as object).length : n);
    }
    if (spec.each !== undefined) {
      const items = v as object[];
      for (let i = 0; i < items.length; i++) checkDecoded(items[i]!, spec.each, `${field}[${i}]`, limits, totals);
    }
  }
}

/** The members and elements of a JSON value at any depth (without recursion), counted up to `max`. */
function countJsonValues(root: unknown, max: number): number {
  let n = 0;
  const todo: unknown[] = [root];
  while (todo.length > 0 && n < max) {
    const v = todo.pop();
    if (v === null || typeof v !== "object") continue;
    for (const x of Array.isArray(v) ? v : Object.values(v)) {
      n++;
      if (x !== null && typeof x === "object") todo.push(x);
    }
  }
  return n;
}

/** A map's keys, counted up to one past `limit`. */
function countKeys(o: object, limit: number): number {
  let n = 0;
  for (const _ in o) if (++n > limit) break;
  return n;
}

/** A Chat or Generate request within the limits (a session's history not yet in front of it). */
export function checkChatLimits(req: ChatInput, limits: RequestLimits): void {
  checkDecoded(req, chatLists, "", limits, {});
}

/** A Predict request within the limits, each input's shape product included. */
/** An Embed's counts (server.requestLimits), on the decoded message. */
export function checkEmbedLimits(req: EmbedRequest, limits: RequestLimits): void {
  checkDecoded(req, embedLists, "", limits, {});
}

export function checkPredictLimits(req: PredictRequest, limits: RequestLimits): void {
  checkDecoded(req, predictLists, "", limits, {});
  for (let i = 0; i < req.inputs.length; i++) {
    const t = req.inputs[i]!;
    let product = 1;
    for (const d of t.shape) {
      // Negative dimensions are validation's to name (checkTensor).
      if (d > 0n) product *= Number(d);
    }
    const limit = t.datatype === DataType.BYTES ? limits.bytesElements : limits.tensorElements;
    if (t.shape.length > 0 && product > limit) {
      throw refusal(`inputs[${i}].shape`, limit, `at most ${limit} elements${t.datatype === DataType.BYTES ? " in a BYTES tensor" : ""}, got ${product}`);
    }
  }
}

// --- protobuf bytes -------------------------------------------------------------------------------

/** The value of the last varint readVarint read (lengths and tags: up to 2^53). */
let varint = 0;

/** Reads a varint at `pos`; returns the position after it, or -1 if it is cut or too long. */
function readVarint(buf: Uint8Array, pos: number, end: number): number {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 10; i++) {
    if (pos >= end) return -1;
    const b = buf[pos++]!;
    value += (b & 0x7f) * scale;
    if (b < 0x80) {
      varint = value;
      return pos;
    }
    scale *= 128;
  }
  return -1;
}

/** Varints in `buf[start, end)`: the bytes that end one. */
function countVarints(buf: Uint8Array, start: number, end: number): number {
  let n = 0;
  for (let i = start; i < end; i++) if (buf[i]! < 0x80) n++;
  return n;
}

// google.protobuf.Struct (fields: map<string, Value> = 1), its map entry (value = 2), Value
// (struct_value = 5, list_value = 6) and ListValue (values = 1).
const inStruct = 0;
const inEntry = 1;
const inValue = 2;
const inList = 3;

/**
 * The values of the Struct in `buf[start, end)` at any depth (each map entry, each list element),
 * counted up to `max`: with a stack of ranges, not recursion (the nesting is the caller's).
 */
function countStructValues(buf: Uint8Array, start: number, end: number, max: number): number {
  let n = 0;
  const todo: number[] = [start, end, inStruct];
  while (todo.length > 0 && n < max) {
    const kind = todo.pop()!;
    const to = todo.pop()!;
    const from = todo.pop()!;
    for (let pos = from; pos < to && n < max; ) {
      pos = nextField(buf, pos, to);
      if (fieldWire !== 2) continue;
      const number = fieldNumber;
      if ((kind === inStruct || kind === inList) && number === 1) {
        n++;
        todo.push(valueFrom, valueTo, kind === inStruct ? inEntry : inValue);
      } else if (kind === inEntry && number === 2) {
        todo.push(valueFrom, valueTo, inValue);
      } else if (kind === inValue && (number === 5 || number === 6)) {
        todo.push(valueFrom, valueTo, number === 5 ? inStruct : inList);
      }
    }
  }
  return n;
}

/** Thrown to stop scanning bytes that are not a message: fromBinary then says what is wrong. */
const malformed = Symbol("malformed");

/** The field nextField read: its number, wire type, and where its value starts and ends. */
let fieldNumber = 0;
let fieldWire = 0;
let valueFrom = 0;
let valueTo = 0;

/**
 * Reads the field of the message that starts at `pos` (before `end`) into fieldNumber, fieldWire,
 * valueFrom and valueTo (for a length-delimited field, its payload); returns where the next field
 * starts. Throws `malformed`. A loop over these is the scans' only cost per field: no callback,
 * no object.
 */
function nextField(buf: Uint8Array, pos: number, end: number): number {
  pos = readVarint(buf, pos, end);
  if (pos < 0) throw malformed;
  fieldNumber = Math.floor(varint / 8);
  fieldWire = varint % 8;
  valueFrom = pos;
  switch (fieldWire) {
    case 0:
      pos = readVarint(buf, pos, end);
      break;
    case 1:
      pos += 8;
      break;
    case 5:
      pos += 4;
      break;
    case 2:
      valueFrom = readVarint(buf, pos, end);
      pos = valueFrom < 0 ? -1 : valueFrom + varint;
      break;
    default:
      // Groups: never in these messages; fromBinary reads them.
      throw malformed;
  }
  if (pos < 0 || pos > end) throw malformed;
  valueTo = pos;
  return pos;
}

function scanWire(buf: Uint8Array, start: number, end: number, lists: readonly ListSpec[], path: string, limits: RequestLimits, totals: Totals): void {
  // First the counts of this message's lists (tags and lengths only), then, with each count
  // within its limit, the lists inside their elements.
  const counts = new Array<number>(lists.length).fill(0);
  const index = indexByNumber(lists);
  let nested = false;
  for (let pos = start; pos < end; ) {
    pos = nextField(buf, pos, end);
    const i = fieldNumber < index.length ? index[fieldNumber]! : -1;
    if (i < 0) continue;
    const spec = lists[i]!;
    if (spec.each !== undefined) nested = true;
    if (spec.limit === undefined) continue;
    const wire = fieldWire;
    const from = valueFrom;
    const to = valueTo;
    const n =
      spec.struct === true
        ? wire === 2
          ? countStructValues(buf, from, to, limits[spec.limit] + 1)
          : 0
        : wire !== 2 || spec.packed === undefined
          ? 1
          : spec.packed === "varint"
            ? countVarints(buf, from, to)
            : Math.floor((to - from) / spec.packed);
    counts[i]! += n;
    if (spec.total === true) {
      const sum = (totals[spec.limit] ?? 0) + n;
      totals[spec.limit] = sum;
      if (sum > limits[spec.limit]) throw overTotal(join(path, spec.name), spec.limit, limits);
    }
  }
  lists.forEach((spec, i) => {
    if (spec.limit !== undefined && spec.total !== true && counts[i]! > limits[spec.limit]) {
      throw overList(join(path, spec.name), spec.limit, limits, counts[i]!);
    }
  });
  if (!nested) return;
  const seen = new Array<number>(lists.length).fill(0);
  for (let pos = start; pos < end; ) {
    pos = nextField(buf, pos, end);
    const i = fieldNumber < index.length ? index[fieldNumber]! : -1;
    if (i < 0 || fieldWire !== 2) continue;
    const spec = lists[i]!;
    if (spec.each === undefined) continue;
    const field = spec.limit === undefined ? join(path, spec.name) : `${join(path, spec.name)}[${seen[i]!++}]`;
    scanWire(buf, valueFrom, valueTo, spec.each, field, limits, totals);
  }
}

/** Each list's index in `lists` by its field number (-1: not a list of these). */
const indexes = new WeakMap<readonly ListSpec[], Int8Array>();
function indexByNumber(lists: readonly ListSpec[]): Int8Array {
  let index = indexes.get(lists);
  if (index === undefined) {
    index = new Int8Array(Math.max(...lists.map((s) => s.number)) + 1).fill(-1);
    lists.forEach((s, i) => (index![s.number] = i));
    indexes.set(lists, index);
  }
  return index;
}

/**
 * Requests smaller than this are not scanned: they hold at most a few thousand elements, decoded
 * in well under a millisecond, and validation applies the same limits to the decoded message (a
 * scan is 0.3 µs of a 30-byte Chat that the listener may not even decode: decodeKeyedRequest).
 */
const scannedBytes = 4096;

/**
 * Checks the element counts of a request's protobuf bytes before they are decoded (schemas other
 * than ChatRequest, GenerateRequest and PredictRequest pass, and bytes under scannedBytes). Bytes
 * that are not a message pass too, for the decoder to refuse. Cost: a pass over the tags of the
 * counted lists' messages.
 */
export function checkWireLimits(schema: DescMessage, bytes: Uint8Array, limits: RequestLimits): void {
  const lists = listsBySchema.get(schema);
  if (lists === undefined || bytes.length < scannedBytes) return;
  try {
    scanWire(bytes, 0, bytes.length, lists, "", limits, {});
  } catch (err) {
    if (err !== malformed) throw err;
  }
}

// --- JSON text ------------------------------------------------------------------------------------

/** An open object or array of the JSON text being scanned. */
class Frame {
  /** Elements (array) or keys (object) so far. */
  count = 0;
  /** An object: the key whose value comes next. */
  key: string | undefined = undefined;
  /** An object: its keys so far (for duplicate keys, when asked for): a few in an array, then a Set. */
  keys: string[] | Set<string> | undefined = undefined;
  constructor(
    readonly array: boolean,
    /** Its path, when its lists are checked or it is a counted list. */
    readonly path: string,
    /** An object that is a message: its lists, by JSON key. */
    readonly fields: readonly ListSpec[] | undefined,
    /** A counted list (array) or map (object). */
    readonly list: ListSpec | undefined,
    /** Inside a Struct field whose values are counted: the field, and its path. */
    readonly struct: ListSpec | undefined,
    readonly structPath: string,
  ) {}
}

/** Whether `key` was seen before in the object `f`; adds it. */
function seenKey(f: Frame, key: string): boolean {
  const keys = f.keys;
  if (keys === undefined) {
    f.keys = [key];
    return false;
  }
  if (Array.isArray(keys)) {
    if (keys.includes(key)) return true;
    keys.push(key);
    // Past a few keys (a map, a Struct), a Set: includes on an array would make the check quadratic.
    if (keys.length > 8) f.keys = new Set(keys);
    return false;
  }
  if (keys.has(key)) return true;
  keys.add(key);
  return false;
}

const whitespace = (c: number) => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;

/** The index of the quote that ends the string opening at `open`, or -1. */
function stringEnd(text: string, open: number): number {
  let at = open;
  for (;;) {
    at = text.indexOf('"', at + 1);
    if (at < 0) return -1;
    let backslashes = 0;
    while (text.charCodeAt(at - 1 - backslashes) === 0x5c) backslashes++;
    if (backslashes % 2 === 0) return at;
  }
}

/**
 * Scans JSON text once for the counts of `lists` (and, with `duplicates`, the first duplicate
 * key of any object, returned). Strings are skipped with indexOf. Text that is not JSON may stop
 * the scan anywhere: JSON.parse then says what is wrong.
 */
function scanJson(text: string, lists: readonly ListSpec[], limits: RequestLimits, duplicates: boolean): string | undefined {
  const stack: Frame[] = [];
  const totals: Totals = {};
  let duplicate: string | undefined;
  let top: Frame | undefined;
  /** The frame a container opened at this point gets (its parent's spec for the value). */
  const open = (array: boolean): Frame => {
    let path = "";
    let fields: readonly ListSpec[] | undefined;
    let counted: ListSpec | undefined;
    if (top?.struct !== undefined) return new Frame(array, "", undefined, undefined, top.struct, top.structPath);
    if (top === undefined) {
      if (!array) fields = lists;
    } else if (top.array) {
      const parent = top.list;
      if (parent?.each !== undefined && !array && top.count <= limits[parent.limit!]) {
        path = `${top.path}[${top.count - 1}]`;
        fields = parent.each;
      }
    } else if (top.fields !== undefined && top.key !== undefined) {
      const spec = top.fields.find((s) => s.json.includes(top!.key!));
      if (spec !== undefined) {
        path = join(top.path, spec.name);
        if (spec.struct === true) {
          if (!array) return new Frame(false, path, undefined, undefined, spec, path);
        } else if (spec.limit === undefined) {
          if (!array) fields = spec.each;
        } else if (array !== spec.map) {
          counted = spec;
        }
      }
    }
    return new Frame(array, path, fields, counted, undefined, "");
  };
  /** A value starts in the innermost container. */
  const value = () => {
    if (top === undefined || !top.array) return;
    top.count++;
    if (top.list !== undefined) countOne(top);
    else if (top.struct !== undefined) countStruct(top);
  };
  /** One more value in a Struct field. */
  const countStruct = (f: Frame) => {
    const limit = f.struct!.limit!;
    const sum = (totals[limit] ?? 0) + 1;
    totals[limit] = sum;
    if (sum > limits[limit]) throw overTotal(f.structPath, limit, limits);
  };
  /** One more element (or key) in the counted list `f`: a count of the request is checked now. */
  const countOne = (f: Frame) => {
    const spec = f.list!;
    if (spec.total === true) {
      const sum = (totals[spec.limit!] ?? 0) + 1;
      totals[spec.limit!] = sum;
      if (sum > limits[spec.limit!]) throw overTotal(f.path, spec.limit!, limits);
    }
  };
  const close = () => {
    const f = stack.pop();
    if (f === undefined) return false;
    // A list over its own limit, counted to its end (its elements' lists were not looked into).
    const spec = f.list;
    if (spec !== undefined && spec.total !== true && f.count > limits[spec.limit!]) throw overList(f.path, spec.limit!, limits, f.count);
    top = stack.at(-1);
    if (top !== undefined && !top.array) top.key = undefined;
    return true;
  };
  const n = text.length;
  let i = 0;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 0x7b || c === 0x5b) {
      // { [
      value();
      top = open(c === 0x5b);
      stack.push(top);
      i++;
    } else if (c === 0x7d || c === 0x5d) {
      // } ]
      if (!close()) return duplicate;
      i++;
    } else if (c === 0x22) {
      // "
      const end = stringEnd(text, i);
      if (end < 0) return duplicate;
      if (top !== undefined && !top.array && top.key === undefined) {
        let key = text.slice(i + 1, end);
        if (key.includes("\\")) {
          try {
            key = JSON.parse(text.slice(i, end + 1)) as string;
          } catch {
            return duplicate;
          }
        }
        top.key = key;
        if (top.list !== undefined) {
          // A counted map: its keys are its entries.
          top.count++;
          countOne(top);
        } else if (top.struct !== undefined) {
          countStruct(top);
        }
        if (duplicates && duplicate === undefined && seenKey(top, key)) duplicate = key;
      } else {
        value();
      }
      i = end + 1;
    } else if (c === 0x2c) {
      // , ends a member's value
      if (top !== undefined && !top.array) top.key = undefined;
      i++;
    } else if (c === 0x3a || whitespace(c)) {
      i++;
    } else {
      // A number, true, false or null.
      value();
      i++;
      while (i < n) {
        const d = text.charCodeAt(i);
        if (d === 0x2c || d === 0x7d || d === 0x5d || whitespace(d)) break;
        i++;
      }
    }
  }
  return duplicate;
}

/**
 * Decodes a request from its JSON text as protobuf-es's fromJsonString does (duplicate keys
 * refused, with its error messages), its element counts checked first (throws their
 * GatewayError): the scan that finds duplicate keys counts the lists too, in a fraction of
 * fromJsonString's own duplicate-key scan (which reads strings character by character).
 */
export function decodeJsonRequest<T>(schema: DescMessage, text: string, limits: RequestLimits, fromJson: (json: unknown) => T): T {
  const lists = listsBySchema.get(schema) ?? [];
  const duplicate = scanJson(text, lists, limits, true);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`cannot decode message ${schema.typeName} from JSON: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
  if (duplicate !== undefined) {
    throw new Error(`cannot decode message ${schema.typeName} from JSON: duplicate object key "${duplicate}"`);
  }
  return fromJson(json);
}

/** Checks the element counts of an OpenAI Chat Completions body's JSON text (before JSON.parse). */
export function checkOpenAIChatLimits(text: string, limits: RequestLimits): void {
  scanJson(text, openaiChatLists, limits, false);
}
