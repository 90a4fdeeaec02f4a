/**
 * The deployment files (deploy/), checked as far as a machine without Docker or Kubernetes can:
 * the YAML files parse and say what they must (non-root, probes on the admin port, config from a
 * ConfigMap, the key from a Secret, resource requests, a demo client that waits for health), the
 * configurations they carry pass `infergate check-config`, and the Dockerfile's build steps run
 * as a script — its COPY and RUN steps, stage by stage, in a clean temporary directory holding the
 * build context (the repository's files minus the .dockerignore) — after which the runtime stage,
 * started with the image's ENTRYPOINT and CMD, serves /healthz, /readyz, gRPC health and the
 * demo client's calls, holds production dependencies only, and passes its own HEALTHCHECK.
 */
import { execFile, execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, posix, resolve } from "node:path";
import { createInterface } from "node:readline";
import { afterAll, describe, expect, it } from "vitest";
import { parse, parseAllDocuments } from "yaml";
import { healthClient } from "../helpers/proto-clients.js";
import { binPath, repoRoot } from "../helpers/servers.js";

const deployDir = join(repoRoot, "deploy");
const read = (path: string) => readFileSync(join(deployDir, path), "utf8");

// --- a parser for the Dockerfile subset deploy/Dockerfile uses ----------------------------------

/** One instruction: its keyword (upper case), flags (`--from=build`) and the rest of the line. */
interface Instruction {
  readonly keyword: string;
  readonly flags: Readonly<Record<string, string>>;
  readonly args: string;
}

/** A build stage: `FROM <image> AS <name>` and its instructions. */
interface Stage {
  readonly name: string;
  readonly image: string;
  readonly instructions: Instruction[];
}

interface Dockerfile {
  /** ARGs declared before the first FROM, with their defaults. */
  readonly args: Readonly<Record<string, string>>;
  readonly stages: Stage[];
}

/**
 * Joins `\` continuations, drops comments and blank lines, splits each instruction into its
 * keyword, leading `--flag=value` options and arguments. Knows ARG, FROM … AS, and leaves the
 * meaning of the others to the caller.
 */
function parseDockerfile(text: string): Dockerfile {
  const lines: string[] = [];
  let pending = "";
  for (const raw of text.split("\n")) {
    if (pending === "" && /^\s*#/.test(raw)) continue;
    const line = raw.replace(/\s+$/, "");
    if (line.endsWith("\\")) {
      pending += `${line.slice(0, -1)} `;
      continue;
    }
    const whole = `${pending}${line}`.trim();
    pending = "";
    if (whole !== "") lines.push(whole);
  }
  const args: Record<string, string> = {};
  const stages: Stage[] = [];
  for (const line of lines) {
    const m = /^(\S+)\s+(.*)$/.exec(line);
    if (m === null) throw new Error(`Dockerfile: cannot read ${JSON.stringify(line)}`);
    const keyword = m[1]!.toUpperCase();
    let rest = m[2]!;
    const flags: Record<string, string> = {};
    for (let f = /^--([a-z-]+)=(\S+)\s+/.exec(rest); f !== null; f = /^--([a-z-]+)=(\S+)\s+/.exec(rest)) {
      flags[f[1]!] = f[2]!;
      rest = rest.slice(f[0].length);
    }
    if (keyword === "FROM") {
      const from = /^(\S+)\s+AS\s+(\S+)$/i.exec(rest);
      if (from === null) throw new Error(`Dockerfile: every stage is named (FROM <image> AS <name>): ${line}`);
      const image = from[1]!.replace(/\$\{(\w+)\}/g, (_, n: string) => args[n] ?? "");
      stages.push({ name: from[2]!, image, instructions: [] });
    } else if (keyword === "ARG" && stages.length === 0) {
      const [k, v = ""] = rest.split("=", 2);
      args[k!] = v;
    } else {
      const stage = stages.at(-1);
      if (stage === undefined) throw new Error(`Dockerfile: ${keyword} before FROM`);
      stage.instructions.push({ keyword, flags, args: rest });
    }
  }
  return { args, stages };
}

/** The JSON array of an exec-form instruction (ENTRYPOINT, CMD, HEALTHCHECK CMD). */
function execForm(args: string): string[] {
  const value: unknown = JSON.parse(args);
  if (!Array.isArray(value) || !value.every((v) => typeof v === "string")) throw new Error(`not an exec form: ${args}`);
  return value as string[];
}

function only(stage: Stage, keyword: string): Instruction {
  const found = stage.instructions.filter((i) => i.keyword === keyword);
  if (found.length !== 1) throw new Error(`stage ${stage.name}: expected one ${keyword}, found ${found.length}`);
  return found[0]!;
}

// --- .dockerignore: the subset of patterns used (name, dir/name, **/name, * within a segment) ---

function ignoreMatcher(text: string): (path: string) => boolean {
  const patterns = text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"))
    .map((p) => {
      if (p.startsWith("!")) throw new Error("negated .dockerignore patterns are not supported by this test");
      let body = "";
      for (const seg of p.replace(/^\/+|\/+$/g, "").split("/")) {
        body += seg === "**" ? "(?:[^/]+/)*" : `${seg.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, "[^/]*").replace(/\?/g, "[^/]")}/`;
      }
      body = body.replace(/\/$/, "");
      // A pattern excludes the path itself and everything under it.
      return new RegExp(`^${body}(?:/.*)?$`);
    });
  return (path) => patterns.some((re) => re.test(path));
}

// --- running the build as a script -------------------------------------------------------------

/** Runs a shell command; rejects with its output when it fails. */
function sh(command: string, cwd: string, env: NodeJS.ProcessEnv, timeoutMs: number): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    execFile("sh", ["-c", command], { cwd, env, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err === null) resolvePromise();
      else reject(new Error(`RUN ${command} (in ${cwd}) failed: ${err.message}\n${stdout}\n${stderr}`));
    });
  });
}

