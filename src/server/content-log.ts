import type { AsyncLocalStorage } from "node:async_hooks";
import { Role } from "../../gen/infergate/v1/chat_pb.js";
import type { ChatRequest, ChatResponse } from "../../gen/infergate/v1/inference_service_pb.js";
import { echoed } from "../core/gateway-error.js";
import type { Interceptor } from "../gateway/gateway.js";
import type { Logger } from "../observability/logger.js";
import type { PendingLine } from "./call-recorder.js";

/** Longest prompt or completion text written to a log line. */
const maxLoggedText = 8192;

/**
 * `server.logContent` (debug only: prompts and answers may hold personal data), a step the app
 * gives the gateway outside its call record: the Chat call's log line gains `prompt` (the last
 * user message's text) and `completion` (the answer's text). The call record reports a call
 * before its answer reaches the listener, so the recorder parks the line in the call's async
 * context (src/server/call-recorder.ts) and this step writes it once the answer is known. Given to
 * the gateway only when the option is on: the default path has no step of it.
 */
export function contentLogStep(lines: AsyncLocalStorage<PendingLine>, log: Logger): Interceptor {
  return {
    name: "content log",
    unary: {
      Chat: (next) => (call) => {
        // The caller's request, before a session's history goes in front of it.
        const req = call.request;
        const pending: PendingLine = {};
        const write = (res: ChatResponse | undefined) => {
          if (pending.line === undefined) return;
          const completion = res === undefined ? undefined : cut(textOf(res.message?.content ?? []));
          log.info({ ...pending.line, prompt: cut(lastUserText(req)), completion }, "call");
        };
        return lines.run(pending, () => next(call)).then(
          (res) => {
            write(res);
            return res;
          },
          (err: unknown) => {
            write(undefined);
            throw err;
          },
        );
      },
    },
  };
}

function lastUserText(req: ChatRequest): string {
  return textOf(req.messages.findLast((m) => m.role === Role.USER)?.content ?? []);
}

function textOf(parts: ChatRequest["messages"][number]["content"]): string {
  return parts.flatMap((p) => (p.part.case === "text" ? [p.part.value] : [])).join("\n");
}

function cut(text: string): string {
  return echoed(text, maxLoggedText);
}
