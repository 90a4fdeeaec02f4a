import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { type Message, MessageSchema, Role, type ToolCall, ToolCallSchema } from "../../gen/infergate/v1/chat_pb.js";
import type { GenerateResponse } from "../../gen/infergate/v1/inference_service_pb.js";
import { GatewayError, invalidArgument, Reason } from "../core/gateway-error.js";
import type { ChatInput } from "../core/upstream.js";
import type { SessionStore } from "./session-store.js";

/** A session id: what goes into logs and store keys, so short and printable. */
const sessionIdPattern = /^[\x21-\x7e]{1,128}$/;

/** One call's turn in a session. */
export interface SessionTurn<R extends ChatInput> {
  /**
   * The request as it goes on: the session's history, then the caller's messages; `session_id`
   * cleared, so that an upstream infergate does not prepend a history of its own.
   */
  readonly request: R;
  /**
   * Records the turn once the call has succeeded: the caller's messages, then the answer.
   * Throws (UNAVAILABLE) when the store fails; the turn is then not recorded.
   */
  commit(answer: Message | undefined): Promise<void>;
}

/**
 * Conversation sessions (ChatRequest.session_id) over a SessionStore: the gateway opens a turn
 * before routing and caching — so the cache key covers the full conversation — and commits it
 * only when the call succeeded (Chat: the answer returned; Generate: the final event arrived).
 * Failed, cut-off and cancelled calls leave the session as it was.
 */
export class Sessions {
  /**
   * @param store where the histories live; public so that what keeps conversations of its own on
   *   the same store, with the same TTL and bounds, can reach it (the Responses API's stored
   *   responses: src/ingress/responses/response-store.ts).
   */
  constructor(readonly store: SessionStore) {}

  /** The turn of a call that names a session; undefined when it names none. */
  async open<R extends ChatInput>(req: R, tenant: string): Promise<SessionTurn<R> | undefined> {
    if (req.sessionId === "") return undefined;
    const id = checkedId(req.sessionId);
    const history = (await this.store.load(tenant, id)).map((b) => fromBinary(MessageSchema, b));
    // Bounds drop the oldest messages; a tool result whose call was dropped would be refused by
    // upstreams, so a history never starts with one.
    while (history[0]?.role === Role.TOOL) history.shift();
    const request = { ...req, messages: [...history, ...req.messages], sessionId: "" };
    return {
      request,
      commit: (answer) => {
        const turn = [...req.messages, ...(answer === undefined || isEmpty(answer) ? [] : [answer])];
        return this.store.append(tenant, id, turn.map((m) => toBinary(MessageSchema, m)));
      },
    };
  }

  /** DeleteSession: NOT_FOUND unless the caller's tenant has this session. */
  async delete(tenant: string, sessionId: string): Promise<void> {
    const id = checkedId(sessionId);
    if (!(await this.store.delete(tenant, id))) {
      throw new GatewayError(Code.NotFound, "no such session (it may have expired)", { reason: Reason.SessionNotFound });
    }
  }
}

function checkedId(id: string): string {
  if (!sessionIdPattern.test(id)) throw invalidArgument("session_id", "must be 1-128 printable ASCII characters without spaces");
  return id;
}

function isEmpty(m: Message): boolean {
  return m.content.length === 0 && m.toolCalls.length === 0;
}

/**
 * Builds the assistant message of a Generate stream from its events: the text deltas joined, the
 * tool-call deltas joined by index (id and name from the first, arguments appended).
 */
export class AnswerAssembler {
  private text = "";
  private readonly calls = new Map<number, ToolCall>();

  add(event: GenerateResponse): void {
    const e = event.event;
    if (e.case === "textDelta") {
      this.text += e.value;
    } else if (e.case === "toolCallDelta") {
      let c = this.calls.get(e.value.index);
      if (c === undefined) {
        c = create(ToolCallSchema, {});
        this.calls.set(e.value.index, c);
      }
      if (e.value.id !== "") c.id = e.value.id;
      if (e.value.name !== "") c.name = e.value.name;
      c.arguments += e.value.arguments;
    }
  }

  message(): Message {
    return create(MessageSchema, {
      role: Role.ASSISTANT,
      content: this.text === "" ? [] : [{ part: { case: "text", value: this.text } }],
      toolCalls: [...this.calls.entries()].sort(([a], [b]) => a - b).map(([, c]) => c),
    });
  }
}
