/**
 * The `bedrock` kind's failures that the review of src/upstreams/bedrock/ found, end to end against
 * the Bedrock fake (test/fakes/bedrock-fake.ts, SigV4 checked): credentials from the SDK's default
 * chain (the environment, with a session token) kept out of the log and the caller's error; a 200
 * answer the SDK cannot read is UPSTREAM_BAD_RESPONSE; Titan's per-text InvokeModel requests go a
 * few at a time. The App runs in this process (its own worker), whose environment holds the
 * credentials.
 */
import { status } from "@grpc/grpc-js";
import { pino } from "pino";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { App } from "../../src/server/app.js";
import { BEDROCK_CREDENTIALS, type BedrockFake, createBedrockFake, fakeVector } from "../fakes/bedrock-fake.js";
import { errorInfoOf, expectServiceError, inferenceClient, type ProtoClient, statusDetails } from "../helpers/proto-clients.js";
import { lineSink, setEnv } from "../helpers/process-env.js";
import { startInProcess } from "../helpers/servers.js";

const MODEL_ID = "anthropic.claude-3-5-sonnet-20240620-v1:0";
/** The environment's identity: the fake knows its key id with another secret, so its signatures are refused. */
const ENV_KEY_ID = "ASIAFAKEENVIRONMENT7";
const ENV_SECRET = "envSecretKey/Fake+0123456789abcdefGHIJKLmnop";
const ENV_TOKEN = "IQoJb3JpZ2luX2VjEFakeSessionToken/abcdefghijklmnopqrstuvwxyz0123456789+ABCDEFGHIJ==";

type Obj = Record<string, unknown>;
const chat = (model: string, t: string) => ({ model, messages: [{ role: "ROLE_USER", content: [{ text: t }] }] });

describe("bedrock upstream: failures and limits", () => {
  let fake: BedrockFake;
  let app: App;
  let client: ProtoClient;
  const lines: string[] = [];
  let restoreEnv: (() => void) | undefined;

  beforeAll(async () => {
    fake = await createBedrockFake({ [BEDROCK_CREDENTIALS.accessKeyId]: BEDROCK_CREDENTIALS.secretAccessKey, [ENV_KEY_ID]: "the-fakes-own-secret-for-the-env-key" });
    restoreEnv = setEnv({ AWS_ACCESS_KEY_ID: ENV_KEY_ID, AWS_SECRET_ACCESS_KEY: ENV_SECRET, AWS_SESSION_TOKEN: ENV_TOKEN, AWS_PROFILE: undefined });
    app = await startInProcess(
      `
upstreams:
  - name: bedrock-static
    kind: bedrock
    resilience: { retry: { maxAttempts: 1 }, breaker: { enabled: false } }
    endpoints: ["${fake.url}"]
    options:
      region: us-east-1
      credentials: { accessKeyId: "${BEDROCK_CREDENTIALS.accessKeyId}", secretAccessKey: "${BEDROCK_CREDENTIALS.secretAccessKey}" }
  - name: bedrock-env
    kind: bedrock
    resilience: { retry: { maxAttempts: 1 }, breaker: { enabled: false } }
    endpoints: ["${fake.url}"]
    options: { region: us-east-1 }
models:
  - name: claude
    upstream: bedrock-static
    upstreamModel: ${MODEL_ID}
  - name: claude-env
    upstream: bedrock-env
    upstreamModel: ${MODEL_ID}
  - name: titan
    upstream: bedrock-static
    upstreamModel: amazon.titan-embed-text-v2:0
    capabilities: [embed]
`,
      pino({ level: "debug" }, lineSink(lines)),
    );
    client = inferenceClient(app.grpcAddress);
  });

  afterAll(async () => {
    client?.close();
    await app?.shutdown();
    await fake?.close();
    restoreEnv?.();
  });

  beforeEach(() => {
    fake.reset();
  });

  it("credentials from the environment with a session token: an InvalidSignatureException that prints the canonical request leaves no part of the token or the secret in the log or the caller's error", async () => {
    const err = await expectServiceError(client.unary("Chat", chat("claude-env", "hi")));
    expect([err.code, err.details]).toEqual([status.INTERNAL, `upstream "bedrock-env" refused the gateway's credentials`]);
    expect(errorInfoOf(statusDetails(err))).toMatchObject({ reason: "UPSTREAM_AUTH", metadata: { upstream_error: "InvalidSignatureException" } });
    // The fake refused the signature; it got the token as a signed header.
    const req = fake.requests[0]!;
    expect([req.status, req.headers["x-amz-security-token"]]).toEqual([403, ENV_TOKEN]);
    expect(req.headers["authorization"]).toContain("x-amz-security-token");
    // The call's failure went to the log.
    await expect.poll(() => lines.some((l) => l.includes("InvalidSignatureException")), { timeout: 10_000 }).toBe(true);
    const seen = [...lines, err.details, JSON.stringify(statusDetails(err)), JSON.stringify(err.metadata.getMap())].join("\n");
    // Any 16 characters of the token or the secret (the token's head, its tail, …).
    for (const secret of [ENV_TOKEN, ENV_SECRET]) {
      for (let i = 0; i + 16 <= secret.length; i += 8) expect(seen).not.toContain(secret.slice(i, i + 16));
    }
    expect(seen).not.toMatch(/x-amz-security-token:/i);
  });

  it("a 200 answer the SDK cannot read (<html>oops) is UNAVAILABLE UPSTREAM_BAD_RESPONSE, as docs/upstream-bedrock.md says, unary and streamed", async () => {
    fake.setScenario("html-200");
    const err = await expectServiceError(client.unary("Chat", chat("claude", "hi")));
    expect(err.code).toBe(status.UNAVAILABLE);
    expect(err.details).toMatch(/^upstream "bedrock-static" sent an invalid response: /);
    expect(errorInfoOf(statusDetails(err))).toMatchObject({ reason: "UPSTREAM_BAD_RESPONSE", metadata: { upstream: "bedrock-static" } });
    const { events, error } = await client.serverStream<Obj>("Generate", chat("claude", "hi")).done;
    expect(events).toEqual([]);
    expect(error?.code).toBe(status.UNAVAILABLE);
    expect(errorInfoOf(statusDetails(error!))).toMatchObject({ reason: "UPSTREAM_BAD_RESPONSE", metadata: { upstream: "bedrock-static" } });
    expect(fake.requests.map((r) => [r.operation, r.status])).toEqual([
      ["converse", 200],
      ["converse-stream", 200],
    ]);
  });

  it("Titan: 40 texts go as at most 8 InvokeModel requests at once (the default), and the 40 vectors come back in input order", async () => {
    // Each answer is held a while, so that requests sent together are in flight together.
    fake.setInvokeHold(50);
    const texts = Array.from({ length: 40 }, (_, i) => `text number ${i}`);
    const res = await client.unary<Obj>("Embed", { model: "titan", texts, dimensions: 4 });
    expect((res["embeddings"] as Obj[]).map((e) => e["values"])).toEqual(texts.map((t) => fakeVector(t, 4).map((v) => Math.fround(v))));
    expect(fake.requests.filter((r) => r.operation === "invoke" && r.status === 200)).toHaveLength(40);
    expect(fake.peakInvokesInFlight).toBeGreaterThan(1);
    expect(fake.peakInvokesInFlight).toBeLessThanOrEqual(8);
  });
});
