#!/usr/bin/env node
/**
 * The Predict client of the benchmarks (bench/run.mjs, section "Predict"), a process of its own so
 * that its CPU never counts as infergate's stall. Speaks gRPC over node:http2 with bodies encoded
 * once up front (bench/lib/predict-messages.mjs, the generated protobuf-es code), so that a call
 * costs the client only its I/O.
 *
 *   node bench/predict-client.mjs --mode big --target infergate|direct --address HOST:PORT
 *        --model M --form raw|typed [--output-form typed|raw] [--elements N] [--calls K]
 *        [--max-seconds S]
 *     One big FP32 call at a time (infergate: Predict; direct: ModelInfer to the fake), K calls or
 *     until S seconds have passed (at least one), after one unmeasured warm-up call. Prints one
 *     line of JSON: each call's time, the measured window (epoch ms), errors, and whether the last
 *     answer held the input's values (and in which form).
 *
 *   node bench/predict-client.mjs --mode probe --address HOST:PORT --body FILE [--interval-ms 5]
 *        [--max-outstanding 500]
 *     Sends the framed small request in FILE every interval without waiting for answers (at most
 *     `max-outstanding` in flight; a send beyond it is skipped and counted), prints "ready" after
 *     the first answer, runs until its stdin ends, then prints one line of JSON: every call as
 *     [send time (epoch ms), latency ms or -1 for an error].
 */
import { fromBinary } from "@bufbuild/protobuf";
import http2 from "node:http2";
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { ModelInferResponseSchema } from "../dist/gen/inference/grpc_service_pb.js";
import { PredictResponseSchema } from "../dist/gen/infergate/v1/inference_service_pb.js";
import { grpcFrame } from "./lib/common.mjs";
import { bigRequestBytes, bigTensor, modelInferPath, predictPath, TensorForm } from "./lib/predict-messages.mjs";

const { values: o } = parseArgs({
  options: {
    mode: { type: "string" },
    target: { type: "string", default: "infergate" },
    address: { type: "string" },
    model: { type: "string" },
    form: { type: "string", default: "raw" },
    "output-form": { type: "string" },
    elements: { type: "string", default: String(1 << 20) },
    calls: { type: "string", default: "10" },
    "max-seconds": { type: "string", default: "30" },
    body: { type: "string" },
    "interval-ms": { type: "string", default: "5" },
    "max-outstanding": { type: "string", default: "500" },
  },
});

const epochNow = () => performance.timeOrigin + performance.now();

/** An h2c session with large flow-control windows (as a gRPC client that expects big messages). */
function connect(address) {
  const session = http2.connect(`http://${address}`, { settings: { initialWindowSize: 16 * 1024 * 1024 } });
  session.on("error", () => {});
  session.once("connect", () => session.setLocalWindowSize(64 * 1024 * 1024));
  return session;
}

/** One unary call with a framed body; resolves {status, message, bytes} when the stream closes. */
function call(session, path, framed) {
  return new Promise((resolve) => {
    let req;
    try {
      req = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers" });
    } catch (err) {
      // The session is gone (connection refused or closed): a failed call, not a crash.
      resolve({ status: -1, message: err.message, body: [] });
      return;
    }
    const chunks = [];
    let status;
    let message = "";
    const statusFrom = (h) => {
      if (h["grpc-status"] !== undefined) {
        status = Number(h["grpc-status"]);
        message = decodeURIComponent(String(h["grpc-message"] ?? ""));
      }
    };
    req.on("response", statusFrom);
    req.on("trailers", statusFrom);
    req.on("data", (c) => chunks.push(c));
    req.on("error", (err) => {
      status ??= -1;
      message ||= err.message;
    });
    req.on("close", () => resolve({ status: status ?? -1, message, body: chunks }));
    req.end(framed);
  });
}

/** The message of a unary gRPC answer (its one length-prefixed frame). */
function messageOf(chunks) {
  const all = Buffer.concat(chunks);
  return all.length >= 5 ? all.subarray(5, 5 + all.readUInt32BE(1)) : undefined;
}

