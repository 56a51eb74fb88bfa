import { NuropbTransportError, responseQueueName, serviceQueueName } from "@nuropb/protocol";
import type { Transport } from "@nuropb/protocol";
import { configureMesh, createAmqpTransport } from "@nuropb/transport-amqp";
import { waitFor } from "@nuropb/transport-testkit";
import amqp from "amqplib";
import { Connection } from "rabbitmq-client";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  createTestMesh,
  getExchange,
  getQueue,
  queueBindings,
  rabbitEnv,
  uniqueVhost,
} from "../src/amqp-helpers.ts";
import type { MgmtQueue, TestMesh } from "../src/amqp-helpers.ts";
import { createVhost, managementUrlFromAmqpUrl, teardownMesh } from "@nuropb/transport-amqp";

const T = 10_000;
let mesh: TestMesh;
const open: Transport[] = [];
const clients: Connection[] = [];

beforeEach(async () => {
  mesh = await createTestMesh("topology");
});
afterEach(async () => {
  await Promise.allSettled(open.splice(0).map((t) => t.close()));
  await Promise.allSettled(clients.splice(0).map((c) => c.close()));
  await mesh.teardown();
});

async function connected(
  extra: Partial<Parameters<typeof createAmqpTransport>[0]> = {},
): Promise<Transport> {
  const t = createAmqpTransport({ url: mesh.url, ...extra });
  open.push(t);
  await t.connect();
  return t;
}

/** An independent client (rabbitmq-client) on the test's mesh. */
function independent(): Connection {
  const c = new Connection({ url: mesh.url, retryLow: 100, retryHigh: 500 });
  c.on("error", () => undefined);
  clients.push(c);
  return c;
}

/** Waits until the management API reports `count` consumers with details on `queue`. */
async function queueWithConsumers(queue: string, count: number): Promise<MgmtQueue> {
  let q: MgmtQueue | null = null;
  await waitFor(
    async () => {
      q = await getQueue(mesh.vhost, queue);
      return (q?.consumer_details?.length ?? 0) >= count;
    },
    T * 2,
    `${count} consumer(s) on ${queue} in the management API`,
  );
  return q as unknown as MgmtQueue;
}

