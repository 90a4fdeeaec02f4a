import { randomUUID } from "node:crypto";
import { Code } from "@connectrpc/connect";
import { GatewayError, Reason } from "./gateway-error.js";

/**
 * What the core knows of one call's life: a signal that aborts when the caller goes away or the
 * deadline passes (its `reason` is the GatewayError to answer with), and the deadline itself.
 * Everything below the ingress (gateway, resilience, adapters) takes this and nothing protocol-
 * specific.
 */
export interface CallContext {
  readonly signal: AbortSignal;
  /** Epoch milliseconds. */
  readonly deadline: number;
  /**
   * The caller's request headers (gRPC metadata), lower-case names, text values only; protocol
   * headers (`grpc-*`, `connect-*`, pseudo-headers, content-type, te, user-agent) left out. Kinds
   * that forward some (an allowlist) read them here.
   */
  readonly headers: Readonly<Record<string, string>>;
  /**
   * One of `headers` by its lower-case name, without building them all where the listener builds
   * them on first read (the gRPC listener: about 2 µs a call); for a check every call makes.
   */
  header?(name: string): string | undefined;
  /** The authenticated tenant; "" when authentication is off. Set by admission (src/security). */
  tenant: string;
  /** The call's id: the caller's `x-request-id`, or one made here; echoed as a response header. */
  readonly requestId: string;
  /** The subject CN of the client certificate the TLS layer verified (mTLS), if any. */
  readonly peerCommonName: string | undefined;
  /**
   * Response headers the core wants sent (e.g. `infergate-cache`). Set before a unary answer
   * returns or before a stream's first event; the ingress sends them with the response headers.
   */
  readonly responseHeaders: Record<string, string>;
  /** What the resilience layer did for this call: for the per-call log line. */
  readonly trace: AttemptTrace;
  /**
   * Aborts `signal` with `reason` (the gateway's abortInFlight, at the end of a drain). Contexts
   * made by createCallContext have it; for one without, the gateway links a signal of its own to
   * each call, which costs an AbortSignal and a listener per call.
   */
  readonly abort?: (reason: unknown) => void;
  /**
   * Whether `signal` has aborted, without making the signal: createCallContext's contexts make
   * theirs only when something asks for it (an AbortSignal costs several µs, and a cache hit
   * never needs one). Read it through `throwIfAborted`.
   */
  readonly isAborted?: () => boolean;
  /**
   * Set by a listener that writes a unary answer's bytes itself: the gateway calls it with the
   * answer before it reports the call, so that the logged latency includes the encoding (a 4 MiB
   * tensor's is not nothing). What it encodes must be what the listener then writes. What it
   * throws fails the call: the gateway reports the call with that error and rejects with it (an
   * answer over the listener's `server.maxMessageBytes`: RESOURCE_EXHAUSTED, MESSAGE_TOO_LARGE).
   */
  encodeAnswer?: (answer: object) => void;
}

/** `ctx.signal.throwIfAborted()`, without making the signal of a context that has none yet. */
export function throwIfAborted(ctx: CallContext): void {
  if (ctx.isAborted === undefined || ctx.isAborted()) ctx.signal.throwIfAborted();
}

/** Upstream attempts one call made (fallbacks included) and the endpoint of the last one. */
export interface AttemptTrace {
  attempts: number;
  /** The endpoint URL without credentials; undefined before any attempt and for in-process kinds. */
  endpoint: string | undefined;
  /**
   * The call's server span when tracing is on (set by the call record step from
   * src/observability/tracing.ts); undefined when it is off, so that the layers below start no
   * span and do no context work.
   */
  span?: CallSpan | undefined;
}

/**
 * One call's span as the layers below the gateway see it: the resilience layer starts a client
 * span under it for each upstream attempt. An interface here, so that nothing below the
 * observability layer depends on OpenTelemetry (src/observability/tracing.ts implements it).
 */
export interface CallSpan {
  /** The call's trace id (32 hex digits), for its log line. */
  readonly traceId: string;
  /** Starts the client span of one upstream attempt; its `end` is called once the attempt is over. */
  attempt(info: AttemptSpanInfo): AttemptSpan;
}

/** What an attempt's client span says of where the attempt went. */
export interface AttemptSpanInfo {
  /** The RPC of the upstream call: predict, chat, generate, embed or count_tokens. */
  readonly operation: "predict" | "chat" | "generate" | "embed" | "count_tokens";
  /** The configured upstream's name and kind. */
  readonly upstream: string;
  readonly kind: string;
  /** The model's name at the upstream. */
  readonly upstreamModel: string;
  /** The endpoint URL without credentials ("" for in-process kinds). */
  readonly endpoint: string;
  /** The attempt's number within this upstream call, from 1. */
  readonly attempt: number;
  /** The endpoint's circuit breaker when the attempt started. */
  readonly breaker: "closed" | "open" | "halfOpen";
}

