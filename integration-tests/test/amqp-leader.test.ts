import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createAmqpLeaderElection, type AmqpLeaderElection } from "@nuropb/transport-amqp";
import { startCluster } from "../../examples/runner/src/main.ts";
import { createTestMesh, getQueue, rabbitEnv, type TestMesh } from "../src/amqp-helpers.ts";
import { spawnTs } from "../src/cli-harness.ts";
import { waitFor } from "@nuropb/transport-testkit";
import { sampleLeaders } from "../src/leaders.ts";
import { startTcpProxy, type TcpProxy } from "../src/tcp-proxy.ts";

// Leader election on a single-active-consumer queue: three candidates, each reaching RabbitMQ
// through a TCP proxy of its own, so that one leader's connection can be cut at once.
const PROBE_MS = 100;
const LEASE_MS = 1_000;
const HEARTBEAT_SEC = 2;
let mesh: TestMesh;
const brokerPort = Number(new URL(rabbitEnv().amqpUrl).port);
const elections: AmqpLeaderElection[] = [];
const proxies: TcpProxy[] = [];

beforeAll(async () => {
  mesh = await createTestMesh("leader");
});
afterEach(async () => {
  await Promise.all(elections.splice(0).map((e) => e.close()));
  await Promise.all(proxies.splice(0).map((p) => p.close()));
});
afterAll(async () => {
  await mesh.teardown();
});

/** `n` candidates for `name`, each behind its own proxy (returned in the same order). */
async function candidates(n: number, name: string): Promise<[AmqpLeaderElection, TcpProxy][]> {
  const made: [AmqpLeaderElection, TcpProxy][] = [];
  for (let i = 0; i < n; i++) {
    const proxy = await startTcpProxy({ port: brokerPort });
    const url = new URL(mesh.url);
    url.port = String(proxy.port);
    const election = createAmqpLeaderElection({
      url: url.toString(),
      name,
      candidateId: `candidate-${String(i)}`,
      probeMs: PROBE_MS,
      leaseMs: LEASE_MS,
      heartbeatSec: HEARTBEAT_SEC,
    });
    proxies.push(proxy);
    elections.push(election);
    made.push([election, proxy]);
  }
  return made;
}

