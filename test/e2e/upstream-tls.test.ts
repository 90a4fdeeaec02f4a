import { readFileSync, rmSync } from "node:fs";
import * as https from "node:https";
import type { AddressInfo } from "node:net";
import type { TLSSocket } from "node:tls";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Role } from "../../gen/infergate/v1/chat_pb.js";
import { InferenceService } from "../../gen/infergate/v1/inference_service_pb.js";
import { createTestPki, type TestPki } from "../helpers/certs.js";
import { startInProcess } from "../helpers/servers.js";

let pki: TestPki;
let upstream: https.Server;
let url: string;
const seenClients: (string | undefined)[] = [];

beforeAll(async () => {
  pki = createTestPki();
  // An Anthropic-compatible upstream on HTTPS that requires a client certificate from our CA.
  upstream = https.createServer(
    { cert: readFileSync(pki.serverPem), key: readFileSync(pki.serverKey), ca: readFileSync(pki.caPem), requestCert: true, rejectUnauthorized: true },
    (req, res) => {
      seenClients.push((req.socket as TLSSocket).getPeerCertificate().subject?.CN as string | undefined);
      req.resume();
      req.on("end", () => {
        res.writeHead(200, { "content-type": "application/json" }).end(
          JSON.stringify({
            id: "msg_1",
            type: "message",
            role: "assistant",
            model: "claude-test",
            content: [{ type: "text", text: "over mutual TLS" }],
            stop_reason: "end_turn",
            stop_sequence: null,
            usage: { input_tokens: 3, output_tokens: 3 },
          }),
        );
      });
    },
  );
  await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
  url = `https://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
});

afterAll(async () => {
  upstream.close();
  rmSync(pki.dir, { recursive: true, force: true });
});

const request = { model: "claude", messages: [{ role: Role.USER, content: [{ part: { case: "text" as const, value: "hi" } }] }] };

describe("TLS towards upstreams", () => {
  it("trusts a private CA and presents a client certificate (mTLS upstream)", async () => {
    const app = await startInProcess(`upstreams:
  - name: secure
    kind: anthropic
    endpoints: ["${url}"]
    apiKey: test-key
    tls: {caFile: ${pki.caPem}, certFile: ${pki.clientPem}, keyFile: ${pki.clientKey}}
models: [{name: claude, upstream: secure}]
`);
    try {
      const client = createClient(InferenceService, createGrpcTransport({ baseUrl: `http://${app.grpcAddress}` }));
      const res = await client.chat(request);
      expect(res.message?.content[0]?.part.value).toBe("over mutual TLS");
      expect(seenClients.at(-1)).toBe("client");
    } finally {
      await app.shutdown();
    }
  });

  it("without the client certificate the upstream refuses, and the caller gets UNAVAILABLE", async () => {
    const app = await startInProcess(`upstreams:
  - {name: secure, kind: anthropic, endpoints: ["${url}"], apiKey: test-key, tls: {caFile: ${pki.caPem}}}
models: [{name: claude, upstream: secure}]
`);
    try {
      const client = createClient(InferenceService, createGrpcTransport({ baseUrl: `http://${app.grpcAddress}` }));
      const err = ConnectError.from(await client.chat(request).catch((e: unknown) => e));
      expect(err.code).toBe(Code.Unavailable);
    } finally {
      await app.shutdown();
    }
  });

  it("rejects half a client certificate in config", async () => {
    await expect(
      startInProcess(`upstreams: [{name: s, kind: anthropic, endpoints: ["${url}"], tls: {certFile: x.pem}}]\nmodels: [{name: c, upstream: s}]\n`),
    ).rejects.toThrow(/upstreams\[0\]\.tls: certFile and keyFile go together/);
  });
});
