import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createClient } from "@nuropb/core";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import { describe, expect, it } from "vitest";
import { ExitCode, run } from "../src/index.ts";
import { capture } from "./helpers.ts";

// `nuropb run` in-process: the module's service runs on a memory transport handed to the CLI.
const here = dirname(fileURLToPath(import.meta.url));
const MODULE = join(here, "fixtures/orders.runner.ts");

async function waitFor(predicate: () => boolean, what: string): Promise<void> {
  const start = Date.now();
  while (!predicate()) {
    if (Date.now() - start > 5000) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe("nuropb run", () => {
  it("runs the module's services on the URL's transport until interrupted, then drains", async () => {
    const hub = createMemoryHub();
    const urls: string[] = [];
    const controller = new AbortController();
    const c = capture({ signal: controller.signal });
    const exited = run(
      ["run", MODULE, "--url", "nats://ann:hunter22@nats.invalid:4222/shop"],
      c.io,
      {
        createTransport: (url) => {
          urls.push(url);
          return createMemoryTransport({ hub });
        },
      },
    );
    await waitFor(() => hub.consumerCount("nuropb-orders-sq") === 1, "the service");
    const client = createClient({ transport: createMemoryTransport({ hub }) });
    await client.connect();
    expect(await client.request("orders", "ping")).toBe("pong");
    await client.disconnect();
    controller.abort();
    expect(await exited).toBe(ExitCode.ok);
    expect(urls).toEqual(["nats://ann:hunter22@nats.invalid:4222/shop"]);
    expect(hub.consumerCount("nuropb-orders-sq")).toBe(0);
    const logs = c
      .stderr()
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { msg: string; component?: string });
    expect(logs.map((l) => l.msg)).toEqual(
      expect.arrayContaining(["starting", "running", "draining", "stopped"]),
    );
    expect(c.stderr()).not.toContain("hunter22");
  });

  it("is a usage error when the module gives no transport and there is no URL", async () => {
    const c = capture();
    expect(await run(["run", MODULE], c.io)).toBe(ExitCode.usage);
    expect(c.stderr()).toMatch(/gives no transport/);
    expect(c.stderr()).toMatch(/hint: pass --url/);
  });

  it("exits 1 when the module cannot be loaded", async () => {
    const c = capture();
    const code = await run(
      ["run", join(here, "fixtures/missing.ts"), "--url", "redis://r:6379"],
      c.io,
    );
    expect(code).toBe(ExitCode.failed);
    expect(c.stderr()).toMatch(/cannot load/);
  });

  it("exits with the runner's start failure when the broker cannot be reached", async () => {
    const c = capture();
    const code = await run(["run", MODULE, "--url", "redis://r:6379"], c.io, {
      createTransport: () => {
        const t = createMemoryTransport({ hub: createMemoryHub() });
        void t.close();
        return t;
      },
    });
    expect(code).toBe(1);
    expect(c.stderr()).toMatch(/stopped.*\(start-failed\)/);
  });

  it("checks its options before loading anything", async () => {
    const c = capture();
    expect(await run(["run", MODULE, "--health-port", "70000"], c.io)).toBe(ExitCode.usage);
    expect(await run(["run", MODULE, "--drain-timeout", "soon"], c.io)).toBe(ExitCode.usage);
  });
});
