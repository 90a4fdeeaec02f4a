import { pino, type DestinationStream, type Logger } from "pino";

/** Lines are written once this many bytes wait, or after {@link flushAfterMs}, whichever first. */
const bufferBytes = 8 * 1024;
const flushAfterMs = 25;

let stdout: (DestinationStream & { flush(): void }) | undefined;

/**
 * stdout, buffered: one write(2) per 8 KiB or per 25 ms instead of one per line. A line per call
 * written alone cost a system call (or a thread-pool hand-off) per call, about a tenth of a cached
 * call's CPU at concurrency 1 (bench/, docs/benchmarks.md). Writes are synchronous, as pino's own
 * sync mode: a reader that falls behind slows the process rather than growing its memory. What
 * waits is written when the process exits, however it exits short of SIGKILL; a warning or an error
 * is written at once.
 */
function bufferedStdout(): DestinationStream & { flush(): void } {
  if (stdout !== undefined) return stdout;
  const boom = pino.destination({ dest: 1, sync: true, minLength: bufferBytes });
  let timer: NodeJS.Timeout | undefined;
  const flush = () => {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    // In sync mode flush() writes what waits, now (flushSync would also fsync a file).
    boom.flush();
  };
  process.on("exit", flush);
  stdout = {
    write(line: string) {
      boom.write(line);
      // A timer per batch, not per line; unref'd: it never keeps the process alive by itself.
      if (timer === undefined) timer = setTimeout(flush, flushAfterMs).unref();
    },
    flush,
  };
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
