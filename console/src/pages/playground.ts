import { create, fromJson, type JsonValue, toJson } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { ErrorInfoSchema, RetryInfoSchema } from "../../../gen/google/rpc/error_details_pb.js";
import { Role } from "../../../gen/infergate/v1/chat_pb.js";
import {
  ChatRequestSchema,
  ChatResponseSchema,
  EmbedRequestSchema,
  EmbedResponseSchema,
  EmbeddingEncoding,
  GenerateFinalSchema,
  GenerateRequestSchema,
  InferenceService,
  PredictRequestSchema,
  PredictResponseSchema,
} from "../../../gen/infergate/v1/inference_service_pb.js";
import { announce, h } from "../dom.js";
import type { Page } from "./page.js";

/**
 * The infergate API key typed by the user: in this module's memory only (never stored, never
 * sent anywhere but to the HTTP listener), so it survives moving between pages, not a reload.
 */
let apiKey = "";

const rpcs = ["Chat", "Generate", "Predict", "Embed"] as const;
type Rpc = (typeof rpcs)[number];
const capabilityOf: Record<Rpc, string> = { Chat: "chat", Generate: "generate", Predict: "predict", Embed: "embed" };

const examplePredict = {
  inputs: [
    { name: "INPUT0", datatype: "DATA_TYPE_FP32", shape: ["1", "4"], contents: { fp32Contents: [1, 2, 3, 4] } },
    { name: "INPUT1", datatype: "DATA_TYPE_FP32", shape: ["1", "4"], contents: { fp32Contents: [0.5, 0.5, 0.5, 0.5] } },
  ],
};

