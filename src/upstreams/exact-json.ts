/**
 * JSON read and written exactly, for the JSON of the tensor servers (TF Serving's REST API,
 * tfserving/; KServe v2 REST, kserve/), which treat numbers with more care than `JSON.parse` and
 * `JSON.stringify` do:
 *
 * - 64-bit integers travel with every digit, which `JSON.parse` rounds to a double: read as
 *   bigint beyond 2^53, and bigints written with all their digits;
 * - TF Serving writes non-finite floats as the bare tokens `NaN`, `Infinity` and `-Infinity`
 *   (api_rest "JSON conformance"), which `JSON.parse` rejects: read as numbers, from either kind;
 *   written, per dialect, as the same tokens (TF Serving) or as a bug (KServe REST, whose
 *   translator refuses them first);
 * - -0 is written `-0.0`, so that it reads back as a float with its sign.
 *
 * Undefined object entries are left out, as JSON.stringify does. Pure; no I/O.
 */
import { badResponse } from "./http/http-errors.js";

/** How one dialect writes what plain JSON cannot say. */
export interface ExactJsonOptions {
  /** `tokens`: NaN, Infinity, -Infinity as bare tokens; `throw`: an Error (a bug upstream of this). */
  readonly nonFinite: "tokens" | "throw";
  /**
   * Write `{ $double: n }` as the number n with a fraction or exponent (`2.0`), so that a server
   * that types JSON numbers by their spelling reads a double. For dialects that need it.
   */
  readonly doubleMarker?: boolean;
  /** Names the body in error messages. */
  readonly what: string;
}

/** A value as JSON text, exactly (see above), in the dialect of `options`. */
export function writeExactJson(value: unknown, options: ExactJsonOptions): string {
  const out: string[] = [];
  write(value, out, options);
  return out.join("");
}

