import { afterEach, describe, expect, it, vi } from "vitest";
import { noopLogger } from "@nuropb/protocol";
import type { Delivery, Logger } from "@nuropb/protocol";
import { decode, makeFrame, quiesce, recorder, serviceSpec, useHub, waitFor } from "./support.ts";

const env = useHub();
const Q = "nuropb-svc-sq";
const rpc = { kind: "rpc", service: "svc" } as const;

/** A handler that keeps deliveries without settling them. */
function holder(): { items: Delivery[]; handler: (d: Delivery) => void } {
  const items: Delivery[] = [];
  return { items, handler: (d) => void items.push(d) };
}

describe("competing consumers", () => {
  it("hands each message to exactly one consumer, round robin", async () => {
    const a = await env.open();
    const b = await env.open();
    const ra = recorder();
    const rb = recorder();
    await a.consumeService(serviceSpec("svc"), ra.handler);
    await b.consumeService(serviceSpec("svc"), rb.handler);
    expect(env.hub().consumerCount(Q)).toBe(2);
    for (let i = 0; i < 6; i++) await a.send(rpc, makeFrame(`m${i}`));
    await waitFor(() => ra.items.length + rb.items.length === 6);
    await quiesce();
    expect(ra.bodies()).toEqual(["m0", "m2", "m4"]);
    expect(rb.bodies()).toEqual(["m1", "m3", "m5"]);
  });

  it("skips consumers whose prefetch is full", async () => {
    const t = await env.open();
    const full = holder();
    const free = recorder();
    await t.consumeService(serviceSpec("svc", { prefetch: 1 }), full.handler);
    await t.consumeService(serviceSpec("svc", { prefetch: 0 }), free.handler);
    for (let i = 0; i < 4; i++) await t.send(rpc, makeFrame(`m${i}`));
    await waitFor(() => full.items.length + free.items.length === 4);
    expect(full.items.map((d) => decode(d.body))).toEqual(["m0"]);
    expect(free.bodies()).toEqual(["m1", "m2", "m3"]);
  });
});

describe("prefetch", () => {
  it("prefetch 1 allows one unsettled delivery at a time", async () => {
    const t = await env.open();
    const held = holder();
    await t.consumeService(serviceSpec("svc", { prefetch: 1 }), held.handler);
    for (let i = 0; i < 3; i++) await t.send(rpc, makeFrame(`m${i}`));
    for (let i = 0; i < 3; i++) {
      await waitFor(() => held.items.length === i + 1);
      await quiesce();
      expect(held.items).toHaveLength(i + 1);
      expect(env.hub().unsettledCount(Q)).toBe(1);
      expect(env.hub().queueDepth(Q)).toBe(2 - i);
      await held.items[i]?.ack();
    }
    expect(held.items.map((d) => decode(d.body))).toEqual(["m0", "m1", "m2"]);
  });

  it("prefetch 2 allows two; 0 is unlimited", async () => {
    const t = await env.open();
    const two = holder();
    await t.consumeService(serviceSpec("svc", { prefetch: 2 }), two.handler);
    for (let i = 0; i < 5; i++) await t.send(rpc, makeFrame(`m${i}`));
    await waitFor(() => two.items.length === 2);
    await quiesce();
    expect(two.items).toHaveLength(2);
    const unlimited = holder();
    await t.consumeService(serviceSpec("svc", { prefetch: 0 }), unlimited.handler);
    await waitFor(() => unlimited.items.length === 3);
    expect(env.hub().unsettledCount(Q)).toBe(5);
  });
});

