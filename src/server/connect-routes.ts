import { Code, ConnectError, type ConnectRouter, createContextKey, type HandlerContext } from "@connectrpc/connect";
import { InferenceService } from "../../gen/infergate/v1/inference_service_pb.js";
import type { Gateway } from "../gateway/gateway.js";
import type { CallRecord } from "../observability/call-record.js";
import { callerHeaders, createCallContext, type OwnedCallContext } from "../core/call-context.js";
import { decodedRequestKey, decodeRequestsFirst, type DecodeOptions } from "./connect-decoding.js";
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
  maxTimeoutMs: number,
  req: Req,
  fn: (req: Req, ctx: OwnedCallContext) => Promise<Res>,
): Promise<Res> {
  const ctx = callContext(hc, maxTimeoutMs);
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

/**
 * InferenceService for connect-node (Connect, gRPC-Web and JSON), over the same gateway core and
 * the same error rendering as the gRPC listener. Requests are decoded by infergate first
 * (decodeRequestsFirst, with `decoding`: the limits the connect-node adapter is given; connect-node's
 * default readMaxBytes without).
 */
export function inferenceRoutes(gateway: Gateway, maxTimeoutMs: number, decoding: DecodeOptions = { readMaxBytes: 0xffffffff }): (router: ConnectRouter) => void {
  return (router) => {
    router.service(InferenceService, {
      predict: (req, hc) => unary(gateway, hc, maxTimeoutMs, req, gateway.predict),
      chat: (req, hc) => unary(gateway, hc, maxTimeoutMs, req, gateway.chat),
      listModels: (req, hc) => unary(gateway, hc, maxTimeoutMs, req, gateway.listModels),
      deleteSession: (req, hc) => unary(gateway, hc, maxTimeoutMs, req, gateway.deleteSession),
      async *generate(req, hc) {
        const ctx = callContext(hc, maxTimeoutMs);
        try {
          let first = true;
          for await (const event of gateway.generate(requestOf(gateway, hc, ctx, req), ctx)) {
            if (first) {
              setHeaders(hc, ctx);
              first = false;
            }
            yield event;
          }
        } catch (err) {
          setHeaders(hc, ctx);
          throw toConnectError(err);
        } finally {
          ctx.dispose();
        }
      },
    });
    decodeRequestsFirst(router.handlers, decoding);
  };
}
