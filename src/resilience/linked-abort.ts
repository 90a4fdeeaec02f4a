/**
 * An AbortController that also aborts, with the same reason, when `parent` does, until disposed.
 * Used instead of `AbortSignal.any` where the parent outlives many children (a call and its
 * attempts, the gateway and its calls): the listener is removed on dispose, so nothing
 * accumulates on the long-lived signal.
 */
export interface LinkedAbort {
  readonly signal: AbortSignal;
  abort(reason: unknown): void;
  /** Detaches from the parent; call once the child's work is over. */
  dispose(): void;
}

/** Makes a child of `parent` (see LinkedAbort). */
export function linkedAbort(parent: AbortSignal): LinkedAbort {
  const controller = new AbortController();
  const onAbort = () => controller.abort(parent.reason);
  if (parent.aborted) {
    onAbort();
  } else {
    parent.addEventListener("abort", onAbort, { once: true });
  }
  return {
    signal: controller.signal,
    abort: (reason) => controller.abort(reason),
    dispose: () => parent.removeEventListener("abort", onAbort),
  };
}
