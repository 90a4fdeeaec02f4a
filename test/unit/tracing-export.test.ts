/**
 * The span processor of tracing (src/observability/tracing-export.ts) against a scripted exporter:
 * a full queue drops spans and counts them; a failed export counts the failure and its spans; an
 * outage is reported once and its end once; a full batch is exported without waiting for the
 * delay, one request at a time; shutdown exports what is queued and closes the exporter.
 */
import { TraceFlags } from "@opentelemetry/api";
import { type ExportResult, ExportResultCode } from "@opentelemetry/core";
import type { ReadableSpan, SpanExporter } from "@opentelemetry/sdk-trace-base";
import { describe, expect, it } from "vitest";
import { type BatchOptions, BoundedBatchProcessor } from "../../src/observability/tracing-export.js";

/** A span as the processor reads it: only its context's flags. */
function span(sampled = true): ReadableSpan {
  return { spanContext: () => ({ traceId: "1".repeat(32), spanId: "2".repeat(16), traceFlags: sampled ? TraceFlags.SAMPLED : TraceFlags.NONE }) } as unknown as ReadableSpan;
}

/** An exporter whose export requests wait until the test settles them. */
function scriptedExporter() {
  const pending: { spans: ReadableSpan[]; done: (r: ExportResult) => void }[] = [];
  let shutdowns = 0;
  const exporter: SpanExporter = {
    export: (spans, done) => void pending.push({ spans, done }),
    shutdown: async () => {
      shutdowns++;
    },
  };
  return { exporter, pending, shutdowns: () => shutdowns };
}

function options(over: Partial<BatchOptions> = {}) {
  const events: string[] = [];
  const o: BatchOptions = {
    maxQueueSize: 4,
    maxExportBatchSize: 2,
    scheduledDelayMs: 3_600_000,
    exportTimeoutMs: 3_600_000,
    onOutage: (e) => events.push(`outage: ${e}`),
    onRecovery: (n) => events.push(`recovered after ${n}`),
    ...over,
  };
  return { o, events };
}

describe("BoundedBatchProcessor", () => {
  it("exports a full batch at once, one request at a time, and drops (counting) what a full queue cannot take", async () => {
    const x = scriptedExporter();
    const { o } = options();
    const p = new BoundedBatchProcessor(x.exporter, o);
    p.onEnd(span());
    p.onEnd(span());
    await expect.poll(() => x.pending.length).toBe(1);
    expect(x.pending[0]!.spans).toHaveLength(2);
    // While that request is open: four more fit the queue, the fifth and sixth are dropped.
    for (let i = 0; i < 6; i++) p.onEnd(span());
    expect(p.stats).toEqual({ exportFailures: 0, droppedSpans: 2 });
    expect(x.pending).toHaveLength(1);
    // Unsampled spans are not exported at all (and not counted as dropped).
    p.onEnd(span(false));
    expect(p.stats.droppedSpans).toBe(2);
    x.pending[0]!.done({ code: ExportResultCode.SUCCESS });
    await expect.poll(() => x.pending.length).toBe(2);
    x.pending[1]!.done({ code: ExportResultCode.SUCCESS });
    await expect.poll(() => x.pending.length).toBe(3);
    expect(x.pending.map((r) => r.spans.length)).toEqual([2, 2, 2]);
  });

  it("counts each failed export and its spans, reports the outage once and its end once", async () => {
    const x = scriptedExporter();
    const { o, events } = options({ maxQueueSize: 100 });
    const p = new BoundedBatchProcessor(x.exporter, o);
    for (let round = 0; round < 3; round++) {
      p.onEnd(span());
      p.onEnd(span());
      await expect.poll(() => x.pending.length).toBe(round + 1);
      x.pending[round]!.done({ code: ExportResultCode.FAILED, error: new Error("connect ECONNREFUSED 127.0.0.1:4318") });
    }
    await expect.poll(() => p.stats.exportFailures).toBe(3);
    expect(p.stats.droppedSpans).toBe(6);
    expect(events).toEqual(["outage: connect ECONNREFUSED 127.0.0.1:4318"]);
    p.onEnd(span());
    p.onEnd(span());
    await expect.poll(() => x.pending.length).toBe(4);
    x.pending[3]!.done({ code: ExportResultCode.SUCCESS });
    await expect.poll(() => events.length).toBe(2);
    expect(events[1]).toBe("recovered after 3");
  });

  it("an exporter that throws is a failed export, not a thrown call", async () => {
    const { o, events } = options();
    const p = new BoundedBatchProcessor(
      {
        export: () => {
          throw new Error("boom");
        },
        shutdown: async () => undefined,
      },
      o,
    );
    expect(() => {
      p.onEnd(span());
      p.onEnd(span());
    }).not.toThrow();
    await expect.poll(() => p.stats.exportFailures).toBe(1);
    expect(events).toEqual(["outage: boom"]);
  });

  it("shutdown exports what is queued, then takes no more spans and closes the exporter", async () => {
    const x = scriptedExporter();
    const { o } = options({ maxQueueSize: 10, maxExportBatchSize: 8 });
    const p = new BoundedBatchProcessor(x.exporter, o);
    p.onEnd(span());
    p.onEnd(span());
    p.onEnd(span());
    expect(x.pending).toHaveLength(0);
    const stopped = p.shutdown();
    await expect.poll(() => x.pending.length).toBe(1);
    expect(x.pending[0]!.spans).toHaveLength(3);
    x.pending[0]!.done({ code: ExportResultCode.SUCCESS });
    await stopped;
    expect(x.shutdowns()).toBe(1);
    p.onEnd(span());
    expect(x.pending).toHaveLength(1);
    expect(p.stats).toEqual({ exportFailures: 0, droppedSpans: 0 });
  });
});
