/**
 * The OTLP/protobuf encoding of a batch of spans (an ExportTraceServiceRequest of
 * opentelemetry-proto, `opentelemetry/proto/collector/trace/v1/trace_service.proto` and the
 * messages it uses), written in one pass into one growing buffer: the exporter's own serializer
 * (@opentelemetry/otlp-transformer) measures the batch in a first pass and writes strings and ids
 * byte by byte in JavaScript, about 8 µs per call's two spans; this one writes them with the
 * Buffer's native UTF-8 and hex writers and reuses the encoded attribute keys, which repeat in
 * every span (docs/benchmarks.md, "Issue 20: tracing"). Same fields, same values:
 * test/unit/otlp-span-encoder.test.ts decodes both and compares.
 */
import type { Attributes, AttributeValue, HrTime } from "@opentelemetry/api";
import type { ReadableSpan } from "@opentelemetry/sdk-trace-base";

/** Wire types. */
const VARINT = 0;
const I64 = 1;
const LEN = 2;
const I32 = 5;

/** Span flags of the OTLP Span message (trace.proto, SpanFlags). */
const HAS_IS_REMOTE = 0x100;
const IS_REMOTE = 0x200;

/** A hex digit's value (ids are lower-case hex; upper case read too; anything else as 0). */
function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return 0;
}

