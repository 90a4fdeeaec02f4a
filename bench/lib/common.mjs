/**
 * Helpers of the benchmark harness: processes on loopback ports, /proc readings, h2load runs and
 * their per-request logs, Prometheus scrapes, gRPC framing, percentiles. Internal to bench/.
 */
import { spawn, execFileSync } from "node:child_process";
import { closeSync, createWriteStream, openSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

export { sleep };

/** Ticks of /proc/<pid>/stat times per second. */
const clockTicks = Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim()) || 100;

/** A free TCP port on 127.0.0.1 (free when asked; the harness binds it right after). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/**
 * A child process of the harness, with its output in a log file (through the harness, which keeps
 * the first 64 KiB of stdout for `stdout()`, or with `direct` straight into the file). `stop()` sends SIGTERM, then
 * SIGKILL after `killAfterMs`, and resolves with the exit code.
 */
export function startChild(name, command, args, { env = {}, cwd, logDir, killAfterMs = 20_000, direct = false } = {}) {
  const logPath = join(logDir, `${name}.log`);
  let stdout = "";
  let proc;
  let log;
  if (direct) {
    // Output straight into the file: a chatty process (a log line per call) costs the harness nothing.
    const fd = openSync(logPath, "w");
    proc = spawn(command, args, { cwd, env: { ...process.env, ...env }, stdio: ["ignore", fd, fd] });
    closeSync(fd);
    log = { end() {} };
  } else {
    log = createWriteStream(logPath);
    proc = spawn(command, args, { cwd, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    proc.stdout.on("data", (d) => {
      if (stdout.length < 65_536) stdout += d.toString();
      log.write(d);
    });
    proc.stderr.on("data", (d) => log.write(d));
  }
  const exited = new Promise((resolve) => proc.once("exit", (code, signal) => resolve(code ?? signal)));
  return {
    name,
    proc,
    pid: proc.pid,
    exited,
    /** What the process printed on stdout so far (its first 64 KiB). */
    stdout: () => stdout,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill("SIGTERM");
        const timer = setTimeout(() => proc.kill("SIGKILL"), killAfterMs);
        const code = await exited;
        clearTimeout(timer);
        log.end();
        return code;
      }
      log.end();
      return exited;
    },
  };
}

/** Waits until `check()` resolves true, polling; fails after `timeoutMs` or when `child` exits. */
export async function waitUntil(what, check, { timeoutMs = 30_000, child } = {}) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (child !== undefined && child.proc.exitCode !== null) {
      throw new Error(`${child.name} exited (${child.proc.exitCode}) while waiting for ${what}`);
    }
    try {
      if (await check()) return;
    } catch {
      // not yet
    }
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** Waits for a line of JSON `{"port":N}` on a child's stdout; resolves with N. */
export async function portFromStdout(child) {
  let port;
  await waitUntil(`${child.name} to print its port`, () => {
    const m = /\{"port":(\d+)\}/.exec(child.stdout());
    if (m !== null) port = Number(m[1]);
    return m !== null;
  }, { child });
  return port;
}

/** Whether a GET of `url` answers with a 2xx status. */
export async function httpOk(url) {
  const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
  await res.arrayBuffer();
  return res.ok;
}

/** The pids of `pid` and all its descendants (cluster workers). */
export function processTree(pid) {
  const children = new Map();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (!children.has(ppid)) children.set(ppid, []);
      children.get(ppid).push(Number(entry));
    } catch {
      // gone
    }
  }
  const out = [];
  const walk = (p) => {
    out.push(p);
    for (const c of children.get(p) ?? []) walk(c);
  };
  walk(pid);
  return out;
}

/** CPU time (user + system) of a process and its descendants, in milliseconds. */
export function cpuMs(pid) {
  let ticks = 0;
  for (const p of processTree(pid)) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      // Fields 14 and 15 of proc(5), counted from 1; here counted from field 3.
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // gone
    }
  }
  return (ticks * 1000) / clockTicks;
}

/** Resident memory of a process and its descendants: {rssKiB, peakKiB} (VmRSS, VmHWM). */
export function memory(pid) {
  let rssKiB = 0;
  let peakKiB = 0;
  for (const p of processTree(pid)) {
    try {
      const status = readFileSync(`/proc/${p}/status`, "utf8");
      rssKiB += Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
      peakKiB += Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
    } catch {
      // gone
    }
  }
  return { rssKiB, peakKiB };
}

