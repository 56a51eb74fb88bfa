import { describe, expect, it } from "vitest";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import { createCollector, delay, testFrame, testServiceSpec } from "@nuropb/transport-testkit";
import type { Delivery } from "@nuropb/protocol";

// What the scheduling conformance does not pin down: the hub's own choices.
describe("memory hub scheduling", () => {
  it("drops a delayed frame that comes due while the service has no queue", async () => {
    const hub = createMemoryHub();
    const t = createMemoryTransport({ hub });
    await t.connect();
    await t.scheduling?.sendDelayed("later", testFrame("lost"), 20);
    await delay(60);
    const got = createCollector<Delivery>("deliveries");
    await t.consumeService(testServiceSpec("later"), async (d) => {
      got.push(d);
      await d.ack();
    });
    await t.scheduling?.sendDelayed("later", testFrame("kept"), 0);
    const [first] = await got.waitForCount(1, 2_000);
    expect(new TextDecoder().decode(first?.body)).toBe("kept");
    await delay(30);
    expect(got.items).toHaveLength(1);
    expect(hub.deadLetters()).toEqual([]);
    await t.close();
  });

  it("drops a reply to a service address with no queue, as the default exchange does", async () => {
    const hub = createMemoryHub();
    const t = createMemoryTransport({ hub });
    await t.connect();
    const address = t.scheduling?.serviceReplyAddress("nobody") ?? "";
    expect(address).toBe("nuropb-nobody-sq");
    await t.send({ kind: "reply", address }, testFrame("answer"));
    expect(hub.queueNames()).toEqual([]);
    await t.close();
  });

  it("keeps claims per mesh", async () => {
    const hub = createMemoryHub();
    const a = createMemoryTransport({ hub, mesh: "a" });
    const b = createMemoryTransport({ hub, mesh: "b" });
    await Promise.all([a.connect(), b.connect()]);
    await a.scheduling?.openClaim("k", 10_000);
    expect(await b.scheduling?.claim("k", "x")).toBe("absent");
    expect(await a.scheduling?.claim("k", "x")).toBe("won");
    await Promise.all([a.close(), b.close()]);
  });
});
