import amqplib from "amqplib";
import { afterAll, beforeAll, describe } from "vitest";
import type { WireHeaders } from "@nuropb/protocol";
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

describe("failure pipeline on RabbitMQ", () => {
  describeFailurePipeline({
    createTransport: () => createAmqpTransport({ url: mesh.url }),
    deadLetters: async (service) => {
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
    },
  });
});