/**
 * Executes the stages' WORKDIR, ENV, COPY and RUN steps: each stage's file system is a directory
 * `<root>/stages/<name>`, the build context `<root>/context`. Other instructions are metadata.
 * Returns the directory of each stage's last WORKDIR.
 */
async function runBuild(file: Dockerfile, root: string): Promise<Map<string, string>> {
  const context = join(root, "context");
  const workdirs = new Map<string, string>();
  for (const stage of file.stages) {
    const fsRoot = join(root, "stages", stage.name);
    mkdirSync(fsRoot, { recursive: true });
    let workdir = "/";
    const env: Record<string, string> = {};
    const inStage = (path: string) => join(fsRoot, posix.resolve(workdir, path));
    for (const { keyword, flags, args } of stage.instructions) {
      switch (keyword) {
        case "WORKDIR":
          workdir = posix.resolve(workdir, args);
          mkdirSync(inStage("."), { recursive: true });
          break;
        case "ENV": {
          const [k, v] = args.split("=", 2);
          env[k!] = v!;
          break;
        }
        case "COPY": {
          const parts = args.split(/\s+/);
          const dest = parts.pop()!;
          const from = flags["from"];
          const sourceRoot = from === undefined ? context : join(root, "stages", from);
          if (from !== undefined && !file.stages.some((s) => s.name === from)) throw new Error(`COPY --from=${from}: no such stage`);
          for (const src of parts) {
            const source = join(sourceRoot, from === undefined ? posix.normalize(src) : posix.resolve("/", src));
            if (!existsSync(source)) throw new Error(`COPY ${src}: not in the ${from === undefined ? "build context" : `stage ${from}`}`);
            const target = dest.endsWith("/") || parts.length > 1 ? join(inStage(dest), posix.basename(src)) : inStage(dest);
            mkdirSync(dirname(target), { recursive: true });
            cpSync(source, target, { recursive: true });
          }
          break;
        }
        case "RUN":
          // Offline-friendly: npm takes packages from its local cache when it has them.
          await sh(args, inStage("."), { ...process.env, ...env, npm_config_prefer_offline: "true", npm_config_update_notifier: "false" }, 300_000);
          break;
        default:
          break;
      }
    }
    workdirs.set(stage.name, inStage("."));
  }
  return workdirs;
}

// --- the tests ---------------------------------------------------------------------------------

const dockerfile = parseDockerfile(read("Dockerfile"));
const runtime = dockerfile.stages.at(-1)!;

/** Runs the repository's infergate command (built by the global setup). */
function infergate(args: string[], env: Record<string, string> = {}): { code: number; output: string } {
  try {
    const out = execFileSync(process.execPath, [binPath, ...args], { env: { ...process.env, ...env }, stdio: "pipe", timeout: 20_000 });
    return { code: 0, output: out.toString() };
  } catch (err) {
    const e = err as { status: number; stdout: Buffer; stderr: Buffer };
    return { code: e.status, output: `${e.stdout.toString()}${e.stderr.toString()}` };
  }
}