describe("settlement", () => {
  it("ack removes the message", async () => {
    const t = await env.open();
    const rec = recorder();
    await t.consumeService(serviceSpec("svc"), rec.handler);
    await t.send(rpc, makeFrame("m"));
    await waitFor(() => rec.items.length === 1);
    await quiesce();
    expect(env.hub().queueDepth(Q)).toBe(0);
    expect(env.hub().unsettledCount(Q)).toBe(0);
    expect(env.hub().deadLetters()).toEqual([]);
    expect(rec.items).toHaveLength(1);
  });

  it("requeue puts the message back at the head, marked redelivered", async () => {
    const t = await env.open();
    const seen: string[] = [];
    await t.consumeService(serviceSpec("svc", { prefetch: 1 }), async (d) => {
      seen.push(`${decode(d.body)}:${String(d.redelivered)}`);
      await (decode(d.body) === "m0" && !d.redelivered ? d.requeue() : d.ack());
    });
    await t.send(rpc, makeFrame("m0"));
    await t.send(rpc, makeFrame("m1"));
    await waitFor(() => seen.length === 3);
    await quiesce();
    expect(seen).toEqual(["m0:false", "m0:true", "m1:false"]);
  });

  it("reject dead-letters the message with reason rejected", async () => {
    const t = await env.open();
    const rec = recorder((d) => d.reject());
    await t.consumeService(serviceSpec("svc"), rec.handler);
    await t.send(rpc, makeFrame("m", { replyTo: "r", ttlMs: 60_000 }));
    await waitFor(() => env.hub().deadLetters().length === 1);
    await quiesce();
    expect(rec.items).toHaveLength(1);
    const [dead] = env.hub().deadLetters();
    expect(dead?.queue).toBe(Q);
    expect(dead?.reason).toBe("rejected");
    expect(dead?.frame.correlationId).toBe("m");
    expect(dead?.frame.replyTo).toBe("r");
    expect(decode(dead?.frame.body ?? new Uint8Array())).toBe("m");
    env.hub().clearDeadLetters();
    expect(env.hub().deadLetters()).toEqual([]);
  });

  it("ignores a second settle call", async () => {
    const t = await env.open();
    const rec = recorder(async (d) => {
      await d.ack();
      await d.reject();
      await d.requeue();
      await d.ack();
    });
    await t.consumeService(serviceSpec("svc"), rec.handler);
    await t.send(rpc, makeFrame("m"));
    await waitFor(() => rec.items.length === 1);
    await quiesce();
    expect(rec.items).toHaveLength(1);
    expect(env.hub().deadLetters()).toEqual([]);
    expect(env.hub().queueDepth(Q)).toBe(0);
  });

  it("rejects a delivery whose handler throws or rejects without settling, and logs it", async () => {
    const errors: string[] = [];
    const logger: Logger = {
      ...noopLogger,
      error: (m) => void errors.push(m),
      child: () => logger,
    };
    const t = await env.open({ logger });
    let calls = 0;
    await t.consumeService(serviceSpec("svc"), (d) => {
      calls++;
      if (decode(d.body) === "sync") throw new Error("sync failure");
      return Promise.reject(new Error("async failure"));
    });
    await t.send(rpc, makeFrame("sync"));
    await t.send(rpc, makeFrame("async"));
    await waitFor(() => env.hub().deadLetters().length === 2);
    await quiesce();
    expect(calls).toBe(2);
    expect(
      env
        .hub()
        .deadLetters()
        .map((d) => d.reason),
    ).toEqual(["rejected", "rejected"]);
    expect(errors).toHaveLength(2);
  });

  it("keeps the outcome a handler settled before throwing", async () => {
    const warnings: string[] = [];
    const logger: Logger = {
      ...noopLogger,
      warn: (m) => void warnings.push(m),
      child: () => logger,
    };
    const t = await env.open({ logger });
    let calls = 0;
    await t.consumeService(serviceSpec("svc"), async (d) => {
      calls++;
      await d.ack();
      throw new Error("late failure");
    });
    await t.send(rpc, makeFrame("m"));
    await waitFor(() => warnings.length === 1);
    await quiesce();
    expect(calls).toBe(1);
    expect(env.hub().deadLetters()).toEqual([]);
  });

  it("a handler may settle after it returned", async () => {
    const t = await env.open();
    const held = holder();
    await t.consumeService(serviceSpec("svc"), held.handler);
    await t.send(rpc, makeFrame("m"));
    await waitFor(() => held.items.length === 1);
    expect(env.hub().unsettledCount(Q)).toBe(1);
    await held.items[0]?.ack();
    expect(env.hub().unsettledCount(Q)).toBe(0);
  });
});

describe("Listener.stop()", () => {
  it("stops deliveries; unsettled deliveries go back redelivered; late settles are no-ops", async () => {
    const a = await env.open();
    const b = await env.open();
    const held = holder();
    const listener = await a.consumeService(serviceSpec("svc", { prefetch: 1 }), held.handler);
    await a.send(rpc, makeFrame("m0"));
    await waitFor(() => held.items.length === 1);
    await listener.stop();
    await listener.stop();
    expect(env.hub().consumerCount(Q)).toBe(0);
    expect(env.hub().queueDepth(Q)).toBe(1);
    await held.items[0]?.ack();
    expect(env.hub().queueDepth(Q)).toBe(1);
    const rec = recorder();
    await b.consumeService(serviceSpec("svc"), rec.handler);
    await a.send(rpc, makeFrame("m1"));
    await waitFor(() => rec.items.length === 2);
    await quiesce();
    expect(rec.items.map((d) => `${decode(d.body)}:${String(d.redelivered)}`)).toEqual([
      "m0:true",
      "m1:false",
    ]);
    expect(held.items).toHaveLength(1);
  });

  it("lets a handler that is still running settle its delivery", async () => {
    const t = await env.open();
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => (release = resolve));
    const seen: Delivery[] = [];
    const listener = await t.consumeService(serviceSpec("svc"), async (d) => {
      seen.push(d);
      await gate;
      await d.ack();
    });
    await t.send(rpc, makeFrame("m"));
    await waitFor(() => seen.length === 1);
    await listener.stop();
    expect(env.hub().unsettledCount(Q)).toBe(0); // the stopped consumer is no longer counted
    release();
    await quiesce();
    expect(env.hub().queueDepth(Q)).toBe(0);
    const rec = recorder();
    await t.consumeService(serviceSpec("svc"), rec.handler);
    await t.send(rpc, makeFrame("marker"));
    await waitFor(() => rec.items.length === 1);
    expect(rec.bodies()).toEqual(["marker"]);
  });

  it("returns a running handler's delivery when it finishes without settling", async () => {
    const t = await env.open();
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => (release = resolve));
    let calls = 0;
    const listener = await t.consumeService(serviceSpec("svc"), async () => {
      calls++;
      await gate;
    });
    await t.send(rpc, makeFrame("m"));
    await waitFor(() => calls === 1);
    await listener.stop();
    expect(env.hub().queueDepth(Q)).toBe(0);
    release();
    await waitFor(() => env.hub().queueDepth(Q) === 1);
  });

  it("Symbol.asyncDispose stops the listener", async () => {
    const t = await env.open();
    {
      await using _listener = await t.consumeService(serviceSpec("svc"), () => {});
      expect(env.hub().consumerCount(Q)).toBe(1);
    }
    expect(env.hub().consumerCount(Q)).toBe(0);
  });
});

