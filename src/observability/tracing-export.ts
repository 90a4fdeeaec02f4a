import type { Context } from "@opentelemetry/api";
import { TraceFlags } from "@opentelemetry/api";
import { type ExportResult, ExportResultCode } from "@opentelemetry/core";
import type { ReadableSpan, Span, SpanExporter, SpanProcessor } from "@opentelemetry/sdk-trace-base";

/** What the export has lost so far: the source of the infergate_tracing_* metrics. */
export interface ExportStats {
  /** Export requests that failed (the collector down, refusing, or too slow). */
  exportFailures: number;
  /** Spans never exported: the queue was full when they ended, or their export request failed. */
  droppedSpans: number;
}

export interface BatchOptions {
  /** Spans held at most; a span that ends when the queue is full is dropped. */
  readonly maxQueueSize: number;
  /** Spans per export request at most (not above maxQueueSize). */
  readonly maxExportBatchSize: number;
  /** Time between exports when the queue holds less than a batch. */
  readonly scheduledDelayMs: number;
  /** Time an export request may take; a request not answered by then counts as failed. */
  readonly exportTimeoutMs: number;
  /** The first failure after success (or since the start): an outage begins. Logged once. */
  readonly onOutage: (error: string) => void;
  /** The first success after an outage of `failures` failed exports. */
  readonly onRecovery: (failures: number) => void;
}

/**
 * The span processor of src/observability/tracing.ts: the SDK's BatchSpanProcessor's job, with
 * what it does not give: the count of the spans it drops and of the exports that failed
 * (ExportStats), and one callback per outage rather than a log line per failure. A span's end only
 * puts it in a bounded array (or drops it, counted): the export (encoding and the HTTP request)
 * never runs on a call's path, one request at a time, a batch when the queue holds one, else every
 * `scheduledDelayMs`. Its timers are unref'd: they never keep the process alive.
 */
export class BoundedBatchProcessor implements SpanProcessor {
  readonly stats: ExportStats = { exportFailures: 0, droppedSpans: 0 };
  private queue: ReadableSpan[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** An export request in flight (at most one). */
  private exporting: Promise<void> | undefined;
  /** An export is due at the next immediate (a full batch is waiting). */
  private soon = false;
  /** Failed exports in a row; > 0 during an outage. */
  private failuresInRow = 0;
  private stopped = false;

  constructor(
    private readonly exporter: SpanExporter,
    private readonly options: BatchOptions,
  ) {}

  onStart(_span: Span, _parentContext: Context): void {}

  onEnd(span: ReadableSpan): void {
    if (this.stopped || (span.spanContext().traceFlags & TraceFlags.SAMPLED) === 0) return;
    if (this.queue.length >= this.options.maxQueueSize) {
      this.stats.droppedSpans++;
      return;
    }
    this.queue.push(span);
    if (this.queue.length >= this.options.maxExportBatchSize) this.exportSoon();
    else if (this.timer === undefined) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.exportNext();
      }, this.options.scheduledDelayMs);
      this.timer.unref();
    }
  }

  /** Exports a batch at the next immediate, off the path of the call whose span filled it. */
  private exportSoon(): void {
    if (this.soon || this.exporting !== undefined) return;
    this.soon = true;
    setImmediate(() => {
      this.soon = false;
      this.exportNext();
    }).unref();
  }

  /** Starts exporting the next batch unless one is in flight; then goes on while batches are full. */
  private exportNext(): void {
    if (this.exporting !== undefined || this.queue.length === 0) return;
    const batch = this.queue.splice(0, this.options.maxExportBatchSize);
    this.exporting = this.send(batch).then(() => {
      this.exporting = undefined;
      if (this.stopped) return;
      if (this.queue.length >= this.options.maxExportBatchSize) this.exportSoon();
      else if (this.queue.length > 0 && this.timer === undefined) {
        this.timer = setTimeout(() => {
          this.timer = undefined;
          this.exportNext();
        }, this.options.scheduledDelayMs);
        this.timer.unref();
      }
    });
  }

  /** One export request; resolves (never rejects) once it succeeded, failed or timed out. */
  private send(batch: ReadableSpan[]): Promise<void> {
    return new Promise<void>((resolve) => {
      let done = false;
      const finish = (result: ExportResult) => {
        if (done) return;
        done = true;
        clearTimeout(guard);
        this.settled(batch.length, result);
        resolve();
      };
      // The exporter has its own timeout; this one makes sure a request it never answers ends too.
      const guard = setTimeout(
        () => finish({ code: ExportResultCode.FAILED, error: new Error(`no answer within ${this.options.exportTimeoutMs}ms`) }),
        this.options.exportTimeoutMs + 1_000,
      );
      guard.unref();
      try {
        this.exporter.export(batch, finish);
      } catch (err) {
        finish({ code: ExportResultCode.FAILED, error: err instanceof Error ? err : new Error(String(err)) });
      }
    });
  }

  private settled(spans: number, result: ExportResult): void {
    if (result.code === ExportResultCode.SUCCESS) {
      if (this.failuresInRow > 0) this.options.onRecovery(this.failuresInRow);
      this.failuresInRow = 0;
      return;
    }
    this.stats.exportFailures++;
    this.stats.droppedSpans += spans;
    if (this.failuresInRow++ === 0) this.options.onOutage((result.error?.message ?? "export failed").slice(0, 300));
  }

  /** Exports everything queued, one request after another, within the export timeout in all. */
  async forceFlush(): Promise<void> {
    const until = Date.now() + this.options.exportTimeoutMs;
    while (Date.now() < until) {
      if (this.exporting !== undefined) await this.exporting;
      else if (this.queue.length > 0) this.exportNext();
      else return;
    }
  }

  /** Flushes (see forceFlush), then stops taking spans and closes the exporter. */
  async shutdown(): Promise<void> {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = undefined;
    const flushed = this.forceFlush();
    const timeout = new Promise<void>((resolve) => setTimeout(resolve, this.options.exportTimeoutMs).unref());
    await Promise.race([flushed, timeout]);
    this.stopped = true;
    this.stats.droppedSpans += this.queue.length;
    this.queue = [];
    await this.exporter.shutdown().catch(() => undefined);
  }
}
