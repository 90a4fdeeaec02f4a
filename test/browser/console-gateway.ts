/**
 * The gateway the console's tests run against (test/e2e/console-admin.test.ts and
 * test/browser/console.test.ts): the mock models, a slow mock that streams a token every few
 * milliseconds, and a model on a failing OpenAI-compatible fake (HTTP 500) whose breaker opens
 * after three failures; auth on with one key; an admin token; and secrets in the config that
 * the console must never show.
 */
import { createOpenAIFake, type OpenAIFake } from "../fakes/openai-fake.js";
import { startInProcess } from "../helpers/servers.js";
import { hashKey } from "../../src/security/api-keys.js";
import type { App } from "../../src/server/app.js";

export const adminToken = "console-admin-token-0123456789";
export const apiKey = "sk-console-player-key";
/** Secrets in the config, which GET /admin/config and the Config page must not show. */
export const upstreamKey = "sk-upstream-secret-abcdef123456";
export const headerSecret = "hdr-secret-9876543210";

export interface ConsoleGateway {
  readonly app: App;
  readonly fake: OpenAIFake;
  readonly admin: string;
  readonly http: string;
  /** GET on the admin listener with the admin token. */
  get(path: string): Promise<Response>;
  /** A Connect JSON call on the HTTP listener with the API key. */
  call(method: string, body: unknown): Promise<Response>;
  close(): Promise<void>;
}

export function consoleConfig(fakeBaseUrl: string, withToken: boolean): string {
  return `
server:
${withToken ? `  adminToken: ${adminToken}` : "  logContent: false"}
auth:
  enabled: true
  keys:
    - { name: console-user, sha256: ${hashKey(apiKey)} }
    - { name: other-user, sha256: ${hashKey("sk-other-user-key")} }
upstreams:
  - { name: mock, kind: mock }
  - { name: slow-mock, kind: mock, options: { tokenDelayMs: 40 } }
  - name: failing
    kind: openai
    endpoints: ["${fakeBaseUrl}"]
    apiKey: "${upstreamKey}"
    headers: { x-team-token: "${headerSecret}", x-team: search }
    resilience: { retry: { maxAttempts: 1 }, breaker: { consecutiveFailures: 3, volumeThreshold: 3, resetTimeoutMs: 600000 } }
models:
  - { name: mock-chat, version: "1", upstream: mock, capabilities: [chat, generate] }
  - { name: slow-chat, version: "2", upstream: slow-mock, capabilities: [chat, generate] }
  - { name: mock-predict, version: "1", upstream: mock, capabilities: [predict] }
  - { name: mock-embed, version: "1", upstream: mock, capabilities: [embed], embedding: { dimensions: 8 } }
  - { name: broken, version: "7", upstream: failing, upstreamModel: gpt-x }
`;
}

/** Starts the fake and the gateway (in this process, on loopback ports). */
export async function startConsoleGateway(withToken = true): Promise<ConsoleGateway> {
  const fake = await createOpenAIFake();
  fake.setScenario("server-error");
  const app = await startInProcess(consoleConfig(fake.baseUrl, withToken));
  const admin = `http://${app.adminAddress}`;
  const http = `http://${app.httpAddress}`;
  return {
    app,
    fake,
    admin,
    http,
    get: (path) => fetch(`${admin}${path}`, withToken ? { headers: { authorization: `Bearer ${adminToken}` } } : {}),
    call: (method, body) =>
      fetch(`${http}/infergate.v1.InferenceService/${method}`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${apiKey}` },
        body: JSON.stringify(body),
      }),
    async close() {
      await app.shutdown();
      await fake.close();
    },
  };
}

/** A Chat of `model` with one user message. */
export const chatBody = (model: string, text = "hello console") => ({ model, messages: [{ role: "ROLE_USER", content: [{ text }] }] });
