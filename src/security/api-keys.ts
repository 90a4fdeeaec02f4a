import { createHash, timingSafeEqual } from "node:crypto";

/** The hex SHA-256 of an API key: what config holds instead of the key. */
export function hashKey(key: string): string {
  return createHash("sha256").update(key, "utf8").digest("hex");
}

/**
 * The key a caller presented: `authorization: Bearer <key>` or `x-api-key: <key>`; undefined when
 * neither is there.
 */
export function presentedKey(headers: Readonly<Record<string, string>>): string | undefined {
  const auth = headers["authorization"];
  if (auth !== undefined) {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(auth);
    if (m !== null) return m[1];
  }
  const x = headers["x-api-key"];
  return x !== undefined && x.trim() !== "" ? x.trim() : undefined;
}

/**
 * Finds the entry whose hash matches the key. Every configured hash is compared, each in constant
 * time, so the time taken says nothing about which entry (or how much of a hash) matched.
 */
export function matchKey<T extends { sha256: string }>(key: string, entries: readonly T[]): T | undefined {
  const digest = createHash("sha256").update(key, "utf8").digest();
  let found: T | undefined;
  for (const e of entries) {
    const want = Buffer.from(e.sha256, "hex");
    if (want.length === digest.length && timingSafeEqual(want, digest) && found === undefined) {
      found = e;
    }
  }
  return found;
}

/** Glob match for model names: `*` any run of characters, `?` one; everything else literal. */
export function globMatch(pattern: string, name: string): boolean {
  const re = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".")}$`);
  return re.test(name);
}
