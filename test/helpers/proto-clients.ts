/**
 * Clients for end-to-end tests that share no code with the server: grpc-js with message types
 * loaded at run time from proto/ by @grpc/proto-loader (and protobufjs, which proto-loader is built
 * on, for decoding `grpc-status-details-bin`), and the real `buf curl` command.
 *
 * Messages are plain objects as proto-loader renders them: field names as in the .proto files
 * (snake_case), 64-bit integers and enums as strings, defaults filled in, and the name of the set
 * member of each oneof under the oneof's own name.
 */
import { execFile } from "node:child_process";
import { EventEmitter } from "node:events";
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";
import { repoRoot } from "./servers.js";

/** The proto/ directory of the repository: the include path for every proto file. */
export const protoDir = path.join(repoRoot, "proto");

/** The loader options every client here uses. */
export const loaderOptions: protoLoader.Options = {
  includeDirs: [protoDir],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** Options of one call. */
export interface CallOpts {
  /** The call's deadline, in milliseconds from now (every call has one). Default 10 s. */
  timeoutMs?: number;
  /** gRPC request headers. */
  headers?: Record<string, string>;
}

/** The end of a server-streaming call. */
export interface StreamResult<Res> {
  /** Every message received, in order. */
  events: Res[];
  /** The call's status (OK or not). */
  status: grpc.StatusObject;
  /** The error the stream emitted, when the status is not OK. */
  error: grpc.ServiceError | undefined;
}

/** A server-streaming call in progress. */
export interface OpenStream<Res> {
  readonly call: grpc.ClientReadableStream<Res>;
  /** The messages received so far (the same array the result holds). */
  readonly events: Res[];
  /** Whether the call has ended (status received and the stream ended or failed). */
  readonly finished: boolean;
  /**
   * Resolves with the first message (already received or still to come) that satisfies
   * `predicate`; rejects when the stream ends without one, or after `timeoutMs`.
   */
  waitFor(predicate: (event: Res) => boolean, timeoutMs?: number): Promise<Res>;
  /** Resolves when the call has ended, whatever its status. */
  readonly done: Promise<StreamResult<Res>>;
}

/** A grpc-js client of one service, with its method definitions loaded by proto-loader. */
export interface ProtoClient {
  readonly client: grpc.Client;
  /** Calls a unary method; rejects with the grpc.ServiceError of a non-OK status. */
  unary<Res>(method: string, request: object, opts?: CallOpts): Promise<Res>;
  /** Starts a server-streaming call and collects its messages. */
  serverStream<Res>(method: string, request: object, opts?: CallOpts): OpenStream<Res>;
  close(): void;
}

/** The loaded package definitions, by proto file (relative to proto/). */
const definitions = new Map<string, protoLoader.PackageDefinition>();

function loadDefinition(protoFile: string): protoLoader.PackageDefinition {
  let def = definitions.get(protoFile);
  if (def === undefined) {
    def = protoLoader.loadSync(protoFile, loaderOptions);
    definitions.set(protoFile, def);
  }
  return def;
}

function isServiceDefinition(def: protoLoader.AnyDefinition | undefined): def is protoLoader.ServiceDefinition {
  return def !== undefined && !("format" in def);
}

function callOptions(opts: CallOpts): { metadata: grpc.Metadata; options: grpc.CallOptions } {
  const metadata = new grpc.Metadata();
  for (const [k, v] of Object.entries(opts.headers ?? {})) {
    metadata.set(k, v);
  }
  return { metadata, options: { deadline: Date.now() + (opts.timeoutMs ?? 10_000) } };
}

/**
 * Connects a client of `serviceName` (full name) from `protoFile` (relative to proto/) to
 * `address` (HOST:PORT, plaintext h2c). `channelOptions` go to grpc-js as they are.
 */
export function createProtoClient(
  protoFile: string,
  serviceName: string,
  address: string,
  channelOptions: grpc.ChannelOptions = {},
): ProtoClient {
  const service = loadDefinition(protoFile)[serviceName];
  if (!isServiceDefinition(service)) {
    throw new Error(`${protoFile} has no service ${serviceName}`);
  }
  const client = new grpc.Client(address, grpc.credentials.createInsecure(), channelOptions);
  const methodOf = (name: string): protoLoader.MethodDefinition<object, object> => {
    const m = service[name];
    if (m === undefined) {
      throw new Error(`${serviceName} has no method ${name}`);
    }
    return m;
  };

  return {
    client,
    unary<Res>(method: string, request: object, opts: CallOpts = {}): Promise<Res> {
      const m = methodOf(method);
      const { metadata, options } = callOptions(opts);
      return new Promise<Res>((resolve, reject) => {
        client.makeUnaryRequest<object, Res>(
          m.path,
          m.requestSerialize,
          m.responseDeserialize as (b: Buffer) => Res,
          request,
          metadata,
          options,
          (err, res) => (err !== null ? reject(err) : resolve(res as Res)),
        );
      });
    },
    serverStream<Res>(method: string, request: object, opts: CallOpts = {}): OpenStream<Res> {
      const m = methodOf(method);
      const { metadata, options } = callOptions(opts);
      const call = client.makeServerStreamRequest<object, Res>(
        m.path,
        m.requestSerialize,
        m.responseDeserialize as (b: Buffer) => Res,
        request,
        metadata,
        options,
      );
      return collect(call);
    },
    close: () => client.close(),
  };
}

function collect<Res>(call: grpc.ClientReadableStream<Res>): OpenStream<Res> {
  const events: Res[] = [];
  const changes = new EventEmitter();
  let status: grpc.StatusObject | undefined;
  let error: grpc.ServiceError | undefined;
  let ended = false;
  let finished = false;
  const done = new Promise<StreamResult<Res>>((resolve) => {
    // 'status' may come before buffered messages are delivered; 'end' (or 'error') comes after.
    const settle = () => {
      if (status !== undefined && (ended || error !== undefined) && !finished) {
        finished = true;
        changes.emit("change");
        resolve({ events, status, error });
      }
    };
    call.on("data", (event: Res) => {
      events.push(event);
      changes.emit("change");
    });
    call.on("end", () => {
      ended = true;
      settle();
    });
    call.on("error", (err: grpc.ServiceError) => {
      error = err;
      settle();
    });
    call.on("status", (s: grpc.StatusObject) => {
      status = s;
      settle();
    });
  });

  return {
    call,
    events,
    get finished() {
      return finished;
    },
    done,
    waitFor(predicate, timeoutMs = 10_000) {
      return new Promise<Res>((resolve, reject) => {
        let checked = 0;
        const check = () => {
          for (; checked < events.length; checked++) {
            const e = events[checked]!;
            if (predicate(e)) {
              stop();
              resolve(e);
              return;
            }
          }
          if (finished) {
            stop();
            reject(new Error(`the stream ended (${status?.code} ${status?.details}) without the awaited message; got ${JSON.stringify(events)}`));
          }
        };
        const timer = setTimeout(() => {
          stop();
          reject(new Error(`no awaited message within ${timeoutMs}ms; got ${JSON.stringify(events)}`));
        }, timeoutMs);
        const stop = () => {
          clearTimeout(timer);
          changes.off("change", check);
        };
        changes.on("change", check);
        check();
      });
    },
  };
}

/** A client of infergate.v1.InferenceService. */
export function inferenceClient(address: string, channelOptions?: grpc.ChannelOptions): ProtoClient {
  return createProtoClient("infergate/v1/inference_service.proto", "infergate.v1.InferenceService", address, channelOptions);
}

/** A client of grpc.health.v1.Health. */
export function healthClient(address: string, channelOptions?: grpc.ChannelOptions): ProtoClient {
  return createProtoClient("grpc/health/v1/health.proto", "grpc.health.v1.Health", address, channelOptions);
}

/** Whether `err` is a grpc-js error with a status code. */
export function isServiceError(err: unknown): err is grpc.ServiceError {
  return err instanceof Error && typeof (err as Partial<grpc.ServiceError>).code === "number";
}

/** Awaits a call that must fail, and returns its error. */
export async function expectServiceError(call: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await call;
  } catch (err) {
    if (isServiceError(err)) {
      return err;
    }
    throw err;
  }
  throw new Error("the call succeeded; an error status was expected");
}

