import { writeSync } from "node:fs";

/** Writes bytes to the destination; returns how many were written (may be fewer). Throws system errors. */
export type WriteFn = (buf: Buffer, offset: number) => number;

export interface LineWriterOptions {
  /** Lines are written once this many bytes wait (default 8 KiB)... */
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
  const batchBytes = options.batchBytes ?? 8 * 1024;
  const flushAfterMs = options.flushAfterMs ?? 25;
  const maxPendingBytes = options.maxPendingBytes ?? 16 * 1024 * 1024;
  const maxBlockMs = options.maxBlockMs ?? 1_000;
  const write: WriteFn = options.write ?? ((buf, offset) => writeSync(fd, buf, offset));
  const sleep = options.sleep ?? ((ms: number) => void Atomics.wait(sleeper, 0, 0, ms));
  const now = options.now ?? Date.now;

  let lines: string[] = [];
  let pendingBytes = 0; // of `lines` (UTF-16 length: close enough for a bound) plus `rest`
  /** The unwritten tail of a batch a full destination did not take. */
  let rest: Buffer | undefined;
  let timer: NodeJS.Timeout | undefined;
  let dropped = 0;
  let reported = 0;
  let broken = false;
  /** A flush gave up on a full destination: until it takes bytes again, flushes do not wait. */
  let stalled = false;

  const arm = () => {
    if (timer === undefined) timer = setTimeout(flush, flushAfterMs).unref();
  };

  function flush(): void {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    if (broken) return;
    if (dropped > reported && rest === undefined) {
      // Said before the lines that follow the gap.
      lines.unshift(
        `${JSON.stringify({ level: 40, time: now(), service: "infergate", dropped: dropped - reported, msg: "log lines were dropped: stdout did not take them" })}\n`,
      );
      reported = dropped;
    }
    if (rest === undefined && lines.length === 0) return;
    const batch = lines.length === 0 ? undefined : Buffer.from(lines.length === 1 ? lines[0]! : lines.join(""), "utf8");
    const count = lines.length;
    lines = [];
    let buf = rest === undefined ? batch! : batch === undefined ? rest : Buffer.concat([rest, batch]);
    rest = undefined;
    let offset = 0;
    let blockedSince: number | undefined;
    while (offset < buf.length) {
      try {
        const n = write(buf, offset);
        offset += n;
        if (n > 0) stalled = false;
        blockedSince = undefined;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "EAGAIN" || code === "EWOULDBLOCK" || code === "EBUSY") {
          blockedSince ??= now();
          if (!stalled && now() - blockedSince < maxBlockMs) {
            sleep(10);
            continue;
          }
          // Still full: keep the rest for the next flush rather than block any longer, and do not
          // block again until the destination takes bytes (a stalled reader must not freeze us).
          stalled = true;
          rest = buf.subarray(offset);
          pendingBytes = rest.length;
          arm();
          return;
        }
        if (code === "EPIPE" || code === "EBADF") {
          broken = true;
        }
        // Gone, or failing (ENOSPC, EIO): this batch is lost; later ones are tried again.
        dropped += count;
        buf = Buffer.alloc(0);
        break;
      }
    }
    pendingBytes = 0;
  }

  return {
    write(line: string): void {
      if (broken) {
        dropped++;
        return;
      }
      if (pendingBytes + line.length > maxPendingBytes) {
        dropped++;
        arm();
        return;
      }
      lines.push(line);
      pendingBytes += line.length;
      if (pendingBytes >= batchBytes && rest === undefined) {
        flush();
      } else {
        arm();
      }
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
