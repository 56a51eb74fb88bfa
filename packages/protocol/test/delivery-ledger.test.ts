import { describe, expect, it } from "vitest";
import type { InboundFrame, Logger } from "@nuropb/protocol";
import { createDeliveryLedger } from "@nuropb/protocol/transport-kit";
import type { DeliveryLedgerOptions, Settlement } from "@nuropb/protocol/transport-kit";
import { deferred } from "./support/deferred.ts";

const frame: InboundFrame = {
  headers: { nuropb_type: "request" },
  body: new Uint8Array([1, 2, 3]),
  correlationId: "c-1",
  replyTo: "reply-here",
  ttlMs: 500,
  redelivered: false,
};

/** A ledger over string messages that records what it asks of the broker. */
function setup(overrides: Partial<DeliveryLedgerOptions<string>> = {}) {
  const settled: [string, Settlement][] = [];
  const givenBack: string[][] = [];
  const logs: [level: string, msg: string][] = [];
  let releases = 0;
  const logger: Logger = {
    debug: (m) => void logs.push(["debug", m]),
    info: (m) => void logs.push(["info", m]),
    warn: (m) => void logs.push(["warn", m]),
    error: (m) => void logs.push(["error", m]),
    child: () => logger,
  };
  const ledger = createDeliveryLedger<string>({
    prefetch: 2,
    settle: (m, outcome) => void settled.push([m, outcome]),
    giveBack: (ms) => void givenBack.push([...ms]),
    onRelease: () => void releases++,
    logger,
    describe: (m) => ({ message: m }),
    ...overrides,
  });
  return { ledger, settled, givenBack, logs, releases: () => releases };
}

