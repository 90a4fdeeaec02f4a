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
  /**
   * Longest line written (default 64 KiB); a longer one is replaced by a warning line with its
   * size and its first KiB. A backstop: what a caller sends is cut before it is logged (issue 17).
   */
  maxLineBytes?: number;
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
  /** Writes everything that waits, now (bounded by maxBlockMs on a full destination, not at all once stalled). */
  flush(): void;
  /** The last flush, at exit: waits up to maxBlockMs even when stalled; what is still not written counts as dropped. */
  end(): void;
  /** Lines dropped so far: over maxPendingBytes, failed writes, after the destination broke, or left at end(). */
  readonly dropped: number;
  /** The destination is gone (EPIPE, EBADF): nothing more is written. */
  readonly broken: boolean;
}

/** A sealed batch waiting to be written; a report item's bytes are made when it is written. */
interface Item {
  buf: Buffer;
  /** Its bytes as counted in `queued` (a report's count nothing). */
  size: number;
  /** Prefixed with a newline that ends a line torn by a failed write. */
  prefixed?: boolean;
  /** The report of a gap (lines dropped just before this point); `count` once made. */
  report?: boolean;
  count?: number;
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));
/** How soon a stalled writer tries again after a flush in which the destination took bytes. */
const STALLED_RETRY_MS = 1;
const NEWLINE = 0x0a;
const EMPTY = Buffer.alloc(0);

/** How many lines of `buf` end at or after `from` (each line ends with a newline). */
function linesFrom(buf: Buffer, from: number): number {
  let n = 0;
  for (let i = buf.indexOf(NEWLINE, from); i !== -1; i = buf.indexOf(NEWLINE, i + 1)) n++;
  return n;
}

/**
 * Log lines to a file descriptor (stdout), batched: one write(2) per batch instead of one per
 * line. Writes are synchronous, so nothing that waits is lost on exit, and a reader that falls a
 * little behind slows the process for a moment rather than growing its memory. It never takes the
 * process down, and on a non-blocking destination it never freezes it for long:
 *
 * - a full non-blocking destination (EAGAIN) is waited for, at most `maxBlockMs` per flush (a
 *   reader that keeps up but lags gets back-pressure); past that the writer is *stalled*: what is
 *   left waits for later flushes, which write what the destination takes without waiting (the
 *   next one within a millisecond when it took some, so a backlog drains at the reader's pace),
 *   until everything that waited is written; up to `maxPendingBytes` wait, past which new lines are
 *   dropped and counted, and a warning line saying how many is written where the gap is;
 * - a destination that is gone (EPIPE, EBADF) stops the writing; any other write error (ENOSPC,
 *   EIO) drops the lines of that batch not yet written (a line torn by it is ended with a newline,
 *   so the next line starts on its own). No error ever escapes to the caller (a log line must not
 *   fail a call).
 *
 * On a blocking descriptor (a pipe whose O_NONBLOCK is clear) write(2) itself waits for the reader
 * and none of the above applies: the logger (src/observability/logger.ts) makes a stdout pipe or
 * socket non-blocking for that reason.
 */
