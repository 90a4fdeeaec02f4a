/**
 * An OTLP/HTTP trace receiver for tests: a real `node:http` server on 127.0.0.1 that takes
 * `POST /v1/traces` with `content-type: application/x-protobuf`, decodes the
 * ExportTraceServiceRequest with protobufjs from the message definitions of opentelemetry-proto
 * (opentelemetry/proto/collector/trace/v1/trace_service.proto, trace/v1/trace.proto,
 * common/v1/common.proto, resource/v1/resource.proto; the fields the tests read, numbered as
 * there), and answers an empty ExportTraceServiceResponse. It can be told to fail (503) or be
 * closed, to play a collector that is down.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import protobuf from "protobufjs";

const otlpProto = `
syntax = "proto3";
package opentelemetry.proto;

message AnyValue {
  oneof value {
    string string_value = 1;
    bool bool_value = 2;
    int64 int_value = 3;
    double double_value = 4;
    ArrayValue array_value = 5;
    KeyValueList kvlist_value = 6;
    bytes bytes_value = 7;
  }
}
message ArrayValue { repeated AnyValue values = 1; }
message KeyValueList { repeated KeyValue values = 1; }
message KeyValue { string key = 1; AnyValue value = 2; }
message InstrumentationScope { string name = 1; string version = 2; repeated KeyValue attributes = 3; uint32 dropped_attributes_count = 4; }
message Resource { repeated KeyValue attributes = 1; uint32 dropped_attributes_count = 2; }

message ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
message ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2; string schema_url = 3; }
message ScopeSpans { InstrumentationScope scope = 1; repeated Span spans = 2; string schema_url = 3; }
message Span {
  bytes trace_id = 1;
  bytes span_id = 2;
  string trace_state = 3;
  bytes parent_span_id = 4;
  fixed32 flags = 16;
  string name = 5;
  enum SpanKind {
    SPAN_KIND_UNSPECIFIED = 0;
    SPAN_KIND_INTERNAL = 1;
    SPAN_KIND_SERVER = 2;
    SPAN_KIND_CLIENT = 3;
    SPAN_KIND_PRODUCER = 4;
    SPAN_KIND_CONSUMER = 5;
  }
  SpanKind kind = 6;
  fixed64 start_time_unix_nano = 7;
  fixed64 end_time_unix_nano = 8;
  repeated KeyValue attributes = 9;
  uint32 dropped_attributes_count = 10;
  Status status = 15;
}
message Status {
  reserved 1;
  string message = 2;
  enum StatusCode { STATUS_CODE_UNSET = 0; STATUS_CODE_OK = 1; STATUS_CODE_ERROR = 2; }
  StatusCode code = 3;
}
`;

const root = protobuf.parse(otlpProto, { keepCase: true }).root;
const ExportTraceServiceRequest = root.lookupType("opentelemetry.proto.ExportTraceServiceRequest");

/** An attribute's value as the tests compare it. */
export type AttrValue = string | number | boolean | AttrValue[];

/** One received span, its ids in hex. */
export interface ReceivedSpan {
  readonly traceId: string;
  readonly spanId: string;
  /** "" for a root span. */
  readonly parentSpanId: string;
  readonly traceState: string;
  readonly name: string;
  readonly kind: "SERVER" | "CLIENT" | "INTERNAL" | "UNSPECIFIED" | "PRODUCER" | "CONSUMER";
  readonly attributes: Readonly<Record<string, AttrValue>>;
  readonly status: { readonly code: "UNSET" | "OK" | "ERROR"; readonly message: string };
  /** The resource's service.name. */
  readonly service: string;
}

export interface OtlpReceiver {
  /** `http://127.0.0.1:<port>/v1/traces`. */
  readonly url: string;
  /** Every span received so far, in arrival order. */
  readonly spans: readonly ReceivedSpan[];
  /** Export requests received (answered or failed). */
  readonly requests: number;
  /** The headers of the last export request (lower-case names). */
  readonly lastHeaders: Readonly<Record<string, string | string[] | undefined>>;
  /** While true, every request is answered 503 and its spans are not kept. */
  failing: boolean;
  close(): Promise<void>;
}

