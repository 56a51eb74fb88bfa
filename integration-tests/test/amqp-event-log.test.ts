import { NuropbTransportError, eventLogOf, newId } from "@nuropb/protocol";
import type { EventLogEntry, Frame, Transport, TransportEventLog } from "@nuropb/protocol";
import { configureMesh, createAmqpTransport, teardownMesh } from "@nuropb/transport-amqp";
import {
  delay,
  describeEventLogConformance,
  frameText,
  testFrame,
  testHeaders,
  waitFor,
} from "@nuropb/transport-testkit";
import amqplib from "amqplib";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  closeConnectionByName,
  getQueue,
  mgmtGet,
  queueBindings,
  rabbitEnv,
  uniqueVhost,
} from "../src/amqp-helpers.ts";

// The event log on RabbitMQ: the stream queue `nuropb-event-log` bound to the events exchange.
const env = rabbitEnv();
const vhost = uniqueVhost("eventlog");
const url = `${env.amqpUrl}/${vhost}`;
const bare = uniqueVhost("eventlog-none");
const bareUrl = `${env.amqpUrl}/${bare}`;
const LOG = "nuropb-event-log";

beforeAll(async () => {
  await configureMesh({ url });
  await configureMesh({ url: bareUrl });
});
afterAll(async () => {
  await teardownMesh({ url });
  await teardownMesh({ url: bareUrl });
});

describeEventLogConformance({
  name: "amqp (a RabbitMQ stream queue per mesh)",
  create: () => createAmqpTransport({ url }),
  createWithoutLog: () => createAmqpTransport({ url: bareUrl }),
  // The stream's segments are an eighth of the first maxBytes (64 KiB here); RabbitMQ drops
  // whole segments, so the size scenario writes a few of them.
  retention: { maxAgeMs: 3_600_000, maxBytes: 512 * 1024 },
  retentionTestBytes: 128 * 1024,
});

function frame(text: string, headers: Record<string, string> = {}): Frame {
  return {
    headers: { ...testHeaders("event", `trace-${text}`), ...headers },
    body: new TextEncoder().encode(text),
    correlationId: newId(),
  };
}

