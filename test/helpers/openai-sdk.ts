import OpenAI from "openai";
import type { App } from "../../src/server/app.js";

/**
 * An official `openai` SDK client for `app`'s OpenAI-compatible API, as an app would make it: only
 * the base URL is infergate's. maxRetries 0: tests watch single answers (the SDK would retry 429
 * and 5xx by itself).
 */
export function openaiSdk(app: App, options: Partial<ConstructorParameters<typeof OpenAI>[0]> = {}): OpenAI {
  return new OpenAI({ baseURL: `http://${app.httpAddress}/v1`, apiKey: "unused-when-auth-is-off", maxRetries: 0, ...options });
}

/** What an async call threw; fails the test when it threw nothing. */
export async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error("no error was thrown");
}
