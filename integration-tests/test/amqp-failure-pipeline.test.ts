import amqplib from "amqplib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient, createService, failureRecordOf } from "@nuropb/core";
import { NuropbError, type WireHeaders } from "@nuropb/protocol";
import { createAmqpTransport } from "@nuropb/transport-amqp";
import { createTestMesh, type TestMesh } from "../src/amqp-helpers.ts";
import { describeFailurePipeline } from "../src/failure-pipeline-scenarios.ts";

// The failure pipeline on RabbitMQ: delayed redelivery through TTL delay queues, the failure
// record on the copy published to the dead-letter exchange (read back from nuropb-dl-queue).
let mesh: TestMesh;
let reader: amqplib.ChannelModel;
const seen: { routingKey: string; headers: WireHeaders }[] = [];

beforeAll(async () => {
  mesh = await createTestMesh("failure");
  reader = await amqplib.connect(mesh.url);
});
afterAll(async () => {
  await reader?.close();
  await mesh?.teardown();
});

/** The headers of the dead letters of `service` read so far (the queue is drained as it is read). */
async function readDeadLetters(service: string): Promise<WireHeaders[]> {
  const ch = await reader.createChannel();
  try {
    for (;;) {
      const msg = await ch.get("nuropb-dl-queue", { noAck: true });
      if (msg === false) break;
      seen.push({
        routingKey: msg.fields.routingKey,
        headers: (msg.properties.headers ?? {}) as WireHeaders,
      });
    }
  } finally {
    await ch.close();
  }
  return seen
    .filter((d) => d.routingKey === service || d.headers.nuropb_failure_service === service)
    .map((d) => d.headers);
}

describe("failure pipeline on RabbitMQ", () => {
  describeFailurePipeline({
    createTransport: () => createAmqpTransport({ url: mesh.url }),
    deadLetters: readDeadLetters,
  });
});

describe("failure pipeline on a RabbitMQ quorum queue", () => {
  it("dead-letters a poison message once, with its failure record", async () => {
    const name = `fpq-${Math.random().toString(16).slice(2, 10)}`;
    let runs = 0;
    const st = createAmqpTransport({ url: mesh.url });
    const ct = createAmqpTransport({ url: mesh.url });
    const service = createService({
      transport: st,
      name,
      queueType: "quorum",
      instance: {
        poison(): never {
          runs++;
          throw new NuropbError("cannot parse order", { retryable: true });
        },
      },
      failurePolicy: { immediateRetries: 2, delays: [100] },
    });
    const client = createClient({ transport: ct });
    await service.connect();
    await client.connect();
    try {
      await client.command(name, "poison", {});
      const start = Date.now();
      let mine: WireHeaders[] = [];
      while (mine.length === 0 && Date.now() - start < 20_000) {
        await new Promise((r) => setTimeout(r, 100));
        mine = await readDeadLetters(name);
      }
      // Settled: nothing more arrives after a while.
      await new Promise((r) => setTimeout(r, 500));
      mine = await readDeadLetters(name);
      expect(mine).toHaveLength(1);
      expect(failureRecordOf(mine[0]!)).toMatchObject({ attempts: 6, redeliveries: 1 });
      expect(runs).toBe(6);
    } finally {
      await client.disconnect();
      await service.disconnect();
      await Promise.all([st.close(), ct.close()]);
    }
  });
});
