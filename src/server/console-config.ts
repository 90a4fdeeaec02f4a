import type { Config } from "../config/schema.js";
import { redactSecrets } from "../upstreams/http/http-errors.js";

/** What replaces a secret in GET /admin/config. */
export const redactedMark = "[redacted]";

/**
 * Keys whose string (or object) values are secrets wherever they appear: credentials (`apiKey`,
 * `adminToken`, a kind's `secretAccessKey`, `sessionToken`, `credentials`, …), the keys' SHA-256
 * and a private key. Numbers under such a key (`tokens`, `maxTokens`) are limits, not secrets,
 * and stay.
 */
const secretKey = /^(.*api[-_]?key.*|.*token|.*secret.*|.*passw.*|.*credentials?|authorization|cookie|sha256|private[-_]?key|access[-_]?key.*|signature)$/i;

/** A PEM private key given inline. */
const pemKey = /-----BEGIN [A-Z ]*PRIVATE KEY-----/;

/**
 * The running configuration as GET /admin/config shows it: every secret replaced by
 * `[redacted]` — the values under secret-looking keys (see `secretKey`), every value of a
 * `headers` map (its names stay), a URL's user and password, inline private keys — and any of
 * those values found inside another string (an endpoint URL with a key in its query), as the
 * upstream error bodies are redacted (src/upstreams/http/http-errors.ts).
 */
export function redactConfig(config: Config): unknown {
  const secrets: string[] = [];
  collectSecrets(config, undefined, secrets);
  return redact(config, undefined, secrets);
}

function collectSecrets(v: unknown, key: string | undefined, out: string[]): void {
  if (typeof v === "string") {
    if (key !== undefined && secretKey.test(key)) out.push(v);
    return;
  }
  if (Array.isArray(v)) {
    for (const x of v) collectSecrets(x, key, out);
    return;
  }
  if (v === null || typeof v !== "object") return;
  for (const [k, x] of Object.entries(v)) {
    if (k === "headers" && x !== null && typeof x === "object") {
      for (const h of Object.values(x)) if (typeof h === "string") out.push(h);
    } else if (secretKey.test(k) && x !== null && typeof x === "object") {
      out.push(JSON.stringify(x));
    } else {
      collectSecrets(x, k, out);
    }
  }
}

function redact(v: unknown, key: string | undefined, secrets: readonly string[]): unknown {
  if (typeof v === "string") {
    if ((key !== undefined && secretKey.test(key)) || pemKey.test(v)) return redactedMark;
    return redactSecrets(withoutUserInfo(v), secrets);
  }
  if (Array.isArray(v)) return v.map((x) => redact(x, key, secrets));
  if (v === null || typeof v !== "object") return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) {
    if (k === "headers" && x !== null && typeof x === "object") {
      out[k] = Object.fromEntries(Object.keys(x).map((h) => [h, redactedMark]));
    } else if (secretKey.test(k) && x !== null && typeof x === "object") {
      out[k] = redactedMark;
    } else {
      out[k] = redact(x, k, secrets);
    }
  }
  return out;
}

/**
 * A URL with its user and password replaced (redis://user:pass@host → redis://[redacted]@host).
 * The user info is everything before the LAST `@` of the authority (which ends at the first `/`,
 * `?` or `#`), as `new URL` reads it: a password may hold an `@` itself.
 */
function withoutUserInfo(s: string): string {
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(s);
  if (scheme === null) return s;
  const start = scheme[0].length;
  const rest = s.slice(start).search(/[/?#]/);
  const end = rest < 0 ? s.length : start + rest;
  const at = end > start ? s.lastIndexOf("@", end - 1) : -1;
  return at < start ? s : `${s.slice(0, start)}${redactedMark}${s.slice(at)}`;
}
