/**
 * Shared machinery of the upstream fakes (openai-fake.ts, anthropic-fake.ts): a real `node:http`
 * server on 127.0.0.1, a record of every request, scenario selection, and writers that put exact
 * wire bytes on the socket — SSE one event per `res.write` (optionally with a delay between
 * writes), JSON with a Content-Length, and a connection the fake cuts itself.
 *
 * Nothing here knows a provider's wire format; the two fakes bring their fixtures and builders.
 */
import { EventEmitter } from "node:events";
import { readFileSync } from "node:fs";
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { setImmediate as yieldTurn, setTimeout as sleep } from "node:timers/promises";

/** Media types the fakes answer with (what the public APIs send). */
export const SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8";
export const JSON_CONTENT_TYPE = "application/json";

/** The `garbage` scenario's body: HTTP 200, `content-type: text/html`. */
export const GARBAGE_BODY = "<html>oops</html>";
export const GARBAGE_CONTENT_TYPE = "text/html; charset=utf-8";

/** Request header that overrides the per-event delay of one request, in milliseconds. */
export const DELAY_HEADER = "x-fake-delay-ms";

/** Prefix of the last user message's text that selects a scenario: `scenario:<name>`. */
export const SCENARIO_PREFIX = "scenario:";

/** Tunables of a scenario. Every field is optional; see {@link FakeUpstream.setScenario}. */
export interface ScenarioOptions {
  /**
   * Milliseconds between two streamed writes, and before a unary answer (`slow` unary waits
   * `delayMs × tokens`). Defaults: `slow` 100, `crlf` 5, every other scenario 0 (the writes are
   * still separate, one event loop turn apart).
   */
  readonly delayMs?: number;
  /** `slow` only: how many content events it streams (default 40). */
  readonly tokens?: number;
  /**
   * Error scenarios: the `Retry-After` header value to send instead of the scenario's own
   * (`rate-limited` "2", `rate-limited-date` an HTTP-date about 3 s ahead); adds the header to
   * error scenarios that have none.
   */
  readonly retryAfter?: string;
}

/** One HTTP request the fake received, as it arrived, and what became of its response. */
export interface RecordedRequest {
  /** Position in `requests` (0-based). */
  readonly index: number;
  readonly method: string;
  /** The path without the query, e.g. `/v1/chat/completions`. */
  readonly path: string;
  /** The query parameters (the last value of a repeated name wins), e.g. `{ "api-version": "2024-10-21" }`. */
  readonly query: Readonly<Record<string, string>>;
  /** The request target as sent, path and query. */
  readonly url: string;
  /** Request headers, names lower-cased (`authorization`, `api-key`, `x-api-key`, `anthropic-version`, …). */
  readonly headers: IncomingHttpHeaders;
  /** The body as received, decoded as UTF-8. */
  readonly rawBody: string;
  /** The body parsed as JSON; `undefined` when empty or not JSON (the fake then answered 400). */
  readonly body: unknown;
  /** Whether the body asked for a stream (`"stream": true`). */
  readonly stream: boolean;
  /** Azure OpenAI route only: the `{deployment}` of `/openai/deployments/{deployment}/chat/completions`. */
  readonly deployment?: string;
  /** Text of the last `user` message (its text parts joined with "\n"), when there is one. */
  readonly lastUserText?: string;
  /** The scenario that answered; unset when the fake refused the request before choosing one (404, 400). */
  readonly scenario?: string;
  /** The HTTP status the fake answered with, once it wrote the head. */
  readonly status?: number;
  /** `Date.now()` when the request head arrived. */
  readonly receivedAt: number;
  /** `Date.now()` when the fake finished the response normally (called `res.end()`). */
  readonly finishedAt?: number;
  /**
   * `Date.now()` when the fake saw the client abort or close the connection before the response
   * was finished (request cancelled mid-stream, fetch aborted, socket reset). Unset when the
   * response finished, when the fake cut the connection itself, or when the fake was closed.
   */
  readonly abortedAt?: number;
  /** `Date.now()` when the fake cut the connection on purpose (`truncated` unary answers). */
  readonly cutAt?: number;
}

