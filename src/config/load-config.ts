import { readFile } from "node:fs/promises";
import { parseDocument } from "yaml";
import type { z } from "zod";
import { upstreamKindRegistry } from "../upstreams/registry.js";
import { ConfigError, type ConfigIssue, formatPath } from "./config-error.js";
import { defaultConfigYaml } from "./default-config.js";
import { type Config, configSchema } from "./schema.js";

/** Where environment variables come from; tests pass their own. */
export type Env = Readonly<Record<string, string | undefined>>;

/**
 * Reads and validates a configuration file; with no path, the embedded default (the mock model).
 * Throws ConfigError listing every problem with its path.
 */
export async function loadConfig(path: string | undefined, env: Env = process.env): Promise<Config> {
  if (path === undefined) {
    return parseConfig(defaultConfigYaml, "(embedded default)", env);
  }
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "error";
    throw new ConfigError([{ path: "", message: `cannot read file (${code})` }], path);
  }
  return parseConfig(text, path, env);
}

/** Validates configuration text; `source` names it in error messages. */
export function parseConfig(text: string, source: string, env: Env = process.env): Config {
  const doc = parseDocument(text, { prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      doc.errors.map((e) => ({ path: "", message: `YAML: ${e.message.split("\n")[0] ?? e.code}` })),
      source,
    );
  }
  const raw: unknown = doc.toJS() ?? {};
  const issues: ConfigIssue[] = [];
  const interpolated = interpolateEnv(raw, [], env, issues);
  if (issues.length > 0) {
    throw new ConfigError(issues, source);
  }
  const parsed = configSchema.safeParse(interpolated);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map(zodIssue), source);
  }
  const config = parsed.data;
  crossCheck(config, issues);
  if (issues.length > 0) {
    throw new ConfigError(issues, source);
  }
  return config;
}

function zodIssue(issue: z.core.$ZodIssue): ConfigIssue {
  const path = formatPath(issue.path);
  if (issue.code === "unrecognized_keys") {
    return { path, message: `unknown field${issue.keys.length > 1 ? "s" : ""} ${issue.keys.join(", ")}` };
  }
  if (issue.code === "invalid_type" && issue.input === undefined) {
    return { path, message: "required" };
  }
  return { path, message: issue.message };
}

const envRef = /\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\$/g;

/**
 * Replaces `${NAME}` in every string with the environment variable NAME (`$$` is a literal `$`).
 * A variable that is not set is an error naming it: a secret silently replaced by "" would only
 * show up later as a confusing 401 from the upstream.
 */
function interpolateEnv(value: unknown, path: PropertyKey[], env: Env, issues: ConfigIssue[]): unknown {
  if (typeof value === "string") {
    return value.replace(envRef, (match, name: string | undefined) => {
      if (name === undefined) {
        return "$";
      }
      const v = env[name];
      if (v === undefined) {
        issues.push({ path: formatPath(path), message: `environment variable ${name} is not set` });
        return "";
      }
      return v;
    });
  }
  if (Array.isArray(value)) {
    return value.map((v, i) => interpolateEnv(v, [...path, i], env, issues));
  }
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      out[k] = interpolateEnv(v, [...path, k], env, issues);
    }
    return out;
  }
  return value;
}

