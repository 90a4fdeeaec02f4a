import { type DescMethod, fromBinary, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { ErrorInfoSchema, RetryInfoSchema } from "../../../gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../../../gen/google/rpc/status_pb.js";
import type { UpstreamConfig } from "../../config/schema.js";
import { GatewayError, Reason } from "../../core/gateway-error.js";
import { attemptAnswered, attemptTraceHeaders } from "../../core/attempt-progress.js";
import { DEADLINE_MARGIN_MS } from "../../core/call-context.js";
import { scrub } from "../http/http-errors.js";
import { defaultHttpPoolOptions, readUpstreamTls } from "../http/http-upstream.js";

/** One gRPC call to an upstream: the caller's signal and deadline, and metadata to send. */
export interface GrpcCall {
  signal: AbortSignal;
  deadline: number;
  metadata?: Readonly<Record<string, string>>;
}

export interface GrpcUpstreamOptions {
  /** Largest message each way. */
  maxMessageBytes: number;
  /** Whether the upstream's error messages and ErrorInfo pass through as they are (another infergate). */
  trustedErrors: boolean;
}

type Unary = DescMethod & { methodKind: "unary" };
type ServerStreaming = DescMethod & { methodKind: "server_streaming" };

/**
 * The I/O half of gRPC upstream kinds (kserve over gRPC, infergate chaining): one grpc-js channel
 * per endpoint (round robin), protobuf-es messages as (de)serializers, the caller's remaining
 * deadline as the call's deadline (capped by the upstream's timeoutMs), and cancellation with the
 * caller's signal. grpc-js is the client because it is the library of our gRPC server too: one
 * HTTP/2 stack, one set of channel options.
 */
export class GrpcUpstream {
  private readonly clients: grpc.Client[];
  private next = 0;

  constructor(
    private readonly config: Pick<UpstreamConfig, "name" | "endpoints" | "timeoutMs" | "apiKey" | "tls" | "connectTimeoutMs" | "firstByteTimeoutMs">,
    private readonly options: GrpcUpstreamOptions,
  ) {
    const tls = readUpstreamTls(config.tls);
    this.clients = config.endpoints.map((e) => {
      const url = new URL(e);
      const creds =
        url.protocol === "https:"
          ? grpc.credentials.createSsl(tls?.ca ?? null, tls?.key ?? null, tls?.cert ?? null)
          : grpc.credentials.createInsecure();
      return new grpc.Client(url.host, creds, {
        "grpc.max_receive_message_length": options.maxMessageBytes,
        "grpc.max_send_message_length": options.maxMessageBytes,
        "grpc.keepalive_time_ms": 30_000,
        "grpc.keepalive_timeout_ms": 10_000,
        // No channelz client reads it here; tracking every call for it costs CPU (as on the listener).
        "grpc.enable_channelz": 0,
      });
    });
  }

  private pick(): grpc.Client {
    return this.clients[this.next++ % this.clients.length]!;
  }

  private prepare(method: DescMethod, call: GrpcCall) {
    const path = `/${method.parent.typeName}/${method.name}`;
    const metadata = new grpc.Metadata();
    for (const [k, v] of Object.entries(call.metadata ?? {})) {
      metadata.set(k, v);
    }
    // The attempt's client span as the upstream's parent (traceparent), when tracing is on; it
    // replaces a traceparent forwarded from the caller's headers.
    const trace = attemptTraceHeaders(call.signal);
    if (trace !== undefined) {
      for (const k in trace) metadata.set(k, trace[k]!);
    }
    const own = Date.now() + this.config.timeoutMs;
    const deadline = new Date(Math.min(call.deadline, own));
    // Whether the call's deadline, not the upstream's own timeout, bounds this call.
    const callBound = call.deadline <= own;
    // A view of the encoded bytes, not a copy (grpc-js copies them into its frame anyway).
    const serialize = (m: unknown) => {
      const bytes = toBinary(method.input, m as never);
      return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    };
    const deserialize = (b: Buffer) => fromBinary(method.output, b);
    return { path, metadata, deadline, callBound, serialize, deserialize };
  }

  /** A unary call; resolves with the answer or rejects with a mapped GatewayError. */
  unary<M extends Unary>(method: M, request: MessageShape<M["input"]>, call: GrpcCall): Promise<MessageShape<M["output"]>> {
    const p = this.prepare(method, call);
    return new Promise((resolve, reject) => {
      if (call.signal.aborted) {
        reject(call.signal.reason);
        return;
      }
      const onAbort = () => c.cancel();
      const client = this.pick();
      const silence = this.silenceWatch(client, p.deadline.getTime(), () => c.cancel());
      const c = client.makeUnaryRequest(p.path, p.serialize, p.deserialize, request, p.metadata, { deadline: p.deadline }, (err, res) => {
        call.signal.removeEventListener("abort", onAbort);
        silence.dispose();
        if (err !== null) {
          if (silence.error !== undefined && !call.signal.aborted) {
            reject(silence.error);
            return;
          }
          if (fromServer(err)) attemptAnswered(call.signal);
          this.failure(err, call, p.callBound).then(reject, reject);
        } else {
          resolve(res as MessageShape<M["output"]>);
        }
      });
      c.on("metadata", () => {
        silence.answered();
        attemptAnswered(call.signal);
      });
      call.signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** A server-streaming call, as an async iterable of answers; errors are mapped GatewayErrors. */
  async *serverStream<M extends ServerStreaming>(
    method: M,
    request: MessageShape<M["input"]>,
    call: GrpcCall,
  ): AsyncGenerator<MessageShape<M["output"]>> {
    call.signal.throwIfAborted();
    const p = this.prepare(method, call);
    const client = this.pick();
    const stream = client.makeServerStreamRequest(p.path, p.serialize, p.deserialize, request, p.metadata, { deadline: p.deadline });
    const silence = this.silenceWatch(client, p.deadline.getTime(), () => stream.cancel());
    stream.on("metadata", () => {
      silence.answered();
      attemptAnswered(call.signal);
    });
    const onAbort = () => stream.cancel();
    call.signal.addEventListener("abort", onAbort, { once: true });
    try {
      for await (const message of stream as AsyncIterable<MessageShape<M["output"]>>) {
        yield message;
      }
    } catch (err) {
      if (silence.error !== undefined && !call.signal.aborted) throw silence.error;
      if (fromServer(err as grpc.ServiceError)) attemptAnswered(call.signal);
      throw await this.failure(err as grpc.ServiceError, call, p.callBound);
    } finally {
      silence.dispose();
      call.signal.removeEventListener("abort", onAbort);
      // A consumer that stops early must not leave the upstream generating.
      stream.cancel();
    }
  }

  /**
   * The connect and first-byte timeouts of one call (docs/resilience.md, "Connect and first-byte
   * timeouts"): a channel not connected `connectTimeoutMs` after the call started fails it with
   * UNAVAILABLE (grpc-js itself waits for a connection as long as the deadline); no response
   * metadata or status `firstByteTimeoutMs` after it started fails it with DEADLINE_EXCEEDED,
   * reason UPSTREAM_TIMEOUT. Either cancels the call; the caller then rejects with `error`. No
   * timer is set for a limit the call's deadline reaches first.
   */
  private silenceWatch(client: grpc.Client, deadline: number, cancel: () => void): SilenceWatch {
    const started = Date.now();
    const connected = () => client.getChannel().getConnectivityState(false) === grpc.connectivityState.READY;
    const connectMs = this.config.connectTimeoutMs ?? defaultHttpPoolOptions.connectTimeoutMs;
    const firstByteMs = this.config.firstByteTimeoutMs;
    const firstByteAt = firstByteMs === undefined ? Infinity : started + firstByteMs;
    let connectAt = connected() ? Infinity : started + connectMs;
    let timer: NodeJS.Timeout | undefined;
    let target = Infinity;
    let error: GatewayError | undefined;
    const name = this.config.name;
    const fire = (): void => {
      timer = undefined;
      if (target === connectAt) {
        if (!connected()) {
          error = new GatewayError(Code.Unavailable, `upstream "${name}" could not be reached: not connected within its connect timeout of ${connectMs}ms`, {
            reason: Reason.UpstreamUnavailable,
            metadata: { upstream: name },
          });
          cancel();
          return;
        }
        connectAt = Infinity;
        arm();
        return;
      }
      error = new GatewayError(Code.DeadlineExceeded, `upstream "${name}" sent nothing within its first-byte timeout of ${firstByteMs}ms`, {
        reason: Reason.UpstreamTimeout,
        metadata: { upstream: name },
      });
      cancel();
    };
    const arm = (): void => {
      target = Math.min(firstByteAt, connectAt);
      if (target >= deadline) return;
      timer = setTimeout(fire, Math.max(0, target - Date.now()));
      timer.unref();
    };
    arm();
    const stop = (): void => {
      clearTimeout(timer);
      timer = undefined;
    };
    return {
      get error() {
        return error;
      },
      answered: stop,
      dispose: stop,
    };
  }

  /**
   * The error a failed call ends with: the caller's reason once its signal aborted (cancel,
   * deadline); else the mapped upstream status. grpc-js's deadline timer and the call's own are
   * due at the same moment when the call's deadline bounds the upstream call, and grpc-js's may
   * fire first (it counts from the wall clock, timers from the event loop's): a DEADLINE_EXCEEDED
   * within DEADLINE_NEAR_MS of the call's deadline then waits a little for the call's own signal,
   * so that the caller is told which deadline ran out (e.g. "the gateway's maximum call time of
   * 800ms"), not that the upstream did not answer.
   */
  private failure(err: grpc.ServiceError, call: GrpcCall, callBound: boolean): Promise<unknown> {
    if (call.signal.aborted) return Promise.resolve(call.signal.reason);
    const mapped = this.mapError(err);
    if (!callBound || mapped.code !== Code.DeadlineExceeded) return Promise.resolve(mapped);
    // An upstream that answers DEADLINE_EXCEEDED with time left (its own limit ran out) is an
    // upstream timeout now, for retries, the breaker and fallbacks to act on.
    if (call.deadline - Date.now() > DEADLINE_NEAR_MS) return Promise.resolve(mapped);
    return new Promise((resolve) => {
      const onAbort = () => {
        clearTimeout(timer);
        resolve(call.signal.reason);
      };
      // A run whose signal is not tied to its deadline (a probe) gets the mapped status.
      const timer = setTimeout(() => {
        call.signal.removeEventListener("abort", onAbort);
        resolve(mapped);
      }, Math.max(0, call.deadline - Date.now()) + DEADLINE_GRACE_MS);
      timer.unref();
      call.signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  /**
   * An upstream status → ours. The code passes through (it is a gRPC code already); ErrorInfo and
   * RetryInfo in `grpc-status-details-bin` are kept. A trusted upstream (another infergate) keeps
   * its message; others are scrubbed and attributed.
   */
  mapError(err: grpc.ServiceError): GatewayError {
    const original = (err.code ?? Code.Unknown) as number as Code;
    let code = original;
    if (!this.options.trustedErrors && (code === Code.Unauthenticated || code === Code.PermissionDenied)) {
      // The caller's own credentials are fine; the gateway's are not. Same as HTTP 401/403.
      code = Code.Internal;
    }
    let reason: string | undefined;
    let metadata: Record<string, string> = { upstream: this.config.name };
    let retryAfterMs: number | undefined;
    const bin = err.metadata?.get("grpc-status-details-bin")[0];
    if (bin instanceof Buffer) {
      try {
        const status = fromBinary(StatusSchema, bin);
        for (const d of status.details) {
          const info = anyUnpack(d, ErrorInfoSchema);
          if (info !== undefined) {
            reason = info.reason;
            metadata = { ...info.metadata, ...metadata };
          }
          const retry = anyUnpack(d, RetryInfoSchema);
          if (retry?.retryDelay !== undefined) {
            retryAfterMs = Number(retry.retryDelay.seconds) * 1000 + Math.round(retry.retryDelay.nanos / 1e6);
          }
        }
      } catch {
        // unreadable details: keep the code
      }
    }
    const details = err.details ?? "";
    const message = this.options.trustedErrors
      ? details
      : `upstream "${this.config.name}" failed: ${scrub(details, this.config.apiKey === undefined ? [] : [this.config.apiKey])}`;
    return new GatewayError(code, message, {
      reason: this.options.trustedErrors && reason !== undefined ? reason : defaultUpstreamReason(original, reason, details),
      metadata,
      cause: err,
      ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
    });
  }

  async close(): Promise<void> {
    for (const c of this.clients) {
      c.close();
    }
  }
}

/** A call's connect and first-byte timers (GrpcUpstream.silenceWatch). */
interface SilenceWatch {
  /** The timeout that cancelled the call, if one did. */
  readonly error: GatewayError | undefined;
  /** The answer began: no more timers. */
  answered(): void;
  /** The call is over. */
  dispose(): void;
}

/**
 * Whether a failed call's status came from the server: grpc-js keeps the server's trailers (a
 * trailers-only answer has at least its content-type) as the error's metadata, and makes its own
 * statuses (no connection, deadline, cancel, a broken connection) with none.
 */
function fromServer(err: grpc.ServiceError): boolean {
  return err.metadata !== undefined && Object.keys(err.metadata.getMap()).length > 0;
}

/** How long past its deadline a call waits for its own signal after grpc-js's deadline fired. */
const DEADLINE_GRACE_MS = 50;
/**
 * How close to the call's deadline a DEADLINE_EXCEEDED must come to be taken as that deadline's:
 * another infergate upstream answers up to DEADLINE_MARGIN_MS before the deadline it was sent (its
 * own margin, src/core/call-context.ts), plus slack for the link and timers.
 */
const DEADLINE_NEAR_MS = DEADLINE_MARGIN_MS + 50;

/**
 * A message over a size limit, as gRPC implementations word it: grpc-js and C-core "Received (or
 * Sent) message larger than max (N vs. M)", grpc-go "grpc: received message larger than max" and
 * "trying to send message larger than max". RESOURCE_EXHAUSTED is also a rate limit's code: the
 * message tells them apart (issue 17).
 */
const messageTooLarge = /message larger than max/i;

function defaultUpstreamReason(code: Code, given: string | undefined, details: string): string {
  switch (code) {
    case Code.Unavailable:
      return Reason.UpstreamUnavailable;
    case Code.ResourceExhausted:
      return messageTooLarge.test(details) ? Reason.UpstreamMessageTooLarge : Reason.UpstreamRateLimited;
    case Code.DeadlineExceeded:
      return Reason.UpstreamTimeout;
    case Code.Unauthenticated:
    case Code.PermissionDenied:
      return Reason.UpstreamAuth;
    case Code.InvalidArgument:
      return Reason.InvalidArgument;
    case Code.NotFound:
      return Reason.ModelNotFound;
    default:
      return given ?? Reason.UpstreamError;
  }
}
