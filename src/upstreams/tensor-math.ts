/**
 * The 16-bit float formats' arithmetic (IEEE 754 binary16 and bfloat16), exact both ways: a half
 * is read as the double it stands for, and a double is rounded to a half once, to nearest, ties to
 * even. Tensors keep FP16/BF16 raw (tensor-codec.ts); these convert an element where a wire
 * format needs numbers, e.g. KServe's REST JSON (kserve/kserve-rest-translate.ts).
 */

/** The 16-bit float formats: exponent and mantissa widths. */
const fp16 = { expBits: 5, mantBits: 10 } as const;
const bf16 = { expBits: 8, mantBits: 7 } as const;
type SmallFloat = { readonly expBits: number; readonly mantBits: number };

/** The number that IEEE 754 binary16 bits stand for (exact: every half is a double). */
export function float16BitsToNumber(bits: number): number {
  return smallFloatToNumber(bits, fp16);
}

/** The binary16 bits of a number, rounded to nearest, ties to even; NaN → 0x7e00. */
export function numberToFloat16Bits(value: number): number {
  return numberToSmallFloat(value, fp16);
}

/** The number that bfloat16 bits stand for (exact). */
export function bfloat16BitsToNumber(bits: number): number {
  return smallFloatToNumber(bits, bf16);
}

/** The bfloat16 bits of a number, rounded to nearest, ties to even (from the double, not via FP32); NaN → 0x7fc0. */
export function numberToBfloat16Bits(value: number): number {
  return numberToSmallFloat(value, bf16);
}

function smallFloatToNumber(bits: number, f: SmallFloat): number {
  const expMax = (1 << f.expBits) - 1;
  const bias = (expMax >> 1);
  const sign = (bits >> (f.expBits + f.mantBits)) & 1 ? -1 : 1;
  const e = (bits >> f.mantBits) & expMax;
  const m = bits & ((1 << f.mantBits) - 1);
  if (e === expMax) return m === 0 ? sign * Infinity : NaN;
  if (e === 0) return sign * m * 2 ** (1 - bias - f.mantBits);
  return sign * (2 ** f.mantBits + m) * 2 ** (e - bias - f.mantBits);
}

function numberToSmallFloat(value: number, f: SmallFloat): number {
  const expMax = (1 << f.expBits) - 1;
  const bias = expMax >> 1;
  const signBit = 1 << (f.expBits + f.mantBits);
  const one = 2 ** f.mantBits;
  if (Number.isNaN(value)) return (expMax << f.mantBits) | (1 << (f.mantBits - 1));
  const sign = value < 0 || Object.is(value, -0) ? signBit : 0;
  const abs = Math.abs(value);
  if (abs === 0) return sign;
  if (abs === Infinity) return sign | (expMax << f.mantBits);
  // Below the smallest normal the quantum stays that of the smallest binade (subnormals).
  let e = Math.max(exponentOf(abs), 1 - bias);
  // Scaling by a power of two is exact, so the only rounding is this one (no double rounding).
  let q = roundHalfEven(abs / 2 ** (e - f.mantBits));
  if (q >= 2 * one) {
    q /= 2;
    e += 1;
  }
  if (q < one) return sign | q;
  if (e > bias) return sign | (expMax << f.mantBits);
  return sign | ((e + bias) << f.mantBits) | (q - one);
}

/** floor(log2(x)) for a positive finite double, exactly. */
function exponentOf(x: number): number {
  let e = Math.floor(Math.log2(x));
  if (2 ** e > x) e -= 1;
  else if (2 ** (e + 1) <= x) e += 1;
  return e;
}

function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}
