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

it("keeps a claim in the smallest bucket that outlives it, so the server removes it soon", async () => {
  // 2.9 KV has no per-key TTL: the bucket's max age is what removes an entry. With one bucket
  // of 49.7 days every callLater left its key for 7 weeks.
  const own = `ck${newId().slice(0, 12)}`;
  const t = createNatsTransport({ servers: server.url, mesh: own, reconnectWaitMs: 100 });
  const nc = await connect({ servers: server.url });
  const prefix = `nuropb_claims_${Buffer.from(own).toString("hex")}`;
  /** The max ages (ms) of the claim buckets holding `key` (a KV-safe key). */
  const bucketsOf = async (key: string): Promise<number[]> => {
    const jsm = await nc.jetstreamManager();
    const ages: number[] = [];
    for await (const si of jsm.streams.list()) {
      const name = si.config.name.replace(/^KV_/, "");
      if (!name.startsWith(prefix)) continue;
      const kv = await nc.jetstream().views.kv(name, { bindOnly: true });
      if ((await kv.get(key))?.operation === "PUT") ages.push(si.config.max_age / 1e6);
    }
    return ages;
  };
  try {
    await t.connect();
    const s = t.scheduling!;
    const hour = 3_600_000;
    const day = 24 * hour;
    const short = `short-${newId()}`;
    const long = `long-${newId()}`;
    await s.openClaim(short, 10 * 60_000 + 30_000); // core's claim without a deadline
    await s.openClaim(long, 2 * day);
    expect(await bucketsOf(short)).toEqual([hour]);
    const [longAge, ...more] = await bucketsOf(long);
    expect(more).toEqual([]);
    expect(longAge).toBeGreaterThan(2 * day);
    // The claims behave as one store, whichever bucket holds them.
    expect(await s.claim(short, "a")).toBe("won");
    expect(await s.claim(long, "b")).toBe("won");
    expect(await s.claim(long, "a")).toBe("lost");
    expect(await s.claim(`absent-${newId()}`, "a")).toBe("absent");
    // Reopening a live claim with a ttl of another bucket changes nothing (idempotent).
    await s.openClaim(short, 2 * day);
    expect(await bucketsOf(short)).toEqual([hour]);
    expect(await s.claim(short, "b")).toBe("lost");
    expect(await s.claim(short, "a")).toBe("won");
    // An expired claim is opened afresh in the bucket of its new ttl.
    const again = `again-${newId()}`;
    await s.openClaim(again, 50);
    await s.claim(again, "old");
    await new Promise((r) => setTimeout(r, 100));
    expect(await s.claim(again, "old")).toBe("absent");
    await s.openClaim(again, 2 * day);
    expect(await s.claim(again, "new")).toBe("won");
    expect(await s.claim(again, "old")).toBe("lost");
  } finally {
    await nc.close();
    await t.close();
  }
}, 40_000);