describe("service queue (PROTOCOL.md §15 item 1)", () => {
  it("is nuropb-S-sq: durable, not exclusive, not auto-delete, arguments exactly the DL exchange; bound to rpc and events", async () => {
    const t = await connected();
    await t.consumeService(
      {
        service: "orders",
        rpcBindings: ["orders-v2"],
        eventBindings: ["orders.*", "billing.#"],
        prefetch: 3,
      },
      () => {},
    );
    const q = await queueWithConsumers(serviceQueueName("orders"), 1);
    expect(q.name).toBe("nuropb-orders-sq");
    expect(q.durable).toBe(true);
    expect(q.exclusive).toBe(false);
    expect(q.auto_delete).toBe(false);
    expect(q.arguments).toStrictEqual({ "x-dead-letter-exchange": "nuropb-dl-exchange" });
    expect(q.consumer_details?.[0]).toMatchObject({
      ack_required: true,
      exclusive: false,
      prefetch_count: 3,
    });
    expect((await queueBindings(mesh.vhost, q.name)).sort()).toEqual(
      [
        ["nuropb-events-exchange", "billing.#"],
        ["nuropb-events-exchange", "orders.*"],
        ["nuropb-rpc-exchange", "orders"],
        ["nuropb-rpc-exchange", "orders-v2"],
      ].sort(),
    );
  });

  it("is declaration-equivalent to what Python declares: a peer re-declaring it with pika's flags succeeds", async () => {
    const t = await connected();
    await t.consumeService(
      { service: "py-shared", rpcBindings: [], eventBindings: [], prefetch: 1 },
      () => {},
    );
    const ch = await independent().acquire();
    try {
      // queue_declare(queue, durable=True, exclusive=False, auto_delete=False,
      //               arguments={"x-dead-letter-exchange": dl_exchange}) — as rmq_transport.py does.
      const ok = await ch.queueDeclare({
        queue: "nuropb-py-shared-sq",
        durable: true,
        exclusive: false,
        autoDelete: false,
        arguments: { "x-dead-letter-exchange": "nuropb-dl-exchange" },
      });
      expect(ok.queue).toBe("nuropb-py-shared-sq");
      // And anything else is refused (so the check above means something).
      await expect(
        ch.queueDeclare({
          queue: "nuropb-py-shared-sq",
          durable: true,
          arguments: { "x-dead-letter-exchange": "other" },
        }),
      ).rejects.toMatchObject({ code: "PRECONDITION_FAILED" });
    } finally {
      await ch.close().catch(() => undefined);
    }
  });

  it("joins a service queue a Python instance declared first", async () => {
    const ch = await independent().acquire();
    await ch.queueDeclare({
      queue: "nuropb-py-first-sq",
      durable: true,
      exclusive: false,
      autoDelete: false,
      arguments: { "x-dead-letter-exchange": "nuropb-dl-exchange" },
    });
    await ch.close();
    const t = await connected();
    await expect(
      t.consumeService(
        { service: "py-first", rpcBindings: [], eventBindings: [], prefetch: 1 },
        () => {},
      ),
    ).resolves.toBeDefined();
  });

  it("names a configured dead-letter exchange in its arguments; a mismatch with an existing queue is a clear error", async () => {
    await configureMesh({ url: mesh.url, dlExchange: "test_dl_exchange", createVhost: false });
    const t = await connected({ dlExchange: "test_dl_exchange" });
    await t.consumeService(
      { service: "custom-dl", rpcBindings: [], eventBindings: [], prefetch: 1 },
      () => {},
    );
    const q = await getQueue(mesh.vhost, "nuropb-custom-dl-sq");
    expect(q?.arguments).toStrictEqual({ "x-dead-letter-exchange": "test_dl_exchange" });
    const other = await connected();
    const err = await other
      .consumeService(
        { service: "custom-dl", rpcBindings: [], eventBindings: [], prefetch: 1 },
        () => {},
      )
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(err).toBeInstanceOf(NuropbTransportError);
    expect((err as Error).message).toMatch(/nuropb-custom-dl-sq.*PRECONDITION_FAILED/);
    // The refusal does not take the transport down.
    expect(other.state).toBe("open");
    await other.send(
      { kind: "event", topic: "still.works" },
      {
        headers: {},
        body: new Uint8Array(),
        correlationId: "x",
      },
    );
  });
});

describe("response queue (PROTOCOL.md §15 items 2 and 3)", () => {
  const address = responseQueueName(undefined, "0123456789abcdef0123456789abcdef", "topology");

  it("is declared non-durable, not exclusive, auto-delete, without arguments, and consumed by one exclusive no-ack consumer", async () => {
    const t = await connected();
    await t.consumeResponses({ address }, () => {});
    const q = await queueWithConsumers(address, 1);
    expect(q.durable).toBe(false);
    expect(q.exclusive).toBe(false);
    expect(q.auto_delete).toBe(true);
    expect(q.arguments).toStrictEqual({});
    expect(q.consumer_details).toHaveLength(1);
    expect(q.consumer_details?.[0]).toMatchObject({ exclusive: true, ack_required: false });
  });

  it("a second participant with the same address is refused with NuropbTransportError", async () => {
    const first = await connected();
    await first.consumeResponses({ address }, () => {});
    const second = await connected();
    const err = await second
      .consumeResponses({ address }, () => {})
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(err).toBeInstanceOf(NuropbTransportError);
    expect((err as Error).message).toMatch(/already consumed.*exclusive use/);
    expect(second.state).toBe("open");
  });

  it("a Python-style peer (independent client) holding the address locks the transport out, and vice versa", async () => {
    const ch = await independent().acquire();
    await ch.queueDeclare({ queue: address, durable: false, exclusive: false, autoDelete: true });
    const { consumerTag } = await ch.basicConsume(
      { queue: address, noAck: true, exclusive: true },
      () => {},
    );
    const t = await connected();
    await expect(t.consumeResponses({ address }, () => {})).rejects.toBeInstanceOf(
      NuropbTransportError,
    );
    await ch.basicCancel(consumerTag);
    await ch.close();
    // Cancelling the only consumer deleted the auto-delete queue; the transport re-declares it.
    await t.consumeResponses({ address }, () => {});
    const ch2 = await independent().acquire();
    await expect(
      ch2.basicConsume({ queue: address, noAck: true, exclusive: true }, () => {}),
    ).rejects.toMatchObject({ code: "ACCESS_REFUSED" });
  });
});

