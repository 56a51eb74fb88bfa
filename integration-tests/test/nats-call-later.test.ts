import { afterAll, beforeAll } from "vitest";
import { connect, type NatsConnection } from "nats";
import { newId } from "@nuropb/protocol";
import { createNatsTransport } from "@nuropb/transport-nats";
import { describeCallLaterConformance } from "@nuropb/transport-testkit";
import { launchNats } from "../src/brokers/nats.ts";

// Asynchronous calls (issue #21) over NATS JetStream, on a private server: answers to the
// calling service's stream, deadlines through the delay stream, claims in KV. Dead letters are
// counted on the mesh's dead-letter stream.
const server = await launchNats();
const mesh = `later${newId().slice(0, 12)}`;
let nc: NatsConnection | undefined;

beforeAll(async () => {
  nc = await connect({ servers: server.url });
});
afterAll(async () => {
  await nc?.close();
  await server.stop();
});

describeCallLaterConformance({
  name: "nats (nats-server 2.9, JetStream)",
  create: () => createNatsTransport({ servers: server.url, mesh }),
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
  deadlineMs: 1_000,
  timeoutMs: 30_000,
});