const scratch = mkdtempSync(join(tmpdir(), "infergate-deploy-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const portOf = (address: string) => Number(address.slice(address.lastIndexOf(":") + 1));

interface K8sObject {
  kind: string;
  metadata: { name: string };
  data?: Record<string, string>;
  spec?: { template: { spec: PodSpec } };
}
interface Probe {
  httpGet?: { path: string; port: string | number };
}
interface Container {
  name: string;
  image: string;
  restartPolicy?: string;
  command?: string[];
  args?: string[];
  env?: { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }[];
  ports?: { name?: string; containerPort: number }[];
  startupProbe?: Probe;
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  resources?: { requests?: { cpu?: string; memory?: string }; limits?: { memory?: string } };
  securityContext?: { allowPrivilegeEscalation?: boolean; readOnlyRootFilesystem?: boolean; runAsNonRoot?: boolean; capabilities?: { drop?: string[] } };
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
}
interface PodSpec {
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number };
  terminationGracePeriodSeconds?: number;
  initContainers?: Container[];
  containers: Container[];
  volumes?: { name: string; configMap?: { name: string } }[];
}

describe("deploy/k8s/sidecar.yaml", () => {
  const docs = parseAllDocuments(read("k8s/sidecar.yaml"));
  const objects = docs.map((d) => {
    expect(d.errors).toEqual([]);
    return d.toJS() as K8sObject;
  });
  const configMap = objects.find((o) => o.kind === "ConfigMap")!;
  const deployment = objects.find((o) => o.kind === "Deployment")!;
  const pod = deployment?.spec?.template.spec;
  const sidecar = pod?.initContainers?.find((c) => c.name === "infergate");
  const configText = configMap?.data?.["infergate.yaml"] ?? "";

  it("holds a ConfigMap and a Deployment whose pod runs the app with infergate as a native sidecar", () => {
    expect(objects.map((o) => o.kind)).toEqual(["ConfigMap", "Deployment"]);
    expect(pod!.containers.map((c) => c.name)).toEqual(["app"]);
    expect(sidecar).toMatchObject({ restartPolicy: "Always", image: "infergate:0.1.0", command: ["node", "bin/infergate.js"], args: ["--config", "/etc/infergate/infergate.yaml"] });
  });

  it("runs as non-root with a read-only root file system and no capabilities", () => {
    expect(pod!.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 1000 });
    for (const c of [...pod!.initContainers!, ...pod!.containers]) {
      expect(c.securityContext).toEqual({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ["ALL"] } });
    }
  });

  it("probes the admin port that the ConfigMap's config listens on, on the pod IP", () => {
    const config = parse(configText) as { server: { listen: string; httpListen: string; adminListen: string; shutdownGraceMs: number } };
    expect(config.server.adminListen).toBe("0.0.0.0:9090");
    // Callers are in the pod: the API listeners stay on loopback.
    expect([config.server.listen, config.server.httpListen]).toEqual(["127.0.0.1:50051", "127.0.0.1:8080"]);
    expect(sidecar!.ports).toEqual([{ name: "admin", containerPort: portOf(config.server.adminListen) }]);
    expect(sidecar!.startupProbe?.httpGet).toEqual({ path: "/healthz", port: "admin" });
    expect(sidecar!.livenessProbe?.httpGet).toEqual({ path: "/healthz", port: "admin" });
    expect(sidecar!.readinessProbe?.httpGet).toEqual({ path: "/readyz", port: "admin" });
    // The grace period outlasts infergate's drain.
    expect(pod!.terminationGracePeriodSeconds! * 1000).toBeGreaterThan(config.server.shutdownGraceMs);
  });

  it("takes its config from the ConfigMap and the upstream key from a Secret, never from the file", () => {
    const mount = sidecar!.volumeMounts!.find((m) => m.mountPath === "/etc/infergate")!;
    expect(mount.readOnly).toBe(true);
    expect(pod!.volumes!.find((v) => v.name === mount.name)?.configMap?.name).toBe(configMap.metadata.name);
    expect(sidecar!.env!.find((e) => e.name === "OPENAI_API_KEY")).toEqual({
      name: "OPENAI_API_KEY",
      valueFrom: { secretKeyRef: { name: "infergate-upstream-keys", key: "OPENAI_API_KEY" } },
    });
    expect(configText).toContain("apiKey: ${OPENAI_API_KEY}");
    expect(objects.some((o) => o.kind === "Secret")).toBe(false);
  });

  it("requests resources for both containers and bounds infergate's memory", () => {
    for (const c of [...pod!.initContainers!, ...pod!.containers]) {
      expect(c.resources?.requests?.cpu).toMatch(/^\d+m$/);
      expect(c.resources?.requests?.memory).toMatch(/^\d+Mi$/);
      expect(c.resources?.limits?.memory).toMatch(/^\d+Mi$/);
    }
    // The cache bound of the config fits well inside the memory limit.
    const cacheBytes = (parse(configText) as { cache: { maxBytes: number } }).cache.maxBytes;
    expect(cacheBytes * 4).toBeLessThanOrEqual(Number(sidecar!.resources!.limits!.memory!.replace("Mi", "")) * 1024 * 1024);
  });

  it("carries a configuration that check-config accepts", () => {
    const path = join(scratch, "configmap-infergate.yaml");
    writeFileSync(path, configText);
    expect(infergate(["check-config", path], { OPENAI_API_KEY: "sk-placeholder" })).toEqual({ code: 0, output: `${path}: valid\n` });
  });
});

