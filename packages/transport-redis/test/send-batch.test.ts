import { describe, expect, it } from "vitest";
import {
  newId,
  NuropbNotDeliveredError,
  NuropbTransportError,
  type Delivery,
  type Frame,
  type InboundFrame,
  type Transport,
} from "@nuropb/protocol";
import { until, useRedisServer } from "./redis-harness.ts";

// The frames sent in one tick travel in one script call (SEND_BATCH). What the conformance
// suites cannot see: order within and across batches, one failing frame among good ones, and a
// batch lost with its connection.
const redis = useRedisServer();

const encoder = new TextEncoder();
const frame = (label: string, extra: Partial<Frame> = {}): Frame => ({
  headers: { nuropb_type: "request", trace_id: null },
  body: encoder.encode(label),
  correlationId: label,
  ...extra,
});

/** A service that records the correlation ids it gets, in order, and acknowledges them. */
async function recordingService(t: Transport, service: string, events: string[] = []) {
  const got: string[] = [];
  await t.consumeService(
    { service, rpcBindings: [], eventBindings: events, prefetch: 1_000 },
    async (d: Delivery) => {
      got.push(d.correlationId);
      await d.ack();
    },
  );
  return got;
}

/**
 * A service that acks its delivery and then replies (after another send in the same tick when
 * `nestedSendFirst`), driven by one request: the commands Redis saw for the mesh, in order.
 */
async function ackThenReply(options: { readonly nestedSendFirst: boolean }): Promise<string[]> {
  const mesh = `sb${newId().slice(0, 10)}`;
  const t = await redis.open(mesh);
  if (options.nestedSendFirst) await recordingService(t, "other");
  const monitor = await redis.raw.monitor();
  const log: string[] = [];
  monitor.on("monitor", (_time: string, args: string[]) => {
    const [name, ...rest] = args;
    if (rest.some((a) => a.includes(mesh))) log.push(String(name).toLowerCase());
  });
  try {
    await t.consumeResponses({ address: "me" }, () => undefined);
    let replied = false;
    await t.consumeService(
      { service: "svc", rpcBindings: [], eventBindings: [], prefetch: 10 },
      async (d: Delivery) => {
        // Another send first in the same tick (a nested call, another handler's request…).
        if (options.nestedSendFirst)
          void t.send({ kind: "rpc", service: "other" }, frame("nested"));
        await d.ack();
        await t.send({ kind: "reply", address: "me" }, frame(`re-${d.correlationId}`));
        replied = true;
      },
    );
    log.length = 0;
    await t.send({ kind: "rpc", service: "svc" }, frame("q"));
    await until(() => replied, "the reply");
    await until(() => log.includes("rpush"), "the reply's push");
    return [...log];
  } finally {
    monitor.disconnect();
  }
}

/**
 * The request's XADD (inside its script), then the acknowledgement, then the reply's RPUSH (a
 * lone reply's script carries the acknowledgement itself, ahead of the push; the nested send,
 * when there is one, may go before the acknowledgement, in a call of its own).
 */
function expectAckBeforeReply(log: readonly string[]): void {
  const added = log.indexOf("xadd");
  const ack = log.indexOf("xack", added);
  const reply = log.indexOf("rpush", added);
  expect(added).toBeGreaterThanOrEqual(0);
  expect(ack).toBeGreaterThan(added);
  expect(reply).toBeGreaterThan(ack);
}

