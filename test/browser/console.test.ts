/**
 * The web console in a real browser (docs/console.md): Debian's headless Chromium driven by
 * playwright-core (the system executable; nothing downloaded), against a running gateway with
 * the mock and a failing OpenAI-compatible fake (console-gateway.ts). Each page loads; the models
 * table, a breaker shown OPEN after failures, a Generate streamed into the playground token by
 * token, an error's reason, the config without its secrets. Screenshots go to
 * test/browser/artifacts/ (gitignored), for a look at what the test saw.
 */
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { type BrowserContext, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { repoRoot } from "../helpers/servers.js";
import { adminToken, apiKey, chatBody, type ConsoleGateway, headerSecret, startConsoleGateway, upstreamKey } from "./console-gateway.js";

const artifacts = path.join(repoRoot, "test/browser/artifacts");

describe("the web console in Chromium", () => {
  let g: ConsoleGateway;
  let context: BrowserContext;
  let page: Page;
  let profile: string;
  /** The page's uncaught errors: one fails the last test. */
  const pageErrors: string[] = [];

  const shot = (name: string) => page.screenshot({ path: path.join(artifacts, `${name}.png`), fullPage: true });
  const open = async (hash: string, title: string) => {
    // (Scripts given to page.evaluate run in the page; as strings, they need no DOM types here.)
    await page.evaluate(`location.hash = ${JSON.stringify(hash)}`);
    await page.locator("main h1", { hasText: title }).waitFor();
  };

  beforeAll(async () => {
    mkdirSync(artifacts, { recursive: true });
    g = await startConsoleGateway(true);
    profile = mkdtempSync(path.join(tmpdir(), "infergate-chromium-"));
    context = await chromium.launchPersistentContext(profile, {
      executablePath: "/usr/bin/chromium",
      headless: true,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
      viewport: { width: 1280, height: 900 },
    });
    page = context.pages()[0] ?? (await context.newPage());
    page.on("pageerror", (e) => pageErrors.push(e.message));
  });
  afterAll(async () => {
    await context?.close();
    await g?.close();
    if (profile !== undefined) rmSync(profile, { recursive: true, force: true });
  });

  it("asks for the admin token, then shows the models table", async () => {
    await page.goto(`${g.admin}/console/`);
    const token = page.getByLabel(/Admin token/);
    await token.waitFor();
    await shot("token");
    await token.fill(adminToken);
    await token.press("Enter");
    const table = page.locator("main table");
    await table.waitFor();
    expect(await token.isHidden()).toBe(true);
    const rows = table.locator("tbody tr");
    await expect.poll(() => rows.count()).toBe(5);
    const names = await rows.locator("td:first-child").allTextContents();
    expect(names.map((n) => n.trim())).toEqual(["mock-chat", "slow-chat", "mock-predict", "mock-embed", "broken"]);
    const broken = rows.filter({ hasText: "broken" });
    expect(await broken.textContent()).toContain("openai");
    expect(await broken.textContent()).toContain(g.fake.baseUrl);
    expect(await broken.textContent()).toContain("CLOSED");
    await shot("models");
  });

  it("shows a breaker OPEN after failures, live", async () => {
    for (let i = 0; i < 3; i++) expect((await g.call("Chat", chatBody("broken", `fail ${i}`))).status).not.toBe(200);
    const broken = page.locator("main tbody tr", { hasText: "broken" });
    await expect.poll(() => broken.textContent(), { timeout: 10_000 }).toContain("OPEN");
    expect(await broken.textContent()).toContain("100 % of 3");
    await shot("models-breaker-open");
  });

  it("streams a Generate into the playground token by token", async () => {
    await open("#playground", "Playground");
    await page.getByLabel("Model", { exact: true }).selectOption("slow-chat");
    await page.getByRole("radio", { name: "Generate" }).check();
    await page.getByLabel(/API key/).fill(apiKey);
    await page.getByLabel("User message").fill("one two three four five six seven eight");
    // Every change of the answer's text, as the page makes it.
    await page.evaluate(`
      window.seen = [];
      const output = document.getElementById("p-output");
      new MutationObserver(() => window.seen.push(output.textContent.length)).observe(output, { childList: true, characterData: true, subtree: true });
    `);
    await page.getByRole("button", { name: "Send" }).click();
    const status = page.locator("#p-status");
    await expect.poll(() => status.textContent(), { timeout: 15_000 }).toMatch(/StatusOK/);
    const seen = (await page.evaluate("window.seen")) as number[];
    const growing = seen.filter((n) => n > 0);
    expect(growing.length).toBeGreaterThanOrEqual(5);
    // Seen at several lengths, each longer than the one before: the answer grew as it streamed.
    expect(new Set(growing).size).toBeGreaterThanOrEqual(5);
    expect(growing).toEqual([...growing].sort((a, b) => a - b));
    const answer = (await page.locator("#p-output").textContent()) ?? "";
    expect(answer.length).toBe(growing.at(-1));
    expect(await status.textContent()).toContain("slow-chat/slow-mock");
    await shot("playground-generate");
  });

  it("shows a failed call's status and ErrorInfo reason", async () => {
    await page.getByLabel("Model", { exact: true }).selectOption("broken");
    await page.getByRole("radio", { name: "Chat" }).check();
    await page.getByRole("button", { name: "Send" }).click();
    const status = page.locator("#p-status");
    await expect.poll(() => status.textContent(), { timeout: 10_000 }).toContain("CIRCUIT_OPEN");
    expect(await status.textContent()).toContain("UNAVAILABLE");
    await shot("playground-error");

    // Without the API key: refused, and the reason says why.
    await page.getByLabel(/API key/).fill("");
    await page.getByLabel("Model", { exact: true }).selectOption("mock-chat");
    await page.getByRole("button", { name: "Send" }).click();
    await expect.poll(() => status.textContent(), { timeout: 10_000 }).toContain("UNAUTHENTICATED");
  });

  it("runs Predict from the JSON editor and Embed", async () => {
    await page.getByLabel(/API key/).fill(apiKey);
    await page.getByLabel("Model", { exact: true }).selectOption("mock-predict");
    expect(await page.getByRole("radio", { name: "Predict" }).isChecked()).toBe(true);
    await page.getByRole("button", { name: "Send" }).click();
    await expect.poll(() => page.locator("#p-status").textContent(), { timeout: 10_000 }).toMatch(/StatusOK/);
    expect(await page.locator("#p-output").textContent()).toContain("OUTPUT0");

    await page.getByLabel("Model", { exact: true }).selectOption("mock-embed");
    await page.getByRole("button", { name: "Send" }).click();
    await expect.poll(() => page.locator("#p-output").textContent(), { timeout: 10_000 }).toMatch(/#0: \d+ dimensions[^]*#1: \d+ dimensions/);
  });

  it("charts the traffic", async () => {
    await open("#traffic", "Traffic");
    // Points come once a second from the traffic stream; a call makes the next one non-zero.
    await expect
      .poll(
        async () => {
          await g.call("Chat", chatBody("mock-chat"));
          return page.locator("main section table").textContent();
        },
        { timeout: 15_000, interval: 500 },
      )
      .toMatch(/Calls per second[1-9]|Calls per second0\.[0-9]*[1-9]/);
    expect(await page.locator("main figure canvas").count()).toBeGreaterThanOrEqual(5);
    await shot("traffic");
  });

  it("lists the recent calls, filtered by status", async () => {
    await open("#calls", "Recent calls");
    const rows = page.locator("#calls-result tbody tr");
    await expect.poll(() => rows.count()).toBeGreaterThan(5);
    await page.getByLabel("Status").selectOption("error");
    await page.getByRole("button", { name: "Apply filters" }).click();
    await expect.poll(async () => (await rows.allTextContents()).every((t) => !/\bOK\b/.test(t.replace(/OK$/, "")) && /UNAVAILABLE|UNAUTHENTICATED/.test(t))).toBe(true);
    expect(await page.locator("#calls-result").textContent()).toContain("CIRCUIT_OPEN");
    await shot("calls");
  });

  it("shows the config with every secret redacted", async () => {
    await open("#config", "Config");
    const pre = page.locator("#config-json");
    await pre.waitFor();
    const text = (await page.locator("main").textContent()) ?? "";
    expect(text).toContain("[redacted]");
    expect(text).toContain("Last reload");
    for (const secret of [upstreamKey, headerSecret, adminToken, apiKey]) expect(text).not.toContain(secret);
    await shot("config");
  });

  it("is usable from the keyboard and on a narrow screen", async () => {
    await page.setViewportSize({ width: 375, height: 800 });
    await page.locator("nav a", { hasText: "Models" }).focus();
    await page.keyboard.press("Enter");
    await expect.poll(() => page.evaluate("document.activeElement?.id")).toBe("page");
    await expect.poll(() => page.locator("main h1").textContent()).toBe("Models");
    expect(await page.locator("nav a[aria-current=page]").textContent()).toBe("Models");
    // No sideways scrolling of the page itself on a phone-sized screen.
    expect(await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")).toBe(true);
    await shot("models-narrow");
    expect(pageErrors).toEqual([]);
  });
});
