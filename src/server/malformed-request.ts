import type { DescMessage } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import type { CallRecord } from "../observability/call-record.js";
import { GatewayError, Reason } from "../core/gateway-error.js";

/**
 * The most characters of a decoder's complaint repeated to the caller. protobuf-es's binary
 * errors are short ("premature EOF", "illegal tag: field no 0 wire type 2"), but its JSON errors
 * quote the value at fault ('expected Array, got "…"'), which is the caller's, of any length.
 */
const maxProblemChars = 200;

/**
 * The error of a request whose bytes are not a `schema` message: INVALID_ARGUMENT, reason
 * MALFORMED_REQUEST, the decoder's complaint (cut) in the message, the type in ErrorInfo.
 */
export function malformedRequest(schema: DescMessage, cause: unknown): GatewayError {
  let problem = cause instanceof Error ? cause.message : String(cause);
  if (problem.length > maxProblemChars) problem = `${problem.slice(0, maxProblemChars - 1)}…`;
  return new GatewayError(Code.InvalidArgument, `the request is not a valid ${schema.typeName}: ${problem}`, {
    reason: Reason.MalformedRequest,
    metadata: { type: schema.typeName },
    cause,
  });
}

/**
 * What the gRPC listener's deserializer gives for bytes that do not decode (or are over
 * server.requestLimits: src/gateway/request-limits.ts), in place of the message: grpc-js answers
 * INTERNAL for a deserializer that throws, so the method's handler gets this instead and answers
 * with `error` (src/server/grpc-server.ts).
 */
export class UndecodableRequest {
  constructor(
    readonly rpc: CallRecord["rpc"],
    readonly error: GatewayError,
  ) {}
}
