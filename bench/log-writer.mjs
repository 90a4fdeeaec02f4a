// Cost per log line of the stdout writer (src/observability/line-writer.ts) against pino's own
// synchronous destination (sonic-boom, which the logger used before) with the same batching,
// both writing the same per-call line to /dev/null, interleaved in one run.
// Usage: npm run build && node bench/log-writer.mjs [lines per round, default 2000000]
import { openSync } from "node:fs";
import { pino } from "pino";
import { createLineWriter } from "../dist/src/observability/line-writer.js";

const fd = openSync("/dev/null", "w");
const line = `${JSON.stringify({
  level: 30,
  time: Date.now(),
  service: "infergate",
  msg: "call",
  requestId: "0b6f8c2e-5a1c-4b8e-9a55-1f2e3d4c5b6a",
  rpc: "Chat",
  model: "mock-chat",
  upstream: "mock",
  attempts: 0,
  cache: "hit",
  code: "OK",
  latencyMs: 0.12,
})}\n`;
const n = Number(process.argv[2] ?? 2_000_000);
const perLine = (t0) => Number(process.hrtime.bigint() - t0) / n;
for (let round = 1; round <= 3; round++) {
  const boom = pino.destination({ dest: fd, sync: true, minLength: 4096 });
  let t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) boom.write(line);
  boom.flush();
  const a = perLine(t0);
  const w = createLineWriter(fd);
  t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) w.write(line);
  w.flush();
  const b = perLine(t0);
  console.log(`round ${round}: sonic-boom ${a.toFixed(0)} ns/line, line-writer ${b.toFixed(0)} ns/line, ratio ${(b / a).toFixed(2)}`);
}
