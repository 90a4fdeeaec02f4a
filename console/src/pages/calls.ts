import { getJson } from "../api.js";
import { announce, h, ms, table } from "../dom.js";
import type { Page } from "./page.js";

interface RecentCall {
  readonly time: string;
  readonly requestId: string;
  readonly caller: string;
  readonly rpc: string;
  readonly model: string;
  readonly status: string;
  readonly reason?: string;
  readonly latencyMs: number;
  readonly ttftMs?: number;
  readonly promptTokens: number;
  readonly completionTokens: number;
  readonly cache?: string;
  readonly servedBy?: string;
  readonly traceId?: string;
}

const statuses = ["", "ok", "error", "INVALID_ARGUMENT", "NOT_FOUND", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "UNAVAILABLE", "DEADLINE_EXCEEDED", "UNAUTHENTICATED", "INTERNAL", "CANCELLED"];

function row(c: RecentCall) {
  return [
    h("time", { datetime: c.time }, new Date(c.time).toLocaleTimeString()),
    c.caller === "" ? "(anonymous)" : c.caller,
    c.rpc,
    c.model,
    c.status === "OK" ? "OK" : h("strong", {}, c.status),
    c.reason ?? "",
    ms(c.latencyMs),
    c.ttftMs === undefined ? "" : ms(c.ttftMs),
    `${c.promptTokens} / ${c.completionTokens}`,
    c.cache ?? "",
    c.servedBy ?? "",
    h("code", {}, c.traceId ?? c.requestId),
  ];
}

/** Recent calls: the ring of GET /admin/calls, filtered by model, status and caller. */
export const callsPage: Page = (main, { store }) => {
  const model = h("select", { id: "f-model", name: "model" }, h("option", { value: "" }, "any"), ...(store.models?.models ?? []).map((m) => h("option", { value: m.name }, m.name)));
  const status = h("select", { id: "f-status", name: "status" }, ...statuses.map((s) => h("option", { value: s }, s === "" ? "any" : s)));
  const caller = h("input", { id: "f-caller", name: "caller", type: "text", autocomplete: "off", maxlength: 256 });
  const auto = h("input", { id: "f-auto", type: "checkbox", checked: true });
  const result = h("div", { id: "calls-result" });
  const load = async () => {
    const q = new URLSearchParams({ limit: "200" });
    if (model.value !== "") q.set("model", model.value);
    if (status.value !== "") q.set("status", status.value);
    if (caller.value !== "") q.set("caller", caller.value);
    try {
      const { calls } = await getJson<{ calls: RecentCall[] }>(`/admin/calls?${q}`);
      result.replaceChildren(
        calls.length === 0
          ? h("p", {}, "No call matches.")
          : table(
              `${calls.length} calls, newest first`,
              ["Time", "Caller", "RPC", "Model", "Status", "Reason", "Latency", "TTFT", "Tokens in / out", "Cache", "Served by", "Trace or request id"],
              calls.map(row),
              new Set([6, 7]),
            ),
      );
    } catch (e) {
      result.replaceChildren(h("p", { class: "error", role: "alert" }, String((e as Error).message)));
    }
  };
  const form = h(
    "form",
    {
      class: "filters",
      "aria-label": "Filter calls",
      onsubmit: (e: Event) => {
        e.preventDefault();
        void load().then(() => announce("Calls updated"));
      },
    },
    h("div", {}, h("label", { for: "f-model" }, "Model"), model),
    h("div", {}, h("label", { for: "f-status" }, "Status"), status),
    h("div", {}, h("label", { for: "f-caller" }, "Caller"), caller),
    h("div", {}, h("button", { type: "submit" }, "Apply filters")),
    h("div", {}, auto, h("label", { for: "f-auto", style: undefined }, " Refresh every 2 s")),
  );
  main.append(
    h("h1", {}, "Recent calls"),
    h("p", { class: "muted" }, "The last calls this process finished (no prompts or answers). The same list: GET /admin/calls."),
    form,
    result,
  );
  void load();
  const timer = setInterval(() => {
    if (auto.checked) void load();
  }, 2000);
  return () => clearInterval(timer);
};