function write(v: unknown, out: string[], o: ExactJsonOptions): void {
  switch (typeof v) {
    case "number":
      if (Object.is(v, -0)) out.push("-0.0");
      else if (Number.isFinite(v)) out.push(String(v));
      else if (o.nonFinite === "throw") throw new Error(`non-finite number ${v} in ${o.what}`);
      else out.push(Number.isNaN(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity");
      return;
    case "bigint":
      out.push(v.toString());
      return;
    case "boolean":
      out.push(v ? "true" : "false");
      return;
    case "string":
      out.push(JSON.stringify(v));
      return;
  }
  if (Array.isArray(v)) {
    out.push("[");
    v.forEach((e, i) => {
      if (i > 0) out.push(",");
      write(e, out, o);
    });
    out.push("]");
    return;
  }
  if (typeof v === "object" && v !== null) {
    const obj = v as Record<string, unknown>;
    if (o.doubleMarker === true && typeof obj["$double"] === "number") {
      const d = obj["$double"];
      write(d, out, o);
      if (Number.isInteger(d) && !Object.is(d, -0) && !/[.eE]/.test(String(d))) out.push(".0");
      return;
    }
    out.push("{");
    let first = true;
    for (const [k, e] of Object.entries(obj)) {
      if (e === undefined) continue;
      if (!first) out.push(",");
      first = false;
      out.push(JSON.stringify(k), ":");
      write(e, out, o);
    }
    out.push("}");
    return;
  }
  throw new Error(`cannot write ${typeof v} in ${o.what}`);
}

/** Where a text stopped being JSON, for the error the caller turns into a bad response. */
export class ExactJsonSyntaxError extends Error {
  override readonly name = "ExactJsonSyntaxError";
}

/** Deepest nesting read; tensors are at most rank 254 in TensorFlow, plus the envelope. */
const maxDepth = 300;

/**
 * Parses JSON exactly, the non-finite tokens included. Plain JSON goes through `JSON.parse`
 * (fast); a text with non-finite tokens, or one whose integers do not all fit a double exactly, is
 * read again by an exact parser that gives `NaN`/`±Infinity` numbers and bigints for integers
 * beyond 2^53. `null` values are kept as `null` (the translators reject them where a tensor
 * element is expected).
 */
export function parseExactJson(text: string): unknown {
  let fast: unknown;
  try {
    fast = JSON.parse(text);
  } catch {
    return new ExactParser(text).parseDocument();
  }
  return hasUnsafeInteger(fast, 0) ? new ExactParser(text).parseDocument() : fast;
}

/**
 * An upstream's JSON answer read with parseExactJson (lossless: INT64/UINT64 beyond 2^53 as
 * bigint, NaN/Infinity tokens as numbers); text that is not JSON is the upstream's fault: UNAVAILABLE
 * UPSTREAM_BAD_RESPONSE, the body's start kept for the log.
 */
export function parseUpstreamJson(upstream: string, text: string): unknown {
  try {
    return parseExactJson(text);
  } catch (err) {
    if (err instanceof ExactJsonSyntaxError) throw badResponse(upstream, `malformed JSON: ${err.message}`, text);
    throw err;
  }
}

/** Whether a parsed value holds an integer-valued number at or beyond 2^53 (maybe rounded). */
function hasUnsafeInteger(v: unknown, depth: number): boolean {
  if (typeof v === "number") return Number.isInteger(v) && !Number.isSafeInteger(v);
  if (typeof v !== "object" || v === null || depth > maxDepth) return false;
  if (Array.isArray(v)) {
    for (const e of v) if (hasUnsafeInteger(e, depth + 1)) return true;
    return false;
  }
  for (const e of Object.values(v)) if (hasUnsafeInteger(e, depth + 1)) return true;
  return false;
}

const numberToken = /-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/y;
const whitespace = /[ \t\n\r]*/y;

/** A recursive-descent reader of RFC 8259 JSON plus the three non-finite tokens (internal). */
class ExactParser {
  private at = 0;

  constructor(private readonly text: string) {}

  parseDocument(): unknown {
    const v = this.value(0);
    this.skip();
    if (this.at !== this.text.length) this.fail("unexpected text after the value");
    return v;
  }

  private fail(problem: string): never {
    throw new ExactJsonSyntaxError(`${problem} at position ${this.at}`);
  }

  private skip(): void {
    whitespace.lastIndex = this.at;
    whitespace.exec(this.text);
    this.at = whitespace.lastIndex;
  }

  private literal(word: string): boolean {
    if (this.text.startsWith(word, this.at)) {
      this.at += word.length;
      return true;
    }
    return false;
  }

  private value(depth: number): unknown {
    if (depth > maxDepth) this.fail(`nesting deeper than ${maxDepth}`);
    this.skip();
    const c = this.text[this.at];
    switch (c) {
      case "{":
        return this.object(depth);
      case "[":
        return this.array(depth);
      case '"':
        return this.string();
      case "t":
        if (this.literal("true")) return true;
        break;
      case "f":
        if (this.literal("false")) return false;
        break;
      case "n":
        if (this.literal("null")) return null;
        break;
      case "N":
        if (this.literal("NaN")) return Number.NaN;
        break;
      case "I":
        if (this.literal("Infinity")) return Number.POSITIVE_INFINITY;
        break;
      case "-":
        if (this.literal("-Infinity")) return Number.NEGATIVE_INFINITY;
        return this.number();
      default:
        if (c !== undefined && c >= "0" && c <= "9") return this.number();
    }
    return this.fail(c === undefined ? "unexpected end" : `unexpected character ${JSON.stringify(c)}`);
  }

  private number(): number | bigint {
    numberToken.lastIndex = this.at;
    const m = numberToken.exec(this.text);
    if (m === null) this.fail("malformed number");
    this.at = numberToken.lastIndex;
    const n = Number(m[0]);
    if (m[1] === undefined && m[2] === undefined && !Number.isSafeInteger(n)) {
      return BigInt(m[0]);
    }
    return n;
  }

  private string(): string {
    const start = this.at;
    let i = start + 1;
    for (;;) {
      const q = this.text.indexOf('"', i);
      if (q < 0) {
        this.at = this.text.length;
        this.fail("unterminated string");
      }
      // A quote ends the string unless an odd number of backslashes precede it.
      let slashes = 0;
      for (let j = q - 1; j > start && this.text[j] === "\\"; j--) slashes++;
      if (slashes % 2 === 0) {
        this.at = q + 1;
        break;
      }
      i = q + 1;
    }
    try {
      return JSON.parse(this.text.slice(start, this.at)) as string;
    } catch {
      this.at = start;
      return this.fail("malformed string");
    }
  }

  private array(depth: number): unknown[] {
    this.at++;
    const out: unknown[] = [];
    this.skip();
    if (this.text[this.at] === "]") {
      this.at++;
      return out;
    }
    for (;;) {
      out.push(this.value(depth + 1));
      this.skip();
      const c = this.text[this.at++];
      if (c === "]") return out;
      if (c !== ",") {
        this.at--;
        this.fail("expected , or ]");
      }
    }
  }

  private object(depth: number): Record<string, unknown> {
    this.at++;
    const out: Record<string, unknown> = {};
    this.skip();
    if (this.text[this.at] === "}") {
      this.at++;
      return out;
    }
    for (;;) {
      this.skip();
      if (this.text[this.at] !== '"') this.fail("expected a key");
      const key = this.string();
      this.skip();
      if (this.text[this.at++] !== ":") {
        this.at--;
        this.fail("expected :");
      }
      // defineProperty: a key "__proto__" is an ordinary key, as JSON.parse makes it.
      Object.defineProperty(out, key, { value: this.value(depth + 1), enumerable: true, writable: true, configurable: true });
      this.skip();
      const c = this.text[this.at++];
      if (c === "}") return out;
      if (c !== ",") {
        this.at--;
        this.fail("expected , or }");
      }
    }
  }
}
