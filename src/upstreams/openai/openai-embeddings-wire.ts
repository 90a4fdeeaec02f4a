/**
 * The OpenAI embeddings API (`POST /v1/embeddings`) as TypeScript types of its JSON, from the
 * public API reference (https://platform.openai.com/docs/api-reference/embeddings) and the
 * OpenAPI-generated official SDK (openai/openai-node, src/resources/embeddings.ts). The same shapes
 * are what Azure OpenAI (under its deployment path), vLLM, Ollama (`/v1`) and TEI's OpenAI route
 * speak. Answers are typed as what the API promises; openai-embeddings.ts still checks every field
 * it reads. (A file of its own beside openai-wire.ts, the Chat Completions types.)
 */

/**
 * The request body of `POST /embeddings` (https://platform.openai.com/docs/api-reference/embeddings/create;
 * the official SDK's src/resources/embeddings.ts). OpenAI also takes a single string or a single
 * token list as `input`; infergate always sends the array forms.
 */
export interface EmbeddingsRequest {
  /** The model; Azure OpenAI takes it from the deployment in the path, so it may be absent there. */
  model?: string;
  /** Texts, or token-id lists; at most 2048 at OpenAI. */
  input: string[] | number[][];
  /** `base64`: each vector as the base64 of its little-endian FP32 bytes; `float`: JSON numbers. */
  encoding_format: EmbeddingEncodingFormat;
  /** The vectors' length, for models that can shorten theirs (text-embedding-3 and later). */
  dimensions?: number;
}

/** How the vectors come back: JSON numbers, or the base64 of packed little-endian FP32. */
export type EmbeddingEncodingFormat = "float" | "base64";

/** One vector of an embeddings answer (`object: "embedding"`). */
export interface WireEmbedding {
  object: "embedding";
  /** The input's position in the request; servers may list the vectors in another order. */
  index: number;
  /** Numbers with `encoding_format: "float"`, base64 text with `"base64"`. */
  embedding: number[] | string;
}

/** The answer of `POST /embeddings`. */
export interface EmbeddingsResponse {
  object: "list";
  data: WireEmbedding[];
  model: string;
  /** Embeddings count input tokens only: `total_tokens` equals `prompt_tokens`. */
  usage?: { prompt_tokens?: number | null; total_tokens?: number | null };
}
