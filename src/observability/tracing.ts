import {
  type Attributes,
  type Context,
  defaultTextMapGetter,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
  TraceFlags,
  type Tracer,
} from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPExporterBase } from "@opentelemetry/otlp-exporter-base";
import { convertLegacyHttpOptions, createOtlpHttpExportDelegate } from "@opentelemetry/otlp-exporter-base/node-http";
import { type IExportTraceServiceResponse, type ISerializer, ProtobufTraceSerializer, TraceExporterMetricsHelper } from "@opentelemetry/otlp-transformer";
import { resourceFromAttributes } from "@opentelemetry/resources";
import {
  type ReadableSpan,
  AlwaysOffSampler,
  AlwaysOnSampler,
  BasicTracerProvider,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
} from "@opentelemetry/sdk-trace-base";
import { ATTR_SERVICE_NAME } from "@opentelemetry/semantic-conventions";
import type { Usage } from "../../gen/infergate/v1/chat_pb.js";
import type { TracingConfig } from "../config/schema.js";
import type { AttemptSpan, AttemptSpanInfo, CallContext, CallSpan } from "../core/call-context.js";
import { toGatewayError } from "../core/gateway-error.js";
import type { Rpc } from "../core/rpc.js";
import type { CallRecord } from "./call-record.js";
import type { Logger } from "./logger.js";
import { encodeSpans } from "./otlp-span-encoder.js";
import { BoundedBatchProcessor, type ExportStats } from "./tracing-export.js";

/**
 * OpenTelemetry tracing (docs/tracing.md): a server span per call, continuing the caller's W3C
 * trace context (`traceparent`, `tracestate` from gRPC metadata or HTTP headers), and a client span
 * per upstream attempt under it, whose context the transports send upstream
 * (src/core/attempt-progress.ts). Attribute names follow the OpenTelemetry semantic conventions
 * for GenAI (gen_ai.*) and RPC; infergate's own are infergate.*. No prompt or completion text.
 *
 * Spans are made with the official SDK (BasicTracerProvider, its samplers and id generator) but no
 * context manager: the call's span travels on the call (CallContext.trace.span), so no async
 * context is tracked per call. Off (no `tracing.endpoint`), none of this is made: the gateway
 * checks for the span and does nothing else.
 */
export interface Tracing {
  /**
   * Starts the server span of one call, the child of the caller's trace context when it sent one
   * (read with `caller.header` where the listener offers it: only the two headers, without building
   * the caller's whole header map).
   */
  startCall(rpc: Rpc, caller: CallerHeaders): ServerSpan;
  /** Export failures and spans dropped so far (infergate_tracing_* metrics). */
  readonly stats: ExportStats;
  /** Exports what is queued, within the export timeout, then stops (graceful stop). */
  shutdown(): Promise<void>;
}

/** A call's server span: the CallSpan the layers below see, and its end for the call record step. */
export interface ServerSpan extends CallSpan {
  /** Ends the span with what the call's record says, and the answer it had (model, finish reason). */
  end(record: CallRecord, answer: object | undefined, session: boolean): void;
}

/** The RPC's service, as `rpc.service` names it. */
const service = "infergate.v1.InferenceService";

/** gen_ai.operation.name of each model call (predict is infergate's own: tensors, not GenAI). */
const operationOf: Partial<Record<Rpc, string>> = { Chat: "chat", Generate: "chat", Embed: "embeddings", Predict: "predict" };
const attemptOperation: Record<AttemptSpanInfo["operation"], string> = {
  chat: "chat",
  generate: "chat",
  embed: "embeddings",
  predict: "predict",
  count_tokens: "count_tokens",
};

/** gen_ai.provider.name of each upstream kind: the convention's names where it has one. */
const providerOf: Readonly<Record<string, string>> = { openai: "openai", anthropic: "anthropic" };

/** FinishReason (proto/infergate/v1/chat.proto) by number, as gen_ai.response.finish_reasons names them. */
const finishReasonNames = ["", "stop", "length", "tool_calls", "content_filter"];

/** The fields of an answer the spans read; every model answer has some of them. */
interface Answered {
  readonly model?: string;
  readonly upstream?: string;
  readonly finishReason?: number;
  readonly usage?: Usage | undefined;
}

