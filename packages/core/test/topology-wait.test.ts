import {
  createLeaseElection,
  createService,
  type LeaderElection,
  type LeadershipEvent,
  type MeshService,
} from "@nuropb/core";
import { NuropbConnectionClosedError, createEventChannel, type Logger } from "@nuropb/protocol";
import { createMemoryLeaseStore } from "@nuropb/transport-memory";
import { afterEach, describe, expect, it } from "vitest";
import { createMesh, waitFor } from "./helpers.ts";

let mesh = createMesh();
afterEach(async () => {
  await mesh.cleanup();
  mesh = createMesh();
});

const QUEUE = "nuropb-stock-sq";

/** An election the test decides: `lead()` makes it the leader. */
function fakeElection(leading = false): LeaderElection & { lead(): void } {
  const channel = createEventChannel<LeadershipEvent>();
  let leader = leading;
  return {
    candidateId: "fake",
    get isLeader() {
      return leader;
    },
    start: () => Promise.resolve(),
    stop: () => Promise.resolve(),
    close: () => Promise.resolve(channel.end()),
    events: () => channel.iterate(),
    [Symbol.asyncDispose]: () => Promise.resolve(),
    lead() {
      leader = true;
      channel.emit({ type: "elected" });
    },
  };
}

/** A logger that keeps its warnings. */
function warnings(): Logger & { readonly warned: string[] } {
  const warned: string[] = [];
  const logger: Logger & { warned: string[] } = {
    warned,
    debug: () => undefined,
    info: () => undefined,
    warn: (msg) => void warned.push(msg),
    error: () => undefined,
    child: () => logger,
  };
  return logger;
}

class Stock {
  count(): number {
    return 12;
  }
}

function service(election: LeaderElection, topologyWaitMs = 5_000, logger?: Logger): MeshService {
  const s = createService({
    transport: mesh.transport(),
    name: "stock",
    instance: new Stock(),
    election,
    topologyWaitMs,
    ...(logger !== undefined ? { logger } : {}),
  });
  mesh.defer(() => s.disconnect());
  return s;
}

describe("topologyWaitMs", () => {
  it("a follower consumes only once the leader has declared the topology", async () => {
    const follower = service(fakeElection(false));
    let followerUp = false;
    const connecting = follower.connect().then(() => (followerUp = true));
    // The follower waits: no service queue yet, nothing consumed.
    await new Promise((r) => setTimeout(r, 300));
    expect(followerUp).toBe(false);
    expect(mesh.hub.queueNames()).not.toContain(QUEUE);

    const leader = service(fakeElection(true));
    await leader.connect();
    expect(mesh.hub.queueNames()).toContain(QUEUE);
    await connecting;
    expect(mesh.hub.consumerCount(QUEUE)).toBe(2);
    await expect(follower.request("stock", "count")).resolves.toBe(12);
  });

  it("past the bound the follower logs a warning and declares the topology itself", async () => {
    const logger = warnings();
    const follower = service(fakeElection(false), 250, logger);
    const started = Date.now();
    await follower.connect();
    expect(Date.now() - started).toBeGreaterThanOrEqual(240);
    expect(logger.warned.some((m) => m.includes("did not answer in time"))).toBe(true);
    expect(mesh.hub.consumerCount(QUEUE)).toBe(1);
  });

  it("a follower that becomes the leader while waiting stops waiting", async () => {
    const election = fakeElection(false);
    const follower = service(election, 10_000);
    const connecting = follower.connect();
    await new Promise((r) => setTimeout(r, 150));
    election.lead();
    await connecting;
    expect(follower.isLeader).toBe(true);
    expect(mesh.hub.consumerCount(QUEUE)).toBe(1);
  });

  it("disconnect() during the wait ends it: connect() rejects, nothing is consumed", async () => {
    const follower = service(fakeElection(false), 10_000);
    const connecting = follower.connect();
    await new Promise((r) => setTimeout(r, 150));
    const started = Date.now();
    await follower.disconnect();
    await expect(connecting).rejects.toThrow(NuropbConnectionClosedError);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(mesh.hub.queueNames()).not.toContain(QUEUE);
  });

  it("with lease elections: the first leads and declares, the others wait for it", async () => {
    const services = ["a", "b", "c"].map((id) => {
      const transport = mesh.transport();
      const s = createService({
        transport,
        name: "stock",
        instance: new Stock(),
        instanceId: id,
        topologyWaitMs: 5_000,
        election: createLeaseElection({
          store: createMemoryLeaseStore({ hub: mesh.hub, name: "stock", transport }),
          candidateId: id,
          leaseMs: 1_000,
          renewMs: 100,
        }),
      });
      mesh.defer(() => s.disconnect());
      return s;
    });
    await Promise.all(services.map((s) => s.connect()));
    await waitFor(() => services.filter((s) => s.isLeader).length === 1, 2_000, "one leader");
    expect(mesh.hub.consumerCount(QUEUE)).toBe(3);
  });

  it("probes of a queue nobody consumes expire nowhere: no dead letter, nothing left queued", async () => {
    // A previous run left the durable queue behind; no instance consumes it now.
    const earlier = service(fakeElection(true));
    await earlier.connect();
    await earlier.disconnect();
    expect(mesh.hub.queueNames()).toContain(QUEUE);
    expect(mesh.hub.consumerCount(QUEUE)).toBe(0);

    const follower = service(fakeElection(false), 3_500);
    await follower.connect();
    expect(mesh.hub.consumerCount(QUEUE)).toBe(1);
    // The probe never expires: it is consumed (answered) by the instance that now consumes.
    await waitFor(
      () => mesh.hub.queueDepth(QUEUE) === 0 && mesh.hub.unsettledCount(QUEUE) === 0,
      2_000,
      "the probe consumed",
    );
    await new Promise((r) => setTimeout(r, 1_200));
    expect(mesh.hub.deadLetters()).toEqual([]);
    await expect(follower.request("stock", "count")).resolves.toBe(12);
  });

  it("a follower waiting for the leader leaves no dead letter behind", async () => {
    const follower = service(fakeElection(false), 10_000);
    const connecting = follower.connect();
    await new Promise((r) => setTimeout(r, 1_300));
    const leader = service(fakeElection(true));
    await leader.connect();
    await connecting;
    await new Promise((r) => setTimeout(r, 1_200));
    expect(mesh.hub.deadLetters()).toEqual([]);
    expect(mesh.hub.queueDepth(QUEUE)).toBe(0);
  });

  it("refuses a bad bound, and a bound without an election", () => {
    const transport = mesh.transport();
    const base = { transport, name: "stock", instance: new Stock() };
    expect(() => createService({ ...base, topologyWaitMs: 1_000 })).toThrow(/needs an election/);
    expect(() => createService({ ...base, election: fakeElection(), topologyWaitMs: -1 })).toThrow(
      TypeError,
    );
  });
});
