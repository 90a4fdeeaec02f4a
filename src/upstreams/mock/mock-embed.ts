import { createHash } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { type EmbedRequest, type EmbedResponse, EmbedResponseSchema } from "../../../gen/infergate/v1/inference_service_pb.js";
import { invalidArgument } from "../../core/gateway-error.js";
import { fp32FromNumbers } from "../../wire/fp32.js";

/** The length of the mock's vectors when the request asks for none. */
export const mockEmbeddingDimensions = 256;
/** The longest vectors the mock makes (a caller's `dimensions` must not size its memory). */
export const mockMaxDimensions = 16_384;

/**
 * The mock's embeddings: deterministic, so tests and demos can compare them. Each input's vector
 * is made from the SHA-256 of the input (its UTF-8 text, or its token ids as 32-bit little-endian
 * integers, behind a byte saying which), read as a counter-mode stream (SHA-256 of the digest and
 * a block number): 32-bit words mapped to [-1, 1), then scaled to unit length. `dimensions` sets
 * the length (default 256, at most 16384); a shorter vector is not a prefix of a longer one. Usage counts words
 * of texts (runs of non-white-space) and the ids of token inputs.
 */
export function mockEmbed(req: EmbedRequest): EmbedResponse {
  const dims = req.dimensions ?? mockEmbeddingDimensions;
  if (dims > mockMaxDimensions) throw invalidArgument("dimensions", `at most ${mockMaxDimensions} for the mock, got ${dims}`);
  let tokens = 0;
  const seeds: Buffer[] = [];
  for (const text of req.texts) {
    seeds.push(seedOf(0, Buffer.from(text, "utf8"), dims));
    tokens += text.match(/\S+/g)?.length ?? 0;
  }
  for (const t of req.tokens) {
    seeds.push(seedOf(1, Buffer.from(Uint32Array.from(t.ids).buffer), dims));
    tokens += t.ids.length;
  }
  return create(EmbedResponseSchema, {
    embeddings: seeds.map((seed, index) => ({ index, fp32: vectorOf(seed, dims) })),
    dimensions: dims,
    usage: { promptTokens: tokens, totalTokens: tokens },
  });
}

function seedOf(tag: number, input: Buffer, dims: number): Buffer {
  return createHash("sha256").update(Buffer.of(tag)).update(`${dims};`).update(input).digest();
}

function vectorOf(seed: Buffer, dims: number): Uint8Array {
  const v = new Float64Array(dims);
  let sum = 0;
  for (let block = 0, i = 0; i < dims; block++) {
    const words = createHash("sha256").update(seed).update(String(block)).digest();
    for (let w = 0; w < 8 && i < dims; w++, i++) {
      const x = words.readUInt32LE(w * 4) / 2 ** 31 - 1;
      v[i] = x;
      sum += x * x;
    }
  }
  const norm = Math.sqrt(sum);
  for (let i = 0; i < dims; i++) v[i] = norm > 0 ? v[i]! / norm : 0;
  return fp32FromNumbers(v);
}
