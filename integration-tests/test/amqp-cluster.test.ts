import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { createClient, createService } from "@nuropb/core";
import type { MeshParticipant, MeshService } from "@nuropb/core";
import { NuropbTransportError, isNuropbError, serviceQueueName } from "@nuropb/protocol";
import type { Delivery, Transport } from "@nuropb/protocol";
import { configureMesh, createAmqpTransport, teardownMesh } from "@nuropb/transport-amqp";
import type { AmqpTransportOptions } from "@nuropb/transport-amqp";
import {
  delay,
  testFrame,
  testServiceSpec,
  waitFor,
  watchEvents,
  withTimeout,
} from "@nuropb/transport-testkit";
import amqp from "amqplib";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { launchRabbitCluster } from "../src/brokers/rabbitmq-cluster.ts";
import type { RabbitCluster } from "../src/brokers/rabbitmq-cluster.ts";

// Issue #19 on a real 3-node RabbitMQ cluster that this file starts (about 30 s; the other
// integration files do not pay for it): failover when the node a client and a service are
// connected to dies, quorum service queues, consumer cancel, poison messages, and conflicting
// declarations.

const T = 30_000;
const TTL_MS = 4_000;
/** A request that has not settled this long after its ttl counts as hung. */
const HANG_MS = TTL_MS + 10_000;
/**
 * Slack past a request's ttl for it to settle, measured from send to settle: timers and the event
 * loop on a loaded machine (not the broker) are late by this much at most.
 */
const SETTLE_MARGIN_MS = 2_000;

let cluster: RabbitCluster;
const transports: Transport[] = [];
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  cluster = await launchRabbitCluster(3);
}, 300_000);

afterAll(async () => {
  await cluster?.stop();
}, 60_000);

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
  await Promise.allSettled(transports.splice(0).map((t) => t.close()));
  // A test that failed half-way must not leave the next one a cluster without its majority.
  for (const n of cluster.nodes) if (!n.running) await n.start();
}, 180_000);

/** The base URL of a running node. */
function liveNode(): string {
  const n = cluster.nodes.find((x) => x.running);
  if (n === undefined) throw new Error("no cluster node is running");
  return n.amqpUrl;
}

/** A fresh vhost with the mesh's exchanges; `url(order)` lists the nodes in that order. */
async function createClusterMesh(prefix: string): Promise<{
  vhost: string;
  url: (order?: readonly number[]) => string;
}> {
  const vhost = `${prefix}-${randomBytes(4).toString("hex")}`;
  await configureMesh({ url: `${liveNode()}/${vhost}` });
  cleanups.push(() => teardownMesh({ url: `${liveNode()}/${vhost}` }));
  const url = (order: readonly number[] = [0, 1, 2]): string =>
    `amqp://guest:guest@${order.map((i) => `127.0.0.1:${cluster.nodes[i]?.amqpPort}`).join(",")}/${vhost}`;
  return { vhost, url };
}

function transport(options: AmqpTransportOptions): Transport {
  const t = createAmqpTransport({
    reconnect: { initialDelayMs: 100, maxDelayMs: 1_000 },
    failover: "in-order",
    ...options,
  });
  transports.push(t);
  return t;
}

/** `rabbitmqctl list_queues` of a vhost on a running node: name → type. */
async function queueTypes(vhost: string): Promise<Map<string, string>> {
  const i = cluster.nodes.findIndex((n) => n.running);
  const out = await cluster.ctl(i, [
    "list_queues",
    "-p",
    vhost,
    "--quiet",
    "--no-table-headers",
    "name",
    "type",
  ]);
  const rows = out
    .split("\n")
    .map((line) => line.trim().split(/\s+/))
    .filter((cols) => cols.length === 2);
  return new Map(rows.map(([name, type]) => [name as string, type as string]));
}

