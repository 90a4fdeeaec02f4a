/**
 * Which reason a timed-out HTTP upstream attempt reports. The call's signal aborts at its deadline
 * with the gateway's reason (createCallContext); the attempt's own timer must not beat it when both
 * are due in the same millisecond (a clamped deadline has no margin), or the client would be told
 * that the upstream's 60 s timeout ran out after 50 ms. Against a real loopback server that never
 * answers.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InferenceService, ListModelsRequestSchema, ListModelsResponseSchema } from "../../gen/infergate/v1/inference_service_pb.js";
import { GatewayError, Reason } from "../../src/core/gateway-error.js";
import { GrpcUpstream } from "../../src/upstreams/grpc/grpc-upstream.js";
import { createCallContext } from "../../src/core/call-context.js";
import { HttpUpstream } from "../../src/upstreams/http/http-upstream.js";

describe("HTTP upstream attempt timeouts", () => {
  let server: Server;
  let held: ServerResponse[] = [];
  let up: HttpUpstream;
  let slowUp: HttpUpstream;

  beforeAll(async () => {
    server = createServer((_req: IncomingMessage, res: ServerResponse) => {
      held.push(res); // never answered
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    up = new HttpUpstream({ name: "llm", endpoints: [base], timeoutMs: 60_000 });
    slowUp = new HttpUpstream({ name: "short", endpoints: [base], timeoutMs: 40 });
  });
  afterAll(async () => {
    for (const r of held) r.destroy();
    held = [];
    await up.close();
    await slowUp.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  const send = (u: HttpUpstream, signal: AbortSignal, deadline: number) =>
    u.request({ method: "POST", path: "/chat/completions", headers: { "content-type": "application/json" }, body: "{}", signal, deadline }).then(
      () => undefined,
      (e: unknown) => e,
    );

  it("a clamped deadline ends every call with the gateway's reason, never the upstream's timeout", async () => {
    // Each call does 2 ms of synchronous work between its context and its upstream request, as a
    // real call does (decode, routing, cache key): the event loop's clock stands still meanwhile,
    // so a timer for "the time remaining" would be due before the context's own.
    const contexts = Array.from({ length: 20 }, () => createCallContext({ timeoutMs: undefined, maxTimeoutMs: 60, timeoutHeader: "grpc-timeout" }));
    const pending = contexts.map((ctx) => {
      const until = Date.now() + 2;
      while (Date.now() < until);
      return send(up, ctx.signal, ctx.deadline);
    });
    const errors = await Promise.all(pending);
    for (const ctx of contexts) ctx.dispose();
    const messages = new Set(errors.map((e) => (e instanceof GatewayError ? e.message : String(e))));
    expect([...messages]).toEqual(["deadline exceeded: the gateway's maximum call time of 60ms ran out"]);
  });

  it("the upstream's own timeout, when it comes first, is UPSTREAM_TIMEOUT naming it", async () => {
    const ctx = createCallContext({ timeoutMs: 5_000, maxTimeoutMs: 60_000, timeoutHeader: "grpc-timeout" });
    const err = await send(slowUp, ctx.signal, ctx.deadline);
    ctx.dispose();
    expect(err).toBeInstanceOf(GatewayError);
    expect((err as GatewayError).code).toBe(Code.DeadlineExceeded);
    expect((err as GatewayError).reason).toBe(Reason.UpstreamTimeout);
    expect((err as GatewayError).message).toBe('upstream "short" did not answer within its timeout of 40ms');
  });

  it("a run whose signal is not tied to its deadline (a probe) still ends, shortly after the deadline", async () => {
    const started = Date.now();
    const err = await send(up, new AbortController().signal, started + 50);
    expect(err).toBeInstanceOf(GatewayError);
    expect((err as GatewayError).code).toBe(Code.DeadlineExceeded);
    // The message says which timer ended it: the backstop at the deadline, not the upstream's 60 s timeout.
    expect((err as GatewayError).message).toBe(`upstream "llm" did not answer before the call's deadline`);
    // A lower bound only: the backstop (the deadline plus 25 ms) never fires early.
    expect(Date.now() - started).toBeGreaterThanOrEqual(45);
  });
});

describe("gRPC upstream attempt timeouts", () => {
  let server: grpc.Server;
  let up: GrpcUpstream;
  const held: grpc.ServerUnaryCall<unknown, unknown>[] = [];

  beforeAll(async () => {
    server = new grpc.Server();
    // A ListModels that never answers.
    server.addService(
      {
        listModels: {
          path: `/${InferenceService.typeName}/ListModels`,
          requestStream: false,
          responseStream: false,
          requestSerialize: (m: unknown) => Buffer.from(toBinary(ListModelsRequestSchema, m as never)),
          requestDeserialize: (b: Buffer) => fromBinary(ListModelsRequestSchema, b),
          responseSerialize: (m: unknown) => Buffer.from(toBinary(ListModelsResponseSchema, m as never)),
          responseDeserialize: (b: Buffer) => fromBinary(ListModelsResponseSchema, b),
        },
      },
      {
        listModels: (call: grpc.ServerUnaryCall<unknown, unknown>, done: grpc.sendUnaryData<unknown>) => {
          // Asked to, it answers at once that its own deadline ran out; else it never answers.
          if (call.metadata.get("x-answer")[0] === "deadline") done({ code: grpc.status.DEADLINE_EXCEEDED, details: "model server timed out" });
          else held.push(call);
        },
      },
    );
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    up = new GrpcUpstream({ name: "next", endpoints: [`http://127.0.0.1:${port}`], timeoutMs: 60_000 }, { maxMessageBytes: 4 << 20, trustedErrors: true });
  });
  afterAll(() => {
    up.close();
    server.forceShutdown();
  });

  it("a clamped deadline ends every call with the gateway's reason, never the upstream's deadline", async () => {
    const contexts = Array.from({ length: 20 }, () => createCallContext({ timeoutMs: undefined, maxTimeoutMs: 80, timeoutHeader: "grpc-timeout" }));
    const pending = contexts.map((ctx) => {
      const until = Date.now() + 2;
      while (Date.now() < until);
      return up.unary(InferenceService.method.listModels, create(ListModelsRequestSchema), { signal: ctx.signal, deadline: ctx.deadline }).then(
        () => undefined,
        (e: unknown) => e,
      );
    });
    const errors = await Promise.all(pending);
    for (const ctx of contexts) ctx.dispose();
    const messages = new Set(errors.map((e) => (e instanceof GatewayError ? e.message : String(e))));
    expect([...messages]).toEqual(["deadline exceeded: the gateway's maximum call time of 80ms ran out"]);
  });

  it("an upstream that itself answers DEADLINE_EXCEEDED early is UPSTREAM_TIMEOUT at once, not held to the call's deadline", async () => {
    // A deadline well inside the test's own timeout, so that a call held to it would end and show it.
    const ctx = createCallContext({ timeoutMs: 10_000, maxTimeoutMs: 60_000, timeoutHeader: "grpc-timeout" });
    const signal = ctx.signal;
    const err = await up
      .unary(InferenceService.method.listModels, create(ListModelsRequestSchema), { signal: ctx.signal, deadline: ctx.deadline, metadata: { "x-answer": "deadline" } })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    // Not held to the call's deadline: the error came while the call's signal had not aborted.
    expect(signal.aborted).toBe(false);
    ctx.dispose();
    expect(err).toBeInstanceOf(GatewayError);
    expect((err as GatewayError).code).toBe(Code.DeadlineExceeded);
    expect((err as GatewayError).reason).toBe(Reason.UpstreamTimeout);
  });
});
