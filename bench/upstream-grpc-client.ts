/**
 * Which gRPC client should the gRPC upstream kinds (infergate chaining, kserve over gRPC) use?
 * The project's stack says "@grpc/grpc-js or connect's gRPC transport (measure; pick one)". This
 * measures both as a client of a real infergate, in one run, interleaved:
 *
 *   (a) @grpc/grpc-js through GrpcUpstream (src/upstreams/grpc/grpc-upstream.ts), as the
 *       `infergate` kind calls it;
 *   (b) connect-node's createGrpcTransport with a generated-service client (createClient).
 *
 * infergate runs in this process, in a worker thread (its own event loop, so the server's work
 * does not share the clients' thread), on 127.0.0.1 with one mock model and no cache. Each client
 * makes a fixed number of unary Chat calls at concurrency 1 and 64, in blocks that alternate
 * a/b, b/a, … after an unmeasured warm-up; every call has its own AbortController and a 10 s
 * deadline, as adapters' calls do.
 *
 *   node --import tsx bench/upstream-grpc-client.ts [--calls 5000] [--blocks 5]
 *
 * Prints a table and writes bench/upstream-grpc-client.md.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg, totalmem } from "node:os";
import { parseArgs } from "node:util";
import { isMainThread, parentPort, Worker } from "node:worker_threads";
import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { pino } from "pino";
import { Role } from "../gen/infergate/v1/chat_pb.js";
import { type ChatRequest, ChatRequestSchema, InferenceService } from "../gen/infergate/v1/inference_service_pb.js";
import { parseConfig } from "../src/config/load-config.js";
import { startApp } from "../src/server/app.js";
import { GrpcUpstream } from "../src/upstreams/grpc/grpc-upstream.js";

const serverYaml = `
server: { listen: "127.0.0.1:0", httpListen: "127.0.0.1:0", adminListen: "127.0.0.1:0" }
upstreams: [{ name: mock-up, kind: mock }]
models: [{ name: echo, upstream: mock-up, cache: { policy: "off" } }]
`;

if (!isMainThread) {
  // The server side: infergate, silent, until the main thread ends the worker.
  const app = await startApp(parseConfig(serverYaml, "(bench)", {}), pino({ level: "silent" }));
  parentPort!.postMessage(app.grpcAddress);
} else {
  await main();
}

/** One client under test: a function making one unary Chat call. */
interface Client {
  readonly name: string;
  call(req: ChatRequest): Promise<unknown>;
  close(): void;
}

