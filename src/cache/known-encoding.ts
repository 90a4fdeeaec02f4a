/**
 * Wire bytes already known for a message, so that the gRPC listener writes them instead of
 * encoding the message again: a Chat cache hit is stored bytes decoded only to be encoded again
 * (about 7% of the CPU of a hit, the encoding alone, in the c=64 profile). Internal to the cache
 * and the listener.
 *
 * Valid only while the message is not changed: remember bytes only for a message nobody changes
 * afterwards, and only bytes equal to what toBinary would give for it.
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
