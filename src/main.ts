import cluster from "node:cluster";
import { parseArgs } from "node:util";
import { ConfigError } from "./config/config-error.js";
import { loadConfig } from "./config/load-config.js";
import { type Config, configSchema } from "./config/schema.js";
import { createLogger, type Logger } from "./observability/logger.js";
import { hashKey } from "./security/api-keys.js";
import { startApp } from "./server/app.js";
import { tuneHeap } from "./server/heap-tuning.js";

const usage = `infergate — a gRPC inference proxy

Usage:
  infergate [--config PATH] [--listen HOST:PORT] [--http-listen HOST:PORT] [--admin-listen HOST:PORT]
            [--workers N]
      Serve. gRPC (with health and reflection) on --listen (default 127.0.0.1:50051);
      Connect, gRPC-Web and JSON on --http-listen (default 127.0.0.1:8080);
      /metrics, /healthz and /readyz on --admin-listen (default 127.0.0.1:9090).
      Without --config, the embedded default serves the built-in mock models.
      SIGHUP reloads the --config file (models, upstreams, auth, limits, TLS files); an invalid
      one is logged and the running configuration stays.
      --workers N runs N processes (node:cluster) that share the listening ports, to use N
      cores; default 1 (one process, the sidecar case). Each worker has its own cache,
      limits and sessions unless the redis: section shares them, and /metrics answers for
      whichever worker takes the connection.
  infergate hash-key < key.txt
      Print the SHA-256 of an API key read from stdin, for auth.keys[].sha256.
  infergate check-config PATH
      Validate a configuration file; exit 0 if it is valid, 1 with every problem listed if not.
  infergate --help
`;

