import type { Info } from "../api.js";
import type { Store } from "../store.js";

/** What every page gets. */
export interface PageContext {
  readonly info: Info;
  readonly store: Store;
}

/** Draws a page into `main`; returns what stops its updates when another page is shown. */
export type Page = (main: HTMLElement, ctx: PageContext) => () => void;
