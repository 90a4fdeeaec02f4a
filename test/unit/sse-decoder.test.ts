import { describe, expect, it } from "vitest";
import { createSseDecoder, type SseEvent, SseDecodeError } from "../../src/upstreams/sse/sse-decoder.js";

const enc = new TextEncoder();

function decodeWhole(bytes: Uint8Array, splits: number[] = [], maxEventSize = 1 << 20): SseEvent[] {
  const d = createSseDecoder({ maxEventSize });
  const out: SseEvent[] = [];
  let at = 0;
  for (const s of [...splits, bytes.length]) {
    out.push(...d.push(bytes.subarray(at, s)));
    at = s;
  }
  out.push(...d.end());
  return out;
}

const ev = (data: string, event = "message", id?: string): SseEvent => ({ event, data, id });

describe("SSE decoder", () => {
  it.each([
    ["LF", "data: a\n\ndata: b\n\n", [ev("a"), ev("b")]],
    ["CRLF", "data: a\r\n\r\ndata: b\r\n\r\n", [ev("a"), ev("b")]],
    ["CR", "data: a\r\rdata: b\r\r", [ev("a"), ev("b")]],
    ["mixed line ends", "data: a\r\n\rdata: b\n\r\n", [ev("a"), ev("b")]],
    ["multi-line data joined by LF", "data: one\ndata: two\ndata:three\n\n", [ev("one\ntwo\nthree")]],
    ["comments and unknown fields", ": keep-alive\nretry: 10\nfoo: bar\ndata: x\n\n:\n\n", [ev("x")]],
    ["event names and ids", "event: message_start\nid: 7\ndata: {}\n\nevent: ping\ndata: {\"type\":\"ping\"}\n\n", [ev("{}", "message_start", "7"), ev('{"type":"ping"}', "ping", "7")]],
    ["only one leading space is removed", "data:  two spaces\n\n", [ev(" two spaces")]],
    ["a data field without colon dispatches empty data", "data\n\n", [ev("")]],
    ["an event without data is not dispatched", "event: x\n\ndata: y\n\n", [ev("y")]],
    ["an event without its blank line at the end is dropped", "data: done\n\ndata: partial\n", [ev("done")]],
    ["a BOM at the start", "\uFEFFdata: a\n\n", [ev("a")]],
    ["multi-byte UTF-8", "data: héllo → 世界 🎉\n\n", [ev("héllo → 世界 🎉")]],
  ])("%s", (_name, input, expected) => {
    expect(decodeWhole(enc.encode(input))).toEqual(expected);
  });

  it("gives the same events whatever offset the bytes are split at (inside CRLF and inside characters)", () => {
    const input = "event: a\r\ndata: 世界 🎉\r\ndata: x\r\n\r\n: c\rdata: [DONE]\n\n";
    const bytes = enc.encode(input);
    const expected = decodeWhole(bytes);
    expect(expected).toEqual([ev("世界 🎉\nx", "a"), ev("[DONE]")]);
    for (let i = 0; i <= bytes.length; i++) {
      for (let j = i; j <= bytes.length; j += 3) {
        expect(decodeWhole(bytes, [i, j])).toEqual(expected);
      }
    }
    // One byte at a time.
    expect(decodeWhole(bytes, Array.from({ length: bytes.length }, (_, k) => k))).toEqual(expected);
  });

  it("rejects an event larger than the limit, in data lines or in one unterminated line", () => {
    expect(() => decodeWhole(enc.encode(`data: ${"x".repeat(50)}\ndata: ${"y".repeat(50)}\n\n`), [], 80)).toThrow(SseDecodeError);
    const d = createSseDecoder({ maxEventSize: 100 });
    expect(() => {
      for (let i = 0; i < 20; i++) d.push(enc.encode("data: xxxxxxxxxx"));
    }).toThrow(/larger than 100/);
  });
});