/** Reads every message waiting in `queue` (basic.get until empty) on a running node. */
async function drain(vhost: string, queue: string): Promise<amqp.GetMessage[]> {
  const conn = await amqp.connect(`${liveNode()}/${encodeURIComponent(vhost)}`);
  try {
    const ch = await conn.createChannel();
    const got: amqp.GetMessage[] = [];
    for (;;) {
      const m = await ch.get(queue, { noAck: true });
      if (m === false) return got;
      got.push(m);
    }
  } finally {
    await conn.close().catch(() => undefined);
  }
}

class Jobs {
  readonly commands = new Set<number>();
  readonly events = new Set<number>();
  work(params: { n: number }): void {
    this.commands.add(params.n);
  }
  echo(params: { w: number; n: number }): unknown {
    return params;
  }
  handleEvent(e: { topic: string; event: unknown }): void {
    const n = (e.event as { n?: unknown } | null)?.n;
    if (typeof n === "number") this.events.add(n);
  }
}

type Outcome =
  | { readonly kind: "ok" }
  | { readonly kind: "error"; readonly name: string }
  | { readonly kind: "hung" }
  | { readonly kind: "wrong" }
  | { readonly kind: "late"; readonly ms: number; readonly settled: string };

/** The local addresses listening on TCP `port` (from /proc/net/tcp and tcp6), e.g. "127.0.0.1". */
function listeners(port: number): string[] {
  const found: string[] = [];
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = readFileSync(file, "utf8");
    } catch {
      continue; // no IPv6 on this machine
    }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      const [addr, hexPort] = (cols[1] ?? "").split(":");
      if (cols[3] !== "0A" || addr === undefined || Number.parseInt(hexPort ?? "", 16) !== port)
        continue; // not a listening socket on that port
      found.push(addr.length === 8 ? ipv4(addr) : ipv6(addr));
    }
  }
  return found;
}
const ipv4 = (hex: string): string =>
  [3, 2, 1, 0].map((i) => Number.parseInt(hex.slice(i * 2, i * 2 + 2), 16)).join(".");
const ipv6 = (hex: string): string =>
  hex === "00000000000000000000000000000000"
    ? "::"
    : hex === "0000000000000000FFFF00000100007F"
      ? "::ffff:127.0.0.1"
      : hex === "00000000000000000000000001000000"
        ? "::1"
        : hex;

describe("RabbitMQ cluster: harness", () => {
  it("epmd and every node's Erlang distribution listen on the loopback interface only", () => {
    const ports = [cluster.epmdPort, ...cluster.nodes.map((n) => n.distPort)];
    for (const port of ports) {
      const addresses = listeners(port);
      expect(addresses.length, `something listens on ${port}`).toBeGreaterThan(0);
      for (const a of addresses) expect(["127.0.0.1", "::1", "::ffff:127.0.0.1"]).toContain(a);
    }
  });
});