describe("createDeliveryLedger", () => {
  it("refuses a bad prefetch or missing callbacks at once", () => {
    const ok = { settle: () => undefined, giveBack: () => undefined };
    expect(() => createDeliveryLedger({ ...ok, prefetch: -1 })).toThrow(TypeError);
    expect(() => createDeliveryLedger({ ...ok, prefetch: 1.5 })).toThrow(/prefetch/);
    expect(() => createDeliveryLedger({ prefetch: 0, giveBack: () => undefined } as never)).toThrow(
      /settle and giveBack must be functions/,
    );
    expect(() => createDeliveryLedger(null as never)).toThrow(TypeError);
  });

  it("hands the handler the frame's fields with settle methods", async () => {
    const { ledger, settled } = setup();
    const held = ledger.hold("m1");
    let seen: unknown;
    void ledger.dispatch(held, frame, (d) => {
      seen = { ...d };
      return d.ack();
    });
    await Promise.resolve();
    expect(seen).toEqual({
      headers: frame.headers,
      body: frame.body,
      correlationId: "c-1",
      replyTo: "reply-here",
      ttlMs: 500,
      redelivered: false,
    });
    expect(settled).toEqual([["m1", "ack"]]);
  });

  it("settles once: a second ack, requeue or reject is a no-op", async () => {
    const { ledger, settled, releases } = setup();
    const held = ledger.hold("m1");
    const d = ledger.delivery(held, frame);
    await d.requeue();
    await d.ack();
    await d.reject();
    await ledger.settle(held, "ack");
    expect(settled).toEqual([["m1", "requeue"]]);
    expect(held.settled).toBe(true);
    expect(ledger.size).toBe(0);
    expect(releases()).toBe(1);
  });

  it("rejects a delivery whose handler throws without settling, and logs an error", async () => {
    const { ledger, settled, logs } = setup();
    const result = ledger.dispatch(ledger.hold("sync"), frame, () => {
      throw new Error("boom");
    });
    expect(result).toBeUndefined();
    // A synchronous throw is settled before dispatch returns.
    expect(settled).toEqual([["sync", "reject"]]);
    await ledger.dispatch(ledger.hold("async"), frame, async () => {
      throw new Error("later boom");
    });
    expect(settled).toEqual([
      ["sync", "reject"],
      ["async", "reject"],
    ]);
    expect(logs.filter(([level]) => level === "error")).toHaveLength(2);
    expect(ledger.size).toBe(0);
    expect(ledger.running).toBe(0);
  });

  it("keeps the outcome a handler settled before it threw, and only warns", async () => {
    const { ledger, settled, logs } = setup();
    await ledger.dispatch(ledger.hold("m1"), frame, async (d) => {
      await d.requeue();
      throw new Error("after settling");
    });
    expect(settled).toEqual([["m1", "requeue"]]);
    expect(logs).toEqual([["warn", "delivery handler failed after settling"]]);
  });

  it("leaves an unsettled delivery alone when the handler returns on a running ledger", async () => {
    const { ledger, settled, givenBack } = setup();
    const held = ledger.hold("m1");
    await ledger.dispatch(held, frame, async () => undefined);
    expect(held.handlerDone).toBe(true);
    expect(held.settled).toBe(false);
    expect(settled).toEqual([]);
    expect(givenBack).toEqual([]);
    expect(ledger.size).toBe(1);
  });

  it("stop gives back returned deliveries at once and running ones when they return", async () => {
    const { ledger, settled, givenBack } = setup({ prefetch: 0 });
    const returned = ledger.hold("returned");
    void ledger.dispatch(returned, frame, () => undefined);
    const gate = deferred();
    const running = ledger.hold("running");
    const done = ledger.dispatch(running, frame, () => gate.promise);
    const settling = deferred();
    const settles = ledger.hold("settles");
    const settlesDone = ledger.dispatch(settles, frame, async (d) => {
      await settling.promise;
      await d.ack();
    });
    await ledger.stop();
    expect(ledger.stopped).toBe(true);
    expect(givenBack).toEqual([["returned"]]);
    // Settling a delivery given back is a no-op.
    await ledger.delivery(returned, frame).ack();
    // A handler still running may settle its delivery.
    settling.resolve();
    await settlesDone;
    expect(settled).toEqual([["settles", "ack"]]);
    gate.resolve();
    await done;
    expect(givenBack).toEqual([["returned"], ["running"]]);
    expect(ledger.size).toBe(0);
    await ledger.stop(); // idempotent
    expect(givenBack).toHaveLength(2);
  });

  it("close and giveBackAll give back every unsettled delivery in one batch", async () => {
    const { ledger, givenBack, settled } = setup({ prefetch: 0 });
    const a = ledger.hold("a");
    const b = ledger.hold("b");
    void ledger.dispatch(b, frame, () => new Promise<void>(() => undefined));
    await ledger.settle(ledger.hold("c"), "ack");
    await ledger.giveBackAll();
    expect(ledger.stopped).toBe(false);
    expect(givenBack).toEqual([["a", "b"]]);
    await ledger.delivery(a, frame).reject();
    expect(settled).toEqual([["c", "ack"]]);
    ledger.hold("d");
    await ledger.close();
    expect(ledger.stopped).toBe(true);
    expect(givenBack).toEqual([["a", "b"], ["d"]]);
  });

  it("counts prefetch slots: taken while unsettled, freed by settling or giving back", async () => {
    const { ledger, releases } = setup({ prefetch: 2 });
    expect(ledger.hasRoom()).toBe(true);
    const a = ledger.hold("a");
    const b = ledger.hold("b");
    expect(ledger.size).toBe(2);
    expect(ledger.free()).toBe(0);
    expect(ledger.hasRoom()).toBe(false);
    await ledger.settle(a, "ack");
    expect(ledger.free()).toBe(1);
    expect(ledger.hasRoom()).toBe(true);
    await ledger.giveBack(b);
    expect(ledger.free()).toBe(2);
    expect(releases()).toBe(2);
    await ledger.stop();
    expect(ledger.hasRoom()).toBe(false);
  });

  it("prefetch 0 is unlimited", () => {
    const { ledger } = setup({ prefetch: 0 });
    for (let i = 0; i < 1000; i++) ledger.hold(`m${i}`);
    expect(ledger.hasRoom()).toBe(true);
    expect(ledger.free()).toBe(Number.POSITIVE_INFINITY);
  });

  it("finds deliveries by key while unsettled; release frees without telling the broker", () => {
    const { ledger, settled, givenBack } = setup();
    const held = ledger.hold("entry", "1-0");
    expect(ledger.holds("1-0")).toBe(true);
    expect(ledger.unsettled().map((h) => h.message)).toEqual(["entry"]);
    expect(ledger.release(held)).toBe(true);
    expect(ledger.release(held)).toBe(false);
    expect(ledger.holds("1-0")).toBe(false);
    expect(settled).toEqual([]);
    expect(givenBack).toEqual([]);
  });

  it("swallows and logs a broker failure while settling or giving back", async () => {
    const { ledger, logs } = setup({
      settle: () => Promise.reject(new Error("channel gone")),
      giveBack: () => {
        throw new Error("socket gone");
      },
    });
    await expect(ledger.settle(ledger.hold("a"), "ack")).resolves.toBeUndefined();
    await expect(ledger.giveBack(ledger.hold("b"))).resolves.toBeUndefined();
    expect(logs).toEqual([
      ["debug", "settle failed; the broker redelivers the message"],
      ["debug", "give back failed; the broker redelivers the message"],
    ]);
  });

  it("works without a logger", async () => {
    const ledger = createDeliveryLedger<string>({
      prefetch: 1,
      settle: () => undefined,
      giveBack: () => undefined,
    });
    expect(() =>
      ledger.dispatch(ledger.hold("m"), frame, () => {
        throw new Error("x");
      }),
    ).not.toThrow();
    expect(ledger.size).toBe(0);
  });
});
