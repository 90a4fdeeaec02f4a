/**
 * Budgets end to end (issue 20): a real gateway in this process, a gRPC client (connect-es's gRPC
 * transport), the mock model (usage = words: "one two three" is 3 prompt tokens, and its answer
 * "You said: one two three" 5 completion tokens), the usage query on the admin listener.
 */
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorInfoSchema, RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { Role } from "../../gen/infergate/v1/chat_pb.js";
import { InferenceService } from "../../gen/infergate/v1/inference_service_pb.js";
import { parseConfig } from "../../src/config/load-config.js";
import { hashKey } from "../../src/security/api-keys.js";
import { type App, startApp } from "../../src/server/app.js";
import { pino } from "pino";
import { startInProcess } from "../helpers/servers.js";

const adminToken = "test-admin-token-0123456789";
const keys = ["small", "streamer", "cutter", "teamA", "teamB", "rich", "free"];

let app: App;
let client: Client<typeof InferenceService>;

beforeAll(async () => {
  app = await startInProcess(`server: {adminToken: ${adminToken}}
upstreams: [{name: mock, kind: mock}]
models:
  - {name: mock-chat, upstream: mock}
  - name: priced
    upstream: mock
    price: {inputPerMTok: 250000, outputPerMTok: 500000}
pricing: {currency: EUR}
auth:
  enabled: true
  keys:
${keys.map((k) => `    - {name: ${k}, sha256: ${hashKey(`sk-${k}`)}}`).join("\n")}
budgets:
  keys:
    small: {day: {tokens: 20}}
    streamer: {month: {tokens: 30}}
    cutter: {hour: {tokens: 1000}}
    rich: {day: {money: 5}}
  groups:
    - {name: team, keys: [teamA, teamB], limits: {day: {tokens: 20}}}
`);
  client = createClient(InferenceService, createGrpcTransport({ baseUrl: `http://${app.grpcAddress}` }));
});
afterAll(async () => {
  await app?.shutdown();
});

const text = (t: string) => ({ role: Role.USER, content: [{ part: { case: "text" as const, value: t } }] });
const auth = (k: string) => ({ authorization: `Bearer sk-${k}` });

interface Usage {
  currency: string;
  periods: Record<string, { current: { keys: Record<string, { tokens: number; money: number; models: Record<string, { tokens: number }> }>; groups: Record<string, { tokens: number }>; total: { tokens: number; models: Record<string, { tokens: number }> } } }>;
}

async function usage(a: App = app): Promise<Usage> {
  const res = await fetch(`http://${a.adminAddress}/admin/usage`, { headers: { authorization: `Bearer ${adminToken}` } });
  expect(res.status).toBe(200);
  return (await res.json()) as Usage;
}

/** Waits until the caller's charge is in (the recorder charges a call once its answer is written). */
async function charged(key: string, tokens: number, period = "day"): Promise<void> {
  await expect.poll(async () => (await usage()).periods[period]!.current.keys[key]!.tokens).toBe(tokens);
}

async function refused(p: Promise<unknown>): Promise<ConnectError> {
  return ConnectError.from(await p.then(() => new Error("not refused"), (e: unknown) => e));
}

function retryMs(err: ConnectError): number {
  const d = err.findDetails(RetryInfoSchema)[0]?.retryDelay;
  return Number(d?.seconds ?? 0n) * 1000 + (d?.nanos ?? 0) / 1e6;
}

