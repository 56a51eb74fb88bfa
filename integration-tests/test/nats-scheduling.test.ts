import { afterAll } from "vitest";
import { newId } from "@nuropb/protocol";
import { createNatsTransport } from "@nuropb/transport-nats";
import { describeSchedulingConformance } from "@nuropb/transport-testkit";
import { launchNats } from "../src/brokers/nats.ts";

// A delay stream worked by every connected transport (nak with the remaining delay), and claims
// in a KV bucket with the expiry in the value (2.9 KV has no per-key TTL).
const server = await launchNats();
afterAll(() => server.stop());
const mesh = `ck${newId().slice(0, 12)}`;

describeSchedulingConformance({
  name: "nats (JetStream delay stream, KV claims)",
  create: () => createNatsTransport({ servers: server.url, mesh, reconnectWaitMs: 100 }),
});