/** Checks that span fields: unique names, references, and each kind's own rules and options. */
function crossCheck(config: Config, issues: ConfigIssue[]): void {
  const upstreamIndex = new Map<string, number>();
  config.upstreams.forEach((u, i) => {
    if (upstreamIndex.has(u.name)) {
      issues.push({ path: `upstreams[${i}].name`, message: `duplicate upstream name "${u.name}"` });
    }
    upstreamIndex.set(u.name, i);
    const kind = upstreamKindRegistry[u.kind];
    if (kind.needsEndpoints && u.endpoints.length === 0) {
      issues.push({ path: `upstreams[${i}].endpoints`, message: `kind ${u.kind} needs at least one endpoint` });
    }
    const options = kind.optionsSchema.safeParse(u.options);
    if (!options.success) {
      for (const issue of options.error.issues) {
        const sub = zodIssue(issue);
        issues.push({ path: formatPath([`upstreams[${i}]`, "options", ...issue.path]), message: sub.message });
      }
    }
  });
  if (config.auth.enabled && config.auth.keys.length === 0 && config.auth.clientCertificates.length === 0) {
    issues.push({ path: "auth", message: "enabled, but no keys or client certificates are configured" });
  }
  if (config.auth.clientCertificates.length > 0 && config.server.tls?.clientCaFile === undefined) {
    issues.push({ path: "auth.clientCertificates", message: "need server.tls.clientCaFile to verify client certificates" });
  }
  const tenantNames = new Set<string>();
  [...config.auth.keys.map((k, i) => [k.name, `auth.keys[${i}].name`] as const), ...config.auth.clientCertificates.map((k, i) => [k.name, `auth.clientCertificates[${i}].name`] as const)].forEach(
    ([n, path]) => {
      if (tenantNames.has(n)) issues.push({ path, message: `duplicate caller name "${n}"` });
      tenantNames.add(n);
    },
  );
  checkBudgets(config, tenantNames, issues);
  const modelNames = new Set<string>();
  config.models.forEach((m, i) => {
    if (modelNames.has(m.name)) {
      issues.push({ path: `models[${i}].name`, message: `duplicate model name "${m.name}"` });
    }
    modelNames.add(m.name);
    const ui = upstreamIndex.get(m.upstream);
    if (ui === undefined) {
      issues.push({ path: `models[${i}].upstream`, message: `no upstream named "${m.upstream}"` });
      return;
    }
    const upstream = config.upstreams[ui];
    if (upstream === undefined) {
      return;
    }
    const kind = upstreamKindRegistry[upstream.kind];
    if (kind.modelOptionsSchema === undefined) {
      if (Object.keys(m.options).length > 0) {
        issues.push({ path: `models[${i}].options`, message: `upstream kind ${upstream.kind} takes no model options` });
      }
    } else {
      const parsed = kind.modelOptionsSchema.safeParse(m.options);
      if (!parsed.success) {
        for (const issue of parsed.error.issues) {
          issues.push({ path: formatPath([`models[${i}]`, "options", ...issue.path]), message: zodIssue(issue).message });
        }
      }
    }
    const supported = kind.capabilities;
    m.capabilities?.forEach((c, j) => {
      if (!supported.includes(c)) {
        issues.push({
          path: `models[${i}].capabilities[${j}]`,
          message:
            c === "embed"
              ? `upstream kind ${upstream.kind} has no embeddings API: serve embeddings from a model of kind openai, kserve, infergate or mock`
              : `upstream kind ${upstream.kind} cannot serve ${c}`,
        });
      }
    });
  });
  checkFallbacks(config, issues);
}

/** Budgets name configured callers, and groups are named once. */
function checkBudgets(config: Config, callers: ReadonlySet<string>, issues: ConfigIssue[]): void {
  const b = config.budgets;
  if (b === undefined) return;
  for (const k of Object.keys(b.keys)) {
    if (!callers.has(k)) issues.push({ path: `budgets.keys.${k}`, message: `no caller named "${k}" in auth.keys or auth.clientCertificates` });
  }
  const groups = new Set<string>();
  b.groups.forEach((g, i) => {
    if (groups.has(g.name)) issues.push({ path: `budgets.groups[${i}].name`, message: `duplicate group name "${g.name}"` });
    groups.add(g.name);
    g.keys.forEach((k, j) => {
      if (!callers.has(k)) issues.push({ path: `budgets.groups[${i}].keys[${j}]`, message: `no caller named "${k}" in auth.keys or auth.clientCertificates` });
    });
  });
}

/**
 * Fallbacks name other models, each once, that serve every call the model serves (so that any
 * call of the model can fall back to them).
 */
function checkFallbacks(config: Config, issues: ConfigIssue[]): void {
  const capabilities = new Map<string, readonly string[]>();
  for (const m of config.models) {
    const upstream = config.upstreams.find((u) => u.name === m.upstream);
    if (upstream !== undefined && !capabilities.has(m.name)) {
      capabilities.set(m.name, m.capabilities ?? upstreamKindRegistry[upstream.kind].defaultCapabilities);
    }
  }
  config.models.forEach((m, i) => {
    const seen = new Set<string>();
    m.fallbacks.forEach((f, j) => {
      const path = `models[${i}].fallbacks[${j}]`;
      const served = capabilities.get(f);
      if (f === m.name) {
        issues.push({ path, message: "a model cannot be its own fallback" });
      } else if (seen.has(f)) {
        issues.push({ path, message: `fallback "${f}" is listed twice` });
      } else if (served === undefined) {
        issues.push({ path, message: `no model named "${f}"` });
      } else {
        const missing = (capabilities.get(m.name) ?? []).filter((c) => !served.includes(c));
        if (missing.length > 0) {
          issues.push({ path, message: `fallback "${f}" cannot serve ${missing.join(", ")}, which "${m.name}" serves` });
        }
      }
      seen.add(f);
    });
  });
}
