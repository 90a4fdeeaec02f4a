import { type DescMessage, fromBinary, fromJson, type JsonValue } from "@bufbuild/protobuf";
import { type ContextValues, createContextKey, createContextValues } from "@connectrpc/connect";
import { type Compression, createAsyncIterable, type UniversalHandler, type UniversalServerRequest } from "@connectrpc/connect/protocol";
import {
  headerStreamEncoding,
  headerUnaryAcceptEncoding,
  headerUnaryContentLength,
  headerUnaryEncoding,
  parseContentType as connectContentType,
} from "@connectrpc/connect/protocol-connect";
import { headerEncoding as grpcEncoding, parseContentType as grpcContentType } from "@connectrpc/connect/protocol-grpc";
import { parseContentType as grpcWebContentType } from "@connectrpc/connect/protocol-grpc-web";
import { compressionBrotli, compressionGzip } from "@connectrpc/connect-node";
import { defaultRequestLimits, type RequestLimits } from "../config/schema.js";
import { GatewayError } from "../core/gateway-error.js";
import { checkWireLimits, decodeJsonRequest } from "../gateway/request-limits.js";
import { malformedRequest } from "./malformed-request.js";

/**
 * The request of a call on the HTTP listener, decoded by infergate before connect-node sees the
 * call (see decodeRequestsFirst): the message, or the MALFORMED_REQUEST error when its bytes are
 * not one. Unset when connect-node decoded the request itself.
 */
export type DecodedRequest = { readonly message: object; readonly error?: undefined } | { readonly message?: undefined; readonly error: GatewayError };

export const decodedRequestKey = createContextKey<DecodedRequest | undefined>(undefined, { description: "request decoded by infergate" });

/** Options of decodeRequestsFirst: those the connect-node adapter was given. */
export interface DecodeOptions {
  /** connect-node's readMaxBytes: the largest message (after decompression). */
  readonly readMaxBytes: number;
  /** The compressions connect-node accepts (its default: gzip and brotli). */
  readonly acceptCompression?: readonly Compression[];
  /** server.requestLimits, checked before a request is decoded; default: the schema's defaults. */
  readonly requestLimits?: RequestLimits;
}

/** How a protocol frames the request message, from its Content-Type. */
interface Framing {
  /** Enveloped (gRPC, gRPC-Web, Connect streaming: one 5-byte-prefixed message) or the whole body (Connect unary). */
  readonly enveloped: boolean;
  readonly binary: boolean;
  /** The header naming the compression of the body (Connect unary) or of flagged envelopes. */
  readonly encodingHeader: string;
}

function framingOf(contentType: string | null): Framing | undefined {
  const grpcWeb = grpcWebContentType(contentType);
  if (grpcWeb !== undefined) return grpcWeb.text ? undefined : { enveloped: true, binary: grpcWeb.binary, encodingHeader: grpcEncoding };
  const grpc = grpcContentType(contentType);
  if (grpc !== undefined) return { enveloped: true, binary: grpc.binary, encodingHeader: grpcEncoding };
  const connect = connectContentType(contentType);
  if (connect !== undefined) return { enveloped: connect.stream, binary: connect.binary, encodingHeader: connect.stream ? headerStreamEncoding : headerUnaryEncoding };
  return undefined;
}

/** Envelope flag of a compressed message (gRPC, gRPC-Web and Connect streaming alike). */
const compressedFlag = 0b01;

const textDecoder = new TextDecoder();
const emptyJson = new TextEncoder().encode("{}");