interface Result {
  calls: number;
  seconds: number;
  /** Time the client's thread (this one; the server has its own) was busy, in seconds. */
  busySeconds: number;
  latenciesMs: number[];
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { calls: { type: "string", default: "5000" }, blocks: { type: "string", default: "5" } } });
  const calls = Number(values.calls);
  const blocks = Number(values.blocks);
  const perBlock = Math.ceil(calls / blocks);
  const loadBefore = loadavg()[0]!;

  // A worker does not inherit the main thread's `--import tsx` hooks on Node 20: it registers
  // tsx itself, then loads this file.
  const worker = new Worker(
    `import("tsx/esm/api").then((tsx) => { tsx.register(); return import(${JSON.stringify(import.meta.url)}); });`,
    { eval: true },
  );
  const address = await new Promise<string>((resolve, reject) => {
    worker.once("message", resolve);
    worker.once("error", reject);
  });

  const grpcJs = new GrpcUpstream(
    { name: "bench", endpoints: [`http://${address}`], timeoutMs: 60_000, apiKey: undefined, tls: undefined },
    { maxMessageBytes: 4 * 1024 * 1024, trustedErrors: true },
  );
  const connectClient = createClient(
    InferenceService,
    // No compression either way, as GrpcUpstream (grpc-js without channel compression options).
    createGrpcTransport({ baseUrl: `http://${address}`, acceptCompression: [], readMaxBytes: 4 * 1024 * 1024, writeMaxBytes: 4 * 1024 * 1024 }),
  );
  const clients: Client[] = [
    {
      name: "@grpc/grpc-js (GrpcUpstream)",
      call(req) {
        const ac = new AbortController();
        return grpcJs.unary(InferenceService.method.chat, req, { signal: ac.signal, deadline: Date.now() + 10_000 });
      },
      close: () => void grpcJs.close(),
    },
    {
      name: "connect-node createGrpcTransport",
      call(req) {
        const ac = new AbortController();
        return connectClient.chat(req, { signal: ac.signal, timeoutMs: 10_000 });
      },
      close: () => undefined,
    },
  ];

  const req = create(ChatRequestSchema, {
    model: "echo",
    messages: [{ role: Role.USER, content: [{ part: { case: "text", value: "hello from the benchmark" } }] }],
  });

  // Warm-up: connections, JIT, both clients, both concurrencies; not measured.
  for (const c of clients) {
    await run(c, req, 2000, 64);
    await run(c, req, 500, 1);
  }

  const results = new Map<string, Result>();
  const concurrencies = [1, 64];
  for (const concurrency of concurrencies) {
    for (let b = 0; b < blocks; b++) {
      const order = b % 2 === 0 ? clients : [...clients].reverse();
      for (const c of order) {
        const r = await run(c, req, perBlock, concurrency);
        const key = `${c.name}|${concurrency}`;
        const acc = results.get(key) ?? { calls: 0, seconds: 0, busySeconds: 0, latenciesMs: [] };
        acc.calls += r.calls;
        acc.seconds += r.seconds;
        acc.busySeconds += r.busySeconds;
        acc.latenciesMs.push(...r.latenciesMs);
        results.set(key, acc);
      }
    }
  }
  for (const c of clients) c.close();
  await worker.terminate();

  const rows = concurrencies.flatMap((concurrency) =>
    clients.map((c) => {
      const r = results.get(`${c.name}|${concurrency}`)!;
      const sorted = [...r.latenciesMs].sort((x, y) => x - y);
      return {
        client: c.name,
        concurrency,
        calls: r.calls,
        callsPerSecond: r.calls / r.seconds,
        p50: quantile(sorted, 0.5),
        p99: quantile(sorted, 0.99),
        clientUsPerCall: (r.busySeconds / r.calls) * 1e6,
      };
    }),
  );
  const table = [
    "| client | concurrency | calls | calls/s | p50 ms | p99 ms | client thread µs/call |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ...rows.map(
      (r) =>
        `| ${r.client} | ${r.concurrency} | ${r.calls} | ${r.callsPerSecond.toFixed(0)} | ${r.p50.toFixed(3)} | ${r.p99.toFixed(3)} | ${r.clientUsPerCall.toFixed(1)} |`,
    ),
  ];
  const ratios = concurrencies.map((concurrency) => {
    const [a, b] = rows.filter((r) => r.concurrency === concurrency);
    return { concurrency, throughput: b!.callsPerSecond / a!.callsPerSecond, p50: b!.p50 / a!.p50, cost: b!.clientUsPerCall / a!.clientUsPerCall };
  });
  const ratioLines = ratios.map(
    (r) =>
      `- concurrency ${r.concurrency}: connect-node / grpc-js throughput = **${r.throughput.toFixed(2)}×**, p50 latency = ${r.p50.toFixed(2)}×, client thread time per call = ${r.cost.toFixed(2)}×`,
  );
  console.log(table.join("\n"));
  console.log(ratioLines.join("\n"));

  const loadAfter = loadavg()[0]!;
  const cpu = cpus();
  const pkg = (name: string) =>
    (JSON.parse(readFileSync(new URL(`../node_modules/${name}/package.json`, import.meta.url), "utf8")) as { version: string }).version;
  const md = `# Upstream gRPC client: @grpc/grpc-js or connect-node

Generated by \`node --import tsx bench/upstream-grpc-client.ts --calls ${calls} --blocks ${blocks}\` on ${new Date().toISOString().slice(0, 10)} — do not edit the numbers by hand: run it again.

Machine: ${cpu.length} cores (${cpu[0]?.model.trim() ?? "unknown"}), ${(totalmem() / 2 ** 30).toFixed(1)} GiB RAM, Node ${process.version}; load average (1 min) ${loadBefore.toFixed(2)} at the start, ${loadAfter.toFixed(2)} at the end (other processes on the machine compete for its cores; the interleaving gives both clients the same conditions, not quiet ones); @grpc/grpc-js ${pkg("@grpc/grpc-js")}, @connectrpc/connect-node ${pkg("@connectrpc/connect-node")}.

## Method

- infergate (\`startApp\`, one \`mock\` model, cache off, silent logger) runs in a worker thread of the benchmark process: its own event loop, the same two cores; gRPC over h2c on 127.0.0.1.
- The two clients make unary \`Chat\` calls (a 1-message request; the mock answers "You said: …"): (a) \`GrpcUpstream.unary\` — @grpc/grpc-js, protobuf-es (de)serializers, as the \`infergate\` kind calls it; (b) connect-node's \`createGrpcTransport\` + \`createClient(InferenceService)\`. One HTTP/2 connection each; no compression; every call has its own AbortController and a 10 s deadline.
- Warm-up (unmeasured): 2000 calls at concurrency 64 and 500 at concurrency 1 per client. Then, per concurrency (1, then 64), ${blocks} blocks of ${perBlock} calls per client, alternating which client goes first (a b, b a, …): ${perBlock * blocks} measured calls per client and concurrency.
- calls/s = calls ÷ the wall time of that client's blocks. Latency = time from starting the call to its answer, per call; p50/p99 by nearest rank over all its calls.
- Client thread µs/call = the benchmark thread's busy time (\`performance.eventLoopUtilization()\` of that thread × wall time) ÷ calls: what the client library itself costs, without the server, which runs on the worker's thread. calls/s and latency include the server (the same for both clients), so they understate the difference between the clients. On a machine whose cores are contended (see the load average above), "busy" also counts time the thread was ready to run but waited for a core, so this column is an upper bound; its ratio between the clients is the useful figure.

## Results

${table.join("\n")}

${ratioLines.join("\n")}

## Reading

${verdict(ratios)}
`;
  writeFileSync(new URL("./upstream-grpc-client.md", import.meta.url), md);
}

