import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { repoRoot, type ServerProcess, startProcess } from "../helpers/servers.js";

const run = promisify(execFile);

/** The shell examples of the README that call a running infergate, in order. */
function readmeExamples(): string[] {
  const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
  const blocks = [...readme.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!.replace(/\\\n\s*/g, "").trim());
  return blocks.filter((b) => /^(npx buf curl|curl) /.test(b));
}

let server: ServerProcess;

beforeAll(async () => {
  server = await startProcess();
});

afterAll(async () => {
  expect(await server.stop()).toBe(0);
});

/** What each example must print; keyed by a piece of its command. */
const expectations: [RegExp, (out: { code: number; stdout: string; stderr: string }) => void][] = [
  [/--list-services/, (o) => expect(o.stdout.split("\n")).toEqual(expect.arrayContaining(["infergate.v1.InferenceService", "grpc.health.v1.Health"]))],
  [/hello there.*Chat$/, (o) => expect(JSON.parse(o.stdout).message.content[0].text).toBe("You said: hello there")],
  [/Generate$/, (o) => {
    expect(o.stdout).toContain('"textDelta": " stream"');
    expect(o.stdout).toContain('"finishReason": "FINISH_REASON_STOP"');
  }],
  [/Predict$/, (o) => expect(JSON.parse(o.stdout).outputs.map((t: { contents: { fp32Contents: number[] } }) => t.contents.fp32Contents)).toEqual([[11, 22], [-9, -18]])],
  [/InferenceService\/Embed$/, (o) => {
    const res = JSON.parse(o.stdout) as { model: string; embeddings: { values: number[] }[] };
    expect(res.model).toBe("mock-embed");
    expect(res.embeddings.map((e) => e.values.length)).toEqual([8, 8]);
  }],
  [/ListModels$/, (o) => expect(JSON.parse(o.stdout).models.map((m: { name: string }) => m.name)).toEqual(["mock-chat", "mock-predict", "mock-embed"])],
  [/Health\/Check$/, (o) => expect(JSON.parse(o.stdout)).toEqual({ status: "SERVING" })],
  [/^curl .*Chat$/, (o) => expect(JSON.parse(o.stdout).message.content[0].text).toBe("You said: hi")],
  [/\/v1\/chat\/completions/, (o) => {
    const events = o.stdout.split("\n\n").filter((e) => e.trim() !== "");
    expect(events.at(-1)).toBe("data: [DONE]");
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e.slice("data: ".length)) as { choices: { delta: { content?: string } }[] });
    expect(chunks.map((c) => c.choices[0]?.delta.content ?? "").join("")).toBe("You said: hi");
  }],
  [/\/v1\/messages/, (o) => {
    const res = JSON.parse(o.stdout) as { type: string; content: { type: string; text: string }[]; stop_reason: string };
    expect(res.type).toBe("message");
    expect(res.content).toEqual([{ type: "text", text: "You said: hi" }]);
    expect(res.stop_reason).toBe("end_turn");
  }],
  [/\/v1\/embeddings/, (o) => {
    const res = JSON.parse(o.stdout) as { object: string; data: { object: string; index: number; embedding: number[] }[]; model: string };
    expect(res.object).toBe("list");
    expect(res.model).toBe("mock-embed");
    expect(res.data.map((d) => [d.object, d.index, d.embedding.length])).toEqual([["embedding", 0, 8], ["embedding", 1, 8]]);
  }],
  [/"model":"nope"/, (o) => {
    expect(o.code).not.toBe(0);
    expect(o.stderr).toContain('"code": "not_found"');
    expect(o.stderr).toContain('"message": "model \\"nope\\" is not served by this gateway (see ListModels)"');
    expect(o.stderr).toContain('"type": "google.rpc.ErrorInfo"');
  }],
];

describe("every README example works as written", () => {
  const examples = readmeExamples();

  it("the README has the examples this test checks", () => {
    expect(examples.length).toBe(expectations.length);
  });

  it.each(examples.map((e) => [e]))("%s", async (example) => {
    const command = example
      .replaceAll("127.0.0.1:50051", server.grpcAddress)
      .replaceAll("127.0.0.1:8080", server.httpAddress);
    let out: { code: number; stdout: string; stderr: string };
    try {
      const r = await run("bash", ["-c", command], { cwd: repoRoot, timeout: 20_000 });
      out = { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      out = { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
    const check = expectations.find(([re]) => re.test(example));
    expect(check, `no expectation for: ${example}`).toBeDefined();
    if (!/"model":"nope"/.test(example)) {
      expect(out.code, out.stderr).toBe(0);
    }
    check![1](out);
  });
});
