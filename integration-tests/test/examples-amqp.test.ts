import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@nuropb/core";
import { createAmqpTransport, teardownMesh } from "@nuropb/transport-amqp";
import { afterEach, describe, expect, it } from "vitest";
import { main as allInOne } from "../../examples/all-in-one/src/main.ts";
import { main as client } from "../../examples/client/src/main.ts";
import { main as meshSetup } from "../../examples/mesh-setup/src/main.ts";
import { main as serverBasic } from "../../examples/server-basic/src/main.ts";
import { main as server } from "../../examples/server/src/main.ts";
import { main as serviceExample } from "../../examples/service-example/src/main.ts";
import { rabbitEnv, uniqueVhost } from "../src/amqp-helpers.ts";
import { spawnTs } from "../src/cli-harness.ts";

// Every example as a smoke test on the private RabbitMQ: each gets a fresh vhost (the examples set
// their mesh up themselves) that is deleted afterwards.

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A fresh vhost URL, deleted after the test. */
function freshUrl(prefix: string): string {
  const url = `${rabbitEnv().amqpUrl}/${uniqueVhost(prefix)}`;
  cleanups.push(() => teardownMesh({ url }).then(() => undefined));
  return url;
}

/** A server-style example running on RabbitMQ until `stop()`. */
interface Running {
  readonly lines: string[];
  /** Resolves when a printed line starts with `prefix` (fails after 20 s). */
  printed(prefix: string): Promise<string>;
  /** Stops it (as Ctrl-C would) and returns everything it printed. */
  stop(): Promise<string[]>;
}

function start(
  run: (o: { print: (l: string) => void; signal: AbortSignal }) => Promise<string[]>,
): Running {
  const controller = new AbortController();
  const lines: string[] = [];
  const waiters = new Set<() => void>();
  const done = run({
    print: (l) => {
      lines.push(l);
      for (const w of waiters) w();
    },
    signal: controller.signal,
  });
  let failed: unknown;
  done.catch((err: unknown) => {
    failed = err;
    for (const w of waiters) w();
  });
  const running: Running = {
    lines,
    printed: (prefix) =>
      new Promise<string>((resolve, reject) => {
        const finish = (line: string | undefined, err?: unknown): void => {
          clearTimeout(timer);
          waiters.delete(check);
          if (line !== undefined) resolve(line);
          else reject(err instanceof Error ? err : new Error(String(err)));
        };
        const check = (): void => {
          const line = lines.find((l) => l.startsWith(prefix));
          if (line !== undefined) finish(line);
          else if (failed !== undefined) finish(undefined, failed);
        };
        const timer = setTimeout(
          () =>
            finish(undefined, new Error(`no line '${prefix}…' within 20 s: ${lines.join(" | ")}`)),
          20_000,
        );
        waiters.add(check);
        check();
      }),
    stop: async () => {
      controller.abort();
      return done;
    },
  };
  cleanups.push(async () => void (await running.stop().catch(() => undefined)));
  return running;
}

/** A client on the given mesh, disconnected after the test. */
async function connectClient(url: string) {
  const transport = createAmqpTransport({ url });
  const c = createClient({ transport });
  await c.connect();
  cleanups.push(async () => {
    await c.disconnect();
    await transport.close();
  });
  return c;
}

