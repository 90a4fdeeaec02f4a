import { Worker } from "node:worker_threads";
import { Code } from "@connectrpc/connect";
import { GatewayError, Reason } from "../core/gateway-error.js";
import { UpstreamFailure } from "./http/http-errors.js";
import type { OffloadReply, OffloadTasks } from "./offload-worker.js";

/**
 * Work too big for the event loop, done on a worker thread: turning a 4 MiB tensor into 20 MB of
 * JSON text, or such a text back into a tensor, costs about a second of CPU (docs/benchmarks.md,
 * issue 16); on the main thread every other call of the process would wait that long. One worker,
 * started on first use and unref'd (it never keeps the process alive), runs the tasks of
 * offload-worker.ts one after another; a caller waits on a promise meanwhile. A task's
 * GatewayError comes back as the same GatewayError (code, message, reason, metadata, and an
 * UpstreamFailure cause for the log). A worker that dies fails the tasks it held with INTERNAL and
 * is replaced by the next call.
 */

type TaskName = keyof OffloadTasks;
type Input<T extends TaskName> = Parameters<OffloadTasks[T]>[0];
type Output<T extends TaskName> = ReturnType<OffloadTasks[T]>;

interface Pending {
  resolve(value: unknown): void;
  reject(err: unknown): void;
}

let worker: Worker | undefined;
let nextId = 0;
let completed = 0;
const pending = new Map<number, Pending>();

function workerFailed(message: string): void {
  worker = undefined;
  const err = new GatewayError(Code.Internal, `the tensor worker thread failed: ${message}`, { reason: Reason.Internal });
  for (const p of pending.values()) p.reject(err);
  pending.clear();
}

function startWorker(): Worker {
  const here = import.meta.url;
  // Built code runs offload-worker.js; the tests run the TypeScript sources, through tsx.
  const w = here.endsWith(".ts")
    ? new Worker(`import("tsx/esm/api").then((api) => { api.register(); return import(${JSON.stringify(new URL("./offload-worker.ts", here).href)}); })`, { eval: true })
    : new Worker(new URL("./offload-worker.js", here));
  w.unref();
  w.on("message", (reply: OffloadReply) => {
    const p = pending.get(reply.id);
    if (p === undefined) return;
    pending.delete(reply.id);
    if (pending.size === 0) w.unref();
    completed++;
    if (reply.ok) p.resolve(reply.value);
    else p.reject(rebuild(reply.error));
  });
  w.on("error", (err) => {
    if (worker === w) workerFailed(err.message);
  });
  w.on("exit", (code) => {
    if (worker === w) workerFailed(`exited with code ${code}`);
  });
  return w;
}

function rebuild(e: Extract<OffloadReply, { ok: false }>["error"]): Error {
  if (!e.gateway) return new GatewayError(Code.Internal, `the tensor worker thread failed: ${e.message}`, { reason: Reason.Internal });
  return new GatewayError(e.code!, e.message, {
    reason: e.reason,
    metadata: e.metadata,
    retryAfterMs: e.retryAfterMs,
    cause: e.cause === undefined ? undefined : new UpstreamFailure(e.cause.message, e.cause.status, e.cause.bodySnippet),
  });
}

/**
 * Runs `task` of offload-worker.ts on the worker thread. `transfer` lists buffers handed over
 * (not copied): the caller must not use them afterwards.
 */
export function offload<T extends TaskName>(task: T, input: Input<T>, transfer: ArrayBuffer[] = []): Promise<Output<T>> {
  worker ??= startWorker();
  const id = nextId++;
  const w = worker;
  return new Promise<Output<T>>((resolve, reject) => {
    pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
    // Referenced while it holds work: a process waiting for an answer does not exit under it.
    w.ref();
    w.postMessage({ id, task, input }, transfer);
  });
}

/** Stops the worker (tests; a process that exits needs nothing). */
export async function stopOffloadWorker(): Promise<void> {
  const w = worker;
  worker = undefined;
  if (w !== undefined) await w.terminate();
}

/** How many tasks the worker has answered in this process (for tests and diagnostics). */
export function offloadedTasks(): number {
  return completed;
}

/**
 * Tensors at least this big (bytes of their values) are turned into JSON, and JSON answers at
 * least this long are read, on the worker thread: a 1M-element FP32 tensor is about 20 MB of JSON,
 * a second of CPU each way on the project's machine (docs/benchmarks.md, issue 16).
 */
export const offloadBytes = 256 * 1024;

/** `[bytes.buffer]` when the array is the whole of its buffer (then it can be transferred). */
export function ownBuffer(bytes: Uint8Array): ArrayBuffer[] {
  return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer ? [bytes.buffer] : [];
}
