/**
 * Embed under the same policies as Chat (issue 19, item 4), through connect-es's gRPC transport:
 * keys, model allowlists, and token limits charged from the upstream's usage (inputs answered
 * from the cache cost none).
 */
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { CachePolicy } from "../../gen/infergate/v1/chat_pb.js";
import { InferenceService } from "../../gen/infergate/v1/inference_service_pb.js";
import type { App } from "../../src/server/app.js";
import { hashKey } from "../../src/security/api-keys.js";
import { startInProcess } from "../helpers/servers.js";

let app: App;
beforeAll(async () => {
  app = await startInProcess(`upstreams: [{name: mock, kind: mock}]
models:
  - {name: mock-chat, upstream: mock}
  - {name: embed-a, upstream: mock, capabilities: [embed]}
  - {name: embed-b, upstream: mock, capabilities: [embed]}
auth:
  enabled: true
  keys:
    - {name: searcher, sha256: ${hashKey("sk-searcher")}, models: ["embed-a"], limits: {tokensPerMinute: 6}}
`);
});
afterAll(async () => {
  await app.shutdown();
});

const client = () => createClient(InferenceService, createGrpcTransport({ baseUrl: `http://${app.grpcAddress}` }));
const key = { authorization: "Bearer sk-searcher" };

async function refusal(call: Promise<unknown>): Promise<{ code: Code; reason: string | undefined }> {
  try {
    await call;
  } catch (err) {
    const e = ConnectError.from(err);
    return { code: e.code, reason: e.findDetails(ErrorInfoSchema)[0]?.reason };
  }
  throw new Error("the call succeeded");
}

describe("Embed under keys, allowlists and token limits", () => {
  it("needs a key, and a key may call only the models it lists", async () => {
    expect(await refusal(client().embed({ model: "embed-a", texts: ["x"] }))).toEqual({ code: Code.Unauthenticated, reason: "UNAUTHENTICATED" });
    expect(await refusal(client().embed({ model: "embed-b", texts: ["x"] }, { headers: key }))).toEqual({
      code: Code.PermissionDenied,
      reason: "MODEL_NOT_ALLOWED",
    });
  });

  it("charges the upstream's tokens to the key: cached inputs cost none, a key in debt waits", async () => {
    const c = client();
    // Five words, then the same from the cache (0 tokens): 6 per minute still allows a call.
    const first = await c.embed({ model: "embed-a", texts: ["one two three", "four five"] }, { headers: key });
    expect(first.usage?.promptTokens).toBe(5);
    const cached = await c.embed({ model: "embed-a", texts: ["one two three", "four five"] }, { headers: key });
    expect(cached.usage?.promptTokens).toBe(0);
    expect(cached.cached).toBe(true);
    // Two more (bypassing the cache) puts the key 1 token in debt.
    const more = await c.embed({ model: "embed-a", texts: ["six seven"], cachePolicy: CachePolicy.BYPASS }, { headers: key });
    expect(more.usage?.promptTokens).toBe(2);
    await expect.poll(() => refusal(c.embed({ model: "embed-a", texts: ["eight"] }, { headers: key }))).toEqual({
      code: Code.ResourceExhausted,
      reason: "RATE_LIMITED",
    });
  });
});
