/**
 * The batched log writer (src/observability/line-writer.ts), with the write(2) replaced by a
 * function that records what it is given and fails as a real descriptor does (EAGAIN on a full
 * non-blocking pipe, EPIPE once the reader is gone, ENOSPC). The clock and the blocking sleep are
 * fake: a stalled destination costs no real time here.
 */
import { afterEach, describe, expect, it } from "vitest";
import { createLineWriter, type LineWriter, type WriteFn } from "../../src/observability/line-writer.js";

const errno = (code: string) => Object.assign(new Error(code), { code });

/** A destination: `mode` decides each write's fate; `out` is everything it took. */
function destination() {
  const chunks: Buffer[] = [];
  const d = {
    get out() {
      return Buffer.concat(chunks).toString("utf8");
    },
    writes: 0,
    mode: "ok" as "ok" | "half" | "EAGAIN" | "EPIPE" | "ENOSPC",
    clock: 0,
    sleeps: 0,
  };
  const write: WriteFn = (buf, offset) => {
    d.writes++;
    if (d.mode === "EAGAIN" || d.mode === "EPIPE" || d.mode === "ENOSPC") throw errno(d.mode);
    const n = d.mode === "half" ? Math.max(1, Math.floor((buf.length - offset) / 2)) : buf.length - offset;
    chunks.push(Buffer.from(buf.subarray(offset, offset + n)));
    return n;
  };
  const sleep = (ms: number) => {
    d.sleeps++;
    d.clock += ms;
  };
  return { d, options: { write, sleep, now: () => d.clock } };
}

const line = (i: number, pad = 0) => `${JSON.stringify({ i, pad: "x".repeat(pad) })}\n`;

describe("line writer", () => {
  let w: LineWriter | undefined;
  afterEach(() => w?.flush());

  it("batches lines: nothing is written before 25 ms, then one write with all of them", async () => {
    const { d, options } = destination();
    w = createLineWriter(1, options);
    w.write(line(1));
    w.write(line(2));
    w.write(line(3));
    expect(d.writes).toBe(0);
    await new Promise((r) => setTimeout(r, 60));
    expect(d.writes).toBe(1);
    expect(d.out).toBe(line(1) + line(2) + line(3));
  });

  it("writes at once when 4 KiB wait, each write at most 4096 bytes (PIPE_BUF) cut at line ends; flush() writes what waits", () => {
    const { d, options } = destination();
    const sizes: number[] = [];
    w = createLineWriter(1, {
      ...options,
      write: (buf, offset) => {
        sizes.push(buf.length - offset);
        expect(buf.subarray(offset).toString("utf8").endsWith("\n")).toBe(true);
        return options.write(buf, offset);
      },
    });
    w.write(line(1, 1_500));
    w.write(line(2, 1_500));
    expect(d.writes).toBe(0);
    w.write(line(3, 1_500)); // does not fit with the first two: they are written now
    expect(d.writes).toBe(1);
    for (let i = 4; i < 40; i++) w.write(line(i, 100 + i * 7));
    w.write(line(40, 6_000)); // longer than a batch: written alone
    w.write(line(41));
    w.flush();
    expect(sizes.every((n, i) => n <= 4096 || i === sizes.length - 2)).toBe(true);
    expect(sizes.at(-2)).toBe(Buffer.byteLength(line(40, 6_000)));
    const expected = [line(1, 1_500), line(2, 1_500), line(3, 1_500)];
    for (let i = 4; i < 40; i++) expected.push(line(i, 100 + i * 7));
    expect(d.out).toBe(expected.join("") + line(40, 6_000) + line(41));
  });

  it("a short write is completed with further writes, in order, multi-byte text intact", () => {
    const { d, options } = destination();
    d.mode = "half";
    w = createLineWriter(1, options);
    const text = `${JSON.stringify({ msg: "naïve café – 日本語" })}\n`;
    w.write(text);
    w.write(line(2));
    w.flush();
    expect(d.writes).toBeGreaterThan(2);
    expect(d.out).toBe(text + line(2));
  });

  it("a full non-blocking destination (EAGAIN) is waited for: the lines arrive once it takes them", () => {
    const { d, options } = destination();
    w = createLineWriter(1, options);
    let fails = 3;
    const inner = options.write;
    w = createLineWriter(1, {
      ...options,
      write: (buf, offset) => {
        if (fails > 0) {
          fails--;
          throw errno("EAGAIN");
        }
        return inner(buf, offset);
      },
    });
    w.write(line(1));
    w.flush();
    expect(d.sleeps).toBe(3);
    expect(d.out).toBe(line(1));
    expect(w.dropped).toBe(0);
  });

  it("a stalled reader blocks one flush for at most maxBlockMs, then never again; past the bound lines are dropped, counted and reported", () => {
    const { d, options } = destination();
    w = createLineWriter(1, { ...options, maxBlockMs: 1_000, maxPendingBytes: 10_000 });
    d.mode = "EAGAIN";
    w.write(line(1));
    w.flush();
    // Blocked for a second of (fake) time, then gave up and kept the line.
    expect(d.clock).toBeGreaterThanOrEqual(1_000);
    expect(d.clock).toBeLessThan(1_100);
    const sleeps = d.sleeps;
    for (let i = 2; i <= 200; i++) w.write(line(i, 100));
    w.flush();
    w.flush();
    // Stalled: later flushes try once and do not wait.
    expect(d.sleeps).toBe(sleeps);
    expect(w.dropped).toBeGreaterThan(100);
    const dropped = w.dropped;
    // The reader comes back: what was kept arrives in order, then the report of the gap.
    d.mode = "ok";
    w.flush();
    w.write(line(999));
    w.flush();
    const got = d.out.trim().split("\n").map((l) => JSON.parse(l) as { i?: number; dropped?: number; level?: number });
    const kept = got.filter((r) => r.i !== undefined).map((r) => r.i);
    expect(kept[0]).toBe(1);
    expect(kept).toEqual([...kept].sort((a, b) => a! - b!));
    expect(kept.length + dropped).toBe(200 + 1);
    expect(kept.at(-1)).toBe(999);
    const report = got.find((r) => r.dropped !== undefined);
    expect(report).toMatchObject({ level: 40, dropped });
    expect(w.dropped).toBe(dropped);
  });

  it("a destination that is gone (EPIPE) stops the writing without an error reaching the caller", () => {
    const { d, options } = destination();
    w = createLineWriter(1, options);
    d.mode = "EPIPE";
    w.write(line(1));
    expect(() => w!.flush()).not.toThrow();
    expect(w.broken).toBe(true);
    const writes = d.writes;
    w.write(line(2));
    w.flush();
    expect(d.writes).toBe(writes);
    expect(w.dropped).toBe(2);
  });

  it("any other write error (ENOSPC) loses that batch only; the next one is written", () => {
    const { d, options } = destination();
    w = createLineWriter(1, options);
    d.mode = "ENOSPC";
    w.write(line(1));
    expect(() => w!.flush()).not.toThrow();
    expect(w.broken).toBe(false);
    d.mode = "ok";
    w.write(line(2));
    w.flush();
    expect(d.out).toContain(line(2));
    expect(d.out).not.toContain(line(1));
    expect(w.dropped).toBe(1);
  });
});
