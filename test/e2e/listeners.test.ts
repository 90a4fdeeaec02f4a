import { toJson } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { CachePolicy, Role } from "../../gen/infergate/v1/chat_pb.js";
import {
  ChatResponseSchema,
  GenerateResponseSchema,
  InferenceService,
  ListModelsResponseSchema,
  PredictResponseSchema,
} from "../../gen/infergate/v1/inference_service_pb.js";
import { DataType } from "../../gen/infergate/v1/tensor_pb.js";
import type { App } from "../../src/server/app.js";
import { startInProcess } from "../helpers/servers.js";

type InferenceClient = Client<typeof InferenceService>;
const user = (text: string) => ({ role: Role.USER, content: [{ part: { case: "text" as const, value: text } }] });

let app: App;
let clients: Record<string, InferenceClient>;

beforeAll(async () => {
  app = await startInProcess();
  const grpcUrl = `http://${app.grpcAddress}`;
  const httpUrl = `http://${app.httpAddress}`;
  const transports: Record<string, Transport> = {
    // The gRPC listener (grpc-js), called through connect's gRPC client: no shared code with it.
    "grpc → grpc-js": createGrpcTransport({ baseUrl: grpcUrl }),
    // The second listener (connect-node) in each protocol it serves.
    "connect http/1.1 → connect-node": createConnectTransport({ baseUrl: httpUrl, httpVersion: "1.1" }),
    "connect h2c → connect-node": createConnectTransport({ baseUrl: httpUrl, httpVersion: "2" }),
    "grpc-web http/1.1 → connect-node": createGrpcWebTransport({ baseUrl: httpUrl, httpVersion: "1.1" }),
    "connect json → connect-node": createConnectTransport({ baseUrl: httpUrl, httpVersion: "1.1", useBinaryFormat: false }),
  };
  clients = Object.fromEntries(Object.entries(transports).map(([k, t]) => [k, createClient(InferenceService, t)]));
});

afterAll(async () => {
  await app.shutdown();
});

/** What a call gave, in a form that two listeners must agree on exactly. */
async function outcome(run: () => Promise<unknown>): Promise<unknown> {
  try {
    return { ok: await run() };
  } catch (err) {
    const e = ConnectError.from(err);
    const info = e.findDetails(ErrorInfoSchema)[0];
    return { code: Code[e.code], message: e.rawMessage, reason: info?.reason, domain: info?.domain, metadata: info?.metadata };
  }
}

const calls: [string, (c: InferenceClient) => Promise<unknown>][] = [
  ["Chat", async (c) => toJson(ChatResponseSchema, await c.chat({ model: "mock-chat", messages: [user("same answer everywhere")] }))],
  [
    "Generate",
    async (c) => {
      const out = [];
      for await (const e of c.generate({ model: "mock-chat", messages: [user("stream me please")] })) {
        out.push(toJson(GenerateResponseSchema, e));
      }
      return out;
    },
  ],
  [
    "Predict",
    async (c) =>
      toJson(
        PredictResponseSchema,
        await c.predict({
          model: "mock-predict",
          id: "fixed",
          // Predict answers are cached by default; each protocol must reach the model itself here.
          cachePolicy: CachePolicy.BYPASS,
          inputs: [
            { name: "x", datatype: DataType.INT64, shape: [2n], data: { case: "contents", value: { int64Contents: [2n ** 62n, 5n] } } },
            { name: "y", datatype: DataType.INT64, shape: [2n], data: { case: "contents", value: { int64Contents: [2n ** 62n, -7n] } } },
          ],
        }),
      ),
  ],
  ["ListModels", async (c) => toJson(ListModelsResponseSchema, await c.listModels({}))],
  ["unknown model", (c) => c.chat({ model: "gpt-nope", messages: [user("x")] })],
  ["empty messages", (c) => c.chat({ model: "mock-chat", messages: [] })],
  ["capability", (c) => c.predict({ model: "mock-chat", inputs: [] })],
  [
    "malformed tensor",
    (c) =>
      c.predict({
        model: "mock-predict",
        inputs: [{ name: "x", datatype: DataType.FP32, shape: [3n], data: { case: "contents", value: { fp32Contents: [1] } } }],
      }),
  ],
  ["injected failure", (c) => c.chat({ model: "mock-chat", messages: [user("x")], metadata: { "mock.fail_code": "RESOURCE_EXHAUSTED" } })],
];

