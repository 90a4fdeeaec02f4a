/**
 * The Gemini API's own wire types (Google AI `generativelanguage.googleapis.com` and Vertex AI
 * `aiplatform.googleapis.com` publisher models share them): the JSON shapes, camelCase as the API
 * sends and takes them, of `generateContent`, `streamGenerateContent?alt=sse`, `embedContent`,
 * `batchEmbedContents`, Vertex's `predict` for embedding models, and Google's error body. Only
 * the fields this adapter writes or reads; nothing of infergate's.
 */

/** One part of a turn: exactly one of its data fields is set. */
export interface Part {
  text?: string;
  /** Whether the text is the model's thinking (answers only, when thoughts were asked for). */
  thought?: boolean;
  inlineData?: { mimeType: string; data: string };
  fileData?: { mimeType: string; fileUri: string };
  functionCall?: { id?: string; name: string; args?: Record<string, unknown> };
  functionResponse?: { id?: string; name: string; response: Record<string, unknown> };
  /** The model's thinking behind this part, encrypted (base64); to be sent back with the part. */
  thoughtSignature?: string;
}

/** A turn of the conversation; `role` is "user" or "model" (absent in systemInstruction). */
export interface Content {
  role?: "user" | "model";
  parts: Part[];
}

export interface FunctionDeclaration {
  name: string;
  description?: string;
  /** The parameters as JSON Schema. */
  parametersJsonSchema?: Record<string, unknown>;
}

export interface GeminiTool {
  functionDeclarations: FunctionDeclaration[];
}

export type FunctionCallingMode = "AUTO" | "ANY" | "NONE";

export interface ToolConfig {
  functionCallingConfig: { mode: FunctionCallingMode; allowedFunctionNames?: string[] };
}

export interface SafetySetting {
  category: string;
  threshold: string;
}

export interface GenerationConfig {
  temperature?: number;
  topP?: number;
  topK?: number;
  maxOutputTokens?: number;
  stopSequences?: string[];
  seed?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  responseMimeType?: string;
  /** The answer's JSON Schema (with responseMimeType "application/json"). */
  responseJsonSchema?: Record<string, unknown>;
  thinkingConfig?: { thinkingBudget: number };
}

/** The body of `…:generateContent` and `…:streamGenerateContent`. */
export interface GenerateContentRequest {
  contents: Content[];
  systemInstruction?: Content;
  tools?: GeminiTool[];
  toolConfig?: ToolConfig;
  safetySettings?: SafetySetting[];
  generationConfig?: GenerationConfig;
  /** The name of a cached content (`cachedContents/…`) the prompt continues. */
  cachedContent?: string;
}

/** `usageMetadata` of an answer. Thought tokens are not part of candidatesTokenCount. */
export interface UsageMetadata {
  promptTokenCount?: number;
  cachedContentTokenCount?: number;
  candidatesTokenCount?: number;
  toolUsePromptTokenCount?: number;
  thoughtsTokenCount?: number;
  totalTokenCount?: number;
}

/**
 * Finish reasons the API documents (`Candidate.FinishReason`); the translator maps them and
 * treats any other as unknown.
 */
export const geminiFinishReasons = [
  "FINISH_REASON_UNSPECIFIED",
  "STOP",
  "MAX_TOKENS",
  "SAFETY",
  "RECITATION",
  "LANGUAGE",
  "OTHER",
  "BLOCKLIST",
  "PROHIBITED_CONTENT",
  "SPII",
  "MALFORMED_FUNCTION_CALL",
  "IMAGE_SAFETY",
  "UNEXPECTED_TOOL_CALL",
  "TOO_MANY_TOOL_CALLS",
] as const;

/** The body of `…:embedContent` (Google AI), and one request of `…:batchEmbedContents`. */
export interface EmbedContentRequest {
  /** `models/{model}`: required inside batchEmbedContents, left out by embedContent. */
  model?: string;
  content: Content;
  taskType?: string;
  outputDimensionality?: number;
}

/** The body of `…:batchEmbedContents` (Google AI). */
export interface BatchEmbedContentsRequest {
  requests: EmbedContentRequest[];
}

/** The body of Vertex AI's `…:predict` for a text embedding model. */
export interface VertexEmbedRequest {
  instances: { content: string; task_type?: string }[];
  parameters?: { outputDimensionality?: number };
}

/** Google's error body (google.rpc.Status in JSON): `{"error": {"code", "message", "status", "details"}}`. */
export interface GoogleErrorBody {
  error: { code?: number; message?: string; status?: string; details?: unknown[] };
}
