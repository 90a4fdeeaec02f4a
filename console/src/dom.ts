/**
 * The few DOM helpers the pages share. Text always goes in as text (textContent, text nodes), never
 * as markup: model names, reasons and config values come from callers and configs.
 */

type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, string | number | boolean | ((e: Event) => void) | undefined>;

/** An element with attributes (`on…` are listeners; false/undefined are left out) and children. */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, ...children);
  return el;
}

export function append(el: Element, ...children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    el.append(typeof c === "number" ? String(c) : c);
  }
}

/** A table (stacked into labelled blocks on narrow screens) of `rows` under `headers`. */
export function table(caption: string, headers: readonly string[], rows: readonly Child[][], numeric: ReadonlySet<number> = new Set()): HTMLElement {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "stack" },
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, ...headers.map((t, i) => h("th", { scope: "col", class: numeric.has(i) ? "num" : undefined }, t)))),
      h("tbody", {}, ...rows.map((r) => h("tr", {}, ...r.map((c, i) => h("td", { "data-label": headers[i], class: numeric.has(i) ? "num" : undefined }, c))))),
    ),
  );
}

/** A state as a word with a mark (✔ ▲ ✖) and a colour: readable without the colour. */
export function stateWord(word: string, level: "good" | "warn" | "bad" | "none"): HTMLElement {
  return h("span", { class: level === "none" ? "state" : `state state-${level}` }, word);
}

export function percent(ratio: number | null | undefined): string {
  return ratio === null || ratio === undefined ? "–" : `${(ratio * 100).toFixed(ratio > 0 && ratio < 0.1 ? 1 : 0)} %`;
}

export function ms(v: number | null | undefined): string {
  return v === null || v === undefined ? "–" : `${v < 10 ? v.toFixed(1) : Math.round(v)} ms`;
}

/** Announces `text` to screen readers (the page's polite live region). */
export function announce(text: string): void {
  const live = document.getElementById("live");
  if (live !== null) live.textContent = text;
}
