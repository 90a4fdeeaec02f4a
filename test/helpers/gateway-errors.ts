import { GatewayError } from "../../src/core/gateway-error.js";

/** The GatewayError `fn` throws; fails the test when it throws nothing or something else. */
export function gatewayErrorOf(fn: () => unknown): GatewayError {
  try {
    fn();
  } catch (err) {
    if (err instanceof GatewayError) return err;
    throw err;
  }
  throw new Error("no error was thrown");
}
