import { DataType, type Tensor } from "../../../gen/infergate/v1/tensor_pb.js";
import type { PredictRequest } from "../../../gen/infergate/v1/inference_service_pb.js";
import { echoed, invalidArgument } from "../../core/gateway-error.js";
import { dataTypeInfo, decodeTensor, encodeTensor, type TensorValues } from "../tensor-codec.js";

/** The outputs the mock Predict model computes. */
export const mockPredictOutputs = ["OUTPUT0", "OUTPUT1"] as const;

const wrap: Partial<Record<DataType, (x: number) => number>> = {
  [DataType.INT8]: (x) => (x << 24) >> 24,
  [DataType.INT16]: (x) => (x << 16) >> 16,
  [DataType.INT32]: (x) => x | 0,
  [DataType.UINT8]: (x) => x & 0xff,
  [DataType.UINT16]: (x) => x & 0xffff,
  [DataType.UINT32]: (x) => x >>> 0,
  [DataType.FP32]: (x) => Math.fround(x),
};

/**
 * The mock tensor model, after Triton's "simple" add/sub example: all inputs must share one numeric
 * datatype (INT*, UINT*, FP32, FP64) and one shape; then
 *   OUTPUT0 = the element-wise sum of all inputs,
 *   OUTPUT1 = the first input minus the sum of the others,
 * each in the inputs' datatype and shape (integers wrap at their width, as in C), typed when the
 * first input is typed and raw when it is raw. `outputs` may select either; others are an error.
 */
export function mockPredict(req: PredictRequest): Tensor[] {
  const first = req.inputs[0]!;
  const info = dataTypeInfo(first.datatype)!;
  if (first.datatype === DataType.BOOL || first.datatype === DataType.BYTES || info.field === undefined) {
    throw invalidArgument("inputs[0].datatype", `the mock model adds numbers; ${info.kserveName} is not supported`);
  }
  const values: TensorValues[] = req.inputs.map((t, i) => {
    if (t.datatype !== first.datatype) {
      throw invalidArgument(`inputs[${i}].datatype`, `must match inputs[0] (${info.kserveName})`);
    }
    if (t.shape.length !== first.shape.length || t.shape.some((d, j) => d !== first.shape[j])) {
      throw invalidArgument(`inputs[${i}].shape`, `must match inputs[0] ([${first.shape.join(", ")}])`);
    }
    return decodeTensor(t, `inputs[${i}]`);
  });
  const wanted = req.outputs.map((o, i) => {
    if (!(mockPredictOutputs as readonly string[]).includes(o.name)) {
      throw invalidArgument(`outputs[${i}].name`, `unknown output "${echoed(o.name)}"; the mock model has ${mockPredictOutputs.join(", ")}`);
    }
    return o.name;
  });
  const sum = combine(values, first.datatype, (acc, x) => acc + x, (acc, x) => acc + x);
  const diff = combine(values, first.datatype, (acc, x) => acc - x, (acc, x) => acc - x);
  const raw = first.data.case === "rawContents";
  const all: Record<string, TensorValues> = { OUTPUT0: sum, OUTPUT1: diff };
  return (wanted.length > 0 ? wanted : [...mockPredictOutputs]).map((name) =>
    encodeTensor(name, first.datatype, first.shape, all[name]!, raw),
  );
}

function combine(
  inputs: TensorValues[],
  datatype: DataType,
  num: (acc: number, x: number) => number,
  big: (acc: bigint, x: bigint) => bigint,
): TensorValues {
  const head = inputs[0]!;
  if (head.kind === "bigint") {
    const width = (v: bigint) => (datatype === DataType.INT64 ? BigInt.asIntN(64, v) : BigInt.asUintN(64, v));
    const out = [...head.values];
    for (const t of inputs.slice(1)) {
      (t as typeof head).values.forEach((x, i) => (out[i] = width(big(out[i]!, x))));
    }
    return { kind: "bigint", values: out };
  }
  if (head.kind !== "number") {
    throw new Error("mock predict combines numbers only");
  }
  const w = wrap[datatype] ?? ((x: number) => x);
  const out = [...head.values];
  for (const t of inputs.slice(1)) {
    (t as typeof head).values.forEach((x, i) => (out[i] = w(num(out[i]!, x))));
  }
  return { kind: "number", values: out };
}
