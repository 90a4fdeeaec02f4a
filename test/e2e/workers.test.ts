/**
 * `infergate --workers 2`: two node:cluster workers behind the same listening ports, both
 * answering; SIGTERM to the primary drains both and exits 0. The real process, a grpc-js client
 * with proto/ loaded at run time.
 */
import { once } from "node:events";
import { afterEach, describe, expect, it } from "vitest";
import { inferenceClient, type ProtoClient } from "../helpers/proto-clients.js";
import { type ServerProcess, startProcess } from "../helpers/servers.js";

interface LogLine {
  msg?: string;
  worker?: number;
  grpc?: string;
  rpc?: string;
  code?: string;
}

const parse = (line: string): LogLine => {
  try {
    return JSON.parse(line) as LogLine;
  } catch {
    return {};
  }
};

async function until(what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe("infergate --workers", () => {
  let server: ServerProcess | undefined;
  const clients: ProtoClient[] = [];

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    const s = server;
    server = undefined;
    if (s !== undefined && s.proc.exitCode === null && s.proc.signalCode === null) {
      const exited = once(s.proc, "exit");
      // Workers exit by themselves when the channel to their primary closes.
      s.proc.kill("SIGKILL");
      await exited;
    }
  });

  it("serves from two workers on the same ports, and SIGTERM drains both and exits 0", async () => {
    server = await startProcess(["--workers", "2"]);
    const s = server;
    const lines = () => s.lines.map(parse);
    await until("both workers listening", () => lines().filter((l) => l.msg === "listening").length === 2);
    const listening = lines().filter((l) => l.msg === "listening");
    expect(listening.map((l) => l.worker).sort()).toEqual([1, 2]);
    // node:cluster shares one socket per address: both workers report the same port.
    expect(listening[0]!.grpc).toBe(listening[1]!.grpc);
    expect(lines().filter((l) => l.msg === "started workers")).toHaveLength(1);

    // The primary hands each new connection to the next worker: separate connections (own
    // subchannel pools) reach both.
    const served = new Set<number>();
    for (let i = 0; i < 8 && served.size < 2; i++) {
      const client = inferenceClient(s.grpcAddress, { "grpc.use_local_subchannel_pool": 1 });
      clients.push(client);
      const res = await client.unary<{ message: { content: { text: string }[] } }>("Chat", {
        model: "mock-chat",
        messages: [{ role: "ROLE_USER", content: [{ text: `call ${i}` }] }],
      });
      expect(res.message.content).toEqual([{ text: `You said: call ${i}`, part: "text", cache_breakpoint: null }]);
      await until(`the log line of call ${i}`, () => lines().filter((l) => l.msg === "call").length === i + 1);
      const call = lines().filter((l) => l.msg === "call")[i]!;
      expect(call).toMatchObject({ rpc: "Chat", code: "OK" });
      served.add(call.worker!);
    }
    expect([...served].sort()).toEqual([1, 2]);

    for (const c of clients.splice(0)) c.close();
    const code = await s.stop();
    expect(code).toBe(0);
    const stopped = lines().filter((l) => l.msg === "stopped").map((l) => l.worker);
    expect(stopped.sort()).toEqual([1, 2]);
    expect(lines().some((l) => l.msg === "shutting down workers")).toBe(true);
  });

  it("refuses a worker count that is not a whole number from 1 to 256", async () => {
    await expect(startProcess(["--workers", "0"])).rejects.toThrow(/exited with 2 before listening: --workers: not a whole number from 1 to 256/);
  });
});
