import { configureMesh, createAmqpTransport, teardownMesh } from "@nuropb/transport-amqp";
import { describeSchedulingConformance } from "@nuropb/transport-testkit";
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
});