describe("sends batched per tick", () => {
  it("keep the order of the send calls, within a batch, across kinds and across batches split by size", async () => {
    const mesh = `sb${newId().slice(0, 10)}`;
    const t = await redis.open(mesh);
    const service = "orders";
    const got = await recordingService(t, service, ["orders.#"]);
    const replies: string[] = [];
    await t.consumeResponses({ address: "me" }, (f: InboundFrame) => {
      replies.push(f.correlationId);
    });
    // 700 sends in one tick: more than one script call holds (256 frames).
    const sends: Promise<void>[] = [];
    const expected: string[] = [];
    const expectedReplies: string[] = [];
    for (let i = 0; i < 700; i++) {
      const id = `m${i}`;
      if (i % 7 === 3) {
        sends.push(t.send({ kind: "event", topic: "orders.created" }, frame(id)));
        expected.push(id);
      } else if (i % 5 === 1) {
        sends.push(t.send({ kind: "reply", address: "me" }, frame(id)));
        expectedReplies.push(id);
      } else {
        sends.push(t.send({ kind: "rpc", service }, frame(id, { replyTo: "me", ttlMs: 60_000 })));
        expected.push(id);
      }
    }
    await Promise.all(sends);
    await until(() => got.length === expected.length, "every request");
    await until(() => replies.length === expectedReplies.length, "every response");
    expect(got).toEqual(expected);
    expect(replies).toEqual(expectedReplies);
  });

  it("a frame that fails on the server fails alone: the others of its batch go through", async () => {
    const mesh = `sb${newId().slice(0, 10)}`;
    const t = await redis.open(mesh);
    const got = await recordingService(t, "good");
    // A service bound in Redis whose stream key holds a string: XADD fails with WRONGTYPE.
    await redis.raw.sadd(`${mesh}:rpc:broken`, "broken");
    await redis.raw.set(`${mesh}:sq:broken`, "not a stream");
    await redis.raw.set(`${mesh}:rq:wrong`, "not a list");
    await redis.raw.set(`${mesh}:rql:wrong`, "someone", "PX", 60_000);
    const results = await Promise.allSettled([
      t.send({ kind: "rpc", service: "good" }, frame("a")),
      t.send({ kind: "rpc", service: "broken" }, frame("b")),
      t.send({ kind: "rpc", service: "good" }, frame("c")),
      t.send({ kind: "rpc", service: "nobody" }, frame("d")),
      t.send({ kind: "reply", address: "wrong" }, frame("e")),
      t.send({ kind: "reply", address: "unheld" }, frame("f")),
      t.send({ kind: "rpc", service: "good" }, frame("g")),
    ]);
    expect(results.map((r) => r.status)).toEqual([
      "fulfilled",
      "rejected",
      "fulfilled",
      "rejected",
      "rejected",
      "fulfilled",
      "fulfilled",
    ]);
    const reason = (i: number): unknown => (results[i] as PromiseRejectedResult).reason;
    expect(reason(1)).toBeInstanceOf(NuropbTransportError);
    expect(String((reason(1) as Error).message)).toMatch(/WRONGTYPE/);
    expect(reason(3)).toBeInstanceOf(NuropbNotDeliveredError);
    expect(reason(4)).toBeInstanceOf(NuropbTransportError);
    await until(() => got.length === 3, "the good requests");
    expect(got).toEqual(["a", "c", "g"]);
    expect(await redis.raw.exists(`${mesh}:rq:unheld`)).toBe(0);
  });

  it("an event stops at the first subscriber it cannot reach (bindings or stream of the wrong type); the batch's other frames go", async () => {
    for (const broken of ["bindings", "stream"] as const) {
      const mesh = `sb${newId().slice(0, 10)}`;
      const t = await redis.open(mesh);
      const got = await recordingService(t, "good", ["orders.#"]);
      await redis.raw.sadd(`${mesh}:evs`, "broken");
      if (broken === "bindings") await redis.raw.set(`${mesh}:evb:broken`, "not a set");
      else {
        await redis.raw.sadd(`${mesh}:evb:broken`, "orders.#");
        await redis.raw.set(`${mesh}:sq:broken`, "not a stream");
      }
      const results = await Promise.allSettled([
        t.send({ kind: "event", topic: "orders.created" }, frame("e1")),
        t.send({ kind: "rpc", service: "good" }, frame("r1")),
        t.send({ kind: "event", topic: "nothing.matches" }, frame("e2")),
      ]);
      const failed = results[0] as PromiseRejectedResult;
      expect(failed.status, broken).toBe("rejected");
      expect(failed.reason).toBeInstanceOf(NuropbTransportError);
      expect(String((failed.reason as Error).message)).toMatch(/WRONGTYPE/);
      expect(results[1]?.status).toBe("fulfilled");
      // Bindings the script cannot read fail every event; a broken stream only those it matches.
      expect(results[2]?.status, broken).toBe(broken === "bindings" ? "rejected" : "fulfilled");
      await until(() => got.includes("r1"), "the request");
    }
  });

  it("an acknowledgement reaches Redis before a reply sent after it in the same tick", async () => {
    expectAckBeforeReply(await ackThenReply({ nestedSendFirst: false }));
  });

  it("an acknowledgement goes before a reply sent after it even when another send opened the tick's batch", async () => {
    expectAckBeforeReply(await ackThenReply({ nestedSendFirst: true }));
  });

  it("a batch lost with its connection is sent again after the reconnect, once", async () => {
    const mesh = `sb${newId().slice(0, 10)}`;
    const t = await redis.open(mesh);
    const got = await recordingService(t, "svc");
    const clients = await redis.raw.client("LIST");
    const id = /id=(\d+) [^\n]*name=nuropb-\S+-main/.exec(String(clients))?.[1];
    expect(id).toBeDefined();
    // Writes wait on the server (EVALSHA included) while the batch is on its way; then the
    // connection goes, taking the unanswered batch with it.
    await redis.raw.client("PAUSE", 500, "WRITE");
    const sends = Array.from({ length: 300 }, (_, i) =>
      t.send({ kind: "rpc", service: "svc" }, frame(`x${i}`)),
    );
    await new Promise((r) => setTimeout(r, 100));
    await redis.raw.client("KILL", "ID", id as string);
    await Promise.all(sends);
    await until(() => got.length >= 300, "every request");
    await new Promise((r) => setTimeout(r, 200));
    expect(got).toEqual(Array.from({ length: 300 }, (_, i) => `x${i}`));
  });
});