describe("mesh setup (PROTOCOL.md §15 item 4)", () => {
  it("declares the three exchanges and a non-durable DL queue bound to the DL exchange; a second run succeeds and changes nothing", async () => {
    // createTestMesh already ran configureMesh once.
    const again = await configureMesh({ url: mesh.url });
    expect(again.vhostCreated).toBe(false);
    expect(again.declared).toEqual([]);
    expect([...again.existing].sort()).toEqual(
      [
        "exchange:nuropb-dl-exchange",
        "exchange:nuropb-events-exchange",
        "exchange:nuropb-rpc-exchange",
        "queue:nuropb-dl-queue",
      ].sort(),
    );
    for (const [name, type] of [
      ["nuropb-rpc-exchange", "direct"],
      ["nuropb-events-exchange", "topic"],
      ["nuropb-dl-exchange", "fanout"],
    ] as const) {
      expect(await getExchange(mesh.vhost, name), name).toMatchObject({
        type,
        durable: true,
        auto_delete: false,
        internal: false,
      });
    }
    const dl = await getQueue(mesh.vhost, "nuropb-dl-queue");
    expect(dl).toMatchObject({
      durable: false,
      auto_delete: false,
      exclusive: false,
      arguments: {},
    });
    expect(await queueBindings(mesh.vhost, "nuropb-dl-queue")).toEqual([
      ["nuropb-dl-exchange", "nuropb-dl-queue"],
    ]);
  });

  it("succeeds against a mesh Python configured, including a durable per-service DL queue", async () => {
    const env = rabbitEnv();
    const vhost = uniqueVhost("py-mesh");
    const url = `${env.amqpUrl}/${vhost}`;
    await createVhost(managementUrlFromAmqpUrl(url), vhost);
    try {
      // What configure_nuropb_rmq + a Python transport leave behind, declared with pika's flags.
      const conn = await amqp.connect(url);
      const ch = await conn.createChannel();
      await ch.assertExchange("nuropb-dl-exchange", "fanout", { durable: true });
      await ch.assertExchange("nuropb-events-exchange", "topic", { durable: true });
      await ch.assertExchange("nuropb-rpc-exchange", "direct", { durable: true });
      // Declared durable here, unlike ours (WIRE-SAMPLES.md shows per-service `-dl` queues as durable).
      await ch.assertQueue("nuropb-dl-queue", { durable: true });
      await ch.assertQueue("nuropb-after-python-dl", { durable: true });
      await ch.bindQueue("nuropb-after-python-dl", "nuropb-dl-exchange", "nuropb-after-python-dl");
      await conn.close();
      const result = await configureMesh({ url });
      expect(result.declared).toEqual([]);
      const t = createAmqpTransport({ url });
      open.push(t);
      await t.connect();
      await t.consumeService(
        { service: "after-python", rpcBindings: [], eventBindings: [], prefetch: 1 },
        () => {},
      );
    } finally {
      await teardownMesh({ url });
    }
  });

  it("a service on a vhost nobody configured fails with a clear error naming the missing exchange", async () => {
    const env = rabbitEnv();
    const vhost = uniqueVhost("unconfigured");
    const url = `${env.amqpUrl}/${vhost}`;
    await createVhost(managementUrlFromAmqpUrl(url), vhost);
    try {
      const t = createAmqpTransport({ url });
      open.push(t);
      await t.connect(); // connecting declares no exchange and needs none
      await expect(
        t.consumeService(
          { service: "early", rpcBindings: [], eventBindings: [], prefetch: 1 },
          () => {},
        ),
      ).rejects.toThrow(/no exchange 'nuropb-rpc-exchange'/);
    } finally {
      await teardownMesh({ url });
    }
  });
});
