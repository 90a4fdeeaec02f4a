import { fromBinary, toBinary, type DescMessage, type DescService } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import type { PackageDefinition } from "@grpc/proto-loader";
import { FileDescriptorProtoSchema, FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { HealthImplementation } from "grpc-health-check";
import { readFileSync } from "node:fs";
import type { OutgoingHttpHeaders } from "node:http2";
import {
  ChatResponseSchema,
  EmbedResponseSchema,
  GenerateResponseSchema,
  InferenceService,
  type ListModelsResponse,
  ListModelsResponseSchema,
  type PredictResponse,
} from "../../gen/infergate/v1/inference_service_pb.js";
import type { RequestLimits, ServerConfig } from "../config/schema.js";
import type { Gateway } from "../gateway/gateway.js";
import { GatewayError } from "../core/gateway-error.js";
import { checkWireLimits } from "../gateway/request-limits.js";
import { costHeader } from "../gateway/steps/call-record.js";
import { callerHeaders, createCallContext, type OwnedCallContext, peerCommonName } from "../core/call-context.js";
import { answerTooLarge } from "./answer-size.js";
import { toServiceError } from "./error-rendering.js";
import { resetIfStuck } from "./stuck-streams.js";
import { malformedRequest, UndecodableRequest } from "./malformed-request.js";
import type { CallRecord } from "../observability/call-record.js";
import type { ServerTlsMaterial } from "./server-tls.js";
import { predictResponseBytes, rememberEncoding, requestDecoder, responseBytes } from "../wire/fast-paths.js";

/** The descriptor set `buf build` writes (make generate; the build copies it beside dist/gen). */
const descriptorSetUrl = new URL("../../gen/infergate.binpb", import.meta.url);

/** Service names whose health is reported: "" is the whole server. */
export const healthServices = ["", InferenceService.typeName] as const;

/**
 * A grpc-js service definition whose (de)serializers are the protobuf-es schemas, so the whole
 * code base has one set of message types.
 */
function serviceDefinition(service: DescService, limits: RequestLimits): grpc.ServiceDefinition {
  const def: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const method of service.methods) {
    const io = (schema: DescMessage) => ({
      // A view, not a copy (grpc-js copies into its frame anyway). Bytes already encoded (a
      // Generate event the listener checked for size) are written as they are.
      serialize: (m: unknown) => {
        const bytes = m instanceof Uint8Array ? m : responseBytes(schema, m as object);
        return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      },
      deserialize: (b: Buffer): unknown => fromBinary(schema, b),
    });
    const input = io(method.input);
    const output = io(method.output);
    // Requests the cache keys are interned and digested, a big Predict read in bulk (src/wire/).
    const decodeRequest = requestDecoder(method.input);
    // Bytes that are not a message of the method reach its handler as an UndecodableRequest,
    // answered INVALID_ARGUMENT (MALFORMED_REQUEST) and reported as a call: a deserializer that
    // throws makes grpc-js answer INTERNAL "Error deserializing request" by itself (issue 17).
    const rpc = method.name as CallRecord["rpc"];
    // A request over server.requestLimits is refused from its bytes, before it is decoded (an
    // object per element): INVALID_ARGUMENT naming the field (src/gateway/request-limits.ts).
    const decodeOrRefuse = (b: Buffer): unknown => {
      try {
        checkWireLimits(method.input, b, limits);
        return decodeRequest(b);
      } catch (err) {
        return new UndecodableRequest(rpc, err instanceof GatewayError ? err : malformedRequest(method.input, err));
      }
    };
    def[method.name] = {
      path: `/${service.typeName}/${method.name}`,
      requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
      responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
      requestSerialize: input.serialize,
      requestDeserialize: decodeOrRefuse,
      responseSerialize: output.serialize,
      responseDeserialize: output.deserialize,
      originalName: method.localName,
    };
  }
  return def as grpc.ServiceDefinition;
}

