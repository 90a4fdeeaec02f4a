/**
 * Issue 17, defect 1: the one cut of caller values echoed into errors (src/core/gateway-error.ts)
 * and the bounds of a rendered error (src/server/error-rendering.ts).
 */
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { echoed, GatewayError, invalidArgument, maxEchoedChars, maxErrorMessageChars } from "../../src/core/gateway-error.js";
import { toConnectError, toServiceError } from "../../src/server/error-rendering.js";

describe("echoed", () => {
  it("keeps a short value and cuts a long one to 200 characters, its length said", () => {
    expect(echoed("mock-chat")).toBe("mock-chat");
    expect(echoed("x".repeat(200))).toBe("x".repeat(200));
    const cut = echoed("x".repeat(40_000));
    expect(cut).toBe(`${"x".repeat(200 - "… (40000 chars)".length)}… (40000 chars)`);
    expect(cut.length).toBe(maxEchoedChars);
    // Cut once, it is not cut again.
    expect(echoed(cut)).toBe(cut);
  });

  it("never splits a surrogate pair", () => {
    const cut = echoed("😀".repeat(1000));
    expect(cut.length).toBeLessThanOrEqual(maxEchoedChars);
    expect(cut).not.toMatch(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])/);
    expect(cut).toMatch(/^(😀)+… \(2000 chars\)$/);
  });
});

describe("GatewayError bounds what a call site echoes", () => {
  it("cuts the message and every metadata value, whatever the call site wrote", () => {
    const big = "m".repeat(100_000);
    const e = new GatewayError(Code.NotFound, `model "${big}" is not served`, { metadata: { model: big, rpc: "Chat" } });
    expect(e.message.length).toBe(maxErrorMessageChars);
    expect(e.metadata["model"]!.length).toBe(maxEchoedChars);
    expect(e.metadata["rpc"]).toBe("Chat");
  });

  it("cuts a field path holding a caller's key", () => {
    const e = invalidArgument(`metadata["${"k".repeat(50_000)}"]`, "not a whole number");
    expect(e.metadata["field"]!.length).toBe(maxEchoedChars);
    expect(e.message.length).toBeLessThan(maxEchoedChars + 40);
  });
});

describe("a rendered error is bounded in bytes", () => {
  // Multi-byte text: 1,024 characters of it are 3 KiB of UTF-8 (and 9 KiB percent-encoded).
  const wide = "é".repeat(100_000);
  const err = new GatewayError(Code.InvalidArgument, wide, {
    metadata: Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`k${i}`, wide])),
    reason: "R".repeat(10_000),
  });

  it("on gRPC: message at most 1 KiB, details at most 3 KiB", () => {
    const s = toServiceError(err);
    expect(Buffer.byteLength(s.details!)).toBeLessThanOrEqual(1024);
    const bin = s.metadata!.get("grpc-status-details-bin")[0] as Buffer;
    expect(bin.length).toBeLessThan(3 * 1024);
  });

  it("on Connect: message at most 1 KiB, ErrorInfo metadata at most 1 KiB", () => {
    const c = toConnectError(err);
    expect(Buffer.byteLength(c.rawMessage)).toBeLessThanOrEqual(1024);
    const info = c.findDetails(ErrorInfoSchema)[0]!;
    const size = Object.entries(info.metadata).reduce((n, [k, v]) => n + 8 + Buffer.byteLength(k) + Buffer.byteLength(v), 0);
    expect(size).toBeLessThanOrEqual(1024);
    expect(Object.keys(info.metadata)[0]).toBe("k0");
    expect(info.reason.length).toBeLessThanOrEqual(128);
  });
});