/** The API both fakes share. */
export interface FakeUpstream<S extends string> {
  /** `http://127.0.0.1:<port>`, no trailing slash. */
  readonly url: string;
  /** The base URL a client library expects (OpenAI: `${url}/v1`; Anthropic: `url`). */
  readonly baseUrl: string;
  /** Every request so far, in arrival order (the live array; read it, don't change it). */
  readonly requests: readonly RecordedRequest[];
  /**
   * Answers every following request that does not select a scenario in its message text with
   * `name` (sticky until changed); `null` goes back to the default, `echo`. `options` apply to
   * these answers.
   */
  setScenario(name: S | null, options?: ScenarioOptions): void;
  /**
   * Queues `name` for exactly one following request (first in, first out) that does not select a
   * scenario in its message text; queued scenarios are used before the sticky one. E.g.
   * `enqueueScenario("rate-limited"); enqueueScenario("text")` answers 429 then 200.
   */
  enqueueScenario(name: S, options?: ScenarioOptions): void;
  /** Resolves with `requests[index]` once it has arrived (rejects after `timeoutMs`, default 5000). */
  waitForRequest(index: number, timeoutMs?: number): Promise<RecordedRequest>;
  /**
   * Resolves with `requests[index]` once its response is over — finished, aborted by the client,
   * or cut by the fake (rejects after `timeoutMs`, default 5000). Use it before reading
   * `abortedAt` or `finishedAt`.
   */
  settled(index: number, timeoutMs?: number): Promise<RecordedRequest>;
  /** Forgets the recorded requests, the queue and the sticky scenario. */
  reset(): void;
  /** Stops the server, closing open connections; in-flight streams stop. */
  close(): Promise<void>;
}

/** Options every fake takes at creation. */
export type FakeOptions = ScenarioOptions;

/** What the provider code sees of one exchange. */
export interface Exchange<S extends string> {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  /** The record, writable for the provider (deployment, lastUserText). */
  readonly record: Mutable<RecordedRequest>;
  /** Aborted when the response closes for any reason (finished, client gone, fake closing). */
  readonly signal: AbortSignal;
  /** Chooses the scenario for this request from its message text, the queue, or the sticky one. */
  selectScenario(lastUserText: string | undefined): Selection<S> | { readonly unknown: string };
  /** The delay to use: `x-fake-delay-ms` header, else the selection's options, else `fallback`. */
  delayMs(selection: Selection<S>, fallback: number): number;
  /** Waits `ms` (at least one event-loop turn); false when the response closed meanwhile. */
  pause(ms: number): Promise<boolean>;
  /** Sends a whole body with Content-Length. */
  send(status: number, contentType: string, body: string, headers?: Record<string, string>): void;
  /**
   * Streams `pieces` with one `res.write` each and `delayMs` between writes, as `text/event-stream`,
   * then ends the response (a clean end of the chunked body). Stops if the client goes away.
   */
  stream(pieces: readonly string[], delayMs: number, headers?: Record<string, string>): Promise<void>;
  /** Sends the head with the Content-Length of `body`, writes its first half, then destroys the socket. */
  cut(status: number, contentType: string, body: string): void;
}

/** A chosen scenario with the options that apply to it. */
export interface Selection<S extends string> {
  readonly name: S;
  readonly options: ScenarioOptions;
  /** How it was chosen. */
  readonly via: "message" | "queue" | "sticky" | "default";
}

export type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** What a provider fake gives the shared server. */
export interface FakeSpec<S extends string> {
  readonly scenarios: readonly S[];
  readonly defaultScenario: S;
  /** Appended to the server's URL to form `baseUrl`. */
  readonly baseUrlSuffix: string;
  readonly options: FakeOptions;
  /** Headers the provider sends on every answer (e.g. a request id). */
  commonHeaders(record: RecordedRequest): Record<string, string>;
  handle(ex: Exchange<S>): Promise<void>;
}

