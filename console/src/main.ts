/**
 * infergate's web console (docs/console.md): a single page served by the admin listener under
 * /console, reading the admin JSON endpoints (src/server/console-api.ts) and calling the HTTP
 * listener from the Playground. Pages by the URL's fragment: #models, #traffic, #calls,
 * #playground, #config.
 */
import { AdminError, followTraffic, getJson, type Info, setAdminToken } from "./api.js";
import { h } from "./dom.js";
import { callsPage } from "./pages/calls.js";
import { configPage } from "./pages/config.js";
import { modelsPage } from "./pages/models.js";
import type { Page } from "./pages/page.js";
import { playgroundPage } from "./pages/playground.js";
import { trafficPage } from "./pages/traffic.js";
import { Store } from "./store.js";

const pages: Record<string, { title: string; page: Page }> = {
  models: { title: "Models", page: modelsPage },
  traffic: { title: "Traffic", page: trafficPage },
  calls: { title: "Recent calls", page: callsPage },
  playground: { title: "Playground", page: playgroundPage },
  config: { title: "Config", page: configPage },
};

const main = document.getElementById("page")!;
const tokenForm = document.getElementById("token-form") as HTMLFormElement;
const tokenInput = document.getElementById("admin-token") as HTMLInputElement;
const tokenStatus = document.getElementById("token-status")!;
const store = new Store();
let info: Info | undefined;
let stopPage: (() => void) | undefined;
let stream: AbortController | undefined;

function show(focus: boolean): void {
  if (info === undefined) return;
  const name = location.hash.slice(1) in pages ? location.hash.slice(1) : "models";
  stopPage?.();
  main.replaceChildren();
  for (const a of document.querySelectorAll<HTMLAnchorElement>("nav a")) {
    if (a.hash === `#${name}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  document.title = `${pages[name]!.title} · infergate console`;
  stopPage = pages[name]!.page(main, { info, store });
  // After a click in the navigation, the keyboard goes on in the page.
  if (focus) main.focus();
}

function startStream(): void {
  stream?.abort();
  stream = new AbortController();
  void followTraffic(
    {
      traffic: (p) => store.addPoint(p),
      models: (m) => store.setModels(m),
      error: (e) => {
        if (e instanceof AdminError && e.status === 401) askToken("The admin token was refused.");
        else store.setProblem(`The live stream is interrupted (${String((e as Error).message ?? e)}); retrying.`);
      },
    },
    stream.signal,
  );
}

function askToken(problem?: string): void {
  tokenForm.hidden = false;
  tokenStatus.textContent = problem ?? "This gateway has an admin token: type it to use the console.";
  tokenInput.focus();
}

async function start(): Promise<void> {
  try {
    info = await getJson<Info>("/admin/info");
  } catch (e) {
    if (e instanceof AdminError && e.status === 401) {
      askToken(tokenForm.hidden ? undefined : "That token was refused.");
      return;
    }
    main.replaceChildren(h("p", { class: "error", role: "alert" }, `The admin listener did not answer: ${(e as Error).message}`));
    return;
  }
  tokenForm.hidden = true;
  startStream();
  // The first models event fills the model lists of the Playground and Recent calls.
  await new Promise<void>((resolve) => {
    if (store.models !== undefined) resolve();
    const stop = store.subscribe(() => {
      if (store.models !== undefined || store.problem !== undefined) {
        stop();
        resolve();
      }
    });
  });
  show(false);
}

tokenForm.addEventListener("submit", (e) => {
  e.preventDefault();
  setAdminToken(tokenInput.value);
  tokenInput.value = "";
  void start();
});
window.addEventListener("hashchange", () => show(true));
void start();