interface ComposeService {
  image?: string;
  build?: { context: string; dockerfile: string };
  command?: string[];
  entrypoint?: string[];
  volumes?: string[];
  ports?: string[];
  environment?: Record<string, string>;
  depends_on?: Record<string, { condition: string }>;
  read_only?: boolean;
}

describe("deploy/compose.yaml", () => {
  const compose = parse(read("compose.yaml"), { merge: true }) as { services: Record<string, ComposeService> };
  const { infergate: gateway, "demo-client": demo } = compose.services;

  it("builds infergate from deploy/Dockerfile with the repository as context", () => {
    expect(Object.keys(compose.services)).toEqual(["infergate", "demo-client"]);
    for (const s of [gateway!, demo!]) {
      expect(s.image).toBe("infergate:0.1.0");
      expect(s.build).toEqual({ context: "..", dockerfile: "deploy/Dockerfile" });
      expect(existsSync(join(resolve(deployDir, s.build!.context), s.build!.dockerfile))).toBe(true);
      expect(s.read_only).toBe(true);
    }
  });

  it("serves the mounted config, whose listen ports are the published ones, and which check-config accepts", () => {
    expect(gateway!.command).toEqual(["--config", "/etc/infergate/infergate.yaml"]);
    expect(gateway!.volumes).toEqual(["./infergate.yaml:/etc/infergate/infergate.yaml:ro"]);
    const config = parse(read("infergate.yaml")) as { server: { listen: string; httpListen: string; adminListen: string } };
    const ports = [config.server.listen, config.server.httpListen, config.server.adminListen];
    expect(ports.every((a) => a.startsWith("0.0.0.0:"))).toBe(true);
    expect(gateway!.ports).toEqual(ports.map((a) => `127.0.0.1:${portOf(a)}:${portOf(a)}`));
    // The image's HEALTHCHECK asks the admin port this config listens on.
    expect(only(runtime, "HEALTHCHECK").args).toContain(`http://127.0.0.1:${portOf(config.server.adminListen)}/healthz`);
    const path = join(deployDir, "infergate.yaml");
    expect(infergate(["check-config", path])).toEqual({ code: 0, output: `${path}: valid\n` });
  });

  it("starts the demo client once infergate is healthy, against its HTTP port", () => {
    expect(demo!.depends_on).toEqual({ infergate: { condition: "service_healthy" } });
    expect(demo!.entrypoint).toEqual(["node", "/demo/demo-client.mjs"]);
    expect(demo!.volumes).toEqual(["./demo-client.mjs:/demo/demo-client.mjs:ro"]);
    expect(demo!.environment).toEqual({ INFERGATE_URL: "http://infergate:8080", INFERGATE_MODEL: "mock-chat" });
  });
});