function verdict(ratios: { concurrency: number; throughput: number }[]): string {
  const faster = ratios.every((r) => r.throughput >= 1.2);
  const slower = ratios.every((r) => r.throughput <= 1 / 1.2);
  if (faster) {
    return "connect-node is clearly faster as a client here (≥ 1.2× the calls/s at both concurrencies). GrpcUpstream still uses @grpc/grpc-js: switching is the lead engineer's call.";
  }
  if (slower) {
    return "@grpc/grpc-js is clearly faster as a client here (connect-node reaches ≤ 1/1.2 of its calls/s at both concurrencies): GrpcUpstream keeps @grpc/grpc-js, the library of our gRPC server too.";
  }
  const ahead = ratios.every((r) => r.throughput < 1) ? "@grpc/grpc-js is ahead at both concurrencies, but" : ratios.every((r) => r.throughput > 1) ? "connect-node is ahead at both concurrencies, but" : "The lead changes with the concurrency, and";
  return `${ahead} not by 1.2× at both: neither is clearly faster. GrpcUpstream keeps @grpc/grpc-js, the library of our gRPC server too (one HTTP/2 stack, one set of channel options).`;
}

/** Runs `n` calls with `concurrency` in flight; returns the wall time and each call's latency. */
async function run(c: Client, req: ChatRequest, n: number, concurrency: number): Promise<Result> {
  const latenciesMs: number[] = new Array(n);
  let next = 0;
  const elu = performance.eventLoopUtilization();
  const started = performance.now();
  async function lane(): Promise<void> {
    for (let i = next++; i < n; i = next++) {
      const t0 = performance.now();
      await c.call(req);
      latenciesMs[i] = performance.now() - t0;
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, lane));
  const seconds = (performance.now() - started) / 1000;
  const busy = performance.eventLoopUtilization(elu);
  return { calls: n, seconds, busySeconds: busy.active / 1000, latenciesMs };
}

/** Nearest-rank quantile of sorted values. */
function quantile(sorted: readonly number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}
