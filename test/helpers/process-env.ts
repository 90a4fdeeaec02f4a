/**
 * Test helpers for a test file's own process: environment variables set for a while, and the lines
 * an in-process App logs.
 */
import { Writable } from "node:stream";

/** Sets (or, for undefined, removes) each variable; the function returned puts back what was there. */
export function setEnv(values: Readonly<Record<string, string | undefined>>): () => void {
  const saved: Record<string, string | undefined> = {};
  for (const [name, v] of Object.entries(values)) {
    saved[name] = process.env[name];
    if (v === undefined) delete process.env[name];
    else process.env[name] = v;
  }
  return () => {
    for (const [name, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[name];
      else process.env[name] = v;
    }
  };
}

/** A destination for pino that pushes each line written (JSON text) onto `lines`. */
export function lineSink(lines: string[]): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(...chunk.toString("utf8").split("\n").filter((l) => l !== ""));
      done();
    },
  });
}