describe("transport close", () => {
  it("returns unsettled deliveries to the queue, redelivered, for another consumer", async () => {
    const a = await env.open();
    const b = await env.open();
    const held = holder();
    await a.consumeService(serviceSpec("svc"), held.handler);
    await b.send(rpc, makeFrame("m0"));
    await b.send(rpc, makeFrame("m1"));
    await waitFor(() => held.items.length === 2);
    await a.close();
    expect(env.hub().queueDepth(Q)).toBe(2);
    await held.items[0]?.ack();
    await held.items[1]?.reject();
    expect(env.hub().deadLetters()).toEqual([]);
    const rec = recorder();
    await b.consumeService(serviceSpec("svc"), rec.handler);
    await waitFor(() => rec.items.length === 2);
    expect(rec.items.map((d) => `${decode(d.body)}:${String(d.redelivered)}`)).toEqual([
      "m0:true",
      "m1:true",
    ]);
  });
});

describe("message ttl", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("dead-letters a message that waited longer than its ttl, even with no consumer", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date"] });
    const t = await env.open();
    const l = await t.consumeService(serviceSpec("svc"), () => {});
    await l.stop();
    await t.send(rpc, makeFrame("short", { ttlMs: 1000 }));
    await t.send(rpc, makeFrame("none"));
    await t.send(rpc, makeFrame("zero", { ttlMs: 0 }));
    vi.advanceTimersByTime(999);
    expect(env.hub().queueDepth(Q)).toBe(3);
    vi.advanceTimersByTime(1);
    expect(env.hub().queueDepth(Q)).toBe(2);
    expect(
      env
        .hub()
        .deadLetters()
        .map((d) => [d.frame.correlationId, d.reason]),
    ).toEqual([["short", "expired"]]);
    const rec = recorder();
    await t.consumeService(serviceSpec("svc"), rec.handler);
    await waitFor(() => rec.items.length === 2);
    expect(rec.bodies()).toEqual(["none", "zero"]);
  });

  it("checks expiry at dispatch even before the timer fired", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date"] });
    const t = await env.open();
    const l = await t.consumeService(serviceSpec("svc"), () => {});
    await l.stop();
    await t.send(rpc, makeFrame("old", { ttlMs: 50 }));
    await t.send(rpc, makeFrame("fresh", { ttlMs: 60_000 }));
    vi.setSystemTime(Date.now() + 100); // the clock moves; timers have not run yet
    const rec = recorder();
    await t.consumeService(serviceSpec("svc"), rec.handler);
    await waitFor(() => rec.items.length === 1);
    expect(rec.bodies()).toEqual(["fresh"]);
    expect(
      env
        .hub()
        .deadLetters()
        .map((d) => d.reason),
    ).toEqual(["expired"]);
  });

  it("does not expire a delivered message; a requeued one keeps its original expiry", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date"] });
    const t = await env.open();
    const held = holder();
    const listener = await t.consumeService(serviceSpec("svc"), held.handler);
    await t.send(rpc, makeFrame("m", { ttlMs: 1000 }));
    await waitFor(() => held.items.length === 1);
    vi.advanceTimersByTime(5000);
    expect(env.hub().deadLetters()).toEqual([]);
    await listener.stop(); // handler already returned: the delivery goes back, already expired
    vi.advanceTimersByTime(0);
    expect(
      env
        .hub()
        .deadLetters()
        .map((d) => d.reason),
    ).toEqual(["expired"]);
    expect(env.hub().queueDepth(Q)).toBe(0);
  });

  it("expires a message waiting behind a full prefetch", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date"] });
    const t = await env.open();
    const held = holder();
    await t.consumeService(serviceSpec("svc", { prefetch: 1 }), held.handler);
    await t.send(rpc, makeFrame("first"));
    await t.send(rpc, makeFrame("waits", { ttlMs: 100 }));
    await waitFor(() => held.items.length === 1);
    vi.advanceTimersByTime(100);
    await held.items[0]?.ack();
    await t.send(rpc, makeFrame("marker"));
    await waitFor(() => held.items.length === 2);
    expect(held.items.map((d) => decode(d.body))).toEqual(["first", "marker"]);
  });
});