/**
 * Wraps connect-node's handlers (those of `router.handlers`) so that infergate decodes each
 * request message itself, with the same decoders connect-node uses (protobuf-es fromBinary, and
 * fromJsonString ignoring unknown fields as connect-node does by default: see decode), before the handler
 * runs. connect-node turns a message it cannot decode into INTERNAL (HTTP 500 "parse binary")
 * and, for JSON, an INVALID_ARGUMENT without details, before any interceptor or implementation
 * sees the call (issue 17): here the decoded message, or the MALFORMED_REQUEST error, goes to the
 * implementation in the call's context values (decodedRequestKey), and connect-node is handed an
 * empty message in the same framing to decode instead, so that it still does everything else
 * (protocol, timeouts, headers, rendering the answer or the error) as before.
 *
 * Anything out of the ordinary (not a POST, a Content-Type connect-node does not serve, a body
 * over readMaxBytes, an unknown compression, more or less than one envelope, a failed read or
 * decompression) goes to connect-node as it came, which answers it as it always has.
 */
export function decodeRequestsFirst(handlers: UniversalHandler[], options: DecodeOptions): void {
  const compressions = options.acceptCompression ?? [compressionGzip, compressionBrotli];
  const limits = options.requestLimits ?? defaultRequestLimits;
  for (let i = 0; i < handlers.length; i++) {
    const handler = handlers[i]!;
    const schema = handler.method.input;
    const decoding = async (req: UniversalServerRequest) => {
      const framing = req.method === "POST" ? framingOf(req.header.get("Content-Type")) : undefined;
      if (framing === undefined || !isByteStream(req.body)) return handler(req);
      // Refused from its Content-Length by connect-node without reading it.
      const declared = framing.enveloped ? null : req.header.get(headerUnaryContentLength);
      if (declared !== null && Number(declared) > options.readMaxBytes) return handler(req);
      const limit = options.readMaxBytes + (framing.enveloped ? 5 : 0);
      const read = await readBody(req.body, limit, framing.enveloped, options.readMaxBytes);
      if (read.bytes === undefined) return handler({ ...req, body: read.replay });
      const message = await messageBytes(framing, req.header, read.bytes, compressions, options.readMaxBytes);
      if (message === undefined) return handler({ ...req, body: createAsyncIterable([read.bytes]) });
      const values = req.contextValues ?? createContextValues();
      values.set(decodedRequestKey, decode(schema, framing.binary, message.bytes, limits));
      return handler(withEmptyMessage(req, framing, message.encoding, values));
    };
    handlers[i] = Object.assign(decoding, {
      protocolNames: handler.protocolNames,
      service: handler.service,
      method: handler.method,
      requestPath: handler.requestPath,
      allowedMethods: handler.allowedMethods,
      supportedContentType: handler.supportedContentType,
    });
  }
}

function isByteStream(body: UniversalServerRequest["body"]): body is AsyncIterable<Uint8Array> {
  return typeof body === "object" && body !== null && Symbol.asyncIterator in body;
}

/**
 * The request, or the error that refuses it: over server.requestLimits (INVALID_ARGUMENT naming
 * the field, found from its bytes or text before it is decoded), or MALFORMED_REQUEST. JSON is
 * decoded as fromJsonString does (duplicate keys refused), by decodeJsonRequest.
 */
function decode(schema: DescMessage, binary: boolean, bytes: Uint8Array, limits: RequestLimits): DecodedRequest {
  try {
    if (binary) {
      checkWireLimits(schema, bytes, limits);
      return { message: fromBinary(schema, bytes) };
    }
    return { message: decodeJsonRequest(schema, textDecoder.decode(bytes), limits, (json) => fromJson(schema, json as JsonValue, { ignoreUnknownFields: true })) };
  } catch (err) {
    return { error: err instanceof GatewayError ? err : malformedRequest(schema, err) };
  }
}

/**
 * The whole body; or, once connect-node would refuse it for its size (an envelope that declares a
 * message over `readMaxBytes`, or a body over `limit`), or when reading failed, a body that gives
 * connect-node what was read and then the rest (or the same failure), so that it refuses it as
 * it would have, having read as much. (Reading on to the limit first left an HTTP/1.1 connection
 * unusable after the refusal.)
 */
