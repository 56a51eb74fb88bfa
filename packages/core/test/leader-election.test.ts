import {
  createClient,
  createLeaseElection,
  createService,
  type LeaderElection,
  type LeaseStore,
  type MeshService,
  type ParticipantEvent,
} from "@nuropb/core";
import { NuropbTransportError, type Transport } from "@nuropb/protocol";
import { createMemoryLeaseStore } from "@nuropb/transport-memory";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createMesh, waitFor } from "./helpers.ts";

const LEASE_MS = 150;
const RENEW_MS = 30;

let mesh: ReturnType<typeof createMesh>;
afterEach(async () => {
  await mesh.cleanup();
});

interface Instance {
  readonly transport: Transport;
  readonly election: LeaderElection;
  readonly service: MeshService;
  readonly events: ParticipantEvent[];
}

/** `n` instances of `orders`, each with its own transport and a lease election on the hub. */
async function instances(n: number): Promise<Instance[]> {
  mesh = createMesh();
  const made: Instance[] = [];
  for (let i = 0; i < n; i++) {
    const transport = mesh.transport();
    const election = createLeaseElection({
      store: createMemoryLeaseStore({ hub: mesh.hub, name: "orders", transport }),
      candidateId: `candidate-${String(i)}`,
      leaseMs: LEASE_MS,
      renewMs: RENEW_MS,
    });
    const service = createService({
      transport,
      name: "orders",
      instance: { ping: () => "pong" },
      election,
    });
    const events: ParticipantEvent[] = [];
    void (async () => {
      for await (const e of service.events()) events.push(e);
    })();
    mesh.defer(() => election.close());
    mesh.defer(() => service.disconnect());
    made.push({ transport, election, service, events });
  }
  await Promise.all(made.map((m) => m.service.connect()));
  return made;
}

const leaders = (all: readonly Instance[]): Instance[] => all.filter((m) => m.service.isLeader);

/** Samples leadership every few ms until stopped; the largest number of leaders seen at once. */
function watchLeaders(all: readonly Instance[]): () => number {
  let most = 0;
  const timer = setInterval(() => (most = Math.max(most, leaders(all).length)), 2);
  return () => {
    clearInterval(timer);
    return Math.max(most, leaders(all).length);
  };
}

