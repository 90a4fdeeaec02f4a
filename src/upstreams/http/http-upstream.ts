import { readFileSync } from "node:fs";
import { Code } from "@connectrpc/connect";
import { Pool, type Dispatcher } from "undici";
import { z } from "zod";
import { GatewayError, Reason } from "../../core/gateway-error.js";
import type { UpstreamConfig } from "../../config/schema.js";
import { attemptAnswered, attemptConnectionFailed, attemptTraceHeaders } from "../../core/attempt-progress.js";
import { badResponse, errorFromNetwork, errorFromStatus } from "./http-errors.js";

/** Connection settings shared by the HTTP upstream kinds (the `http` part of their options). */
export interface HttpPoolOptions {
  /** Connections per endpoint at most. */
  connections: number;
  /** Time to open a TCP (and TLS) connection. */
  connectTimeoutMs: number;
  /** Time from sending a request to the response headers (the first token, for streams). */
  headersTimeoutMs: number;
  /** Largest unary response body read into memory. */
  maxResponseBytes: number;
}

export const defaultHttpPoolOptions: HttpPoolOptions = {
  connections: 128,
  connectTimeoutMs: 5_000,
  headersTimeoutMs: 60_000,
  maxResponseBytes: 32 * 1024 * 1024,
};

const positiveInt = z.number().int().positive();

/**
 * The `http` part of an HTTP kind's options (`upstreams[].options.http`): each field optional,
 * defaulting as in defaultHttpPoolOptions.
 */
export const httpPoolOptionsSchema = z
  .strictObject({
    /** Connections per endpoint at most (default 128). */
    connections: positiveInt.max(10_000),
    /** Time to open a TCP and TLS connection (default 5000 ms). */
    connectTimeoutMs: positiveInt,
    /** Time from sending a request to the response headers, i.e. to the first token of a stream (default 60000 ms). */
    headersTimeoutMs: positiveInt,
    /** Largest non-streamed answer read into memory (default 32 MiB). */
    maxResponseBytes: positiveInt,
  })
  .partial();

/** One HTTP request to an upstream, relative to its endpoint's base URL. */
export interface HttpCall {
  method: "GET" | "POST";
  /** Appended to the endpoint's path (`/chat/completions` under `https://api.openai.com/v1`). */
  path: string;
  query?: Readonly<Record<string, string>>;
  headers: Readonly<Record<string, string>>;
  body?: string | Uint8Array;
  /** The caller's signal (cancel and deadline). */
  signal: AbortSignal;
  /** The caller's deadline, epoch ms. */
  deadline: number;
}

/** A response with a 2xx status; other statuses have already been turned into errors. */
export interface HttpAnswer {
  status: number;
  headers: Dispatcher.ResponseData["headers"];
  body: Dispatcher.ResponseData["body"];
  /** Aborts when the caller's signal or the attempt's own timeout does. */
  signal: AbortSignal;
  /**
   * For a caller that has all it needs before the body's end (a stream's terminator seen): reads
   * the rest of the body in the background and drops it, so that the connection goes back to the
   * pool once the response has ended (a chunked body ends with its last, empty chunk, which often
   * arrives in a read of its own after the terminal event). The answer is detached from the
   * caller's signal and the attempt's timer at once: the call may end, and abort its signal,
   * meanwhile. A body that goes on past DRAIN_MAX_BYTES or DRAIN_MAX_MS is destroyed instead
   * (the connection is closed), so that an upstream that never ends its response holds nothing.
   */
  drain(): void;
}

/** The most bytes read and dropped after a stream's terminator before its connection is closed. */
export const DRAIN_MAX_BYTES = 64 * 1024;
/** The longest wait for the end of a response after a stream's terminator before its connection is closed. */
export const DRAIN_MAX_MS = 2_000;

/**
 * The I/O half of every HTTP upstream kind: an undici pool per endpoint (keep-alive, a connection
 * limit, connect and header timeouts), requests bounded by the caller's remaining deadline and the
 * upstream's per-attempt timeout, and aborted with the caller (undici then closes the connection,
 * so the upstream stops generating). Error statuses and socket failures leave through the one
 * mapping in http-errors.ts.
 */