describe("RabbitMQ cluster: failover", () => {
  it("under load, kill the node client and service use: confirmed commands and events all arrive, every request ends typed, the node rejoins", async () => {
    const m = await createClusterMesh("failover");
    // In order: both connect to node 0, which also leads the quorum queue (declared there).
    const serviceTransport = transport({ url: m.url([0, 1, 2]) });
    const clientTransport = transport({ url: m.url([0, 1, 2]) });
    const jobs = new Jobs();
    const service: MeshService<Jobs> = createService({
      transport: serviceTransport,
      name: "jobs",
      instance: jobs,
      eventBindings: ["cluster.#"],
      queueType: "quorum",
      prefetch: 32,
    });
    const client: MeshParticipant = createClient({
      transport: clientTransport,
      defaultTtlMs: TTL_MS,
    });
    cleanups.push(
      () => service.disconnect(),
      () => client.disconnect(),
    );
    await service.connect();
    await client.connect();
    expect((await queueTypes(m.vhost)).get(serviceQueueName("jobs"))).toBe("quorum");

    let running = true;
    let phase = 0;
    const okIn = [0, 0, 0];
    const outcomes: Outcome[] = [];
    const confirmedCommands = new Set<number>();
    const confirmedEvents = new Set<number>();
    const failedSends = new Map<string, number>();
    let lastFailure = "";
    const countFailure = (err: unknown): void => {
      lastFailure = String(err);
      const name = isNuropbError(err) ? err.name : "untyped";
      failedSends.set(name, (failedSends.get(name) ?? 0) + 1);
    };

    const requester = async (w: number): Promise<void> => {
      for (let n = 0; running; n++) {
        const started = phase;
        let outcome: Outcome;
        const sentAt = performance.now();
        try {
          const r = (await withTimeout(
            client.request("jobs", "echo", { w, n }, {}, { ttlMs: TTL_MS }),
            HANG_MS,
            `request ${w}/${n}`,
          )) as { w?: number; n?: number };
          outcome = r.w === w && r.n === n ? { kind: "ok" } : { kind: "wrong" };
          if (outcome.kind === "ok") okIn[started] = (okIn[started] ?? 0) + 1;
        } catch (err) {
          outcome = isNuropbError(err) ? { kind: "error", name: err.name } : { kind: "hung" };
        }
        // Answered or failed typed within its ttl: from send to settle, not the run's speed.
        const ms = Math.round(performance.now() - sentAt);
        if ((outcome.kind === "ok" || outcome.kind === "error") && ms > TTL_MS + SETTLE_MARGIN_MS) {
          outcome = { kind: "late", ms, settled: outcome.kind === "ok" ? "ok" : outcome.name };
        }
        outcomes.push(outcome);
        if (outcome.kind !== "ok") await delay(20);
      }
    };
    const commander = async (): Promise<void> => {
      for (let n = 0; running; n++) {
        try {
          await withTimeout(client.command("jobs", "work", { n }), HANG_MS, `command ${n}`);
          confirmedCommands.add(n);
        } catch (err) {
          countFailure(err);
          await delay(20);
        }
      }
    };
    const publisher = async (): Promise<void> => {
      for (let n = 0; running; n++) {
        try {
          await withTimeout(client.publishEvent("cluster.tick", { n }), HANG_MS, `event ${n}`);
          confirmedEvents.add(n);
        } catch (err) {
          countFailure(err);
          await delay(20);
        }
      }
    };
    // Bounded load: 8 requests in flight, one command and one event stream.
    const workers = [
      ...Array.from({ length: 8 }, (_, w) => requester(w)),
      commander(),
      publisher(),
    ];
    await waitFor(() => (okIn[0] ?? 0) >= 100, T, "100 answered requests before the kill");

    const clientEvents = watchEvents(clientTransport);
    const serviceEvents = watchEvents(serviceTransport);
    phase = 1;
    await cluster.nodes[0]?.kill();
    await clientEvents.waitForItem((e) => e.type === "reconnected", T);
    await serviceEvents.waitForItem((e) => e.type === "reconnected", T);
    phase = 2;
    await waitFor(() => (okIn[2] ?? 0) >= 100, T, "100 answered requests after the failover").catch(
      (err: unknown) => {
        console.log(`ok ${okIn.join("/")}`, outcomes.slice(-3), failedSends, lastFailure);
        throw err;
      },
    );
    running = false;
    await withTimeout(Promise.all(workers), HANG_MS + 5_000, "the workers to finish");
    clientEvents.stop();
    serviceEvents.stop();

    // Every confirmed command and event reaches the service (the quorum queue kept them).
    await waitFor(
      () => [...confirmedCommands].every((n) => jobs.commands.has(n)),
      T,
      "every confirmed command to be handled",
    ).catch(() => undefined);
    await waitFor(
      () => [...confirmedEvents].every((n) => jobs.events.has(n)),
      T,
      "every confirmed event to be handled",
    ).catch(() => undefined);
    const lostCommands = [...confirmedCommands].filter((n) => !jobs.commands.has(n));
    const lostEvents = [...confirmedEvents].filter((n) => !jobs.events.has(n));
    const errors = new Map<string, number>();
    for (const o of outcomes)
      if (o.kind === "error") errors.set(o.name, (errors.get(o.name) ?? 0) + 1);
    console.log(
      `cluster failover: ${outcomes.length} requests, ok before/during/after = ${okIn.join("/")}, ` +
        `request errors ${JSON.stringify(Object.fromEntries(errors))}; ` +
        `${confirmedCommands.size} commands and ${confirmedEvents.size} events confirmed, ` +
        `send failures ${JSON.stringify(Object.fromEntries(failedSends))}`,
    );
    expect(lostCommands).toEqual([]);
    expect(lostEvents).toEqual([]);
    expect(confirmedCommands.size).toBeGreaterThan(0);
    expect(confirmedEvents.size).toBeGreaterThan(0);
    expect(outcomes.filter((o) => o.kind === "hung")).toHaveLength(0);
    expect(outcomes.filter((o) => o.kind === "late")).toEqual([]);
    expect(outcomes.filter((o) => o.kind === "wrong")).toHaveLength(0);
    for (const name of [...errors.keys(), ...failedSends.keys()]) {
      expect([
        "NuropbTransportError",
        "NuropbTimeoutError",
        "NuropbConnectionClosedError",
      ]).toContain(name);
    }
    expect(serviceTransport.state).toBe("open");
    expect(clientTransport.state).toBe("open");

    // The node comes back and rejoins (start() waits until the cluster lists it running).
    await cluster.nodes[0]?.start();
    expect(cluster.nodes.every((n) => n.running)).toBe(true);
    expect(await client.request("jobs", "echo", { w: -1, n: -1 })).toEqual({ w: -1, n: -1 });
  }, 240_000);

  it("connects to the next node when the first listed one is down", async () => {
    const m = await createClusterMesh("next");
    await cluster.nodes[2]?.kill();
    try {
      const t = transport({ url: m.url([2, 1, 0]) });
      await t.connect();
      const got: string[] = [];
      await t.consumeService(testServiceSpec("next", { queueType: "quorum" }), async (d) => {
        got.push(new TextDecoder().decode(d.body));
        await d.ack();
      });
      await t.send({ kind: "rpc", service: "next" }, testFrame("hello"));
      await waitFor(() => got.includes("hello"), T, "the message");
    } finally {
      await cluster.nodes[2]?.start();
    }
  }, 180_000);
});

