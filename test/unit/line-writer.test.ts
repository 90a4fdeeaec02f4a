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

  it("a write that fails part-way (ENOSPC) ends the torn line with a newline and counts only the lines not wholly written", () => {
    const { d, options } = destination();
    let calls = 0;
    w = createLineWriter(1, {
      ...options,
      write: (buf, offset) => {
        // The first write takes 30 bytes, the second fails: line 1 is whole, line 2 is torn.
        if (++calls === 1) {
          d.mode = "ok";
          return options.write(buf.subarray(0, offset + 30), offset);
        }
        if (calls === 2) throw errno("ENOSPC");
        return options.write(buf, offset);
      },
    });
    const first = line(1, 2);
    expect(first.length).toBeLessThan(30);
    w.write(first);
    w.write(line(2, 40));
    w.write(line(3, 40));
    w.flush();
    expect(w.dropped).toBe(2);
    w.write(line(4));
    w.flush();
    const lines = d.out.split("\n");
    // Line 1 whole; a piece of line 2 alone on its line; the report; line 4 on a line of its own.
    expect(lines[0]).toBe(first.trimEnd());
    expect(line(2, 40).startsWith(lines[1]!)).toBe(true);
    expect(JSON.parse(lines[2]!)).toMatchObject({ level: 40, dropped: 2 });
    expect(lines[3]).toBe(line(4).trimEnd());
    expect(lines[4]).toBe("");
  });

  it("the report of a gap stands where the gap is, and no write it joins is longer than a batch", () => {
    const { d, options } = destination();
    const sizes: number[] = [];
    w = createLineWriter(1, {
      ...options,
      maxPendingBytes: 8_000,
      maxBlockMs: 50,
      write: (buf, offset) => {
        sizes.push(buf.length - offset);
        return options.write(buf, offset);
      },
    });
    d.mode = "EAGAIN";
    for (let i = 1; i <= 40; i++) w.write(line(i, 400)); // about 17 fit; the rest are dropped
    w.flush();
    const dropped = w.dropped;
    expect(dropped).toBeGreaterThan(10);
    d.mode = "ok";
    w.write(line(100)); // after the gap: written after its report
    w.flush();
    let got = d.out.trim().split("\n").map((l) => JSON.parse(l) as { i?: number; dropped?: number });
    const at = got.findIndex((r) => r.dropped !== undefined);
    expect(got[at]!.dropped).toBe(dropped);
    expect(got.slice(0, at).map((r) => r.i)).toEqual(Array.from({ length: 40 - dropped }, (_, k) => k + 1));
    expect(got.slice(at + 1).map((r) => r.i)).toEqual([100]);
    // A batch lost to a failing write, then one nearly 4096 bytes long: the report is not joined to it.
    d.mode = "ENOSPC";
    w.write(line(101));
    w.flush();
    d.mode = "ok";
    w.write(line(102, 4_060));
    w.flush();
    got = d.out.trim().split("\n").map((l) => JSON.parse(l) as { i?: number; dropped?: number });
    expect(got.slice(-2)).toMatchObject([{ dropped: 1 }, { i: 102 }]);
    expect(Buffer.byteLength(line(102, 4_060))).toBeGreaterThan(4_050);
    expect(Math.max(...sizes)).toBeLessThanOrEqual(4096);
  });

  it("a reader that trickles after a stall is not waited for again until all that waited is written", () => {
    const { d, options } = destination();
    let budget = 0;
    w = createLineWriter(1, {
      ...options,
      maxBlockMs: 1_000,
      // The reader takes `budget` bytes, then is full.
      write: (buf, offset) => {
        if (budget === 0) throw errno("EAGAIN");
        const n = Math.min(budget, buf.length - offset);
        budget -= n;
        return options.write(buf.subarray(0, offset + n), offset);
      },
    });
    for (let i = 1; i <= 30; i++) w.write(line(i, 400));
    w.flush();
    expect(d.clock).toBeGreaterThanOrEqual(1_000);
    const sleeps = d.sleeps;
    for (let k = 0; k < 20; k++) {
      budget = 100;
      w.flush();
    }
    // Each flush wrote what the reader took and did not wait for more.
    expect(d.sleeps).toBe(sleeps);
    expect(d.out.length).toBe(2_000);
    // Caught up, the writer waits for a full reader again.
    budget = Number.MAX_SAFE_INTEGER;
    w.flush();
    budget = 0;
    w.write(line(31));
    w.flush();
    expect(d.sleeps).toBeGreaterThan(sleeps);
    budget = Number.MAX_SAFE_INTEGER;
    w.flush();
    expect(w.dropped).toBe(0);
    expect(d.out.trim().split("\n")).toHaveLength(31);
  });

  it("after a stall, a reader that reads again gets the backlog at its own pace, not one pipe's worth per 25 ms", async () => {
    const { d, options } = destination();
    // A pipe of 4 KiB whose reader, once back, empties it every millisecond (real time).
    let back = false;
    let free = 0;
    let emptiedAt = 0;
    w = createLineWriter(1, {
      ...options,
      maxBlockMs: 100,
      write: (buf, offset) => {
        if (back && Date.now() > emptiedAt) {
          free = 4096;
          emptiedAt = Date.now();
        }
        if (free === 0) throw errno("EAGAIN");
        const n = Math.min(free, buf.length - offset);
        free -= n;
        return options.write(buf.subarray(0, offset + n), offset);
      },
    });
    for (let i = 1; i <= 200; i++) w.write(line(i, 400)); // about 82 KB: 20 pipes' worth
    w.flush();
    expect(d.out.length).toBe(0);
    back = true;
    // At one pipe per 25 ms this would take half a second (16 pipes, 160 lines, by 400 ms).
    await new Promise((r) => setTimeout(r, 400));
    expect(d.out.trim().split("\n")).toHaveLength(200);
    expect(w.dropped).toBe(0);
  });

  it("end() at exit waits once more even when stalled, and counts what is still not written", () => {
    const { d, options } = destination();
    w = createLineWriter(1, { ...options, maxBlockMs: 200 });
    d.mode = "EAGAIN";
    w.write(line(1));
    w.flush();
    const clock = d.clock;
    w.write(line(2));
    w.write(line(3));
    w.end();
    expect(d.clock - clock).toBeGreaterThanOrEqual(200);
    expect(w.dropped).toBe(3);
    w = undefined;
  });

  it("a line longer than maxLineBytes is replaced by a warning with its size and start (issue 17)", () => {
    const { d, options } = destination();
    w = createLineWriter(1, { ...options, maxLineBytes: 1000 });
    w.write(line(1));
    w.write(line(2, 5000));
    w.write(line(3));
    w.flush();
    const out = d.out.split("\n").filter((l) => l !== "");
    expect(out).toHaveLength(3);
    expect(out[0]).toBe(line(1).trimEnd());
    const warning = JSON.parse(out[1]!) as Record<string, unknown>;
    expect(warning).toMatchObject({ level: 40, msg: "log line too long: left out", bytes: line(2, 5000).length });
    expect(String(warning["start"])).toBe(line(2, 5000).slice(0, 1024));
    expect(out[2]).toBe(line(3).trimEnd());
  });
});
