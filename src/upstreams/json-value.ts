/**
 * Small readers of parsed JSON, for the translators of JSON wire formats (the upstream kinds'
 * and the OpenAI-compatible ingress's): one definition each, so that every translator means the
 * same by "an object".
 */

/** A JSON object: not null, not an array. */
export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** A value as JSON text for an error's log data; undefined where JSON.stringify gives none (it throws on a bigint or a cycle). */
export function safeJson(v: unknown): string | undefined {
  try {
    return JSON.stringify(v);
  } catch {
    return undefined;
  }
}
