import { type DescMessage, toBinary, toJsonString } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { GatewayError, Reason } from "../core/gateway-error.js";

/**
 * RESOURCE_EXHAUSTED, reason MESSAGE_TOO_LARGE: an answer (or a stream's event) of `size` bytes
 * cannot be sent to the client. grpc-js and connect-node would refuse to send it too, but only
 * after the call was reported OK, and without ErrorInfo (issue 17, defect 8).
 */
export function answerTooLarge(size: number, limit: number): GatewayError {
  return new GatewayError(Code.ResourceExhausted, `the answer is ${size} bytes, larger than the gateway's limit of ${limit} bytes (server.maxMessageBytes)`, {
    reason: Reason.MessageTooLarge,
    metadata: { size: String(size), limit: String(limit) },
  });
}

/**
 * For the HTTP listener (Connect, gRPC-Web, connect-node's gRPC): throws answerTooLarge when a
 * message of `schema` would be over `limit` bytes as connect-node writes it, in the codec of the
 * request (JSON when its content type, or a Connect GET's `encoding`, says so; else binary).
 * connect-node encodes an answer only after the handler returned, when the core has reported the
 * call; this encodes it once more before, so that the failure is the call's (its log line, its
 * metrics, its ErrorInfo). That costs an encoding per answer and per streamed event on this
 * listener; the gRPC listener encodes once (src/server/grpc-server.ts).
 */
export function answerSizeCheck(schema: DescMessage, limit: number, contentType: string | null, url: string): (answer: object) => void {
  const json = contentType === null ? new URL(url, "http://h").searchParams.get("encoding") === "json" : contentType.includes("json");
  return json
    ? (answer) => {
        const size = Buffer.byteLength(toJsonString(schema, answer as never), "utf8");
        if (size > limit) throw answerTooLarge(size, limit);
      }
    : (answer) => {
        const size = toBinary(schema, answer as never).byteLength;
        if (size > limit) throw answerTooLarge(size, limit);
      };
}
