/**
 * Issue 17, defect 7: an upstream's text never carries infergate's key anywhere, whatever the
 * status. The real process runs with every upstream kind keyed by a secret taken from the
 * environment, in front of fakes that echo the key they receive (test/fakes/echo-key-upstreams.ts)
 * in error bodies and statuses, in 200 answers that do not parse, in fields of 200 answers that a
 * translator quotes, and in stream error events. Each kind and path is called with a real gRPC
 * client and over Connect JSON, unary and streamed; then the process's whole output (call lines,
 * warnings with the upstream's body), everything the clients saw (codes, messages, ErrorInfo,
 * headers and trailers) and /metrics are searched for the key.
 *
 * The secret is shaped so that no generic key pattern of the scrubber matches it (no `sk-` prefix,
 * no long token), and so that it passes as an error `type` (letters, digits, dots): only the
 * redaction of the configured secret itself can hide it.
 */
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { Role } from "../../gen/infergate/v1/chat_pb.js";
import { InferenceService } from "../../gen/infergate/v1/inference_service_pb.js";
import { DataType } from "../../gen/infergate/v1/tensor_pb.js";
import { createEchoKeyUpstreams, type EchoKeyUpstreams } from "../fakes/echo-key-upstreams.js";
import { type ServerProcess, startProcess } from "../helpers/servers.js";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const SECRET = `zq.${randomBytes(6).toString("hex")}.${randomBytes(6).toString("hex")}`;

/** Upstream kinds under test → the kind's config (after `name` and `kind`) and its calls. */
const kinds = {
  openai: { config: (f: EchoKeyUpstreams) => `kind: openai, endpoints: ["${f.httpUrl}/v1"]`, rpcs: ["chat", "generate"] },
  anthropic: { config: (f: EchoKeyUpstreams) => `kind: anthropic, endpoints: ["${f.httpUrl}"]`, rpcs: ["chat", "generate"] },
  "kserve-rest": { config: (f: EchoKeyUpstreams) => `kind: kserve, endpoints: ["${f.httpUrl}"], options: { protocol: rest }`, rpcs: ["predict"] },
  tfserving: { config: (f: EchoKeyUpstreams) => `kind: tfserving, endpoints: ["${f.httpUrl}"]`, rpcs: ["predict"] },
  "kserve-grpc": { config: (f: EchoKeyUpstreams) => `kind: kserve, endpoints: ["${f.grpcUrl}"]`, rpcs: ["predict"] },
  infergate: { config: (f: EchoKeyUpstreams) => `kind: infergate, endpoints: ["${f.grpcUrl}"]`, rpcs: ["chat", "generate", "predict"] },
} as const;
type Kind = keyof typeof kinds;

const httpModes = ["echo-400", "echo-401", "echo-429", "echo-500", "bad-200", "html-200", "invalid-200"];
/** The answers each kind's fake gives (see echo-key-upstreams.ts). */
const modes: Record<Kind, readonly string[]> = {
  openai: httpModes,
  anthropic: httpModes,
  "kserve-rest": httpModes,
  tfserving: httpModes,
  "kserve-grpc": ["echo-401", "echo-500", "invalid-200"],
  infergate: ["echo-401", "echo-500", "stream-500"],
};

/** Every (kind, mode, rpc) called; infergate's stream-500 is a Generate failure after one event. */
const cases = (Object.keys(kinds) as Kind[]).flatMap((kind) =>
  modes[kind].flatMap((mode) =>
    kinds[kind].rpcs.filter((rpc) => mode !== "stream-500" || rpc === "generate").map((rpc) => ({ kind, mode, rpc, model: `${kind}.${mode}` })),
  ),
);

let fake: EchoKeyUpstreams;
let server: ServerProcess;
let serverClosed: Promise<unknown>;
const dir = mkdtempSync(join(tmpdir(), "infergate-echo-redaction-"));
/** Everything a client saw, one entry per observation. */
const visible: string[] = [];

function gatewayYaml(): string {
  const resilience = "resilience: { breaker: { enabled: false }, retry: { maxAttempts: 1 } }";
  const upstreams = (Object.keys(kinds) as Kind[]).map(
    (kind) => `  - { name: ${kind}, ${kinds[kind].config(fake)}, apiKey: "\${TEST_SECRET}", ${resilience} }`,
  );
  const models = cases
    .filter((c, i) => cases.findIndex((d) => d.model === c.model) === i)
    .map((c) => `  - { name: ${c.model}, upstream: ${c.kind}, upstreamModel: ${c.mode}, cache: { policy: "off" } }`);
  return `upstreams:\n${upstreams.join("\n")}\nmodels:\n${models.join("\n")}\n`;
}