export class HttpUpstream {
  private readonly pools = new Map<string, Pool>();
  private readonly endpoints: readonly URL[];
  private next = 0;

  constructor(
    private readonly config: Pick<UpstreamConfig, "name" | "endpoints" | "timeoutMs" | "apiKey" | "tls" | "connectTimeoutMs" | "firstByteTimeoutMs">,
    private readonly options: HttpPoolOptions = defaultHttpPoolOptions,
  ) {
    this.endpoints = config.endpoints.map((e) => new URL(e));
    this.tls = readUpstreamTls(config.tls);
  }

  private readonly tls: { ca?: Buffer; cert?: Buffer; key?: Buffer } | undefined;

  /** Secrets that must never appear in anything the client sees. */
  get secrets(): readonly string[] {
    return this.config.apiKey === undefined ? [] : [this.config.apiKey];
  }

  get name(): string {
    return this.config.name;
  }

  private pool(origin: string): Pool {
    let pool = this.pools.get(origin);
    if (pool === undefined) {
      pool = new Pool(origin, {
        connections: this.options.connections,
        // The upstream's (or its endpoint's) connect and first-byte timeouts, where config sets
        // them; else the kind's own `http` options (docs/resilience.md, "Connect and first-byte timeouts").
        connectTimeout: this.config.connectTimeoutMs ?? this.options.connectTimeoutMs,
        headersTimeout: this.config.firstByteTimeoutMs ?? this.options.headersTimeoutMs,
        // A stream may pause between tokens for long; the caller's deadline bounds it instead.
        bodyTimeout: 0,
        keepAliveTimeout: 30_000,
        ...(this.tls === undefined ? {} : { connect: this.tls }),
      });
      this.pools.set(origin, pool);
    }
    return pool;
  }

  /** Sends one request; resolves once a 2xx status and headers arrived. */
  async request(call: HttpCall): Promise<HttpAnswer> {
    const base = this.endpoints[this.next++ % this.endpoints.length]!;
    const { signal, release } = attemptDeadline(this.config, call.signal, call.deadline);
    const query = call.query === undefined ? "" : `?${new URLSearchParams(call.query).toString()}`;
    const path = `${base.pathname.replace(/\/$/, "")}${call.path}${query}`;
    // The attempt's client span as the upstream's parent (traceparent), when tracing is on.
    const trace = attemptTraceHeaders(call.signal);
    let res: Dispatcher.ResponseData;
    try {
      res = await this.pool(base.origin).request({
        method: call.method,
        path,
        headers: trace === undefined ? call.headers : { ...call.headers, ...trace },
        body: call.body ?? null,
        signal,
      });
    } catch (err) {
      release();
      throw this.failure(err, call.signal, signal);
    }
    // The endpoint answered (status and headers): the resilience layer counts what follows
    // against the model there, not the endpoint (src/core/attempt-progress.ts).
    attemptAnswered(call.signal);
    // The attempt's timer and its link to the caller last as long as the body: until it has been
    // read or destroyed (or, for a drained body, until the drain starts).
    res.body.once("close", release);
    if (res.statusCode < 200 || res.statusCode > 299) {
      const body = await this.readText(res.body, 64 * 1024).catch(() => "");
      throw errorFromStatus(this.config.name, res.statusCode, res.headers, body, this.secrets);
    }
    const body = res.body;
    return { status: res.statusCode, headers: res.headers, body, signal, drain: () => drainBody(body, release) };
  }

  /**
   * Maps an error thrown while calling or reading: the caller's own abort is rethrown as is (the
   * gateway answers with its reason); the attempt timeout is DEADLINE_EXCEEDED; the rest via the
   * network mapping. `attemptSignal` is the attempt's signal (HttpAnswer.signal): aborted while
   * the caller's is not, its timer ran out.
   */
  failure(err: unknown, callerSignal: AbortSignal, attemptSignal?: AbortSignal): unknown {
    if (callerSignal.aborted) {
      return callerSignal.reason;
    }
    if (attemptSignal?.aborted === true) {
      // The attempt's timer ran out: its reason says which bound it was (the upstream's own
      // timeoutMs, or the call's deadline when that came first).
      return attemptSignal.reason;
    }
    const mapped = errorFromNetwork(this.config.name, err);
    // A socket that failed (refused, reset, closed), even after the answer began, is the
    // endpoint's failure, not the model's.
    if (mapped !== err && mapped.code === Code.Unavailable) attemptConnectionFailed(callerSignal);
    return mapped;
  }

