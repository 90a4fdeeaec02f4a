import { describe, expect, it } from "vitest";
import { ConfigError } from "../../src/config/config-error.js";
import { loadConfig, parseConfig } from "../../src/config/load-config.js";

function issues(yaml: string, env: Record<string, string> = {}): string[] {
  try {
    parseConfig(yaml, "test.yaml", env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).issues.map((i) => (i.path === "" ? i.message : `${i.path}: ${i.message}`));
  }
  throw new Error("expected the config to be rejected");
}

const base = `
upstreams:
  - name: mock
    kind: mock
models:
  - name: m
    upstream: mock
`;

describe("config", () => {
  it("the embedded default serves mock-chat, mock-predict and mock-embed on the documented ports", async () => {
    const c = await loadConfig(undefined, {});
    expect(c.server.listen).toBe("127.0.0.1:50051");
    expect(c.server.httpListen).toBe("127.0.0.1:8080");
    expect(c.server.maxMessageBytes).toBe(4 * 1024 * 1024);
    expect(c.models.map((m) => [m.name, m.capabilities])).toEqual([
      ["mock-chat", ["chat", "generate"]],
      ["mock-predict", ["predict"]],
      ["mock-embed", ["embed"]],
    ]);
  });

  it("refuses an anthropic model that lists embed: Anthropic has no embeddings API", () => {
    const yaml = `
upstreams:
  - { name: claude, kind: anthropic, endpoints: ["https://api.anthropic.com"] }
models:
  - { name: c, upstream: claude, capabilities: [chat, embed] }
`;
    expect(issues(yaml)).toEqual([
      "models[0].capabilities[1]: upstream kind anthropic has no embeddings API: serve embeddings from a model of kind openai, kserve, infergate or mock",
    ]);
  });

  it("serves Embed only for a model that lists embed; a fallback of an embedding model must embed too", () => {
    const c = parseConfig(
      `
upstreams:
  - { name: oai, kind: openai, endpoints: ["https://api.openai.com/v1"] }
models:
  - { name: gpt, upstream: oai }
  - { name: small, upstream: oai, capabilities: [embed], embedding: { dimensions: 512, maxBatch: 64 } }
`,
      "t",
      {},
    );
    expect(c.models.map((m) => [m.name, m.capabilities])).toEqual([
      ["gpt", undefined],
      ["small", ["embed"]],
    ]);
    expect(c.models[1]!.embedding).toEqual({ dimensions: 512, maxBatch: 64, maxInputs: 2048 });
    expect(
      issues(`
upstreams: [{ name: mock, kind: mock }]
models:
  - { name: e, upstream: mock, capabilities: [embed], fallbacks: [chatty] }
  - { name: chatty, upstream: mock }
`),
    ).toEqual(['models[0].fallbacks[0]: fallback "chatty" cannot serve embed, which "e" serves']);
  });

  it("applies defaults to a minimal file", () => {
    const c = parseConfig(base, "t", {});
    expect(c.models[0]).toMatchObject({ name: "m", version: "1", upstream: "mock" });
    expect(c.upstreams[0]).toMatchObject({ endpoints: [], headers: {}, timeoutMs: 60_000 });
  });

  it.each([
    [
      "a bad endpoint, by its exact path",
      `upstreams:\n  - {name: a, kind: mock}\n  - {name: b, kind: mock, endpoints: ["http://ok:1", "not a url"]}\nmodels: [{name: m, upstream: a}]`,
      ["upstreams[1].endpoints[1]: not a URL"],
    ],
    ["an unknown kind", `upstreams: [{name: a, kind: gpt}]\nmodels: [{name: m, upstream: a}]`, ["upstreams[0].kind: unknown kind; one of: mock"]],
    ["a missing field", `upstreams: [{kind: mock}]\nmodels: [{name: m, upstream: mock}]`, ["upstreams[0].name: required"]],
    ["a typo'd field", `${base}\nserver: {lisen: "127.0.0.1:1"}`, ["server: unknown field lisen"]],
    ["a bad listen address", `${base}\nserver: {listen: "localhost"}`, ["server.listen: not HOST:PORT (IPv6 as [::1]:PORT)"]],
    ["a port out of range", `${base}\nserver: {listen: "127.0.0.1:70000"}`, ["server.listen: port above 65535"]],
    ["a model on an unknown upstream", `upstreams: [{name: a, kind: mock}]\nmodels: [{name: m, upstream: b}]`, ['models[0].upstream: no upstream named "b"']],
    [
      "duplicate names",
      `upstreams: [{name: a, kind: mock}, {name: a, kind: mock}]\nmodels: [{name: m, upstream: a}, {name: m, upstream: a}]`,
      ['upstreams[1].name: duplicate upstream name "a"', 'models[1].name: duplicate model name "m"'],
    ],
    ["bad kind options", `upstreams: [{name: a, kind: mock, options: {tokenDelayMs: -1}}]\nmodels: [{name: m, upstream: a}]`, ["upstreams[0].options.tokenDelayMs: Too small: expected number to be >=0"]],
    ["no models", `upstreams: [{name: a, kind: mock}]\nmodels: []`, ["models: at least one model is required"]],
    ["broken YAML", `upstreams: [`, ["YAML: "]],
    ["a Redis URL that is not a URL (a config error, not a crash)", `${base}\nredis: {url: "value-of-REDIS_URL"}`, ["redis.url: not a redis:// or rediss:// URL"]],
    ["a Redis URL whose path is not a database number", `${base}\nredis: {url: "redis://:s3cret@127.0.0.1:6379/abc"}`, ["redis.url: the path must be a database number"]],
  ])("rejects %s", (_name, yaml, expected) => {
    const got = issues(yaml);
    for (const e of expected) {
      expect(got.some((g) => g.startsWith(e))).toBe(true);
    }
    expect(got.length).toBeGreaterThanOrEqual(expected.length);
  });

  it("accepts a Redis URL with a database number or none, and never echoes one it refuses", () => {
    for (const url of ["redis://127.0.0.1:6379", "redis://127.0.0.1:6379/", "rediss://u:p@10.0.0.1:6380/3"]) {
      expect(parseConfig(`${base}\nredis: {url: "${url}"}`, "t", {}).redis?.url).toBe(url);
    }
    expect(issues(`${base}\nredis: {url: "redis://:s3cret@127.0.0.1:6379/abc"}`).join("\n")).not.toContain("s3cret");
  });

  it("reports every problem at once, with exact paths", () => {
    const got = issues(
      `upstreams:\n  - {name: a, kind: mock}\n  - {name: b, kind: mock, endpoints: ["ftp://x", "nope"]}\nmodels: [{name: m, upstream: a, capabilities: [chat, think]}]`,
    );
    expect(got).toEqual([
      "upstreams[1].endpoints[0]: not a URL",
      "upstreams[1].endpoints[1]: not a URL",
      expect.stringMatching(/^models\[0\]\.capabilities\[1\]: /),
    ]);
  });

  it("interpolates environment variables and names a missing one", () => {
    const yaml = `upstreams: [{name: a, kind: mock, apiKey: "\${SECRET}", headers: {x-cost: "$$5"}}]\nmodels: [{name: m, upstream: a}]`;
    const c = parseConfig(yaml, "t", { SECRET: "s3cr3t" });
    expect(c.upstreams[0]!.apiKey).toBe("s3cr3t");
    expect(c.upstreams[0]!.headers).toEqual({ "x-cost": "$5" });
    expect(issues(yaml)).toEqual(["upstreams[0].apiKey: environment variable SECRET is not set"]);
  });

  it("never echoes a secret's value in an error", () => {
    const yaml = `upstreams: [{name: a, kind: mock, apiKey: "\${SECRET}", timeoutMs: "\${SECRET}"}]\nmodels: [{name: m, upstream: a}]`;
    let message = "";
    try {
      parseConfig(yaml, "t", { SECRET: "sk-live-abcdef" });
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toContain("upstreams[0].timeoutMs");
    expect(message).not.toContain("sk-live-abcdef");
  });

  it("names an unreadable file", async () => {
    await expect(loadConfig("/nonexistent/infergate.yaml", {})).rejects.toThrow(/cannot read file \(ENOENT\)/);
  });
});
