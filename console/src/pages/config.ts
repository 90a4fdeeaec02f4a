import { getJson } from "../api.js";
import { h } from "../dom.js";
import type { Page } from "./page.js";

interface ConfigView {
  readonly loadedAt: string;
  readonly lastReload: { readonly at: string; readonly result: string } | null;
  readonly config: unknown;
}

/** Config: the running configuration with its secrets redacted (GET /admin/config). */
export const configPage: Page = (main) => {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  main.append(h("h1", {}, "Config"), body);
  const load = async () => {
    try {
      const v = await getJson<ConfigView>("/admin/config");
      body.replaceChildren(
        h(
          "dl",
          { class: "facts" },
          h("dt", {}, "Loaded"),
          h("dd", {}, h("time", { datetime: v.loadedAt }, new Date(v.loadedAt).toLocaleString())),
          h("dt", {}, "Last reload"),
          h("dd", {}, v.lastReload === null ? "none since the start" : [`${v.lastReload.result} at `, new Date(v.lastReload.at).toLocaleString()].join("")),
        ),
        h("p", { class: "muted" }, "Secrets (keys, tokens, header values, passwords) show as [redacted]."),
        h("pre", { id: "config-json", tabindex: 0, "aria-label": "Running configuration" }, JSON.stringify(v.config, null, 2)),
        h("button", { type: "button", onclick: () => void load() }, "Reload view"),
      );
    } catch (e) {
      body.replaceChildren(h("p", { class: "error", role: "alert" }, String((e as Error).message)));
    }
  };
  void load();
  return () => {};
};
