#!/usr/bin/env node
/**
 * The streaming load generator, run as its own process (never inside the proxy's). Prints one
 * JSON object with its results on stdout (and, in hold mode, progress lines before it).
 *
 * TTFT mode: `--mode ttft --target grpc|sse --url URL --n N [--concurrency C] [--header k:v]... --body FILE`
 *   N streams one after another (with --concurrency, gRPC only: C such loops at once over the one
 *   HTTP/2 connection, N streams in all; every stream runs to its end, none is cut off). gRPC (infergate's Generate over h2c, node:http2 with gRPC
 *   framing; the body file is a framed GenerateRequest): time to the first text_delta message,
 *   time to the end, tokens. SSE (OpenAI JSON over HTTP/1.1 keep-alive: the fake directly, or a
 *   peer gateway): time to the first `data:` event with content, time to the end, tokens.
 *
 * Hold mode: `--mode hold --url URL --streams N --connections C --body FILE [--ramp-ms MS]
 *   [--cpu-pid PID]`
 *   Opens N Generate streams over C HTTP/2 connections, spread over --ramp-ms, and keeps them
 *   open until each ends by itself. Prints `{"progress":{...}}` lines (open streams, first events
 *   seen, events so far) twice a second, and at the end: OK streams, error statuses by code,
 *   events received. With --cpu-pid, also the CPU time of that process (user + system, from
 *   /proc) per event received in the steady part of the run: from the first progress tick at
 *   which every stream had its first event to the last tick before any stream ended, when the
 *   process does nothing but carry events (no stream set-up or teardown); the window's ends are
 *   given as epoch ms too, for matching other samples to it.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import http from "node:http";
import http2 from "node:http2";
import { parseArgs } from "node:util";
import { GenerateResponseSchema } from "../dist/gen/infergate/v1/inference_service_pb.js";

const { values } = parseArgs({
  options: {
    mode: { type: "string" },
    target: { type: "string", default: "grpc" },
    url: { type: "string" },
    n: { type: "string", default: "100" },
    concurrency: { type: "string", default: "1" },
    streams: { type: "string", default: "1000" },
    connections: { type: "string", default: "10" },
    "ramp-ms": { type: "string", default: "5000" },
    "timeout-ms": { type: "string", default: "120000" },
    header: { type: "string", multiple: true, default: [] },
    body: { type: "string" },
    "cpu-pid": { type: "string" },
  },
});
const body = readFileSync(values.body);
const extraHeaders = Object.fromEntries(values.header.map((h) => [h.slice(0, h.indexOf(":")).trim(), h.slice(h.indexOf(":") + 1).trim()]));
const now = () => performance.now();

const clockTicks = Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim()) || 100;
/** CPU time (user + system) of process `pid`, in milliseconds; undefined once it is gone. */
function cpuMsOf(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / clockTicks;
  } catch {
    return undefined;
  }
}

/** Splits gRPC messages out of DATA chunks as they arrive. */
function grpcMessages(onMessage) {
  let buf = Buffer.alloc(0);
  return (chunk) => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    while (buf.length >= 5) {
      const len = buf.readUInt32BE(1);
      if (buf.length < 5 + len) break;
      onMessage(buf.subarray(5, 5 + len));
      buf = buf.subarray(5 + len);
    }
  };
}

function grpcHeaders(url) {
  return {
    ":method": "POST",
    ":path": url.pathname,
    "content-type": "application/grpc",
    te: "trailers",
    "grpc-timeout": `${values["timeout-ms"]}m`,
    ...extraHeaders,
  };
}

/** One Generate stream over an HTTP/2 session: {ttftMs, totalMs, tokens, status}. */
function grpcStream(session, url, { decode = true, onFirst, onEvent } = {}) {
  return new Promise((resolve) => {
    const t0 = now();
    let ttftMs;
    let tokens = 0;
    let events = 0;
    let status;
    let message = "";
    const req = session.request(grpcHeaders(url), { endStream: false });
    const push = grpcMessages((m) => {
      events++;
      onEvent?.();
      if (!decode) {
        if (ttftMs === undefined) {
          ttftMs = now() - t0;
          onFirst?.();
        }
        return;
      }
      const ev = fromBinary(GenerateResponseSchema, m);
      if (ev.event.case === "textDelta") {
        tokens++;
        if (ttftMs === undefined) {
          ttftMs = now() - t0;
          onFirst?.();
        }
      }
    });
    req.on("response", (headers) => {
      if (headers["grpc-status"] !== undefined) {
        status = Number(headers["grpc-status"]);
        message = String(headers["grpc-message"] ?? "");
      }
    });
    req.on("trailers", (t) => {
      status = Number(t["grpc-status"]);
      message = String(t["grpc-message"] ?? "");
    });
    req.on("data", push);
    req.on("error", (err) => {
      status ??= -1;
      message ||= err.message;
    });
    req.on("close", () => resolve({ ttftMs, totalMs: now() - t0, tokens, events, status: status ?? -1, message }));
    req.end(body);
  });
}

