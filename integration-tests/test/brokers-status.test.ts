import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { Redis } from "ioredis";
import { connect } from "nats";
import {
  createClient,
  createLeaseElection,
  createService,
  type LeaderElection,
  type LeadershipEvent,
  type ServicesView,
} from "@nuropb/core";
import { createEventChannel, newId, type Transport } from "@nuropb/protocol";
import { createRunner, type ElectionContext, type Runner } from "@nuropb/runner";
import { createAmqpLeaderElection, createAmqpTransport } from "@nuropb/transport-amqp";
import { createNatsLeaseStore, createNatsTransport } from "@nuropb/transport-nats";
import { createRedisLeaseStore, createRedisTransport } from "@nuropb/transport-redis";
import { describeTransientQueueConformance, waitFor } from "@nuropb/transport-testkit";
import { createTestMesh, mgmtGet, type TestMesh } from "../src/amqp-helpers.ts";

// Status on the three brokers: transient queues leave nothing behind (the testkit's scenarios),
// and client.watchServices() follows runner instances, a killed leader and its successor, then
// leaves nothing of its own queue on the broker. And the leader's first duty: with
// topologyWaitMs, a follower consumes only once the leader has declared the service's topology.

const natsMesh = `ck${newId().slice(0, 12)}`;
const redisMesh = `ck${newId().slice(0, 12)}`;
let amqp: TestMesh;
beforeAll(async () => {
  amqp = await createTestMesh("status");
});
afterAll(async () => {
  await amqp.teardown();
});

describeTransientQueueConformance({
  name: "nats",
  create: () => createNatsTransport({ servers: inject("natsUrl"), mesh: natsMesh }),
});
describeTransientQueueConformance({
  name: "redis",
  create: () => createRedisTransport({ url: inject("redisUrl"), mesh: redisMesh }),
});
describe("amqp", () => {
  // The vhost is made in beforeAll: the transports are made lazily, once it exists.
  describeTransientQueueConformance({
    name: "amqp",
    create: () => createAmqpTransport({ url: amqp.url }),
  });
});

interface Broker {
  readonly name: string;
  transport(): Transport;
  election(context: ElectionContext): LeaderElection;
  /** Names of what the broker holds for `service` (queues, streams, keys). */
  leftovers(service: string): Promise<string[]>;
}

const HEARTBEAT_MS = 200;

const brokers: Broker[] = [
  {
    name: "nats",
    transport: () => createNatsTransport({ servers: inject("natsUrl"), mesh: natsMesh }),
    election: ({ service, candidateId }) =>
      createLeaseElection({
        store: createNatsLeaseStore({
          servers: inject("natsUrl"),
          mesh: natsMesh,
          name: service,
          leaseMs: 1_000,
        }),
        candidateId,
        leaseMs: 1_000,
        renewMs: 200,
      }),
    leftovers: async (service) => {
      // Stream and consumer names spell `-` as `~2d~`.
      const encoded = service.replace(/-/g, "~2d~");
      const nc = await connect({ servers: inject("natsUrl") });
      try {
        const jsm = await nc.jetstreamManager();
        const names: string[] = [];
        for await (const s of jsm.streams.list()) {
          if (s.config.name.includes(encoded)) names.push(s.config.name);
          for await (const c of jsm.consumers.list(s.config.name)) {
            if (c.name.includes(encoded)) names.push(c.name);
          }
        }
        return names;
      } finally {
        await nc.close();
      }
    },
  },
  {
    name: "redis",
    transport: () => createRedisTransport({ url: inject("redisUrl"), mesh: redisMesh }),
    election: ({ service, candidateId }) =>
      createLeaseElection({
        store: createRedisLeaseStore({ url: inject("redisUrl"), mesh: redisMesh, name: service }),
        candidateId,
        leaseMs: 1_000,
        renewMs: 200,
      }),
    leftovers: async (service) => {
      const redis = new Redis(inject("redisUrl"));
      try {
        const keys = await redis.keys(`${redisMesh}:*${service}*`);
        const members = [
          ...(await redis.smembers(`${redisMesh}:evs`)),
          ...(await redis.smembers(`${redisMesh}:rpc:${service}`)),
        ].filter((m) => m.includes(service));
        return [...keys, ...members];
      } finally {
        redis.disconnect();
      }
    },
  },
  {
    name: "amqp",
    transport: () => createAmqpTransport({ url: amqp.url }),
    election: ({ service, candidateId }) =>
      createAmqpLeaderElection({
        url: amqp.url,
        name: service,
        candidateId,
        probeMs: 200,
        leaseMs: 2_000,
        heartbeatSec: 2,
      }),
    leftovers: async (service) =>
      ((await mgmtGet<{ name: string }[]>(`/queues/${encodeURIComponent(amqp.vhost)}`)) ?? [])
        .map((q) => q.name)
        .filter((n) => n.includes(service)),
  },
];