// --- google.rpc.Status in grpc-status-details-bin ---------------------------------------------

let rpcRoot: protobuf.Root | undefined;

/** google/rpc/status.proto and error_details.proto from proto/, loaded with protobufjs. */
function rpcTypes(): protobuf.Root {
  if (rpcRoot === undefined) {
    const root = new protobuf.Root();
    root.resolvePath = (_origin, target) => (path.isAbsolute(target) ? target : path.join(protoDir, target));
    root.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"], { keepCase: true });
    root.resolveAll();
    rpcRoot = root;
  }
  return rpcRoot;
}

const objectOptions: protobuf.IConversionOptions = { longs: String, enums: String, defaults: true, bytes: Buffer };

/** One detail of a google.rpc.Status: its type URL, and the message when its type is known. */
export interface StatusDetail {
  type_url: string;
  /** The unpacked message (for google.rpc.* types from error_details.proto), else undefined. */
  message: Record<string, unknown> | undefined;
}

/** A decoded google.rpc.Status. */
export interface RpcStatus {
  code: number;
  message: string;
  details: StatusDetail[];
}

/** Decodes a message of a type from google/rpc/status.proto or error_details.proto by full name. */
export function decodeRpcMessage(typeName: string, bytes: Uint8Array): Record<string, unknown> {
  const type = rpcTypes().lookupType(typeName);
  return type.toObject(type.decode(bytes), objectOptions) as Record<string, unknown>;
}

