import { createClient, createService } from "@nuropb/core";
import type { MeshParticipant, MeshService } from "@nuropb/core";
import type { Transport, TransportEvent } from "@nuropb/protocol";
import { createAmqpTransport } from "@nuropb/transport-amqp";
import { watchEvents, withTimeout } from "@nuropb/transport-testkit";
import type { EventWatcher } from "@nuropb/transport-testkit";
import { afterEach, beforeEach, expect, it } from "vitest";
import { createTestMesh, rabbitEnv } from "../src/amqp-helpers.ts";
import type { TestMesh } from "../src/amqp-helpers.ts";
import { startTcpProxy } from "../src/tcp-proxy.ts";
import type { TcpProxy } from "../src/tcp-proxy.ts";

// A half-open link: the proxy between the participants and RabbitMQ stops forwarding bytes on
// its connections without closing them, as a dead NAT entry or a frozen host would. Only the
// AMQP heartbeat can notice that. At the transport's default heartbeat both ends must notice,
// reconnect (through the same proxy, which forwards new connections) and serve again within a
// bound: at RabbitMQ's old 60 s default that took up to 180 s.

/** How long, from the freeze, everything may take: a bound, not a speed target. */
const RECOVERY_BOUND_MS = 45_000;

class Echo {
  echo(params: { n: number }): unknown {
    return params;
  }
}

let mesh: TestMesh;
let proxy: TcpProxy;
const transports: Transport[] = [];
const watchers: EventWatcher[] = [];
let service: MeshService<Echo> | undefined;
let client: MeshParticipant | undefined;

beforeEach(async () => {
  mesh = await createTestMesh("half-open");
  proxy = await startTcpProxy({ port: Number(new URL(rabbitEnv().amqpUrl).port) });
});

afterEach(async () => {
  for (const w of watchers.splice(0)) w.stop();
  // The proxy first: a connection still frozen (a failed run) then fails at once instead of
  // making every close below wait out its timeouts.
  await proxy.close();
  await client?.disconnect().catch(() => undefined);
  await service?.disconnect().catch(() => undefined);
  await Promise.allSettled(transports.splice(0).map((t) => t.close()));
  await mesh.teardown().catch(() => undefined);
});

/** A transport through the proxy with every option that matters here at its default. */
function throughProxy(role: string): Transport {
  const t = createAmqpTransport({
    url: `amqp://guest:guest@127.0.0.1:${proxy.port}/${encodeURIComponent(mesh.vhost)}`,
    connectionName: `half-open-${role}-${mesh.vhost}`,
  });
  transports.push(t);
  return t;
}

it(
  "a frozen link is noticed at the default heartbeat: service and client reconnect through the proxy and a request is answered within 45 s",
  async () => {
    const serviceTransport = throughProxy("service");
    const clientTransport = throughProxy("client");
    service = createService({
      transport: serviceTransport,
      name: "half-open",
      instance: new Echo(),
    });
    client = createClient({ transport: clientTransport });
    await service.connect();
    await client.connect();
    expect(await client.request("half-open", "echo", { n: 1 })).toEqual({ n: 1 });
    const serviceEvents = watchEvents(serviceTransport);
    const clientEvents = watchEvents(clientTransport);
    watchers.push(serviceEvents, clientEvents);
    expect(proxy.live).toBe(2);

    proxy.freeze();
    const frozenAt = Date.now();
    const left = (): number => Math.max(1, frozenAt + RECOVERY_BOUND_MS - Date.now());
    const waitFor = (w: EventWatcher, type: TransportEvent["type"], who: string) =>
      w
        .waitForItem((e) => e.type === type, left())
        .then(() => Date.now() - frozenAt)
        .catch((err: unknown) => {
          throw new Error(
            `the ${who} did not report '${type}' within ${RECOVERY_BOUND_MS} ms of the freeze ` +
              `(state ${who === "service" ? serviceTransport.state : clientTransport.state}): ${String(err)}`,
          );
        });
    const [serviceLost, clientLost] = await Promise.all([
      waitFor(serviceEvents, "disconnected", "service"),
      waitFor(clientEvents, "disconnected", "client"),
    ]);
    const [serviceBack, clientBack] = await Promise.all([
      waitFor(serviceEvents, "reconnected", "service"),
      waitFor(clientEvents, "reconnected", "client"),
    ]);
    expect(proxy.frozen).toBe(2);
    expect(proxy.live).toBe(2); // both came back through the proxy, on new connections
    const answer = await withTimeout(
      client.request("half-open", "echo", { n: 2 }, {}, { ttlMs: left() }),
      left(),
      "a request after the reconnect",
    );
    expect(answer).toEqual({ n: 2 });
    expect(serviceTransport.state).toBe("open");
    expect(clientTransport.state).toBe("open");
    console.log(
      `half-open link at the default heartbeat: disconnected after ${serviceLost} ms (service) / ` +
        `${clientLost} ms (client), reconnected after ${serviceBack} / ${clientBack} ms, ` +
        `answered after ${Date.now() - frozenAt} ms`,
    );
  },
  RECOVERY_BOUND_MS + 30_000,
);
