import amqplib from "amqplib";
import { afterAll, beforeAll } from "vitest";
import { configureMesh, createAmqpTransport, teardownMesh } from "@nuropb/transport-amqp";
import { describeCallLaterConformance } from "@nuropb/transport-testkit";
import { rabbitEnv, uniqueVhost } from "../src/amqp-helpers.ts";

// Asynchronous calls (issue #21) over RabbitMQ, on a vhost of its own: answers through the
// default exchange to the calling service's queue, deadlines through TTL delay queues, claims as
// queue declarations. Dead letters are counted on the mesh's dead-letter queue.
const env = rabbitEnv();
const vhost = uniqueVhost("calllater");
const url = `${env.amqpUrl}/${vhost}`;
let counter: amqplib.ChannelModel | undefined;

beforeAll(async () => {
  await configureMesh({ url });
  counter = await amqplib.connect(url);
});
afterAll(async () => {
  await counter?.close();
  await teardownMesh({ url });
});

describeCallLaterConformance({
  name: "amqp (RabbitMQ, amqplib)",
  create: () => createAmqpTransport({ url }),
  deadLetterCount: async () => {
    if (counter === undefined) throw new Error("not connected");
    const ch = await counter.createChannel();
    try {
      return (await ch.checkQueue("nuropb-dl-queue")).messageCount;
    } finally {
      await ch.close();
    }
  },
  // Rounded up to the 100 ms delay bucket; long enough for a round trip on a busy machine.
  deadlineMs: 1_000,
  timeoutMs: 30_000,
});
