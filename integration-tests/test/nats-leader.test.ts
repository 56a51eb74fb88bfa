import { afterAll, afterEach, describe, expect, it } from "vitest";
import { connect } from "nats";
import { createLeaseElection, type LeaderElection } from "@nuropb/core";
import { newId } from "@nuropb/protocol";
import { createNatsLeaseStore } from "@nuropb/transport-nats";
import { launchNats } from "../src/brokers/nats.ts";
import { spawnTs } from "../src/cli-harness.ts";
import { waitFor } from "@nuropb/transport-testkit";
import { sampleLeaders } from "../src/leaders.ts";
import { startTcpProxy } from "../src/tcp-proxy.ts";

// Leader election on a JetStream key-value entry (create, update at revision, delete at revision;
// the bucket's TTL is the lease), between candidates in this process and one in a process of its
// own that is killed.
const server = await launchNats();
const LEASE_MS = 1_000;
const RENEW_MS = 200;
const elections: LeaderElection[] = [];

afterEach(async () => {
  await Promise.all(elections.splice(0).map((e) => e.close()));
});
afterAll(async () => {
  await server.stop();
});

function candidates(n: number, mesh: string, name = "orders"): LeaderElection[] {
  const made = Array.from({ length: n }, (_, i) =>
    createLeaseElection({
      store: createNatsLeaseStore({ servers: server.url, mesh, name, leaseMs: LEASE_MS }),
      candidateId: `in-process-${String(i)}`,
      leaseMs: LEASE_MS,
      renewMs: RENEW_MS,
    }),
  );
  elections.push(...made);
  return made;
}

describe("leader election on a NATS key-value lease", () => {
  it("elects exactly one of three, which holds the lease key", async () => {
    const mesh = `lead${newId().slice(0, 10)}`;
    const all = candidates(3, mesh);
    await Promise.all(all.map((e) => e.start()));
    await waitFor(() => all.some((e) => e.isLeader), LEASE_MS * 3, "a leader");
    const seen = sampleLeaders(all, 5);
    await new Promise((r) => setTimeout(r, LEASE_MS * 1.5));
    expect(seen()).toBe(1);
    const leader = all.find((e) => e.isLeader) as LeaderElection;
    const nc = await connect({ servers: server.url });
    try {
      const kv = await nc.jetstream().views.kv(`nuropb_${mesh}_leases_${String(LEASE_MS)}`, {
        bindOnly: true,
      });
      expect((await kv.get("orders"))?.string()).toBe(leader.candidateId);
    } finally {
      await nc.close();
    }
  });

  it("hands over within the renewal period when the leader resigns", async () => {
    const mesh = `lead${newId().slice(0, 10)}`;
    const all = candidates(3, mesh);
    await Promise.all(all.map((e) => e.start()));
    await waitFor(() => all.some((e) => e.isLeader), LEASE_MS * 3, "a leader");
    const old = all.find((e) => e.isLeader) as LeaderElection;
    const seen = sampleLeaders(all, 5);
    await old.stop();
    await waitFor(() => all.some((e) => e.isLeader && e !== old), LEASE_MS, "another leader");
    expect(seen()).toBe(1);
  });

  it("replaces a leader whose connection is killed; it steps down before another leads", async () => {
    const mesh = `lead${newId().slice(0, 10)}`;
    const proxy = await startTcpProxy({ port: server.port });
    const cutOff = createLeaseElection({
      store: createNatsLeaseStore({
        servers: `nats://127.0.0.1:${String(proxy.port)}`,
        mesh,
        name: "orders",
        leaseMs: LEASE_MS,
      }),
      candidateId: "behind-proxy",
      leaseMs: LEASE_MS,
      renewMs: RENEW_MS,
    });
    elections.push(cutOff);
    await cutOff.start();
    await waitFor(() => cutOff.isLeader, LEASE_MS * 3, "the first leader");
    const others = candidates(2, mesh);
    await Promise.all(others.map((e) => e.start()));
    const all = [cutOff, ...others];
    const seen = sampleLeaders(all, 5);
    let steppedDownAt = 0;
    let electedAt = 0;
    const timer = setInterval(() => {
      if (steppedDownAt === 0 && !cutOff.isLeader) steppedDownAt = Date.now();
      if (electedAt === 0 && others.some((e) => e.isLeader)) electedAt = Date.now();
    }, 2);
    const killedAt = Date.now();
    await proxy.close(); // every socket destroyed, no reconnect possible
    await waitFor(() => others.some((e) => e.isLeader), (LEASE_MS + RENEW_MS) * 3, "a new leader");
    clearInterval(timer);
    electedAt ||= Date.now();
    if (steppedDownAt === 0 && !cutOff.isLeader) steppedDownAt = Date.now();
    expect(seen()).toBe(1);
    expect(cutOff.isLeader).toBe(false);
    expect(steppedDownAt).toBeGreaterThan(0);
    expect(steppedDownAt).toBeLessThanOrEqual(electedAt);
    // The documented bound, leaseMs + renewMs, plus slack for a loaded machine.
    expect(electedAt - killedAt).toBeLessThanOrEqual(LEASE_MS + RENEW_MS + 500);
  });

  it("replaces a leader whose process is killed within lease + renewal", async () => {
    const mesh = `lead${newId().slice(0, 10)}`;
    const child = spawnTs("integration-tests/test/fixtures/leader-candidate.ts", ["nats"], {
      BROKER_URL: server.url,
      MESH: mesh,
      LEASE_NAME: "orders",
      CANDIDATE: "child",
      LEASE_MS: String(LEASE_MS),
      RENEW_MS: String(RENEW_MS),
    });
    await child.stdoutContains("elected");
    const all = candidates(2, mesh);
    await Promise.all(all.map((e) => e.start()));
    expect(all.some((e) => e.isLeader)).toBe(false);
    const seen = sampleLeaders(all, 5);
    const killedAt = Date.now();
    child.kill("SIGKILL");
    await child.done;
    await waitFor(() => all.some((e) => e.isLeader), (LEASE_MS + RENEW_MS) * 3, "a new leader");
    const tookMs = Date.now() - killedAt;
    expect(seen()).toBe(1);
    // The documented bound, leaseMs + renewMs, plus slack for a loaded machine.
    expect(tookMs).toBeLessThanOrEqual(LEASE_MS + RENEW_MS + 500);
  });
});