function callContext(call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>, maxTimeoutMs: number, tls: boolean): OwnedCallContext {
  const deadline = call.getDeadline();
  const at = deadline instanceof Date ? deadline.getTime() : deadline;
  const ctx = createCallContext({
    timeoutMs: Number.isFinite(at) ? Math.max(0, at - Date.now()) : undefined,
    maxTimeoutMs,
    timeoutHeader: "grpc-timeout",
    headers: () => callerHeaders(Object.entries(call.metadata.getMap())),
    header: (name) => textValue(call.metadata.get(name)[0]),
    requestId: textValue(call.metadata.get("x-request-id")[0]),
    // Only TLS connections have a peer certificate; asking an h2c call costs several µs (the
    // HTTP/2 session's socket is a Proxy) for nothing.
    peerCommonName: tls ? peerCommonName(call.getAuthContext().sslPeerCertificate?.subject) : undefined,
    // Listened for only once something holds the call's signal (a hit never does); grpc-js sets
    // `cancelled` before it emits the event.
    clientGone: { cancelled: () => call.cancelled, watch: (cancel) => call.once("cancelled", cancel) },
  });
  return ctx;
}

/** A metadata value that is text (as callerHeaders keeps them), or undefined. */
function textValue(v: grpc.MetadataValue | undefined): string | undefined {
  return typeof v === "string" ? v : undefined;
}

/** Sends the response headers the core set (once, before the first message). */
function sendHeaders(call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>, ctx: OwnedCallContext): void {
  const entries = Object.entries(ctx.responseHeaders);
  if (entries.length > 0) {
    const md = new grpc.Metadata();
    for (const [k, v] of entries) md.set(k, v);
    call.sendMetadata(md);
  }
}

/**
 * A unary answer's response headers as grpc-js reads them (toHttp2Headers, its only use of
 * metadata it sends), without a Map entry and a check per header: the core sets only the request
 * id (printable ASCII, see createCallContext), the cache outcome, the model and upstream that
 * served (configuration names: letters, digits and . _ : / -), and the cost (digits, a point, a
 * space and a currency's three capital letters, or `unpriced`: src/observability/cost.ts). About 0.35 µs a call in a tight
 * loop, and 4.6 µs at concurrency 1 (scratch instrumentation, docs/benchmarks.md).
 */
class ResponseHeaders extends grpc.Metadata {
  constructor(private readonly headers: Readonly<Record<string, string>>) {
    super();
  }
  override toHttp2Headers(): OutgoingHttpHeaders {
    return this.headers;
  }
}

/** The trailers of a Generate stream that ended well: its cost (src/gateway/steps/call-record.ts). */
function costTrailer(ctx: OwnedCallContext): grpc.Metadata | undefined {
  const cost = ctx.responseHeaders[costHeader];
  if (cost === undefined) return undefined;
  const md = new grpc.Metadata();
  md.set(costHeader, cost);
  return md;
}

/** Adds the response headers the core set (the request id) to an error's trailers. */
function withHeaders(err: Partial<grpc.ServiceError>, ctx: OwnedCallContext): Partial<grpc.ServiceError> {
  for (const [k, v] of Object.entries(ctx.responseHeaders)) err.metadata?.set(k, v);
  return err;
}

/** The grpc-js server of the gRPC listener, before it binds. */
export interface GrpcServer {
  readonly server: grpc.Server;
  readonly health: HealthImplementation;
}

/**
 * Builds the gRPC listener: InferenceService over the gateway core, grpc.health.v1 and server
 * reflection (v1 and v1alpha) fed with the descriptor set buf built.
 */