async function main(argv: string[]): Promise<number> {
  if (argv[0] === "hash-key") {
    // The key comes from stdin, so it stays out of shell history and process listings.
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    const key = Buffer.concat(chunks).toString("utf8").replace(/\r?\n$/, "");
    if (key === "" || argv.length > 1) {
      process.stderr.write("usage: printf %s \"$KEY\" | infergate hash-key\n");
      return 2;
    }
    process.stdout.write(`${hashKey(key)}\n`);
    return 0;
  }
  if (argv[0] === "check-config") {
    const path = argv[1];
    if (path === undefined || argv.length > 2) {
      process.stderr.write(usage);
      return 2;
    }
    try {
      await loadConfig(path);
      process.stdout.write(`${path}: valid\n`);
      return 0;
    } catch (err) {
      if (err instanceof ConfigError) {
        process.stderr.write(`${err.message}\n`);
        return 1;
      }
      throw err;
    }
  }

  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        config: { type: "string" },
        listen: { type: "string" },
        "http-listen": { type: "string" },
        "admin-listen": { type: "string" },
        workers: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
    }));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n\n${usage}`);
    return 2;
  }
  if (values.help === true) {
    process.stdout.write(usage);
    return 0;
  }
  const workers = values.workers === undefined ? 1 : Number(values.workers);
  if (!Number.isInteger(workers) || workers < 1 || workers > 256) {
    process.stderr.write(`--workers: not a whole number from 1 to 256\n\n${usage}`);
    return 2;
  }

  const log = cluster.isWorker ? createLogger().child({ worker: cluster.worker!.id }) : createLogger();
  // The configuration as check-config validates it, with the flags on top; again on each SIGHUP.
  const load = async (): Promise<Config> => {
    const config = await loadConfig(values.config);
    // Flags override the file; they pass through the same validation as the file would.
    if (values.listen !== undefined || values["http-listen"] !== undefined || values["admin-listen"] !== undefined) {
      const server = { ...config.server };
      if (values.listen !== undefined) server.listen = values.listen;
      if (values["http-listen"] !== undefined) server.httpListen = values["http-listen"];
      if (values["admin-listen"] !== undefined) server.adminListen = values["admin-listen"];
      const checked = configSchema.shape.server.safeParse(server);
      if (!checked.success) {
        const issue = checked.error.issues[0]!;
        const flag = issue.path[0] === "listen" ? "--listen" : issue.path[0] === "adminListen" ? "--admin-listen" : "--http-listen";
        throw new ConfigError([{ path: flag, message: issue.message }], "(command line)");
      }
      return { ...config, server: checked.data };
    }
    return config;
  };
  // Until the app is up, a SIGHUP (its default action ends the process) is remembered, not fatal.
  let hangup: () => void = () => (hangupEarly = true);
  let hangupEarly = false;
  process.on("SIGHUP", () => hangup());
  let config;
  try {
    config = await load();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      return 1;
    }
    throw err;
  }

  if (workers > 1 && cluster.isPrimary) {
    // The configuration was checked above, once; each worker loads it again and serves.
    return runWorkers(workers, log);
  }

  let app;
  try {
    app = await startApp(config, log);
  } catch (err) {
    // The certificate files, checked before anything is opened.
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      return 1;
    }
    throw err;
  }
  const running = app;
  hangup = () => {
    if (values.config === undefined) {
      // The embedded default has no TLS files and nothing else to read again.
      log.info({ signal: "SIGHUP" }, "no --config file (embedded default): nothing to reload");
      return;
    }
    log.info({ signal: "SIGHUP", config: values.config }, "reloading the configuration");
    void running.reload(load);
  };
  if (hangupEarly) hangup();
  log.info(
    { grpc: app.grpcAddress, http: app.httpAddress, admin: app.adminAddress, models: config.models.map((m) => m.name), config: values.config ?? "(embedded default)" },
    "listening",
  );

  return new Promise<number>((resolve) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) {
        // A repeated SIGTERM (some supervisors resend it) must not cut the streams being drained;
        // a second Ctrl-C is a person who does not want to wait.
        if (signal === "SIGINT") {
          log.warn({ signal, inFlight: app.gateway.inFlight() }, "second interrupt: exiting without waiting");
          resolve(1);
        } else {
          log.info({ signal }, "already shutting down");
        }
        return;
      }
      stopping = true;
      log.info({ signal }, "shutting down");
      app.shutdown().then(
        () => resolve(0),
        (err: unknown) => {
          log.error({ err }, "shutdown failed");
          resolve(1);
        },
      );
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
  });
}

/**
 * The primary of `--workers N`: forks the workers (they share the listening sockets through
 * node:cluster), forwards SIGTERM and SIGINT to them as SIGTERM, a graceful stop, and exits once
 * every worker has: 0 if all drained cleanly. A worker that exits by itself stops the others and
 * the primary exits 1, for the supervisor to restart the whole; a process that is only partly
 * serving would hide the failure.
 */
function runWorkers(count: number, log: Logger): Promise<number> {
  return new Promise((resolve) => {
    let alive = count;
    let stopping = false;
    let failed = false;
    const signalAll = (signal: NodeJS.Signals) => {
      for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill(signal);
    };
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) {
        // As in one process: a second interrupt means "do not wait".
        if (signal === "SIGINT") signalAll("SIGINT");
        return;
      }
      stopping = true;
      log.info({ signal, workers: alive }, "shutting down workers");
      // A terminal's Ctrl-C reaches the workers too; SIGTERM is what they then get from here, so
      // they do not take it for a second interrupt.
      signalAll("SIGTERM");
    };
    cluster.on("exit", (worker, code, signal) => {
      alive--;
      // A worker still starting when the stop came ends by the signal itself: nothing was lost.
      if (code !== 0 && !(stopping && signal === "SIGTERM")) failed = true;
      if (!stopping) {
        stopping = true;
        failed = true;
        log.error({ worker: worker.id, code, signal }, "a worker exited; stopping the others");
        signalAll("SIGTERM");
      }
      if (alive === 0) resolve(failed ? 1 : 0);
    });
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
    // Each worker reads the configuration again itself (and logs what it did).
    process.on("SIGHUP", () => {
      if (stopping) return;
      log.info({ signal: "SIGHUP", workers: alive }, "forwarding SIGHUP to the workers");
      signalAll("SIGHUP");
    });
    for (let i = 0; i < count; i++) cluster.fork();
    log.info({ workers: count }, "started workers");
  });
}

process.on("unhandledRejection", (err) => {
  // A bug, but not one that should take every other call down with it.
  createLogger().error({ err }, "unhandled rejection");
});

const heap = tuneHeap(process.env);
if (typeof heap === "string") {
  process.stderr.write(`infergate: ${heap}\n`);
  process.exit(2);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`infergate: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
