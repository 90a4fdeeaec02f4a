import { EmbeddingEncoding, type EmbedRequest } from "../../gen/infergate/v1/inference_service_pb.js";
import { defaultRequestLimits, type RequestLimits } from "../config/schema.js";
import { invalidArgument } from "../core/gateway-error.js";
import type { ModelRoute } from "../core/model-route.js";
import { checkEmbedLimits } from "./request-limits.js";

/** Upstream kinds that serve several versions of one model, which model_version pins. */
const versionedKinds: ReadonlySet<string> = new Set(["kserve", "infergate"]);

/**
 * Checks an Embed request against what every upstream needs and the model's own limits (config
 * `embedding`), so that bad input fails with INVALID_ARGUMENT naming the field before the cache
 * or any upstream sees it: inputs given (texts or token ids, not both, none empty), no more than
 * the model takes, dimensions within the model's, an encoding that exists, a version pin only
 * where the model's upstream has versions.
 */
export function validateEmbedRequest(req: EmbedRequest, route: ModelRoute, limits: RequestLimits = defaultRequestLimits): void {
  checkEmbedLimits(req, limits);
  const texts = req.texts.length;
  const tokens = req.tokens.length;
  if (texts > 0 && tokens > 0) {
    throw invalidArgument("tokens", "give the inputs as texts or as token ids, not both");
  }
  if (texts + tokens === 0) {
    throw invalidArgument("texts", "at least one input is required (texts or tokens)");
  }
  const max = route.embedding.maxInputs;
  if (texts + tokens > max) {
    throw invalidArgument(texts > 0 ? "texts" : "tokens", `at most ${max} inputs for model "${route.name}", got ${texts + tokens}`);
  }
  for (let i = 0; i < texts; i++) {
    if (req.texts[i]!.length === 0) throw invalidArgument(`texts[${i}]`, "must not be empty");
  }
  for (let i = 0; i < tokens; i++) {
    if (req.tokens[i]!.ids.length === 0) throw invalidArgument(`tokens[${i}].ids`, "at least one token id is required");
  }
  if (req.dimensions !== undefined) {
    if (req.dimensions < 1) throw invalidArgument("dimensions", "must be at least 1 when set");
    const full = route.embedding.dimensions;
    if (full !== undefined && req.dimensions > full) {
      throw invalidArgument("dimensions", `at most ${full} for model "${route.name}", got ${req.dimensions}`);
    }
  }
  if (EmbeddingEncoding[req.encoding] === undefined) {
    throw invalidArgument("encoding", "unknown (one of the EMBEDDING_ENCODING_* values)");
  }
  if (req.modelVersion !== undefined) {
    if (req.modelVersion === "") throw invalidArgument("model_version", "must not be empty when set");
    if (!versionedKinds.has(route.upstream.kind)) {
      throw invalidArgument("model_version", `model "${route.name}" (upstream kind ${route.upstream.kind}) has no versions to pin`);
    }
  }
}
