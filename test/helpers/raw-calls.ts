/**
 * Calls that send bytes exactly as given, whatever they hold: a gRPC call whose request is a
 * buffer (grpc-js with identity serializers), and Connect, gRPC-Web and JSON calls over HTTP with
 * a body of the caller's choice. For tests of what infergate does with requests it cannot decode
 * (issue 17). Errors are read back into one shape: code name, message and ErrorInfo.
 */
import * as grpc from "@grpc/grpc-js";
import { decodeRpcMessage, errorInfoOf, statusDetails } from "./proto-clients.js";

/** The InferenceService methods, by name. */
export const inferenceMethods = ["Predict", "Chat", "Generate", "ListModels", "DeleteSession"] as const;
export type InferenceMethod = (typeof inferenceMethods)[number];

/** The path of an InferenceService method. */
export const methodPath = (method: InferenceMethod) => `/infergate.v1.InferenceService/${method}`;

/** The outcome of one call: the status code's name and, on failure, message and ErrorInfo. */
export interface RawOutcome {
  /** The gRPC code name ("OK", "INVALID_ARGUMENT", …), or for an HTTP answer without one "HTTP <status>". */
  code: string;
  /** The HTTP status, for calls over HTTP. */
  httpStatus?: number;
  message: string;
  /** The google.rpc.ErrorInfo of the error, when it has one. */
  errorInfo?: { reason: string; domain: string; metadata: Record<string, string> } | undefined;
  /** Bytes of the error as received (message and details), for bounds. */
  errorBytes: number;
}

const identity = (b: Buffer) => b;

/** A grpc-js channel that sends and receives buffers as they are. */
export function rawGrpcClient(address: string): grpc.Client {
  return new grpc.Client(address, grpc.credentials.createInsecure());
}

function grpcOutcome(err: grpc.ServiceError | null): RawOutcome {
  if (err === null) return { code: "OK", message: "", errorBytes: 0 };
  let errorInfo: RawOutcome["errorInfo"];
  let detailBytes = 0;
  const bin = err.metadata?.get("grpc-status-details-bin") ?? [];
  if (bin.length === 1 && Buffer.isBuffer(bin[0])) {
    detailBytes = bin[0].length;
    errorInfo = errorInfoOf(statusDetails(err)) as RawOutcome["errorInfo"];
  }
  return { code: grpc.status[err.code] ?? `code ${err.code}`, message: err.details, errorInfo, errorBytes: Buffer.byteLength(err.details) + detailBytes };
}

/**
 * Sends `body` as the request of `method` (a unary call, or Generate's stream read to its end) and
 * resolves with its outcome; never rejects for a status.
 */
export function rawGrpcCall(client: grpc.Client, method: InferenceMethod, body: Uint8Array, timeoutMs = 10_000): Promise<RawOutcome> {
  const buf = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  const options = { deadline: Date.now() + timeoutMs };
  if (method === "Generate") {
    return new Promise((resolve) => {
      const call = client.makeServerStreamRequest(methodPath(method), identity, identity, buf, new grpc.Metadata(), options);
      let failed: grpc.ServiceError | null = null;
      call.on("data", () => {});
      call.on("error", (err: grpc.ServiceError) => (failed = err));
      call.on("status", () => setImmediate(() => resolve(grpcOutcome(failed))));
    });
  }
  return new Promise((resolve) => {
    client.makeUnaryRequest(methodPath(method), identity, identity, buf, new grpc.Metadata(), options, (err) => resolve(grpcOutcome(err)));
  });
}

/** A message in a gRPC / gRPC-Web / Connect streaming envelope (flags, 4-byte big-endian length). */
export function envelope(message: Uint8Array, flags = 0): Uint8Array {
  const out = new Uint8Array(5 + message.byteLength);
  out[0] = flags;
  new DataView(out.buffer).setUint32(1, message.byteLength);
  out.set(message, 5);
  return out;
}

/** The envelopes of a body (as far as it holds whole ones). */
export function envelopes(body: Uint8Array): { flags: number; data: Uint8Array }[] {
  const out: { flags: number; data: Uint8Array }[] = [];
  let i = 0;
  while (i + 5 <= body.byteLength) {
    const n = new DataView(body.buffer, body.byteOffset + i + 1, 4).getUint32(0);
    out.push({ flags: body[i]!, data: body.subarray(i + 5, i + 5 + n) });
    i += 5 + n;
  }
  return out;
}

/** Connect's error code names (JSON) in gRPC's spelling. */
function grpcCodeName(connectCode: string): string {
  return connectCode === "canceled" ? "CANCELLED" : connectCode.toUpperCase();
}

/** ErrorInfo out of a Connect JSON error's details ({type, value: base64 without padding}). */
function connectErrorInfo(details: unknown): RawOutcome["errorInfo"] {
  if (!Array.isArray(details)) return undefined;
  const infos = details.filter((d: { type?: string }) => d.type === "google.rpc.ErrorInfo");
  if (infos.length !== 1) return undefined;
  return decodeRpcMessage("google.rpc.ErrorInfo", Buffer.from(String(infos[0].value), "base64")) as RawOutcome["errorInfo"];
}

