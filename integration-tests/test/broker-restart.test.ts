import { afterAll, expect, it } from "vitest";
import {
  isNuropbError,
  newId,
  type InboundFrame,
  type Transport,
  type TransportEvent,
} from "@nuropb/protocol";
import { createNatsTransport } from "@nuropb/transport-nats";
import { createRedisTransport } from "@nuropb/transport-redis";
import { waitFor, watchEvents, withTimeout } from "@nuropb/transport-testkit";
import { launchNats } from "../src/brokers/nats.ts";
import { launchRedis } from "../src/brokers/redis.ts";

// The broker is killed (SIGKILL) and started again on the same port and store directory while
// requests and replies flow. Without help, the transports must come back, and every request
// must be accounted for: handled by the service, or answered at send() with a typed error.
// Redis keeps what it acknowledged across a kill only with an fsynced append-only file, so its
// server runs with `appendonly yes, appendfsync always` (see the package README).
const nats = await launchNats();
const redis = await launchRedis({ persistent: true });
afterAll(() => Promise.all([nats.stop(), redis.stop()]));

const BROKERS = [
  {
    name: "nats",
    server: nats,
    // Requests stored in JetStream: on core NATS (the default) a request written just before the
    // kill is lost and its caller times out (nats-core-requests.test.ts), which this test counts as
    // a request neither handled nor refused.
    make: (mesh: string): Transport =>
      createNatsTransport({
        servers: nats.url,
        mesh,
        reconnectWaitMs: 100,
        ackWaitMs: 2_000,
        requests: "jetstream",
      }),
  },
  {
    name: "redis",
    server: redis,
    make: (mesh: string): Transport =>
      createRedisTransport({ url: redis.url, mesh, claimIdleMs: 1_000 }),
  },
] as const;

const IN_FLIGHT = 32;
/** Requests accepted before the kill. */
const KILL_AFTER = 400;
/** Requests sent after the restarted server is ready, before the run ends. */
const AFTER_RESTART = 400;
/** Upper bound on requests, whatever happens. */
const MAX = 50_000;

it.each(BROKERS)(
  "$name: a server restart under load: transports recover, every request is handled or refused with a typed error",
  async ({ name, server, make: makeOn }) => {
    const mesh = `rs${newId().slice(0, 12)}`;
    const make = (): Transport => makeOn(mesh);
    const service = make();
    const client = make();
    await service.connect();
    await client.connect();
    const serviceEvents = watchEvents(service);
    const clientEvents = watchEvents(client);
    const handled = new Set<string>();
    const replies = new Set<string>();
    const address = `nuropb-client-${newId()}-rq`;
    await client.consumeResponses({ address }, (f: InboundFrame) => replies.add(f.correlationId));
    await service.consumeService(
      { service: "restart-svc", rpcBindings: [], eventBindings: [], prefetch: 16 },
      async (d) => {
        handled.add(d.correlationId);
        await d.ack();
        if (d.replyTo !== undefined) {
          await service
            .send(
              { kind: "reply", address: d.replyTo },
              {
                headers: { nuropb_type: "response" },
                body: d.body,
                correlationId: d.correlationId,
              },
            )
            .catch(() => undefined); // a lost reply is the client's timeout, not this test's subject
        }
      },
    );

    const accepted = new Set<string>();
    const refused = new Map<string, unknown>();
    let next = 0;
    let restart: Promise<void> | undefined;
    let restartedAt: number | undefined;
    const worker = async (): Promise<void> => {
      while (next < MAX && (restartedAt === undefined || next < restartedAt + AFTER_RESTART)) {
        const id = `m${next++}`;
        if (accepted.size >= KILL_AFTER && restart === undefined) {
          restart = server.process.restart().then(() => void (restartedAt = next));
        }
        try {
          await client.send(
            { kind: "rpc", service: "restart-svc" },
            {
              headers: { nuropb_type: "request", trace_id: null },
              body: new TextEncoder().encode(id),
              correlationId: id,
              replyTo: address,
              ttlMs: 120_000,
            },
          );
          accepted.add(id);
        } catch (err) {
          refused.set(id, err);
        }
      }
    };
    await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
    expect(restart, "the broker was restarted mid-run").toBeDefined();
    await restart;

    await clientEvents.waitForItem((e: TransportEvent) => e.type === "reconnected", 30_000);
    await serviceEvents.waitForItem((e: TransportEvent) => e.type === "reconnected", 30_000);
    await waitFor(
      () => [...accepted].every((id) => handled.has(id)),
      60_000,
      "every accepted request to be handled",
    );

    expect(accepted.size + refused.size).toBe(next);
    expect(next).toBeLessThan(MAX);
    for (const [id, err] of refused) expect(isNuropbError(err), `${id}: ${String(err)}`).toBe(true);
    for (const t of [service, client]) expect(t.state).toBe("open");
    expect(serviceEvents.items.map((e) => e.type)).toContain("disconnected");
    console.log(
      `${name} restart under load: ${accepted.size} accepted, ${refused.size} refused with typed errors, ` +
        `${handled.size} handled, ${replies.size} replies received`,
    );
    serviceEvents.stop();
    clientEvents.stop();
    await withTimeout(Promise.all([service.close(), client.close()]), 10_000, "close()");
  },
  120_000,
);