/** Starts a fake on 127.0.0.1, port 0. */
export async function startFake<S extends string>(spec: FakeSpec<S>): Promise<FakeUpstream<S>> {
  const requests: Mutable<RecordedRequest>[] = [];
  const settledPromises = new Map<number, Promise<void>>();
  const arrivals = new EventEmitter();
  arrivals.setMaxListeners(0);
  const queue: { name: S; options: ScenarioOptions }[] = [];
  let sticky: { name: S; options: ScenarioOptions } | undefined;
  let closing = false;
  let generation = 0;

  const checkName = (name: string): void => {
    if (!(spec.scenarios as readonly string[]).includes(name)) {
      throw new Error(`unknown fake scenario ${JSON.stringify(name)}; known: ${spec.scenarios.join(", ")}`);
    }
  };

  const server = createServer((req, res) => {
    const receivedAt = Date.now();
    const url = new URL(req.url ?? "/", "http://fake.invalid");
    const record: Mutable<RecordedRequest> = {
      index: requests.length,
      method: req.method ?? "",
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      url: req.url ?? "",
      headers: req.headers,
      rawBody: "",
      body: undefined,
      stream: false,
      receivedAt,
    };
    const myGeneration = generation;
    requests.push(record);
    const controller = new AbortController();
    let cutByFake = false;
    settledPromises.set(
      record.index,
      new Promise<void>((resolve) => {
        res.once("close", () => {
          if (!res.writableEnded && !cutByFake && !closing) {
            record.abortedAt = Date.now();
          }
          controller.abort();
          resolve();
        });
      }),
    );
    res.once("finish", () => {
      record.finishedAt = Date.now();
    });
    arrivals.emit("request", record.index);

    const common = (): Record<string, string> => spec.commonHeaders(record);

    const ex: Exchange<S> = {
      req,
      res,
      record,
      signal: controller.signal,
      selectScenario(lastUserText) {
        let selection: Selection<S> | { unknown: string };
        const fromText = parseScenarioText(lastUserText);
        if (fromText !== undefined) {
          if ((spec.scenarios as readonly string[]).includes(fromText.name)) {
            selection = { name: fromText.name as S, options: { ...spec.options, ...fromText.options }, via: "message" };
          } else {
            return { unknown: fromText.name };
          }
        } else if (generation === myGeneration && queue.length > 0) {
          const next = queue.shift()!;
          selection = { name: next.name, options: { ...spec.options, ...next.options }, via: "queue" };
        } else if (sticky !== undefined) {
          selection = { name: sticky.name, options: { ...spec.options, ...sticky.options }, via: "sticky" };
        } else {
          selection = { name: spec.defaultScenario, options: { ...spec.options }, via: "default" };
        }
        record.scenario = selection.name;
        return selection;
      },
      delayMs(selection, fallback) {
        const header = req.headers[DELAY_HEADER];
        const fromHeader = typeof header === "string" && header.trim() !== "" ? Number(header) : NaN;
        if (Number.isFinite(fromHeader) && fromHeader >= 0) {
          return fromHeader;
        }
        return selection.options.delayMs ?? fallback;
      },
      async pause(ms) {
        if (controller.signal.aborted) {
          return false;
        }
        try {
          if (ms > 0) {
            await sleep(ms, undefined, { signal: controller.signal });
          } else {
            await yieldTurn(undefined, { signal: controller.signal });
          }
        } catch {
          return false;
        }
        return !controller.signal.aborted;
      },
      send(status, contentType, body, headers = {}) {
        if (res.destroyed) {
          return;
        }
        record.status = status;
        res.writeHead(status, {
          ...common(),
          ...headers,
          "content-type": contentType,
          "content-length": String(Buffer.byteLength(body)),
        });
        res.end(body);
      },
      async stream(pieces, delayMs, headers = {}) {
        if (res.destroyed) {
          return;
        }
        record.status = 200;
        res.writeHead(200, {
          ...common(),
          ...headers,
          "content-type": SSE_CONTENT_TYPE,
          "cache-control": "no-cache",
          connection: "keep-alive",
        });
        res.flushHeaders();
        let first = true;
        for (const piece of pieces) {
          if (!first && !(await ex.pause(delayMs))) {
            return;
          }
          first = false;
          if (res.destroyed) {
            return;
          }
          res.write(piece);
        }
        if (!res.destroyed) {
          res.end();
        }
      },
      cut(status, contentType, body) {
        if (res.destroyed) {
          return;
        }
        const bytes = Buffer.from(body);
        record.status = status;
        res.writeHead(status, {
          ...common(),
          "content-type": contentType,
          "content-length": String(bytes.length),
        });
        res.write(bytes.subarray(0, Math.floor(bytes.length / 2)), () => {
          cutByFake = true;
          record.cutAt = Date.now();
          res.destroy();
        });
      },
    };

    void (async () => {
      try {
        const chunks: Buffer[] = [];
        for await (const chunk of req) {
          chunks.push(chunk as Buffer);
        }
        record.rawBody = Buffer.concat(chunks).toString("utf8");
        if (record.rawBody !== "") {
          try {
            record.body = JSON.parse(record.rawBody) as unknown;
          } catch {
            record.body = undefined;
          }
        }
        record.stream = isObject(record.body) && record.body["stream"] === true;
      } catch {
        return; // the client went away while sending the body; "close" records it
      }
      try {
        await spec.handle(ex);
      } catch (err) {
        if (!res.headersSent && !res.destroyed) {
          ex.send(500, "text/plain; charset=utf-8", `fake upstream failed: ${String(err)}`);
        } else {
          res.destroy();
        }
      }
    })();
  });

  server.keepAliveTimeout = 1000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}`;

  const withTimeout = <T>(p: Promise<T>, ms: number, what: string): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`fake upstream: timed out after ${ms} ms waiting for ${what}`)), ms);
      p.then(
        (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        (e: unknown) => {
          clearTimeout(timer);
          reject(e instanceof Error ? e : new Error(String(e)));
        },
      );
    });

  const arrived = (index: number): Promise<RecordedRequest> => {
    const have = requests[index];
    if (have !== undefined) {
      return Promise.resolve(have);
    }
    return new Promise<RecordedRequest>((resolve) => {
      const onRequest = (i: number): void => {
        const rec = requests[index];
        if (i >= index && rec !== undefined) {
          arrivals.off("request", onRequest);
          resolve(rec);
        }
      };
      arrivals.on("request", onRequest);
    });
  };

  return {
    url,
    baseUrl: `${url}${spec.baseUrlSuffix}`,
    requests,
    setScenario(name, options = {}) {
      if (name === null) {
        sticky = undefined;
        return;
      }
      checkName(name);
      sticky = { name, options };
    },
    enqueueScenario(name, options = {}) {
      checkName(name);
      queue.push({ name, options });
    },
    waitForRequest(index, timeoutMs = 5000) {
      return withTimeout(arrived(index), timeoutMs, `request #${index}`);
    },
    settled(index, timeoutMs = 5000) {
      const done = arrived(index).then(async (rec) => {
        await settledPromises.get(rec.index);
        return rec;
      });
      return withTimeout(done, timeoutMs, `the response to request #${index}`);
    },
    reset() {
      requests.length = 0;
      settledPromises.clear();
      queue.length = 0;
      sticky = undefined;
      generation++;
    },
    async close() {
      closing = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
  };
}

