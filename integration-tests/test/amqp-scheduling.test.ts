import amqplib from "amqplib";
import { configureMesh, createAmqpTransport, teardownMesh } from "@nuropb/transport-amqp";
import {
  createCollector,
  describeSchedulingConformance,
  testFrame,
  testServiceSpec,
} from "@nuropb/transport-testkit";
import { NuropbNotDeliveredError, NuropbTransportError, type Delivery } from "@nuropb/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getQueue, rabbitEnv, uniqueVhost } from "../src/amqp-helpers.ts";

// TTL + dead-letter delay queues and queue-declaration claims, on the harness's RabbitMQ.
const vhost = uniqueVhost("scheduling");
const url = `${rabbitEnv().amqpUrl}/${vhost}`;

beforeAll(async () => {
  await configureMesh({ url });
});
afterAll(async () => {
  await teardownMesh({ url });
});

describeSchedulingConformance({
  name: "amqp (RabbitMQ, TTL + dead-letter delay queues)",
  create: () => createAmqpTransport({ url }),
});

describe("amqp scheduling topology", () => {
  it("declares one delay queue per service and bucket, rounding the delay up", async () => {
    const t = createAmqpTransport({ url });
    await t.connect();
    try {
      await t.scheduling?.sendDelayed(
        "topo",
        { headers: {}, body: new Uint8Array(1), correlationId: "c" },
        1_234,
      );
      const q = await getQueue(vhost, "nuropb-topo-delay-2000");
      expect(q?.arguments).toMatchObject({
        "x-message-ttl": 2000,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "nuropb-topo-sq",
        "x-expires": 62_000,
      });
      expect(q?.durable).toBe(true);
    } finally {
      await t.close();
    }
  });

  it("declares a delay queue again when it vanished since it was declared", async () => {
    const t = createAmqpTransport({ url });
    await t.connect();
    const admin = await amqplib.connect(url);
    try {
      const got = createCollector<Delivery>("deliveries");
      await t.consumeService(testServiceSpec("vanish"), async (d) => {
        got.push(d);
        await d.ack();
      });
      await t.scheduling?.sendDelayed("vanish", testFrame("one"), 100);
      await got.waitForCount(1);
      // Gone (as x-expires would make it) while the transport still counts it declared.
      const ch = await admin.createChannel();
      await ch.deleteQueue("nuropb-vanish-delay-100");
      await ch.close();
      await t.scheduling?.sendDelayed("vanish", testFrame("two"), 100);
      const all = await got.waitForCount(2);
      expect(all.map((d) => new TextDecoder().decode(d.body))).toEqual(["one", "two"]);
    } finally {
      await admin.close();
      await t.close();
    }
  });
});

describe("amqp scheduling: a frame due now that the broker does not hold", () => {
  it("rejects NuropbNotDeliveredError when the service has no queue (returned)", async () => {
    const t = createAmqpTransport({ url });
    await t.connect();
    try {
      await expect(
        t.scheduling!.sendDelayed("retired", testFrame("orphan-now"), 0),
      ).rejects.toBeInstanceOf(NuropbNotDeliveredError);
    } finally {
      await t.close();
    }
  });

  it("rejects a retryable NuropbTransportError when the queue refuses it (basic.nack)", async () => {
    const admin = await amqplib.connect(url);
    const t = createAmqpTransport({ url });
    try {
      const ch = await admin.createChannel();
      await ch.assertQueue("nuropb-fullsvc-sq", {
        durable: true,
        arguments: { "x-max-length": 0, "x-overflow": "reject-publish" },
      });
      await ch.close();
      await t.connect();
      const refused = t.scheduling!.sendDelayed("fullsvc", testFrame("refused-now"), 0);
      await expect(refused).rejects.toBeInstanceOf(NuropbTransportError);
      await expect(refused).rejects.toMatchObject({ retryable: true });
      expect(t.scheduling).toMatchObject({ deliveryDelayMs: expect.any(Function) });
      expect(
        (t.scheduling as unknown as { deliveryDelayMs(d: number): number }).deliveryDelayMs(1_001),
      ).toBe(2_000);
    } finally {
      await t.close();
      await admin.close();
    }
  });
});
