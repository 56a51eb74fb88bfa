import { afterAll, beforeAll } from "vitest";
import { connect, type NatsConnection } from "nats";
import { newId } from "@nuropb/protocol";
import { createNatsTransport } from "@nuropb/transport-nats";
import { describeCoreConformance } from "@nuropb/transport-testkit";
import { launchNats } from "../src/brokers/nats.ts";

// Every rule of @nuropb/core, end to end over NATS JetStream, on a private server (restarted by
// the connection-loss scenario). Dead letters are counted on the mesh's dead-letter stream.
const server = await launchNats();
const mesh = `core${newId().slice(0, 12)}`;
let nc: NatsConnection | undefined;

beforeAll(async () => {
  nc = await connect({ servers: server.url, reconnectTimeWait: 100, maxReconnectAttempts: -1 });
});
afterAll(async () => {
  await nc?.close();
  await server.stop();
});

describeCoreConformance({
  name: "nats (nats-server 2.9, JetStream)",
  create: () => createNatsTransport({ servers: server.url, mesh, reconnectWaitMs: 100 }),
  deadLetterCount: async () => {
    if (nc === undefined) throw new Error("not connected");
    const jsm = await nc.jetstreamManager();
    try {
      return (await jsm.streams.info(`NUROPB-${mesh}-DL`)).state.messages;
    } catch (err) {
      if (String(err).includes("stream not found")) return 0;
      throw err;
    }
  },
  disrupt: () => server.process.restart(),
  timeoutMs: 30_000,
});
