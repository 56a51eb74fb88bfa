import { createLeaseElection, createService } from "@nuropb/core";
import {
  createMemoryHub,
  createMemoryLeaseStore,
  createMemoryTransport,
  type MemoryHub,
} from "@nuropb/transport-memory";
import { afterEach, describe, expect, it } from "vitest";
import { createRunner, STATUS_TOPIC, type Runner, type StatusEvent } from "@nuropb/runner";

/** A service bound to the status topic, keeping what it hears. */
class Watcher {
  readonly heard: StatusEvent[] = [];
  handleEvent(e: { topic: string; event: unknown }): void {
    if (e.topic === STATUS_TOPIC) this.heard.push(e.event as StatusEvent);
  }
}

async function waitFor(predicate: () => boolean, what: string): Promise<void> {
  const start = Date.now();
  while (!predicate()) {
    if (Date.now() - start > 3000) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function watch(hub: MemoryHub): Promise<Watcher> {
  const watcher = new Watcher();
  const transport = createMemoryTransport({ hub });
  const service = createService({
    transport,
    name: "status-watcher",
    instance: watcher,
    eventBindings: [STATUS_TOPIC],
  });
  await service.connect();
  cleanups.push(
    () => transport.close(),
    () => service.disconnect(),
  );
  return watcher;
}

function runner(hub: MemoryHub, heartbeatMs: number): Runner {
  const r = createRunner({
    transport: () => createMemoryTransport({ hub }),
    services: [
      ({ transport, instanceId, elect }) =>
        createService({
          transport,
          instanceId,
          name: "orders",
          instance: { ping: () => "pong" },
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
    status: { heartbeatMs },
  });
  cleanups.push(() => r.stop({ force: true }));
  return r;
}

describe("status reports", () => {
  it("publish starting, leader, stopping and stopped, with heartbeats in between", async () => {
    const hub = createMemoryHub();
    const watcher = await watch(hub);
    const r = runner(hub, 40);
    await r.start();
    const id = r.services[0]?.instanceId;
    await waitFor(
      () => watcher.heard.filter((e) => e.state === "leader").length >= 3,
      "the leader state and two heartbeats",
    );
    await r.stop();
    await waitFor(() => watcher.heard.some((e) => e.state === "stopped"), "stopped");
    const mine = watcher.heard.filter((e) => e.instance_id === id);
    expect(mine.every((e) => e.service === "orders" && e.heartbeat_ms === 40)).toBe(true);
    const states = mine.map((e) => e.state).filter((s, i, all) => s !== all[i - 1]);
    expect(states[0]).toBe("starting");
    expect(states.slice(-2)).toEqual(["stopping", "stopped"]);
    expect(states).toContain("leader");
    expect(mine.at(-1)).toMatchObject({ state: "stopped", leader: false });
    // Nothing after stopped: the heartbeat ended with it.
    const count = watcher.heard.length;
    await new Promise((r) => setTimeout(r, 120));
    expect(watcher.heard.length).toBe(count);
  });

  it("reports a follower as operational and the change when it takes over", async () => {
    const hub = createMemoryHub();
    const watcher = await watch(hub);
    const first = runner(hub, 1000);
    await first.start();
    await waitFor(() => first.services[0]?.isLeader === true, "the first leader");
    const second = runner(hub, 1000);
    await second.start();
    const id = second.services[0]?.instanceId;
    await waitFor(
      () => watcher.heard.some((e) => e.instance_id === id && e.state === "operational"),
      "the follower operational",
    );
    await first.stop();
    await waitFor(
      () => watcher.heard.some((e) => e.instance_id === id && e.state === "leader" && e.leader),
      "the follower to report leading",
    );
  });

  it("never stretch the drain: a report the broker does not take is left behind", async () => {
    const hub = createMemoryHub();
    let hang = false;
    const r = createRunner({
      // A transport whose event sends never complete once `hang` is set (a broker that stalls).
      transport: () => {
        const t = createMemoryTransport({ hub });
        return new Proxy(t, {
          get: (target, prop) => {
            if (prop === "send") {
              return (to: { kind: string }, frame: never) =>
                hang && to.kind === "event"
                  ? new Promise(() => {})
                  : target.send(to as never, frame);
            }
            const value = Reflect.get(target, prop, target) as unknown;
            return typeof value === "function" ? (value as () => unknown).bind(target) : value;
          },
        });
      },
      services: [({ transport }) => createService({ transport, name: "orders", instance: {} })],
      drainTimeoutMs: 100,
    });
    cleanups.push(() => r.stop({ force: true }));
    await r.start();
    hang = true;
    const exit = await r.stop();
    expect(exit.reason).toBe("stopped");
  });

  it("can be turned off", async () => {
    const hub = createMemoryHub();
    const watcher = await watch(hub);
    const r = createRunner({
      transport: () => createMemoryTransport({ hub }),
      services: [({ transport }) => createService({ transport, name: "quiet", instance: {} })],
      status: false,
    });
    cleanups.push(() => r.stop({ force: true }));
    await r.start();
    await r.stop();
    await new Promise((r) => setTimeout(r, 100)); // reports would have arrived by now
    expect(watcher.heard).toEqual([]);
    expect(() =>
      createRunner({
        transport: () => createMemoryTransport({ hub }),
        services: [() => r.services[0] as never],
        status: { heartbeatMs: 0 },
      }),
    ).toThrow(/heartbeatMs/);
    // Watchers clamp a longer heartbeat (and would drop the instance between its reports).
    expect(() =>
      createRunner({
        transport: () => createMemoryTransport({ hub }),
        services: [() => r.services[0] as never],
        status: { heartbeatMs: 300_001 },
      }),
    ).toThrow(/heartbeatMs' must be at most 300000/);
  });
});
