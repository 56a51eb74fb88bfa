import { existsSync, readFileSync, readdirSync } from "node:fs";
import { defineConfig } from "vitest/config";

// One vitest project per package and example, plus the broker-backed integration tests.
// Tests need no build: the "@nuropb/source" export condition points every @nuropb/* import at src/.
const dirs = [
  ...readdirSync("packages").map((d) => `packages/${d}`),
  ...readdirSync("examples").map((d) => `examples/${d}`),
].filter((d) => existsSync(`${d}/test`));

const resolve = { conditions: ["@nuropb/source"] };

export default defineConfig({
  resolve,
  ssr: { resolve: { conditions: ["@nuropb/source"], externalConditions: ["@nuropb/source"] } },
  test: {
    projects: [
      ...dirs.map((dir) => ({
        extends: true as const,
        test: {
          name: (JSON.parse(readFileSync(`${dir}/package.json`, "utf8")) as { name: string }).name,
          root: dir,
          include: ["test/**/*.test.ts"],
        },
      })),
      {
        extends: true as const,
        test: {
          name: "integration-tests",
          root: "integration-tests",
          include: ["test/**/*.test.ts"],
          globalSetup: ["src/global-setup.ts"],
          testTimeout: 60_000,
          hookTimeout: 120_000,
          // One file at a time: some files stop and restart the shared brokers.
          pool: "forks",
          poolOptions: { forks: { singleFork: true } },
        },
      },
    ],
  },
});