describe("amqp event log: set-up and wire", () => {
  const opened: Transport[] = [];
  afterEach(async () => {
    await Promise.allSettled(opened.splice(0).map((t) => t.close()));
  });
  async function open(u = url): Promise<{ transport: Transport; log: TransportEventLog }> {
    const transport = createAmqpTransport({ url: u });
    opened.push(transport);
    await transport.connect();
    const log = eventLogOf(transport);
    if (log === undefined) throw new Error("no eventLog on the AMQP transport");
    return { transport, log };
  }

  it("configureMesh sets the log up: a stream bound with #, retention in a policy", async () => {
    const mesh = uniqueVhost("eventlog-cm");
    const meshUrl = `${env.amqpUrl}/${mesh}`;
    try {
      const first = await configureMesh({
        url: meshUrl,
        eventLog: { maxAgeMs: 7 * 86_400_000, maxBytes: 1 << 30 },
      });
      expect(first.declared).toEqual(expect.arrayContaining([`queue:${LOG}`, `policy:${LOG}`]));
      const q = await getQueue(mesh, LOG);
      expect(q?.durable).toBe(true);
      expect(q?.arguments).toEqual({
        "x-queue-type": "stream",
        "x-stream-max-segment-size-bytes": (1 << 30) / 8,
      });
      expect(await queueBindings(mesh, LOG)).toEqual([["nuropb-events-exchange", "#"]]);
      const policy = await mgmtGet<{ definition: Record<string, unknown>; pattern: string }>(
        `/policies/${encodeURIComponent(mesh)}/${LOG}`,
      );
      expect(policy?.pattern).toBe(`^${LOG}$`);
      expect(policy?.definition).toEqual({ "max-age": "604800s", "max-length-bytes": 1 << 30 });
      // Again, with another retention: the queue stays, the policy follows.
      const again = await configureMesh({
        url: meshUrl,
        eventLog: { maxAgeMs: 1_500, maxBytes: 1 << 20 },
      });
      expect(again.existing).toContain(`queue:${LOG}`);
      const updated = await mgmtGet<{ definition: Record<string, unknown> }>(
        `/policies/${encodeURIComponent(mesh)}/${LOG}`,
      );
      expect(updated?.definition).toEqual({ "max-age": "2s", "max-length-bytes": 1 << 20 });
      // Without eventLog, configureMesh leaves no log on a new mesh.
      expect(await getQueue(bare, LOG)).toBeNull();
    } finally {
      await teardownMesh({ url: meshUrl });
    }
  });

  it("setup refuses a bad retention with a TypeError, before any I/O", async () => {
    const { log } = await open();
    await expect(log.setup({ maxAgeMs: 0, maxBytes: 1 })).rejects.toBeInstanceOf(TypeError);
    await expect(
      log.setup({ maxAgeMs: 1000, maxBytes: Number.NaN } as never),
    ).rejects.toBeInstanceOf(TypeError);
    await expect(
      configureMesh({ url, eventLog: { maxAgeMs: -1, maxBytes: 10 } }),
    ).rejects.toBeInstanceOf(TypeError);
  });

  it("read and follow refuse bad positions and options with a TypeError", async () => {
    const { log } = await open();
    await log.setup({ maxAgeMs: 3_600_000, maxBytes: 512 * 1024 });
    for (const after of ["", "-1", "1.5", "abc", "99999999999999999999"]) {
      await expect(log.read({ from: { after }, limit: 1 })).rejects.toBeInstanceOf(TypeError);
    }
    await expect(log.read({ from: "start", limit: 0 })).rejects.toBeInstanceOf(TypeError);
    await expect(log.read({ from: "start", limit: 1, topics: ["a..b"] })).rejects.toBeInstanceOf(
      TypeError,
    );
    await expect(log.append("a.*", frame("x"))).rejects.toBeInstanceOf(TypeError);
    const it = log.follow({ from: "later" as never })[Symbol.asyncIterator]();
    await expect(it.next()).rejects.toBeInstanceOf(TypeError);
  });

  it("stores events a Python-like peer publishes (no stamp): position, topic, carried time", async () => {
    const { log } = await open();
    await log.setup({ maxAgeMs: 3_600_000, maxBytes: 512 * 1024 });
    const p = `py${newId().slice(0, 8)}`;
    const marker = await log.append(`${p}.marker`, frame("marker"));
    // Published as pika does: no confirm channel, no timestamp, headers of §3 only.
    const conn = await amqplib.connect(url);
    try {
      const ch = await conn.createConfirmChannel();
      ch.publish("nuropb-events-exchange", `${p}.from-python`, Buffer.from("py-body"), {
        contentType: "application/json",
        correlationId: "c0ffee",
        replyTo: "",
        headers: testHeaders("event", "trace-py"),
      });
      await ch.waitForConfirms();
    } finally {
      await conn.close();
    }
    const page = await log.read({ from: { after: marker.position }, topics: [`${p}.*`], limit: 5 });
    expect(page.more).toBe(false);
    expect(page.entries).toHaveLength(1);
    const entry = page.entries[0];
    expect(entry?.topic).toBe(`${p}.from-python`);
    expect(new TextDecoder().decode(entry?.frame.body)).toBe("py-body");
    expect(entry?.frame.headers).toEqual(testHeaders("event", "trace-py"));
    expect(entry?.frame.correlationId).toBe("c0ffee");
    expect(Number(entry?.position)).toBeGreaterThan(Number(marker.position));
    // No stamp: the entry carries the time of the entry before it (the marker here).
    expect(entry?.timestamp).toBe(marker.timestamp);
  });

  it("a follow from a position past the end (the log made again) goes on from the end", async () => {
    const { log } = await open();
    await log.setup({ maxAgeMs: 3_600_000, maxBytes: 512 * 1024 }); // as the suite above
    const p = `stale${newId().slice(0, 8)}`;
    const stored = await log.append(`${p}.old`, testFrame("old"));
    // A position kept from an earlier, longer log: offsets restart when the stream is made again.
    const stale = String(Number(stored.position) + 1_000_000);
    const got: string[] = [];
    const stop = new AbortController();
    const following = (async () => {
      for await (const e of log.follow({
        from: { after: stale },
        topics: [`${p}.*`],
        signal: stop.signal,
      })) {
        got.push(frameText(e.frame));
      }
    })();
    await delay(300);
    await log.append(`${p}.new`, testFrame("new"));
    await waitFor(() => got.length >= 1, 10_000, "the new entry after a stale position");
    expect(got).toEqual(["new"]);
    stop.abort();
    await following;
  });

  it("reads skip the barriers other reads wrote; services never get them", async () => {
    const { transport, log } = await open();
    await log.setup({ maxAgeMs: 3_600_000, maxBytes: 512 * 1024 });
    const p = `bar${newId().slice(0, 8)}`;
    const got: string[] = [];
    await transport.consumeService(
      { service: `${p}-svc`, rpcBindings: [], eventBindings: ["#"], prefetch: 10 },
      async (d) => {
        got.push(new TextDecoder().decode(d.body));
        await d.ack();
      },
    );
    const marker = await log.append(`${p}.m`, frame("m"));
    // Each read leaves a barrier in the stream.
    for (let i = 0; i < 3; i++) await log.read({ from: { after: marker.position }, limit: 10 });
    await log.append(`${p}.n`, frame("n"));
    const page = await log.read({ from: { after: marker.position }, limit: 10 });
    expect(page.entries.map((e) => e.topic)).toEqual([`${p}.n`]);
    // The service bound to # got the two events, never a barrier.
    await expect.poll(() => got.length, { timeout: 10_000 }).toBe(2);
    expect(got).toEqual(["m", "n"]);
  });

  it("a follow goes on after the connection is lost: no gap, no duplicate", async () => {
    const name = `eventlog-follow-${newId().slice(0, 8)}`;
    const follower = createAmqpTransport({
      url,
      connectionName: name,
      reconnect: { initialDelayMs: 100, maxDelayMs: 500 },
    });
    opened.push(follower);
    await follower.connect();
    const log = eventLogOf(follower) as TransportEventLog;
    const { log: publisher } = await open();
    await publisher.setup({ maxAgeMs: 3_600_000, maxBytes: 512 * 1024 });
    const p = `rc${newId().slice(0, 8)}`;
    const stop = new AbortController();
    const got: EventLogEntry[] = [];
    const following = (async () => {
      for await (const e of log.follow({ from: "end", topics: [`${p}.*`], signal: stop.signal })) {
        got.push(e);
      }
    })();
    try {
      await new Promise((r) => setTimeout(r, 300)); // attached (its barrier stored)
      await publisher.append(`${p}.e`, frame("before"));
      await waitFor(() => got.length === 1, 10_000, "the first entry");
      await closeConnectionByName(name);
      // Stored while the follower is away, then after it is back.
      for (const label of ["away1", "away2"]) await publisher.append(`${p}.e`, frame(label));
      await waitFor(() => follower.state === "open", 10_000, "the follower to reconnect");
      await publisher.append(`${p}.e`, frame("back"));
      await waitFor(() => got.length >= 4, 10_000, "four entries");
      await new Promise((r) => setTimeout(r, 250));
      expect(got.map((e) => new TextDecoder().decode(e.frame.body))).toEqual([
        "before",
        "away1",
        "away2",
        "back",
      ]);
    } finally {
      stop.abort();
      await following;
    }
  });

  it("without a log: available() is false, append and read reject, no queue appears", async () => {
    const { log } = await open(bareUrl);
    expect(await log.available()).toBe(false);
    const error = await log.append("x.y", frame("x")).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(NuropbTransportError);
    expect((error as Error).message).toMatch(/not set up/);
    await expect(log.read({ from: "end", limit: 1 })).rejects.toThrow(/not set up/);
    expect(await getQueue(bare, LOG)).toBeNull();
  });
});
