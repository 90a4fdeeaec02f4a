/**
 * Wire bytes already known for a message, so that the gRPC listener writes them instead of
 * encoding the message again: a Chat cache hit is stored bytes decoded only to be encoded again
 * (about 7% of the CPU of a hit, the encoding alone, in the c=64 profile). Internal to the cache
 * and the listener.
 *
 * Valid only while the message is not changed: remember bytes only for a message nobody changes
 * afterwards, and only bytes that decode to it (toBinary's, or predict-wire.ts's bulk encoding,
 * which writes the same fields in another order). The gRPC listener also records a Predict
 * answer's bytes this way before the call is reported (its encoding counts in the latency).
 */
const known = new WeakMap<object, Uint8Array>();

/** Records `bytes` as the encoding of `message` (see the rules above). */
export function rememberEncoding(message: object, bytes: Uint8Array): void {
  known.set(message, bytes);
}

/** The bytes recorded for `message`, if any. */
export function knownEncoding(message: object): Uint8Array | undefined {
  return known.get(message);
}
