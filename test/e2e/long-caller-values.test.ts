/**
 * Issue 17, defect 1: a long caller string echoed into an error. Before, a 40,000-character model
 * name went whole into `grpc-message` and twice into `grpc-status-details-bin`: the trailers were
 * too large, the client waited to its deadline and so did the next call on the same HTTP/2
 * connection. Every echoed caller value is now cut at 200 characters (src/core/gateway-error.ts)
 * and the rendered error is bounded (src/server/error-rendering.ts).
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Role } from "../../gen/infergate/v1/chat_pb.js";
import { InferenceService } from "../../gen/infergate/v1/inference_service_pb.js";
import type { App } from "../../src/server/app.js";
import { errorInfoOf, expectServiceError, inferenceClient, type ProtoClient, statusDetails } from "../helpers/proto-clients.js";
import { startInProcess } from "../helpers/servers.js";

/** A Chat request (proto-loader's shape) with one user message. */
const chat = (model: string, extra: Record<string, unknown> = {}) => ({
  model,
  messages: [{ role: "ROLE_USER", content: [{ text: "hi" }] }],
  ...extra,
});

const fp32 = (name: string) => ({ name, datatype: "DATA_TYPE_FP32", shape: [1], contents: { fp32_contents: [1] } });

/** The most characters of an echoed value in a message or a detail, the cut's mark included. */
const echoBound = 200;

describe("long caller values in errors (issue 17, defect 1)", () => {
  let app: App;
  let client: ProtoClient;

  beforeAll(async () => {
    app = await startInProcess();
    client = inferenceClient(app.grpcAddress);
  });

  afterAll(async () => {
    client?.close();
    await app?.shutdown();
  });

  /** Each failing call is answered with its code, and the next valid call on the same channel succeeds. */
  const cases: [string, string, object, status, string][] = [
    ["a 40,000-character model name", "Chat", chat("m".repeat(40_000)), status.NOT_FOUND, "model"],
    [
      "an 80,000-character tool_choice.function_name",
      "Chat",
      chat("mock-chat", { tools: [{ name: "t", description: "" }], tool_choice: { function_name: "f".repeat(80_000) } }),
      status.INVALID_ARGUMENT,
      "field",
    ],
    [
      "a duplicate 80,000-character Predict input name",
      "Predict",
      { model: "mock-predict", inputs: [fp32("i".repeat(80_000)), fp32("i".repeat(80_000))] },
      status.INVALID_ARGUMENT,
      "field",
    ],
    [
      "an unknown 80,000-character output name",
      "Predict",
      { model: "mock-predict", inputs: [fp32("INPUT0")], outputs: [{ name: "o".repeat(80_000) }] },
      status.INVALID_ARGUMENT,
      "field",
    ],
  ];

  it.each(cases)("%s: answered with a short error, and the channel keeps working", async (_, method, request, code, key) => {
    // A sibling call on the same connection, open while the error is written.
    const sibling = client.serverStream<Record<string, unknown>>("Generate", chat("mock-chat", { metadata: { "mock.token_delay_ms": "20" } }), {
      timeoutMs: 8_000,
    });
    const err = await expectServiceError(client.unary(method, request, { timeoutMs: 8_000 }));
    expect(err.code).toBe(code);
    expect(err.details.length).toBeLessThan(1024);
    const details = statusDetails(err);
    expect(String(details.message).length).toBeLessThan(1024);
    const info = errorInfoOf(details)!;
    const metadata = info["metadata"] as Record<string, string>;
    expect(metadata[key]!.length).toBeLessThanOrEqual(echoBound);
    expect(err.metadata.get("grpc-status-details-bin")[0]!.length).toBeLessThan(4096);

    const ok = await client.unary<Record<string, unknown>>("Chat", chat("mock-chat"), { timeoutMs: 8_000 });
    expect(ok["message"]).toBeDefined();
    const done = await sibling.done;
    expect(done.status.code).toBe(status.OK);
  });

  it("MODEL_NOT_FOUND names the model cut at 200 characters, with its length", async () => {
    const err = await expectServiceError(client.unary("Chat", chat("m".repeat(40_000)), { timeoutMs: 8_000 }));
    const metadata = errorInfoOf(statusDetails(err))!["metadata"] as Record<string, string>;
    const cut = `${"m".repeat(200 - "… (40000 chars)".length)}… (40000 chars)`;
    expect(metadata["model"]).toBe(cut);
    expect(err.details).toBe(`model "${cut}" is not served by this gateway (see ListModels)`);
  });

  it("over Connect JSON, a 3 MB model name gets a small error body", async () => {
    const res = await fetch(`http://${app.httpAddress}/infergate.v1.InferenceService/Chat`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "m".repeat(3_000_000), messages: [{ role: "ROLE_USER", content: [{ text: "hi" }] }] }),
    });
    const body = await res.text();
    expect(res.status).toBe(404);
    expect(body.length).toBeLessThan(4096);
    expect((JSON.parse(body) as { code: string }).code).toBe("not_found");
  });

  it("over the OpenAI-compatible API, a 3 MB model name gets a small error body", async () => {
    const res = await fetch(`http://${app.httpAddress}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "m".repeat(3_000_000), messages: [{ role: "user", content: "hi" }] }),
    });
    const body = await res.text();
    expect(res.status).toBe(404);
    expect(body.length).toBeLessThan(4096);
  });

  it("on the HTTP listener's gRPC path, a 40,000-character model name is NOT_FOUND and sibling streams live on", async () => {
    const c = createClient(InferenceService, createGrpcTransport({ baseUrl: `http://${app.httpAddress}` }));
    const text = (t: string) => [{ role: Role.USER, content: [{ part: { case: "text" as const, value: t } }] }];
    // A stream on the same connection, open while the error is written.
    const sibling = (async () => {
      let n = 0;
      for await (const _ of c.generate({ model: "mock-chat", messages: text("one two three"), metadata: { "mock.token_delay_ms": "20" } }, { timeoutMs: 8_000 })) n++;
      return n;
    })().catch((e: unknown) => ConnectError.from(e));
    const err = await c.chat({ model: "m".repeat(40_000), messages: text("hi") }, { timeoutMs: 8_000 }).then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(err?.code).toBe(Code.NotFound);
    expect(err!.rawMessage.length).toBeLessThan(1024);
    expect((await c.chat({ model: "mock-chat", messages: text("hi") }, { timeoutMs: 8_000 })).message).toBeDefined();
    expect(await sibling).toBeGreaterThan(0);
  });
});
