import { createAmqpTransport } from "@nuropb/transport-amqp";
import type { Transport } from "@nuropb/protocol";
import { describeTransportConformance } from "@nuropb/transport-testkit";
import { afterAll, beforeAll } from "vitest";
import { closeConnectionByName, rabbitEnv, uniqueVhost } from "../src/amqp-helpers.ts";
import { configureMesh, teardownMesh } from "@nuropb/transport-amqp";

// One vhost for the whole suite: the suite makes every name unique per test.
const env = rabbitEnv();
const vhost = uniqueVhost("conformance");
const url = `${env.amqpUrl}/${vhost}`;
const names = new WeakMap<Transport, string>();
let seq = 0;

beforeAll(async () => {
  await configureMesh({ url });
});
afterAll(async () => {
  await teardownMesh({ url });
});

describeTransportConformance({
  name: "amqp (RabbitMQ, amqplib)",
  create: () => {
    const connectionName = `conformance-${vhost}-${++seq}`;
    const t = createAmqpTransport({
      url,
      connectionName,
      reconnect: { initialDelayMs: 50, maxDelayMs: 1_000 },
    });
    names.set(t, connectionName);
    return t;
  },
  disrupt: async (t) => {
    const name = names.get(t);
    if (name === undefined) throw new Error("disrupt() got a transport this file did not create");
    await closeConnectionByName(name);
  },
});