describe("leader election on a RabbitMQ single-active-consumer queue", () => {
  it("elects exactly one of three on a queue declared single-active-consumer", async () => {
    const all = (await candidates(3, "orders")).map(([e]) => e);
    for (const e of all) await e.start();
    await waitFor(() => all.some((e) => e.isLeader), LEASE_MS * 3, "a leader");
    const seen = sampleLeaders(all, 2);
    await new Promise((r) => setTimeout(r, LEASE_MS * 1.5));
    expect(seen()).toBe(1);
    // The first to consume is the active consumer, so the first to start leads.
    expect(all[0]?.isLeader).toBe(true);
    const queue = await getQueue(mesh.vhost, "nuropb-orders-leader");
    expect(queue?.arguments["x-single-active-consumer"]).toBe(true);
    expect(queue?.exclusive).toBe(false);
  });

  it("another leads within probeMs of the leader's connection being cut; never two", async () => {
    const made = await candidates(3, "billing");
    const all = made.map(([e]) => e);
    for (const e of all) await e.start();
    await waitFor(() => all.some((e) => e.isLeader), LEASE_MS * 3, "a leader");
    const [old, oldProxy] = made.find(([e]) => e.isLeader) as [AmqpLeaderElection, TcpProxy];
    const others = all.filter((e) => e !== old);
    const deposed: unknown[] = [];
    void (async () => {
      for await (const ev of old.events()) deposed.push(ev);
    })();
    const seen = sampleLeaders(all, 2);
    let steppedDownAt = 0;
    let electedAt = 0;
    const timer = setInterval(() => {
      if (steppedDownAt === 0 && !old.isLeader) steppedDownAt = Date.now();
      if (electedAt === 0 && others.some((e) => e.isLeader)) electedAt = Date.now();
    }, 1);
    const cutAt = Date.now();
    await oldProxy.close(); // every socket destroyed, no reconnect possible
    await waitFor(() => others.some((e) => e.isLeader), LEASE_MS * 3, "a new leader");
    clearInterval(timer);
    electedAt ||= Date.now();
    if (steppedDownAt === 0 && !old.isLeader) steppedDownAt = Date.now();
    expect(seen()).toBe(1);
    expect(old.isLeader).toBe(false);
    expect(steppedDownAt).toBeGreaterThan(0);
    expect(steppedDownAt).toBeLessThanOrEqual(electedAt);
    expect(deposed).toEqual([{ type: "deposed", error: expect.any(Error) as Error }]);
    // The documented bound, probeMs plus a round trip, plus slack for a loaded machine.
    expect(electedAt - cutAt).toBeLessThanOrEqual(PROBE_MS + 500);
    // The next in line holds on: one leader a lease later still.
    const still = sampleLeaders(others, 2);
    await new Promise((r) => setTimeout(r, LEASE_MS));
    expect(still()).toBe(1);
  });

  it("hands over within probeMs when the leader resigns, and the resigned one rejoins", async () => {
    const all = (await candidates(3, "stock")).map(([e]) => e);
    for (const e of all) await e.start();
    await waitFor(() => all.some((e) => e.isLeader), LEASE_MS * 3, "a leader");
    const old = all.find((e) => e.isLeader) as AmqpLeaderElection;
    const seen = sampleLeaders(all, 2);
    const stoppedAt = Date.now();
    await old.stop();
    expect(old.isLeader).toBe(false);
    await waitFor(() => all.some((e) => e.isLeader && e !== old), LEASE_MS, "another leader");
    expect(Date.now() - stoppedAt).toBeLessThanOrEqual(PROBE_MS + 500);
    await old.start(); // joins at the end of the line
    await new Promise((r) => setTimeout(r, PROBE_MS * 5));
    expect(old.isLeader).toBe(false);
    expect(seen()).toBe(1);
  });

  it("refuses bad options at once with a TypeError", () => {
    const url = mesh.url;
    expect(() => createAmqpLeaderElection({ url, name: "", candidateId: "a" })).toThrow(TypeError);
    expect(() => createAmqpLeaderElection({ url, name: "x", candidateId: "" })).toThrow(TypeError);
    expect(() =>
      createAmqpLeaderElection({ url, name: "x", candidateId: "a", probeMs: 600, leaseMs: 1000 }),
    ).toThrow(/probeMs/);
    expect(() =>
      createAmqpLeaderElection({
        url,
        name: "x",
        candidateId: "a",
        heartbeatSec: 1,
        leaseMs: 5000,
      }),
    ).toThrow(/heartbeatSec/);
    expect(() =>
      createAmqpLeaderElection({ url: "http://u:secret@h/", name: "x", candidateId: "a" }),
    ).toThrow(TypeError);
  });

  it("another leads within probeMs of the leader's process being killed", async () => {
    const child = spawnTs("integration-tests/test/fixtures/amqp-leader-candidate.ts", [], {
      BROKER_URL: mesh.url,
      LEASE_NAME: "payments",
      CANDIDATE: "child",
      PROBE_MS: String(PROBE_MS),
      LEASE_MS: String(LEASE_MS),
      HEARTBEAT_SEC: String(HEARTBEAT_SEC),
    });
    await child.stdoutContains("elected");
    const all = (await candidates(2, "payments")).map(([e]) => e);
    for (const e of all) await e.start();
    expect(all.some((e) => e.isLeader)).toBe(false);
    const seen = sampleLeaders(all, 2);
    const killedAt = Date.now();
    child.kill("SIGKILL");
    await child.done;
    await waitFor(() => all.some((e) => e.isLeader), LEASE_MS * 3, "a new leader");
    const tookMs = Date.now() - killedAt;
    expect(seen()).toBe(1);
    // The kernel closes the dead process's socket, so the broker activates the next at once.
    expect(tookMs).toBeLessThanOrEqual(PROBE_MS + 500);
  });

  it("a leader cut off silently steps down before the broker lets another lead", async () => {
    const made = await candidates(3, "shipping");
    const all = made.map(([e]) => e);
    for (const e of all) await e.start();
    await waitFor(() => all.some((e) => e.isLeader), LEASE_MS * 3, "a leader");
    const [old, oldProxy] = made.find(([e]) => e.isLeader) as [AmqpLeaderElection, TcpProxy];
    const others = all.filter((e) => e !== old);
    const seen = sampleLeaders(all, 2);
    let steppedDownAt = 0;
    let electedAt = 0;
    const timer = setInterval(() => {
      if (steppedDownAt === 0 && !old.isLeader) steppedDownAt = Date.now();
      if (electedAt === 0 && others.some((e) => e.isLeader)) electedAt = Date.now();
    }, 1);
    const frozenAt = Date.now();
    oldProxy.freeze(); // no byte either way, nothing closed: only heartbeats can tell
    await waitFor(() => others.some((e) => e.isLeader), HEARTBEAT_SEC * 1000 * 8, "a new leader");
    clearInterval(timer);
    electedAt ||= Date.now();
    expect(seen()).toBe(1);
    expect(steppedDownAt).toBeGreaterThan(0);
    // The leader lets go within its lease; the broker waits out its heartbeat timeout first.
    expect(steppedDownAt - frozenAt).toBeLessThanOrEqual(LEASE_MS + 100);
    expect(steppedDownAt).toBeLessThan(electedAt);
    console.info(
      `silent cut: stepped down after ${String(steppedDownAt - frozenAt)} ms, next leader after ${String(electedAt - frozenAt)} ms`,
    );
  });

  it("examples/runner on RabbitMQ: the leader killed, another takes over, the view follows", async () => {
    const cluster = await startCluster({ amqpUrl: mesh.url, heartbeatMs: 300 });
    try {
      await waitFor(() => cluster.viewedLeader() !== undefined, 10_000, "a leader in the view");
      const old = cluster.leader();
      expect(old).toBeDefined();
      expect(cluster.viewedLeader()).toBe(old?.instanceId());
      const oldId = old?.instanceId();
      await old?.kill();
      await waitFor(
        () => {
          const now = cluster.leader();
          return now !== undefined && now !== old && cluster.viewedLeader() === now.instanceId();
        },
        10_000,
        "another leader, in the view too",
      );
      expect(cluster.instances.filter((i) => i === cluster.leader())).toHaveLength(1);
      await waitFor(
        () =>
          cluster.watch
            .view()
            .services.every((s) => s.instances.every((i) => i.instanceId !== oldId)),
        10_000,
        "the killed one gone from the view",
      );
    } finally {
      await cluster.close();
    }
  });
});
