import { ConfigError, type ConfigIssue, formatIssue } from "../config/config-error.js";
import type { Config } from "../config/schema.js";
import type { Upstream } from "../core/upstream.js";
import { createUpstream } from "../gateway/create-upstream.js";
import { createRouter, type Router } from "../gateway/router.js";
import type { Logger } from "../observability/logger.js";
import type { Metrics } from "../observability/metrics.js";
import { appliedConfig, restartOnlyChanges, upstreamFingerprint } from "./config-reload.js";
import { readServerTls, type ServerTlsMaterial } from "./server-tls.js";

/**
 * The running upstreams by name, with the fingerprint of the configuration each was made from (a
 * reload keeps an upstream whose fingerprint is the same, with its pools and breakers), and those
 * a reload replaced, closed once the calls that started before it are done.
 */
export class UpstreamSet {
  private byName: Map<string, Upstream>;
  private fingerprints: Map<string, string>;
  private readonly retiring = new Set<Upstream>();
  private readonly closing = new Map<Upstream, Promise<void>>();

  constructor(
    config: Config,
    private readonly log: Logger,
  ) {
    this.byName = new Map(config.upstreams.map((u) => [u.name, createUpstream(u)]));
    this.fingerprints = new Map(config.upstreams.map((u) => [u.name, upstreamFingerprint(u)]));
  }

  get current(): ReadonlyMap<string, Upstream> {
    return this.byName;
  }

  /**
   * The upstreams of `config`: the running one where its fingerprint is unchanged, else a new one
   * (in `created`). Throws a ConfigError naming the upstream that cannot be created, having closed
   * those it made.
   */
  async next(config: Config): Promise<{ upstreams: Map<string, Upstream>; fingerprints: Map<string, string>; created: string[] }> {
    const upstreams = new Map<string, Upstream>();
    const fingerprints = new Map<string, string>();
    const made: Upstream[] = [];
    const created: string[] = [];
    try {
      config.upstreams.forEach((u, i) => {
        const fingerprint = upstreamFingerprint(u);
        const kept = this.byName.get(u.name);
        fingerprints.set(u.name, fingerprint);
        if (kept !== undefined && this.fingerprints.get(u.name) === fingerprint) {
          upstreams.set(u.name, kept);
          return;
        }
        try {
          const upstream = createUpstream(u);
          made.push(upstream);
          created.push(u.name);
          upstreams.set(u.name, upstream);
        } catch (err) {
          const e = err as NodeJS.ErrnoException;
          throw new ConfigError([{ path: `upstreams[${i}]`, message: `cannot be created (${e.code ?? String(e.message).split("\n")[0]!.slice(0, 200)})` }], "");
        }
      });
    } catch (err) {
      await Promise.all(made.map((u) => this.close(u)));
      throw err;
    }
    return { upstreams, fingerprints, created };
  }

  /** Closes the upstreams of a configuration that was not applied (see next). */
  async discard(upstreams: ReadonlyMap<string, Upstream>): Promise<void> {
    await Promise.all([...upstreams.values()].filter((u) => ![...this.byName.values()].includes(u)).map((u) => this.close(u)));
  }

  /**
   * Makes `next` the running set; the upstreams it no longer holds are closed once `drained` (the
   * calls that started before) resolves. Returns them.
   */
  replace(next: { upstreams: Map<string, Upstream>; fingerprints: Map<string, string> }, drained: Promise<void>): Upstream[] {
    const replaced = [...this.byName].filter(([name, u]) => next.upstreams.get(name) !== u).map(([, u]) => u);
    this.byName = next.upstreams;
    this.fingerprints = next.fingerprints;
    for (const u of replaced) this.retiring.add(u);
    void drained.then(() =>
      Promise.all(
        replaced.map(async (u) => {
          await this.close(u);
          this.retiring.delete(u);
        }),
      ),
    );
    return replaced;
  }