class Writer {
  buf: Buffer;
  pos = 0;

  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }

  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  /** A varint of a number from 0 to 2^53 (lengths, counts, enums, non-negative ints). */
  varint(v: number): void {
    this.ensure(10);
    const b = this.buf;
    while (v >= 0x80) {
      b[this.pos++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    b[this.pos++] = v;
  }

  /** An int64 varint: negative numbers in ten bytes (two's complement), as protobuf writes them. */
  int64(v: number): void {
    if (v >= 0) {
      this.varint(v);
      return;
    }
    this.ensure(10);
    let big = BigInt.asUintN(64, BigInt(v));
    for (let i = 0; i < 9; i++) {
      this.buf[this.pos++] = Number(big & 0x7fn) | 0x80;
      big >>= 7n;
    }
    this.buf[this.pos++] = Number(big);
  }

  tag(field: number, wire: number): void {
    this.varint((field << 3) | wire);
  }

  string(field: number, s: string): void {
    this.tag(field, LEN);
    this.ensure(s.length * 3 + 5);
    // Short ASCII strings (most keys and values) byte by byte: cheaper than a call into the
    // native writer. Lengths below 128 take one byte.
    if (s.length < 128) {
      const b = this.buf;
      const start = this.pos + 1;
      let i = 0;
      for (; i < s.length; i++) {
        const c = s.charCodeAt(i);
        if (c > 0x7f) break;
        b[start + i] = c;
      }
      if (i === s.length) {
        b[this.pos] = i;
        this.pos = start + i;
        return;
      }
      if (s.length < 43) {
        // At most 126 bytes of UTF-8: still a one-byte length, written once the length is known.
        const n = b.write(s, start, "utf8");
        b[this.pos] = n;
        this.pos = start + n;
        return;
      }
    }
    this.varint(Buffer.byteLength(s, "utf8"));
    this.pos += this.buf.write(s, this.pos, "utf8");
  }

  /** A bytes field from a hex id (trace and span ids). */
  hex(field: number, id: string): void {
    this.tag(field, LEN);
    const n = id.length >>> 1;
    this.ensure(n + 1);
    const b = this.buf;
    b[this.pos++] = n;
    for (let i = 0; i < n; i++) b[this.pos + i] = (hexValue(id.charCodeAt(2 * i)) << 4) | hexValue(id.charCodeAt(2 * i + 1));
    this.pos += n;
  }

  raw(bytes: Buffer): void {
    this.ensure(bytes.length);
    if (bytes.length > 64) {
      this.pos += bytes.copy(this.buf, this.pos);
      return;
    }
    const b = this.buf;
    for (let i = 0; i < bytes.length; i++) b[this.pos + i] = bytes[i]!;
    this.pos += bytes.length;
  }

  /** Starts a length-delimited field; returns where its content begins (one byte is kept for its length). */
  open(field: number): number {
    this.tag(field, LEN);
    this.ensure(1);
    return ++this.pos;
  }

  /** Ends the field `open` started: writes its length, moving the content when it needs more than a byte. */
  close(start: number): void {
    const length = this.pos - start;
    if (length < 0x80) {
      this.buf[start - 1] = length;
      return;
    }
    let size = 1;
    for (let v = length; v >= 0x80; v = Math.floor(v / 0x80)) size++;
    this.ensure(size - 1);
    this.buf.copyWithin(start - 1 + size, start, this.pos);
    let at = start - 1;
    let v = length;
    while (v >= 0x80) {
      this.buf[at++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[at] = v;
    this.pos += size - 1;
  }

  /** A fixed64 of an HrTime ([seconds, nanoseconds]) as nanoseconds, exact (no double rounding). */
  time(field: number, t: HrTime): void {
    this.tag(field, I64);
    this.ensure(8);
    const [s, ns] = t;
    // s × 10^9 + ns in two 32-bit halves: s = sHi × 2^16 + sLo, every product exact in a double.
    const a = Math.floor(s / 0x10000) * 1e9;
    const b = (s % 0x10000) * 1e9 + ns;
    const low = (a % 0x10000) * 0x10000 + (b % 0x100000000);
    const lo = low % 0x100000000;
    const hi = Math.floor(a / 0x10000) + Math.floor(b / 0x100000000) + Math.floor(low / 0x100000000);
    this.buf.writeUInt32LE(lo, this.pos);
    this.buf.writeUInt32LE(hi >>> 0, this.pos + 4);
    this.pos += 8;
  }

  fixed32(field: number, v: number): void {
    this.tag(field, I32);
    this.ensure(4);
    this.buf.writeUInt32LE(v >>> 0, this.pos);
    this.pos += 4;
  }

  double(field: number, v: number): void {
    this.tag(field, I64);
    this.ensure(8);
    this.buf.writeDoubleLE(v, this.pos);
    this.pos += 8;
  }

  finish(): Uint8Array {
    return new Uint8Array(this.buf.buffer, this.buf.byteOffset, this.pos);
  }
}

/** An attribute key as KeyValue's field 1, encoded once: the same keys come in every span. */
const encodedKeys = new Map<string, Buffer>();
const maxEncodedKeys = 1024;

function keyBytes(key: string): Buffer {
  let bytes = encodedKeys.get(key);
  if (bytes === undefined) {
    const w = new Writer(key.length * 3 + 6);
    w.string(1, key);
    bytes = Buffer.from(w.buf.subarray(0, w.pos));
    if (encodedKeys.size < maxEncodedKeys) encodedKeys.set(key, bytes);
  }
  return bytes;
}

function anyValue(w: Writer, v: AttributeValue | null | undefined): void {
  switch (typeof v) {
    case "string":
      w.string(1, v);
      return;
    case "boolean":
      w.tag(2, VARINT);
      w.varint(v ? 1 : 0);
      return;
    case "number":
      if (Number.isInteger(v) && v >= -(2 ** 63) && v < 2 ** 63) {
        w.tag(3, VARINT);
        w.int64(v);
      } else {
        w.double(4, v);
      }
      return;
    default:
      if (Array.isArray(v)) {
        const array = w.open(5);
        for (const item of v) {
          const at = w.open(1);
          anyValue(w, item);
          w.close(at);
        }
        w.close(array);
      }
  }
}

function attributes(w: Writer, field: number, attrs: Attributes): void {
  for (const key in attrs) {
    if (!Object.prototype.hasOwnProperty.call(attrs, key)) continue;
    const kv = w.open(field);
    w.raw(keyBytes(key));
    const value = w.open(2);
    anyValue(w, attrs[key]);
    w.close(value);
    w.close(kv);
  }
}

function span(w: Writer, s: ReadableSpan): void {
  const at = w.open(2);
  const ctx = s.spanContext();
  w.hex(1, ctx.traceId);
  w.hex(2, ctx.spanId);
  const state = ctx.traceState?.serialize();
  if (state) w.string(3, state);
  const parent = s.parentSpanContext;
  if (parent?.spanId) w.hex(4, parent.spanId);
  w.string(5, s.name);
  // The API's SpanKind counts from INTERNAL = 0; OTLP's from UNSPECIFIED = 0.
  w.tag(6, VARINT);
  w.varint(s.kind + 1);
  w.time(7, s.startTime);
  w.time(8, s.endTime);
  attributes(w, 9, s.attributes);
  if (s.droppedAttributesCount > 0) {
    w.tag(10, VARINT);
    w.varint(s.droppedAttributesCount);
  }
  for (const e of s.events) {
    const event = w.open(11);
    w.time(1, e.time);
    w.string(2, e.name);
    if (e.attributes !== undefined) attributes(w, 3, e.attributes);
    if ((e.droppedAttributesCount ?? 0) > 0) {
      w.tag(4, VARINT);
      w.varint(e.droppedAttributesCount!);
    }
    w.close(event);
  }
  if (s.droppedEventsCount > 0) {
    w.tag(12, VARINT);
    w.varint(s.droppedEventsCount);
  }
  for (const l of s.links) {
    const link = w.open(13);
    w.hex(1, l.context.traceId);
    w.hex(2, l.context.spanId);
    const linkState = l.context.traceState?.serialize();
    if (linkState) w.string(3, linkState);
    if (l.attributes !== undefined) attributes(w, 4, l.attributes);
    if ((l.droppedAttributesCount ?? 0) > 0) {
      w.tag(5, VARINT);
      w.varint(l.droppedAttributesCount!);
    }
    w.fixed32(6, (l.context.traceFlags & 0xff) | HAS_IS_REMOTE | (l.context.isRemote === true ? IS_REMOTE : 0));
    w.close(link);
  }
  if (s.droppedLinksCount > 0) {
    w.tag(14, VARINT);
    w.varint(s.droppedLinksCount);
  }
  const status = w.open(15);
  if (s.status.message) w.string(2, s.status.message);
  w.tag(3, VARINT);
  w.varint(s.status.code);
  w.close(status);
  w.fixed32(16, (ctx.traceFlags & 0xff) | HAS_IS_REMOTE | (parent?.isRemote === true ? IS_REMOTE : 0));
  w.close(at);
}

/** The ExportTraceServiceRequest of `spans`: one ResourceSpans per resource, one ScopeSpans per scope in it. */
export function encodeSpans(spans: readonly ReadableSpan[]): Uint8Array {
  const byResource = new Map<ReadableSpan["resource"], Map<ReadableSpan["instrumentationScope"], ReadableSpan[]>>();
  for (const s of spans) {
    let scopes = byResource.get(s.resource);
    if (scopes === undefined) byResource.set(s.resource, (scopes = new Map()));
    let list = scopes.get(s.instrumentationScope);
    if (list === undefined) scopes.set(s.instrumentationScope, (list = []));
    list.push(s);
  }
  const w = new Writer(spans.length * 600 + 256);
  for (const [resource, scopes] of byResource) {
    const resourceSpans = w.open(1);
    const r = w.open(1);
    attributes(w, 1, resource.attributes);
    w.close(r);
    for (const [scope, list] of scopes) {
      const scopeSpans = w.open(2);
      const sc = w.open(1);
      w.string(1, scope.name);
      if (scope.version) w.string(2, scope.version);
      w.close(sc);
      for (const s of list) span(w, s);
      if (scope.schemaUrl) w.string(3, scope.schemaUrl);
      w.close(scopeSpans);
    }
    if (resource.schemaUrl) w.string(3, resource.schemaUrl);
    w.close(resourceSpans);
  }
  return w.finish();
}