/** The client span of one upstream attempt. */
export interface AttemptSpan {
  /**
   * W3C trace context headers (`traceparent`, and `tracestate` when the caller sent one) naming
   * this attempt as the parent: the transports send them as HTTP headers or gRPC metadata.
   */
  readonly headers: Readonly<Record<string, string>>;
  /** Ends the span, with the attempt's error when it failed (undefined: it answered). */
  end(err: unknown): void;
}

/** A CallContext plus the release of its timer, for the ingress that made it. */
export interface OwnedCallContext extends CallContext {
  /** Clears the deadline timer; call once the call has ended. */
  dispose(): void;
  /** Aborts the call because the client went away; does nothing once the call was disposed. */
  cancel(): void;
}

export interface CallContextInit {
  /** The client's timeout (e.g. from `grpc-timeout`), or undefined when it set none. */
  timeoutMs: number | undefined;
  /** The gateway's ceiling, applied also to calls without a deadline. */
  maxTimeoutMs: number;
  /** Name of the header the timeout came from, for the error message. */
  timeoutHeader: string;
  /**
   * The caller's headers, already filtered with `callerHeaders`; or a function that makes them,
   * called the first time `headers` is read (a cache hit without authentication never reads
   * them: building them costs about 2 µs a call), with `requestId` given apart.
   */
  headers?: Readonly<Record<string, string>> | (() => Readonly<Record<string, string>>);
  /** Reads one of the caller's headers, when `headers` is a function (see CallContext.header). */
  header?: ((name: string) => string | undefined) | undefined;
  /** The caller's `x-request-id`, when `headers` is a function. */
  requestId?: string | undefined;
  /** The verified client certificate's subject CN (mTLS). */
  peerCommonName?: string | undefined;
  /**
   * For an ingress that learns of a client going away by an event (grpc-js's `cancelled`): asked
   * whether the client went away, by the checks made before anything holds the signal, and given
   * the context's cancel to call on that event once something does (when the signal is first
   * asked for). Without them, the ingress calls `cancel()` itself.
   */
  clientGone?: { readonly cancelled: () => boolean; readonly watch: (cancel: () => void) => void };
}

const protocolHeader = /^(:|grpc-|connect-|content-type$|content-length$|te$|user-agent$|accept|host$|connection$|keep-alive$|transfer-encoding$|upgrade$)/;

/** Keeps the caller's own headers: text values, no protocol or hop-by-hop headers. */
export function callerHeaders(entries: Iterable<[string, unknown]>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of entries) {
    const name = k.toLowerCase();
    if (typeof v === "string" && !name.endsWith("-bin") && !protocolHeader.test(name)) {
      out[name] = v;
    }
  }
  return out;
}

/**
 * The most the gateway's deadline comes before the client's. On a busy host timers fire 10–25 ms
 * late (seen on this project's 2-core VM): with a smaller margin the gateway's timer and the
 * client's are both due by the time either runs, and the client's bare DEADLINE_EXCEEDED wins.
 */
export const DEADLINE_MARGIN_MS = 50;

/**
 * Makes the context of one call. The gateway gives up a moment before the client's own deadline
 * (10% of the timeout, at most DEADLINE_MARGIN_MS) so that its DEADLINE_EXCEEDED — which says what
 * ran out and how far the call got — reaches the client before the client's timer fires with a
 * bare one.
 */
export function createCallContext(init: CallContextInit): OwnedCallContext {
  return new Context(init);
}

/** A caller's id is kept only when it is short and printable: it goes into logs and headers. */
const fitRequestId = /^[\x21-\x7e]{1,128}$/;

/**
 * createCallContext's context. A class, not an object literal: a literal with getters is built
 * property by property by the runtime (about 1.5 µs a call), and each of its methods would be a
 * new closure per call; here the methods and getters live once on the prototype, and a call's
 * context holds only its own state. Nothing copies a context: read `headers` on the context itself.
 */
