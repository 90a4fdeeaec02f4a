import { writeSync } from "node:fs";

/** Writes bytes to the destination; returns how many were written (may be fewer). Throws system errors. */
export type WriteFn = (buf: Buffer, offset: number) => number;

export interface LineWriterOptions {
  /** Lines are written once this many bytes wait (default 4096, Linux's PIPE_BUF: atomic on a pipe)... */
  batchBytes?: number;
  /** ...or this long after the first line of a batch (default 25 ms). */
  flushAfterMs?: number;
  /** Most bytes kept waiting while the destination does not take them; lines beyond are dropped (default 16 MiB). */
  maxPendingBytes?: number;
  /** Longest a flush blocks on a full non-blocking destination before it keeps the rest for later (default 1000 ms). */
  maxBlockMs?: number;
  /** The write; default fs.writeSync on `fd`. */
  write?: WriteFn;
  /** Blocks the thread; default Atomics.wait. */
  sleep?: (ms: number) => void;
  /** Wall clock, ms; default Date.now. */
  now?: () => number;
}

export interface LineWriter {
  /** Queues one line (with its newline). Written within flushAfterMs, or at once past batchBytes. */
  write(line: string): void;
  /** Writes everything that waits, now (bounded by maxBlockMs on a full destination). */
  flush(): void;
  /** Lines dropped so far: over maxPendingBytes, failed writes, or after the destination broke. */
  readonly dropped: number;
  /** The destination is gone (EPIPE, EBADF): nothing more is written. */
  readonly broken: boolean;
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));

/**
 * Log lines to a file descriptor (stdout), batched: one write(2) per batch instead of one per
 * line. Writes are synchronous, so a reader that falls behind slows the process rather than
 * growing its memory, and nothing that waits is lost on exit. Unlike a plain synchronous stream it
 * never takes the process down and never freezes it for good:
 *
 * - a full non-blocking destination (EAGAIN) is waited for, at most `maxBlockMs` (a slow reader
 *   gets back-pressure); past that, what is left waits for the next flushes, which do not block
 *   until the destination takes bytes again, up to `maxPendingBytes`, past which new lines are
 *   dropped and counted (the count is written as a warning line once lines get through again);
 * - a destination that is gone (EPIPE, EBADF) stops the writing; any other write error drops that
 *   batch. No error ever escapes to the caller (a log line must not fail a call).
 */
export function createLineWriter(fd: number, options: LineWriterOptions = {}): LineWriter {
  const batchBytes = options.batchBytes ?? 4096;
  const flushAfterMs = options.flushAfterMs ?? 25;
  const maxPendingBytes = options.maxPendingBytes ?? 16 * 1024 * 1024;
  const maxBlockMs = options.maxBlockMs ?? 1_000;
  const write: WriteFn = options.write ?? ((buf, offset) => writeSync(fd, buf, offset));
  const sleep = options.sleep ?? ((ms: number) => void Atomics.wait(sleeper, 0, 0, ms));
  const now = options.now ?? Date.now;

  /** Lines of the batch being filled, and its size in bytes. */
  let batch: string[] = [];
  let batchSize = 0;
  /** Sealed batches not yet written (the first from `offset` on), and their size in bytes. */
  const queue: { buf: Buffer; lines: number }[] = [];
  let queued = 0;
  let offset = 0;
  let timer: NodeJS.Timeout | undefined;
  let dropped = 0;
  let reported = 0;
  let broken = false;
  /** A flush gave up on a full destination: until it takes bytes again, flushes do not wait. */
  let stalled = false;

  const arm = () => {
    if (timer === undefined) timer = setTimeout(flush, flushAfterMs).unref();
  };

  const seal = () => {
    if (batch.length === 0) return;
    queue.push({ buf: Buffer.from(batch.length === 1 ? batch[0]! : batch.join(""), "utf8"), lines: batch.length });
    queued += batchSize;
    batch = [];
    batchSize = 0;
  };

  /** Writes the sealed batches, in order, each with as few write(2) calls as the destination allows. */
  function drain(): void {
    let blockedSince: number | undefined;
    while (queue.length > 0) {
      const head = queue[0]!;
      try {
        const n = write(head.buf, offset);
        offset += n;
        if (n > 0) {
          stalled = false;
          blockedSince = undefined;
        }
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "EAGAIN" || code === "EWOULDBLOCK" || code === "EBUSY") {
          blockedSince ??= now();
          if (!stalled && now() - blockedSince < maxBlockMs) {
            sleep(10);
            continue;
          }
          // Still full: keep the rest for a later flush rather than block any longer, and do not
          // block again until the destination takes bytes (a stalled reader must not freeze us).
          stalled = true;
          arm();
          return;
        }
        if (code === "EPIPE" || code === "EBADF") {
          // Gone: nothing more can be written.
          broken = true;
          for (const q of queue) dropped += q.lines;
          dropped += batch.length;
          queue.length = 0;
          queued = 0;
          batch = [];
          batchSize = 0;
          return;
        }
        // Failing (ENOSPC, EIO): this batch is lost; the next ones are tried.
        dropped += head.lines;
        offset = head.buf.length;
      }
      if (offset >= head.buf.length) {
        queue.shift();
        queued -= head.buf.length;
        offset = 0;
      }
    }
  }

  function flush(): void {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    if (broken) return;
    if (dropped > reported && !stalled) {
      // Said before the lines that follow the gap.
      const report = `${JSON.stringify({ level: 40, time: now(), service: "infergate", dropped: dropped - reported, msg: "log lines were dropped: stdout did not take them" })}\n`;
      batch.unshift(report);
      batchSize += report.length;
      reported = dropped;
    }
    seal();
    drain();
  }

  return {
    write(line: string): void {
      if (broken) {
        dropped++;
        return;
      }
      const size = Buffer.byteLength(line, "utf8");
      if (queued + batchSize + size > maxPendingBytes) {
        dropped++;
        arm();
        return;
      }
      // A batch never grows past batchBytes (PIPE_BUF): a write that size or less to a pipe is
      // atomic, so lines of processes sharing stdout (--workers) never interleave mid-line. A
      // longer line is written alone.
      if (batchSize + size > batchBytes) seal();
      batch.push(line);
      batchSize += size;
      if (batchSize >= batchBytes) seal();
      if (queue.length > 0 && !stalled) {
        if (timer !== undefined) clearTimeout(timer);
        timer = undefined;
        drain();
      }
      if (batch.length > 0 || queue.length > 0) arm();
    },
    flush,
    get dropped() {
      return dropped;
    },
    get broken() {
      return broken;
    },
  };
}
