/**
 * What every fault scenario needs: infergate started in this process from a YAML config (real
 * ports), a grpc-js client that shares no code with the server, and readers for what the client
 * saw — the status code, the ErrorInfo reason and metadata, the RetryInfo delay, and the
 * response headers.
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import type { App } from "../../../src/server/app.js";
import { errorInfoOf, inferenceClient, loaderOptions, type ProtoClient, statusDetails } from "../../helpers/proto-clients.js";
import { startInProcess } from "../../helpers/servers.js";
import { afterEach } from "vitest";
import { type ScriptedUpstream, startScriptedUpstream } from "./scripted-upstream.js";

/** infergate and a client of it. */
export interface Gateway {
  readonly app: App;
  readonly client: ProtoClient;
  close(): Promise<void>;
}

/** Starts infergate with `yaml` and connects a grpc-js client to its gRPC listener. */
export async function startGateway(yaml: string): Promise<Gateway> {
  const app = await startInProcess(yaml);
  const client = inferenceClient(app.grpcAddress);
  return {
    app,
    client,
    async close() {
      client.close();
      await app.shutdown();
    },
  };
}

/** What a client learns from an error status. */
export interface SeenError {
  code: grpc.status;
  message: string;
  reason: string | undefined;
  metadata: Record<string, string>;
  /** The RetryInfo delay in milliseconds, when there is one. */
  retryAfterMs: number | undefined;
}

/** Decodes the status of a failed call. */
export function seen(err: grpc.ServiceError): SeenError {
  const status = statusDetails(err);
  const info = errorInfoOf(status) as { reason?: string; metadata?: Record<string, string> } | undefined;
  const retry = status.details.find((d) => d.type_url === "type.googleapis.com/google.rpc.RetryInfo")?.message as
    | { retry_delay?: { seconds: string; nanos: number } }
    | undefined;
  const delay = retry?.retry_delay;
  return {
    code: err.code,
    message: err.details,
    reason: info?.reason,
    metadata: info?.metadata ?? {},
    retryAfterMs: delay === undefined ? undefined : Number(delay.seconds) * 1000 + Math.round(delay.nanos / 1e6),
  };
}

/** Awaits a call that must fail and decodes its status. */
export async function failure(call: Promise<unknown>): Promise<SeenError> {
  try {
    await call;
  } catch (err) {
    if (err instanceof Error && typeof (err as Partial<grpc.ServiceError>).code === "number") {
      return seen(err as grpc.ServiceError);
    }
    throw err;
  }
  throw new Error("the call succeeded; an error status was expected");
}

/**
 * A Chat/Generate request in proto-loader's JSON form. `temperature: 0` makes it cacheable under
 * the default policy, so that "nothing was cached" is a real check.
 */
export function chatRequest(model: string, text = "hello", extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { model, messages: [{ role: "ROLE_USER", content: [{ text }] }], temperature: 0, ...extra };
}

/** The text deltas of a Generate result, in order. */
export function deltas(events: readonly Record<string, unknown>[]): string[] {
  return events.flatMap((e) => (typeof e["text_delta"] === "string" && e["event"] === "text_delta" ? [e["text_delta"]] : []));
}

/** A unary call that also returns the response headers (the ProtoClient helper drops them). */
export function unaryWithHeaders<Res>(
  client: ProtoClient,
  method: string,
  request: object,
  timeoutMs = 10_000,
): Promise<{ response: Res; headers: Record<string, string> }> {
  service ??= protoLoader.loadSync("infergate/v1/inference_service.proto", loaderOptions)["infergate.v1.InferenceService"] as protoLoader.ServiceDefinition;
  const m = service[method]!;
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {};
    const call = client.client.makeUnaryRequest<object, Res>(
      m.path,
      m.requestSerialize as (v: object) => Buffer,
      m.responseDeserialize as (b: Buffer) => Res,
      request,
      new grpc.Metadata(),
      { deadline: Date.now() + timeoutMs },
      (err, res) => (err !== null ? reject(err) : resolve({ response: res as Res, headers })),
    );
    call.on("metadata", (md: grpc.Metadata) => {
      for (const [k, v] of Object.entries(md.getMap())) headers[k] = String(v);
    });
  });
}

let service: protoLoader.ServiceDefinition | undefined;

/** Records the response headers of a call (a stream's arrive with its first message). */
export function headersOf(call: grpc.ClientReadableStream<unknown>): Record<string, string> {
  const headers: Record<string, string> = {};
  call.on("metadata", (md: grpc.Metadata) => {
    for (const [k, v] of Object.entries(md.getMap())) headers[k] = String(v);
  });
  return headers;
}

/** Resolves after `ms`. */
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * For a test file: what its tests start is closed after each test, newest first. `later` takes
 * any closer; `gateway` and `scripted` start infergate and a scripted upstream and register them.
 */
export function closedAfterEach() {
  const closers: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of closers.splice(0).reverse()) await c();
  });
  return {
    later(close: () => Promise<void>): void {
      closers.push(close);
    },
    async gateway(yaml: string): Promise<Gateway> {
      const g = await startGateway(yaml);
      closers.push(() => g.close());
      return g;
    },
    async scripted(...args: Parameters<typeof startScriptedUpstream>): Promise<ScriptedUpstream> {
      const u = await startScriptedUpstream(...args);
      closers.push(() => u.close());
      return u;
    },
  };
}
