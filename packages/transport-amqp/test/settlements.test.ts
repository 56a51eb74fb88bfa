import type { Channel, ConsumeMessage } from "amqplib";
import { describe, expect, it } from "vitest";
import { Settlements } from "../src/settlements.ts";

/** The frames a channel was asked to write, in order. */
type Written = [string, number, ...unknown[]];

function setup(closed = () => false): {
  s: Settlements;
  written: Written[];
  msg: (tag: number) => ConsumeMessage;
  channel: { throwing: boolean };
} {
  const written: Written[] = [];
  const channel = { throwing: false };
  const tagOf = (m: ConsumeMessage): number => m.fields.deliveryTag;
  const guard = (): void => {
    if (channel.throwing) throw new Error("Channel closing");
  };
  const ch = {
    ack: (m: ConsumeMessage, multiple?: boolean) => {
      guard();
      written.push(["ack", tagOf(m), multiple === true]);
    },
    nack: (m: ConsumeMessage, multiple?: boolean, requeue?: boolean) => {
      guard();
      written.push(["nack", tagOf(m), multiple === true, requeue]);
    },
    reject: (m: ConsumeMessage, requeue?: boolean) => {
      guard();
      written.push(["reject", tagOf(m), requeue]);
    },
  } as unknown as Channel;
  const msgs = new Map<number, ConsumeMessage>();
  const msg = (tag: number): ConsumeMessage => {
    let m = msgs.get(tag);
    if (m === undefined) {
      m = { fields: { deliveryTag: tag } } as ConsumeMessage;
      msgs.set(tag, m);
    }
    return m;
  };
  return { s: new Settlements(ch, closed), written, msg, channel };
}

const tick = (): Promise<void> => new Promise((r) => process.nextTick(r));

describe("Settlements", () => {
  it("writes the acks of one tick as one basic.ack multiple, at the end of the tick", async () => {
    const { s, written, msg } = setup();
    for (const t of [1, 2, 3]) s.delivered(msg(t));
    s.ack(msg(2));
    s.ack(msg(1));
    s.ack(msg(3));
    expect(written).toEqual([]);
    await tick();
    expect(written).toEqual([["ack", 3, true]]);
  });

  it("never covers a delivery still open: acks past it go one by one", async () => {
    const { s, written, msg } = setup();
    for (const t of [1, 2, 3, 4]) s.delivered(msg(t));
    s.ack(msg(1));
    s.ack(msg(3));
    s.ack(msg(4));
    await tick();
    expect(written).toEqual([
      ["ack", 1, true],
      ["ack", 3, false],
      ["ack", 4, false],
    ]);
    // 2 settles later: the run from 2 on is settled, only 2 itself is acked.
    s.ack(msg(2));
    await tick();
    expect(written.at(-1)).toEqual(["ack", 2, true]);
  });

  it("writes rejects and nacks at once; a later multiple ack passes over them", async () => {
    const { s, written, msg } = setup();
    for (const t of [1, 2, 3]) s.delivered(msg(t));
    s.ack(msg(1));
    s.reject(msg(2), false);
    s.nack(msg(3), true);
    expect(written).toEqual([
      ["reject", 2, false],
      ["nack", 3, false, true],
    ]);
    await tick();
    expect(written.at(-1)).toEqual(["ack", 1, true]);
    s.delivered(msg(4));
    s.ack(msg(4));
    await tick();
    expect(written.at(-1)).toEqual(["ack", 4, true]);
  });

  it("settles once: a second settlement of a tag, or one never delivered, writes nothing", async () => {
    const { s, written, msg } = setup();
    s.delivered(msg(1));
    s.ack(msg(1));
    s.ack(msg(1));
    s.reject(msg(1), false);
    s.ack(msg(9));
    s.reject(msg(8), true);
    await tick();
    expect(written).toEqual([["ack", 1, true]]);
  });

  it("flush() writes what waits at once (before the channel is closed)", () => {
    const { s, written, msg } = setup();
    s.delivered(msg(1));
    s.ack(msg(1));
    s.flush();
    expect(written).toEqual([["ack", 1, true]]);
  });

  it("writes nothing on a channel that is gone, and swallows a channel closing under it", async () => {
    let closed = false;
    const { s, written, msg, channel } = setup(() => closed);
    s.delivered(msg(1));
    s.delivered(msg(2));
    s.ack(msg(1));
    closed = true;
    await tick();
    expect(written).toEqual([]);
    closed = false;
    channel.throwing = true;
    s.ack(msg(2));
    await tick(); // an uncaught throw here would fail the test run
    expect(written).toEqual([]);
  });

  it("holds no tag of what is settled: acked in runs, or all rejected with no ack at all", async () => {
    const { s, written, msg } = setup();
    let most = 0;
    for (let t = 1; t <= 20_000; t++) {
      s.delivered(msg(t));
      s.ack(msg(t));
      most = Math.max(most, s.recorded);
      if (t % 64 === 0) await tick();
    }
    await tick();
    expect(s.recorded).toBe(0);
    expect(most).toBeLessThanOrEqual(64);
    expect(written).toHaveLength(Math.ceil(20_000 / 64)); // one multiple ack per tick
    // Rejected, never acked: nothing flushes, the record still stays small.
    for (let t = 20_001; t <= 40_000; t++) {
      s.delivered(msg(t));
      s.reject(msg(t), false);
      most = Math.max(most, s.recorded);
    }
    expect(most).toBeLessThan(1100);
    s.delivered(msg(40_001));
    s.ack(msg(40_001));
    await tick();
    expect(written.slice(-1)).toEqual([["ack", 40_001, true]]);
    expect(s.recorded).toBe(0);
  });

  it("keeps its record the size of what is open behind a delivery that never settles", async () => {
    const { s, written, msg } = setup();
    s.delivered(msg(1)); // a handler that runs for a long time
    for (let t = 2; t <= 5000; t++) {
      s.delivered(msg(t));
      s.ack(msg(t));
      if (t % 100 === 0) await tick();
    }
    await tick();
    expect(written).toHaveLength(4999);
    expect(written.every(([how, , multiple]) => how === "ack" && multiple === false)).toBe(true);
    expect(s.recorded).toBeLessThan(1200);
    s.ack(msg(1));
    s.delivered(msg(5001));
    s.ack(msg(5001));
    await tick();
    expect(written.slice(-1)).toEqual([["ack", 5001, true]]);
    expect(s.recorded).toBe(0);
  });
});
