import { readFileSync } from "node:fs";
import { createPrivateKey, X509Certificate } from "node:crypto";
import { createSecureContext } from "node:tls";
import { ConfigError, type ConfigIssue } from "../config/config-error.js";
import type { ServerConfig } from "../config/schema.js";

/** The listeners' certificate, key and (mTLS) client CA, as read from `server.tls`'s files. */
export interface ServerTlsMaterial {
  readonly cert: Buffer;
  readonly key: Buffer;
  /** Client CA bundle; undefined: clients are not asked for a certificate. */
  readonly ca: Buffer | undefined;
}

/**
 * Reads `server.tls`'s files and checks that they make a usable context (PEM that parses, a key
 * that matches the certificate, a CA bundle that parses) before any listener sees them: at
 * start-up a bad file stops the start, on reload it is refused and the certificates in use stay.
 * grpc-js in particular must not be handed a context that fails: it would drop every new
 * connection until the next good one.
 *
 * Throws ConfigError naming the field and the problem: the file's error code, or OpenSSL's
 * reason (such as "key values mismatch"), never the files' contents.
 */
export function readServerTls(tls: NonNullable<ServerConfig["tls"]>, source: string): ServerTlsMaterial {
  const issues: ConfigIssue[] = [];
  const read = (field: keyof typeof tls): Buffer | undefined => {
    const path = tls[field];
    if (path === undefined) return undefined;
    try {
      return readFileSync(path);
    } catch (err) {
      issues.push({ path: `server.tls.${field}`, message: `cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? "error"})` });
      return undefined;
    }
  };
  const cert = read("certFile");
  const key = read("keyFile");
  const ca = read("clientCaFile");
  const check = (field: keyof typeof tls, what: string, parse: () => unknown) => {
    try {
      parse();
    } catch (err) {
      issues.push({ path: `server.tls.${field}`, message: `not ${what} (${opensslReason(err)})` });
    }
  };
  if (cert !== undefined) check("certFile", "a PEM certificate", () => new X509Certificate(cert));
  if (key !== undefined) check("keyFile", "a PEM private key", () => createPrivateKey(key));
  // createSecureContext skips a CA bundle with no certificate in it without a word.
  if (ca !== undefined) check("clientCaFile", "a PEM certificate bundle", () => new X509Certificate(ca));
  if (issues.length > 0 || cert === undefined || key === undefined) throw new ConfigError(issues, source);
  try {
    createSecureContext({ cert, key, ...(ca === undefined ? {} : { ca }) });
  } catch (err) {
    const reason = opensslReason(err);
    const message = reason === "key values mismatch" ? "does not match the certificate of server.tls.certFile" : `unusable with server.tls.certFile (${reason})`;
    throw new ConfigError([{ path: "server.tls.keyFile", message }], source);
  }
  return { cert, key, ca };
}

/**
 * OpenSSL's reason without anything from the input: its messages look like
 * `error:05800074:x509 certificate routines::key values mismatch`; anything else is reduced to
 * its error code, in case some message quotes what it could not parse.
 */
function opensslReason(err: unknown): string {
  const e = err as { message?: unknown; code?: unknown };
  const message = typeof e.message === "string" ? e.message : "";
  const m = /^error:[0-9A-Fa-f]+:[^:]*:[^:]*:([a-z0-9 _-]{1,100})$/.exec(message);
  if (m !== null) return m[1]!;
  if (/^[A-Za-z ]{1,60}$/.test(message)) return message;
  return typeof e.code === "string" ? e.code : "invalid PEM";
}
