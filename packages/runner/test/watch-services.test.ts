import { createLeaseElection, createService } from "@nuropb/core";
import type { Transport } from "@nuropb/protocol";
import {
  createMemoryHub,
  createMemoryLeaseStore,
  createMemoryTransport,
  type MemoryHub,
} from "@nuropb/transport-memory";
import { afterEach, describe, expect, it } from "vitest";
import {
  createRunner,
  createServicesView,
  watchServices,
  type Runner,
  type ServicesView,
  type StatusEvent,
} from "@nuropb/runner";

const report = (over: Partial<StatusEvent>): StatusEvent => ({
  type: "nuropb_status",
  service: "orders",
  instance_id: "a",
  state: "operational",
  leader: false,
  heartbeat_ms: 100,
  at: "2026-12-07T12:00:00.000Z",
  ...over,
});

describe("createServicesView", () => {
  it("folds reports into services, leaders and clients; stopped and silent instances leave", () => {
    let t = 1000;
    const v = createServicesView({ now: () => t });
    expect(v.apply(report({ instance_id: "b", state: "leader", leader: true }))).toBe(true);
    expect(v.apply(report({ instance_id: "a" }))).toBe(true);
    expect(v.apply(report({ instance_id: "a" }))).toBe(false); // a heartbeat, nothing new
    expect(v.apply(report({ service: null, instance_id: "c" }))).toBe(true);
    expect(v.apply({ type: "something else" })).toBe(false);
    expect(v.apply(report({ state: "exploded" as never }))).toBe(false);
    const view: ServicesView = v.view();
    expect(view.services).toHaveLength(1);
    expect(view.services[0]?.name).toBe("orders");
    expect(view.services[0]?.instances.map((i) => i.instanceId)).toEqual(["a", "b"]);
    expect(view.services[0]?.leader).toBe("b");
    expect(view.clients.map((c) => c.instanceId)).toEqual(["c"]);
    expect(v.apply(report({ instance_id: "b", state: "stopped" }))).toBe(true);
    expect(v.view().services[0]?.leader).toBeUndefined();
    t += 300; // three heartbeats: not yet silent for longer
    expect(v.prune()).toBe(false);
    t += 1;
    expect(v.prune()).toBe(true);
    expect(v.view()).toEqual({ services: [], clients: [] });
    expect(() => createServicesView({ silentAfterHeartbeats: 0 })).toThrow(TypeError);
  });
});

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function runner(hub: MemoryHub, transports: Transport[]): Runner {
  const r = createRunner({
    transport: () => {
      const t = createMemoryTransport({ hub });
      transports.push(t);
      return t;
    },
    services: [
      ({ transport, instanceId, elect }) =>
        createService({
          transport,
          instanceId,
          name: "orders",
          instance: {},
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
    status: { heartbeatMs: 30 },
    restart: false,
  });
  cleanups.push(() => r.stop({ force: true }));
  return r;
}

async function until(
  watch: { view(): ServicesView },
  check: (v: ServicesView) => boolean,
  what: string,
): Promise<ServicesView> {
  const start = Date.now();
  while (!check(watch.view())) {
    if (Date.now() - start > 3000) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
  return watch.view();
}

describe("watchServices", () => {
  it("follows instances, the leader, a crash (silent) and a clean stop", async () => {
    const hub = createMemoryHub();
    const watcherTransport = createMemoryTransport({ hub });
    cleanups.push(() => watcherTransport.close());
    await watcherTransport.connect();
    const watch = await watchServices({ transport: watcherTransport, pruneEveryMs: 10 });
    cleanups.push(() => watch.close());
    const updates: ServicesView[] = [];
    void (async () => {
      for await (const v of watch.updates()) updates.push(v);
    })();
    const aTransports: Transport[] = [];
    const a = runner(hub, aTransports);
    await a.start();
    await until(watch, (v) => v.services[0]?.leader !== undefined, "a leader");
    const b = runner(hub, []);
    await b.start();
    const two = await until(
      watch,
      (v) => v.services[0]?.instances.filter((i) => i.state !== "starting").length === 2,
      "two instances",
    );
    expect(two.services[0]?.leader).toBe(a.services[0]?.instanceId);

    // a's connection fails for good: it stops without a word, the view drops it after 3 beats.
    await hub.fail(aTransports[0] as Transport);
    const after = await until(
      watch,
      (v) => v.services[0]?.instances.length === 1 && v.services[0]?.leader !== undefined,
      "a to drop out and b to lead",
    );
    expect(after.services[0]?.leader).toBe(b.services[0]?.instanceId);

    await b.stop();
    await until(watch, (v) => v.services.length === 0, "b's stopped report");
    expect(updates.length).toBeGreaterThanOrEqual(4);

    // The watcher's queue is transient: closing the watch leaves nothing of it on the hub.
    expect(hub.queueNames().filter((q) => q.includes("nuropb-watch-"))).toHaveLength(1);
    await watch.close();
    expect(hub.queueNames().filter((q) => q.includes("nuropb-watch-"))).toEqual([]);
  });
});
