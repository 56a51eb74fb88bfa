import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createClient, createLeaseElection, createService } from "@nuropb/core";
import { newId, type Transport } from "@nuropb/protocol";
import {
  ALERT_TOPIC,
  createRunner,
  withLeaderWatch,
  type BacklogProbe,
  type Runner,
  type ServiceAlertEvent,
} from "@nuropb/runner";
import {
  configureMesh,
  createAmqpBacklogProbe,
  createAmqpTransport,
  teardownMesh,
} from "@nuropb/transport-amqp";
import { createMemoryHub, createMemoryLeaseStore, type MemoryHub } from "@nuropb/transport-memory";
import { createNatsBacklogProbe, createNatsTransport } from "@nuropb/transport-nats";
import { createRedisBacklogProbe, createRedisTransport } from "@nuropb/transport-redis";
import { rabbitEnv, uniqueVhost } from "../src/amqp-helpers.ts";
import { launchNats } from "../src/brokers/nats.ts";
import { launchRedis } from "../src/brokers/redis.ts";

// The leader's watch on each broker: commands pile up behind handlers that do not finish (prefetch
// 1), the backlog probe of the transport sees them, and only the leader alerts, once. The election
// itself is tested per transport elsewhere; here it runs on a memory hub, which both instances share.
const [nats, redis] = await Promise.all([launchNats(), launchRedis()]);
const vhost = uniqueVhost("alerts");
const amqpUrl = `${rabbitEnv().amqpUrl}/${vhost}`;

beforeAll(async () => {
  await configureMesh({ url: amqpUrl });
});
afterAll(async () => {
  await teardownMesh({ url: amqpUrl });
  await Promise.all([nats.stop(), redis.stop()]);
});

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

async function waitFor(predicate: () => boolean, what: string): Promise<void> {
  const start = Date.now();
  while (!predicate()) {
    if (Date.now() - start > 15_000) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

interface Broker {
  readonly name: string;
  readonly transport: (mesh: string) => Transport;
  readonly probe: (mesh: string) => BacklogProbe & { close(): Promise<void> };
}

const brokers: Broker[] = [
  {
    name: "RabbitMQ",
    transport: () => createAmqpTransport({ url: amqpUrl }),
    probe: () => createAmqpBacklogProbe({ url: amqpUrl }),
  },
  {
    name: "NATS",
    transport: (mesh) => createNatsTransport({ servers: nats.url, mesh }),
    probe: (mesh) => createNatsBacklogProbe({ servers: nats.url, mesh }),
  },
  {
    name: "Redis",
    transport: (mesh) => createRedisTransport({ url: redis.url, mesh }),
    probe: (mesh) => createRedisBacklogProbe({ url: redis.url, mesh }),
  },
];

describe.each(brokers)("leader alerts on $name", (broker) => {
  it("a backlog above the threshold: one alert, from the leader only", async () => {
    const mesh = `alerts${newId().slice(0, 10)}`;
    const service = `orders${newId().slice(0, 8)}`;
    const hub: MemoryHub = createMemoryHub();
    const heard: ServiceAlertEvent[] = [];
    const watcherTransport = broker.transport(mesh);
    const watcher = createService({
      transport: watcherTransport,
      name: `watcher${newId().slice(0, 8)}`,
      instance: {
        handleEvent: (e: { topic: string; event: unknown }) => {
          const event = e.event as ServiceAlertEvent;
          if (e.topic === ALERT_TOPIC && event.service === service) heard.push(event);
        },
      },
      eventBindings: [ALERT_TOPIC],
    });
    await watcher.connect();
    cleanups.push(
      () => watcherTransport.close(),
      () => watcher.disconnect(),
    );
    let release = (): void => {};
    const held = new Promise<void>((r) => (release = r));
    const probedBy: string[] = [];
    const runner = (): Runner => {
      const probe = broker.probe(mesh);
      const r = createRunner({
        transport: () => broker.transport(mesh),
        services: [
          withLeaderWatch(
            ({ transport, instanceId, elect }) =>
              createService({
                transport,
                instanceId,
                name: service,
                instance: { work: () => held },
                election: elect(service),
                prefetch: 1,
              }),
            {
              probe: (s) => {
                probedBy.push(r.services[0]?.instanceId ?? "");
                return probe(s);
              },
              queueDepth: 3,
              intervalMs: 50,
            },
          ),
        ],
        election: ({ service: name, candidateId }) =>
          createLeaseElection({
            store: createMemoryLeaseStore({ hub, name }),
            candidateId,
            leaseMs: 1000,
            renewMs: 200,
          }),
        status: false,
        drainTimeoutMs: 500,
      });
      cleanups.push(
        () => probe.close(),
        () => r.stop({ force: true }),
      );
      return r;
    };
    const leader = runner();
    await leader.start();
    await waitFor(() => leader.services[0]?.isLeader === true, "the leader");
    const follower = runner();
    await follower.start();
    const clientTransport = broker.transport(mesh);
    const client = createClient({ transport: clientTransport });
    await client.connect();
    cleanups.push(
      () => clientTransport.close(),
      () => client.disconnect(),
      () => Promise.resolve(release()),
    );
    for (let i = 0; i < 10; i++) await client.command(service, "work");

    await waitFor(() => heard.length > 0, "the alert");
    // Several more probes see the same backlog: still one alert.
    const probes = probedBy.length;
    await waitFor(() => probedBy.length >= probes + 5, "more probes");
    expect(heard).toHaveLength(1);
    expect(heard[0]).toMatchObject({
      type: "nuropb_service_alert",
      service,
      instance_id: leader.services[0]?.instanceId,
      kind: "queue-depth",
      threshold: 3,
    });
    expect(heard[0]?.value).toBeGreaterThan(3);
    expect(follower.services[0]?.isLeader).toBe(false);
    expect(probedBy.every((id) => id === leader.services[0]?.instanceId)).toBe(true);
  });
});
