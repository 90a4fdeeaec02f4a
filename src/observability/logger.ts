import { fstatSync } from "node:fs";
import { pino, type DestinationStream, type Logger } from "pino";
import { createLineWriter } from "./line-writer.js";

let stdout: (DestinationStream & { flush(): void }) | undefined;

/**
 * Prepares stdout for the line writer; returns the largest batch to write at once.
 *
 * A pipe or socket inherited as stdout is usually blocking: a reader that stops reading would then
 * freeze the process in write(2) for good. Node's own stdout stream, once made, sets such a
 * descriptor non-blocking (libuv opens it so), which lets the line writer see EAGAIN, wait a
 * bounded time and then keep or drop lines instead. Its batches stay within PIPE_BUF (4096
 * bytes), the most a pipe writes atomically: lines of `--workers` sharing it never interleave.
 *
 * A regular file is written whole by each write(2) (Linux holds the file position's lock for
 * it), so batches there go up to 64 KiB: a write to a file costs little more for 64 KiB than for
 * 4 (13.3 against 8.6 µs in a tight loop on the bench machine; in the c=1 cache-hit profile the
 * 4 KiB writes took 10 µs of each call). A terminal is left as it is.
 */
function prepareStdout(fd: number): number {
  try {
    const stat = fstatSync(fd);
    if (stat.isFile()) return 64 * 1024;
    if (fd === 1 && (stat.isFIFO() || stat.isSocket())) void process.stdout;
  } catch {
    // No stdout at all (closed): the writer finds out on its first write.
  }
  return 4096;
}

/**
 * stdout, batched (src/observability/line-writer.ts): one write(2) per 4 KiB (PIPE_BUF, so
 * the lines of workers sharing a pipe never interleave; 64 KiB to a file) or per 25 ms instead
 * of one per line. A line per call written alone cost a system call (or a thread-pool hand-off)
 * per call, about a tenth of a cached call's CPU at concurrency 1 (bench/, docs/benchmarks.md).
 * What waits is written when the process exits normally, by a signal it handles (SIGTERM, SIGINT
 * once the server runs) or by an uncaught exception; not on SIGKILL, an abort or running out of
 * memory. A warning or an error is written at once.
 */
function bufferedStdout(): DestinationStream & { flush(): void } {
  if (stdout !== undefined) return stdout;
  const writer = createLineWriter(1, { batchBytes: prepareStdout(1) });
  process.on("exit", () => writer.end());
  stdout = { write: (line: string) => writer.write(line), flush: () => writer.flush() };
  return stdout;
}

/**
 * The process logger: JSON lines on stdout. Keys that may hold secrets are redacted wherever they
 * appear, as a second line of defence behind never logging them in the first place.
 */
export function createLogger(level: string = process.env["INFERGATE_LOG_LEVEL"] ?? "info"): Logger {
  const destination = bufferedStdout();
  return pino(
    {
      level,
      // A warning or an error is written at once (with whatever waits before it).
      hooks: {
        logMethod(args, method, level) {
          method.apply(this, args);
          if (level >= 40) destination.flush();
        },
      },
      base: { service: "infergate" },
      redact: {
        paths: ["apiKey", "*.apiKey", "authorization", "*.authorization", "headers", "*.headers", "x-api-key", "*.x-api-key"],
        censor: "[redacted]",
      },
    },
    destination,
  );
}

export type { Logger };
