import { afterAll, beforeAll, describe } from "vitest";
import { connect, type NatsConnection } from "nats";
import { newId, type WireHeaders } from "@nuropb/protocol";
import { createNatsTransport } from "@nuropb/transport-nats";
import { launchNats } from "../src/brokers/nats.ts";
import { describeFailurePipeline } from "../src/failure-pipeline-scenarios.ts";

// The failure pipeline on NATS JetStream: delayed redelivery through the transport's delay
// stream, the failure record packed into the frame headers (`Nuropb-Frame`) of the copy in the
// mesh's dead-letter stream.
const server = await launchNats();
const mesh = `fp${newId().slice(0, 12)}`;
let nc: NatsConnection;

beforeAll(async () => {
  nc = await connect({ servers: server.url });
});
afterAll(async () => {
  await nc?.close();
  await server.stop();
});

describe("failure pipeline on NATS", () => {
  describeFailurePipeline({
    createTransport: () => createNatsTransport({ servers: server.url, mesh }),
    deadLetters: async (service) => {
      const jsm = await nc.jetstreamManager();
      let last: number;
      try {
        last = (await jsm.streams.info(`NUROPB-${mesh}-DL`)).state.last_seq;
      } catch (err) {
        if (String(err).includes("stream not found")) return [];
        throw err;
      }
      const out: WireHeaders[] = [];
      for (let seq = 1; seq <= last; seq++) {
        const m = await jsm.streams.getMessage(`NUROPB-${mesh}-DL`, { seq }).catch(() => null);
        const packed = m?.header.get("Nuropb-Frame");
        if (packed === undefined || packed === "") continue;
        const headers = (JSON.parse(packed) as { h: WireHeaders }).h;
        if (headers.nuropb_failure_service === service) out.push(headers);
      }
      return out;
    },
  });
});