class Context implements OwnedCallContext {
  readonly deadline: number;
  tenant = "";
  readonly requestId: string;
  readonly peerCommonName: string | undefined;
  readonly responseHeaders: Record<string, string>;
  readonly trace: AttemptTrace = { attempts: 0, endpoint: undefined, span: undefined };
  /** Set by the gRPC listener for answers it encodes itself (see CallContext). */
  encodeAnswer?: (answer: object) => void;
  // Node makes a controller's AbortSignal when it is first asked for (or aborted).
  private readonly controller = new AbortController();
  private readonly init: CallContextInit;
  private builtHeaders: Readonly<Record<string, string>> | undefined;
  /** When the signal aborts for the deadline (epoch ms). */
  private readonly expiresAt: number;
  private readonly timeoutMs: number;
  /** The client's own deadline (not clamped to the maximum) is the one it has a timer for. */
  private readonly clientDeadline: boolean;
  private aborted = false;
  private over = false;
  // The deadline's timer is set when the signal is first asked for: only what waits (an upstream
  // call, a queue, a stream's backpressure) holds the signal, and a call that never waits (a
  // cache hit) needs none (a Node timer and its clearing cost about 2 µs a call). Until then the
  // deadline is checked on the clock, by isAborted and by the signal's getter.
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(init: CallContextInit) {
    this.init = init;
    const h = init.headers;
    let given: string | undefined;
    if (typeof h === "function") {
      given = init.requestId;
    } else {
      this.builtHeaders = h ?? {};
      given = this.builtHeaders["x-request-id"];
    }
    const requestId = given !== undefined && fitRequestId.test(given) ? given : randomUUID();
    this.requestId = requestId;
    this.responseHeaders = { "x-request-id": requestId };
    this.peerCommonName = init.peerCommonName;
    const clientTimeout = init.timeoutMs;
    const timeoutMs = Math.max(0, Math.min(clientTimeout ?? init.maxTimeoutMs, init.maxTimeoutMs));
    const now = Date.now();
    this.timeoutMs = timeoutMs;
    this.deadline = now + timeoutMs;
    this.clientDeadline = clientTimeout !== undefined && clientTimeout <= init.maxTimeoutMs;
    const margin = this.clientDeadline ? Math.min(DEADLINE_MARGIN_MS, timeoutMs * 0.1) : 0;
    this.expiresAt = now + Math.max(0, timeoutMs - margin);
  }

  get signal(): AbortSignal {
    if (!this.isAborted() && this.timer === undefined && !this.over) {
      this.timer = setTimeout(() => this.expire(), this.expiresAt - Date.now());
      this.timer.unref();
      this.init.clientGone?.watch(() => this.cancel());
    }
    return this.controller.signal;
  }

  get headers(): Readonly<Record<string, string>> {
    return (this.builtHeaders ??= (this.init.headers as () => Readonly<Record<string, string>>)());
  }

  header(name: string): string | undefined {
    const built = this.builtHeaders;
    if (built !== undefined) return built[name];
    const one = this.init.header;
    return one !== undefined ? one(name) : this.headers[name];
  }

  isAborted(): boolean {
    if (!this.aborted && !this.over) {
      if (this.init.clientGone?.cancelled() === true) this.cancel();
      else if (Date.now() >= this.expiresAt) this.expire();
    }
    return this.aborted;
  }

  private expire(): void {
    if (this.aborted) return;
    this.aborted = true;
    const message = this.clientDeadline
      ? `deadline exceeded: the call's ${this.init.timeoutHeader} of ${this.timeoutMs}ms ran out`
      : `deadline exceeded: the gateway's maximum call time of ${this.timeoutMs}ms ran out`;
    this.controller.abort(
      new GatewayError(Code.DeadlineExceeded, message, {
        reason: Reason.DeadlineExceeded,
        // A client timeout above the maximum was clamped: the maximum is what ran out.
        metadata: { field: this.clientDeadline ? this.init.timeoutHeader : "server.maxTimeoutMs" },
      }),
    );
  }

  dispose(): void {
    this.over = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
  }

  cancel(): void {
    // grpc-js reports every call as cancelled when its HTTP/2 stream closes, also after a
    // complete answer: a call that is over has nothing to cancel (and an abort would cost an
    // error with its stack, and its listeners, on every call).
    if (this.over) return;
    clearTimeout(this.timer);
    this.aborted = true;
    this.controller.abort(new GatewayError(Code.Canceled, "the client cancelled the call", { reason: Reason.Cancelled }));
  }

  abort(reason: unknown): void {
    clearTimeout(this.timer);
    this.aborted = true;
    this.controller.abort(reason);
  }
}

/** The CN of a verified peer certificate's subject (Node's `{ CN: … }`, possibly repeated). */
export function peerCommonName(subject: { CN?: string | string[] } | undefined): string | undefined {
  const cn = subject?.CN;
  return Array.isArray(cn) ? cn[0] : cn;
}
