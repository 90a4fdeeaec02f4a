import { Code } from "@connectrpc/connect";
import type { AttemptTrace, CallContext } from "../core/call-context.js";
import { GatewayError, Reason } from "../core/gateway-error.js";
import { ConcurrencyLimit } from "../resilience/concurrency-limit.js";
import { type LinkedAbort, linkedAbort } from "../resilience/linked-abort.js";
import type { Generation, Runtime } from "./gateway-call.js";

/** What abortInFlight aborts: a call's context whose `abort` is a method, or a view of one. */
type Abortable = Pick<CallContext, "abort">;

/**
 * The gateway's life and its calls in flight: draining, the global concurrency limit, the count
 * of calls and who waits for none, the runtime each call started under (reloads swap it), and the
 * registry abortInFlight aborts at the end of a drain. The drain step (steps/drain.ts) enters and
 * leaves each call here; the gateway's drain, swap, idle and abortInFlight are these methods.
 */
export class Lifecycle {
  private draining = false;
  private count = 0;
  private idleWaiters: (() => void)[] = [];
  private generation: Generation;
  private readonly callLimit: ConcurrencyLimit;
  // One entry per call in flight, for abortInFlight: a slot each in an array with a list of free
  // slots, not a Set (adding to and deleting from a Set was the largest cost of registering a
  // call: 0.5% of a proxied Chat's profile at c=64; docs/benchmarks.md).
  private readonly live: (Abortable | undefined)[] = [];
  private readonly freeSlots: number[] = [];

  constructor(runtime: Runtime, maxConcurrentCalls: number | undefined) {
    this.generation = { runtime, calls: 0 };
    this.callLimit = new ConcurrencyLimit("the gateway", maxConcurrentCalls);
  }

  /**
   * Admits a call: refused while draining (UNAVAILABLE, SHUTTING_DOWN), and, for model calls
   * (`limited`), over the global concurrency limit (RESOURCE_EXHAUSTED, OVERLOADED: load shedding,
   * before any other work). Returns the generation the call runs under; `leave` it exactly once.
   */
  enter(limited: boolean): Generation {
    if (this.draining) {
      throw new GatewayError(Code.Unavailable, "the gateway is shutting down; retry on another instance", {
        reason: Reason.ShuttingDown,
      });
    }
    if (limited) this.callLimit.acquire();
    this.count++;
    const g = this.generation;
    g.calls++;
    return g;
  }

  leave(limited: boolean, g: Generation): void {
    if (limited) this.callLimit.release();
    this.count--;
    if (--g.calls === 0) g.drained?.();
    if (this.count === 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      waiters.forEach((w) => w());
    }
  }

  /** Registers a call for abortInFlight; returns its slot, for `unregister` once it has left. */
  register(entry: Abortable): number {
    const i = this.freeSlots.length > 0 ? this.freeSlots.pop()! : this.live.length;
    this.live[i] = entry;
    return i;
  }

  unregister(slot: number): void {
    this.live[slot] = undefined;
    this.freeSlots.push(slot);
  }

  /** See Gateway.swap. */
  swap(next: Runtime): Promise<void> {
    const old = this.generation;
    this.generation = { runtime: next, calls: 0 };
    return old.calls === 0 ? Promise.resolve() : new Promise((resolve) => (old.drained = resolve));
  }

  drain(): void {
    this.draining = true;
  }

  abortInFlight(reason: GatewayError): void {
    for (const entry of this.live) entry?.abort?.(reason);
  }

  inFlight(): number {
    return this.count;
  }

  idle(): Promise<void> {
    return this.count === 0 ? Promise.resolve() : new Promise((resolve) => this.idleWaiters.push(resolve));
  }
}

/**
 * A listener's context that cannot abort its own signal (no `abort`: not createCallContext's),
 * seen through a signal of the gateway's own that follows the listener's and that abortInFlight
 * can abort as well. Everything else is the listener's context itself, read and written through
 * (admission sets `tenant`, which the ingress and the call record read on the original). It costs
 * an AbortSignal and a listener per call, which createCallContext's contexts do without.
 */
export class LinkedContext implements CallContext {
  private readonly link: LinkedAbort;

  constructor(private readonly outer: CallContext) {
    this.link = linkedAbort(outer.signal);
  }

  get signal(): AbortSignal {
    return this.link.signal;
  }
  // No isAborted: it would not see this view's own abort; throwIfAborted reads the signal instead.
  get deadline(): number {
    return this.outer.deadline;
  }
  get headers(): Readonly<Record<string, string>> {
    return this.outer.headers;
  }
  get tenant(): string {
    return this.outer.tenant;
  }
  set tenant(value: string) {
    this.outer.tenant = value;
  }
  get requestId(): string {
    return this.outer.requestId;
  }
  get peerCommonName(): string | undefined {
    return this.outer.peerCommonName;
  }
  get responseHeaders(): Record<string, string> {
    return this.outer.responseHeaders;
  }
  get trace(): AttemptTrace {
    return this.outer.trace;
  }
  get encodeAnswer(): ((answer: object) => void) | undefined {
    return this.outer.encodeAnswer;
  }
  set encodeAnswer(encode: ((answer: object) => void) | undefined) {
    this.outer.encodeAnswer = encode;
  }

  /** Aborts this view's signal (abortInFlight); the listener's own is left alone. */
  abort(reason: unknown): void {
    this.link.abort(reason);
  }

  /** Detaches from the listener's signal; once the call has left. */
  dispose(): void {
    this.link.dispose();
  }
}