async function big() {
  const direct = o.target === "direct";
  const values = bigTensor(Number(o.elements));
  const outputForm = o["output-form"] === "typed" ? TensorForm.TYPED : o["output-form"] === "raw" ? TensorForm.RAW : TensorForm.UNSPECIFIED;
  const framed = grpcFrame(bigRequestBytes({ target: o.target, model: o.model, values, form: o.form, outputForm }));
  const path = direct ? modelInferPath : predictPath;
  const session = connect(o.address);
  const maxMs = Number(o["max-seconds"]) * 1000;
  let errors = 0;
  let firstError;
  const noteError = (r) => {
    errors++;
    firstError ??= `status ${r.status}: ${r.message}`;
  };
  const warm = await call(session, path, framed);
  if (warm.status !== 0) noteError(warm);
  const ms = [];
  let last;
  const windowStart = epochNow();
  while (ms.length < Number(o.calls) && (ms.length === 0 || epochNow() - windowStart < maxMs)) {
    const t0 = performance.now();
    const r = await call(session, path, framed);
    ms.push(performance.now() - t0);
    if (r.status === 0) last = r;
    else noteError(r);
  }
  const windowEnd = epochNow();
  session.close();
  // Checked after the window: the answer holds the input's values, raw or typed.
  let answer = { checked: false };
  if (last !== undefined) {
    const msg = messageOf(last.body);
    if (direct) {
      const res = fromBinary(ModelInferResponseSchema, msg);
      const raw = res.rawOutputContents[0];
      answer = { checked: true, form: raw === undefined ? "typed" : "raw", bytes: msg.length, same: raw !== undefined && Buffer.compare(Buffer.from(raw), Buffer.from(values.buffer)) === 0 };
    } else {
      const out = fromBinary(PredictResponseSchema, msg).outputs[0];
      const form = out?.data.case === "rawContents" ? "raw" : out?.data.case === "contents" ? "typed" : "none";
      let same = false;
      if (form === "raw") same = Buffer.compare(Buffer.from(out.data.value), Buffer.from(values.buffer)) === 0;
      if (form === "typed") {
        const got = out.data.value.fp32Contents;
        same = got.length === values.length && got.every((v, i) => v === values[i]);
      }
      answer = { checked: true, form, bytes: msg.length, same };
    }
  }
  return { calls: ms.length, msPerCall: ms, windowStart, windowEnd, requestBytes: framed.length - 5, errors, firstError, answer };
}

async function probe() {
  const framed = readFileSync(o.body);
  const session = connect(o.address);
  const intervalMs = Number(o["interval-ms"]);
  const maxOutstanding = Number(o["max-outstanding"]);
  // Ready once a call has gone through: the connection is up and the path warm.
  for (let i = 0; i < 20; i++) await call(session, predictPath, framed);
  process.stdout.write("ready\n");
  /** [send epoch ms, latency ms (-1: error)] */
  const samples = [];
  let outstanding = 0;
  let skipped = 0;
  let firstError;
  let stop = false;
  process.stdin.on("data", () => {});
  process.stdin.once("end", () => (stop = true));
  process.stdin.once("close", () => (stop = true));
  const inFlight = new Set();
  while (!stop) {
    if (outstanding >= maxOutstanding) {
      skipped++;
    } else {
      outstanding++;
      const sent = epochNow();
      const t0 = performance.now();
      const p = call(session, predictPath, framed).then((r) => {
        outstanding--;
        const ok = r.status === 0 && messageOf(r.body) !== undefined;
        if (!ok) firstError ??= `status ${r.status}: ${r.message}`;
        samples.push([sent, ok ? performance.now() - t0 : -1]);
        inFlight.delete(p);
      });
      inFlight.add(p);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  await Promise.all(inFlight);
  session.close();
  return { samples, skipped, firstError };
}

const result = o.mode === "big" ? await big() : o.mode === "probe" ? await probe() : undefined;
if (result === undefined) {
  process.stderr.write("--mode big or --mode probe\n");
  process.exit(2);
}
process.stdout.write(`${JSON.stringify(result)}\n`);
process.exit(0);