describe("both listeners over one core", () => {
  it.each(calls)("%s gives identical answers and codes on every protocol", async (_name, call) => {
    const results = Object.fromEntries(await Promise.all(Object.entries(clients).map(async ([k, c]) => [k, await outcome(() => call(c))])));
    const reference = results["grpc → grpc-js"];
    expect(reference).toBeDefined();
    for (const [k, v] of Object.entries(results)) {
      expect({ [k]: v }).toEqual({ [k]: reference });
    }
  });

  it("reference values are what the mock computes", async () => {
    const c = clients["grpc → grpc-js"]!;
    const p = await c.predict({
      model: "mock-predict",
      inputs: [
        { name: "x", datatype: DataType.INT64, shape: [2n], data: { case: "contents", value: { int64Contents: [2n ** 62n, 5n] } } },
        { name: "y", datatype: DataType.INT64, shape: [2n], data: { case: "contents", value: { int64Contents: [2n ** 62n, -7n] } } },
      ],
    });
    // 2^62 + 2^62 wraps to -2^63 in INT64.
    expect(p.outputs[0]?.data.value).toMatchObject({ int64Contents: [-(2n ** 63n), -2n] });
    const err = (await outcome(() => c.chat({ model: "gpt-nope", messages: [user("x")] }))) as Record<string, unknown>;
    expect(err).toMatchObject({ code: "NotFound", reason: "MODEL_NOT_FOUND", domain: "infergate", metadata: { model: "gpt-nope" } });
  });
});

describe("limits and deadlines on real ports", () => {
  it.each(["grpc → grpc-js", "connect h2c → connect-node", "grpc-web http/1.1 → connect-node"])(
    "%s: an oversize message is refused with RESOURCE_EXHAUSTED and the server keeps serving",
    async (k) => {
      const c = clients[k]!;
      const big = "x".repeat(5 * 1024 * 1024);
      const err = ConnectError.from(await c.chat({ model: "mock-chat", messages: [user(big)] }).catch((e: unknown) => e));
      expect(err.code).toBe(Code.ResourceExhausted);
      expect(err.rawMessage).toMatch(/larger than|exceeds|max/i);
      const ok = await c.chat({ model: "mock-chat", messages: [user("still here")] });
      expect(ok.message?.content[0]?.part.value).toBe("You said: still here");
    },
  );

  it.each([
    ["grpc → grpc-js", "grpc-timeout"],
    ["connect h2c → connect-node", "connect-timeout-ms"],
    ["grpc-web http/1.1 → connect-node", "grpc-timeout"],
  ])("%s: a deadline that expires mid-stream ends it with DEADLINE_EXCEEDED naming %s", async (k, header) => {
    const c = clients[k]!;
    const got: string[] = [];
    const err = ConnectError.from(
      await (async () => {
        for await (const e of c.generate(
          { model: "mock-chat", messages: [user("one two three four five six seven eight nine ten")], metadata: { "mock.token_delay_ms": "60" } },
          { timeoutMs: 400 },
        )) {
          got.push(e.event.case ?? "");
        }
      })().catch((e: unknown) => e),
    );
    // The deadline cut the stream: its message names the caller's timeout header, and the answer
    // (a word each 60 ms, ending after 600 ms or more) never got to its final event.
    expect(err.code).toBe(Code.DeadlineExceeded);
    expect(err.rawMessage).toContain(header);
    expect(got.length).toBeGreaterThan(0);
    expect(got).not.toContain("final");
    const ok = await c.chat({ model: "mock-chat", messages: [user("after the deadline")] });
    expect(ok.message?.content[0]?.part.value).toBe("You said: after the deadline");
  });
});
