/**
 * The configuration that applies when no `--config` is given: the built-in deterministic `mock`
 * model, so that infergate runs and answers with no API key and no model server.
 */
export const defaultConfigYaml = `
upstreams:
  - name: mock
    kind: mock
models:
  - name: mock-chat
    version: "1"
    upstream: mock
    capabilities: [chat, generate]
  - name: mock-predict
    version: "1"
    upstream: mock
    capabilities: [predict]
  - name: mock-embed
    version: "1"
    upstream: mock
    capabilities: [embed]
    embedding: { dimensions: 4096 }
`;
