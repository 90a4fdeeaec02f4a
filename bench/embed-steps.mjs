#!/usr/bin/env node
/**
 * Where an Embed's CPU goes inside infergate, step by step, in this process: the compiled steps of
 * dist/ (run `npm run build` first) that a batch's answer passes through between the upstream's
 * body and the caller's message, each in a tight loop over an answer like the bench's fake sends
 * (bench/lib/fake-embeddings.mjs: 64 vectors, base64 or JSON numbers). CPU time from
 * process.cpuUsage(), so other work on the machine slices the time but adds little to the figures;
 * they still move with the machine's load (caches, memory bandwidth): compare lines of one run.
 *
 *   node bench/embed-steps.mjs [--dimensions 1536] [--inputs 64] [--iterations 100]
 *
 * Also two references that are not infergate's code: the same vectors written straight into an
 * EmbedResponse's wire form (each Embedding its index and the FP32 bytes as `fp32`, or as the
 * packed `values`, whose wire form is the same little-endian FP32 bytes), checked byte for byte
 * against toBinary; and base64 decoded with a check of the decoded length only (which, unlike
 * src/wire/fp32.ts, lets URL-safe base64 through).
 */
import { parseArgs } from "node:util";
import { create, toBinary } from "@bufbuild/protobuf";
import { EmbeddingEncoding, EmbedResponseSchema } from "../dist/gen/infergate/v1/inference_service_pb.js";
import { applyEncoding } from "../dist/src/gateway/embed-batches.js";
import { fromEmbeddingsResponse } from "../dist/src/upstreams/openai/openai-embeddings.js";
import { fp32FromBase64 } from "../dist/src/wire/fp32.js";
import { responseBytes } from "../dist/src/wire/fast-paths.js";

const { values: o } = parseArgs({ options: { dimensions: { type: "string", default: "1536" }, inputs: { type: "string", default: "64" }, iterations: { type: "string", default: "100" } } });
const dims = Number(o.dimensions);
const n = Number(o.inputs);
const iterations = Number(o.iterations);

const vector = Float32Array.from({ length: dims }, (_, i) => Math.sin(i + 1) / Math.sqrt(dims));
const answer = (embedding) => Buffer.from(JSON.stringify({ object: "list", data: Array.from({ length: n }, (_, i) => ({ object: "embedding", embedding, index: i })), model: "bench-emb", usage: { prompt_tokens: 1, total_tokens: 1 } }));
const base64Body = answer(Buffer.from(vector.buffer).toString("base64"));
const floatBody = answer(Array.from(vector, (v) => Number(v.toPrecision(8))));
/** The body as undici hands it over: chunks of 64 KiB. */
const chunksOf = (b) => Array.from({ length: Math.ceil(b.length / 65536) }, (_, i) => b.subarray(i * 65536, (i + 1) * 65536));
const ctx = { upstream: "fake", secrets: [] };

const rows = [];
/** CPU µs per run of `fn` (after a few unmeasured runs). */
function cpu(step, where, fn, iters = iterations) {
  for (let i = 0; i < 3; i++) fn();
  const c0 = process.cpuUsage();
  for (let i = 0; i < iters; i++) fn();
  const c = process.cpuUsage(c0);
  rows.push({ step, where, us: (c.user + c.system) / iters });
}

