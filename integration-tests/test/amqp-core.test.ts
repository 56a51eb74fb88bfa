import amqplib from "amqplib";
import { afterAll, beforeAll } from "vitest";
import type { Transport } from "@nuropb/protocol";
import { configureMesh, createAmqpTransport, teardownMesh } from "@nuropb/transport-amqp";
import { describeCoreConformance } from "@nuropb/transport-testkit";
import { closeConnectionByName, rabbitEnv, uniqueVhost } from "../src/amqp-helpers.ts";

// Every rule of @nuropb/core, end to end over RabbitMQ, on a vhost of its own. Dead letters are
// counted on the mesh's dead-letter queue (bound to the fanout dead-letter exchange by configureMesh).
const env = rabbitEnv();
const vhost = uniqueVhost("core");
const url = `${env.amqpUrl}/${vhost}`;
const names = new WeakMap<Transport, string>();
let seq = 0;
let counter: amqplib.ChannelModel | undefined;

beforeAll(async () => {
  await configureMesh({ url });
  counter = await amqplib.connect(url);
});
afterAll(async () => {
  await counter?.close();
  await teardownMesh({ url });
});

describeCoreConformance({
  name: "amqp (RabbitMQ, amqplib)",
  create: () => {
    const connectionName = `core-${vhost}-${++seq}`;
    const t = createAmqpTransport({
      url,
      connectionName,
      reconnect: { initialDelayMs: 50, maxDelayMs: 1_000 },
    });
    names.set(t, connectionName);
    return t;
  },
  deadLetterCount: async () => {
    if (counter === undefined) throw new Error("not connected");
    const ch = await counter.createChannel();
    try {
      return (await ch.checkQueue("nuropb-dl-queue")).messageCount;
    } finally {
      await ch.close();
    }
  },
  disrupt: async (t) => {
    const name = names.get(t);
    if (name === undefined) throw new Error("disrupt() got a transport this file did not create");
    await closeConnectionByName(name);
  },
});