/** The value at quantile q (0..1) of ascending-sorted numbers (nearest rank). */
export function quantile(sorted, q) {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

/** Prepends the 5-byte gRPC message prefix (uncompressed, big-endian length). */
export function grpcFrame(bytes) {
  const out = Buffer.alloc(5 + bytes.length);
  out.writeUInt32BE(bytes.length, 1);
  Buffer.from(bytes).copy(out, 5);
  return out;
}

/** Parses the Prometheus text format into `name{labels}` → value (labels as printed). */
export function parseMetrics(text) {
  const out = new Map();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const i = line.lastIndexOf(" ");
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

/**
 * Scrapes `/metrics` of an admin address. A busy server may reset a kept-alive connection just as
 * the next scrape reuses it: such a scrape is tried again, up to three times.
 */
export async function scrape(adminAddress) {
  for (let attempt = 1; ; attempt++) {
    try {
      const res = await fetch(`http://${adminAddress}/metrics`, { signal: AbortSignal.timeout(10_000) });
      return parseMetrics(await res.text());
    } catch (err) {
      if (attempt === 3) throw err;
      await sleep(100);
    }
  }
}

/** Sums the metric samples whose key starts with `prefix` and contains every `parts`. */
export function sumMetric(metrics, prefix, ...parts) {
  let total = 0;
  for (const [k, v] of metrics) {
    if (k.startsWith(prefix) && parts.every((p) => k.includes(p))) total += v;
  }
  return total;
}

/**
 * Runs h2load once and returns its counts, throughput and the latency percentiles computed from
 * its per-request log (`--log-file`: start µs, status, duration µs per request).
 *
 * `target`: { url, body (file), headers: string[], h1?: boolean }; `load`: { clients, streams,
 * durationS, warmupS }.
 */
export async function h2load(target, load, { logDir, tag }) {
  const logFile = join(logDir, `h2load-${tag}.tsv`);
  // h2load appends to an existing log file.
  rmSync(logFile, { force: true });
  const args = [
    "-c", String(load.clients),
    "-m", String(load.streams),
    "-t", "1",
    "-D", `${load.durationS}s`,
    "--warm-up-time", `${load.warmupS}s`,
    "--log-file", logFile,
    "-d", target.body,
    ...target.headers.flatMap((h) => ["-H", h]),
    ...(target.h1 ? ["--h1"] : []),
    target.url,
  ];
  const out = await run("h2load", args, (load.durationS + load.warmupS) * 1000 + 30_000);
  const num = (re) => Number(re.exec(out)?.[1] ?? NaN);
  const requests = {
    total: num(/requests: (\d+) total/),
    done: num(/(\d+) done/),
    succeeded: num(/(\d+) succeeded/),
    failed: num(/(\d+) failed/),
    errored: num(/(\d+) errored/),
    timeout: num(/(\d+) timeout/),
  };
  const statusLine = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out);
  const non2xx = statusLine === null ? NaN : Number(statusLine[2]) + Number(statusLine[3]) + Number(statusLine[4]);
  const durations = [];
  for (const line of readFileSync(logFile, "utf8").split("\n")) {
    const cols = line.split("\t");
    if (cols.length >= 3 && cols[1] !== "-1") durations.push(Number(cols[2]));
  }
  durations.sort((a, b) => a - b);
  const rps = num(/finished in [\d.]+\w+, ([\d.]+) req\/s/);
  return {
    ...requests,
    non2xx,
    rps,
    p50Ms: quantile(durations, 0.5) / 1000,
    p90Ms: quantile(durations, 0.9) / 1000,
    p99Ms: quantile(durations, 0.99) / 1000,
    samples: durations.length,
    raw: out,
  };
}

/** Processes of run() still running, for killAll(). */
const running = new Set();

/** Kills (SIGKILL) what run() started and has not ended: for a harness that is going down. */
export function killAll() {
  for (const p of running) p.kill("SIGKILL");
}

/** Runs a command to completion; resolves with stdout, rejects on a non-zero exit. */
export function run(command, args, timeoutMs = 600_000, options = {}) {
  return new Promise((resolve, reject) => {
    const p = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], ...options });
    running.add(p);
    let out = "";
    let err = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (err += d));
    const timer = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
    p.on("exit", (code, signal) => {
      running.delete(p);
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`${command} ${args.join(" ")} exited ${code ?? signal}: ${err.slice(-2000)}${out.slice(-2000)}`));
    });
  });
}
