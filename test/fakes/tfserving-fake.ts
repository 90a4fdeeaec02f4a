/**
 * A fake TensorFlow Serving REST API for tests (node:http on a loopback port), after
 * https://www.tensorflow.org/tfx/serving/api_rest:
 *
 * - `POST /v1/models/{name}[/versions/{v}]:predict` with `{"instances": …}` (row form) answering
 *   `{"predictions": …}`, or `{"inputs": …}` (columnar form) answering `{"outputs": …}`; an
 *   optional `"signature_name"` (only "serving_default", the default, exists).
 * - `GET /v1/models/{name}[/versions/{v}]`: model status (GetModelStatusResponse as JSON).
 * - `GET /v1/models/{name}[/versions/{v}]/metadata`: a small GetModelMetadataResponse.
 * - Errors: `{"error": "<message>"}` with 400 (bad request), 404 (unknown model, version or path),
 *   405 (wrong HTTP method), 503 (`fail_unavailable`).
 *
 * Models:
 *
 * - `half_plus_two` (version "123", the only one): y = 0.5·x + 2 in float32, input "x", output "y"
 *   (signature "serving_default"). Numbers are written in the shortest form that reads back as
 *   the same float32 (2.55, not 2.549999952316284), like TF Serving.
 *   Row form: `instances` is a list; each instance is a number, a nested list of numbers, or an
 *   object `{"x": <number or nested list>}`; `predictions` has the same structure with every
 *   number mapped (objects are answered by their "y" value only, as the model has one output).
 *   Columnar form: `inputs` is a number, a nested list, or `{"x": …}`; `outputs` mirrors it
 *   (the single output's name is omitted).
 * - `fail_unavailable`: every predict answers 503 `{"error": …}`; status says UNAVAILABLE.
 */
import * as http from "node:http";
import type { AddressInfo } from "node:net";

/** One request the TF Serving fake received. */
export interface TfServingRecordedRequest {
  /** The HTTP method. */
  readonly method: string;
  /** The URL path (without the query). */
  readonly path: string;
  /** The REST operation the path names ("unknown" for other paths). */
  readonly operation: "predict" | "status" | "metadata" | "unknown";
  /** The model named in the path. */
  readonly model?: string;
  /** The version named in the path ("" when none). */
  readonly version?: string;
  /** `signature_name` of a predict body, if given. */
  readonly signatureName?: string;
  /** The predict form the body used ("rows" = instances, "columns" = inputs). */
  readonly form?: "rows" | "columns";
  /** The parsed JSON body (undefined for GET or an unparsable body). */
  readonly body?: unknown;
  /** Request headers (lower-case names; repeated headers joined with ", "). */
  readonly headers: Readonly<Record<string, string>>;
  /** When the request arrived (Date.now()). */
  readonly receivedAt: number;
  /** When the client went away before the answer (Date.now()). */
  abortedAt?: number;
  /** The HTTP status answered. */
  status?: number;
  /** The error message answered, if any. */
  error?: string;
}

/** A running TF Serving fake. */
export interface TfServingFake {
  /** "http://127.0.0.1:PORT" (no trailing slash). */
  readonly url: string;
  /** Every request received, in arrival order (clear with `length = 0`). */
  readonly requests: TfServingRecordedRequest[];
  /** Stops the listener and drops open connections. */
  close(): Promise<void>;
}

/** Names of the models the TF Serving fake serves. */
export const tfServingFakeModels = ["half_plus_two", "fail_unavailable"] as const;

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const models: ReadonlyMap<string, { version: string; available: boolean }> = new Map([
  ["half_plus_two", { version: "123", available: true }],
  ["fail_unavailable", { version: "1", available: false }],
]);

/** The shortest decimal that reads back as the same float32 (as TF Serving writes floats). */
function float32Json(v: number): number {
  const f = Math.fround(v);
  if (!Number.isFinite(f)) return f;
  for (let p = 1; p <= 9; p++) {
    const n = Number(f.toPrecision(p));
    if (Math.fround(n) === f) return n;
  }
  return f;
}

