/**
 * src/observability/otlp-span-encoder.ts against the exporter's own serializer
 * (@opentelemetry/otlp-transformer's ProtobufTraceSerializer): both encodings of the same spans,
 * decoded with protobufjs from the opentelemetry-proto message definitions (field numbers as in
 * opentelemetry/proto/trace/v1/trace.proto, common/v1/common.proto, resource/v1/resource.proto),
 * are the same messages, defaults included.
 */
import { context, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, TraceFlags } from "@opentelemetry/api";
import { ProtobufTraceSerializer } from "@opentelemetry/otlp-transformer";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BasicTracerProvider, InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import protobuf from "protobufjs";
import { describe, expect, it } from "vitest";
import { encodeSpans } from "../../src/observability/otlp-span-encoder.js";

const otlp = protobuf.parse(
  `syntax = "proto3";
  package otlp;
  message AnyValue { oneof value { string string_value = 1; bool bool_value = 2; int64 int_value = 3; double double_value = 4; ArrayValue array_value = 5; KeyValueList kvlist_value = 6; bytes bytes_value = 7; } }
  message ArrayValue { repeated AnyValue values = 1; }
  message KeyValueList { repeated KeyValue values = 1; }
  message KeyValue { string key = 1; AnyValue value = 2; }
  message InstrumentationScope { string name = 1; string version = 2; repeated KeyValue attributes = 3; uint32 dropped_attributes_count = 4; }
  message Resource { repeated KeyValue attributes = 1; uint32 dropped_attributes_count = 2; }
  message ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
  message ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2; string schema_url = 3; }
  message ScopeSpans { InstrumentationScope scope = 1; repeated Span spans = 2; string schema_url = 3; }
  message Span {
    bytes trace_id = 1; bytes span_id = 2; string trace_state = 3; bytes parent_span_id = 4; string name = 5;
    int32 kind = 6; fixed64 start_time_unix_nano = 7; fixed64 end_time_unix_nano = 8; repeated KeyValue attributes = 9;
    uint32 dropped_attributes_count = 10; repeated Event events = 11; uint32 dropped_events_count = 12;
    repeated Link links = 13; uint32 dropped_links_count = 14; Status status = 15; fixed32 flags = 16;
    message Event { fixed64 time_unix_nano = 1; string name = 2; repeated KeyValue attributes = 3; uint32 dropped_attributes_count = 4; }
    message Link { bytes trace_id = 1; bytes span_id = 2; string trace_state = 3; repeated KeyValue attributes = 4; uint32 dropped_attributes_count = 5; fixed32 flags = 6; }
  }
  message Status { string message = 2; int32 code = 3; }`,
  { keepCase: true },
).root.lookupType("otlp.ExportTraceServiceRequest");

const decode = (bytes: Uint8Array) => otlp.toObject(otlp.decode(bytes), { longs: String, bytes: String, defaults: true, arrays: true, oneofs: true });

function spansOf(make: (provider: BasicTracerProvider) => void, resource = resourceFromAttributes({ "service.name": "infergate", "host.name": "h" })): ReadableSpan[] {
  const memory = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ resource, spanProcessors: [new SimpleSpanProcessor(memory)] });
  make(provider);
  return memory.getFinishedSpans();
}

describe("encodeSpans", () => {
  it("a call's spans (remote parent with tracestate, client child, error status) decode as the SDK serializer's", () => {
    const spans = spansOf((provider) => {
      const tracer = provider.getTracer("infergate");
      const parent = new W3CTraceContextPropagator().extract(
        ROOT_CONTEXT,
        { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", tracestate: "vendor=opaque,other=1" },
        { get: (c: Record<string, string>, k: string) => c[k], keys: (c: Record<string, string>) => Object.keys(c) },
      );
      const server = tracer.startSpan("infergate.v1.InferenceService/Chat", { kind: SpanKind.SERVER }, parent);
      const client = tracer.startSpan("chat gpt-x", { kind: SpanKind.CLIENT }, trace.setSpan(ROOT_CONTEXT, server));
      client.setAttributes({ "gen_ai.operation.name": "chat", "infergate.attempt": 2, "url.full": "http://127.0.0.1:1/v1" });
      client.setStatus({ code: SpanStatusCode.ERROR, message: "UPSTREAM_UNAVAILABLE" });
      client.end();
      server.setAttributes({
        "rpc.grpc.status_code": 0,
        "gen_ai.usage.input_tokens": 12,
        "infergate.cost": 0.000125,
        "infergate.session": false,
        "infergate.neg": -7,
        "gen_ai.response.finish_reasons": ["stop", "length"],
        "infergate.numbers": [1, 2.5, -3],
        "infergate.flags": [true, false],
        "infergate.unicode": "größe ✓ 模型",
        "infergate.a_key_long_enough_to_need_more_than_forty_three_characters": "and a value long enough to need a length of two bytes: ".repeat(4),
      });
      server.addEvent("retry", { attempt: 1 });
      server.end();
    });
    expect(spans).toHaveLength(2);
    const ours = decode(encodeSpans(spans));
    expect(ours).toEqual(decode(ProtobufTraceSerializer.serializeRequest(spans)!));
    const [server] = ours.resource_spans[0].scope_spans[0].spans.filter((s: { kind: number }) => s.kind === 2);
    expect(server.trace_state).toBe("vendor=opaque,other=1");
    expect(server.flags).toBe(0x301); // sampled, has-is-remote, is-remote
  });

  it("a batch larger than the first buffer, several scopes, links, an unsampled root: the same messages", () => {
    const spans = spansOf((provider) => {
      const a = provider.getTracer("infergate", "1.2.3");
      const b = provider.getTracer("other");
      const linked = a.startSpan("linked");
      linked.end();
      for (let i = 0; i < 300; i++) {
        const tracer = i % 2 === 0 ? a : b;
        const s = tracer.startSpan(`span ${i}`, { kind: i % 5, links: i % 7 === 0 ? [{ context: linked.spanContext(), attributes: { why: "link" } }] : [] });
        s.setAttribute("i", i);
        if (i === 150) s.setAttribute("big", "x".repeat(200_000));
        s.end();
      }
      const unsampled = trace.wrapSpanContext({ traceId: "1".repeat(32), spanId: "2".repeat(16), traceFlags: TraceFlags.NONE, isRemote: true });
      const child = a.startSpan("child of unsampled", {}, trace.setSpan(context.active(), unsampled));
      child.end();
    });
    const ours = encodeSpans(spans);
    expect(ours.length).toBeGreaterThan(200_000);
    expect(decode(ours)).toEqual(decode(ProtobufTraceSerializer.serializeRequest(spans)!));
  });

  it("timestamps are exact nanoseconds (no rounding through a double)", () => {
    const spans = spansOf((provider) => {
      const s = provider.getTracer("t").startSpan("t", { startTime: [1_796_566_133, 987_654_321] });
      s.end([1_796_566_134, 1]);
    });
    const span = decode(encodeSpans(spans)).resource_spans[0].scope_spans[0].spans[0];
    expect(span.start_time_unix_nano).toBe("1796566133987654321");
    expect(span.end_time_unix_nano).toBe("1796566134000000001");
  });
});