export function createGrpcServer(gateway: Gateway, config: ServerConfig): GrpcServer {
  const server = new grpc.Server({
    "grpc.max_receive_message_length": config.maxMessageBytes,
    "grpc.max_send_message_length": config.maxMessageBytes,
    "grpc.max_concurrent_streams": config.maxConcurrentStreams,
    // channelz (per-call counters and a trace kept for a channelz client) is never served here;
    // keeping it costs several µs of every call (bench/: _channelzHandler, addCallStarted).
    "grpc.enable_channelz": 0,
    // Slow and idle connections (docs/production.md, issue 17): a connection with no call open
    // for idleTimeoutMs gets a GOAWAY, and one older than maxAgeMs too (±10% jitter), its calls
    // then given maxTimeoutMs, the longest a call may run, before it is cut.
    "grpc.max_connection_idle_ms": config.connections.idleTimeoutMs,
    "grpc.max_connection_age_ms": config.connections.maxAgeMs,
    "grpc.max_connection_age_grace_ms": config.maxTimeoutMs,
  });
  /** The error that answers a request which did not decode (reported as a call), else undefined. */
  const undecodable = (req: unknown, ctx: OwnedCallContext): Partial<grpc.ServiceError> | undefined =>
    req instanceof UndecodableRequest ? withHeaders(toServiceError(gateway.refused(req.rpc, ctx, req.error)), ctx) : undefined;
  /**
   * A CallContext.encodeAnswer: the answer's bytes, refused (MESSAGE_TOO_LARGE) over
   * server.maxMessageBytes, else remembered for the serializer.
   */
  const checkedEncoding =
    (encode: (answer: object) => Uint8Array) =>
    (answer: object): void => {
      const bytes = encode(answer);
      if (bytes.byteLength > config.maxMessageBytes) throw answerTooLarge(bytes.byteLength, config.maxMessageBytes);
      rememberEncoding(answer, bytes);
    };
  const unary =
    <Req, Res>(fn: (req: Req, ctx: OwnedCallContext) => Promise<Res>, encodeAnswer?: (answer: object) => void): grpc.handleUnaryCall<Req, Res> =>
    (call, callback) => {
      const ctx = callContext(call, config.maxTimeoutMs, config.tls !== undefined);
      const refused = undecodable(call.request, ctx);
      if (refused !== undefined) {
        try {
          callback(refused);
        } finally {
          ctx.dispose();
        }
        return;
      }
      if (encodeAnswer !== undefined) ctx.encodeAnswer = encodeAnswer;
      // Disposed in each outcome's own handler (no `finally` step and its promise per call).
      fn(call.request, ctx).then(
        (res) => {
          try {
            call.sendMetadata(new ResponseHeaders(ctx.responseHeaders));
            callback(null, res);
          } finally {
            ctx.dispose();
          }
        },
        (err: unknown) => {
          try {
            callback(withHeaders(toServiceError(err), ctx));
          } finally {
            ctx.dispose();
          }
        },
      );
    };

  // Events are written as their encoded bytes (see the serializer).
  const generate: grpc.handleServerStreamingCall<Parameters<Gateway["generate"]>[0], Uint8Array> = (call) => {
    const ctx = callContext(call, config.maxTimeoutMs, config.tls !== undefined);
    const refused = undecodable(call.request, ctx);
    if (refused !== undefined) {
      call.emit("error", refused);
      ctx.dispose();
      return;
    }
    void (async () => {
      try {
        let first = true;
        const events = gateway.generate(call.request, ctx);
        for await (const event of events) {
          // Each event is encoded here, before it is written, so that one too big for the client
          // fails the stream through the core: thrown into the gateway's generator at the event it
          // yielded, the call is reported, and answered, with it (issue 17).
          const bytes = responseBytes(GenerateResponseSchema, event);
          if (bytes.byteLength > config.maxMessageBytes) {
            const tooLarge = answerTooLarge(bytes.byteLength, config.maxMessageBytes);
            await events.throw(tooLarge);
            throw tooLarge;
          }
          if (first) {
            sendHeaders(call, ctx);
            first = false;
            call.write(bytes);
            // One turn of the event loop after the first event: Node's HTTP/2 session writes what
            // is queued (the headers and this event) in that turn, so the first token leaves
            // before the events behind it in the same upstream read are processed (a burst of
            // 200 took about a millisecond of the time to first token).
            await new Promise<void>((resolve) => setImmediate(resolve));
            continue;
          }
          if (!call.write(bytes)) {
            // Backpressure: wait until the client has read what is buffered (or went away).
            await new Promise<void>((resolve) => {
              const done = () => {
                call.off("drain", done);
                ctx.signal.removeEventListener("abort", done);
                resolve();
              };
              call.once("drain", done);
              ctx.signal.addEventListener("abort", done, { once: true });
            });
          }
        }
        // The stream's cost is known once it has ended: a trailer.
        call.end(costTrailer(ctx));
      } catch (err) {
        call.emit("error", withHeaders(toServiceError(err), ctx));
      } finally {
        resetIfStuck(call, ctx.deadline);
        ctx.dispose();
      }
    })();
  };

  server.addService(serviceDefinition(InferenceService, config.requestLimits), {
    // A unary answer (a big tensor, maybe) is encoded before the call is reported: its encoding
    // counts in the logged latency, and one too big for the client fails the call there (issue
    // 17); the serializer then writes those bytes.
    Predict: unary(gateway.predict, checkedEncoding((answer) => predictResponseBytes(answer as PredictResponse))),
    Chat: unary(gateway.chat, checkedEncoding((answer) => responseBytes(ChatResponseSchema, answer))),
    Embed: unary(gateway.embed, checkedEncoding((answer) => responseBytes(EmbedResponseSchema, answer))),
    Generate: generate,
    ListModels: unary(gateway.listModels, checkedEncoding((answer) => toBinary(ListModelsResponseSchema, answer as ListModelsResponse))),
    DeleteSession: unary(gateway.deleteSession),
  });

  const health = new HealthImplementation(Object.fromEntries(healthServices.map((s) => [s, "SERVING"])));
  health.addToServer(server);
  new ReflectionService(reflectionPackage(readFileSync(descriptorSetUrl))).addToServer(server);
  return { server, health };
}