function halfPlusTwo(x: unknown, where: string): unknown {
  if (Array.isArray(x)) return x.map((e, i) => halfPlusTwo(e, `${where}[${i}]`));
  if (typeof x !== "number") {
    throw new HttpError(400, `Failed to process element: ${where} of 'x': expected a number, got ${JSON.stringify(x) ?? String(x)}`);
  }
  return float32Json(Math.fround(Math.fround(x) * 0.5 + 2));
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Reads the named-input object form: only "x" exists. */
function namedX(obj: Record<string, unknown>, where: string): unknown {
  for (const k of Object.keys(obj)) {
    if (k !== "x") {
      throw new HttpError(400, `input tensor alias not found in signature: ${k}. Inputs expected to be in the set {x}.`);
    }
  }
  if (!("x" in obj)) throw new HttpError(400, `${where}: missing input 'x'`);
  return obj["x"];
}

function predict(body: unknown): { form: "rows" | "columns"; answer: unknown } {
  if (!isObject(body)) throw new HttpError(400, "JSON Value: request body is not an object");
  const sig = body["signature_name"];
  if (sig !== undefined) {
    if (typeof sig !== "string") throw new HttpError(400, "'signature_name' must be a string");
    if (sig !== "" && sig !== "serving_default") {
      throw new HttpError(400, `Serving signature name: "${sig}" not found in signature def`);
    }
  }
  const hasRows = "instances" in body;
  const hasCols = "inputs" in body;
  if (hasRows && hasCols) {
    throw new HttpError(400, "Not formatted correctly expecting only one of 'inputs' or 'instances' keys exists");
  }
  if (!hasRows && !hasCols) throw new HttpError(400, "Missing 'inputs' or 'instances' key");
  if (hasRows) {
    const instances = body["instances"];
    if (!Array.isArray(instances)) throw new HttpError(400, "Excepting 'instances' to be an list/array");
    const predictions = instances.map((inst, i) =>
      halfPlusTwo(isObject(inst) ? namedX(inst, `instances[${i}]`) : inst, `instances[${i}]`),
    );
    return { form: "rows", answer: { predictions } };
  }
  const inputs = body["inputs"];
  const x = isObject(inputs) ? namedX(inputs, "inputs") : inputs;
  return { form: "columns", answer: { outputs: halfPlusTwo(x, "inputs") } };
}

const modelPath = /^\/v1\/models\/([^/:]+)(?:\/versions\/([^/:]+))?(?:(\/metadata)|:(predict|classify|regress))?$/;

function resolve(name: string, version: string): { version: string; available: boolean } {
  const m = models.get(name);
  if (m === undefined) {
    throw new HttpError(404, `Servable not found for request: ${version === "" ? `Latest(${name})` : `Specific(${name}, ${version})`}`);
  }
  if (version !== "" && version !== m.version) {
    throw new HttpError(404, `Servable not found for request: Specific(${name}, ${version})`);
  }
  return m;
}

/**
 * Starts the fake on a loopback port (port 0).
 *
 * @returns the base URL, the request log and `close()`.
 */
export async function createTfServingFake(): Promise<TfServingFake> {
  const requests: TfServingRecordedRequest[] = [];
  const server = http.createServer((req, res) => {
    void handle(req, res, requests);
  });
  await new Promise<void>((resolvePromise, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolvePromise());
  });
  const port = (server.address() as AddressInfo).port;
  let closed: Promise<void> | undefined;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close() {
      closed ??= new Promise<void>((resolvePromise) => {
        server.close(() => resolvePromise());
        server.closeAllConnections();
      });
      return closed;
    },
  };
}

async function handle(req: http.IncomingMessage, res: http.ServerResponse, requests: TfServingRecordedRequest[]): Promise<void> {
  const receivedAt = Date.now();
  const path = new URL(req.url ?? "/", "http://fake").pathname;
  const method = req.method ?? "GET";
  const m = modelPath.exec(path);
  const model = m?.[1] === undefined ? undefined : decodeURIComponent(m[1]);
  const version = m?.[2] === undefined ? "" : decodeURIComponent(m[2]);
  const verb = m?.[4];
  const operation: TfServingRecordedRequest["operation"] =
    m === null ? "unknown" : verb === "predict" ? "predict" : verb !== undefined ? "unknown" : m[3] !== undefined ? "metadata" : "status";
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) {
    if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(", ") : v;
  }
  const chunks: Buffer[] = [];
  try {
    for await (const c of req) chunks.push(c as Buffer);
  } catch {
    return;
  }
  const text = Buffer.concat(chunks).toString("utf8");
  let body: unknown;
  let parseError: string | undefined;
  if (method === "POST") {
    try {
      body = JSON.parse(text) as unknown;
    } catch (err) {
      parseError = `JSON Parse error: ${(err as Error).message}`;
    }
  }
  const rec: TfServingRecordedRequest = {
    method,
    path,
    operation,
    ...(model !== undefined ? { model, version } : {}),
    ...(isObject(body) && typeof body["signature_name"] === "string" ? { signatureName: body["signature_name"] } : {}),
    ...(isObject(body) && "instances" in body ? { form: "rows" as const } : isObject(body) && "inputs" in body ? { form: "columns" as const } : {}),
    ...(body !== undefined ? { body } : {}),
    headers,
    receivedAt,
  };
  requests.push(rec);
  res.once("close", () => {
    if (!res.writableFinished && rec.status === undefined) rec.abortedAt = Date.now();
  });
  const answer = (status: number, payload: unknown) => {
    rec.status = status;
    if (isObject(payload) && typeof payload["error"] === "string") rec.error = payload["error"];
    const out = JSON.stringify(payload);
    if (res.destroyed) return;
    res.writeHead(status, { "content-type": "application/json", "content-length": String(Buffer.byteLength(out)) });
    res.end(out);
  };
  try {
    if (operation === "unknown" || model === undefined) throw new HttpError(404, `Malformed request: ${method} ${path}`);
    const wantMethod = operation === "predict" ? "POST" : "GET";
    if (method !== wantMethod) throw new HttpError(405, `Malformed request: ${method} ${path}`);
    const found = resolve(model, version);
    if (operation === "status") {
      answer(200, {
        model_version_status: [
          {
            version: found.version,
            state: found.available ? "AVAILABLE" : "UNAVAILABLE",
            status: found.available
              ? { error_code: "OK", error_message: "" }
              : { error_code: "UNAVAILABLE", error_message: "injected failure: model unavailable" },
          },
        ],
      });
      return;
    }
    if (operation === "metadata") {
      answer(200, {
        model_spec: { name: model, signature_name: "", version: found.version },
        metadata: {
          signature_def: {
            signature_def: {
              serving_default: {
                inputs: { x: { dtype: "DT_FLOAT", tensor_shape: { dim: [], unknown_rank: true }, name: "x:0" } },
                outputs: { y: { dtype: "DT_FLOAT", tensor_shape: { dim: [], unknown_rank: true }, name: "y:0" } },
                method_name: "tensorflow/serving/predict",
              },
            },
          },
        },
      });
      return;
    }
    if (parseError !== undefined) throw new HttpError(400, parseError);
    if (!found.available) throw new HttpError(503, "injected failure: model unavailable");
    answer(200, predict(body).answer);
  } catch (err) {
    const e = err instanceof HttpError ? err : new HttpError(500, String(err));
    answer(e.status, { error: e.message });
  }
}
