import { afterAll, expect, it } from "vitest";
import { connect } from "nats";
import { newId, type Delivery } from "@nuropb/protocol";
import { createNatsTransport } from "@nuropb/transport-nats";
import {
  createCollector,
  describeSchedulingConformance,
  frameText,
  testFrame,
  testServiceSpec,
  uniqueName,
} from "@nuropb/transport-testkit";
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

it("delivers a frame delayed after the delay stream was re-created (no stale message id)", async () => {
  // The mover's Nats-Msg-Id once came from the delay stream's sequence: a re-created stream
  // starts again at 1, and the service stream took the new frame for a duplicate of the old.
  const own = `ck${newId().slice(0, 12)}`;
  const t = createNatsTransport({ servers: server.url, mesh: own, reconnectWaitMs: 100 });
  const nc = await connect({ servers: server.url });
  try {
    await t.connect();
    const service = uniqueName();
    const got = createCollector<Delivery>("deliveries");
    await t.consumeService(testServiceSpec(service), async (d) => {
      got.push(d);
      await d.ack();
    });
    await t.scheduling!.sendDelayed(service, testFrame("one"), 10);
    await got.waitForItem((d) => frameText(d) === "one", 15_000);
    const jsm = await nc.jetstreamManager();
    await jsm.streams.delete(`NUROPB-${own}-DELAYED`);
    await t.scheduling!.sendDelayed(service, testFrame("two"), 10);
    await got.waitForItem((d) => frameText(d) === "two", 15_000);
    expect(got.items.map((d) => frameText(d))).toEqual(["one", "two"]);
  } finally {
    await nc.close();
    await t.close();
  }
}, 40_000);
