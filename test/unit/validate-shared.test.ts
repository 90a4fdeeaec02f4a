/**
 * validateChatInput on requests the gRPC listener shares between calls (decodeKeyedRequest): a
 * valid one is checked once, an invalid one fails every time with the field at fault, and an
 * unshared (mutable) request is checked on every call.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { Role } from "../../gen/infergate/v1/chat_pb.js";
import { type ChatRequest, ChatRequestSchema } from "../../gen/infergate/v1/inference_service_pb.js";
import { decodeKeyedRequest, isSharedRequest } from "../../src/wire/fast-paths.js";
import { GatewayError } from "../../src/core/gateway-error.js";
import { validateChatInput } from "../../src/gateway/validate-request.js";

const bytes = (init: Parameters<typeof create<typeof ChatRequestSchema>>[1]) => Buffer.from(toBinary(ChatRequestSchema, create(ChatRequestSchema, init)));
const userText = (text: string) => [{ role: Role.USER, content: [{ part: { case: "text" as const, value: text } }] }];

describe("validateChatInput and shared requests", () => {
  it("passes a valid shared request every time", () => {
    const req = decodeKeyedRequest(ChatRequestSchema, bytes({ model: "m", messages: userText("valid shared") })) as ChatRequest;
    expect(isSharedRequest(req)).toBe(true);
    for (let i = 0; i < 3; i++) expect(() => validateChatInput(req)).not.toThrow();
  });

  it("fails an invalid shared request every time, naming the field", () => {
    const req = decodeKeyedRequest(ChatRequestSchema, bytes({ model: "m", messages: userText("bad temperature"), temperature: 3 })) as ChatRequest;
    for (let i = 0; i < 3; i++) {
      let err: unknown;
      try {
        validateChatInput(req);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(GatewayError);
      expect((err as GatewayError).metadata).toMatchObject({ field: "temperature" });
    }
  });

  it("checks a request that is not shared on every call: a change after a pass is caught", () => {
    const req = create(ChatRequestSchema, { model: "m", messages: userText("mutable") });
    expect(isSharedRequest(req)).toBe(false);
    validateChatInput(req);
    req.temperature = 5;
    expect(() => validateChatInput(req)).toThrow(GatewayError);
  });
});
