import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { type Logger, pino } from "pino";
import { parseConfig } from "../../src/config/load-config.js";
import { defaultConfigYaml } from "../../src/config/default-config.js";
import { type App, startApp } from "../../src/server/app.js";

export const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
export const binPath = fileURLToPath(new URL("../../bin/infergate.js", import.meta.url));

/**
 * Starts infergate in this process on free loopback ports. `yaml` is a whole config file; its
 * server section's listen addresses are replaced with port 0. `logger` gets its log (default:
 * none), for tests that read the lines.
 */
export async function startInProcess(yaml: string = defaultConfigYaml, logger: Logger = pino({ level: "silent" })): Promise<App> {
  const config = parseConfig(yaml, "(test)", {});
  config.server.listen = "127.0.0.1:0";
  config.server.httpListen = "127.0.0.1:0";
  config.server.adminListen = "127.0.0.1:0";
  return startApp(config, logger);
}

/** infergate running as its own process, through the installed command. */
export interface ServerProcess {
  readonly proc: ChildProcess;
  readonly grpcAddress: string;
  readonly httpAddress: string;
  readonly adminAddress: string;
  /** Every line the process wrote to stdout so far. */
  readonly lines: string[];
  /** Everything the process wrote to stderr so far. */
  readonly stderr: string;
  /** Sends SIGTERM and resolves with the exit code. */
  stop(): Promise<number | null>;
}

/** Options of {@link startProcess}. */
export interface ProcessOptions {
  /** Environment variables added to (or overriding) this process's own, e.g. secrets for `${NAME}`. */
  env?: Readonly<Record<string, string>>;
}

/** Starts `bin/infergate.js` with the given extra arguments on free loopback ports. */
export async function startProcess(args: string[] = [], options: ProcessOptions = {}): Promise<ServerProcess> {
  const proc = spawn(process.execPath, [binPath, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", ...args], {
    cwd: repoRoot,
    stdio: ["ignore", "pipe", "pipe"],
    ...(options.env === undefined ? {} : { env: { ...process.env, ...options.env } }),
  });
  const lines: string[] = [];
  let stderr = "";
  proc.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const rl = createInterface({ input: proc.stdout! });
  const listening = new Promise<{ grpc: string; http: string; admin: string }>((resolve, reject) => {
    rl.on("line", (line) => {
      lines.push(line);
      try {
        const rec = JSON.parse(line) as { msg?: string; grpc?: string; http?: string; admin?: string };
        if (rec.msg === "listening" && rec.grpc !== undefined && rec.http !== undefined && rec.admin !== undefined) {
          resolve({ grpc: rec.grpc, http: rec.http, admin: rec.admin });
        }
      } catch {
        // not a log line
      }
    });
    proc.once("exit", (code) => reject(new Error(`infergate exited with ${code} before listening: ${stderr}`)));
  });
  const { grpc, http, admin } = await listening;
  const exited = once(proc, "exit").then(([code]) => code as number | null);
  return {
    proc,
    grpcAddress: grpc,
    httpAddress: http,
    adminAddress: admin,
    lines,
    get stderr() {
      return stderr;
    },
    async stop() {
      if (proc.exitCode === null) {
        proc.kill("SIGTERM");
      }
      return exited;
    },
  };
}
