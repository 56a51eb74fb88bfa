import amqplib from "amqplib";
import { afterAll, beforeAll } from "vitest";
import { configureMesh, teardownMesh } from "@nuropb/transport-amqp";
import { describeCoreConformance } from "@nuropb/transport-testkit";
import { disruptableTransports, rabbitEnv, uniqueVhost } from "../src/amqp-helpers.ts";

// Every rule of @nuropb/core, end to end over RabbitMQ, on a vhost of its own. Dead letters are
// counted on the mesh's dead-letter queue (bound to the fanout dead-letter exchange by configureMesh).
const env = rabbitEnv();
const vhost = uniqueVhost("core");
const url = `${env.amqpUrl}/${vhost}`;
const transports = disruptableTransports();
let counter: amqplib.ChannelModel | undefined;

beforeAll(async () => {
  await configureMesh({ url });
  counter = await amqplib.connect(url);
});
afterAll(async () => {
  await transports.closeAll();
  await counter?.close();
  await teardownMesh({ url });
});

describeCoreConformance({
  name: "amqp (RabbitMQ, amqplib)",
  // Each transport reaches the broker through its own TCP proxy, so `disrupt` cuts exactly its
  // connection at once (the management API lists new connections only after a stats interval).
  create: () => transports.create(vhost),
  deadLetterCount: async () => {
    if (counter === undefined) throw new Error("not connected");
    const ch = await counter.createChannel();
    try {
      return (await ch.checkQueue("nuropb-dl-queue")).messageCount;
    } finally {
      await ch.close();
    }
  },
  disrupt: (t) => transports.disrupt(t),
});
