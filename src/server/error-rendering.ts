import { create, toBinary } from "@bufbuild/protobuf";
import { anyPack, DurationSchema } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";
import { Metadata, type ServiceError, type status } from "@grpc/grpc-js";
import { ErrorInfoSchema, RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../../gen/google/rpc/status_pb.js";
import { errorDomain, type ErrorStatus, toStatus } from "../gateway/gateway-error.js";

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
  const s = toStatus(err);
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
  const s = toStatus(err);
  const details: ConstructorParameters<typeof ConnectError>[3] = [{ desc: ErrorInfoSchema, value: errorInfo(s) }];
  if (s.retryAfterMs !== undefined) {
    details.push({ desc: RetryInfoSchema, value: retryInfo(s.retryAfterMs) });
  }
  return new ConnectError(s.message, s.code, undefined, details, err);
}