describe("budgets through the real server", () => {
  it("a key with a small token budget is served until it is spent, then refused with BUDGET_EXCEEDED and the time to midnight", async () => {
    for (let i = 1; i <= 3; i++) {
      const res = await client.chat({ model: "mock-chat", messages: [text("one two three")] }, { headers: auth("small") });
      expect(res.message?.content[0]?.part.value).toBe("You said: one two three");
      await charged("small", 8 * i);
    }
    // 24 of 20 spent: the call that went over was served; the next is refused.
    const err = await refused(client.chat({ model: "mock-chat", messages: [text("one two three")] }, { headers: auth("small") }));
    expect(err.code).toBe(Code.ResourceExhausted);
    const info = err.findDetails(ErrorInfoSchema)[0];
    expect(info?.reason).toBe("BUDGET_EXCEEDED");
    expect(info?.metadata).toEqual({ budget: "key:small", period: "day", kind: "tokens" });
    expect(err.rawMessage).toMatch(/^budget key:small has spent its 20 tokens per day; it resets in /);
    expect(err.rawMessage).not.toContain("sk-");
    const untilMidnight = Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), new Date().getUTCDate() + 1) - Date.now();
    expect(retryMs(err)).toBeGreaterThan(0);
    expect(retryMs(err)).toBeLessThanOrEqual(untilMidnight + 1000);
    // ListModels names no model: not a budget's business.
    expect((await client.listModels({}, { headers: auth("small") })).models.length).toBeGreaterThan(0);

    // Connect (JSON) and the OpenAI API: 429 with Retry-After.
    const connect = await fetch(`http://${app.httpAddress}/infergate.v1.InferenceService/Chat`, {
      method: "POST",
      headers: { "content-type": "application/json", ...auth("small") },
      body: JSON.stringify({ model: "mock-chat", messages: [{ role: "ROLE_USER", content: [{ text: "hi" }] }] }),
    });
    expect(connect.status).toBe(429);
    expect(Number(connect.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(JSON.stringify(await connect.json())).toContain("BUDGET_EXCEEDED");
    const openai = await fetch(`http://${app.httpAddress}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", ...auth("small") },
      body: JSON.stringify({ model: "mock-chat", messages: [{ role: "user", content: "hi" }] }),
    });
    expect(openai.status).toBe(429);
    expect(Number(openai.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(await openai.text()).toContain("budget key:small has spent");

    const metrics = await (await fetch(`http://${app.adminAddress}/metrics`, { headers: { authorization: `Bearer ${adminToken}` } })).text();
    expect(metrics).toContain('infergate_budget_spent{budget="key:small",kind="tokens",period="day"} 24');
    expect(metrics).toContain('infergate_budget_limit{budget="key:small",kind="tokens",period="day"} 20');
    expect(metrics).toMatch(/infergate_budget_refused_total\{budget="key:small"\} 3/);
  });

  it("a stream that spends past the budget runs to its end; the next call is refused", async () => {
    const prompt = Array.from({ length: 10 }, (_, i) => `w${i}`).join(" ");
    // 10 prompt + 12 completion ("You said: w0 … w9") = 22 a stream; the budget is 30 a month.
    const stream = async () => {
      const events: string[] = [];
      for await (const e of client.generate({ model: "mock-chat", messages: [text(prompt)] }, { headers: auth("streamer") })) events.push(e.event.case ?? "");
      return events;
    };
    expect((await stream()).filter((e) => e === "textDelta")).toHaveLength(12);
    await charged("streamer", 22, "month");
    // 22 of 30: admitted, and it spends 22 more while it streams: every event, the final one too.
    const second = await stream();
    expect(second.filter((e) => e === "textDelta")).toHaveLength(12);
    expect(second.at(-1)).toBe("final");
    await charged("streamer", 44, "month");
    const err = await refused(stream());
    expect(err.findDetails(ErrorInfoSchema)[0]?.metadata).toEqual({ budget: "key:streamer", period: "month", kind: "tokens" });
  });

  it("a stream cut off before its final event is charged what it gave out", async () => {
    const events: string[] = [];
    const err = await refused(
      (async () => {
        for await (const e of client.generate(
          { model: "mock-chat", messages: [text("one two three four five six")], metadata: { "mock.cut_after_tokens": "3" } },
          { headers: auth("cutter") },
        ))
          events.push(e.event.case ?? "");
      })(),
    );
    expect(err.message).not.toContain("not refused");
    expect(events).toEqual(["textDelta", "textDelta", "textDelta"]);
    // No usage came: the estimate is the 3 deltas given out (prompt tokens 0).
    await charged("cutter", 3, "hour");
  });

  it("a group's budget is shared by its keys", async () => {
    await client.chat({ model: "mock-chat", messages: [text("one two three")] }, { headers: auth("teamA") });
    await client.chat({ model: "mock-chat", messages: [text("one two three")] }, { headers: auth("teamB") });
    await expect.poll(async () => (await usage()).periods["day"]!.current.groups["team"]!.tokens).toBe(16);
    // 16 of 20: one more call is admitted, from either key.
    await client.chat({ model: "mock-chat", messages: [text("one two three")] }, { headers: auth("teamB") });
    await expect.poll(async () => (await usage()).periods["day"]!.current.groups["team"]!.tokens).toBe(24);
    for (const k of ["teamA", "teamB"]) {
      const err = await refused(client.chat({ model: "mock-chat", messages: [text("one two three")] }, { headers: auth(k) }));
      expect(err.findDetails(ErrorInfoSchema)[0]?.metadata).toEqual({ budget: "group:team", period: "day", kind: "tokens" });
    }
    const day = (await usage()).periods["day"]!.current;
    expect(day.keys["teamA"]!.tokens).toBe(8);
    expect(day.keys["teamB"]!.tokens).toBe(16);
    // A key in no group, without limits, is served and counted.
    await client.chat({ model: "mock-chat", messages: [text("one two three")] }, { headers: auth("free") });
    await charged("free", 8);
  });

  it("a money budget is charged each call's cost at the model's price", async () => {
    // 3 prompt tokens at 0.25 and 5 completion tokens at 0.5: 3.25 EUR a call; 5 EUR a day.
    await client.chat({ model: "priced", messages: [text("one two three")] }, { headers: auth("rich") });
    await expect.poll(async () => (await usage()).periods["day"]!.current.keys["rich"]!.money).toBe(3.25);
    await client.chat({ model: "priced", messages: [text("one two three")] }, { headers: auth("rich") });
    await expect.poll(async () => (await usage()).periods["day"]!.current.keys["rich"]!.money).toBe(6.5);
    const err = await refused(client.chat({ model: "priced", messages: [text("one two three")] }, { headers: auth("rich") }));
    expect(err.findDetails(ErrorInfoSchema)[0]?.metadata).toEqual({ budget: "key:rich", period: "day", kind: "money" });
    expect(err.rawMessage).toContain("5 EUR per day");
    const u = await usage();
    expect(u.currency).toBe("EUR");
    expect(u.periods["day"]!.current.keys["rich"]!.models["priced"]).toMatchObject({ tokens: 16, money: 6.5 });
  });

  it("/admin/usage needs the admin token; /healthz and /readyz do not", async () => {
    expect((await fetch(`http://${app.adminAddress}/admin/usage`)).status).toBe(401);
    expect((await fetch(`http://${app.adminAddress}/admin/usage`, { headers: { authorization: "Bearer wrong" } })).status).toBe(401);
    expect((await fetch(`http://${app.adminAddress}/metrics`)).status).toBe(401);
    expect((await fetch(`http://${app.adminAddress}/healthz`)).status).toBe(200);
    expect((await fetch(`http://${app.adminAddress}/readyz`)).status).toBe(200);
    const res = await fetch(`http://${app.adminAddress}/admin/usage?period=day`, { headers: { authorization: `Bearer ${adminToken}` } });
    expect(res.status).toBe(200);
    const body = (await res.json()) as Usage;
    expect(Object.keys(body.periods)).toEqual(["day"]);
    expect(Object.keys(body.periods["day"]!.current.keys).sort()).toEqual([...keys].sort());
    expect(body.periods["day"]!.current.total.models["mock-chat"]!.tokens).toBeGreaterThan(0);
    expect((await fetch(`http://${app.adminAddress}/admin/usage?period=week`, { headers: { authorization: `Bearer ${adminToken}` } })).status).toBe(400);
  });

  it("without a token, /admin/usage answers on a loopback admin listener and is refused (403) on another", async () => {
    const yaml = `upstreams: [{name: mock, kind: mock}]
models: [{name: mock-chat, upstream: mock}]
auth: {enabled: true, keys: [{name: k, sha256: ${hashKey("sk-k")}}]}
budgets: {keys: {k: {day: {tokens: 5}}}}
`;
    const loopback = await startInProcess(yaml);
    const config = parseConfig(yaml, "(test)", {});
    config.server.listen = "127.0.0.1:0";
    config.server.httpListen = "127.0.0.1:0";
    config.server.adminListen = "0.0.0.0:0";
    const open = await startApp(config, pino({ level: "silent" }));
    try {
      expect((await fetch(`http://${loopback.adminAddress}/admin/usage`)).status).toBe(200);
      const port = open.adminAddress.slice(open.adminAddress.lastIndexOf(":") + 1);
      const res = await fetch(`http://127.0.0.1:${port}/admin/usage`);
      expect(res.status).toBe(403);
      expect(await res.text()).toContain("server.adminToken");
      // Its metrics stay open, as before.
      expect((await fetch(`http://127.0.0.1:${port}/metrics`)).status).toBe(200);
    } finally {
      await Promise.all([loopback.shutdown(), open.shutdown()]);
    }
  });

  it("a reload (SIGHUP) applies new limits and keeps what was spent", async () => {
    const yaml = (tokens: number) => `upstreams: [{name: mock, kind: mock}]
models: [{name: mock-chat, upstream: mock}]
auth: {enabled: true, keys: [{name: k, sha256: ${hashKey("sk-k")}}]}
budgets: {keys: {k: {day: {tokens: ${tokens}}}}}
`;
    const a = await startInProcess(yaml(5));
    try {
      const c = createClient(InferenceService, createGrpcTransport({ baseUrl: `http://${a.grpcAddress}` }));
      await c.chat({ model: "mock-chat", messages: [text("one two three")] }, { headers: auth("k") });
      const spent = async () => ((await (await fetch(`http://${a.adminAddress}/admin/usage?period=day`)).json()) as Usage).periods["day"]!.current.keys["k"]!.tokens;
      await expect.poll(spent).toBe(8);
      expect((await refused(c.chat({ model: "mock-chat", messages: [text("one two three")] }, { headers: auth("k") }))).code).toBe(Code.ResourceExhausted);
      expect(await a.reload(async () => parseConfig(yaml(100), "(test)", {}))).toBe(true);
      await c.chat({ model: "mock-chat", messages: [text("one two three")] }, { headers: auth("k") });
      await expect.poll(spent).toBe(16);
    } finally {
      await a.shutdown();
    }
  });
});
