import { pino, type Logger } from "pino";

/**
 * The process logger: JSON lines on stdout. Keys that may hold secrets are redacted wherever they
 * appear, as a second line of defence behind never logging them in the first place.
 */
export function createLogger(level: string = process.env["INFERGATE_LOG_LEVEL"] ?? "info"): Logger {
  return pino({
    level,
    base: { service: "infergate" },
    redact: {
      paths: ["apiKey", "*.apiKey", "authorization", "*.authorization", "headers", "*.headers", "x-api-key", "*.x-api-key"],
      censor: "[redacted]",
    },
  });
}

export type { Logger };
