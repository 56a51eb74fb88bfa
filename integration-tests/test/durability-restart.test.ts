import { createClient, createService } from "@nuropb/core";
import type { MeshParticipant, MeshService } from "@nuropb/core";
import { newId } from "@nuropb/protocol";
import type { Transport } from "@nuropb/protocol";
import { configureMesh, createAmqpTransport } from "@nuropb/transport-amqp";
import { createNatsTransport } from "@nuropb/transport-nats";
import { createRedisTransport } from "@nuropb/transport-redis";
import { waitFor, withTimeout } from "@nuropb/transport-testkit";
import { afterAll, afterEach, expect, it } from "vitest";
import { launchNats } from "../src/brokers/nats.ts";
import { launchRabbitMq } from "../src/brokers/rabbitmq.ts";
import { launchRedis } from "../src/brokers/redis.ts";

// What command() and publishEvent() resolved for must survive a broker restart. N commands and
// N events (published to a topic a service queue is bound to) wait with no consumer; the broker
// is stopped and started again on the same port and data directory; then a service connects and
// every one of them is delivered. This file owns its brokers (a private RabbitMQ node; NATS with
// its JetStream store directory; Redis with an append-only file), so restarting them disturbs
// no other test file.

const N = 300;
/** Calls in flight while filling the queues. */
const IN_FLIGHT = 32;
/** Long enough that nothing expires while the broker restarts. */
const TTL_MS = 600_000;
const DELIVERY_BOUND_MS = 60_000;

// Launched together; if one cannot start, the others are stopped before the file fails.
const [r0, r1, r2] = await Promise.allSettled([
  launchRabbitMq(),
  launchNats(),
  launchRedis({ persistent: true }),
]);
if (r0.status === "rejected" || r1.status === "rejected" || r2.status === "rejected") {
  await Promise.allSettled(
    [r0, r1, r2].map((r) => (r.status === "fulfilled" ? r.value.stop() : 0)),
  );
  throw new AggregateError(
    [r0, r1, r2].flatMap((r) => (r.status === "rejected" ? [r.reason as unknown] : [])),
    "a broker for the durability tests could not start",
  );
}
const [rabbit, nats, redis] = [r0.value, r1.value, r2.value];
afterAll(() => Promise.all([rabbit.stop(), nats.stop(), redis.stop()]));

interface Broker {
  readonly name: string;
  /** Prepares a fresh mesh and returns a factory of transports on it. */
  mesh(): Promise<() => Transport>;
  /** Stops the broker and starts it again with its data kept. */
  restart(): Promise<void>;
}

const BROKERS: readonly Broker[] = [
  {
    name: "rabbitmq",
    async mesh() {
      const url = `${rabbit.amqpUrl}/dur-${newId().slice(0, 12)}`;
      await configureMesh({ url });
      return () =>
        createAmqpTransport({ url, reconnect: { initialDelayMs: 100, maxDelayMs: 1_000 } });
    },
    restart: () => rabbit.restart(),
  },
  {
    name: "nats",
    async mesh() {
      const mesh = `dur${newId().slice(0, 12)}`;
      return () => createNatsTransport({ servers: nats.url, mesh, reconnectWaitMs: 100 });
    },
    restart: () => nats.process.restart("SIGTERM"),
  },
  {
    name: "redis",
    async mesh() {
      const mesh = `dur${newId().slice(0, 12)}`;
      return () => createRedisTransport({ url: redis.url, mesh });
    },
    restart: () => redis.process.restart("SIGTERM"),
  },
];

/** The service: counts the commands and events it receives, by their index. */
class Recorder {
  readonly #commands: number[];
  readonly #events: number[];
  constructor(commands: number[], events: number[]) {
    this.#commands = commands;
    this.#events = events;
  }
  record(params: { i: number }): void {
    this.#commands.push(params.i);
  }
  handleEvent(e: { topic: string; event: unknown }): void {
    this.#events.push((e.event as { i: number }).i);
  }
}

const SERVICE = "durable-svc";
const EVENT_BINDINGS = ["dur.#"];
const transports: Transport[] = [];
const participants: MeshParticipant[] = [];
afterEach(async () => {
  await Promise.allSettled(participants.splice(0).map((p) => p.disconnect()));
  await Promise.allSettled(transports.splice(0).map((t) => t.close()));
});

function service(make: () => Transport, commands: number[], events: number[]): MeshService {
  const transport = make();
  transports.push(transport);
  const s = createService({
    transport,
    name: SERVICE,
    instance: new Recorder(commands, events),
    eventBindings: EVENT_BINDINGS,
  });
  participants.push(s);
  return s;
}

/** Runs `call(i)` for i in [0, N) with at most IN_FLIGHT at once. */
async function fill(call: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < N) await call(next++);
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
}

/** The indices in [0, N) that `got` lacks. */
function missing(got: readonly number[]): number[] {
  const seen = new Set(got);
  return Array.from({ length: N }, (_, i) => i).filter((i) => !seen.has(i));
}

it.each(BROKERS)(
  "$name: N confirmed commands and N events waiting with no consumer survive a broker restart",
  async (broker) => {
    const make = await broker.mesh();

    // The service queue and its bindings exist; nobody consumes it.
    const first = service(make, [], []);
    await first.connect();
    await first.disconnect();

    const transport = make();
    transports.push(transport);
    const client = createClient({ transport });
    participants.push(client);
    await client.connect();
    await fill((i) => client.command(SERVICE, "record", { i }, {}, { ttlMs: TTL_MS }));
    await fill((i) => client.publishEvent("dur.tick", { i }));
    await client.disconnect();
    await transport.close();

    await broker.restart();

    const commands: number[] = [];
    const events: number[] = [];
    const second = service(make, commands, events);
    await withTimeout(second.connect(), 30_000, "the service to connect after the restart");
    await waitFor(
      () => commands.length >= N && events.length >= N,
      DELIVERY_BOUND_MS,
      `${N} commands and ${N} events after the restart`,
    ).catch((err: unknown) => {
      throw new Error(
        `${broker.name}: after the restart ${commands.length} of ${N} commands and ` +
          `${events.length} of ${N} events arrived (${String(err)})`,
      );
    });
    expect(missing(commands), "commands lost").toEqual([]);
    expect(missing(events), "events lost").toEqual([]);
    console.log(
      `${broker.name}: ${N} commands and ${N} events confirmed before the restart; ` +
        `${commands.length} commands and ${events.length} events delivered after it`,
    );
  },
  180_000,
);
