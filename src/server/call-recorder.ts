import type { AsyncLocalStorage } from "node:async_hooks";
import { echoed } from "../core/gateway-error.js";
import type { CallObserver, CallRecord } from "../observability/call-record.js";
import type { Logger } from "../observability/logger.js";
import { codeName, type Metrics } from "../observability/metrics.js";
import { createRefusalLog } from "../observability/refusal-log.js";

/** A Chat call's log line, parked until its answer is known (server.logContent). */
export interface PendingLine {
  line?: object;
}

/** Where each finished call goes: the metrics, the rate-limit charge, the log line. */
export interface CallRecorderOptions {
  readonly log: Logger;
  readonly metrics: Metrics;
  /** Charges a call's tokens to its caller's rate limit (the security of the moment: reload swaps it). */
  readonly charge: (r: CallRecord) => Promise<void> | undefined;
  /** server.refusalLogIntervalMs. */
  readonly refusalLogIntervalMs: number;
  /**
   * server.logContent only: the pending line of the Chat call running in this async context; the
   * line is parked there instead of written, and its writer adds the prompt and the completion.
   */
  readonly chatLines?: AsyncLocalStorage<PendingLine>;
  /** Gets every finished call, refusals included: the console's ring of recent calls (console-calls.ts). */
  readonly onRecord?: (r: CallRecord) => void;
}

/** The gateway's CallObserver, and what shutdown needs of it. */
export interface CallRecorder {
  readonly onCall: CallObserver;
  /** Records the calls still waiting for their turn and writes the refusal summaries owed (shutdown). */
  flush(): void;
}

/**
 * Call records waiting for their turn (see createCallRecorder), one queue per app. A process that
 * exits before their turn comes (a second Ctrl-C, a crash) records them on its way out, before the
 * logger's own exit flush (prepended).
 */
const waitingRecords = new Set<() => void>();
let exitHookInstalled = false;
function recordOnExit(run: () => void): void {
  waitingRecords.add(run);
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.prependListener("exit", () => {
    for (const r of waitingRecords) r();
  });
}

/**
 * Records each finished call: `infergate_requests_total` and the latency histograms, the tokens
 * charged to the caller's rate limit, and one `call` log line — but refusals (no key, a rate
 * limit, …), which are logged one line per caller and reason per interval (issue 17: a flood of
 * them was a flood of lines; src/observability/refusal-log.ts).
 */
export function createCallRecorder(options: CallRecorderOptions): CallRecorder {
  const { log, metrics, charge, chatLines, onRecord } = options;
  // The call line's keys are fixed and none is one the logger redacts (nor an object that could
  // hold one): redaction would cost half of writing the line (about 7 µs of 13 per call) and
  // change nothing, so the line goes through a child without it.
  const callLog = log.child({}, { redact: [] });
  const refusals = createRefusalLog(options.refusalLogIntervalMs, (s) =>
    callLog.info(
      { tenant: s.tenant === "" ? undefined : s.tenant, code: codeName(s.code), reason: s.reason, suppressed: s.suppressed, intervalMs: s.intervalMs },
      "refused calls not logged one by one",
    ),
  );
  const record = (r: CallRecord) => {
    metrics.observe(r);
    onRecord?.(r);
    charge(r)?.catch((err: unknown) => log.warn({ err }, "could not charge tokens to the rate limit"));
    if (!refusals.shouldLog(r)) return;
    const line = {
      requestId: r.requestId,
      tenant: r.tenant === "" ? undefined : r.tenant,
      rpc: r.rpc,
      // The caller's own string: cut as in errors (issue 17: a 3 MB name was a 3 MB line).
      model: echoed(r.model),
      upstream: r.upstream,
      endpoint: r.endpoint,
      attempts: r.attempts,
      cache: r.cache,
      code: codeName(r.code),
      reason: r.reason,
      latencyMs: Math.round(r.latencyMs * 100) / 100,
      ttftMs: r.ttftMs === undefined ? undefined : Math.round(r.ttftMs * 100) / 100,
      promptTokens: r.promptTokens,
      completionTokens: r.completionTokens,
      // Parts of the two above, on the line only when the upstream reported some.
      cachedPromptTokens: r.cachedPromptTokens > 0 ? r.cachedPromptTokens : undefined,
      cacheCreationTokens: r.cacheCreationTokens > 0 ? r.cacheCreationTokens : undefined,
      reasoningTokens: r.reasoningTokens > 0 ? r.reasoningTokens : undefined,
      usageEstimated: r.usageEstimated,
      // A number in `currency`, or "unpriced" (a model without a price): never 0 for one.
      cost: r.cost ?? "unpriced",
      currency: r.cost === undefined ? undefined : r.currency,
      // Tracing on: the trace to look the call up by (docs/tracing.md).
      traceId: r.traceId,
    };
    const pending = r.rpc === "Chat" ? chatLines?.getStore() : undefined;
    if (pending === undefined) callLog.info(line, "call");
    else pending.line = line;
  };
  // The gateway reports a unary call before its answer goes to the listener: recorded at once,
  // the metrics, the rate-limit charge and the log line (about a tenth of a cache hit's CPU)
  // would delay the answer. They wait two immediates: an HTTP/2 session writes the answer's
  // headers and message from a native immediate of this turn, and the trailers that end the call
  // once libuv reports that write done, early in the next turn, before its immediates run.
  // With server.logContent the line is parked for the listener at once.
  const waiting: CallRecord[] = [];
  const recordWaiting = () => {
    for (const r of waiting.splice(0)) record(r);
  };
  recordOnExit(recordWaiting);
  const recordNextTurn = () => setImmediate(recordWaiting);
  return {
    onCall:
      chatLines === undefined
        ? (r) => {
            if (waiting.push(r) === 1) setImmediate(recordNextTurn);
          }
        : record,
    flush() {
      recordWaiting();
      refusals.flush();
      waitingRecords.delete(recordWaiting);
    },
  };
}