/**
 * Reads `scenario:<name>` or `scenario:<name>?delayMs=20&tokens=5&retryAfter=7` (the whole
 * trimmed text; nothing else in it).
 */
export function parseScenarioText(text: string | undefined): { name: string; options: ScenarioOptions } | undefined {
  const m = /^scenario:([a-z0-9-]+)(?:\?(\S*))?$/i.exec(text?.trim() ?? "");
  if (m === null) {
    return undefined;
  }
  const params = new URLSearchParams(m[2] ?? "");
  const num = (k: string): number | undefined => {
    const v = params.get(k);
    return v !== null && v !== "" && Number.isFinite(Number(v)) ? Number(v) : undefined;
  };
  const options: { delayMs?: number; tokens?: number; retryAfter?: string } = {};
  const delayMs = num("delayMs");
  const tokens = num("tokens");
  const retryAfter = params.get("retryAfter");
  if (delayMs !== undefined) options.delayMs = delayMs;
  if (tokens !== undefined) options.tokens = tokens;
  if (retryAfter !== null) options.retryAfter = retryAfter;
  return { name: m[1]!, options };
}

const fixtureCache = new Map<string, string>();

/** The exact bytes of `test/fixtures/<provider>/<file>` (decoded as UTF-8; the fixtures are ASCII). */
export function loadFixture(provider: "openai" | "anthropic", file: string): string {
  const key = `${provider}/${file}`;
  let text = fixtureCache.get(key);
  if (text === undefined) {
    text = readFileSync(new URL(`../fixtures/${key}`, import.meta.url), "utf8");
    fixtureCache.set(key, text);
  }
  return text;
}