describe("RabbitMQ cluster: classic queues", () => {
  it("a service on another node outlives the death of its classic queue's home node", async () => {
    const m = await createClusterMesh("home");
    // The queue is declared on node 0 (its home); the service consumes it through node 1.
    const declarer = transport({ url: m.url([0]) });
    await declarer.connect();
    await (await declarer.consumeService(testServiceSpec("home"), (d) => d.ack())).stop();
    await declarer.close();
    const t = transport({ url: m.url([1, 2, 0]) });
    await t.connect();
    const got: string[] = [];
    await t.consumeService(testServiceSpec("home"), async (d) => {
      got.push(new TextDecoder().decode(d.body));
      await d.ack();
    });
    const events = watchEvents(t);
    await cluster.nodes[0]?.kill();
    // basic.cancel, then declares answered 404 "home node … is down or inaccessible": retried.
    await events.waitForItem((e) => e.type === "errored", T);
    await delay(3_000);
    expect(t.state).not.toBe("closed");
    expect(events.items.map((e) => e.type)).not.toContain("closed");
    await cluster.nodes[0]?.start();
    await waitFor(
      () =>
        t.send({ kind: "rpc", service: "home" }, testFrame("back")).then(
          () => true,
          () => false,
        ),
      T,
      "the broker to route to the queue again",
    );
    await waitFor(() => got.includes("back"), T, "the message after the home node came back");
    expect(events.items.map((e) => e.type)).not.toContain("closed");
    events.stop();
  }, 180_000);
});