for (const broker of brokers) {
  describe(`client.watchServices on ${broker.name}`, () => {
    it("follows the instances, a killed leader and the new one; leaves nothing", async () => {
      const service = `inv${newId().slice(0, 8)}`;
      const watcherTransport = broker.transport();
      const watcher = createClient({ transport: watcherTransport });
      await watcher.connect();
      const watch = await watcher.watchServices({ pruneEveryMs: 50 });
      const runners: Runner[] = [];
      const transports = new Map<Runner, Transport>();
      const elections = new Map<Runner, LeaderElection>();
      try {
        for (let i = 0; i < 2; i++) {
          const runner: Runner = createRunner({
            transport: () => {
              const t = broker.transport();
              transports.set(runner, t);
              return t;
            },
            election: (context) => {
              const made = broker.election(context);
              elections.set(runner, made);
              return made;
            },
            services: [
              ({ transport, instanceId, elect }) =>
                createService({
                  transport,
                  instanceId,
                  name: service,
                  instance: {},
                  election: elect(service),
                }),
            ],
            status: { heartbeatMs: HEARTBEAT_MS },
            restart: false,
            drainTimeoutMs: 2_000,
          });
          runners.push(runner);
          await runner.start();
        }
        const view = (): ServicesView["services"][number] | undefined =>
          watch.view().services.find((s) => s.name === service);
        await waitFor(
          () => view()?.instances.length === 2 && view()?.leader !== undefined,
          15_000,
          "two instances and a leader in the view",
        );
        const leader = runners.find((r) => elections.get(r)?.isLeader === true);
        if (leader === undefined) throw new Error("no leader elected");
        const other = runners.find((r) => r !== leader) as Runner;
        const leaderId = leader.services[0]?.instanceId;
        expect(view()?.leader).toBe(leaderId);

        // Killed: its transport closes under it, it says nothing more.
        await transports.get(leader)?.close();
        await leader.done();
        await waitFor(
          () => view()?.instances.length === 1 && view()?.leader === other.services[0]?.instanceId,
          15_000,
          "the killed leader gone and the other leading in the view",
        );
      } finally {
        await Promise.all(runners.map((r) => r.stop()));
        await watch.close();
        await watcher.disconnect();
        await watcherTransport.close();
      }
      // Only the service's own (durable) queue is left: nothing of the watcher's.
      const left = await broker.leftovers("nuropb-watch-");
      expect(left).toEqual([]);
    }, 60_000);
  });
}

/** An election that says what it was told: a fixed leader or a fixed follower. */
function fixedElection(leading: boolean): LeaderElection {
  const channel = createEventChannel<LeadershipEvent>();
  return {
    candidateId: leading ? "leader" : "follower",
    isLeader: leading,
    start: () => Promise.resolve(),
    stop: () => Promise.resolve(),
    close: () => Promise.resolve(channel.end()),
    events: () => channel.iterate(),
    [Symbol.asyncDispose]: () => Promise.resolve(),
  };
}

for (const broker of brokers) {
  describe(`the leader declares the topology first on ${broker.name}`, () => {
    it("a follower waits for it before it consumes", async () => {
      const service = `top${newId().slice(0, 8)}`;
      const make = (leading: boolean) => {
        const transport = broker.transport();
        const s = createService({
          transport,
          name: service,
          instance: { ping: () => "pong" },
          election: fixedElection(leading),
          topologyWaitMs: 20_000,
        });
        return { s, transport };
      };
      const follower = make(false);
      const leader = make(true);
      try {
        let followerUp = false;
        const connecting = follower.s.connect().then(() => (followerUp = true));
        await new Promise((r) => setTimeout(r, 1_000));
        expect(followerUp).toBe(false);
        // Nothing of the service on the broker while only the follower is there (but its own
        // response queue, `nuropb-{service}-{instance}-rq`).
        expect((await broker.leftovers(service)).filter((n) => !n.includes("-rq"))).toEqual([]);
        await leader.s.connect();
        await connecting;
        expect(await follower.s.request(service, "ping")).toBe("pong");
      } finally {
        for (const { s, transport } of [follower, leader]) {
          await s.disconnect();
          await transport.close();
        }
      }
    }, 60_000);
  });
}