describe("leader election on the memory hub", () => {
  it("elects exactly one of three instances and says so in its events", async () => {
    const all = await instances(3);
    await waitFor(() => leaders(all).length === 1, 1000, "a leader");
    const stop = watchLeaders(all);
    await new Promise((r) => setTimeout(r, LEASE_MS * 2));
    expect(stop()).toBe(1);
    const [leader] = leaders(all);
    expect(leader?.events).toContainEqual({ type: "elected" });
    for (const m of all.filter((x) => x !== leader)) {
      expect(m.events.some((e) => e.type === "elected")).toBe(false);
    }
  });

  it("replaces a leader whose connection dies within the lease bound, never two at once", async () => {
    const all = await instances(3);
    await waitFor(() => leaders(all).length === 1, 1000, "a leader");
    const old = leaders(all)[0] as Instance;
    const stop = watchLeaders(all);
    const killedAt = Date.now();
    await mesh.hub.fail(old.transport);
    await waitFor(() => leaders(all).some((m) => m !== old), 2000, "a new leader");
    const tookMs = Date.now() - killedAt;
    expect(stop()).toBe(1);
    expect(old.service.isLeader).toBe(false);
    // The bound: the lease lapses at most LEASE_MS after the last renewal and the others try every
    // RENEW_MS; the rest is slack for timers on a loaded machine.
    expect(tookMs).toBeLessThanOrEqual(LEASE_MS + RENEW_MS + 400);
    expect(old.events).toContainEqual(expect.objectContaining({ type: "deposed" }));
  });

  it("releases the lease when the leader disconnects: it resigns before draining", async () => {
    const all = await instances(2);
    await waitFor(() => leaders(all).length === 1, 1000, "a leader");
    const old = leaders(all)[0] as Instance;
    const other = all.find((m) => m !== old) as Instance;
    await other.election.stop(); // the other stops campaigning, so the lease stays free
    await old.service.disconnect();
    expect(old.service.isLeader).toBe(false);
    expect(old.events).toContainEqual({ type: "deposed" });
    // Released, not left to lapse: anyone may take it at once.
    const probe = createMemoryLeaseStore({ hub: mesh.hub, name: "orders" });
    expect(await probe.acquire("probe", 1000)).toBe(true);
  });

  it("deposes a leader cut off from the broker even though nobody else could take over", async () => {
    const all = await instances(1);
    const [only] = all as [Instance];
    await waitFor(() => only.service.isLeader, 1000, "the leader");
    void mesh.hub.disconnect(only.transport, { downMs: LEASE_MS * 3 });
    await waitFor(() => !only.service.isLeader, LEASE_MS + 50, "the leader to step down");
    // Back on the broker, it leads again.
    await waitFor(() => only.service.isLeader, LEASE_MS * 4, "the leader again");
  });

  it("keeps isLeader true for a service without an election, and for clients", async () => {
    mesh = createMesh();
    const service = createService({ transport: mesh.transport(), name: "solo", instance: {} });
    const client = createClient({ transport: mesh.transport() });
    expect(service.isLeader).toBe(true);
    expect(client.isLeader).toBe(true);
  });

  it("keeps campaigning through a store that cannot answer, and refuses a misconfigured one", async () => {
    mesh = createMesh();
    let up = false;
    const flaky: LeaseStore = {
      name: "orders",
      acquire: async () => {
        if (!up) throw new NuropbTransportError("broker down");
        return true;
      },
      renew: async () => true,
      release: async () => undefined,
      close: async () => undefined,
    };
    const election = createLeaseElection({
      store: flaky,
      candidateId: "a",
      leaseMs: 150,
      renewMs: 30,
    });
    mesh.defer(() => election.close());
    await election.start();
    expect(election.isLeader).toBe(false);
    up = true;
    await waitFor(() => election.isLeader, 1000, "the leader once the broker answers");

    const wrong: LeaseStore = {
      ...flaky,
      acquire: async () => {
        throw new TypeError("this store's lease is 1000 ms");
      },
    };
    const service = createService({
      transport: mesh.transport(),
      name: "orders",
      instance: {},
      election: createLeaseElection({ store: wrong, candidateId: "b", leaseMs: 150, renewMs: 30 }),
    });
    await expect(service.connect()).rejects.toThrow(/lease is 1000 ms/);
  });

  it("steps down 5 % of the lease before the broker may free it, counted from the request", async () => {
    mesh = createMesh();
    vi.useFakeTimers();
    try {
      let answering = true;
      const sentOk: number[] = [];
      const store: LeaseStore = {
        name: "orders",
        acquire: async () => {
          if (!answering) throw new NuropbTransportError("broker unreachable");
          sentOk.push(Date.now());
          return true;
        },
        renew: async () => {
          const sent = Date.now();
          if (!answering) throw new NuropbTransportError("broker unreachable");
          sentOk.push(sent);
          return true;
        },
        release: async () => undefined,
        close: async () => undefined,
      };
      const election = createLeaseElection({
        store,
        candidateId: "a",
        leaseMs: 1000,
        renewMs: 300,
      });
      let deposedAt = 0;
      void (async () => {
        for await (const e of election.events()) if (e.type === "deposed") deposedAt = Date.now();
      })();
      await election.start();
      expect(election.isLeader).toBe(true);
      await vi.advanceTimersByTimeAsync(650); // two renewals
      answering = false;
      await vi.advanceTimersByTimeAsync(2000);
      expect(election.isLeader).toBe(false);
      expect(deposedAt - (sentOk.at(-1) as number)).toBe(950);
      await election.close();
    } finally {
      vi.useRealTimers();
    }
  });

  /** A store whose answers wait for `delay()` ms, holding the lease in `holder`. */
  function slowStore(delay: () => number): LeaseStore & { holder: string | undefined } {
    const pause = (): Promise<void> => new Promise((r) => setTimeout(r, delay()));
    const store = {
      name: "orders",
      holder: undefined as string | undefined,
      acquire: async (h: string) => {
        await pause();
        if (store.holder !== undefined) return false;
        store.holder = h;
        return true;
      },
      renew: async (h: string) => {
        await pause();
        return store.holder === h;
      },
      release: async (h: string) => {
        if (store.holder === h) store.holder = undefined;
      },
      close: async () => undefined,
    };
    return store;
  }

  it("stop() during a renewal still releases the lease the store holds", async () => {
    mesh = createMesh();
    let ms = 0;
    const store = slowStore(() => ms);
    const election = createLeaseElection({ store, candidateId: "a", leaseMs: 3000, renewMs: 20 });
    mesh.defer(() => election.close());
    await election.start();
    expect(election.isLeader).toBe(true);
    ms = 50; // the next renewal is under way when stop() comes
    await new Promise((r) => setTimeout(r, 30));
    await election.stop();
    expect(election.isLeader).toBe(false);
    expect(store.holder).toBeUndefined();
  });

  it("a grant that came too late is renewed, not taken anew against its own key", async () => {
    mesh = createMesh();
    let ms = 160; // the first answer comes after the lease would have lapsed
    const store = slowStore(() => ms);
    let acquires = 0;
    const acquire = store.acquire;
    store.acquire = (h: string, leaseMs: number) => {
      acquires++;
      return acquire(h, leaseMs);
    };
    const election = createLeaseElection({ store, candidateId: "a", leaseMs: 150, renewMs: 30 });
    mesh.defer(() => election.close());
    await election.start();
    expect(election.isLeader).toBe(false);
    expect(store.holder).toBe("a");
    ms = 0;
    // The next round renews what the store holds for us (taking it anew would be refused
    // against our own key until it lapsed; this store never lets it lapse, so only a renewal
    // can elect).
    await waitFor(() => election.isLeader, 1000, "leadership from the renewed grant");
    expect(store.holder).toBe("a");
    expect(acquires).toBe(1);
  });

  it("checks its options at once", () => {
    mesh = createMesh();
    const store = createMemoryLeaseStore({ hub: mesh.hub, name: "orders" });
    expect(() => createLeaseElection({ store, candidateId: "" })).toThrow(TypeError);
    expect(() => createLeaseElection({ store: {} as never, candidateId: "a" })).toThrow(
      /LeaseStore/,
    );
    expect(() =>
      createLeaseElection({ store, candidateId: "a", leaseMs: 100, renewMs: 50 }),
    ).toThrow(/renewMs/);
    expect(() =>
      createService({
        transport: mesh.transport(),
        name: "orders",
        instance: {},
        election: { isLeader: true } as never,
      }),
    ).toThrow(/options.election/);
  });
});
