/**
 * The embeddings route of the bench's fake OpenAI upstream (bench/fake-openai-server.mjs):
 * `POST …/embeddings` answered in OpenAI's wire shape from answers built once, so that the fake's
 * own cost per call is small and the same whatever the texts (the recording fake of the tests is
 * test/fakes/openai-embeddings-fake.ts). Internal to bench/.
 *
 * The answer: `{"object":"list","data":[{"object":"embedding","embedding":…,"index":i},…],
 * "model":…,"usage":{"prompt_tokens":n,"total_tokens":n}}`, compact, as OpenAI's API reference
 * shows it. Each vector is one of 64 fixed unit vectors (item i gets vector i mod 64), as JSON
 * numbers (each FP32 value's shortest decimal, as OpenAI writes them) or, with
 * `encoding_format: "base64"`, the base64 of its little-endian FP32 bytes. Its length is
 * `dimensions` when the request sets it, else the number after `-dim` in the model's name, else
 * 1536 (text-embedding-3-small's). The part of the answer before `"model"` is built once per model,
 * length, encoding and input count, and written as it is; only the usage is written per call
 * (prompt_tokens: a quarter of the texts' characters, or the token ids; a fixed-cost estimate).
 *
 * The fake counts what it received (`counts`: requests and inputs) and keeps the last request's
 * body (`last`), which `GET /stats` and `GET /embeddings/last` report: the bench reads them to
 * check what infergate sent upstream (only the inputs its cache lacked, and the body it builds).
 */

/** Vectors in the pool: item i of an answer is vector i mod this. */
const poolSize = 64;

/** Requests and inputs received on the embeddings route since the process started. */
export const counts = { requests: 0, inputs: 0 };

/** The body of the last embeddings request, as parsed (undefined before the first). */
export let last;

/** @type {Map<number, Float32Array[]>} the pool of vectors, per length */
const pools = new Map();
/** @type {Map<string, Buffer>} the answer up to `"model"`, per model, length, encoding and count */
const heads = new Map();
/** @type {Map<string, string[]>} each pool vector as it is written, per length and encoding */
const written = new Map();

/** Deterministic unit vectors of `dims` FP32 values (mulberry32, seeded by the vector's number). */
function pool(dims) {
  let p = pools.get(dims);
  if (p !== undefined) return p;
  p = [];
  for (let k = 0; k < poolSize; k++) {
    let state = (k + 1) * 0x9e3779b9;
    const next = () => {
      state = (state + 0x6d2b79f5) >>> 0;
      let t = state;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    const v = new Float64Array(dims);
    let sum = 0;
    for (let j = 0; j < dims; j++) {
      v[j] = next() * 2 - 1;
      sum += v[j] * v[j];
    }
    const norm = Math.sqrt(sum) || 1;
    p.push(Float32Array.from(v, (x) => x / norm));
  }
  pools.set(dims, p);
  return p;
}

/** The shortest decimal text that reads back as the same FP32 value. */
function fp32Text(v) {
  for (let digits = 1; digits < 9; digits++) {
    const s = Number(v.toPrecision(digits));
    if (Math.fround(s) === v) return String(s);
  }
  return String(Number(v.toPrecision(9)));
}

function vectorsAsWritten(dims, base64) {
  const key = `${dims}:${base64}`;
  let w = written.get(key);
  if (w === undefined) {
    w = pool(dims).map((v) => (base64 ? `"${Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64")}"` : `[${Array.from(v, fp32Text).join(",")}]`));
    written.set(key, w);
  }
  return w;
}

function head(model, dims, base64, n) {
  const key = `${model}\n${dims}\n${base64}\n${n}`;
  let h = heads.get(key);
  if (h === undefined) {
    const w = vectorsAsWritten(dims, base64);
    const items = [];
    for (let i = 0; i < n; i++) items.push(`{"object":"embedding","embedding":${w[i % poolSize]},"index":${i}}`);
    h = Buffer.from(`{"object":"list","data":[${items.join(",")}],"model":${JSON.stringify(model)},`);
    // Answers for a handful of shapes are kept; a run asking for many more would only rebuild them.
    if (heads.size > 64) heads.clear();
    heads.set(key, h);
  }
  return h;
}

/** The inputs of a request body as a list (one string or one token list is one input), or undefined. */
function inputsOf(input) {
  if (typeof input === "string") return [input];
  if (!Array.isArray(input) || input.length === 0) return undefined;
  if (input.every((v) => typeof v === "number")) return [input];
  return input;
}

/**
 * Answers one embeddings request whose JSON body is `body`: calls `fail(status, message, param)`
 * for what OpenAI refuses (a 400 in its error shape), else writes the answer on `res`.
 */
export function answerEmbeddings(body, res, fail) {
  const inputs = typeof body?.model === "string" ? inputsOf(body.input) : undefined;
  if (inputs === undefined || inputs.some((x) => (typeof x !== "string" && !Array.isArray(x)) || x.length === 0)) {
    fail(400, "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.", "input");
    return;
  }
  const format = body.encoding_format ?? "float";
  if (format !== "float" && format !== "base64") {
    fail(400, `Invalid value for 'encoding_format': '${String(format).slice(0, 40)}'. Supported values are: 'float' and 'base64'.`, "encoding_format");
    return;
  }
  const full = Number(/-dim(\d+)/.exec(body.model)?.[1] ?? 1536);
  const dims = body.dimensions ?? full;
  if (!Number.isInteger(dims) || dims < 1 || dims > full) {
    fail(400, `This model does not support specifying dimensions of ${String(dims).slice(0, 20)}.`, "dimensions");
    return;
  }
  counts.requests++;
  counts.inputs += inputs.length;
  last = body;
  let tokens = 0;
  for (const x of inputs) tokens += typeof x === "string" ? Math.ceil(x.length / 4) : x.length;
  const h = head(body.model, dims, format === "base64", inputs.length);
  const tail = `"usage":{"prompt_tokens":${tokens},"total_tokens":${tokens}}}`;
  res.writeHead(200, { "content-type": "application/json", "content-length": h.length + Buffer.byteLength(tail) });
  res.write(h);
  res.end(tail);
}