export function createLineWriter(fd: number, options: LineWriterOptions = {}): LineWriter {
  const batchBytes = options.batchBytes ?? 4096;
  const flushAfterMs = options.flushAfterMs ?? 25;
  const maxPendingBytes = options.maxPendingBytes ?? 16 * 1024 * 1024;
  const maxLineBytes = options.maxLineBytes ?? 64 * 1024;
  const maxBlockMs = options.maxBlockMs ?? 1_000;
  const write: WriteFn = options.write ?? ((buf, offset) => writeSync(fd, buf, offset));
  const sleep = options.sleep ?? ((ms: number) => void Atomics.wait(sleeper, 0, 0, ms));
  const now = options.now ?? Date.now;

  /** Lines of the batch being filled, and its size in bytes. */
  let batch: string[] = [];
  let batchSize = 0;
  /** Sealed batches not yet written (the first from `offset` on), and their size in bytes. */
  const queue: Item[] = [];
  let queued = 0;
  let offset = 0;
  let timer: NodeJS.Timeout | undefined;
  let dropped = 0;
  let reported = 0;
  /** A report item waits in the queue for the gap now open. */
  let gapOpen = false;
  /** A failed write left a line without its end: the next batch starts with a newline. */
  let torn = false;
  let broken = false;
  /** A flush gave up on a full destination: until all that waits is written, flushes do not wait. */
  let stalled = false;

  const arm = (ms = flushAfterMs) => {
    if (timer === undefined) timer = setTimeout(flush, ms).unref();
  };

  const seal = () => {
    if (batch.length === 0) return;
    const buf = Buffer.from(batch.length === 1 ? batch[0]! : batch.join(""), "utf8");
    queue.push({ buf, size: buf.length });
    queued += buf.length;
    batch = [];
    batchSize = 0;
  };

  /** Lines were dropped here: a report of them goes here in the queue, after what came before. */
  const gap = (at: number) => {
    if (gapOpen) return;
    gapOpen = true;
    queue.splice(at, 0, { buf: EMPTY, size: 0, report: true });
  };

  /** Makes the report item's line (or empties it when there is nothing to say). */
  const makeReport = (item: Item) => {
    gapOpen = false;
    item.count = dropped - reported;
    reported = dropped;
    if (item.count > 0) {
      const line = { level: 40, time: now(), service: "infergate", dropped: item.count, msg: "log lines were dropped: stdout did not take them" };
      item.buf = Buffer.from(`${JSON.stringify(line)}\n`, "utf8");
    }
  };

  /** Writes the sealed items, in order, each with as few write(2) calls as the destination allows. */
  function drain(): void {
    const started = now();
    let progressed = false;
    while (queue.length > 0) {
      const head = queue[0]!;
      if (offset === 0) {
        if (head.report && head.count === undefined) makeReport(head);
        if (torn && !head.prefixed && head.buf.length > 0) {
          head.buf = Buffer.concat([Buffer.of(NEWLINE), head.buf]);
          head.prefixed = true;
        }
      }
      if (offset < head.buf.length) {
        try {
          const n = write(head.buf, offset);
          if (n <= 0) throw Object.assign(new Error("nothing written"), { code: "EAGAIN" });
          if (offset === 0) torn = false;
          offset += n;
          progressed = true;
          if (offset < head.buf.length) continue;
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === "EAGAIN" || code === "EWOULDBLOCK" || code === "EBUSY") {
            if (!stalled && now() - started < maxBlockMs) {
              sleep(10);
              continue;
            }
            // Still full: keep the rest for a later flush rather than block any longer, and do
            // not block again until all that waits is written (a slow reader must not freeze us).
            // A reader that took bytes is tried again within a millisecond, so that a backlog
            // drains as fast as it reads; one that took nothing, after the usual interval.
            stalled = true;
            arm(progressed ? STALLED_RETRY_MS : flushAfterMs);
            return;
          }
          if (code === "EPIPE" || code === "EBADF") {
            // Gone: nothing more can be written.
            broken = true;
            dropAll();
            return;
          }
          // Failing (ENOSPC, EIO): the lines of this item not yet written are lost; the next
          // items are tried. A report that fails is owed again with the next one.
          if (head.report) {
            reported -= head.count ?? 0;
          } else {
            const lost = linesFrom(head.buf, Math.max(offset, head.prefixed ? 1 : 0));
            dropped += lost;
            if (lost > 0) gap(1);
          }
          if (offset > 0 && head.buf[offset - 1] !== NEWLINE) torn = true;
          offset = head.buf.length;
        }
      }
      queue.shift();
      queued -= head.size;
      offset = 0;
    }
    // Everything that waited is written: a later full destination is waited for again.
    stalled = false;
  }

  /** Lines queued or batched and not yet (wholly) written. */
  function pendingLines(): number {
    let n = batch.length;
    queue.forEach((item, i) => {
      if (!item.report) n += linesFrom(item.buf, i === 0 ? Math.max(offset, item.prefixed ? 1 : 0) : item.prefixed ? 1 : 0);
    });
    return n;
  }

  /** Everything that waits is given up on, and counted. */
  function dropAll(): void {
    dropped += pendingLines();
    queue.length = 0;
    queued = 0;
    offset = 0;
    batch = [];
    batchSize = 0;
  }

  function flush(): void {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    if (broken) return;
    seal();
    // Drops not yet reported and no report waiting (the last one failed to be written): one more.
    if (dropped > reported && !gapOpen) gap(offset > 0 ? 1 : 0);
    drain();
  }

  return {
    write(line: string): void {
      if (broken) {
        dropped++;
        return;
      }
      let size = Buffer.byteLength(line, "utf8");
      if (size > maxLineBytes) {
        const warning = { level: 40, time: now(), service: "infergate", bytes: size, start: line.slice(0, 1024), msg: "log line too long: left out" };
        line = `${JSON.stringify(warning)}\n`;
        size = Buffer.byteLength(line, "utf8");
      }
      if (queued + batchSize + size > maxPendingBytes) {
        dropped++;
        // The lines before the gap, then its report, then the lines after it.
        seal();
        gap(queue.length);
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
    end(): void {
      if (broken) return;
      stalled = false;
      flush();
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      // The process is exiting: what the destination did not take is lost.
      dropAll();
    },
    get dropped() {
      return dropped;
    },
    get broken() {
      return broken;
    },
  };
}
