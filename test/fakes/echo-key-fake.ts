/**
 * A fake OpenAI-compatible upstream that echoes the credential it received, for the redaction
 * test: the worst case of a real provider, whose error messages quote the key ("Incorrect API key
 * provided: sk-…"). The OpenAI fake's `unauthorized` scenario sends a fixed, already-masked
 * message, so it cannot show whether infergate leaks what an upstream echoes.
 *
 * ```ts
 * const fake = await createEchoKeyFake();
 * // adapter base URL: fake.baseUrl (= `${fake.url}/v1`)
 * // last user message "echo-401" → 401 echoing the key; any other text → 200 "ok"
 * await fake.close();
 * ```
 *
 * `POST /v1/chat/completions` only (anything else: 404). The last user message's whole text picks
 * the answer:
 * - `echo-<status>` (a status from 400 to 599): that status, the OpenAI error shape, and the
 *   received credential echoed three ways: the bare key (the Bearer token, or the `api-key`
 *   header) in `error.message` as OpenAI words it, the whole Authorization header value after it,
 *   and the key again in `error.param` and in an `x-echo-authorization` response header. Same
 *   answer for `stream: true`.
 * - anything else: 200 with one completion "ok" (JSON, or an event stream with one content chunk,
 *   a finish chunk and `[DONE]` when `stream: true`).
 */
import { createServer, type IncomingHttpHeaders } from "node:http";
import type { AddressInfo } from "node:net";

/** One request the fake received. */
export interface EchoKeyRequest {
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  /** The last user message's text. */
  readonly lastUserText: string;
  /** The status answered. */
  readonly status: number;
  /** The body answered. */
  readonly responseBody: string;
}

export interface EchoKeyFake {
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  /** `${url}/v1`: the endpoint of an `openai` upstream. */
  readonly baseUrl: string;
  readonly requests: readonly EchoKeyRequest[];
  close(): Promise<void>;
}

/** Starts the fake on 127.0.0.1 with a free port. */
export async function createEchoKeyFake(): Promise<EchoKeyFake> {
  const requests: EchoKeyRequest[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const path = (req.url ?? "/").split("?")[0] ?? "/";
      let body: { stream?: unknown; messages?: { role?: unknown; content?: unknown }[] } = {};
      try {
        body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as typeof body;
      } catch {
        // answered below as a 200 "ok" to an empty conversation
      }
      const lastUser = [...(Array.isArray(body.messages) ? body.messages : [])].reverse().find((m) => m?.role === "user");
      const lastUserText = textOf(lastUser?.content);
      const authorization = req.headers["authorization"] ?? "";
      const apiKeyHeader = req.headers["api-key"];
      const key = typeof apiKeyHeader === "string" ? apiKeyHeader : authorization.replace(/^Bearer\s+/i, "");
      const send = (status: number, contentType: string, text: string, headers: Record<string, string> = {}): void => {
        requests.push({ path, headers: req.headers, lastUserText, status, responseBody: text });
        res.writeHead(status, { ...headers, "content-type": contentType, "content-length": String(Buffer.byteLength(text)) });
        res.end(text);
      };
      if (req.method !== "POST" || path !== "/v1/chat/completions") {
        send(404, "application/json", JSON.stringify({ error: { message: `Invalid URL (${req.method} ${path})`, type: "invalid_request_error", param: null, code: null } }));
        return;
      }
      const echo = /^echo-(\d{3})$/.exec(lastUserText.trim());
      const status = echo === null ? 0 : Number(echo[1]);
      if (status >= 400 && status <= 599) {
        const error = {
          message: `Incorrect API key provided: ${key}. The request carried Authorization: ${authorization}.`,
          type: status === 401 ? "invalid_request_error" : "echo_error",
          param: key,
          code: status === 401 ? "invalid_api_key" : null,
        };
        send(status, "application/json", JSON.stringify({ error }), { "x-echo-authorization": authorization });
        return;
      }
      if (body.stream === true) {
        const chunk = (delta: object, finish: string | null) =>
          `data: ${JSON.stringify({ id: "chatcmpl-echo", object: "chat.completion.chunk", created: 0, model: "echo", choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;
        send(200, "text/event-stream", `${chunk({ role: "assistant", content: "ok" }, null)}${chunk({}, "stop")}data: [DONE]\n\n`);
        return;
      }
      send(
        200,
        "application/json",
        JSON.stringify({
          id: "chatcmpl-echo",
          object: "chat.completion",
          created: 0,
          model: "echo",
          choices: [{ index: 0, message: { role: "assistant", content: "ok" }, finish_reason: "stop" }],
          usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
        }),
      );
    });
  });
  server.keepAliveTimeout = 1000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    baseUrl: `${url}/v1`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** The text of a Chat Completions message content: a string, or the text of its text parts. */
function textOf(content: unknown): string {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) return "";
  return content
    .flatMap((p: unknown) => (typeof p === "object" && p !== null && (p as { type?: unknown }).type === "text" ? [String((p as { text?: unknown }).text)] : []))
    .join("\n");
}