/** A Connect code as gRPC names it (Unavailable → UNAVAILABLE). */
function codeName(code: Code): string {
  return (Code[code] ?? "UNKNOWN").replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

function durationText(d: { seconds: bigint; nanos: number } | undefined): string | undefined {
  if (d === undefined) return undefined;
  return `${(Number(d.seconds) + d.nanos / 1e9).toFixed(3).replace(/\.?0+$/, "")} s`;
}

/** The default base URL of the HTTP listener: this page's host, the listener's port. */
function defaultBaseUrl(port: number | null, tls: boolean): string {
  return port === null ? "" : `${tls ? "https" : "http"}://${location.hostname.includes(":") ? `[${location.hostname}]` : location.hostname}:${port}`;
}

/** Playground: one call of a model through the generated client, over the Connect protocol. */
export const playgroundPage: Page = (main, { info, store }) => {
  const models = store.models?.models ?? [];
  const modelSel = h("select", { id: "p-model", name: "model", required: true }, ...models.map((m) => h("option", { value: m.name }, `${m.name} (${m.capabilities.join(", ")})`)));
  const rpcField = h(
    "fieldset",
    {},
    h("legend", {}, "Call"),
    ...rpcs.map((r) => h("label", {}, h("input", { type: "radio", name: "rpc", value: r, checked: r === "Generate" }), ` ${r}`)),
  );
  const key = h("input", { id: "p-key", type: "password", autocomplete: "off", spellcheck: "false", value: apiKey });
  key.addEventListener("input", () => (apiKey = key.value));
  const base = h("input", { id: "p-base", type: "url", value: defaultBaseUrl(info.httpPort, info.httpTls) });
  const prompt = h("textarea", { id: "p-prompt", rows: 4 }, "Write a haiku about gateways.");
  const predict = h("textarea", { id: "p-predict", rows: 12 }, JSON.stringify(examplePredict, null, 2));
  const texts = h("textarea", { id: "p-texts", rows: 3 }, "first text\nsecond text");
  const promptBox = h("div", {}, h("label", { for: "p-prompt" }, "User message"), prompt);
  const predictBox = h("div", {}, h("label", { for: "p-predict" }, "PredictRequest (JSON; the model is the one chosen above)"), predict);
  const textsBox = h("div", {}, h("label", { for: "p-texts" }, "Texts to embed, one per line"), texts);
  const send = h("button", { type: "submit" }, "Send");
  const stop = h("button", { type: "button", disabled: true }, "Stop");
  const status = h("dl", { id: "p-status", class: "facts", "aria-live": "polite" });
  const output = h("pre", { id: "p-output", class: "output", tabindex: 0, "aria-label": "Answer" });
  const details = h("pre", { id: "p-details", hidden: true, tabindex: 0, "aria-label": "Whole answer (JSON)" });

  const rpc = (): Rpc => (rpcField.querySelector<HTMLInputElement>("input:checked")?.value ?? "Generate") as Rpc;
  const showInputs = () => {
    const r = rpc();
    promptBox.hidden = r !== "Chat" && r !== "Generate";
    predictBox.hidden = r !== "Predict";
    textsBox.hidden = r !== "Embed";
  };
  rpcField.addEventListener("change", showInputs);
  const pickRpc = () => {
    const caps = models.find((m) => m.name === modelSel.value)?.capabilities ?? [];
    if (caps.includes(capabilityOf[rpc()])) return;
    const first = rpcs.find((r) => caps.includes(capabilityOf[r]));
    const input = first === undefined ? null : rpcField.querySelector<HTMLInputElement>(`input[value="${first}"]`);
    if (input !== null) input.checked = true;
    showInputs();
  };
  modelSel.addEventListener("change", pickRpc);
  pickRpc();
  showInputs();

  const setStatus = (facts: [string, string][]) => status.replaceChildren(...facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  let controller: AbortController | undefined;

  const run = async () => {
    controller = new AbortController();
    send.disabled = true;
    stop.disabled = false;
    output.replaceChildren();
    details.hidden = true;
    setStatus([["Status", "calling…"]]);
    const r = rpc();
    const model = modelSel.value;
    const transport = createConnectTransport({ baseUrl: base.value.replace(/\/+$/, "") });
    const client = createClient(InferenceService, transport);
    const headers = apiKey === "" ? undefined : { authorization: `Bearer ${apiKey}` };
    let servedBy = "";
    const onHeader = (hd: Headers) => (servedBy = hd.get("infergate-served-by") ?? servedBy);
    const options = { headers, signal: controller.signal, onHeader };
    const started = performance.now();
    try {
      if (r === "Generate") {
        let tokens = 0;
        let firstAt: number | undefined;
        const messages = [{ role: Role.USER, content: [{ part: { case: "text" as const, value: prompt.value } }] }];
        for await (const ev of client.generate(create(GenerateRequestSchema, { model, messages }), options)) {
          if (ev.event.case === "textDelta") {
            firstAt ??= performance.now();
            tokens++;
            // One text node per delta: the answer grows as it streams.
            output.append(ev.event.value);
          } else if (ev.event.case === "final") {
            details.textContent = JSON.stringify(toJson(GenerateFinalSchema, ev.event.value), null, 2);
            details.hidden = false;
          }
        }
        setStatus([
          ["Status", "OK"],
          ["Deltas", String(tokens)],
          ["First token", firstAt === undefined ? "–" : `${Math.round(firstAt - started)} ms`],
          ["Whole stream", `${Math.round(performance.now() - started)} ms`],
          ["Served by", servedBy || "–"],
        ]);
      } else if (r === "Chat") {
        const req = create(ChatRequestSchema, { model, messages: [{ role: Role.USER, content: [{ part: { case: "text", value: prompt.value } }] }] });
        const res = await client.chat(req, options);
        output.textContent = res.message?.content.map((c) => (c.part.case === "text" ? c.part.value : "")).join("") ?? "";
        details.textContent = JSON.stringify(toJson(ChatResponseSchema, res), null, 2);
        details.hidden = false;
        setStatus([["Status", "OK"], ["Latency", `${Math.round(performance.now() - started)} ms`], ["Served by", servedBy || "–"]]);
      } else if (r === "Predict") {
        let req;
        try {
          req = fromJson(PredictRequestSchema, JSON.parse(predict.value) as JsonValue);
        } catch (e) {
          setStatus([["Status", "not sent"], ["Problem", `the PredictRequest JSON: ${(e as Error).message}`]]);
          return;
        }
        req.model = model;
        const res = await client.predict(req, options);
        output.textContent = JSON.stringify((toJson(PredictResponseSchema, res) as { outputs?: unknown }).outputs ?? [], null, 2);
        setStatus([["Status", "OK"], ["Latency", `${Math.round(performance.now() - started)} ms`], ["Served by", servedBy || "–"]]);
      } else {
        const req = create(EmbedRequestSchema, { model, texts: texts.value.split("\n").filter((t) => t !== ""), encoding: EmbeddingEncoding.FLOAT });
        const res = await client.embed(req, options);
        output.textContent = res.embeddings.map((e) => `#${e.index}: ${e.values.length} dimensions [${e.values.slice(0, 6).map((v) => v.toFixed(4)).join(", ")}, …]`).join("\n");
        const whole = toJson(EmbedResponseSchema, res) as { embeddings?: unknown[] };
        details.textContent = JSON.stringify({ ...whole, embeddings: `(${res.embeddings.length})` }, null, 2);
        details.hidden = false;
        setStatus([["Status", "OK"], ["Latency", `${Math.round(performance.now() - started)} ms`], ["Served by", servedBy || "–"]]);
      }
      announce(`${r} done`);
    } catch (e) {
      const err = ConnectError.from(e);
      const reason = err.findDetails(ErrorInfoSchema)[0]?.reason;
      const retry = durationText(err.findDetails(RetryInfoSchema)[0]?.retryDelay);
      const facts: [string, string][] = [
        ["Status", codeName(err.code)],
        ["Reason", reason ?? "–"],
        ["Message", err.rawMessage],
      ];
      if (retry !== undefined) facts.push(["Retry after", retry]);
      setStatus(facts);
      announce(`${r} failed: ${codeName(err.code)}${reason === undefined ? "" : `, ${reason}`}`);
    } finally {
      send.disabled = false;
      stop.disabled = true;
      controller = undefined;
    }
  };
  stop.addEventListener("click", () => controller?.abort());

  main.append(
    h("h1", {}, "Playground"),
    h(
      "p",
      { class: "muted" },
      "Calls the HTTP listener from this browser with the generated client over the Connect protocol. The API key stays in this page's memory only.",
    ),
    h(
      "form",
      {
        class: "play",
        onsubmit: (e: Event) => {
          e.preventDefault();
          void run();
        },
      },
      h("div", {}, h("label", { for: "p-model" }, "Model"), modelSel),
      rpcField,
      h("div", {}, h("label", { for: "p-key" }, "API key (authorization: Bearer; leave empty when auth is off)"), key),
      h("div", {}, h("label", { for: "p-base" }, "HTTP listener"), base),
      promptBox,
      predictBox,
      textsBox,
      h("div", {}, send, " ", stop),
    ),
    h("h2", {}, "Result"),
    status,
    output,
    details,
  );
  return () => controller?.abort();
};
