/**
 * The OTLP/HTTP collector of the tracing benchmarks (bench/lib/observe-bench.mjs,
 * bench/tracing-ab.mjs): on 127.0.0.1, it reads each export and answers 200 with an empty
 * response, counting requests and bytes. Internal to bench/.
 */
import { createServer } from "node:http";

/** An OTLP/HTTP collector that reads each export and answers 200 with an empty response. */
export async function startSink() {
  let exports = 0;
  let bytes = 0;
  const server = createServer((req, res) => {
    req.on("data", (c) => (bytes += c.length));
    req.on("end", () => {
      exports++;
      res.writeHead(200, { "content-type": "application/x-protobuf" }).end();
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${server.address().port}/v1/traces`, exports: () => exports, bytes: () => bytes, close: () => server.close() };
}

