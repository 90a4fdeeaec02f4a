/** One problem in a configuration file, at a path like `upstreams[1].endpoints[0]`. */
export interface ConfigIssue {
  path: string;
  message: string;
}

/**
 * A configuration that cannot be used. Its message lists every problem, one per line, each as
 * `path: problem`, so that `infergate check-config` and start-up print the same text.
 */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
  readonly issues: readonly ConfigIssue[];

  constructor(issues: ConfigIssue[], source: string) {
    super(`invalid configuration ${source}:\n${issues.map((i) => `  ${formatIssue(i)}`).join("\n")}`);
    this.issues = issues;
  }
}

/** `path: message`, or just the message for problems of the whole file. */
export function formatIssue(issue: ConfigIssue): string {
  return issue.path === "" ? issue.message : `${issue.path}: ${issue.message}`;
}

/** Joins path segments the way a reader writes them: `upstreams[1].endpoints[0]`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const seg of path) {
    if (typeof seg === "number") {
      out += `[${seg}]`;
    } else {
      out += out === "" ? String(seg) : `.${String(seg)}`;
    }
  }
  return out;
}