describe("deploy/Dockerfile", () => {
  it("has a build stage and a runtime stage that runs as non-root, with a HEALTHCHECK", () => {
    expect(dockerfile.stages.map((s) => [s.name, s.image])).toEqual([
      ["build", "node:20-bookworm-slim"],
      ["runtime", "node:20-bookworm-slim"],
    ]);
    expect(only(runtime, "USER").args).toBe("1000:1000");
    expect(execForm(only(runtime, "ENTRYPOINT").args)).toEqual(["node", "bin/infergate.js"]);
    const healthcheck = only(runtime, "HEALTHCHECK");
    expect(Object.keys(healthcheck.flags)).toEqual(["interval", "timeout", "start-period", "retries"]);
    expect(healthcheck.args).toMatch(/^CMD \[/);
    // Production dependencies only in the runtime stage; the build stage's compiler stays behind.
    const runs = runtime.instructions.filter((i) => i.keyword === "RUN").map((i) => i.args);
    expect(runs).toEqual(["npm ci --omit=dev --no-audit --no-fund"]);
    expect(runtime.instructions.filter((i) => i.keyword === "COPY").map((i) => [i.flags["from"], i.args])).toEqual([
      [undefined, "package.json package-lock.json ./"],
      ["build", "/app/dist ./dist"],
      [undefined, "bin ./bin"],
    ]);
  });

  it(
    "its steps, run as a script in a clean directory, give a runtime that serves health and calls",
    async () => {
      // The build context: the files git tracks or would track (new files not yet committed
      // included), minus the .dockerignore, as `docker build .` would send them.
      const context = join(scratch, "build", "context");
      const ignored = ignoreMatcher(read("Dockerfile.dockerignore"));
      const files = execFileSync("git", ["ls-files", "--cached", "--others", "--exclude-standard", "-z"], { cwd: repoRoot })
        .toString()
        .split("\0")
        .filter((f) => f !== "" && !ignored(f) && existsSync(join(repoRoot, f)));
      expect(files).toContain("package-lock.json");
      expect(files.some((f) => f.startsWith("test/") || f.startsWith("node_modules/"))).toBe(false);
      for (const f of files) {
        mkdirSync(dirname(join(context, f)), { recursive: true });
        cpSync(join(repoRoot, f), join(context, f));
      }

      const workdirs = await runBuild(dockerfile, join(scratch, "build"));
      const app = workdirs.get("runtime")!;
      // What the image holds: compiled code, bin/, production dependencies; no sources, no dev tools.
      expect(existsSync(join(app, "dist/src/main.js"))).toBe(true);
      expect(existsSync(join(app, "dist/gen/infergate.binpb"))).toBe(true);
      expect(existsSync(join(app, "node_modules/@grpc/grpc-js/package.json"))).toBe(true);
      for (const absent of ["src", "test", "node_modules/typescript", "node_modules/vitest", "node_modules/@bufbuild/buf"]) {
        expect([absent, existsSync(join(app, absent))]).toEqual([absent, false]);
      }

      // ENTRYPOINT + CMD as the image runs them; the last flags win, so free loopback ports are
      // appended instead of 0.0.0.0 and the fixed ports.
      const [exe, ...entryArgs] = execForm(only(runtime, "ENTRYPOINT").args);
      expect(exe).toBe("node");
      const cmd = execForm(only(runtime, "CMD").args);
      const env = Object.fromEntries(runtime.instructions.filter((i) => i.keyword === "ENV").map((i) => i.args.split("=", 2)));
      const proc = spawn(process.execPath, [...entryArgs, ...cmd, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"], {
        cwd: app,
        env: { ...process.env, ...env },
        stdio: ["ignore", "pipe", "pipe"],
      });
      const closed = once(proc, "close");
      let stderr = "";
      proc.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      try {
        const addresses = await new Promise<{ grpc: string; http: string; admin: string }>((resolveListening, reject) => {
          createInterface({ input: proc.stdout }).on("line", (line) => {
            try {
              const rec = JSON.parse(line) as { msg?: string; grpc: string; http: string; admin: string };
              if (rec.msg === "listening") resolveListening(rec);
            } catch {
              // not a log line
            }
          });
          proc.once("exit", (code) => reject(new Error(`the runtime exited with ${code}: ${stderr}`)));
        });

        const healthz = await fetch(`http://${addresses.admin}/healthz`);
        expect([healthz.status, await healthz.text()]).toEqual([200, "ok\n"]);
        const readyz = await fetch(`http://${addresses.admin}/readyz`);
        expect([readyz.status, await readyz.text()]).toEqual([200, "ready\n"]);

        const health = healthClient(addresses.grpc);
        try {
          expect(await health.unary("Check", { service: "" })).toEqual({ status: "SERVING" });
        } finally {
          health.close();
        }

        // The image's HEALTHCHECK command, pointed at this admin port.
        const check = execForm(only(runtime, "HEALTHCHECK").args.replace(/^CMD\s+/, "")).map((a) => a.replace("127.0.0.1:9090", addresses.admin));
        expect(check[0]).toBe("node");
        execFileSync(process.execPath, check.slice(1), { cwd: app, timeout: 10_000 });

        // The compose demo client, run with the runtime's node against this instance.
        const demo = execFileSync(process.execPath, [join(deployDir, "demo-client.mjs")], {
          env: { ...process.env, INFERGATE_URL: `http://${addresses.http}`, INFERGATE_MODEL: "mock-chat" },
          timeout: 15_000,
        }).toString();
        expect(demo).toBe(
          "models: mock-chat, mock-predict, mock-embed\nchat: You said: hello from the demo client\ngenerate: You said: stream this answer (FINISH_REASON_STOP)\n",
        );
      } finally {
        proc.kill("SIGTERM");
        await closed;
      }
      expect([proc.exitCode, stderr]).toEqual([0, ""]);
    },
    300_000,
  );
});