/** Makes the tracing of one app, or undefined when the config names no endpoint (tracing off). */
export function createTracing(config: TracingConfig, log: Logger): Tracing | undefined {
  if (config.endpoint === undefined) return undefined;
  // The ratio's own sampler reads the trace id on every call; at 1 and 0 the answer is known.
  const ratio =
    config.samplingRatio >= 1 ? new AlwaysOnSampler() : config.samplingRatio <= 0 ? new AlwaysOffSampler() : new TraceIdRatioBasedSampler(config.samplingRatio);
  // The SDK's OTLP/HTTP protobuf exporter (its transport, timeout and headers), with the batch
  // encoded by encodeSpans instead of its serializer (src/observability/otlp-span-encoder.ts).
  const exporter = new OTLPExporterBase<ReadableSpan[]>(
    createOtlpHttpExportDelegate(
      convertLegacyHttpOptions({ url: config.endpoint, headers: { ...config.headers }, timeoutMillis: config.exportTimeoutMs }, "TRACES", "v1/traces", {
        "Content-Type": "application/x-protobuf",
      }),
      spanSerializer,
      "otlp_http_span_exporter",
      TraceExporterMetricsHelper,
      undefined,
    ),
  );
  const processor = new BoundedBatchProcessor(exporter, {
    maxQueueSize: config.maxQueueSize,
    maxExportBatchSize: Math.min(config.maxExportBatchSize, config.maxQueueSize),
    scheduledDelayMs: config.scheduledDelayMs,
    exportTimeoutMs: config.exportTimeoutMs,
    // Logged once per outage, not per failed export (they are counted); the URL without its
    // credentials or query, the headers never.
    onOutage: (error) => log.warn({ endpoint: displayEndpoint(config.endpoint!), error }, "tracing: exporting spans failed; calls go on, spans are dropped and counted (infergate_tracing_export_failures_total) until an export succeeds"),
    onRecovery: (failures) => log.info({ failures }, "tracing: exporting spans works again"),
  });
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: config.serviceName }),
    sampler: config.parentBased ? new ParentBasedSampler({ root: ratio }) : ratio,
    spanProcessors: [processor],
  });
  const tracer = provider.getTracer("infergate");
  const propagator = new W3CTraceContextPropagator();
  return {
    startCall(rpc, caller) {
      const traceparent = headerOf(caller, "traceparent");
      const parent =
        traceparent === undefined
          ? ROOT_CONTEXT
          : propagator.extract(ROOT_CONTEXT, { traceparent, tracestate: headerOf(caller, "tracestate") }, defaultTextMapGetter);
      // Its attributes are set once, at its end: each setAttributes call validates what it is given.
      const span = tracer.startSpan(spanNames[rpc], serverSpan, parent);
      return new CallSpanImpl(tracer, span, rpc);
    },
    stats: processor.stats,
    async shutdown() {
      await processor.shutdown();
    },
  };
}

/** The caller's headers as a call's context has them (src/core/call-context.ts). */
export type CallerHeaders = Pick<CallContext, "headers" | "header">;

function headerOf(caller: CallerHeaders, name: string): string | undefined {
  return caller.header !== undefined ? caller.header(name) : caller.headers[name];
}

/** Spans out by encodeSpans; the collector's answer read by the SDK's own deserializer. */
const spanSerializer: ISerializer<ReadableSpan[], IExportTraceServiceResponse> = {
  serializeRequest: encodeSpans,
  deserializeResponse: (data) => ProtobufTraceSerializer.deserializeResponse(data),
};

const serverSpan = { kind: SpanKind.SERVER } as const;
const clientSpan = { kind: SpanKind.CLIENT } as const;
const spanNames: Record<Rpc, string> = {
  Predict: `${service}/Predict`,
  Chat: `${service}/Chat`,
  Generate: `${service}/Generate`,
  Embed: `${service}/Embed`,
  // Not a gRPC method: the Anthropic Messages API's count_tokens (src/core/rpc.ts).
  CountTokens: "anthropic.messages/count_tokens",
  ListModels: `${service}/ListModels`,
  DeleteSession: `${service}/DeleteSession`,
};

/**
 * The W3C trace context headers naming `span` as the parent (https://www.w3.org/TR/trace-context/,
 * the format W3CTraceContextPropagator writes): built directly, without the context object and
 * carrier the propagator's inject takes, as every upstream attempt sends them.
 */
function traceHeaders(span: Span): Record<string, string> {
  const c = span.spanContext();
  const headers: Record<string, string> = {
    traceparent: `00-${c.traceId}-${c.spanId}-${(c.traceFlags & TraceFlags.SAMPLED) === 0 ? "00" : "01"}`,
  };
  const state = c.traceState?.serialize();
  if (state !== undefined && state !== "") headers["tracestate"] = state;
  return headers;
}

/** The URL as logs may show it: no user, password, query or fragment. */
function displayEndpoint(url: string): string {
  const u = new URL(url);
  return `${u.origin}${u.pathname}`;
}

/** ServerSpan: a class, so that its methods are not closures made per call. */
class CallSpanImpl implements ServerSpan {
  readonly traceId: string;
  /** The span as a parent context, made on the first attempt. */
  private parent: Context | undefined;

