/**
 * One unary gRPC call over node:http2 with a framed body: the harness's check that a target
 * answers what the load will ask (status, response headers, the answer's bytes). Internal.
 */
import http2 from "node:http2";

/** Calls `path` at `address` (HOST:PORT, h2c) with a framed request; resolves {status, headers, message}. */
export function grpcUnary(address, path, framedBody, timeoutMs = 10_000) {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://${address}`);
    session.on("error", reject);
    const req = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", "grpc-timeout": `${timeoutMs}m` });
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
      session.close();
      const all = Buffer.concat(chunks);
      const message = all.length >= 5 ? all.subarray(5, 5 + all.readUInt32BE(1)) : undefined;
      resolve({ status, grpcMessage, headers, message });
    });
    req.end(framedBody);
  });
}