interface DecodedValue {
  string_value?: string;
  bool_value?: boolean;
  int_value?: number | { toNumber(): number };
  double_value?: number;
  array_value?: { values?: DecodedValue[] };
}
interface DecodedKeyValue {
  key: string;
  value?: DecodedValue;
}
interface DecodedSpan {
  trace_id: Uint8Array;
  span_id: Uint8Array;
  parent_span_id?: Uint8Array;
  trace_state?: string;
  name: string;
  kind?: string;
  attributes?: DecodedKeyValue[];
  status?: { code?: string; message?: string };
}
interface DecodedRequest {
  resource_spans?: { resource?: { attributes?: DecodedKeyValue[] }; scope_spans?: { spans?: DecodedSpan[] }[] }[];
}

function valueOf(v: DecodedValue | undefined): AttrValue {
  if (v === undefined) return "";
  if (v.string_value !== undefined) return v.string_value;
  if (v.bool_value !== undefined) return v.bool_value;
  if (v.int_value !== undefined) return typeof v.int_value === "number" ? v.int_value : v.int_value.toNumber();
  if (v.double_value !== undefined) return v.double_value;
  if (v.array_value !== undefined) return (v.array_value.values ?? []).map(valueOf);
  return "";
}

function attributesOf(kvs: DecodedKeyValue[] | undefined): Record<string, AttrValue> {
  const out: Record<string, AttrValue> = {};
  for (const kv of kvs ?? []) out[kv.key] = valueOf(kv.value);
  return out;
}

const hex = (b: Uint8Array | undefined) => Buffer.from(b ?? new Uint8Array()).toString("hex");

/** Decodes one ExportTraceServiceRequest's bytes into spans. */
export function decodeExport(body: Uint8Array): ReceivedSpan[] {
  const msg = ExportTraceServiceRequest.toObject(ExportTraceServiceRequest.decode(body), { enums: String, oneofs: false }) as DecodedRequest;
  const out: ReceivedSpan[] = [];
  for (const rs of msg.resource_spans ?? []) {
    const service = String(attributesOf(rs.resource?.attributes)["service.name"] ?? "");
    for (const ss of rs.scope_spans ?? []) {
      for (const s of ss.spans ?? []) {
        out.push({
          traceId: hex(s.trace_id),
          spanId: hex(s.span_id),
          parentSpanId: hex(s.parent_span_id),
          traceState: s.trace_state ?? "",
          name: s.name,
          kind: (s.kind ?? "SPAN_KIND_UNSPECIFIED").replace("SPAN_KIND_", "") as ReceivedSpan["kind"],
          attributes: attributesOf(s.attributes),
          status: {
            code: (s.status?.code ?? "STATUS_CODE_UNSET").replace("STATUS_CODE_", "") as ReceivedSpan["status"]["code"],
            message: s.status?.message ?? "",
          },
          service,
        });
      }
    }
  }
  return out;
}

/** Starts the receiver on a free loopback port. */
export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = [];
  let requests = 0;
  let lastHeaders: IncomingMessage["headers"] = {};
  const receiver = {
    url: "",
    spans,
    get requests() {
      return requests;
    },
    get lastHeaders() {
      return lastHeaders;
    },
    failing: false,
    close: (): Promise<void> => Promise.resolve(),
  };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      requests++;
      lastHeaders = req.headers;
      if (req.method !== "POST" || req.url !== "/v1/traces") {
        res.writeHead(404).end();
        return;
      }
      if (receiver.failing) {
        res.writeHead(503, { "content-type": "text/plain" }).end("collector unavailable");
        return;
      }
      if (req.headers["content-type"] !== "application/x-protobuf") {
        res.writeHead(415).end();
        return;
      }
      spans.push(...decodeExport(Buffer.concat(chunks)));
      // An empty ExportTraceServiceResponse: no partial_success.
      res.writeHead(200, { "content-type": "application/x-protobuf" }).end(Buffer.alloc(0));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  receiver.url = `http://127.0.0.1:${port}/v1/traces`;
  receiver.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return receiver;
}
