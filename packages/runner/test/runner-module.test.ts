import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createClient } from "@nuropb/core";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import { describe, expect, it } from "vitest";
import { createRunner, loadRunnerModule } from "@nuropb/runner";

const here = dirname(fileURLToPath(import.meta.url));

describe("loadRunnerModule", () => {
  it("loads a module's options, taking the loader's transport when it gives none", async () => {
    const hub = createMemoryHub();
    const options = await loadRunnerModule(
      "./fixtures/orders.runner.ts",
      {
        createTransport: () => createMemoryTransport({ hub }),
      },
      here,
    );
    expect(options.drainTimeoutMs).toBe(1234);
    await using runner = createRunner(options);
    await runner.start();
    const client = createClient({ transport: createMemoryTransport({ hub }) });
    await client.connect();
    expect(await client.request("orders", "ping")).toBe("pong");
    await client.disconnect();
  });

  it("takes a file name without ./ as a path, relative to the directory given", async () => {
    const options = await loadRunnerModule(
      "fixtures/orders.runner.ts",
      { createTransport: () => createMemoryTransport({ hub: createMemoryHub() }) },
      here,
    );
    expect(options.drainTimeoutMs).toBe(1234);
  });

  it("refuses a module without a transport when the loader has none", async () => {
    await expect(loadRunnerModule(join(here, "fixtures/orders.runner.ts"))).rejects.toThrow(
      /gives no transport/,
    );
  });

  it("refuses a module that exports no runner", async () => {
    await expect(loadRunnerModule("./fixtures/not-a-runner.ts", {}, here)).rejects.toThrow(
      TypeError,
    );
    await expect(loadRunnerModule("")).rejects.toThrow(TypeError);
  });
});
