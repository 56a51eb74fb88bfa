import {
  createClient,
  createService,
  type LeaderElection,
  type LeadershipEvent,
  type MeshClient,
  type MeshService,
} from "@nuropb/core";
import { createEventChannel, type Transport } from "@nuropb/protocol";
import { afterEach, describe, expect, it, vi } from "vitest";
import { createMesh, waitFor } from "./helpers.ts";

let mesh: ReturnType<typeof createMesh>;
afterEach(async () => {
  await mesh.cleanup();
});

/** An election the test decides: `lead()` and `depose()`. */
function fakeElection(): LeaderElection & { lead(): void; depose(): void } {
  const channel = createEventChannel<LeadershipEvent>();
  let leader = false;
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
    depose() {
      leader = false;
      channel.emit({ type: "deposed" });
    },
  };
}

/** A service whose `work` handlers wait until released; counts them. */
class Held {
  active = 0;
  most = 0;
  readonly handled: number[] = [];
  #waiting: (() => void)[] = [];
  /** Handlers finish at once from now on. */
  free = false;

  work({ n }: { n: number }): Promise<void> {
    this.active++;
    this.most = Math.max(this.most, this.active);
    return new Promise<void>((resolve) => {
      const done = (): void => {
        this.active--;
        this.handled.push(n);
        resolve();
      };
      if (this.free) setTimeout(done, 1);
      else this.#waiting.push(done);
    });
  }

  release(): void {
    const waiting = this.#waiting;
    this.#waiting = [];
    for (const done of waiting) done();
  }
}

interface Setup {
  readonly held: Held;
  readonly election: ReturnType<typeof fakeElection>;
  readonly transport: Transport;
  readonly service: MeshService;
  readonly client: MeshClient;
}

async function setup(prefetch: number, leaderPrefetch: number): Promise<Setup> {
  mesh = createMesh();
  const held = new Held();
  const election = fakeElection();
  const transport = mesh.transport();
  const service = createService({
    transport,
    name: "jobs",
    instance: held,
    prefetch,
    leaderPrefetch,
    election,
  });
  const client = createClient({ transport: mesh.transport() });
  mesh.defer(() => client.disconnect());
  mesh.defer(async () => {
    held.free = true;
    held.release();
    await service.disconnect();
  });
  await service.connect();
  await client.connect();
  return { held, election, transport, service, client };
}

const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Sends `count` commands numbered from `from`. */
async function send(client: MeshClient, from: number, count: number): Promise<void> {
  for (let i = from; i < from + count; i++) await client.command("jobs", "work", { n: i });
}

/** Sends `count` commands, checks that exactly `expected` run at once, then lets them all finish. */
async function concurrency(s: Setup, from: number, count: number): Promise<number> {
  s.held.most = 0;
  await send(s.client, from, count);
  await waitFor(() => s.held.active > 0, 2000, "a handler");
  await pause(40);
  const seen = s.held.active;
  while (s.held.handled.filter((n) => n >= from && n < from + count).length < count) {
    s.held.release();
    await pause(5);
  }
  return Math.max(seen, s.held.most);
}

describe("leaderPrefetch", () => {
  it("runs the leader with leaderPrefetch and a follower or a deposed leader with prefetch", async () => {
    const s = await setup(4, 1);
    expect(await concurrency(s, 0, 8)).toBe(4);
    s.election.lead();
    await pause(20);
    expect(await concurrency(s, 100, 6)).toBe(1);
    s.election.depose();
    await pause(20);
    expect(await concurrency(s, 200, 8)).toBe(4);
  });

  it("loses nothing while switching back and forth under load", async () => {
    const s = await setup(4, 1);
    s.held.free = true;
    const consume = vi.spyOn(s.transport, "consumeService");
    const sending = send(s.client, 0, 60);
    for (let i = 0; i < 6; i++) {
      if (i % 2 === 0) s.election.lead();
      else s.election.depose();
      await pause(3);
    }
    await sending;
    await waitFor(() => new Set(s.held.handled).size === 60, 5000, "every command handled");
    expect([...new Set(s.held.handled)].sort((a, b) => a - b)).toEqual(
      Array.from({ length: 60 }, (_, i) => i),
    );
    // The consumer really was switched (six times, or fewer when a change was undone in time).
    expect(consume.mock.calls.length).toBeGreaterThanOrEqual(2);
  });

  it("lets handlers running at a switch finish and waits for a reconnect to switch", async () => {
    const s = await setup(4, 1);
    // Two held handlers when the instance is elected: they finish, nothing runs twice.
    await send(s.client, 0, 2);
    await waitFor(() => s.held.active === 2, 2000, "two handlers");
    const consume = vi.spyOn(s.transport, "consumeService");
    s.election.lead();
    await pause(20);
    expect(consume).toHaveBeenCalledTimes(1);
    expect(consume.mock.calls[0]?.[0].prefetch).toBe(1);
    s.held.release();
    await waitFor(() => s.held.handled.length === 2, 2000, "the held handlers");
    await pause(20);
    expect(s.held.handled.sort()).toEqual([0, 1]);
    // Deposed while the connection is down: no consumer until it is back.
    const outage = mesh.hub.disconnect(s.transport, { downMs: 80 });
    await pause(10);
    s.election.depose();
    await pause(20);
    expect(consume).toHaveBeenCalledTimes(1);
    await outage;
    await waitFor(() => consume.mock.calls.length === 2, 2000, "the switch after reconnecting");
    expect(consume.mock.calls[1]?.[0].prefetch).toBe(4);
    expect(await concurrency(s, 100, 8)).toBe(4);
  });

  it("does not switch when a leader resigns because it disconnects", async () => {
    const s = await setup(4, 1);
    s.election.stop = () => Promise.resolve(s.election.depose());
    s.election.lead();
    await pause(20);
    const consume = vi.spyOn(s.transport, "consumeService");
    await s.service.disconnect();
    await pause(20);
    expect(consume).not.toHaveBeenCalled();
  });

  it("refuses a leaderPrefetch that is not a positive integer up to prefetch", () => {
    mesh = createMesh();
    const transport = mesh.transport();
    for (const leaderPrefetch of [0, -1, 1.5, 5, Number.NaN]) {
      expect(() =>
        createService({ transport, name: "jobs", instance: {}, prefetch: 4, leaderPrefetch }),
      ).toThrow(/options\.leaderPrefetch/);
      expect(() =>
        createService({ transport, name: "jobs", instance: {}, prefetch: 4, leaderPrefetch }),
      ).toThrow(TypeError);
    }
    expect(() =>
      createService({ transport, name: "jobs", instance: {}, prefetch: 0, leaderPrefetch: 500 }),
    ).not.toThrow();
  });
});
