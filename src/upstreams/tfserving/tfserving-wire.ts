/**
 * The part of TensorFlow Serving's REST API that infergate speaks, as TypeScript types of its
 * JSON, after https://www.tensorflow.org/tfx/serving/api_rest and the server's own JSON codec
 * (tensorflow/serving, tensorflow_serving/util/json_tensor.cc):
 *
 * - `POST /v1/models/{name}[/versions/{version}|/labels/{label}]:predict`, in the row form
 *   (`instances` → `predictions`) or the columnar form (`inputs` → `outputs`);
 * - `GET /v1/models/{name}`: the model's status (GetModelStatusResponse as JSON);
 * - errors: any status with `{"error": "<message>"}`.
 *
 * TF Serving's JSON is not quite RFC 8259 JSON: floats may be the bare tokens `NaN`, `Infinity`
 * and `-Infinity`, and 64-bit integers are written with all their digits. exact-json.ts reads
 * and writes that dialect exactly. Answers are typed as what the API promises; the translators
 * still check every value they read.
 */

/** Binary data (a DT_STRING element that is not text): standard base64 with padding. */
export interface B64Value {
  readonly b64: string;
}

/**
 * One value of TF Serving's JSON: numbers (bigint where a 64-bit integer does not fit a double
 * exactly), booleans, strings, `{"b64": …}`, lists, and objects of named values.
 */
export type TfJson = number | bigint | boolean | string | B64Value | TfJson[] | { readonly [name: string]: TfJson };

/** A tensor in its natural nested form: a scalar, or lists nested as deep as its rank. */
export type TfTensorValue = number | bigint | boolean | string | B64Value | TfTensorValue[];

/** The row ("instances") form of a predict request. */
export interface PredictRowRequest {
  /** The serving signature; TF Serving's default ("serving_default") when left out. */
  signature_name?: string;
  /**
   * One element per batch row: with one input, its rows themselves; with several, an object per
   * row mapping each input's name to its row. Every input shares the same first dimension.
   */
  instances: TfTensorValue[] | { [name: string]: TfTensorValue }[];
}

/** The columnar ("inputs") form of a predict request: each input whole, by name. */
export interface PredictColumnarRequest {
  signature_name?: string;
  inputs: { [name: string]: TfTensorValue };
}

export type PredictRequestBody = PredictRowRequest | PredictColumnarRequest;

/**
 * The answer to a row-form request: a list with one element per batch row; the element is the
 * output's row when the model has one output (its name omitted), or an object of named rows.
 */
export interface PredictRowResponse {
  predictions: unknown;
}

/**
 * The answer to a columnar request: the single output's whole value (its name omitted), or an
 * object of named values when the model has several outputs.
 */
export interface PredictColumnarResponse {
  outputs: unknown;
}

/** The body of every error answer. */
export interface ErrorResponse {
  error: string;
}

/** ModelVersionStatus.State (tensorflow_serving/apis/get_model_status.proto), as JSON writes it. */
export type ModelVersionState = "UNKNOWN" | "START" | "LOADING" | "AVAILABLE" | "UNLOADING" | "END";

/** `GET /v1/models/{name}`: the status of each version of the model. */
export interface ModelStatusResponse {
  model_version_status: {
    version: string;
    state: ModelVersionState;
    status?: { error_code?: string; error_message?: string };
  }[];
}

/**
 * The key TF Serving names binary values with, and the suffix of output names whose DT_STRING
 * values it writes as `{"b64": …}` (json_tensor.cc, kBytesTensorNameSuffix).
 */
export const b64Key = "b64";
export const bytesOutputSuffix = "_bytes";

/** Whether a JSON value is a base64 object: exactly one key, "b64", holding a string. */
export function isB64(v: unknown): v is B64Value {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
  const keys = Object.keys(v);
  return keys.length === 1 && keys[0] === b64Key && typeof (v as Record<string, unknown>)[b64Key] === "string";
}
