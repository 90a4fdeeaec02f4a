#!/usr/bin/env node
/**
 * The CPU tracing adds to one proxied call, step by step, in one process (docs/benchmarks.md,
 * "Issue 20: tracing"): through a compiled tree's src/observability/tracing.js, the spans of a
 * call (the server span started from the caller's headers, one attempt span with its traceparent,
 * both ended with the attributes a Chat call gets) and their export encoding (the OTLP protobuf
 * serializer, and infergate's encodeSpans where the build has it), per call. Sampling ratio 1.0.
 *
 *   node bench/tracing-steps.mjs [--dist dist] [--calls 200000]
 */
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
// The SDK exporter's own serializer, for comparison (infergate encodes with src/observability/otlp-span-encoder.ts).
import { ProtobufTraceSerializer } from "@opentelemetry/otlp-transformer";
import { pino } from "pino";

const { values: o } = parseArgs({ options: { dist: { type: "string", default: "dist" }, calls: { type: "string", default: "200000" } } });
const { createTracing } = await import(pathToFileURL(join(resolve(o.dist), "src/observability/tracing.js")).href);
// infergate's own encoder of the batch (src/observability/otlp-span-encoder.ts), in builds that have it.
const encoderModule = await import(pathToFileURL(join(resolve(o.dist), "src/observability/otlp-span-encoder.js")).href).catch(() => undefined);

// The queue holds one batch and drops the rest (counted): spans do not pile up between runs.
const tracing = createTracing(
  { endpoint: "http://127.0.0.1:9/v1/traces", headers: {}, serviceName: "bench", samplingRatio: 1, parentBased: true, maxQueueSize: 512, maxExportBatchSize: 512, scheduledDelayMs: 3_600_000, exportTimeoutMs: 1000 },
  pino({ level: "silent" }),
);
const record = {
  rpc: "Chat", requestId: "6f1c2a9e-4b7d-4e21-9a55-3c0f1b2d7e88", tenant: "", model: "bench", upstream: "fake", endpoint: "http://127.0.0.1:40000/v1",
  attempts: 1, cache: "bypass", code: 0, reason: undefined, latencyMs: 1, ttftMs: undefined, promptTokens: 12, completionTokens: 6,
  cachedPromptTokens: 0, cacheCreationTokens: 0, reasoningTokens: 0, cost: undefined, currency: "USD", pricedModel: "bench",
};
const answer = { model: "bench", finishReason: 1, upstream: "fake", usage: { promptTokens: 12, completionTokens: 6, cachedPromptTokens: 0, cacheCreationTokens: 0, reasoningTokens: 0 } };
const caller = { headers: { "x-request-id": record.requestId } };
const info = { operation: "chat", upstream: "fake", kind: "openai", upstreamModel: "gpt-bench", endpoint: "http://127.0.0.1:40000/v1", attempt: 1, breaker: "closed" };

function call() {
  const span = tracing.startCall("Chat", caller);
  const attempt = span.attempt(info);
  attempt.end(undefined);
  span.end(record, answer, false);
}

/** µs per call of `fn` over `n` calls, best of 5 runs. */
function time(fn, n) {
  let best = Infinity;
  for (let run = 0; run < 5; run++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) fn();
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / n / 1000);
  }
  return best;
}

const n = Number(o.calls);
for (let i = 0; i < 20_000; i++) call();
const spansUs = time(call, n);

// The spans of 256 calls as the exporter gets them (a batch of 512), encoded as one request.
const { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } = await import("@opentelemetry/sdk-trace-base");
const { SpanKind, trace, ROOT_CONTEXT } = await import("@opentelemetry/api");
const memory = new InMemorySpanExporter();
const tracer = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(memory)] }).getTracer("infergate");
for (let i = 0; i < 256; i++) {
  const s = tracer.startSpan("infergate.v1.InferenceService/Chat", { kind: SpanKind.SERVER });
  const a = tracer.startSpan("chat gpt-bench", { kind: SpanKind.CLIENT }, trace.setSpan(ROOT_CONTEXT, s));
  a.setAttributes({ "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-bench", "infergate.upstream": "fake", "infergate.attempt": 1, "infergate.breaker.state": "closed", "url.full": info.endpoint });
  a.end();
  s.setAttributes({ "rpc.method": "Chat", "rpc.grpc.status_code": 0, "infergate.request_id": record.requestId, "infergate.attempts": 1, "gen_ai.operation.name": "chat", "gen_ai.request.model": "bench", "gen_ai.usage.input_tokens": 12, "gen_ai.usage.output_tokens": 6, "gen_ai.response.model": "bench", "gen_ai.response.finish_reasons": ["stop"], "infergate.session": false, "infergate.served_by": "fake", "infergate.cache": "bypass" });
  s.end();
}
const batch = memory.getFinishedSpans();
const bytes = ProtobufTraceSerializer.serializeRequest(batch).length;
const encodeUs = time(() => ProtobufTraceSerializer.serializeRequest(batch), 200) / 256;
const ownUs = encoderModule === undefined ? undefined : time(() => encoderModule.encodeSpans(batch), 200) / 256;
const ownBytes = encoderModule === undefined ? undefined : encoderModule.encodeSpans(batch).length;

process.stdout.write(`${JSON.stringify({ dist: o.dist, spansUsPerCall: Math.round(spansUs * 100) / 100, sdkSerializerUsPerCall: Math.round(encodeUs * 100) / 100, bytesPerCall: Math.round(bytes / 256), ...(ownUs === undefined ? {} : { encodeSpansUsPerCall: Math.round(ownUs * 100) / 100, encodeSpansBytesPerCall: Math.round(ownBytes / 256) }) })}\n`);
