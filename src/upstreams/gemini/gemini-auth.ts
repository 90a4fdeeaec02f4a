/**
 * OAuth2 access tokens for Vertex AI, through google-auth-library: from a service-account key file
 * (a signed JWT exchanged at the key's `token_uri`), or else from Application Default Credentials
 * (GOOGLE_APPLICATION_CREDENTIALS, gcloud's, or the metadata server on Google Cloud). The library
 * caches a token and fetches a new one once it is within `refreshMarginMs` of its expiry, so calls
 * never go out with a token about to lapse. Tokens are never logged: a failure to get one is an
 * error that names what failed, never the token, the key or the signed assertion.
 */
import { readFileSync } from "node:fs";
import { Code } from "@connectrpc/connect";
import { GoogleAuth, JWT } from "google-auth-library";
import { GatewayError, Reason } from "../../core/gateway-error.js";
import { UpstreamFailure } from "../http/http-errors.js";
import { isObject } from "../json-value.js";

/** The scope of Vertex AI's API (aiplatform.googleapis.com accepts cloud-platform tokens). */
const cloudPlatformScope = "https://www.googleapis.com/auth/cloud-platform";

/** Where google-auth-library sends a service account's signed JWT (it ignores the key's token_uri). */
const googleTokenUrl = "https://oauth2.googleapis.com/token";

/** Gives a current access token. */
export interface AccessTokens {
  /** A token valid for at least the refresh margin; stops waiting when `signal` aborts. */
  token(signal: AbortSignal): Promise<string>;
}

export interface AccessTokenOptions {
  /** The upstream's name, for errors. */
  readonly upstream: string;
  /** A service-account key file (JSON); undefined: Application Default Credentials. */
  readonly credentialsFile: string | undefined;
  /** How long before its expiry a token is replaced. */
  readonly refreshMarginMs: number;
  /**
   * How long one token fetch may take; past it the fetch fails UNAVAILABLE for the calls that
   * waited on it, and the next call starts a new one with a new client.
   */
  readonly fetchTimeoutMs: number;
}

/** The client that gets tokens; undefined until first used for ADC (its discovery does I/O). */
interface TokenClient {
  getAccessToken(): Promise<{ token?: string | null } | string | null | undefined>;
}

/**
 * Makes the token source of one Vertex AI upstream. A key file is read now (a missing or malformed
 * one fails start-up, naming the file, not a call); its `token_uri`, when it names another token
 * endpoint than Google's (a private endpoint, a test's fake), is where the JWT goes.
 */
export function createAccessTokens(options: AccessTokenOptions): AccessTokens {
  const makeClient = (): TokenClient =>
    options.credentialsFile === undefined ? adcClient(options) : keyFileClient(options.credentialsFile, options.refreshMarginMs, options.fetchTimeoutMs);
  let client = makeClient();
  /** The fetch in flight, shared by the calls that need a token meanwhile. */
  let pending: Promise<string> | undefined;

  function fetchToken(): Promise<string> {
    if (pending !== undefined) return pending;
    const from = client;
    let timer: NodeJS.Timeout | undefined;
    // google-auth-library shares one in-flight token request per client and puts no bound on it
    // (a token endpoint or metadata server that accepts the connection and never answers holds it
    // for minutes): past fetchTimeoutMs this fetch fails and its client is dropped, so that the
    // next call asks again through a new client instead of joining the stuck request.
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        if (client === from) client = makeClient();
        reject(new Error(`the token request took more than ${options.fetchTimeoutMs} ms`));
      }, options.fetchTimeoutMs);
      timer.unref();
    });
    const fetched = from.getAccessToken().then((r) => {
      const token = typeof r === "string" ? r : r?.token;
      if (typeof token !== "string" || token === "") throw new Error("the credentials gave no access token");
      return token;
    });
    const mine: Promise<string> = Promise.race([fetched, timedOut])
      .catch((err: unknown) => {
        throw tokenError(options.upstream, err);
      })
      .finally(() => {
        clearTimeout(timer);
        if (pending === mine) pending = undefined;
      });
    pending = mine;
    return mine;
  }

  return {
    token(signal) {
      if (signal.aborted) return Promise.reject(signal.reason as unknown);
      return new Promise<string>((resolve, reject) => {
        const onAbort = (): void => reject(signal.reason as unknown);
        signal.addEventListener("abort", onAbort, { once: true });
        fetchToken().then(
          (t) => {
            signal.removeEventListener("abort", onAbort);
            resolve(t);
          },
          (err: unknown) => {
            signal.removeEventListener("abort", onAbort);
            reject(err);
          },
        );
      });
    },
  };
}

function keyFileClient(file: string, refreshMarginMs: number, timeoutMs: number): TokenClient {
  let key: unknown;
  try {
    key = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new Error(`gemini: cannot read the service-account key file ${file}: ${err instanceof Error ? err.message.split("\n")[0] : String(err)}`);
  }
  if (!isObject(key) || typeof key["client_email"] !== "string" || typeof key["private_key"] !== "string") {
    throw new Error(`gemini: ${file} is not a service-account key file (client_email and private_key are required)`);
  }
  const jwt = new JWT({
    email: key["client_email"],
    key: key["private_key"],
    ...(typeof key["private_key_id"] === "string" ? { keyId: key["private_key_id"] } : {}),
    scopes: [cloudPlatformScope],
    eagerRefreshThresholdMillis: refreshMarginMs,
  });
  const tokenUri = key["token_uri"];
  const target = typeof tokenUri === "string" && tokenUri !== googleTokenUrl ? new URL(tokenUri) : undefined;
  jwt.transporter.interceptors.request.add({
    resolved: (config) => {
      if (target !== undefined && String(config.url) === googleTokenUrl) config.url = target;
      // The socket of a token request that never answers is let go (createAccessTokens has given up on it).
      config.timeout ??= timeoutMs;
      return Promise.resolve(config);
    },
  });
  return jwt;
}

function adcClient(options: AccessTokenOptions): TokenClient {
  const auth = new GoogleAuth({ scopes: [cloudPlatformScope], clientOptions: { eagerRefreshThresholdMillis: options.refreshMarginMs } });
  return { getAccessToken: () => auth.getAccessToken() };
}

/**
 * A failure to get a token: refused by the token endpoint (HTTP 400/401/403: a revoked key, a
 * wrong clock) is INTERNAL UPSTREAM_AUTH, as an upstream refusing the gateway's credentials;
 * anything else (the endpoint unreachable, 5xx) UNAVAILABLE, so that it may be retried. The cause
 * keeps the HTTP status and Google's short error code (`invalid_grant`), nothing the request held.
 */
function tokenError(upstream: string, err: unknown): GatewayError {
  const response = isObject(err) && isObject(err["response"]) ? err["response"] : undefined;
  const status = typeof response?.["status"] === "number" ? response["status"] : undefined;
  const data = response?.["data"];
  const code = isObject(data) && typeof data["error"] === "string" && /^[a-z_]{1,64}$/.test(data["error"]) ? data["error"] : undefined;
  const cause = new UpstreamFailure(`upstream ${upstream}: no access token${code === undefined ? "" : ` (${code})`}`, status, undefined);
  const metadata = { upstream };
  if (status === 400 || status === 401 || status === 403) {
    return new GatewayError(Code.Internal, `upstream "${upstream}" could not get an access token: its credentials were refused`, {
      reason: Reason.UpstreamAuth,
      metadata,
      cause,
    });
  }
  return new GatewayError(Code.Unavailable, `upstream "${upstream}" could not get an access token`, { reason: Reason.UpstreamUnavailable, metadata, cause });
}
