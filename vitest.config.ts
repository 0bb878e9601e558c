import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          include: ["{operator,agent,crds,kernel,runtime}/**/*.test.ts"],
        },
      },
      {
        test: {
          name: "e2e",
          include: ["test/e2e/**/*.test.ts"],
          exclude: ["test/e2e/kernel/**", "test/e2e/node/**"],
          globalSetup: ["test/e2e/cluster/global-setup.ts"],
          testTimeout: 120_000,
          hookTimeout: 300_000,
          fileParallelism: false,
        },
      },
      {
        test: {
          name: "kernel",
          include: ["test/e2e/kernel/**/*.test.ts"],
          globalSetup: ["test/e2e/cluster/global-setup.ts"],
          testTimeout: 300_000,
          hookTimeout: 600_000,
          fileParallelism: false,
        },
      },
      {
        test: {
          name: "node",
          include: ["test/e2e/node/**/*.test.ts"],
          globalSetup: ["test/e2e/node/global-setup.ts"],
          testTimeout: 600_000,
          hookTimeout: 1_200_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