  /**
   * Reads a body as text, failing past `limit` bytes. With listeners rather than `for await`: a
   * stream's async iterator (and the end-of-stream watcher behind it) cost about as much as the
   * rest of reading a small unary answer.
   */
  readText(body: Dispatcher.ResponseData["body"], limit = this.options.maxResponseBytes): Promise<string> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      const settle = (): void => {
        body.off("data", onData);
        body.off("end", onEnd);
        body.off("error", onError);
        body.off("close", onClose);
        // An error emitted after the outcome (a destroy racing the end) must not go unhandled.
        body.on("error", ignore);
      };
      const onData = (chunk: Buffer): void => {
        size += chunk.length;
        if (size > limit) {
          settle();
          body.destroy();
          // A message-size failure, not a bad answer: not retried, not held against the endpoint.
          reject(
            new GatewayError(Code.ResourceExhausted, `upstream "${this.config.name}" sent an answer larger than the limit of ${limit} bytes`, {
              reason: Reason.UpstreamMessageTooLarge,
              metadata: { upstream: this.config.name, limit: String(limit) },
            }),
          );
          return;
        }
        chunks.push(chunk);
      };
      const onEnd = (): void => {
        settle();
        resolve(chunks.length === 1 ? chunks[0]!.toString("utf8") : Buffer.concat(chunks).toString("utf8"));
      };
      const onError = (err: unknown): void => {
        settle();
        reject(err);
      };
      // Closed without an end or an error: what `for await` reports as a premature close.
      const onClose = (): void => {
        settle();
        reject(Object.assign(new Error("Premature close"), { code: "ERR_STREAM_PREMATURE_CLOSE" }));
      };
      if (body.readableEnded) {
        resolve("");
        return;
      }
      if (body.destroyed) {
        reject(body.errored ?? Object.assign(new Error("Premature close"), { code: "ERR_STREAM_PREMATURE_CLOSE" }));
        return;
      }
      body.on("data", onData);
      body.once("end", onEnd);
      body.once("error", onError);
      body.once("close", onClose);
    });
  }

  /** Reads a unary JSON answer: the content type must say JSON and the body must parse. */
  async readJson(answer: HttpAnswer, callerSignal: AbortSignal): Promise<unknown> {
    const type = headerValue(answer.headers, "content-type") ?? "";
    let text: string;
    try {
      text = await this.readText(answer.body);
    } catch (err) {
      throw this.failure(err, callerSignal, answer.signal);
    }
    if (!/^application\/([a-z0-9.+-]*\+)?json\b/i.test(type)) {
      throw badResponse(this.config.name, `content-type "${type}" where JSON was expected`, text);
    }
    try {
      return JSON.parse(text);
    } catch {
      throw badResponse(this.config.name, "malformed JSON", text);
    }
  }

  /** Checks that a streaming answer is an event stream before decoding it. */
  expectEventStream(answer: HttpAnswer): void {
    const type = headerValue(answer.headers, "content-type") ?? "";
    if (!/^text\/event-stream\b/i.test(type)) {
      // Destroying an unread body can emit an error; with no listener that would crash the process.
      answer.body.on("error", () => {});
      answer.body.destroy();
      throw badResponse(this.config.name, `content-type "${type}" where an event stream was expected`);
    }
  }

  async close(): Promise<void> {
    await Promise.all([...this.pools.values()].map((p) => p.close()));
  }
}

/**
 * The signal of one attempt at `upstream`, for transports of every kind (HttpUpstream.request, the
 * bedrock kind's SDK calls): aborted with the caller's signal (same reason), or with
 * DEADLINE_EXCEEDED UPSTREAM_TIMEOUT when the upstream's `timeoutMs` runs out first. When the call's
 * deadline comes before the upstream's own timeout, the call's signal aborts at its deadline with
 * the gateway's reason; the attempt's timer is then a backstop (for runs whose signal is not tied
 * to a deadline, such as probes), set a little later so that it never wins the race against the
 * call's own timer due in the same millisecond. `release()` clears the timer once the attempt is over.
 */
