import { describe, expect, it } from "vitest";
import { createMemoryHub, createMemoryTransport } from "@nuropb/transport-memory";
import {
  createCollector,
  delay,
  waitFor,
  watchEvents,
  withTimeout,
} from "@nuropb/transport-testkit";

describe("waitFor", () => {
  it("resolves once the predicate holds, sync or async", async () => {
    let n = 0;
    await waitFor(() => ++n >= 3, 1_000);
    expect(n).toBe(3);
    let m = 0;
    await waitFor(async () => ++m >= 2, 1_000);
    expect(m).toBe(2);
  });

  it("fails naming what it waited for", async () => {
    await expect(waitFor(() => false, 20, "the moon")).rejects.toThrow(
      "timed out after 20 ms waiting for the moon",
    );
  });

  it("passes on what the predicate throws", async () => {
    await expect(
      waitFor(() => {
        throw new Error("broken predicate");
      }, 1_000),
    ).rejects.toThrow("broken predicate");
  });
});

describe("withTimeout", () => {
  it("settles like the promise", async () => {
    await expect(withTimeout(Promise.resolve(7), 1_000)).resolves.toBe(7);
    await expect(withTimeout(Promise.reject(new Error("no")), 1_000)).rejects.toThrow("no");
  });

  it("rejects when the promise takes too long", async () => {
    await expect(withTimeout(new Promise(() => {}), 20, "never")).rejects.toThrow(
      "timed out after 20 ms waiting for never",
    );
  });
});

describe("createCollector", () => {
  it("waits for a count, resolving at once when already there", async () => {
    const c = createCollector<number>("numbers");
    const waiting = c.waitForCount(2, 1_000);
    c.push(1);
    setTimeout(() => c.push(2), 1);
    await expect(waiting).resolves.toEqual([1, 2]);
    await expect(c.waitForCount(1, 1_000)).resolves.toEqual([1, 2]);
    expect(c.items).toEqual([1, 2]);
  });

  it("waits for a matching item, past or future", async () => {
    const c = createCollector<string>();
    c.push("a");
    await expect(c.waitForItem((x) => x === "a", 1_000)).resolves.toBe("a");
    const waiting = c.waitForItem((x) => x.startsWith("b"), 1_000);
    c.push("c");
    c.push("bee");
    await expect(waiting).resolves.toBe("bee");
  });

  it("times out with what it has", async () => {
    const c = createCollector<number>("deliveries on A");
    c.push(1);
    await expect(c.waitForCount(3, 20)).rejects.toThrow(
      "timed out after 20 ms waiting for 3 deliveries on A (have 1 deliveries on A)",
    );
  });
});

describe("watchEvents", () => {
  it("collects a transport's events and ends when it closes", async () => {
    const hub = createMemoryHub();
    const t = createMemoryTransport({ hub });
    await t.connect();
    const events = watchEvents(t);
    await hub.disconnect(t);
    await events.waitForItem((e) => e.type === "reconnected", 1_000);
    await t.close();
    await withTimeout(events.ended, 1_000, "the stream to end");
    expect(events.items.map((e) => e.type)).toEqual(["disconnected", "reconnected", "closed"]);
  });

  it("stop() ends the stream early", async () => {
    const t = createMemoryTransport({ hub: createMemoryHub() });
    await t.connect();
    const events = watchEvents(t);
    events.stop();
    events.stop();
    await withTimeout(events.ended, 1_000, "the stream to end");
    await t.close();
    expect(events.items).toEqual([]);
  });
});

describe("delay", () => {
  it("resolves", async () => {
    await expect(delay(1)).resolves.toBeUndefined();
  });
});
