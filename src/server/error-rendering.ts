import { create, toBinary } from "@bufbuild/protobuf";
import { anyPack, DurationSchema } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";
import { Metadata, type ServiceError, type status } from "@grpc/grpc-js";
import { ErrorInfoSchema, RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../../gen/google/rpc/status_pb.js";
import { errorDomain, type ErrorStatus, toStatus } from "../core/gateway-error.js";

/**
 * Bounds of a rendered error (issue 17), a backstop behind the cuts a GatewayError makes in
 * characters (src/core/gateway-error.ts): in UTF-8 bytes, its message, and its ErrorInfo
 * metadata (keys and values together; entries past the bound are left out). With gRPC's
 * percent-encoding of `grpc-message` (3 bytes per non-ASCII byte) and base64 of
 * `grpc-status-details-bin`, an error's trailers stay under 7 KiB (8 KiB is a common default
 * limit of a gRPC client's metadata), and a Connect JSON error body within a few KiB.
 */
const maxMessageBytes = 1024;
const maxMetadataBytes = 1024;
/** Another infergate's reason passes through (src/upstreams/infergate/infergate-translate.ts). */
const maxReasonChars = 128;

const utf8 = new TextEncoder();

/** `text` cut to at most `max` UTF-8 bytes, on a character boundary, marked with "…". */
function cutBytes(text: string, max: number): string {
  if (text.length * 3 <= max || Buffer.byteLength(text) <= max) return text;
  const { read } = utf8.encodeInto(text, new Uint8Array(max - 3));
  return `${text.slice(0, read)}…`;
}

/** The metadata entries, in order, that fit maxMetadataBytes (8 bytes each for protobuf framing). */
function boundedMetadata(metadata: Readonly<Record<string, string>>): Readonly<Record<string, string>> {
  const entries = Object.entries(metadata);
  let size = 0;
  for (let i = 0; i < entries.length; i++) {
    const [k, v] = entries[i]!;
    size += 8 + Buffer.byteLength(k) + Buffer.byteLength(v);
    if (size > maxMetadataBytes) return Object.fromEntries(entries.slice(0, i));
  }
  return metadata;
}

/** The status of `err` as it is rendered: toStatus within the bounds above. */
function boundedStatus(err: unknown): ErrorStatus {
  const s = toStatus(err);
  const message = cutBytes(s.message, maxMessageBytes);
  const metadata = boundedMetadata(s.metadata);
  const reason = s.reason.length > maxReasonChars ? s.reason.slice(0, maxReasonChars) : s.reason;
  return message === s.message && metadata === s.metadata && reason === s.reason ? s : { ...s, message, metadata, reason };
}

function errorInfo(s: ErrorStatus) {
  return create(ErrorInfoSchema, { reason: s.reason, domain: errorDomain, metadata: { ...s.metadata } });
}

function retryInfo(ms: number) {
  const seconds = Math.floor(ms / 1000);
  return create(RetryInfoSchema, {
    retryDelay: create(DurationSchema, { seconds: BigInt(seconds), nanos: Math.round((ms - seconds * 1000) * 1e6) }),
  });
}

/**
 * Renders an error for grpc-js: code, message, and a `google.rpc.Status` with ErrorInfo (and
 * RetryInfo when known) in the `grpc-status-details-bin` trailer, as gRPC's richer error model does.
 */
export function toServiceError(err: unknown): Partial<ServiceError> {
  const s = boundedStatus(err);
  const details = [anyPack(ErrorInfoSchema, errorInfo(s))];
  if (s.retryAfterMs !== undefined) {
    details.push(anyPack(RetryInfoSchema, retryInfo(s.retryAfterMs)));
  }
  const metadata = new Metadata();
  metadata.set(
    "grpc-status-details-bin",
    Buffer.from(toBinary(StatusSchema, create(StatusSchema, { code: s.code, message: s.message, details }))),
  );
  // connect's Code and grpc-js's status share the gRPC numbering.
  return { code: s.code as number as status, details: s.message, metadata };
}

/** Renders an error for connect-node, with the same details (it writes them per protocol). */
export function toConnectError(err: unknown): ConnectError {
  const s = boundedStatus(err);
  const details: ConstructorParameters<typeof ConnectError>[3] = [{ desc: ErrorInfoSchema, value: errorInfo(s) }];
  if (s.retryAfterMs !== undefined) {
    details.push({ desc: RetryInfoSchema, value: retryInfo(s.retryAfterMs) });
  }
  // HTTP clients (and proxies) read when to come back from Retry-After, in whole seconds: on the
  // Connect protocol it is a response header of the error; on gRPC-Web, a trailer beside RetryInfo.
  const metadata = s.retryAfterMs === undefined ? undefined : { "retry-after": String(Math.max(1, Math.ceil(s.retryAfterMs / 1000))) };
  return new ConnectError(s.message, s.code, metadata, details, err);
}
