import { afterAll, beforeAll } from "vitest";
import { connect, type NatsConnection } from "nats";
import { newId } from "@nuropb/protocol";
import { createNatsTransport } from "@nuropb/transport-nats";
import { describeCoreConformance, describeTransportConformance } from "@nuropb/transport-testkit";
import { launchNats } from "../src/brokers/nats.ts";

// The transport and core conformance suites with requests on JetStream (`requests: "jetstream"`),
// the option beside the default core request/reply that nats-conformance and nats-core run. A
// private server: the connection-loss scenarios restart it.
const server = await launchNats();
const transportMesh = `jt${newId().slice(0, 12)}`;
const coreMesh = `jc${newId().slice(0, 12)}`;
let nc: NatsConnection | undefined;

beforeAll(async () => {
  nc = await connect({ servers: server.url, reconnectTimeWait: 100, maxReconnectAttempts: -1 });
});
afterAll(async () => {
  await nc?.close();
  await server.stop();
});

describeTransportConformance({
  name: "nats (JetStream requests)",
  create: () =>
    createNatsTransport({
      servers: server.url,
      mesh: transportMesh,
      reconnectWaitMs: 100,
      requests: "jetstream",
    }),
  disrupt: () => server.process.restart(),
});

describeCoreConformance({
  name: "nats (JetStream requests)",
  create: () =>
    createNatsTransport({
      servers: server.url,
      mesh: coreMesh,
      reconnectWaitMs: 100,
      requests: "jetstream",
    }),
  deadLetterCount: async () => {
    if (nc === undefined) throw new Error("not connected");
    const jsm = await nc.jetstreamManager();
    try {
      return (await jsm.streams.info(`NUROPB-${coreMesh}-DL`)).state.messages;
    } catch (err) {
      if (String(err).includes("stream not found")) return 0;
      throw err;
    }
  },
  disrupt: () => server.process.restart(),
  timeoutMs: 30_000,
});