  constructor(
    private readonly tracer: Tracer,
    private readonly span: Span,
    private readonly rpc: Rpc,
  ) {
    this.traceId = span.spanContext().traceId;
  }

  attempt(info: AttemptSpanInfo): AttemptSpan {
    this.parent ??= trace.setSpan(ROOT_CONTEXT, this.span);
    const operation = attemptOperation[info.operation];
    const span = this.tracer.startSpan(`${operation} ${info.upstreamModel}`, clientSpan, this.parent);
    if (span.isRecording()) {
      const attributes: Attributes = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": providerOf[info.kind] ?? info.kind,
        "gen_ai.request.model": info.upstreamModel,
        "infergate.upstream": info.upstream,
        "infergate.attempt": info.attempt,
        "infergate.breaker.state": info.breaker,
      };
      if (info.endpoint !== "") attributes["url.full"] = info.endpoint;
      span.setAttributes(attributes);
    }
    return new AttemptSpanImpl(span, traceHeaders(span));
  }

  end(record: CallRecord, answer: object | undefined, session: boolean): void {
    const span = this.span;
    if (span.isRecording()) {
      const a = answer as Answered | undefined;
      const attributes: Attributes = {
        "rpc.method": this.rpc,
        "rpc.grpc.status_code": record.code,
        "infergate.request_id": record.requestId,
        "infergate.attempts": record.attempts,
      };
      const operation = operationOf[this.rpc];
      if (operation !== undefined) {
        attributes["gen_ai.operation.name"] = operation;
        attributes["gen_ai.request.model"] = record.model;
        usageAttributes(attributes, record);
        if (a !== undefined) answerAttributes(attributes, a);
        attributes["infergate.session"] = session;
      }
      if (record.tenant !== "") attributes["infergate.tenant"] = record.tenant;
      if (record.upstream !== undefined) attributes["infergate.served_by"] = record.upstream;
      if (record.cache !== undefined) attributes["infergate.cache"] = record.cache;
      if (record.cost !== undefined) {
        attributes["infergate.cost"] = record.cost;
        attributes["infergate.currency"] = record.currency;
      }
      if (record.reason !== undefined) attributes["error.type"] = record.reason;
      span.setAttributes(attributes);
      if (record.code !== 0) span.setStatus({ code: SpanStatusCode.ERROR, message: record.reason ?? `gRPC status ${record.code}` });
    }
    span.end();
  }
}

/** The fields of token usage that a CallRecord and a Usage (proto/infergate/v1/chat.proto) share. */
type TokenCounts = Pick<Usage, "promptTokens" | "completionTokens" | "cachedPromptTokens" | "cacheCreationTokens" | "reasoningTokens">;

/** Token usage by kind (GenAI semantic conventions); the parts only when the upstream reported some. */
function usageAttributes(attributes: Attributes, r: TokenCounts): void {
  attributes["gen_ai.usage.input_tokens"] = r.promptTokens;
  attributes["gen_ai.usage.output_tokens"] = r.completionTokens;
  if (r.cachedPromptTokens > 0) attributes["gen_ai.usage.cache_read.input_tokens"] = r.cachedPromptTokens;
  if (r.cacheCreationTokens > 0) attributes["gen_ai.usage.cache_creation.input_tokens"] = r.cacheCreationTokens;
  if (r.reasoningTokens > 0) attributes["gen_ai.usage.reasoning.output_tokens"] = r.reasoningTokens;
}

/** The answer's model and finish reason, when it says them. */
function answerAttributes(attributes: Attributes, a: Answered): void {
  if (a.model !== undefined && a.model !== "") attributes["gen_ai.response.model"] = a.model;
  const finish = a.finishReason === undefined ? undefined : finishReasonNames[a.finishReason];
  if (finish !== undefined && finish !== "") attributes["gen_ai.response.finish_reasons"] = [finish];
}

/** AttemptSpan over an SDK span. */
class AttemptSpanImpl implements AttemptSpan {
  constructor(
    private readonly span: Span,
    readonly headers: Readonly<Record<string, string>>,
  ) {}

  // The answer's usage and finish reason go on the call's server span only: each attribute costs
  // its encoding in every export (docs/tracing.md, "Cost").
  end(err: unknown): void {
    const span = this.span;
    if (span.isRecording()) {
      if (err !== undefined) {
        const e = toGatewayError(err);
        const reason = e.reason ?? "UNKNOWN";
        span.setAttributes({ "rpc.grpc.status_code": e.code, "error.type": reason });
        span.setStatus({ code: SpanStatusCode.ERROR, message: reason });
      }
    }
    span.end();
  }
}