  /** Closes every upstream, running and retiring (shutdown). */
  async closeAll(): Promise<void> {
    await Promise.all([...this.byName.values(), ...this.retiring].map((u) => this.close(u)));
  }

  private close(u: Upstream): Promise<void> {
    let p = this.closing.get(u);
    if (p === undefined) {
      p = u.close().catch((err: unknown) => this.log.warn({ err, upstream: u.name }, "could not close an upstream"));
      this.closing.set(u, p);
    }
    return p;
  }
}

/** What a reload puts in place once the new configuration is known to be usable. */
export interface Installed {
  readonly config: Config;
  readonly router: Router;
  /** The server's TLS material, read again from the (possibly new) paths; undefined without TLS. */
  readonly tls: ServerTlsMaterial | undefined;
}

export interface ReloaderOptions {
  readonly config: Config;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly upstreams: UpstreamSet;
  /** True once shutdown began: a reload is then ignored. */
  readonly stopping: () => boolean;
  /**
   * Puts a validated configuration in place (nothing may fail here): TLS, the gateway's router and
   * admission, the metrics' models. Resolves when the calls that started before have left.
   */
  readonly install: (next: Installed) => Promise<void>;
}

/**
 * The App's reload (see App.reload in app.ts): one at a time; a configuration that does not load,
 * whose TLS files cannot be read or whose upstream cannot be created is logged with every problem
 * and changes nothing; a valid one is applied as a whole, and what needs a restart is logged.
 */
export function createReloader(options: ReloaderOptions): (load: () => Promise<Config>) => Promise<boolean> {
  const { log, metrics, upstreams } = options;
  let running = options.config;

  const rejected = (issues: readonly ConfigIssue[]): false => {
    metrics.reloaded("rejected");
    // One line with every problem (path: problem); problems name fields and files, never their values.
    const problems = issues.map(formatIssue);
    log.error({ problems }, `configuration reload rejected, the running configuration stays: ${problems.join("; ")}`);
    return false;
  };

  async function apply(load: () => Promise<Config>): Promise<boolean> {
    if (options.stopping()) {
      log.warn("configuration reload ignored: shutting down");
      return false;
    }
    let next: Config;
    try {
      next = await load();
    } catch (err) {
      if (err instanceof ConfigError) return rejected(err.issues);
      throw err;
    }
    if (options.stopping()) return false;
    const restart = restartOnlyChanges(running, next);
    const applied = appliedConfig(running, next);
    let tls: ServerTlsMaterial | undefined;
    let made: Awaited<ReturnType<UpstreamSet["next"]>> | undefined;
    let router: Router;
    try {
      // Certificates are read again on every reload, at the configured (possibly new) paths.
      if (applied.server.tls !== undefined) tls = readServerTls(applied.server.tls, "(TLS files)");
      made = await upstreams.next(applied);
      router = createRouter(applied, made.upstreams);
    } catch (err) {
      if (made !== undefined) await upstreams.discard(made.upstreams);
      if (err instanceof ConfigError) return rejected(err.issues);
      throw err;
    }
    // From here on nothing fails: the new configuration is applied as a whole.
    const drained = options.install({ config: applied, router, tls });
    const replaced = upstreams.replace(made, drained);
    running = applied;
    if (restart.length > 0) {
      log.warn({ fields: restart }, `not reloaded, needs a restart (the running values stay): ${restart.join(", ")}`);
    }
    metrics.reloaded("ok");
    log.info(
      {
        models: applied.models.map((m) => m.name),
        upstreamsNew: made.created,
        upstreamsClosing: replaced.map((u) => u.name),
        tls: tls === undefined ? undefined : "reloaded",
      },
      "configuration reloaded",
    );
    return true;
  }

  let reloads = Promise.resolve(true);
  return (load) => {
    reloads = reloads.then(() => apply(load)).catch((err: unknown) => {
      // A bug; the running configuration stays, and the process serves on.
      metrics.reloaded("rejected");
      log.error({ err }, "configuration reload failed; the running configuration stays");
      return false;
    });
    return reloads;
  };
}