/** Decodes a serialized google.rpc.Status, unpacking the google.rpc.* details it holds. */
export function decodeRpcStatus(bytes: Uint8Array): RpcStatus {
  const root = rpcTypes();
  const statusType = root.lookupType("google.rpc.Status");
  const raw = statusType.toObject(statusType.decode(bytes), objectOptions) as {
    code: number;
    message: string;
    details: { type_url: string; value: Buffer }[];
  };
  return {
    code: raw.code,
    message: raw.message,
    details: raw.details.map((d) => {
      const typeName = d.type_url.slice(d.type_url.lastIndexOf("/") + 1);
      const known = root.lookup(typeName) instanceof protobuf.Type;
      return { type_url: d.type_url, message: known ? decodeRpcMessage(typeName, d.value) : undefined };
    }),
  };
}

/** The google.rpc.Status of the `grpc-status-details-bin` trailer of an error; throws if none. */
export function statusDetails(err: grpc.ServiceError): RpcStatus {
  const values = err.metadata.get("grpc-status-details-bin");
  if (values.length !== 1 || !Buffer.isBuffer(values[0])) {
    throw new Error(`expected one grpc-status-details-bin trailer, got ${values.length}`);
  }
  return decodeRpcStatus(values[0]);
}

/** The ErrorInfo detail of the status, if it has exactly one. */
export function errorInfoOf(status: RpcStatus): Record<string, unknown> | undefined {
  const infos = status.details.filter((d) => d.type_url === "type.googleapis.com/google.rpc.ErrorInfo");
  return infos.length === 1 ? infos[0]!.message : undefined;
}

// --- buf curl ---------------------------------------------------------------------------------

/** The buf CLI the project installs. */
export const bufPath = path.join(repoRoot, "node_modules", ".bin", "buf");

/** What a finished `buf` run printed and returned. */
export interface BufRun {
  /** The exit code (for a failed RPC, the gRPC code shifted left by 3). */
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `buf ARGS` in the repository root, asynchronously, killed after `timeoutMs`. Resolves for
 * any exit code; rejects only when buf could not run or had to be killed.
 */
export function runBuf(args: string[], timeoutMs = 30_000): Promise<BufRun> {
  return new Promise((resolve, reject) => {
    execFile(
      bufPath,
      args,
      { cwd: repoRoot, timeout: timeoutMs, killSignal: "SIGKILL", maxBuffer: 16 * 1024 * 1024, env: { ...process.env, NO_COLOR: "1" } },
      (err, stdout, stderr) => {
        if (err === null) {
          resolve({ code: 0, stdout, stderr });
          return;
        }
        const e = err as NodeJS.ErrnoException & { code?: number | string; killed?: boolean; signal?: string | null };
        if (typeof e.code === "number" && e.killed !== true && e.signal == null) {
          resolve({ code: e.code, stdout, stderr });
          return;
        }
        reject(new Error(`buf ${args.join(" ")} failed to run (${e.signal ?? e.code ?? "?"}): ${err.message}\n${stderr}`));
      },
    );
  });
}

/**
 * Parses a sequence of JSON values written one after another (buf curl prints one pretty-printed
 * object per streamed message), separated by white space or nothing. Throws on anything else.
 */
export function parseJsonSequence(text: string): unknown[] {
  const values: unknown[] = [];
  let i = 0;
  const n = text.length;
  const isSpace = (c: string | undefined) => c === " " || c === "\n" || c === "\r" || c === "\t";
  while (i < n) {
    while (i < n && isSpace(text[i])) i++;
    if (i >= n) break;
    const start = i;
    const c = text[i];
    if (c === "{" || c === "[") {
      let depth = 0;
      let inString = false;
      for (; i < n; i++) {
        const ch = text[i];
        if (inString) {
          if (ch === "\\") i++;
          else if (ch === '"') inString = false;
        } else if (ch === '"') inString = true;
        else if (ch === "{" || ch === "[") depth++;
        else if (ch === "}" || ch === "]") {
          depth--;
          if (depth === 0) {
            i++;
            break;
          }
        }
      }
      if (depth !== 0) {
        throw new Error(`unterminated JSON value at offset ${start}: ${text.slice(start, start + 80)}`);
      }
    } else if (c === '"') {
      for (i++; i < n && text[i] !== '"'; i++) {
        if (text[i] === "\\") i++;
      }
      i++;
    } else {
      while (i < n && !isSpace(text[i]) && text[i] !== "{" && text[i] !== "[" && text[i] !== '"') i++;
    }
    values.push(JSON.parse(text.slice(start, i)));
  }
  return values;
}

/** The counts of a Usage beyond prompt and completion: parts of those, 0 unless given. */
export interface UsageParts {
  readonly cached?: number;
  readonly creation?: number;
  readonly reasoning?: number;
}

/**
 * A Usage as proto-loader renders it (defaults filled in): total = prompt + completion, and the
 * cached prompt, cache-creation and reasoning counts (parts of those two) 0 unless given.
 */
export function protoUsage(prompt: number, completion: number, parts: UsageParts = {}) {
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
    cached_prompt_tokens: parts.cached ?? 0,
    cache_creation_tokens: parts.creation ?? 0,
    reasoning_tokens: parts.reasoning ?? 0,
  };
}
