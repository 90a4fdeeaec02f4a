/**
 * Unary gRPC calls over node:http2 with a framed body: the harness's check that a target answers
 * what the load will ask (status, response headers, the answer's bytes), and the calls of the
 * bench's own clients (bench/embed-client.mjs), which keep one connection. Internal.
 */
import http2 from "node:http2";

/**
 * One HTTP/2 connection to `address` (HOST:PORT, h2c) for unary calls: `call(path, framedBody)`
 * resolves {status, grpcMessage, headers, message} once the call has ended (`message`: the first
 * answer message without its prefix); a failure of the connection fails the calls on it.
 */
export function grpcSession(address) {
  const session = http2.connect(`http://${address}`);
  // The connection's failure reaches each call through its stream's error.
  session.on("error", () => {});
  return {
    call(path, framedBody, timeoutMs = 10_000, extraHeaders = {}) {
      return new Promise((resolve, reject) => {
        const req = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", "grpc-timeout": `${timeoutMs}m`, ...extraHeaders });
        const chunks = [];
        let headers = {};
        let status;
        let grpcMessage = "";
        req.on("response", (h) => {
          headers = h;
          if (h["grpc-status"] !== undefined) {
            status = Number(h["grpc-status"]);
            grpcMessage = String(h["grpc-message"] ?? "");
          }
        });
        req.on("trailers", (t) => {
          status = Number(t["grpc-status"]);
          grpcMessage = decodeURIComponent(String(t["grpc-message"] ?? ""));
        });
        req.on("data", (c) => chunks.push(c));
        req.on("error", reject);
        req.on("close", () => {
          const all = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
          const message = all.length >= 5 ? all.subarray(5, 5 + all.readUInt32BE(1)) : undefined;
          resolve({ status, grpcMessage, headers, message });
        });
        req.end(framedBody);
      });
    },
    close: () => session.close(),
  };
}

/** Calls `path` at `address` (HOST:PORT, h2c) once, on a connection of its own; resolves {status, grpcMessage, headers, message}. */
export async function grpcUnary(address, path, framedBody, timeoutMs = 10_000, extraHeaders = {}) {
  const session = grpcSession(address);
  try {
    return await session.call(path, framedBody, timeoutMs, extraHeaders);
  } finally {
    session.close();
  }
}