/**
 * @grpc/reflection reads only the `fileDescriptorProtos` of a package definition. proto-loader's
 * own loader round-trips descriptors through protobufjs and drops files on the way (grpc-node
 * #2595), so the files of buf's descriptor set are handed over exactly as buf wrote them.
 */
function reflectionPackage(descriptorSet: Uint8Array): PackageDefinition {
  const set = fromBinary(FileDescriptorSetSchema, descriptorSet);
  const fileDescriptorProtos = set.file.map((f) => Buffer.from(toBinary(FileDescriptorProtoSchema, f)));
  return { "": { fileDescriptorProtos } } as unknown as PackageDefinition;
}

/** The gRPC listener's credentials, and with TLS the way to hand it new certificates. */
export interface GrpcCredentials {
  readonly credentials: grpc.ServerCredentials;
  /** New TLS handshakes use `material` from now on; connections already open keep theirs. */
  update(material: ServerTlsMaterial): void;
}

/**
 * The server credentials: h2c without TLS material; TLS (mTLS with a client CA) with it, through
 * grpc-js's certificate-provider credentials, its supported way to change certificates without
 * binding again: each update reaches the bound secure server's `setSecureContext`. The material is
 * checked before it gets here (readServerTls): a context that grpc-js fails to build makes it drop
 * every new connection.
 */
export function grpcCredentials(tls: ServerTlsMaterial | undefined): GrpcCredentials {
  if (tls === undefined) {
    return { credentials: grpc.ServerCredentials.createInsecure(), update: () => {} };
  }
  const provider = new ReloadableCertificates(tls);
  // grpc-js 1.14 takes the identity provider first and the CA provider second, whatever the
  // parameter names in its typings say; one provider serves both here. No CA provider: clients
  // are not asked for a certificate; with one, a client without a valid one is refused.
  const credentials = grpc.experimental.createCertificateProviderServerCredentials(provider, tls.ca === undefined ? null : provider, tls.ca !== undefined);
  return { credentials, update: (material) => provider.set(material) };
}

/** A certificate provider whose certificates change when told to (on reload), not by polling. */
class ReloadableCertificates implements grpc.experimental.CertificateProvider {
  private identity: grpc.experimental.IdentityCertificateUpdate;
  private ca: grpc.experimental.CaCertificateUpdate | null;
  private readonly identityListeners = new Set<grpc.experimental.IdentityCertificateUpdateListener>();
  private readonly caListeners = new Set<grpc.experimental.CaCertificateUpdateListener>();

  constructor(material: ServerTlsMaterial) {
    this.identity = { certificate: material.cert, privateKey: material.key };
    this.ca = material.ca === undefined ? null : { caCertificate: material.ca };
  }

  set(material: ServerTlsMaterial): void {
    this.identity = { certificate: material.cert, privateKey: material.key };
    this.ca = material.ca === undefined ? null : { caCertificate: material.ca };
    for (const l of this.identityListeners) l(this.identity);
    for (const l of this.caListeners) l(this.ca);
  }

  // The first update is delivered on the next tick, as grpc-js's own file watcher does: the
  // credentials subscribe here before they register the server's watcher that applies updates.
  addIdentityCertificateListener(listener: grpc.experimental.IdentityCertificateUpdateListener): void {
    this.identityListeners.add(listener);
    process.nextTick(() => listener(this.identity));
  }
  removeIdentityCertificateListener(listener: grpc.experimental.IdentityCertificateUpdateListener): void {
    this.identityListeners.delete(listener);
  }
  addCaCertificateListener(listener: grpc.experimental.CaCertificateUpdateListener): void {
    this.caListeners.add(listener);
    process.nextTick(() => listener(this.ca));
  }
  removeCaCertificateListener(listener: grpc.experimental.CaCertificateUpdateListener): void {
    this.caListeners.delete(listener);
  }
}