async function readBody(
  body: AsyncIterable<Uint8Array>,
  limit: number,
  enveloped: boolean,
  readMaxBytes: number,
): Promise<{ bytes: Uint8Array; replay?: undefined } | { bytes?: undefined; replay: AsyncIterable<Uint8Array> }> {
  const it = body[Symbol.asyncIterator]();
  const chunks: Uint8Array[] = [];
  let size = 0;
  // The first envelope's declared length, once its 5-byte prefix is in (-1 before).
  let declared = -1;
  try {
    for (;;) {
      const r = await it.next();
      if (r.done === true) break;
      chunks.push(r.value);
      size += r.value.byteLength;
      if (enveloped && declared < 0 && size >= 5) declared = declaredLength(chunks);
      if (size > limit || declared > readMaxBytes) {
        return {
          replay: (async function* () {
            try {
              yield* chunks;
              for (let r = await it.next(); r.done !== true; r = await it.next()) yield r.value;
            } finally {
              await it.return?.();
            }
          })(),
        };
      }
    }
  } catch (err) {
    return {
      replay: (async function* () {
        yield* chunks;
        throw err;
      })(),
    };
  }
  return { bytes: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size) };
}

/** The message length the first envelope declares (the chunks hold at least 5 bytes). */
function declaredLength(chunks: readonly Uint8Array[]): number {
  const head = chunks[0]!.byteLength >= 5 ? chunks[0]! : Buffer.concat(chunks);
  return new DataView(head.buffer, head.byteOffset + 1, 4).getUint32(0);
}

/**
 * The message's bytes out of the body (its one envelope, decompressed), and the compression the
 * body named; undefined when connect-node should see the body as it came.
 */
async function messageBytes(
  framing: Framing,
  header: Headers,
  body: Uint8Array,
  compressions: readonly Compression[],
  readMaxBytes: number,
): Promise<{ bytes: Uint8Array; encoding: string | null } | undefined> {
  const encoding = header.get(framing.encodingHeader);
  let bytes = body;
  let compressed = encoding !== null && encoding !== "identity";
  if (framing.enveloped) {
    if (body.byteLength < 5) return undefined;
    const flags = body[0]!;
    const length = new DataView(body.buffer, body.byteOffset + 1, 4).getUint32(0);
    if ((flags & ~compressedFlag) !== 0 || 5 + length !== body.byteLength) return undefined;
    bytes = body.subarray(5);
    compressed = (flags & compressedFlag) !== 0;
  }
  if (compressed) {
    const compression = compressions.find((c) => c.name === encoding);
    if (compression === undefined) return undefined;
    try {
      bytes = await compression.decompress(bytes, readMaxBytes);
    } catch {
      return undefined;
    }
  }
  if (bytes.byteLength > readMaxBytes) return undefined;
  return { bytes, encoding };
}

/**
 * The request as connect-node is then handed it: one empty message in the same framing,
 * uncompressed. A Connect unary body loses its Content-Encoding (and gets its Content-Length);
 * its answer is compressed as before: a request compressed without an Accept-Encoding asked
 * for the same compression back.
 */
function withEmptyMessage(req: UniversalServerRequest, framing: Framing, encoding: string | null, values: ContextValues): UniversalServerRequest {
  const empty = framing.binary ? new Uint8Array(0) : emptyJson;
  let body = empty;
  const header = new Headers(req.header);
  if (framing.enveloped) {
    body = new Uint8Array(5 + empty.byteLength);
    new DataView(body.buffer).setUint32(1, empty.byteLength);
    body.set(empty, 5);
  } else {
    if (encoding !== null && encoding !== "identity") {
      header.delete(headerUnaryEncoding);
      if (!header.has(headerUnaryAcceptEncoding)) header.set(headerUnaryAcceptEncoding, encoding);
    }
    header.set(headerUnaryContentLength, String(body.byteLength));
  }
  return { ...req, header, body: createAsyncIterable([body]), contextValues: values };
}
