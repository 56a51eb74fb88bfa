import { describe, expect, it } from "vitest";
import { newId, type Delivery, type Frame } from "@nuropb/protocol";
import { until, useRedisServer } from "./redis-harness.ts";

// Listeners keep several blocking reads queued on their connection (topped up a batch at a
// time). What that must not change: the window, a stopped listener taking nothing more, a
// stream that lost its group being declared again.
const redis = useRedisServer();

const encoder = new TextEncoder();
const frame = (label: string): Frame => ({
  headers: { nuropb_type: "request" },
  body: encoder.encode(label),
  correlationId: label,
});

/** Entries of `stream` pending (delivered, not acknowledged), per consumer of the group. */
async function pendingByConsumer(stream: string): Promise<Map<string, number>> {
  const rows = (await redis.raw.call("XINFO", "CONSUMERS", stream, "nuropb")) as unknown[][];
  const out = new Map<string, number>();
  for (const row of rows) {
    const fields = new Map<string, unknown>();
    for (let i = 0; i < row.length; i += 2) fields.set(String(row[i]), row[i + 1]);
    out.set(String(fields.get("name")), Number(fields.get("pending")));
  }
  return out;
}

const spec = (service: string, prefetch: number) => ({
  service,
  rpcBindings: [],
  eventBindings: [],
  prefetch,
});

describe("queued blocking reads", () => {
  it("never deliver more than the window: prefetch 2 holds 2 of 20 until they are settled", async () => {
    const mesh = `br${newId().slice(0, 10)}`;
    const t = await redis.open(mesh);
    const held: Delivery[] = [];
    const got: string[] = [];
    await t.consumeService(spec("svc", 2), (d) => {
      held.push(d);
      got.push(d.correlationId);
    });
    const labels = Array.from({ length: 20 }, (_, i) => `m${i}`);
    for (const l of labels) await t.send({ kind: "rpc", service: "svc" }, frame(l));
    await until(() => held.length === 2, "the first two deliveries");
    // Every read the listener queued is on the server by now, and the entries are there to
    // take: any read asking for more than the window's room would have taken them already.
    await redis.raw.ping();
    await new Promise((r) => setImmediate(r));
    const stream = `${mesh}:sq:svc`;
    const pending = [...(await pendingByConsumer(stream)).values()].reduce((a, b) => a + b, 0);
    expect(pending).toBe(2);
    expect(held).toHaveLength(2);
    // Settling frees the room: everything arrives, in order, never more than two at a time.
    while (got.length < labels.length || held.length > 0) {
      const d = held.shift();
      if (d !== undefined) await d.ack();
      else await until(() => held.length > 0, "the next delivery");
      expect(held.length).toBeLessThanOrEqual(2);
    }
    expect(got).toEqual(labels);
    await until(async () => (await redis.raw.xlen(stream)) === 0, "the stream to empty");
  });

  it("a stopped listener takes nothing more: what is sent afterwards goes to the next one", async () => {
    const mesh = `br${newId().slice(0, 10)}`;
    const t = await redis.open(mesh);
    const first: string[] = [];
    const listener = await t.consumeService(spec("svc", 64), async (d) => {
      first.push(d.correlationId);
      await d.ack();
    });
    await t.send({ kind: "rpc", service: "svc" }, frame("before"));
    await until(() => first.length === 1, "the first delivery");
    await listener.stop();
    await until(
      async () => !String(await redis.raw.client("LIST")).includes(`${mesh}-sq-svc`),
      "the reading connection to go",
    );
    for (let i = 0; i < 5; i++) await t.send({ kind: "rpc", service: "svc" }, frame(`after${i}`));
    const second: string[] = [];
    await t.consumeService(spec("svc", 64), async (d) => {
      second.push(d.correlationId);
      await d.ack();
    });
    await until(() => second.length === 5, "the five requests on the next listener");
    expect(first).toEqual(["before"]);
    expect(second).toEqual(["after0", "after1", "after2", "after3", "after4"]);
    const pending = [...(await pendingByConsumer(`${mesh}:sq:svc`)).values()];
    expect(pending.every((n) => n === 0)).toBe(true);
  });

  it("what a stopping listener's queued reads still bring goes back unmarked: no handler had it", async () => {
    const mesh = `br${newId().slice(0, 10)}`;
    const t = await redis.open(mesh);
    const labels = Array.from({ length: 300 }, (_, i) => `m${i}`);
    const first: string[] = [];
    let stopping: Promise<void> | undefined;
    let sent!: () => void;
    const allSent = new Promise<void>((r) => (sent = r));
    const listener = await t.consumeService(spec("svc", 16), async (d) => {
      first.push(d.correlationId);
      await allSent;
      // Stop while the backlog is being read, reads queued on the connection.
      if (first.length >= 20 && stopping === undefined) stopping = listener.stop();
      await d.ack();
    });
    for (const l of labels) await t.send({ kind: "rpc", service: "svc" }, frame(l));
    sent();
    await until(() => stopping !== undefined, "the stop");
    await stopping;
    const second = new Map<string, boolean>();
    await t.consumeService(spec("svc", 64), async (d) => {
      second.set(d.correlationId, d.redelivered);
      await d.ack();
    });
    await until(
      () => labels.every((l) => first.includes(l) || second.has(l)),
      "every request handled once",
    );
    for (const [label, redelivered] of second) {
      // Only what the first listener's handler had may come back marked.
      if (!first.includes(label)) expect(redelivered, label).toBe(false);
    }
  });

  it("a stream that lost its group is declared again once, and the listener reads on", async () => {
    const mesh = `br${newId().slice(0, 10)}`;
    const t = await redis.open(mesh);
    const got: string[] = [];
    await t.consumeService(spec("svc", 64), async (d) => {
      got.push(d.correlationId);
      await d.ack();
    });
    await t.send({ kind: "rpc", service: "svc" }, frame("one"));
    await until(() => got.length === 1, "the first delivery");
    // An operator deletes the stream (and its group) under the listener's queued reads.
    await redis.raw.del(`${mesh}:sq:svc`);
    await t.send({ kind: "rpc", service: "svc" }, frame("two"));
    // The read under way waits out its block (5 s) on Redis 7.0; the next ones fail NOGROUP.
    await until(() => got.length === 2, "the delivery after the re-declaration", 20_000);
    expect(got).toEqual(["one", "two"]);
    const groups = (await redis.raw.call("XINFO", "GROUPS", `${mesh}:sq:svc`)) as unknown[][];
    expect(groups).toHaveLength(1);
  }, 30_000);

  it("a stopped response listener lets go of its reading connection and its address", async () => {
    const mesh = `br${newId().slice(0, 10)}`;
    const t = await redis.open(mesh);
    const got: string[] = [];
    const listener = await t.consumeResponses({ address: "me" }, (f) => {
      got.push(f.correlationId);
    });
    await t.send({ kind: "reply", address: "me" }, frame("r1"));
    await until(() => got.length === 1, "the response");
    await listener.stop();
    await until(
      async () => !String(await redis.raw.client("LIST")).includes(`${mesh}-rq-me`),
      "the reading connection to go",
    );
    expect(await redis.raw.exists(`${mesh}:rql:me`)).toBe(0);
    await t.send({ kind: "reply", address: "me" }, frame("r2"));
    expect(await redis.raw.exists(`${mesh}:rq:me`)).toBe(0);
    expect(got).toEqual(["r1"]);
  });
});
