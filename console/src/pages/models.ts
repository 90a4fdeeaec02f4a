import type { EndpointView, ModelView } from "../api.js";
import { h, percent, stateWord, table } from "../dom.js";
import type { Page } from "./page.js";

const breakerLevel: Record<string, "good" | "warn" | "bad"> = { CLOSED: "good", HALF_OPEN: "warn", OPEN: "bad" };
const stateLevel: Record<string, "good" | "bad"> = { READY: "good", NOT_READY: "bad" };

function endpoint(e: EndpointView): HTMLElement {
  return h(
    "li",
    {},
    h("span", {}, e.endpoint === "" ? "(in process)" : e.endpoint),
    " — breaker ",
    stateWord(e.breaker === "HALF_OPEN" ? "HALF-OPEN" : e.breaker, breakerLevel[e.breaker] ?? "none"),
    e.ejected && h("span", {}, " — ", stateWord("EJECTED", "bad")),
    `; in flight ${e.inFlight}; errors ${percent(e.recentErrorRatio)} of ${e.recentCalls}`,
  );
}

function row(m: ModelView) {
  return [
    h("strong", {}, m.name),
    m.version,
    m.kind,
    m.upstream,
    m.capabilities.join(", "),
    stateWord(m.state === "UNSPECIFIED" ? "unknown" : m.state.replace("_", " "), stateLevel[m.state] ?? "none"),
    `${percent(m.recentErrorRatio)} of ${m.recentCalls}`,
    h("ul", { class: "endpoints" }, ...m.endpoints.map(endpoint)),
  ];
}

/** Models: every model, its upstream's endpoints and their breakers, updated with each `models` event. */
export const modelsPage: Page = (main, { store }) => {
  const status = h("p", { class: "muted" }, "Waiting for the first update…");
  const holder = h("div", {});
  main.append(h("h1", {}, "Models"), status, holder);
  const draw = () => {
    const m = store.models;
    if (store.problem !== undefined) status.textContent = store.problem;
    if (m === undefined) return;
    if (store.problem === undefined) status.textContent = `Live. Error ratios over the last ${m.windowS} s.`;
    holder.replaceChildren(
      table(
        `${m.models.length} models`,
        ["Model", "Version", "Kind", "Upstream", "Capabilities", "State", "Recent errors", "Endpoints"],
        m.models.map(row),
      ),
    );
  };
  draw();
  return store.subscribe(draw);
};
