import { createClient, createLeaseElection, createService } from "@nuropb/core";
import {
  createMemoryBacklogProbe,
  createMemoryHub,
  createMemoryLeaseStore,
  createMemoryTransport,
  type MemoryHub,
} from "@nuropb/transport-memory";
import { afterEach, describe, expect, it } from "vitest";
import {
  ALERT_TOPIC,
  createRunner,
  withLeaderWatch,
  type Backlog,
  type BacklogProbe,
  type Runner,
  type ServiceAlertEvent,
} from "@nuropb/runner";

async function waitFor(predicate: () => boolean, what: string): Promise<void> {
  const start = Date.now();
  while (!predicate()) {
    if (Date.now() - start > 3000) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A service bound to the alert topic, keeping what it hears. */
async function listen(hub: MemoryHub): Promise<ServiceAlertEvent[]> {
  const heard: ServiceAlertEvent[] = [];
  const transport = createMemoryTransport({ hub });
  const service = createService({
    transport,
    name: "alert-watcher",
    instance: {
      handleEvent: (e: { topic: string; event: unknown }) => {
        if (e.topic === ALERT_TOPIC) heard.push(e.event as ServiceAlertEvent);
      },
    },
    eventBindings: [ALERT_TOPIC],
  });
  await service.connect();
  cleanups.push(
    () => transport.close(),
    () => service.disconnect(),
  );
  return heard;
}

/** A runner of one `orders` instance, elected on the hub, with a leader watch. */
function runner(hub: MemoryHub, probe: BacklogProbe, handler = (): unknown => "ok"): Runner {
  const r = createRunner({
    transport: () => createMemoryTransport({ hub }),
    services: [
      withLeaderWatch(
        ({ transport, instanceId, elect }) =>
          createService({
            transport,
            instanceId,
            name: "orders",
            instance: { work: handler },
            election: elect("orders"),
            prefetch: 1,
          }),
        { probe, queueDepth: 3, deadLetters: 0, intervalMs: 10 },
      ),
    ],
    election: ({ service, candidateId, transport }) =>
      createLeaseElection({
        store: createMemoryLeaseStore({ hub, name: service, transport }),
        candidateId,
        leaseMs: 150,
        renewMs: 30,
      }),
    status: false,
  });
  cleanups.push(() => r.stop({ force: true }));
  return r;
}

describe("withLeaderWatch", () => {
  it("alerts once per crossing, again only after the value fell back", async () => {
    const hub = createMemoryHub();
    const heard = await listen(hub);
    let backlog: Backlog = { depth: 0, deadLetters: undefined };
    const r = runner(hub, () => Promise.resolve(backlog));
    await r.start();
    await waitFor(() => r.services[0]?.isLeader === true, "the leader");
    backlog = { depth: 5, deadLetters: undefined };
    await waitFor(() => heard.length === 1, "the first alert");
    await sleep(80);
    expect(heard).toHaveLength(1);
    expect(heard[0]).toMatchObject({
      type: "nuropb_service_alert",
      service: "orders",
      instance_id: r.services[0]?.instanceId,
      kind: "queue-depth",
      value: 5,
      threshold: 3,
    });
    expect(Number.isNaN(Date.parse(heard[0]?.at ?? ""))).toBe(false);
    // At the threshold is not above it; crossing again alerts again.
    backlog = { depth: 3, deadLetters: 1 };
    await waitFor(() => heard.length === 2, "the dead-letter alert");
    expect(heard[1]).toMatchObject({ kind: "dead-letters", value: 1, threshold: 0 });
    backlog = { depth: 4, deadLetters: 1 };
    await waitFor(() => heard.length === 3, "the second crossing");
    await sleep(80);
    expect(heard.map((e) => e.kind)).toEqual(["queue-depth", "dead-letters", "queue-depth"]);
  });

  it("probes the hub: the leader alerts on a real backlog, a follower sends nothing", async () => {
    const hub = createMemoryHub();
    const heard = await listen(hub);
    const probe = createMemoryBacklogProbe(hub);
    let probedByFollower = 0;
    // Handlers held until the test ends: with prefetch 1 the rest of the commands wait in the queue.
    let release = (): void => {};
    const held = new Promise<void>((r) => (release = r));
    const never = (): Promise<void> => held;
    const leader = runner(hub, probe, never);
    await leader.start();
    await waitFor(() => leader.services[0]?.isLeader === true, "the leader");
    const follower = runner(
      hub,
      (s) => {
        probedByFollower++;
        return probe(s);
      },
      never,
    );
    await follower.start();
    const client = createClient({ transport: createMemoryTransport({ hub }) });
    await client.connect();
    cleanups.push(
      () => client.disconnect(),
      () => Promise.resolve(release()),
    );
    for (let i = 0; i < 8; i++) await client.command("orders", "work");
    await waitFor(() => heard.length === 1, "the alert");
    await sleep(80);
    expect(heard).toHaveLength(1);
    expect(heard[0]).toMatchObject({
      kind: "queue-depth",
      instance_id: leader.services[0]?.instanceId,
      threshold: 3,
    });
    // The probe may run while the commands are still coming in or not yet handed out: any value
    // above 3 of the 8 sent; once each instance holds one, 6 wait.
    expect(heard[0]?.value).toBeGreaterThan(3);
    expect(heard[0]?.value).toBeLessThanOrEqual(8);
    let backlog = await probe("orders");
    await waitFor(() => {
      void probe("orders").then((b) => (backlog = b));
      return backlog.depth === 6;
    }, "6 waiting");
    expect(backlog.deadLetters).toBe(0);
    expect(follower.services[0]?.isLeader).toBe(false);
    expect(probedByFollower).toBe(0);
  });

  it("probes only while leading: stops when deposed, starts again when elected", async () => {
    const hub = createMemoryHub();
    let probes = 0;
    let held = true;
    // A lease that is taken and kept while `held`, lost at the next renewal once it is not.
    const store = {
      name: "orders",
      acquire: () => Promise.resolve(held),
      renew: () => Promise.resolve(held),
      release: () => Promise.resolve(),
      close: () => Promise.resolve(),
    };
    const r = createRunner({
      transport: () => createMemoryTransport({ hub }),
      services: [
        withLeaderWatch(
          ({ transport, instanceId, elect }) =>
            createService({
              transport,
              instanceId,
              name: "orders",
              instance: {},
              election: elect("orders"),
            }),
          {
            probe: () => {
              probes++;
              return Promise.resolve({ depth: 0, deadLetters: 0 });
            },
            queueDepth: 1,
            intervalMs: 10,
          },
        ),
      ],
      election: ({ candidateId }) =>
        createLeaseElection({ store, candidateId, leaseMs: 100, renewMs: 20 }),
      status: false,
    });
    cleanups.push(() => r.stop({ force: true }));
    await r.start();
    await waitFor(() => probes > 2, "probes while leading");
    held = false;
    await waitFor(() => r.services[0]?.isLeader === false, "the deposition");
    await sleep(30);
    const deposed = probes;
    await sleep(80);
    expect(probes).toBe(deposed);
    expect(r.services[0]?.connected).toBe(true);
    held = true;
    await waitFor(() => probes > deposed + 2, "probes once elected again");
  });

  it("stops probing when the runner stops; refuses bad options", async () => {
    const hub = createMemoryHub();
    let probes = 0;
    const r = runner(hub, () => {
      probes++;
      return Promise.resolve({ depth: 0, deadLetters: 0 });
    });
    await r.start();
    await waitFor(() => probes > 2, "probes");
    await r.stop();
    const after = probes;
    await sleep(60);
    expect(probes).toBe(after);
    const f = () =>
      createService({ transport: createMemoryTransport({ hub }), name: "x", instance: {} });
    const probe: BacklogProbe = () => Promise.resolve({ depth: 0, deadLetters: 0 });
    expect(() => withLeaderWatch(f, { probe })).toThrow(TypeError);
    expect(() => withLeaderWatch(f, { probe, queueDepth: -1 })).toThrow(/queueDepth/);
    expect(() => withLeaderWatch(f, { probe: 3 as never, queueDepth: 1 })).toThrow(/probe/);
    expect(() => withLeaderWatch(f, { probe, deadLetters: 0, intervalMs: 0 })).toThrow(
      /intervalMs/,
    );
  });
});
