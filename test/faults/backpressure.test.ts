/**
 * Fault scenario 25 (issue 6): 1000 clients that stop reading their Generate streams. Backpressure
 * must reach the upstream read: the gateway stops pulling events from the upstream once a client's
 * HTTP/2 window and the small buffers on the way are full, so the upstream's writes block, memory
 * stays bounded however long the stall, and it all goes back to the baseline afterwards.
 *
 * Everything runs in this process (upstream, gateway, clients), so the measure is this process's
 * heap and off-heap buffers after a forced collection: with backpressure they plateau; without it,
 * they would grow with every byte the upstream sends (4 MiB per stream). Loopback TCP buffers take
 * a couple of MiB per connection before the upstream's writes block, so the upstream's view is:
 * all 1000 answers stay unfinished, and its progress stops. (A heavy test: about 2 GB cross the
 * loopback into socket buffers before the stall.)
 */
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chatRequest, deltas, type Gateway, sleep, startGateway } from "./helpers/harness.js";
import { type ScriptedUpstream, startScriptedUpstream } from "./helpers/scripted-upstream.js";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

/** Heap and off-heap (Buffer) memory after a full collection, in MiB. */
async function memoryMiB(): Promise<number> {
  for (let i = 0; i < 3; i++) {
    gc();
    await sleep(20);
  }
  const m = process.memoryUsage();
  return (m.heapUsed + m.external + m.arrayBuffers) / 2 ** 20;
}

const STREAMS = 1000;
/** 4 MiB per answer: more than the kernel's socket buffers take for a connection, with 1000 of them. */
const CHUNKS = 4 * 1024;
const READERS = 5;
const piece = "x".repeat(1023) + " ";

describe("fault scenario: slow readers", () => {
  let up: ScriptedUpstream;
  let g: Gateway;

  beforeAll(async () => {
    up = await startScriptedUpstream(() => ({ kind: "answer", tokens: Array.from({ length: CHUNKS }, () => piece) }));
    g = await startGateway(`
upstreams:
  - name: llm
    kind: openai
    endpoints: ["${up.baseUrl}"]
    options: { http: { connections: 1100 } }
models:
  - name: chat
    upstream: llm
`);
  });
  afterAll(async () => {
    await g?.close();
    await up?.close();
  });

  it("25. 1000 clients that stop reading: the upstream's writes stall, memory stays bounded, then returns to the baseline", async () => {
    // Warm up (connections, code paths) before taking the baseline.
    const warm = await g.client.serverStream<Record<string, unknown>>("Generate", chatRequest("chat", "warm-up", { temperature: 1 })).done;
    expect(warm.status.code).toBe(status.OK);
    const baseline = await memoryMiB();

    const streams = Array.from({ length: STREAMS }, (_, i) => {
      const s = g.client.serverStream<Record<string, unknown>>("Generate", chatRequest("chat", `slow reader ${i}`, { temperature: 1 }), { timeoutMs: 120_000 });
      s.call.pause();
      return s;
    });
    await up.waitForRequests(STREAMS + 1, 30_000);

    // Let the stall settle (the upstream's progress stops), then watch it: neither memory nor the
    // upstream's progress may grow.
    for (let last = -1; up.bytesWritten !== last; ) {
      last = up.bytesWritten;
      await sleep(500);
    }
    const progress1 = up.bytesWritten;
    const stalled1 = await memoryMiB();
    await sleep(1_500);
    const progress2 = up.bytesWritten;
    const stalled2 = await memoryMiB();
    // The upstream is blocked: no progress, and not one of the 1000 answers could be finished.
    expect(progress2 - progress1).toBeLessThan(1024 * 1024);
    expect(up.requests.filter((r) => r.finishedAt !== undefined)).toHaveLength(1); // the warm-up
    expect(streams.every((s) => s.events.length === 0)).toBe(true);
    // Memory stalls too, at under 1 MiB per stream (each answer is 4 MiB): the buffers on the way.
    expect(stalled2 - stalled1).toBeLessThan(64);
    expect(stalled2 - baseline).toBeLessThan(STREAMS * 1);

    // Readers come back: a few read everything, whole and in order; the others leave.
    await (async () => {
      const readers = streams.splice(0, READERS);
      for (const s of readers) s.call.resume();
      for (const s of streams.splice(0)) s.call.cancel();
      for (const s of readers) {
        const r = await s.done;
        expect(r.status.code).toBe(status.OK);
        expect(deltas(r.events).join("") === piece.repeat(CHUNKS)).toBe(true);
        r.events.length = 0;
      }
    })();
    await up.waitIdle(30_000);
    expect(up.requests.filter((r) => r.abortedAt !== undefined)).toHaveLength(STREAMS - READERS);
    // Back to the baseline: sockets and HTTP/2 sessions of the cancelled streams are freed by
    // callbacks that a loaded machine runs late, so the memory is watched for up to 10 s; memory
    // held for good stays above the bound and fails.
    let after = await memoryMiB();
    for (const until = Date.now() + 10_000; after - baseline >= 32 && Date.now() < until; ) {
      await sleep(500);
      after = await memoryMiB();
    }
    expect(after - baseline).toBeLessThan(32);
    expect(g.app.cache.stats.stores).toBe(0);
  });
});