describe("examples on RabbitMQ", () => {
  it("mesh-setup creates the mesh, and a second run finds it all there", async () => {
    const url = freshUrl("ex-mesh");
    const vhost = new URL(url).pathname.slice(1);
    const shown = url.replace(":guest@", ":****@");
    expect(await meshSetup({ print: () => {}, amqpUrl: url })).toEqual([
      `setting up the mesh at ${shown}`,
      `vhost ${vhost}: created`,
      "declared: exchange:nuropb-dl-exchange, queue:nuropb-dl-queue, exchange:nuropb-events-exchange, exchange:nuropb-rpc-exchange",
      "already there: nothing",
    ]);
    expect((await meshSetup({ print: () => {}, amqpUrl: url })).slice(1)).toEqual([
      `vhost ${vhost}: already there`,
      "declared: nothing",
      "already there: exchange:nuropb-dl-exchange, queue:nuropb-dl-queue, exchange:nuropb-events-exchange, exchange:nuropb-rpc-exchange",
    ]);
  });

  it("all-in-one runs its service and client over RabbitMQ", async () => {
    const url = freshUrl("ex-all");
    const prior = process.env.NUROPB_AMQP_URL;
    process.env.NUROPB_AMQP_URL = url; // all-in-one reads only the environment
    try {
      const lines = await allInOne(() => {});
      expect(lines[0]).toBe(`transport: amqp, mesh: ${new URL(url).pathname.slice(1)}`);
      expect(lines.slice(1)).toEqual([
        'test_method -> "response from test_service.test_method(value1, value2a)"',
        'test_requires_user_claims -> "hello user-1234"',
        "test_requires_user_claims with a bad token -> NuropbAuthorizationError: unknown token",
      ]);
    } finally {
      if (prior === undefined) delete process.env.NUROPB_AMQP_URL;
      else process.env.NUROPB_AMQP_URL = prior;
    }
  });

  it("server-basic serves until stopped, then disconnects cleanly", async () => {
    const url = freshUrl("ex-basic");
    const running = start((o) => serverBasic({ ...o, amqpUrl: url }));
    expect(await running.printed("basic-example ready on amqp://guest:****@")).toContain(
      "Ctrl-C to stop",
    );
    const c = await connectClient(url);
    expect(
      await c.request("basic-example", "test_method", { param1: "a", param2: { b: 1 } }),
    ).toEqual({ param1: "a", param2: { b: 1 }, reply: "response from test_method" });
    expect(await c.request("basic-example", "test_async_method")).toBe(
      "response from test_async_method",
    );
    const lines = await running.stop();
    expect(lines.at(-1)).toBe("basic-example stopped");
  });

  it("the client example talks to the server example: request, command, event, encrypted request", async () => {
    const url = freshUrl("ex-client");
    const dir = mkdtempSync(join(tmpdir(), "nuropb-examples-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const running = start((o) =>
      server({ ...o, amqpUrl: url, keyFile: join(dir, "sandbox.keys.json") }),
    );
    await running.printed("sandbox ready on amqp://");
    const lines = await client({ print: () => {}, amqpUrl: url });
    expect(lines).toEqual([
      `client on ${url.replace(":guest@", ":****@")}`,
      'request test_method -> "response from sandbox.test_method"',
      "command record_visit sent",
      "request visit_count -> 1",
      "event test-event published",
      'encrypted request save_secret -> {"saved":true,"length":12,"encrypted":true}',
    ]);
    expect(await running.printed("sandbox received event")).toBe(
      'sandbox received event test-event: {"event_key":"event_value"}',
    );
    expect((await running.stop()).at(-1)).toBe("sandbox stopped");
  });

  it("service-example serves every behaviour and handles its own events", async () => {
    const url = freshUrl("ex-service");
    const running = start((o) => serviceExample({ ...o, amqpUrl: url }));
    await running.printed("service-example ready on amqp://");
    const c = await connectClient(url);
    expect(await c.request("service-example", "test_async_method")).toBe(
      "response from service-example.test_async_method",
    );
    await expect(c.request("service-example", "method_with_exception")).rejects.toMatchObject({
      name: "NuropbError",
      message:
        "Runtime exception calling service-example.method_with_exception:Error: Test sync exception",
    });
    expect(await c.request("service-example", "call_again")).toBe(
      "response from service-example.call_again on the second delivery",
    );
    await expect(c.request("service-example", "call_again_always")).rejects.toMatchObject({
      name: "NuropbCallAgainReject",
    });
    expect(await c.request("service-example", "success_with_events")).toBe(
      "response from service-example.success_with_events",
    );
    expect(await running.printed("handleEvent <- ")).toBe(
      'handleEvent <- test-event {"event_key":"from NuropbSuccess"}',
    );
    expect((await running.stop()).at(-1)).toBe("service-example stopped");
  });

  it.each(["SIGINT", "SIGTERM"] as const)(
    "server-basic run as a program stops on %s and disconnects cleanly (exit 0)",
    async (signal) => {
      const url = freshUrl("ex-signal");
      const program = spawnTs("examples/server-basic/src/main.ts", [], { NUROPB_AMQP_URL: url });
      cleanups.push(() => program.kill("SIGKILL"));
      await program.stdoutContains("Ctrl-C to stop");
      const c = await connectClient(url);
      expect(await c.request("basic-example", "test_async_method")).toBe(
        "response from test_async_method",
      );
      program.kill(signal);
      const r = await program.done;
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      expect(r.stdout.trim().split("\n").at(-1)).toBe("basic-example stopped");
    },
  );
});
