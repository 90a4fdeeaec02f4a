import { createClient, createRouterTransport, type Client } from "@connectrpc/connect";
import { InferenceService } from "../../gen/infergate/v1/inference_service_pb.js";
import { defaultConfigYaml } from "../../src/config/default-config.js";
import { parseConfig } from "../../src/config/load-config.js";
import { ResponseCache } from "../../src/cache/response-cache.js";
import { createGateway, type Gateway } from "../../src/gateway/gateway.js";
import { createRouter } from "../../src/gateway/router.js";
import { inferenceRoutes } from "../../src/server/connect-routes.js";
import { createUpstream } from "../../src/gateway/create-upstream.js";

/** The gateway core behind an in-memory Connect transport: no sockets, the real routes. */
export function memoryClient(yaml: string = defaultConfigYaml): {
  client: Client<typeof InferenceService>;
  gateway: Gateway;
  cache: ResponseCache;
} {
  const config = parseConfig(yaml, "(test)", {});
  const upstreams = new Map(config.upstreams.map((u) => [u.name, createUpstream(u)]));
  const cache = new ResponseCache(config.cache, config.server.maxTimeoutMs);
  const gateway = createGateway(createRouter(config, upstreams), { cache });
  const transport = createRouterTransport(inferenceRoutes(gateway, config.server.maxTimeoutMs));
  return { client: createClient(InferenceService, transport), gateway, cache };
}