beforeAll(async () => {
  fake = await createEchoKeyUpstreams();
  const path = join(dir, "gateway.yaml");
  writeFileSync(path, gatewayYaml());
  server = await startProcess(["--config", path], { env: { TEST_SECRET: SECRET } });
  serverClosed = once(server.proc, "close");
});

afterAll(async () => {
  await server?.stop();
  await fake?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Records everything of a client-side error: code, messages, every detail, every header and trailer. */
function record(err: ConnectError): ConnectError {
  const details = err.details.map((d) =>
    "type" in d && typeof d.type === "string"
      ? `${d.type} ${Buffer.from(d.value).toString("utf8")} ${Buffer.from(d.value).toString("base64")} ${JSON.stringify(d.debug ?? null)}`
      : JSON.stringify(d),
  );
  const info = err.findDetails(ErrorInfoSchema)[0];
  visible.push(
    JSON.stringify({ code: err.code, rawMessage: err.rawMessage, message: err.message, details, info: info === undefined ? null : { reason: info.reason, metadata: info.metadata }, metadata: [...err.metadata.entries()] }),
  );
  return err;
}

async function call(transport: Transport, rpc: string, model: string): Promise<ConnectError> {
  const client = createClient(InferenceService, transport);
  const messages = [{ role: Role.USER, content: [{ part: { case: "text" as const, value: "hello" } }] }];
  try {
    if (rpc === "chat") await client.chat({ model, messages });
    else if (rpc === "generate") for await (const _ of client.generate({ model, messages })) {
      // events before the failure, if any
    }
    else
      await client.predict({
        model,
        inputs: [{ name: "INPUT0", datatype: DataType.INT32, shape: [1n, 1n], data: { case: "contents", value: { intContents: [1] } } }],
      });
  } catch (e) {
    return record(ConnectError.from(e));
  }
  throw new Error(`${rpc} of ${model} succeeded; an error was expected`);
}

const transports: [string, () => Transport][] = [
  ["gRPC", () => createGrpcTransport({ baseUrl: `http://${server.grpcAddress}` })],
  ["Connect JSON", () => createConnectTransport({ baseUrl: `http://${server.httpAddress}`, httpVersion: "1.1" })],
];

describe.sequential("issue 17, defect 7: upstreams that echo infergate's key", () => {
  it.each(transports)("%s: every kind and path fails without the key in what the client sees", async (_name, transport) => {
    const before = fake.echoes.length;
    const t = transport();
    for (const c of cases) {
      const err = await call(t, c.rpc, c.model);
      // A failure infergate answered (with its ErrorInfo), not a transport error.
      expect({ model: c.model, rpc: c.rpc, domain: err.findDetails(ErrorInfoSchema)[0]?.domain }).toEqual({ model: c.model, rpc: c.rpc, domain: "infergate" });
      expect({ model: c.model, rpc: c.rpc, code: err.code }).not.toEqual({ model: c.model, rpc: c.rpc, code: Code.Unknown });
    }
    // Each case reached its fake, which answered with the key infergate sent.
    const echoed = fake.echoes.slice(before);
    expect(echoed.length).toBe(cases.length);
    for (const e of echoed) expect(e.key).toBe(SECRET);
  });

  it("nothing the process wrote, nothing a client saw, and no metric holds the key", async () => {
    const metrics = await fetch(`http://${server.adminAddress}/metrics`);
    visible.push(await metrics.text());
    expect(await server.stop()).toBe(0);
    await serverClosed;
    const lines = server.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    // The paths ran and were logged: one call line per call, and warnings with the upstream's body.
    expect(lines.filter((l) => l["msg"] === "call")).toHaveLength(2 * cases.length);
    expect(lines.filter((l) => typeof l["upstreamBody"] === "string").length).toBeGreaterThan(10);
    expect(visible.length).toBe(2 * cases.length + 1);

    const leaks = [...server.lines, server.stderr, ...visible].filter((text) => text.includes(SECRET));
    expect(leaks).toEqual([]);
    // The redacted places say so.
    expect(server.lines.some((l) => l.includes("[redacted]"))).toBe(true);
  });
});
