import { createClient, createLeaseElection, createService, type MeshService } from "@nuropb/core";
import { createDeferred, NuropbTransportError, type Transport } from "@nuropb/protocol";
import {
  createMemoryHub,
  createMemoryLeaseStore,
  createMemoryTransport,
  type MemoryHub,
} from "@nuropb/transport-memory";
import { afterEach, describe, expect, it } from "vitest";
import { createRunner, RunnerExitCode, type Runner, type RunnerOptions } from "@nuropb/runner";

/** A service whose `slow` call waits until the test lets it go. */
class Orders {
  readonly started: (() => void)[] = [];
  gate = createDeferred<void>();
  seen = 0;

  async slow(): Promise<string> {
    this.seen++;
    for (const s of this.started.splice(0)) s();
    await this.gate.promise;
    return "done";
  }

  ping(): string {
    return "pong";
  }
}

const QUEUE = "nuropb-orders-sq";

interface Bed {
  readonly hub: MemoryHub;
  readonly orders: Orders;
  readonly transports: Transport[];
  readonly options: RunnerOptions;
}

function bed(extra: Partial<RunnerOptions> = {}): Bed {
  const hub = createMemoryHub();
  const orders = new Orders();
  const transports: Transport[] = [];
  const options: RunnerOptions = {
    transport: () => {
      const t = createMemoryTransport({ hub });
      transports.push(t);
      return t;
    },
    services: [({ transport }) => createService({ transport, name: "orders", instance: orders })],
    restart: { maxAttempts: 3, initialDelayMs: 5, maxDelayMs: 20 },
    ...extra,
  };
  return { hub, orders, transports, options };
}

/** Resolves once `orders.slow` is running. */
function nextSlowCall(orders: Orders): Promise<void> {
  return new Promise((resolve) => orders.started.push(resolve));
}

