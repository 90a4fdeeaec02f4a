/**
 * One endpoint's circuit breaker (src/resilience/endpoint-breaker.ts) over opossum: when it opens,
 * that it fails fast, the single half-open probe, and what closes or reopens it.
 */
import { afterEach, describe, expect, it } from "vitest";
import type { ResilienceConfig } from "../../src/config/schema.js";
import { EndpointBreaker } from "../../src/resilience/endpoint-breaker.js";

const config = (over: Partial<ResilienceConfig["breaker"]> = {}): ResilienceConfig["breaker"] => ({
  enabled: true,
  errorThresholdPercent: 50,
  volumeThreshold: 4,
  windowMs: 10_000,
  resetTimeoutMs: 60,
  ...over,
});

const breakers: EndpointBreaker[] = [];
function breaker(over: Partial<ResilienceConfig["breaker"]> = {}, now?: () => number): EndpointBreaker {
  const b = new EndpointBreaker("test", config(over), now);
  breakers.push(b);
  return b;
}
afterEach(() => {
  for (const b of breakers.splice(0)) b.shutdown();
});

/** Runs one attempt with the given outcome; opossum takes it into account a few microtasks later. */
async function attempt(b: EndpointBreaker, outcome: "success" | "failure" | "abandoned"): Promise<boolean> {
  const lease = b.admit();
  lease?.settle(outcome);
  await new Promise((r) => setImmediate(r));
  return lease !== undefined;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("EndpointBreaker", () => {
  it("stays closed below the volume threshold, then opens once failures pass the percentage", async () => {
    const b = breaker();
    for (let i = 0; i < 3; i++) await attempt(b, "failure");
    expect(b.state()).toBe("closed"); // 3 calls < volumeThreshold 4
    await attempt(b, "failure");
    expect(b.state()).toBe("open");
    expect(b.stats()).toEqual({ fires: 4, failures: 4, successes: 0 });
  });

  it("opens after consecutiveFailures failures in a row, however few the window holds; a success breaks the run, an abandoned attempt does not", async () => {
    // The window's rule alone would wait for 10 calls.
    const b = breaker({ volumeThreshold: 10, consecutiveFailures: 3 });
    for (const outcome of ["failure", "failure", "success", "failure", "abandoned", "failure"] as const) await attempt(b, outcome);
    expect(b.state()).toBe("closed");
    await attempt(b, "failure");
    expect(b.state()).toBe("open");
    expect(b.stats()).toMatchObject({ fires: 7, failures: 5 });
    // Without the setting, the run that opens it is the volume threshold's length.
    const d = breaker({ volumeThreshold: 10, windowMs: 100 });
    for (let i = 0; i < 9; i++) await attempt(d, "failure");
    expect(d.state()).toBe("closed");
    await attempt(d, "failure");
    expect(d.state()).toBe("open");
  });

  it("does not open at exactly the percentage: it takes more than errorThresholdPercent", async () => {
    const b = breaker({ volumeThreshold: 2 });
    for (let i = 0; i < 20; i++) await attempt(b, i % 2 === 0 ? "success" : "failure");
    expect(b.state()).toBe("closed");
    expect(b.stats()).toEqual({ fires: 20, failures: 10, successes: 10 });
  });

  it("client faults and abandoned attempts never count", async () => {
    const b = breaker({ volumeThreshold: 1 });
    for (let i = 0; i < 100; i++) {
      await attempt(b, "abandoned");
      await attempt(b, "success");
    }
    expect(b.state()).toBe("closed");
    expect(b.stats().failures).toBe(0);
  });

  it("when open, refuses at once and tells the time until the probe", async () => {
    let t = 1_000;
    const b = breaker({ volumeThreshold: 1, resetTimeoutMs: 5_000 }, () => t);
    await attempt(b, "failure");
    expect(b.state()).toBe("open");
    t += 1_200;
    // admit() answers synchronously: nothing waits for the probe.
    expect(b.admit()).toBeUndefined();
    expect(b.retryAfterMs()).toBe(3_800);
  });

  it("half-open admits exactly one probe; its success closes the breaker with an empty window", async () => {
    const b = breaker({ volumeThreshold: 1 });
    await attempt(b, "failure");
    await sleep(90);
    expect(b.state()).toBe("halfOpen");
    const probe = b.admit();
    expect(probe?.probe).toBe(true);
    expect([b.admit(), b.admit(), b.admits()]).toEqual([undefined, undefined, false]);
    expect(b.retryAfterMs()).toBe(60);
    probe!.settle("success");
    await new Promise((r) => setImmediate(r));
    expect(b.state()).toBe("closed");
    expect(b.stats()).toEqual({ fires: 0, failures: 0, successes: 0 });
    expect(await attempt(b, "success")).toBe(true);
  });

  it("a failed probe reopens the breaker for another reset timeout", async () => {
    const b = breaker({ volumeThreshold: 1 });
    await attempt(b, "failure");
    await sleep(90);
    await attempt(b, "failure");
    expect(b.state()).toBe("open");
    expect(b.admit()).toBeUndefined();
    await sleep(90);
    expect(b.state()).toBe("halfOpen");
  });

  it("a probe whose caller went away proves nothing: the breaker reopens", async () => {
    const b = breaker({ volumeThreshold: 1 });
    await attempt(b, "failure");
    await sleep(90);
    await attempt(b, "abandoned");
    expect(b.state()).toBe("open");
  });

  it("a probe answered with a client fault (the endpoint answered) closes it", async () => {
    const b = breaker({ volumeThreshold: 1 });
    await attempt(b, "failure");
    await sleep(90);
    await attempt(b, "success");
    expect(b.state()).toBe("closed");
  });

  it("disabled: always admits, never opens", async () => {
    const b = breaker({ enabled: false, volumeThreshold: 0 });
    for (let i = 0; i < 50; i++) expect(await attempt(b, "failure")).toBe(true);
    expect(b.state()).toBe("closed");
  });
});
