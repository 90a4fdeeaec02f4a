import { fromBinary } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { ErrorInfoSchema, RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../../gen/google/rpc/status_pb.js";
import { parseConfig } from "../../src/config/load-config.js";
import { GatewayError, invalidArgument, Reason, toStatus } from "../../src/core/gateway-error.js";
import { createRouter } from "../../src/gateway/router.js";
import { toConnectError, toServiceError } from "../../src/server/error-rendering.js";
import { createUpstream } from "../../src/gateway/create-upstream.js";

describe("error mapping", () => {
  it.each([
    [invalidArgument("messages[0].role", "required"), Code.InvalidArgument, "INVALID_ARGUMENT", "messages[0].role: required"],
    [new GatewayError(Code.NotFound, "no such model"), Code.NotFound, "MODEL_NOT_FOUND", "no such model"],
    [new GatewayError(Code.Unimplemented, "no chat"), Code.Unimplemented, "CAPABILITY_NOT_SUPPORTED", "no chat"],
    [new GatewayError(Code.Unavailable, "down"), Code.Unavailable, "UPSTREAM_UNAVAILABLE", "down"],
    [new GatewayError(Code.Unavailable, "open", { reason: Reason.CircuitOpen }), Code.Unavailable, "CIRCUIT_OPEN", "open"],
    [new GatewayError(Code.DeadlineExceeded, "late"), Code.DeadlineExceeded, "DEADLINE_EXCEEDED", "late"],
  ])("maps %s", (err, code, reason, message) => {
    expect(toStatus(err)).toMatchObject({ code, reason, message });
  });

  it("hides the text of unexpected errors from the client", () => {
    const s = toStatus(new Error("ECONNREFUSED 10.0.0.7:443 with key sk-abc"));
    expect(s).toMatchObject({ code: Code.Internal, reason: "INTERNAL", message: "internal error" });
  });

  it("renders grpc-status-details-bin with ErrorInfo and RetryInfo for grpc-js", () => {
    const err = new GatewayError(Code.ResourceExhausted, "slow down", {
      reason: Reason.RateLimited,
      metadata: { model: "m" },
      retryAfterMs: 1500,
    });
    const se = toServiceError(err);
    expect(se.code).toBe(Code.ResourceExhausted);
    expect(se.details).toBe("slow down");
    const bin = se.metadata!.get("grpc-status-details-bin")[0] as Buffer;
    const status = fromBinary(StatusSchema, bin);
    expect(status.code).toBe(Code.ResourceExhausted);
    expect(status.message).toBe("slow down");
    const info = anyUnpack(status.details[0]!, ErrorInfoSchema);
    expect(info).toMatchObject({ reason: "RATE_LIMITED", domain: "infergate", metadata: { model: "m" } });
    const retry = anyUnpack(status.details[1]!, RetryInfoSchema);
    expect(retry?.retryDelay).toMatchObject({ seconds: 1n, nanos: 500_000_000 });
  });

  it("gives connect the same code, message and details", () => {
    const ce = toConnectError(invalidArgument("inputs[0].shape", "bad"));
    expect(ConnectError.from(ce).code).toBe(Code.InvalidArgument);
    expect(ce.rawMessage).toBe("inputs[0].shape: bad");
    expect(ce.findDetails(ErrorInfoSchema)[0]).toMatchObject({
      reason: "INVALID_ARGUMENT",
      domain: "infergate",
      metadata: { field: "inputs[0].shape" },
    });
  });
});

describe("router", () => {
  const config = parseConfig(
    `upstreams: [{name: local, kind: mock, apiKey: sk-secret}]
models:
  - {name: chatty, upstream: local, version: "7", upstreamModel: real-name, capabilities: [chat, generate]}
  - {name: all, upstream: local}`,
    "t",
    {},
  );
  const router = createRouter(config, new Map(config.upstreams.map((u) => [u.name, createUpstream(u)])));

  it("resolves a model to its route", () => {
    const r = router.resolve("chatty", "chat");
    expect(r).toMatchObject({ name: "chatty", version: "7", upstreamModel: "real-name", capabilities: ["chat", "generate"] });
    expect(r.upstream.name).toBe("local");
    expect(router.resolve("all", "predict").capabilities).toEqual(["predict", "chat", "generate"]);
  });

  it("answers NOT_FOUND naming the model and nothing of the config", () => {
    const err = catchErr(() => router.resolve("gpt-9", "chat"));
    expect(err.code).toBe(Code.NotFound);
    expect(err.reason).toBe("MODEL_NOT_FOUND");
    expect(err.message).toContain('"gpt-9"');
    expect(err.message).not.toMatch(/sk-secret|local|chatty/);
  });

  it("answers UNIMPLEMENTED for a capability the model lacks", () => {
    const err = catchErr(() => router.resolve("chatty", "predict"));
    expect(err.code).toBe(Code.Unimplemented);
    expect(err.message).toBe('model "chatty" does not support Predict');
  });

  it("answers INVALID_ARGUMENT for an empty model name", () => {
    const err = catchErr(() => router.resolve("", "chat"));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.metadata).toEqual({ field: "model" });
  });
});

function catchErr(fn: () => unknown): GatewayError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(GatewayError);
    return err as GatewayError;
  }
  throw new Error("expected an error");
}
