import { execFileSync } from "node:child_process";

/**
 * Compiles the project once before the tests, so that tests which start the real `infergate`
 * command (bin/infergate.js → dist/) run the code under test, not a stale build.
 */
export default function setup(): void {
  execFileSync("npm", ["run", "--silent", "build"], { stdio: "inherit" });
}
