/**
 * Gateway.swap, the core of a configuration reload: calls that start after it use the new routes
 * and admission; a call in flight keeps what it started with, and swap resolves only once every
 * call that started before it has finished (the moment the replaced upstreams may be closed).
 */
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { Role } from "../../gen/infergate/v1/chat_pb.js";
import { InferenceService } from "../../gen/infergate/v1/inference_service_pb.js";
import { parseConfig } from "../../src/config/load-config.js";
import { createGateway } from "../../src/gateway/gateway.js";
import { GatewayError, Reason } from "../../src/core/gateway-error.js";
import { createRouter } from "../../src/gateway/router.js";
import { inferenceRoutes } from "../../src/server/connect-routes.js";
import { createUpstream } from "../../src/gateway/create-upstream.js";

function routerOf(yaml: string) {
  const config = parseConfig(yaml, "(test)", {});
  return createRouter(config, new Map(config.upstreams.map((u) => [u.name, createUpstream(u)])));
}

const ask = (model: string, text: string, metadata: Record<string, string> = {}) => ({
  model,
  messages: [{ role: Role.USER, content: [{ part: { case: "text" as const, value: text } }] }],
  metadata,
});

describe("Gateway.swap", () => {
  it("new calls use the new routes and admission; the stream in flight finishes; swap resolves after it", async () => {
    const gateway = createGateway(routerOf("upstreams: [{name: u, kind: mock}]\nmodels: [{name: old, upstream: u}]\n"));
    const client = createClient(InferenceService, createRouterTransport(inferenceRoutes(gateway, 60_000)));

    const words = "one two three four five";
    const stream = client.generate(ask("old", words, { "mock.token_delay_ms": "40" }))[Symbol.asyncIterator]();
    const first = await stream.next();
    expect(first.value?.event).toEqual({ case: "textDelta", value: "You" });

    let swapped = false;
    const refuseAll = () => {
      throw new GatewayError(Code.PermissionDenied, "refused by the new admission", { reason: Reason.ModelNotAllowed });
    };
    const done = gateway
      .swap({ router: routerOf("upstreams: [{name: u, kind: mock}]\nmodels: [{name: new, upstream: u}]\n"), admit: refuseAll })
      .then(() => (swapped = true));

    const refused = ConnectError.from(await client.chat(ask("new", "hi")).catch((e: unknown) => e));
    expect(refused.code).toBe(Code.PermissionDenied);
    gateway.swap({ router: routerOf("upstreams: [{name: u, kind: mock}]\nmodels: [{name: new, upstream: u}]\n") });
    expect((await client.chat(ask("new", "hi"))).model).toBe("new");
    const gone = ConnectError.from(await client.chat(ask("old", "hi")).catch((e: unknown) => e));
    expect(gone.code).toBe(Code.NotFound);

    expect(swapped).toBe(false);
    const rest: string[] = [];
    for (let r = await stream.next(); !r.done; r = await stream.next()) {
      if (r.value.event.case === "textDelta") rest.push(r.value.event.value);
      else expect(r.value.event.value).toMatchObject({ model: "old", upstream: "u" });
    }
    expect(`You${rest.join("")}`).toBe(`You said: ${words}`);
    await done;
    expect(swapped).toBe(true);
    expect(gateway.inFlight()).toBe(0);
  });

  it("resolves at once when no call is in flight", async () => {
    const gateway = createGateway(routerOf("upstreams: [{name: u, kind: mock}]\nmodels: [{name: a, upstream: u}]\n"));
    await expect(gateway.swap({ router: routerOf("upstreams: [{name: u, kind: mock}]\nmodels: [{name: b, upstream: u}]\n") })).resolves.toBeUndefined();
  });
});
