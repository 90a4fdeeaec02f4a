/**
 * The HTTP/REST half of the Open Inference Protocol (KServe v2) that infergate speaks, as
 * TypeScript types of its JSON, after the public spec (kserve/kserve docs/predict-api/v2
 * required_api.md, "HTTP/REST") and Triton's implementation of it:
 *
 * - `POST /v2/models/{name}[/versions/{version}]/infer`: an inference request → response;
 * - `GET /v2/models/{name}[/versions/{version}]/ready`: 200 when the model is ready, 4xx when not;
 * - errors: any non-2xx status with `{"error": "<message>"}`.
 *
 * The gRPC half is `inference.GRPCInferenceService` (proto/inference/grpc_service.proto, generated
 * into gen/inference/grpc_service_pb.ts). JSON numbers here may be `bigint`: 64-bit integers are
 * written and read with every digit (see kserve-rest-translate.ts). Answers are typed as the spec
 * promises; the translators still check every value they read.
 */

/**
 * A double-precision parameter: written as a JSON number with a fraction or exponent (`3.0`,
 * never `3`), so that the server reads it back as a double (Triton: `double_param`), not as an
 * integer. Only the request writer produces it.
 */
export interface RestDouble {
  readonly $double: number;
}

/** A parameter value: `$string | $number | $boolean` (64-bit integers beyond 2^53 as bigint). */
export type RestParameterValue = string | boolean | number | bigint | RestDouble;

/** `$parameters`: named parameters of a request, a tensor or a response. */
export type RestParameters = { readonly [name: string]: RestParameterValue };

/** One element of `data`: BOOL → boolean, integers and floats → number (bigint past 2^53), BYTES → string. */
export type RestElement = boolean | number | bigint | string;

/** `$request_input`: one input tensor, its elements flat in row-major order. */
export interface RestInferInput {
  readonly name: string;
  readonly shape: readonly (number | bigint)[];
  /** The KServe v2 datatype name ("FP32", "BYTES", …). */
  readonly datatype: string;
  readonly parameters?: RestParameters;
  readonly data: readonly RestElement[];
}

/** `$request_output`: an output the client wants back. */
export interface RestRequestedOutput {
  readonly name: string;
  readonly parameters?: RestParameters;
}

/** `$inference_request`: the body of `POST …/infer`. */
export interface RestInferRequest {
  /** Echoed in the response. */
  readonly id?: string;
  readonly parameters?: RestParameters;
  readonly inputs: readonly RestInferInput[];
  /** Empty or absent: every output of the model. */
  readonly outputs?: readonly RestRequestedOutput[];
}

/**
 * `$response_output`: one output tensor. `data` is flat row-major in the spec; servers may nest
 * it by shape, which the reader accepts.
 */
export interface RestInferOutput {
  readonly name: string;
  readonly shape: readonly (number | bigint)[];
  readonly datatype: string;
  readonly parameters?: RestParameters;
  readonly data: readonly unknown[];
}

/** `$inference_response`: the answer of `POST …/infer`. */
export interface RestInferResponse {
  readonly model_name: string;
  readonly model_version?: string;
  readonly id?: string;
  readonly parameters?: RestParameters;
  readonly outputs: readonly RestInferOutput[];
}

/** `$inference_error_response`: the body of every error status. */
export interface RestErrorResponse {
  readonly error: string;
}
