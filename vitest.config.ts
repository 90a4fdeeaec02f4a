import { defineConfig } from "vitest/config";

/**
 * The slow tier: tests that take most of a run's time (each over ~10 s on a 2-core machine, or
 * moving gigabytes through loopback). `make test` (and CI) runs every tier; `make test-fast`
 * leaves this one out, for the edit-test loop.
 */
export const slowTests = [
  "test/faults/backpressure.test.ts", // 1,000 streams, about 2 GB through loopback
  "test/e2e/slow-clients.test.ts", // waits out the listeners' connection timeouts
  "test/e2e/deploy.test.ts", // npm ci and a build in a clean directory
  "test/faults/silent-upstreams.test.ts", // waits out deadlines against upstreams that never answer
  "test/fuzz/**/*.test.ts", // 5,000 malformed requests
];

export default defineConfig({
  test: {
    globalSetup: ["test/global-setup.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    projects: [
      { extends: true, test: { name: "fast", include: ["test/**/*.test.ts"], exclude: slowTests } },
      { extends: true, test: { name: "slow", include: slowTests } },
    ],
  },
});