export function attemptDeadline(
  upstream: Pick<UpstreamConfig, "name" | "timeoutMs">,
  callerSignal: AbortSignal,
  deadline: number,
): { signal: AbortSignal; release(): void } {
  const remaining = deadline - Date.now();
  const ownTimeout = upstream.timeoutMs <= remaining;
  const attemptMs = ownTimeout ? upstream.timeoutMs : Math.max(0, remaining) + DEADLINE_BACKSTOP_SLACK_MS;
  return attemptSignal(callerSignal, attemptMs, () =>
    ownTimeout
      ? new GatewayError(Code.DeadlineExceeded, `upstream "${upstream.name}" did not answer within its timeout of ${upstream.timeoutMs}ms`, {
          reason: Reason.UpstreamTimeout,
          metadata: { upstream: upstream.name },
        })
      : new GatewayError(Code.DeadlineExceeded, `upstream "${upstream.name}" did not answer before the call's deadline`, {
          reason: Reason.UpstreamTimeout,
          metadata: { upstream: upstream.name },
        }),
  );
}

/**
 * The signal of one attempt: aborts with the caller's signal (same reason), or after `ms` with the
 * error `timedOut` makes, whichever comes first (aborted while the caller's signal is not: the
 * timeout).
 * `release()` clears the timer and detaches from the caller's signal. This is
 * `AbortSignal.any([caller, AbortSignal.timeout(ms)])` without their cost on every call: on Node
 * 20 both keep weak references and finalization callbacks that the garbage collector has to
 * process per request; and one AbortSignal, not two, because each costs several µs to make
 * (Node 20 builds it as an EventTarget and then changes its prototype).
 */
/** How much later than the call's deadline an attempt's backstop timer fires. */
const DEADLINE_BACKSTOP_SLACK_MS = 25;

function attemptSignal(caller: AbortSignal, ms: number, timedOut: () => GatewayError): { signal: AbortSignal; release(): void } {
  const controller = new AbortController();
  const onCallerAbort = () => controller.abort(caller.reason);
  const timer = setTimeout(() => {
    controller.abort(timedOut());
  }, ms);
  timer.unref();
  if (caller.aborted) {
    onCallerAbort();
  } else {
    caller.addEventListener("abort", onCallerAbort, { once: true });
  }
  return {
    signal: controller.signal,
    release() {
      clearTimeout(timer);
      caller.removeEventListener("abort", onCallerAbort);
    },
  };
}

/** Reads an upstream's TLS files once, at start-up (a missing file fails start-up, not a call). */
export function readUpstreamTls(tls: UpstreamConfig["tls"]): { ca?: Buffer; cert?: Buffer; key?: Buffer } | undefined {
  if (tls === undefined) return undefined;
  return {
    ...(tls.caFile === undefined ? {} : { ca: readFileSync(tls.caFile) }),
    ...(tls.certFile === undefined ? {} : { cert: readFileSync(tls.certFile) }),
    ...(tls.keyFile === undefined ? {} : { key: readFileSync(tls.keyFile) }),
  };
}

function ignore(): void {}

/** See HttpAnswer.drain. */
function drainBody(body: HttpAnswer["body"], release: () => void): void {
  release();
  // An error after this point (a reset while draining) concerns nobody: the call has its answer.
  body.on("error", ignore);
  if (body.readableEnded || body.destroyed) return;
  let size = 0;
  const stop = (): void => {
    clearTimeout(timer);
    body.off("data", onData);
    body.off("end", stop);
    body.off("close", stop);
  };
  const onData = (chunk: Buffer): void => {
    size += chunk.length;
    if (size > DRAIN_MAX_BYTES) {
      stop();
      body.destroy();
    }
  };
  const timer = setTimeout(() => {
    stop();
    body.destroy();
  }, DRAIN_MAX_MS);
  timer.unref();
  body.on("data", onData);
  body.once("end", stop);
  body.once("close", stop);
  body.resume();
}

/** One header's value (the first, when repeated). */
export function headerValue(headers: HttpAnswer["headers"], name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}
