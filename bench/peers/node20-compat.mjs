/**
 * Preloaded into Portkey (`node --import ./node20-compat.mjs …`). Portkey 1.15 edits the headers
 * of a streamed answer whose Headers object Node's fetch made immutable (it adds `x-portkey-*`
 * and deletes encoding headers), and every streaming call then fails with "TypeError: immutable"
 * (Portkey-AI/gateway#1550, the same class as #1389; the proposed fix copies or skips the
 * headers). Here such an edit is skipped: the answer goes out with the upstream's headers as
 * they are, the body unchanged.
 */
for (const method of ["append", "set", "delete"]) {
  const original = Headers.prototype[method];
  Headers.prototype[method] = function (...args) {
    try {
      return original.apply(this, args);
    } catch (err) {
      if (!(err instanceof TypeError && err.message === "immutable")) throw err;
      return undefined;
    }
  };
}