describe("RabbitMQ cluster: quorum queues", () => {
  it("a consumer cancelled by the broker (its queue deleted) consumes again", async () => {
    const m = await createClusterMesh("cancel");
    const t = transport({ url: m.url() });
    await t.connect();
    const got: string[] = [];
    await t.consumeService(testServiceSpec("cancel", { queueType: "quorum" }), async (d) => {
      got.push(new TextDecoder().decode(d.body));
      await d.ack();
    });
    const events = watchEvents(t);
    const conn = await amqp.connect(`${liveNode()}/${encodeURIComponent(m.vhost)}`);
    try {
      const ch = await conn.createChannel();
      await ch.deleteQueue(serviceQueueName("cancel"));
    } finally {
      await conn.close();
    }
    await events.waitForItem((e) => e.type === "errored", T);
    // Declared again (a quorum queue again) and consumed: a message sent now arrives.
    await waitFor(
      async () => (await queueTypes(m.vhost)).get(serviceQueueName("cancel")) === "quorum",
      T,
      "the queue to be declared again",
    );
    await waitFor(
      () =>
        t.send({ kind: "rpc", service: "cancel" }, testFrame("again")).then(
          () => true,
          () => false,
        ),
      T,
      "the broker to route to the queue again",
    );
    await waitFor(() => got.includes("again"), T, "the message after the cancel");
    expect(events.items.map((e) => e.type)).not.toContain("disconnected");
    events.stop();
  }, 120_000);

  it("a poison message is dead-lettered once: after the delivery limit, or at once when it fails", async () => {
    const m = await createClusterMesh("poison");
    const t = transport({ url: m.url() });
    await t.connect();
    const seen = new Map<string, number>();
    const limit = 2;
    await t.consumeService(
      testServiceSpec("poison", { queueType: "quorum", deliveryLimit: limit }),
      async (d: Delivery) => {
        const label = new TextDecoder().decode(d.body);
        seen.set(label, (seen.get(label) ?? 0) + 1);
        if (label === "again")
          await d.requeue(); // call-again, every time
        else throw new Error("poison"); // a failure: rejected, dead-lettered
      },
    );
    await t.send({ kind: "rpc", service: "poison" }, testFrame("again"));
    await t.send({ kind: "rpc", service: "poison" }, testFrame("fails"));
    let dead: amqp.GetMessage[] = [];
    await waitFor(
      async () => {
        dead = dead.concat(await drain(m.vhost, "nuropb-dl-queue"));
        return dead.length >= 2;
      },
      T,
      "both messages in the dead-letter queue",
    );
    await delay(1_500); // nothing more arrives, in either queue
    dead = dead.concat(await drain(m.vhost, "nuropb-dl-queue"));
    const labels = dead.map((d) => d.content.toString("utf8")).sort();
    expect(labels).toEqual(["again", "fails"]);
    // Requeued until it had been returned `limit` times, then dead-lettered; the failure once.
    expect(seen.get("again")).toBe(limit + 1);
    expect(seen.get("fails")).toBe(1);
  }, 120_000);

  it("a declaration that conflicts with the existing queue fails typed, naming the argument", async () => {
    const m = await createClusterMesh("conflict");
    const first = transport({ url: m.url() });
    await first.connect();
    await first.consumeService(testServiceSpec("conflict"), (d) => d.ack());
    const second = transport({ url: m.url([1, 2, 0]) });
    await second.connect();
    const err = await second
      .consumeService(testServiceSpec("conflict", { queueType: "quorum" }), (d) => d.ack())
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(err).toBeInstanceOf(NuropbTransportError);
    const e = err as NuropbTransportError;
    expect(e.retryable).toBe(false);
    expect(e.details).toMatchObject({
      permanent: true,
      replyCode: 406,
      conflict: { queue: serviceQueueName("conflict") },
    });
    // The broker names the first argument it finds different: any of those quorum adds.
    const argument = (e.details as { conflict: { argument?: string } }).conflict.argument;
    expect(["x-queue-type", "x-overflow", "x-dead-letter-strategy"]).toContain(argument);
    expect(e.message).toContain(`argument '${argument}' differs`);
    // The connection is unharmed: the transport stays open and sends.
    expect(second.state).toBe("open");
    await second.send({ kind: "rpc", service: "conflict" }, testFrame("still-works"));
  }, 120_000);
});
