import { configureMesh, teardownMesh } from "@nuropb/transport-amqp";
import { describeTransportConformance } from "@nuropb/transport-testkit";
import { afterAll, beforeAll } from "vitest";
import { disruptableTransports, rabbitEnv, uniqueVhost } from "../src/amqp-helpers.ts";

// One vhost for the whole suite: the suite makes every name unique per test. Each transport
// reaches the broker through its own TCP proxy, so `disrupt` can cut exactly that connection.
const vhost = uniqueVhost("conformance");
const url = `${rabbitEnv().amqpUrl}/${vhost}`;
const transports = disruptableTransports();

beforeAll(async () => {
  await configureMesh({ url });
});
afterAll(async () => {
  await transports.closeAll();
  await teardownMesh({ url });
});

describeTransportConformance({
  name: "amqp (RabbitMQ, amqplib)",
  create: () => transports.create(vhost),
  disrupt: (t) => transports.disrupt(t),
});
