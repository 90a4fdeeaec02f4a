import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorInfoSchema, RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { Role } from "../../gen/infergate/v1/chat_pb.js";
import { InferenceService } from "../../gen/infergate/v1/inference_service_pb.js";
import type { App } from "../../src/server/app.js";
import { hashKey } from "../../src/security/api-keys.js";
import { startInProcess } from "../helpers/servers.js";

let app: App;
beforeAll(async () => {
  app = await startInProcess(`upstreams: [{name: mock, kind: mock}]
models: [{name: mock-chat, upstream: mock}, {name: private, upstream: mock}]
auth:
  enabled: true
  keys:
    - {name: alpha, sha256: ${hashKey("sk-alpha")}, models: ["mock-*"], limits: {requestsPerMinute: 3}}
`);
});
afterAll(async () => {
  await app.shutdown();
});

const request = { model: "mock-chat", messages: [{ role: Role.USER, content: [{ part: { case: "text" as const, value: "hi" } }] }] };

describe("API keys over gRPC", () => {
  it.each([
    ["no key", {}, Code.Unauthenticated, "UNAUTHENTICATED"],
    ["a bad key", { authorization: "Bearer sk-wrong" }, Code.Unauthenticated, "UNAUTHENTICATED"],
    ["the right key for a model it may not use", { "x-api-key": "sk-alpha", model: "private" }, Code.PermissionDenied, "MODEL_NOT_ALLOWED"],
  ])("%s → refused", async (_name, opts, code, reason) => {
    const { model, ...headers } = opts as Record<string, string>;
    const client = createClient(InferenceService, createGrpcTransport({ baseUrl: `http://${app.grpcAddress}` }));
    const err = ConnectError.from(await client.chat({ ...request, model: model ?? request.model }, { headers }).catch((e: unknown) => e));
    expect(err.code).toBe(code);
    expect(err.findDetails(ErrorInfoSchema)[0]?.reason).toBe(reason);
    expect(err.rawMessage).not.toContain("sk-");
  });

  it("the right key for an allowed model is served, until its request rate is used up", async () => {
    const client = createClient(InferenceService, createGrpcTransport({ baseUrl: `http://${app.grpcAddress}` }));
    const headers = { authorization: "Bearer sk-alpha" };
    for (let i = 0; i < 3; i++) {
      expect((await client.chat(request, { headers })).message?.content[0]?.part.value).toBe("You said: hi");
    }
    const err = ConnectError.from(await client.chat(request, { headers }).catch((e: unknown) => e));
    expect(err.code).toBe(Code.ResourceExhausted);
    expect(err.findDetails(ErrorInfoSchema)[0]?.reason).toBe("RATE_LIMITED");
    const retry = err.findDetails(RetryInfoSchema)[0]?.retryDelay;
    // 3 per minute: one request refills in 20 s.
    const ms = Number(retry?.seconds ?? 0n) * 1000 + (retry?.nanos ?? 0) / 1e6;
    expect(ms).toBeGreaterThan(19_000);
    expect(ms).toBeLessThanOrEqual(20_000);
  });
});
