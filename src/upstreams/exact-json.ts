/**
 * JSON text written exactly, for model servers that read numbers with more care than JSON.stringify
 * writes them: bigints with every digit, -0 as `-0.0` (so it reads back as a float with its sign),
 * and, per dialect, non-finite numbers as bare tokens (TF Serving) or as a bug (KServe REST, whose
 * translator refuses them first). Undefined object entries are left out, as JSON.stringify does.
 */
export interface ExactJsonOptions {
  /** `tokens`: NaN, Infinity, -Infinity as bare tokens; `throw`: an Error (a bug upstream of this). */
  readonly nonFinite: "tokens" | "throw";
  /**
   * Write `{ $double: n }` as the number n with a fraction or exponent (`2.0`), so that a server
   * that types JSON numbers by their spelling reads a double. For dialects that need it.
   */
  readonly doubleMarker?: boolean;
  /** Names the body in error messages. */
  readonly what: string;
}

export function writeExactJson(value: unknown, options: ExactJsonOptions): string {
  const out: string[] = [];
  write(value, out, options);
  return out.join("");
}

function write(v: unknown, out: string[], o: ExactJsonOptions): void {
  switch (typeof v) {
    case "number":
      if (Object.is(v, -0)) out.push("-0.0");
      else if (Number.isFinite(v)) out.push(String(v));
      else if (o.nonFinite === "throw") throw new Error(`non-finite number ${v} in ${o.what}`);
      else out.push(Number.isNaN(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity");
      return;
    case "bigint":
      out.push(v.toString());
      return;
    case "boolean":
      out.push(v ? "true" : "false");
      return;
    case "string":
      out.push(JSON.stringify(v));
      return;
  }
  if (Array.isArray(v)) {
    out.push("[");
    v.forEach((e, i) => {
      if (i > 0) out.push(",");
      write(e, out, o);
    });
    out.push("]");
    return;
  }
  if (typeof v === "object" && v !== null) {
    const obj = v as Record<string, unknown>;
    if (o.doubleMarker === true && typeof obj["$double"] === "number") {
      const d = obj["$double"];
      write(d, out, o);
      if (Number.isInteger(d) && !Object.is(d, -0) && !/[.eE]/.test(String(d))) out.push(".0");
      return;
    }
    out.push("{");
    let first = true;
    for (const [k, e] of Object.entries(obj)) {
      if (e === undefined) continue;
      if (!first) out.push(",");
      first = false;
      out.push(JSON.stringify(k), ":");
      write(e, out, o);
    }
    out.push("}");
    return;
  }
  throw new Error(`cannot write ${typeof v} in ${o.what}`);
}