async function waitFor(predicate: () => boolean, what: string, timeoutMs = 3000): Promise<void> {
  const start = Date.now();
  while (!predicate()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const runners: Runner[] = [];
function track(r: Runner): Runner {
  runners.push(r);
  return r;
}
afterEach(async () => {
  await Promise.all(runners.splice(0).map((r) => r.stop({ force: true })));
});

describe("createRunner", () => {
  it("connects the services before it makes the clients", async () => {
    const b = bed();
    const consumersWhenClientMade: number[] = [];
    const runner = track(
      createRunner({
        ...b.options,
        clients: [
          ({ transport }) => {
            consumersWhenClientMade.push(b.hub.consumerCount(QUEUE));
            return createClient({ transport });
          },
        ],
      }),
    );
    await runner.start();
    expect(runner.state).toBe("running");
    expect(consumersWhenClientMade).toEqual([1]);
    expect(await runner.clients[0]?.request("orders", "ping")).toBe("pong");
    expect(b.transports).toHaveLength(2);
  });

  it("drains on stop: a call in flight finishes and is answered, new ones are not taken", async () => {
    const b = bed({ clients: [({ transport }) => createClient({ transport })] });
    const runner = track(createRunner(b.options));
    await runner.start();
    const client = runner.clients[0];
    const running = nextSlowCall(b.orders);
    const answer = client?.request("orders", "slow");
    await running;
    const stopped = runner.stop();
    await waitFor(() => b.hub.consumerCount(QUEUE) === 0, "the service to stop consuming");
    // A second client sends while the first call drains: the message waits in the queue.
    const other = createClient({ transport: createMemoryTransport({ hub: b.hub }) });
    await other.connect();
    void other.command("orders", "slow");
    await waitFor(() => b.hub.queueDepth(QUEUE) === 1, "the command to be queued");
    b.orders.gate.resolve();
    expect(await answer).toBe("done");
    expect(await stopped).toEqual({ code: RunnerExitCode.stopped, reason: "stopped" });
    expect(b.orders.seen).toBe(1);
    expect(b.transports.every((t) => t.state === "closed")).toBe(true);
    expect(await runner.done()).toEqual(await stopped);
    await other.disconnect();
  });

  it("ends with drainTimedOut when a handler outlives the drain bound", async () => {
    const b = bed({
      drainTimeoutMs: 50,
      clients: [({ transport }) => createClient({ transport })],
    });
    const runner = track(createRunner(b.options));
    await runner.start();
    const running = nextSlowCall(b.orders);
    const answer = runner.clients[0]?.request("orders", "slow").catch((e: unknown) => e);
    await running;
    const exit = await runner.stop();
    expect(exit).toEqual({ code: RunnerExitCode.drainTimedOut, reason: "drain-timed-out" });
    expect(await answer).toBeInstanceOf(Error);
    expect(b.transports.every((t) => t.state === "closed")).toBe(true);
    b.orders.gate.resolve();
  });

  it("restarts a participant whose transport closed for good, with a new transport", async () => {
    const b = bed();
    const runner = track(createRunner(b.options));
    await runner.start();
    const first = runner.services[0] as MeshService;
    await b.hub.fail(b.transports[0] as Transport, new NuropbTransportError("broker gone"));
    await waitFor(
      () => runner.services[0] !== first && runner.services[0]?.connected === true,
      "restart",
    );
    expect(b.transports).toHaveLength(2);
    expect(b.transports[0]?.state).toBe("closed");
    const client = createClient({ transport: createMemoryTransport({ hub: b.hub }) });
    await client.connect();
    expect(await client.request("orders", "ping")).toBe("pong");
    await client.disconnect();
    expect(runner.state).toBe("running");
  });

  it("stops with restartsExhausted when every restart attempt fails", async () => {
    const b = bed();
    let made = 0;
    const runner = track(
      createRunner({
        ...b.options,
        transport: () => {
          if (++made > 1) throw new NuropbTransportError("cannot reach the broker");
          return b.options.transport();
        },
      }),
    );
    await runner.start();
    await b.hub.fail(b.transports[0] as Transport, new NuropbTransportError("broker gone"));
    const exit = await runner.done();
    expect(exit.code).toBe(RunnerExitCode.restartsExhausted);
    expect(exit.reason).toBe("restarts-exhausted");
    expect(exit.error?.message).toBe("cannot reach the broker");
    expect(made).toBe(4); // the first start and three attempts
    expect(runner.state).toBe("stopped");
  });

  it("stops at once with restartsExhausted when restarts are off", async () => {
    const b = bed({ restart: false });
    const runner = track(createRunner(b.options));
    await runner.start();
    await b.hub.fail(b.transports[0] as Transport, new NuropbTransportError("broker gone"));
    expect((await runner.done()).code).toBe(RunnerExitCode.restartsExhausted);
    expect(b.transports).toHaveLength(1);
  });

  it("fails its start when a participant cannot connect, letting go of what it started", async () => {
    const b = bed();
    const runner = track(
      createRunner({
        ...b.options,
        clients: [
          ({ transport }) => {
            void transport.close();
            return createClient({ transport });
          },
        ],
      }),
    );
    await expect(runner.start()).rejects.toThrow();
    const exit = await runner.done();
    expect(exit.code).toBe(RunnerExitCode.startFailed);
    expect(exit.error).toBeInstanceOf(Error);
    expect(b.hub.consumerCount(QUEUE)).toBe(0);
    expect(b.transports.every((t) => t.state === "closed")).toBe(true);
  });

  it("serves readiness and liveness while it runs, not ready while a participant restarts", async () => {
    const b = bed({
      health: { port: 0, host: "127.0.0.1" },
      restart: { maxAttempts: 1, initialDelayMs: 300, maxDelayMs: 300 },
    });
    const runner = track(createRunner(b.options));
    await runner.start();
    const url = (path: string): string => `http://127.0.0.1:${String(runner.healthPort)}${path}`;
    const ready = await fetch(url("/readyz"));
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({
      status: "ok",
      participants: [{ name: "orders", connected: true, closed: false }],
    });
    await b.hub.fail(b.transports[0] as Transport, new NuropbTransportError("broker gone"));
    await waitFor(() => runner.services[0]?.connected !== true, "the service to close");
    expect((await fetch(url("/readyz"))).status).toBe(503);
    expect((await fetch(url("/healthz"))).status).toBe(200);
    await waitFor(() => runner.services[0]?.connected === true, "the restart");
    expect((await fetch(url("/readyz"))).status).toBe(200);
  });

  it("gives each service instance its election: one leader, another when it stops", async () => {
    const hub = createMemoryHub();
    const make = (): Runner =>
      track(
        createRunner({
          transport: () => createMemoryTransport({ hub }),
          services: [
            ({ transport, instanceId, elect }) =>
              createService({
                transport,
                instanceId,
                name: "orders",
                instance: new Orders(),
                election: elect("orders"),
              }),
          ],
          election: ({ service, candidateId, transport }) =>
            createLeaseElection({
              store: createMemoryLeaseStore({ hub, name: service, transport }),
              candidateId,
              leaseMs: 150,
              renewMs: 30,
            }),
        }),
      );
    const all = [make(), make(), make()];
    await Promise.all(all.map((r) => r.start()));
    const leading = (): Runner[] => all.filter((r) => r.services[0]?.isLeader === true);
    await waitFor(() => leading().length === 1, "a leader");
    const old = leading()[0] as Runner;
    expect(old.services[0]?.instanceId).toMatch(/^[0-9a-f]{32}$/);
    await old.stop();
    await waitFor(() => leading().length === 1 && !leading().includes(old), "another leader");
  });

  it("checks its options at once", () => {
    const b = bed();
    expect(() => createRunner({ ...b.options, services: [], clients: [] })).toThrow(TypeError);
    expect(() => createRunner({ ...b.options, transport: "memory" as never })).toThrow(
      /options.transport must be a function/,
    );
    expect(() => createRunner({ ...b.options, drainTimeoutMs: -1 })).toThrow(/drainTimeoutMs/);
    expect(() =>
      createRunner({ ...b.options, restart: { initialDelayMs: 100, maxDelayMs: 10 } }),
    ).toThrow(/maxDelayMs/);
  });
});
