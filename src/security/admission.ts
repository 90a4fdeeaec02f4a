import { Code } from "@connectrpc/connect";
import type { AuthConfig, LimitsConfig } from "../config/schema.js";
import { type Admission, isModelCall } from "../core/rpc.js";
import { echoed, GatewayError, Reason } from "../core/gateway-error.js";
import type { CallRecord } from "../observability/call-record.js";
import { globMatch, matchKey, presentedKey } from "./api-keys.js";
import type { BucketSpec, RateLimitStore } from "./rate-limiter.js";

interface Caller {
  readonly name: string;
  readonly models: readonly string[];
  readonly limits?: LimitsConfig | undefined;
}

/** Authentication and rate limits in front of the gateway, plus the token charge after a call. */
export interface Security {
  readonly admit: Admission;
  /**
   * Charges a finished call's tokens to its caller's token bucket; undefined (no promise) when
   * there is nothing to charge: no token limit, or no tokens.
   */
  charge(record: CallRecord): Promise<void> | undefined;
  /** Calls refused by a rate limit so far. */
  readonly rejected: { count: number };
}

const anonymous = "";

/**
 * Builds admission from config. With auth off, every caller is anonymous and shares the default
 * limits. With auth on, a caller is an API key (`authorization: Bearer` or `x-api-key`, matched by
 * SHA-256 in constant time) or, without a key, a verified client certificate's CN listed in
 * `auth.clientCertificates`. Then the model must match one of the caller's globs, then the
 * request bucket and (if in debt) the token bucket must allow the call.
 */
export function createSecurity(auth: AuthConfig, defaults: LimitsConfig, store: RateLimitStore): Security {
  const byName = new Map<string, Caller>();
  for (const k of [...auth.keys, ...auth.clientCertificates]) byName.set(k.name, k);
  const rejected = { count: 0 };

  function identify(headers: Readonly<Record<string, string>>, peerCommonName: string | undefined): Caller {
    const key = presentedKey(headers);
    if (key !== undefined) {
      const k = matchKey(key, auth.keys);
      if (k === undefined) {
        throw new GatewayError(Code.Unauthenticated, "unknown API key", { reason: Reason.Unauthenticated });
      }
      return k;
    }
    if (peerCommonName !== undefined) {
      const c = auth.clientCertificates.find((x) => x.commonName === peerCommonName);
      if (c !== undefined) return c;
    }
    throw new GatewayError(Code.Unauthenticated, "an API key is required: send `authorization: Bearer <key>` or `x-api-key`", {
      reason: Reason.Unauthenticated,
    });
  }

  /** The buckets of a set of limits, made once per set (config objects do not change). */
  const specsOf = new WeakMap<LimitsConfig, { req?: BucketSpec; tok?: BucketSpec }>();
  function specs(limits: LimitsConfig): { req?: BucketSpec; tok?: BucketSpec } {
    let s = specsOf.get(limits);
    if (s === undefined) {
      s = {
        ...(limits.requestsPerMinute === undefined ? {} : { req: { capacity: limits.requestsPerMinute, perMinute: limits.requestsPerMinute } }),
        ...(limits.tokensPerMinute === undefined ? {} : { tok: { capacity: limits.tokensPerMinute, perMinute: limits.tokensPerMinute } }),
      };
      specsOf.set(limits, s);
    }
    return s;
  }

  async function take(tenant: string, req: BucketSpec | undefined, tok: BucketSpec | undefined): Promise<void> {
    if (tok !== undefined) {
      // A caller in token debt waits until it is repaid; its usage is charged after each call.
      const t = await store.take(`tok:${tenant}`, tok, 0);
      if (!t.ok) throw limited(tenant, t.retryAfterMs, `${tok.perMinute} tokens`);
    }
    if (req !== undefined) {
      const r = await store.take(`req:${tenant}`, req, 1);
      if (!r.ok) throw limited(tenant, r.retryAfterMs, `${req.perMinute} requests`);
    }
  }

  /** A store's charge as a promise (whether the store answers at once or not; a throw rejects it). */
  async function chargeTokens(key: string, spec: BucketSpec, used: number): Promise<void> {
    await store.charge(key, spec, used);
  }

  function limited(tenant: string, retryAfterMs: number, what: string): GatewayError {
    rejected.count++;
    return new GatewayError(Code.ResourceExhausted, `rate limit of ${what} per minute reached; retry in ${Math.ceil(retryAfterMs / 1000)}s`, {
      reason: Reason.RateLimited,
      retryAfterMs,
      metadata: tenant === anonymous ? {} : { tenant },
    });
  }

  async function admitCaller({ rpc, model, ctx }: Parameters<Admission>[0]): Promise<void> {
    const caller = identify(ctx.headers, ctx.peerCommonName);
    ctx.tenant = caller.name;
    if (isModelCall(rpc) && !caller.models.some((g) => globMatch(g, model))) {
      throw new GatewayError(Code.PermissionDenied, `this caller may not use model "${echoed(model)}"`, {
        reason: Reason.ModelNotAllowed,
        metadata: { model: echoed(model) },
      });
    }
    const { req, tok } = specs(caller.limits ?? defaults);
    await take(caller.name, req, tok);
  }

  return {
    rejected,
    // With auth off and no default limits there is nothing to wait for: no promise at all.
    admit(call) {
      if (auth.enabled) return admitCaller(call);
      const { req, tok } = specs(defaults);
      if (req === undefined && tok === undefined) return;
      return take(anonymous, req, tok);
    },
    charge(record) {
      const caller = byName.get(record.tenant);
      const { tok } = specs(caller?.limits ?? defaults);
      const used = record.promptTokens + record.completionTokens;
      if (tok === undefined || used <= 0) return undefined;
      return chargeTokens(`tok:${record.tenant}`, tok, used);
    },
  };
}