/** An outcome out of a Connect JSON error (a unary error body, or an end-stream message's `error`). */
function connectJsonOutcome(httpStatus: number, json: unknown, bytes: number): RawOutcome {
  const e = json as { code?: unknown; message?: unknown; details?: unknown };
  const code = typeof e.code === "string" ? grpcCodeName(e.code) : `HTTP ${httpStatus}`;
  return { code, httpStatus, message: typeof e.message === "string" ? e.message : "", errorInfo: connectErrorInfo(e.details), errorBytes: bytes };
}

/** The kinds of HTTP call a test can send a body with. */
export type HttpKind = "connect-proto" | "connect-json" | "connect-stream-proto" | "grpc-web" | "openai";

const contentTypes: Record<HttpKind, string> = {
  "connect-proto": "application/proto",
  "connect-json": "application/json",
  "connect-stream-proto": "application/connect+proto",
  "grpc-web": "application/grpc-web+proto",
  openai: "application/json",
};

/**
 * POSTs `body` to the HTTP listener as `kind` (to `method` of InferenceService, or for "openai" to
 * /v1/chat/completions) and resolves with its outcome. For the streaming kinds, the body must
 * already be enveloped; the outcome is read from the end-stream message or gRPC-Web trailers.
 */
export async function rawHttpCall(httpAddress: string, kind: HttpKind, method: InferenceMethod, body: Uint8Array, timeoutMs = 10_000): Promise<RawOutcome> {
  const url = kind === "openai" ? `http://${httpAddress}/v1/chat/completions` : `http://${httpAddress}${methodPath(method)}`;
  const headers: Record<string, string> = { "content-type": contentTypes[kind] };
  if (kind === "grpc-web") headers["x-grpc-web"] = "1";
  const res = await fetch(url, { method: "POST", headers, body, signal: AbortSignal.timeout(timeoutMs) });
  const bytes = new Uint8Array(await res.arrayBuffer());
  const text = () => Buffer.from(bytes).toString("utf8");
  const json = () => {
    try {
      return JSON.parse(text()) as unknown;
    } catch {
      return undefined;
    }
  };
  if (kind === "openai") {
    const e = (json() as { error?: { message?: unknown; code?: unknown } } | undefined)?.error;
    return {
      code: res.status < 300 ? "OK" : `HTTP ${res.status}`,
      httpStatus: res.status,
      message: typeof e?.message === "string" ? e.message : "",
      errorBytes: res.status < 300 ? 0 : bytes.byteLength,
    };
  }
  if (kind === "connect-proto" || kind === "connect-json") {
    if (res.status === 200) return { code: "OK", httpStatus: 200, message: "", errorBytes: 0 };
    return connectJsonOutcome(res.status, json() ?? {}, bytes.byteLength);
  }
  if (res.status !== 200) return { code: `HTTP ${res.status}`, httpStatus: res.status, message: text().slice(0, 200), errorBytes: bytes.byteLength };
  const last = envelopes(bytes).at(-1);
  if (kind === "connect-stream-proto") {
    // The end-stream message (flag 2) is JSON: {"error": {…}} on failure, {} on success.
    if (last === undefined || (last.flags & 2) === 0) return { code: "HTTP 200 (no end-stream message)", httpStatus: 200, message: "", errorBytes: 0 };
    const end = JSON.parse(Buffer.from(last.data).toString("utf8")) as { error?: unknown };
    return end.error === undefined ? { code: "OK", httpStatus: 200, message: "", errorBytes: 0 } : connectJsonOutcome(200, end.error, last.data.byteLength);
  }
  // gRPC-Web: the trailers are the last envelope (flag 0x80), or the response headers.
  const trailer = new Map<string, string>();
  if (last !== undefined && (last.flags & 0x80) !== 0) {
    for (const line of Buffer.from(last.data).toString("latin1").split("\r\n")) {
      const i = line.indexOf(":");
      if (i > 0) trailer.set(line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim());
    }
  }
  const status = trailer.get("grpc-status") ?? res.headers.get("grpc-status") ?? "missing";
  const message = decodeURIComponent(trailer.get("grpc-message") ?? res.headers.get("grpc-message") ?? "");
  const details = trailer.get("grpc-status-details-bin") ?? res.headers.get("grpc-status-details-bin");
  let errorInfo: RawOutcome["errorInfo"];
  if (details !== undefined && details !== null) {
    const s = decodeRpcMessage("google.rpc.Status", Buffer.from(details, "base64")) as { details: { type_url: string; value: Buffer }[] };
    const info = s.details.find((d) => d.type_url.endsWith("/google.rpc.ErrorInfo"));
    if (info !== undefined) errorInfo = decodeRpcMessage("google.rpc.ErrorInfo", info.value) as RawOutcome["errorInfo"];
  }
  const n = Number(status);
  return { code: Number.isInteger(n) ? (grpc.status[n] ?? `code ${n}`) : `grpc-status ${status}`, httpStatus: 200, message, errorInfo, errorBytes: message.length + (details?.length ?? 0) };
}
