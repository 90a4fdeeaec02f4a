import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { createServer, Socket } from "node:net";

/** A redis-server of a test's own, on a free loopback port, without persistence. */
export interface RedisServer {
  readonly port: number;
  /** redis://127.0.0.1:PORT */
  readonly url: string;
  /** Kills it (SIGKILL: an outage, not a clean shutdown); resolves once it is gone. */
  kill(): Promise<void>;
  /** Starts it again on the same port (after kill), empty; resolves once it answers PING. */
  restart(): Promise<void>;
}

/** A port that was free a moment ago: bind port 0 on loopback, read it, close. */
async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Whether something on PORT answers PING with +PONG. */
function pings(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = new Socket();
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(500, () => done(false));
    s.once("error", () => done(false));
    s.connect(port, "127.0.0.1", () => s.write("PING\r\n"));
    s.once("data", (d) => done(d.toString().startsWith("+PONG")));
  });
}

function spawnRedis(port: number): ChildProcess {
  return spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "yes"], {
    stdio: ["ignore", "ignore", "pipe"],
  });
}

/** Spawns redis-server on `port`; resolves once it answers, rejects if it exits first. */
async function launch(port: number): Promise<ChildProcess> {
  const proc = spawnRedis(port);
  let stderr = "";
  proc.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = once(proc, "exit").then(() => {
    throw new Error(`redis-server exited on port ${port}: ${stderr}`);
  });
  exited.catch(() => {});
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) await exited;
    if (await pings(port)) return proc;
    if (Date.now() > deadline) {
      proc.kill("SIGKILL");
      throw new Error(`redis-server did not answer PING on port ${port}: ${stderr}`);
    }
    await Promise.race([new Promise((r) => setTimeout(r, 50)), exited]);
  }
}

/**
 * Starts a redis-server (Debian's package; CI installs it with scripts/install-test-deps.sh) on
 * a free loopback port, retrying on another port if the one picked was taken meanwhile. Fails —
 * never skips — when redis-server is missing.
 */
export async function startRedis(): Promise<RedisServer> {
  if (spawnSync("redis-server", ["--version"]).error !== undefined) {
    throw new Error("redis-server is not installed: run scripts/install-test-deps.sh (Debian package redis-server)");
  }
  let lastError: unknown;
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    let proc: ChildProcess;
    try {
      proc = await launch(port);
    } catch (err) {
      lastError = err;
      continue;
    }
    const server: RedisServer = {
      port,
      url: `redis://127.0.0.1:${port}`,
      async kill() {
        if (proc.exitCode === null && proc.signalCode === null) {
          const gone = once(proc, "exit");
          proc.kill("SIGKILL");
          await gone;
        }
      },
      async restart() {
        await server.kill();
        proc = await launch(port);
      },
    };
    return server;
  }
  throw lastError;
}