/** One OpenAI stream over HTTP/1.1: {ttftMs, totalMs, tokens, status}. */
function sseStream(agent, url) {
  return new Promise((resolve) => {
    const t0 = now();
    let ttftMs;
    let tokens = 0;
    let tail = "";
    const req = http.request(url, { method: "POST", agent, headers: { "content-type": "application/json", "content-length": body.length, ...extraHeaders } }, (res) => {
      res.setEncoding("utf8");
      res.on("data", (text) => {
        const all = tail + text;
        const events = all.split("\n\n");
        tail = events.pop() ?? "";
        for (const e of events) {
          if (e.includes('"content":"tok')) {
            tokens++;
            ttftMs ??= now() - t0;
          }
        }
      });
      res.on("end", () => resolve({ ttftMs, totalMs: now() - t0, tokens, status: res.statusCode === 200 ? 0 : res.statusCode }));
    });
    req.on("error", (err) => resolve({ ttftMs, totalMs: now() - t0, tokens, status: -1, message: err.message }));
    req.end(body);
  });
}

async function ttftMode() {
  const url = new URL(values.url);
  const n = Number(values.n);
  const results = [];
  if (values.target === "grpc") {
    const session = http2.connect(url.origin);
    await new Promise((resolve, reject) => session.once("connect", resolve).once("error", reject));
    let next = 0;
    const loop = async () => {
      while (next < n) {
        next++;
        results.push(await grpcStream(session, url));
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Number(values.concurrency)) }, loop));
    session.close();
  } else {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    for (let i = 0; i < n; i++) results.push(await sseStream(agent, url));
    agent.destroy();
  }
  const ok = results.filter((r) => r.status === 0 && r.ttftMs !== undefined);
  process.stdout.write(
    `${JSON.stringify({
      streams: n,
      ok: ok.length,
      errors: n - ok.length,
      firstError: results.find((r) => r.status !== 0)?.message,
      ttftMs: ok.map((r) => r.ttftMs),
      totalMs: ok.map((r) => r.totalMs),
      tokens: ok.map((r) => r.tokens),
    })}\n`,
  );
}

async function holdMode() {
  const url = new URL(values.url);
  const streams = Number(values.streams);
  const connections = Number(values.connections);
  const rampMs = Number(values["ramp-ms"]);
  const sessions = [];
  for (let i = 0; i < connections; i++) {
    const s = http2.connect(url.origin, { settings: { initialWindowSize: 1 << 20 } });
    s.on("error", () => {});
    await new Promise((resolve, reject) => s.once("connect", resolve).once("error", reject));
    sessions.push(s);
  }
  let open = 0;
  let firstSeen = 0;
  let maxOpen = 0;
  const started = now();
  let allFirstAt;
  const statuses = new Map();
  let events = 0;
  let eventsLive = 0;
  let ended = 0;
  let firstError;
  const cpuPid = values["cpu-pid"] === undefined ? undefined : Number(values["cpu-pid"]);
  /** Progress ticks in the steady part (every stream open and past its first event). */
  const steady = [];
  const progress = setInterval(() => {
    const elapsedMs = Math.round(now() - started);
    if (cpuPid !== undefined && firstSeen === streams && ended === 0) steady.push({ elapsedMs, atMs: Date.now(), events: eventsLive, cpuMs: cpuMsOf(cpuPid) });
    process.stdout.write(`${JSON.stringify({ progress: { open, firstSeen, events: eventsLive, elapsedMs } })}\n`);
  }, 500);
  const pending = [];
  const batch = Math.max(1, Math.ceil(streams / Math.max(1, rampMs / 10)));
  for (let i = 0; i < streams; i += batch) {
    for (let j = i; j < Math.min(streams, i + batch); j++) {
      open++;
      maxOpen = Math.max(maxOpen, open);
      pending.push(
        grpcStream(sessions[j % connections], url, {
          decode: false,
          onFirst: () => {
            firstSeen++;
            if (firstSeen === streams) allFirstAt = now() - started;
          },
          onEvent: () => eventsLive++,
        }).then((r) => {
          open--;
          ended++;
          events += r.events;
          statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
          if (r.status !== 0 && firstError === undefined) firstError = `${r.status} ${r.message}`;
        }),
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  const rampedMs = now() - started;
  await Promise.all(pending);
  clearInterval(progress);
  for (const s of sessions) s.close();
  const a = steady[0];
  const b = steady.at(-1);
  const steadyWindow =
    a === undefined || b === undefined || b.events <= a.events || a.cpuMs === undefined || b.cpuMs === undefined
      ? null
      : { fromEpochMs: a.atMs, toEpochMs: b.atMs, ms: b.elapsedMs - a.elapsedMs, events: b.events - a.events, cpuMs: b.cpuMs - a.cpuMs, cpuUsPerEvent: ((b.cpuMs - a.cpuMs) * 1000) / (b.events - a.events), eventsPerS: ((b.events - a.events) * 1000) / (b.elapsedMs - a.elapsedMs) };
  process.stdout.write(
    `${JSON.stringify({
      streams,
      ok: statuses.get(0) ?? 0,
      errors: streams - (statuses.get(0) ?? 0),
      statuses: Object.fromEntries(statuses),
      firstError,
      events,
      maxOpen,
      rampedMs: Math.round(rampedMs),
      allFirstEventsMs: allFirstAt === undefined ? null : Math.round(allFirstAt),
      totalMs: Math.round(now() - started),
      steady: steadyWindow,
    })}\n`,
  );
}

if (values.mode === "ttft") await ttftMode();
else if (values.mode === "hold") await holdMode();
else {
  process.stderr.write("--mode ttft|hold\n");
  process.exit(2);
}
