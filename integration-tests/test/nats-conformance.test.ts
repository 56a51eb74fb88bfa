import { afterAll } from "vitest";
import { newId } from "@nuropb/protocol";
import { createNatsTransport } from "@nuropb/transport-nats";
import { describeTransportConformance } from "@nuropb/transport-testkit";
import { launchNats } from "../src/brokers/nats.ts";

// A private server, so that the connection-loss test can restart it without disturbing others.
const server = await launchNats();
afterAll(() => server.stop());
const mesh = `ck${newId().slice(0, 12)}`;

describeTransportConformance({
  name: "nats (nats-server 2.9, JetStream)",
  create: () => createNatsTransport({ servers: server.url, mesh, reconnectWaitMs: 100 }),
  disrupt: () => server.process.restart(),
});