/** An EmbedResponse's wire form written directly: per Embedding, field 1 {index, fp32 (3) or values (2, packed)}. */
function directBytes(res, asValues) {
  const varintLength = (v) => (v < 0x80 ? 1 : v < 0x4000 ? 2 : v < 0x200000 ? 3 : v < 0x10000000 ? 4 : 5);
  const writeVarint = (out, at, v) => {
    while (v >= 0x80) {
      out[at++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    out[at++] = v;
    return at;
  };
  let size = 0;
  const inner = res.embeddings.map((e) => {
    const len = (e.index === 0 ? 0 : 1 + varintLength(e.index)) + 1 + varintLength(e.fp32.length) + e.fp32.length;
    size += 1 + varintLength(len) + len;
    return len;
  });
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  res.embeddings.forEach((e, i) => {
    out[at++] = 0x0a;
    at = writeVarint(out, at, inner[i]);
    if (e.index !== 0) {
      out[at++] = 0x08;
      at = writeVarint(out, at, e.index);
    }
    out[at++] = asValues ? 0x12 : 0x1a;
    at = writeVarint(out, at, e.fp32.length);
    out.set(e.fp32, at);
    at += e.fp32.length;
  });
  return out;
}

/** Base64 of FP32 values decoded and checked by the decoded length (Buffer.from skips what is not base64). */
function decodeChecked(text) {
  if (text.length % 4 !== 0) return undefined;
  const bytes = Buffer.from(text, "base64");
  const pad = text.endsWith("==") ? 2 : text.endsWith("=") ? 1 : 0;
  return bytes.length === (text.length / 4) * 3 - pad && bytes.length % 4 === 0 ? bytes : undefined;
}

const base64Chunks = chunksOf(base64Body);
const base64Text = base64Body.toString("utf8");
const base64Parsed = JSON.parse(base64Text);
const fp32Answer = fromEmbeddingsResponse(ctx, base64Parsed, n, undefined);
cpu("the body's chunks joined (Buffer.concat)", "src/upstreams/http/http-upstream.ts readText", () => Buffer.concat(base64Chunks));
cpu("the body decoded as UTF-8", "src/upstreams/http/http-upstream.ts readText", () => base64Body.toString("utf8"));
cpu("JSON.parse", "src/upstreams/http/http-upstream.ts readJson", () => JSON.parse(base64Text));
cpu("the answer read (fromEmbeddingsResponse)", "src/upstreams/openai/openai-embeddings.ts", () => fromEmbeddingsResponse(ctx, base64Parsed, n, undefined));
cpu("  of which fp32FromBase64, every vector", "src/wire/fp32.ts", () => base64Parsed.data.forEach((d) => fp32FromBase64(d.embedding)));
cpu("    Buffer.from(text, \"base64\") alone", "node:buffer", () => base64Parsed.data.forEach((d) => Buffer.from(d.embedding, "base64")));
cpu("    the decoded bytes encoded back to base64 alone", "node:buffer", () => fp32Answer.embeddings.forEach((e) => Buffer.from(e.fp32.buffer, e.fp32.byteOffset, e.fp32.byteLength).toString("base64")));
cpu("  reference: decode and check the length only, every vector", "(not infergate's)", () => base64Parsed.data.forEach((d) => decodeChecked(d.embedding)));
cpu("the answer encoded, FP32_BYTES (responseBytes: toBinary)", "src/wire/fast-paths.ts", () => responseBytes(EmbedResponseSchema, fp32Answer));
cpu("  reference: written directly", "(not infergate's)", () => directBytes(fp32Answer, false));

const floatText = floatBody.toString("utf8");
const floatParsed = JSON.parse(floatText);
const floatFp32 = fromEmbeddingsResponse(ctx, floatParsed, n, undefined);
const clone = () => create(EmbedResponseSchema, { embeddings: floatFp32.embeddings.map((e) => ({ index: e.index, fp32: e.fp32 })), dimensions: dims });
const floatAnswer = applyEncoding(clone(), EmbeddingEncoding.FLOAT);
const few = Math.max(5, Math.round(iterations / 4));
cpu("float upstream: the body decoded as UTF-8", "src/upstreams/http/http-upstream.ts readText", () => floatBody.toString("utf8"), few);
cpu("float upstream: JSON.parse", "src/upstreams/http/http-upstream.ts readJson", () => JSON.parse(floatText), few);
cpu("float upstream: the answer read (fromEmbeddingsResponse)", "src/upstreams/openai/openai-embeddings.ts", () => fromEmbeddingsResponse(ctx, floatParsed, n, undefined), few);
cpu("FLOAT for the caller: numbers made (applyEncoding)", "src/gateway/embed-batches.ts", () => applyEncoding(clone(), EmbeddingEncoding.FLOAT), few);
cpu("the answer encoded, FLOAT (responseBytes: toBinary)", "src/wire/fast-paths.ts", () => responseBytes(EmbedResponseSchema, floatAnswer), few);
cpu("  reference: written directly from the FP32 bytes", "(not infergate's)", () => directBytes(floatFp32, true), few);

const same = Buffer.from(directBytes(floatFp32, true)).equals(Buffer.from(toBinary(EmbedResponseSchema, create(EmbedResponseSchema, { embeddings: floatAnswer.embeddings.map((e) => ({ index: e.index, values: e.values })) })))) && Buffer.from(directBytes(fp32Answer, false)).equals(Buffer.from(toBinary(EmbedResponseSchema, create(EmbedResponseSchema, { embeddings: fp32Answer.embeddings.map((e) => ({ index: e.index, fp32: e.fp32 })) }))));
process.stdout.write(`${n} vectors of ${dims} values: base64 answer ${base64Body.length} bytes, float answer ${floatBody.length} bytes; CPU µs per batch (${iterations} runs; ${few} for the float upstream's)\n\n`);
process.stdout.write("| step | where | CPU µs |\n| --- | --- | ---: |\n");
for (const r of rows) process.stdout.write(`| ${r.step} | ${r.where} | ${r.us.toFixed(0)} |\n`);
process.stdout.write(`\nThe direct encodings give toBinary's bytes: ${same}.\n`);
