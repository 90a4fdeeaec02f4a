/**
 * The mock model counts and cuts words without an array or an event per word (a 3 MB prompt has a
 * million words; issue 17, defect 3): its answers are still those of the words as the regular
 * expression /\s*\S+/g splits them — Chat's text and usage, and Generate's deltas — whatever the
 * white space (Unicode spaces included) and with max_tokens cutting.
 */
import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { Role } from "../../gen/infergate/v1/chat_pb.js";
import { ChatRequestSchema, type GenerateResponse } from "../../gen/infergate/v1/inference_service_pb.js";
import { createMockUpstream, mockOptionsSchema } from "../../src/upstreams/mock/mock-upstream.js";
import type { ChatInput, UpstreamCall } from "../../src/core/upstream.js";

const mock = createMockUpstream({ name: "mock" }, mockOptionsSchema.parse({}));
const call = (request: ChatInput): UpstreamCall<ChatInput> =>
  ({ request, upstreamModel: "m", modelOptions: {}, signal: new AbortController().signal, deadline: Date.now() + 10_000, headers: {} }) as unknown as UpstreamCall<ChatInput>;
const words = (s: string) => s.match(/\s*\S+/g) ?? [];

describe("the mock model's words", () => {
  const texts = ["hello  big\tworld \n", "\u00a0lead\u3000ing\u2028spa\u200bces\ufeff end ", " ", "one", "x\u2003\u2003y\u0085z"];

  it.each(texts.flatMap((t) => [[t, undefined], [t, 2]] as const))("%j with max_tokens %s", async (text, maxTokens) => {
    const req = create(ChatRequestSchema, {
      model: "m",
      messages: [{ role: Role.USER, content: [{ part: { case: "text", value: text } }, { part: { case: "text", value: text } }] }],
      ...(maxTokens === undefined ? {} : { maxTokens }),
    });
    const reply = words(`You said: ${text} ${text}`);
    const kept = maxTokens === undefined ? reply : reply.slice(0, maxTokens);
    const answer = await mock.chat!(call(req));
    const content = answer.message?.content[0]?.part;
    expect(content?.case === "text" ? content.value : "").toBe(kept.join(""));
    expect(answer.usage).toMatchObject({ promptTokens: 2 * words(text).length, completionTokens: kept.length });
    const events: GenerateResponse[] = [];
    for await (const e of mock.generate!(call(req))) events.push(e);
    expect(events.slice(0, -1).map((e) => (e.event.case === "textDelta" ? e.event.value : "?"))).toEqual(kept);
  });
});