/**
 * Splits an SSE body into its events, each with its blank-line terminator; concatenating the
 * result gives the input back byte for byte.
 */
export function splitSseEvents(body: string): string[] {
  const events = body.match(/[^]*?(?:\r\n\r\n|\n\n|\r\r)/g) ?? [];
  const rest = body.slice(events.join("").length);
  return rest === "" ? events : [...events, rest];
}

/**
 * Splits after every CR, so a CRLF pair straddles two writes (the `\n` starts the next one) —
 * the case that breaks SSE parsers which treat a trailing CR as a whole line ending.
 */
export function splitAfterCr(body: string): string[] {
  return body.split(/(?<=\r)/);
}

/** Splits text into word pieces ("Hello ", "there") whose concatenation is the text. */
export function wordPieces(text: string): string[] {
  return text.match(/\s*\S+\s*/g) ?? (text === "" ? [] : [text]);
}

export function countWords(text: string): number {
  return text.split(/\s+/).filter((w) => w !== "").length;
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** How the fixture-served scenarios behave. */
export type FixtureRule =
  /** SSE fixture for `stream: true`, JSON fixture (or a cut JSON fixture) otherwise. */
  | { readonly kind: "sse"; readonly stream: string; readonly unary: string; readonly cutUnary?: boolean; readonly crlfSplit?: boolean; readonly delayMs?: number }
  /** SSE fixture whatever the request asked for. */
  | { readonly kind: "sse-always"; readonly stream: string }
  /** An error status with a JSON fixture body. */
  | { readonly kind: "error"; readonly status: number; readonly file: string; readonly retryAfter?: "2s" | "date" }
  /** A fixed body that is not a fixture file. */
  | { readonly kind: "raw"; readonly status: number; readonly contentType: string; readonly body: string };

/** Serves a scenario described by a {@link FixtureRule}. */
export async function serveFixture<S extends string>(
  ex: Exchange<S>,
  provider: "openai" | "anthropic",
  selection: Selection<S>,
  rule: FixtureRule,
): Promise<void> {
  const streamed = rule.kind === "sse-always" || (rule.kind === "sse" && ex.record.stream);
  const delay = ex.delayMs(selection, rule.kind === "sse" ? (rule.delayMs ?? 0) : 0);
  if (streamed) {
    const body = loadFixture(provider, rule.stream);
    const pieces = rule.kind === "sse" && rule.crlfSplit === true ? splitAfterCr(body) : splitSseEvents(body);
    await ex.stream(pieces, delay);
    return;
  }
  if (!(await ex.pause(delay))) {
    return;
  }
  switch (rule.kind) {
    case "sse":
      if (rule.cutUnary === true) {
        ex.cut(200, JSON_CONTENT_TYPE, loadFixture(provider, rule.unary));
      } else {
        ex.send(200, JSON_CONTENT_TYPE, loadFixture(provider, rule.unary));
      }
      return;
    case "error": {
      const headers: Record<string, string> = {};
      const retryAfter =
        selection.options.retryAfter ??
        (rule.retryAfter === "2s" ? "2" : rule.retryAfter === "date" ? new Date(Date.now() + 3000).toUTCString() : undefined);
      if (retryAfter !== undefined) {
        headers["retry-after"] = retryAfter;
      }
      ex.send(rule.status, JSON_CONTENT_TYPE, loadFixture(provider, rule.file), headers);
      return;
    }
    case "raw":
      ex.send(rule.status, rule.contentType, rule.body);
      return;
  }
}
