import { afterEach, describe, expect, inject, it } from "vitest";
import { Redis } from "ioredis";
import { connect, nanos } from "nats";
import { createClient, STATUS_TOPIC, watchServices, type StatusEvent } from "@nuropb/core";
import { newId, type Transport } from "@nuropb/protocol";
import { createNatsTransport } from "@nuropb/transport-nats";
import { createRedisTransport } from "@nuropb/transport-redis";
import { waitFor } from "@nuropb/transport-testkit";
import { startTcpProxy, type TcpProxy } from "../src/tcp-proxy.ts";

// A status watcher (a transient service queue) that crashes: its connection is cut (the proxy
// in front of the broker destroys the sockets and stops listening), so it never removes its
// queue. What it leaves must go by itself: on NATS no stream at all (streams never expire), only
// an events consumer with an inactivity threshold; on Redis keys that all expire, and a routing
// entry the next event drops.

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

/** `close()` of a transport whose broker is out of reach: bounded, whatever it does. */
const closeSoon = (t: Transport): Promise<unknown> =>
  Promise.race([t.close(), new Promise((r) => setTimeout(r, 3_000))]);

async function proxyTo(url: string): Promise<TcpProxy> {
  const proxy = await startTcpProxy({ port: Number(new URL(url).port) });
  cleanups.push(() => proxy.close());
  return proxy;
}

const report = (instance_id: string): StatusEvent => ({
  type: "nuropb_status",
  service: "orders",
  instance_id,
  state: "operational",
  leader: false,
  heartbeat_ms: 5_000,
  at: new Date().toISOString(),
});

/** A client on the broker itself (not behind the proxy) that publishes status reports. */
async function reporter(transport: Transport): Promise<(id: string) => Promise<void>> {
  const client = createClient({ transport });
  await client.connect();
  cleanups.push(() => client.disconnect());
  cleanups.push(() => transport.close());
  return (id) => client.publishEvent(STATUS_TOPIC, report(id));
}

describe("a crashed status watcher on nats", () => {
  it("leaves no stream, only an events consumer that expires", async () => {
    const mesh = `tc${newId().slice(0, 12)}`;
    const proxy = await proxyTo(inject("natsUrl"));
    const crashing = createNatsTransport({
      servers: `nats://127.0.0.1:${String(proxy.port)}`,
      mesh,
      reconnectWaitMs: 100,
    });
    cleanups.push(() => closeSoon(crashing));
    await crashing.connect();
    const watch = await watchServices(crashing);
    const send = await reporter(createNatsTransport({ servers: inject("natsUrl"), mesh }));
    await send("a");
    await waitFor(() => watch.view().services.length === 1, 5_000, "the report");

    await proxy.close(); // the crash: the watcher never removes its queue

    const nc = await connect({ servers: inject("natsUrl") });
    cleanups.push(() => nc.close());
    const jsm = await nc.jetstreamManager();
    const streams: string[] = [];
    const watcherConsumers: { name: string; inactiveThreshold: number | undefined }[] = [];
    for await (const s of jsm.streams.list()) {
      if (!s.config.name.includes(mesh)) continue;
      streams.push(s.config.name);
      for await (const c of jsm.consumers.list(s.config.name)) {
        if (c.name.includes("watch")) {
          watcherConsumers.push({
            name: c.name,
            inactiveThreshold: c.config.inactive_threshold,
          });
        }
      }
    }
    // The mesh's own streams (events, dead letters), none for the watcher.
    expect(streams.filter((n) => n.includes("-SQ-"))).toEqual([]);
    expect(watcherConsumers).toHaveLength(1);
    expect(watcherConsumers[0]?.inactiveThreshold).toBe(nanos(30_000));
  });
});

describe("a crashed status watcher on redis", () => {
  it("leaves keys that all expire, and the next event drops it from the routing", async () => {
    const mesh = `tc${newId().slice(0, 12)}`;
    const proxy = await proxyTo(inject("redisUrl"));
    const crashing = createRedisTransport({
      url: `redis://127.0.0.1:${String(proxy.port)}`,
      mesh,
    });
    cleanups.push(() => closeSoon(crashing));
    await crashing.connect();
    const watch = await watchServices(crashing);
    const send = await reporter(createRedisTransport({ url: inject("redisUrl"), mesh }));
    await send("a");
    await waitFor(() => watch.view().services.length === 1, 5_000, "the report");

    const redis = new Redis(inject("redisUrl"));
    cleanups.push(async () => redis.disconnect());
    const name = (await redis.smembers(`${mesh}:evs`)).find((s) => s.startsWith("nuropb-watch-"));
    expect(name).toBeDefined();
    const keys = [`${mesh}:sq:${String(name)}`, `${mesh}:evb:${String(name)}`];
    const own = `${mesh}:rpc:${String(name)}`;

    await proxy.close(); // the crash: the watcher never removes its queue

    // Every key of the watcher is set to expire, the rpc set of its name too.
    for (const key of [...keys, own]) {
      const ttl = await redis.pttl(key);
      expect({ key, expires: ttl > 0 && ttl <= 30_000 }).toEqual({ key, expires: true });
    }
    // What the expiry does, now rather than in 30 s.
    await redis.del(...keys, own);
    await send("b");
    expect(await redis.smembers(`${mesh}:evs`)).not.toContain(name);
    expect(await redis.exists(...keys, own)).toBe(0);
  });
});
