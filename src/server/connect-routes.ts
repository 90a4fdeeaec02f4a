import { Code, ConnectError, type ConnectRouter, createContextKey, type HandlerContext } from "@connectrpc/connect";
import { InferenceService } from "../../gen/infergate/v1/inference_service_pb.js";
import type { Gateway } from "../gateway/gateway.js";
import { costHeader } from "../gateway/steps/call-record.js";
import type { CallRecord } from "../observability/call-record.js";
import { callerHeaders, createCallContext, type OwnedCallContext } from "../core/call-context.js";
import { decodedRequestKey, decodeRequestsFirst, type DecodeOptions } from "./connect-decoding.js";
import { answerSizeCheck } from "./answer-size.js";
import { toConnectError } from "./error-rendering.js";

/** The verified client certificate's CN, put there by the HTTP listener (see app.ts). */
export const peerCommonNameKey = createContextKey<string | undefined>(undefined, { description: "mTLS peer CN" });

function callContext(hc: HandlerContext, maxTimeoutMs: number): OwnedCallContext {
  const ctx = createCallContext({
    timeoutMs: hc.timeoutMs(),
    maxTimeoutMs,
    timeoutHeader: hc.protocolName === "connect" ? "connect-timeout-ms" : "grpc-timeout",
    headers: callerHeaders(hc.requestHeader.entries()),
    peerCommonName: hc.values.get(peerCommonNameKey),
  });
  // connect aborts the handler's signal when the client goes away, the call ends, or the server
  // shuts down; to the core all of these mean "stop". When it aborts for the client's own
  // timeout (`connect-timeout-ms: 0` does so before the handler runs), the context's deadline,
  // set from the same timeout, answers DEADLINE_EXCEEDED: it is not a cancellation.
  const stop = () => {
    if (!(ConnectError.from(hc.signal.reason).code === Code.DeadlineExceeded)) ctx.cancel();
  };
  if (hc.signal.aborted) {
    stop();
  } else {
    hc.signal.addEventListener("abort", stop, { once: true });
  }
  return ctx;
}

/** A stream's cost, known once it has ended, as a trailer (src/gateway/steps/call-record.ts). */
function setCostTrailer(hc: HandlerContext, ctx: OwnedCallContext): void {
  const cost = ctx.responseHeaders[costHeader];
  if (cost !== undefined) hc.responseTrailer.set(costHeader, cost);
}

/** Copies the response headers the core set onto the Connect response. */
function setHeaders(hc: HandlerContext, ctx: OwnedCallContext): void {
  for (const [k, v] of Object.entries(ctx.responseHeaders)) {
    hc.responseHeader.set(k, v);
  }
}

/**
 * The call's request: the message infergate decoded (connect-node then decoded an empty one, see
 * decodeRequestsFirst), or connect-node's own. A request that did not decode is reported as a
 * call and its MALFORMED_REQUEST error thrown.
 */
function requestOf<Req>(gateway: Gateway, hc: HandlerContext, ctx: OwnedCallContext, req: Req): Req {
  const decoded = hc.values.get(decodedRequestKey);
  if (decoded === undefined) return req;
  if (decoded.error !== undefined) throw gateway.refused(hc.method.name as CallRecord["rpc"], ctx, decoded.error);
  return decoded.message as Req;
}

async function unary<Req, Res>(
  gateway: Gateway,
  hc: HandlerContext,
  limits: RouteLimits,
  req: Req,
  fn: (req: Req, ctx: OwnedCallContext) => Promise<Res>,
): Promise<Res> {
  const ctx = callContext(hc, limits.maxTimeoutMs);
  // An answer over the limit fails the call in the core, before it is reported (answer-size.ts).
  if (limits.writeMaxBytes !== undefined) ctx.encodeAnswer = answerSizeCheck(hc.method.output, limits.writeMaxBytes, hc.requestHeader.get("content-type"), hc.url);
  try {
    const res = await fn(requestOf(gateway, hc, ctx, req), ctx);
    setHeaders(hc, ctx);
    return res;
  } catch (err) {
    setHeaders(hc, ctx);
    throw toConnectError(err);
  } finally {
    ctx.dispose();
  }
}

/** What every route of inferenceRoutes is given. */
interface RouteLimits {
  /** server.maxTimeoutMs: the longest deadline a call gets. */
  readonly maxTimeoutMs: number;
  /** connect-node's writeMaxBytes (server.maxMessageBytes); undefined: answers are not sized. */
  readonly writeMaxBytes: number | undefined;
}

/**
 * InferenceService for connect-node (Connect, gRPC-Web and JSON), over the same gateway core and
 * the same error rendering as the gRPC listener. Requests are decoded by infergate first
 * (decodeRequestsFirst, with `decoding`: the limits the connect-node adapter is given; connect-node's
 * default readMaxBytes without). `writeMaxBytes`, the adapter's own, sizes each answer before the
 * call is reported (answerSizeCheck).
 */
export function inferenceRoutes(
  gateway: Gateway,
  maxTimeoutMs: number,
  decoding: DecodeOptions = { readMaxBytes: 0xffffffff },
  writeMaxBytes?: number,
): (router: ConnectRouter) => void {
  const limits: RouteLimits = { maxTimeoutMs, writeMaxBytes };
  return (router) => {
    router.service(InferenceService, {
      predict: (req, hc) => unary(gateway, hc, limits, req, gateway.predict),
      chat: (req, hc) => unary(gateway, hc, limits, req, gateway.chat),
      embed: (req, hc) => unary(gateway, hc, limits, req, gateway.embed),
      listModels: (req, hc) => unary(gateway, hc, limits, req, gateway.listModels),
      deleteSession: (req, hc) => unary(gateway, hc, limits, req, gateway.deleteSession),
      async *generate(req, hc) {
        const ctx = callContext(hc, maxTimeoutMs);
        const check = writeMaxBytes === undefined ? undefined : answerSizeCheck(hc.method.output, writeMaxBytes, hc.requestHeader.get("content-type"), hc.url);
        try {
          let first = true;
          const events = gateway.generate(requestOf(gateway, hc, ctx, req), ctx);
          for await (const event of events) {
            if (check !== undefined) {
              try {
                check(event);
              } catch (tooLarge) {
                // Thrown into the core's stream at the event it yielded: the call is reported,
                // and answered, with it (as the gRPC listener does, grpc-server.ts).
                await events.throw(tooLarge);
                throw tooLarge;
              }
            }
            if (first) {
              setHeaders(hc, ctx);
              first = false;
            }
            yield event;
          }
          setCostTrailer(hc, ctx);
        } catch (err) {
          setHeaders(hc, ctx);
          setCostTrailer(hc, ctx);
          throw toConnectError(err);
        } finally {
          ctx.dispose();
        }
      },
    });
    decodeRequestsFirst(router.handlers, decoding);
  };
}
