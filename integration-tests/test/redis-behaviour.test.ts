import fc from "fast-check";
import { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from "vitest";
import { newId, topicMatches, type Delivery, type Transport } from "@nuropb/protocol";
import { createRedisTransport, type RedisTransportOptions } from "@nuropb/transport-redis";
import {
  createCollector,
  delay,
  frameText,
  testFrame,
  testHeaders,
  testServiceSpec,
  uniqueName,
  waitFor,
} from "@nuropb/transport-testkit";

// What the conformance suite cannot see: the dead-letter stream, expiry, the server-side topic
// matching, claiming from consumers that died, and the keys other processes read.
const url = inject("redisUrl");
const mesh = `rb${newId().slice(0, 10)}`;
const made: Transport[] = [];
let raw: Redis;

beforeAll(async () => {
  raw = new Redis(url, { lazyConnect: true });
  await raw.connect();
});
afterAll(async () => {
  await raw.quit();
});
afterEach(async () => {
  await Promise.allSettled(made.splice(0).map((t) => t.close()));
});

async function open(options: Partial<RedisTransportOptions> = {}): Promise<Transport> {
  const t = createRedisTransport({ url, mesh, ...options });
  made.push(t);
  await t.connect();
  return t;
}

/** Dead letters of `service`, as field maps. */
async function deadLetters(service: string): Promise<Map<string, Buffer>[]> {
  const entries = (await raw.xrangeBuffer(`${mesh}:dl`, "-", "+")) as [Buffer, Buffer[]][];
  return entries
    .map(([, fields]) => {
      const m = new Map<string, Buffer>();
      for (let i = 0; i + 1 < fields.length; i += 2)
        m.set(String(fields[i]), fields[i + 1] as Buffer);
      return m;
    })
    .filter((m) => m.get("service")?.toString() === service);
}

describe("redis transport behaviour", () => {
  it("reject() dead-letters the entry once, fields intact, with reason, service and original id", async () => {
    const t = await open();
    const service = uniqueName();
    await t.consumeService(testServiceSpec(service), (d) => d.reject());
    const body = new Uint8Array([0, 1, 2, 254, 255]);
    await t.send(
      { kind: "rpc", service },
      testFrame("x", { body, replyTo: "nuropb-x-rq", ttlMs: 60_000 }),
    );
    await waitFor(async () => (await deadLetters(service)).length > 0, 10_000, "a dead letter");
    await delay(300);
    const dls = await deadLetters(service);
    expect(dls).toHaveLength(1);
    const dl = dls[0] as Map<string, Buffer>;
    expect(dl.get("reason")?.toString()).toBe("rejected");
    expect(dl.get("c")?.toString()).toBe("x");
    expect(dl.get("r")?.toString()).toBe("nuropb-x-rq");
    expect(JSON.parse(dl.get("h")?.toString() ?? "")).toEqual(testHeaders("request"));
    expect(new Uint8Array(dl.get("b") ?? Buffer.alloc(0))).toEqual(body);
    expect(dl.get("id")?.toString()).toMatch(/^\d+-\d+$/);
    expect(await raw.xlen(`${mesh}:sq:${service}`)).toBe(0);
  });

  it("a request that outlives its ttl in the queue is dead-lettered as expired, never delivered", async () => {
    const t = await open();
    const service = uniqueName();
    const got = createCollector<Delivery>("deliveries");
    await t.consumeService(testServiceSpec(service, { prefetch: 1 }), (d) => got.push(d));
    await t.send({ kind: "rpc", service }, testFrame("first", { ttlMs: 60_000 }));
    const [first] = await got.waitForCount(1);
    await t.send({ kind: "rpc", service }, testFrame("expires", { ttlMs: 100 }));
    await delay(400); // the ttl passes while the request waits behind "first"
    await first?.ack();
    await t.send({ kind: "rpc", service }, testFrame("marker", { ttlMs: 60_000 }));
    const items = await got.waitForCount(2);
    expect(items.map(frameText)).toEqual(["first", "marker"]);
    await waitFor(async () => (await deadLetters(service)).length > 0, 10_000, "a dead letter");
    const [dl] = await deadLetters(service);
    expect(dl?.get("reason")?.toString()).toBe("expired");
    expect(dl?.get("b")?.toString()).toBe("expires");
  });

  it("the server-side topic matcher (Lua) agrees with topicMatches (fast-check)", async () => {
    const t = await open();
    const word = fc.constantFrom("a", "b", "c");
    const pattern = fc
      .array(fc.oneof(word, fc.constant("*"), fc.constant("#")), { minLength: 1, maxLength: 4 })
      .map((w) => w.join("."));
    const topic = fc.array(word, { minLength: 1, maxLength: 4 }).map((w) => w.join("."));
    const patterns = [...new Set(fc.sample(pattern, { seed: 5, numRuns: 40 }))];
    const topics = [...new Set(fc.sample(topic, { seed: 6, numRuns: 60 }))];
    // Bindings written as another process would find them: one service per pattern.
    const services = patterns.map((p, i) => ({
      service: `lua${i}-${newId().slice(0, 6)}`,
      pattern: p,
    }));
    for (const { service, pattern: p } of services) {
      await raw.sadd(`${mesh}:evb:${service}`, p);
      await raw.sadd(`${mesh}:evs`, service);
    }
    const prefix = newId().slice(0, 6);
    for (const tp of topics)
      await t.send({ kind: "event", topic: `${tp}` }, testFrame(`${prefix}|${tp}`));
    for (const { service, pattern: p } of services) {
      const entries = (await raw.xrangeBuffer(`${mesh}:sq:${service}`, "-", "+")) as [
        Buffer,
        Buffer[],
      ][];
      const got = entries
        .map(([, f]) => f[f.findIndex((x) => x.toString() === "c") + 1]?.toString() ?? "")
        .filter((c) => c.startsWith(`${prefix}|`))
        .map((c) => c.slice(prefix.length + 1))
        .sort();
      expect(got, `pattern ${p}`).toEqual(topics.filter((tp) => topicMatches(p, tp)).sort());
    }
    await raw.srem(`${mesh}:evs`, ...services.map((s) => s.service));
  });

  it("the Lua matcher does not backtrack: a pattern of many # against a long topic returns", async () => {
    const t = await open();
    const service = `lua-hash-${newId().slice(0, 6)}`;
    const pattern = [...Array(30).fill("#"), "x"].join(".");
    await raw.sadd(`${mesh}:evb:${service}`, pattern);
    await raw.sadd(`${mesh}:evs`, service);
    const topic = Array(200).fill("a").join(".");
    // Backtracking would try C(230, 30) splits and hold the server in the script.
    await t.send({ kind: "event", topic }, testFrame("miss"));
    await t.send({ kind: "event", topic: `${topic}.x` }, testFrame("hit"));
    const entries = (await raw.xrangeBuffer(`${mesh}:sq:${service}`, "-", "+")) as [
      Buffer,
      Buffer[],
    ][];
    const got = entries.map(([, f]) => f[f.findIndex((x) => x.toString() === "c") + 1]?.toString());
    expect(got).toEqual(["hit"]);
    await raw.srem(`${mesh}:evs`, service);
  });

  it("instances of one service with different bindings serve the union, each event once", async () => {
    const a = await open();
    const b = await open();
    const service = uniqueName();
    const topic = uniqueName();
    const got = createCollector<string>("events");
    const handler = async (d: Delivery): Promise<void> => {
      got.push(frameText(d));
      await d.ack();
    };
    await a.consumeService(
      testServiceSpec(service, { eventBindings: [`${topic}.one`], prefetch: 4 }),
      handler,
    );
    await b.consumeService(
      testServiceSpec(service, { eventBindings: [`${topic}.two`, `${topic}.*`], prefetch: 4 }),
      handler,
    );
    const sent: string[] = [];
    for (let i = 0; i < 10; i++) {
      const tp = `${topic}.${i % 2 === 0 ? "one" : "two"}`;
      sent.push(`${tp}#${i}`);
      await a.send({ kind: "event", topic: tp }, testFrame(`${tp}#${i}`));
    }
    await got.waitForCount(10);
    await delay(300);
    expect([...got.items].sort()).toEqual(sent.sort());
    expect((await raw.smembers(`${mesh}:evb:${service}`)).sort()).toEqual(
      [`${topic}.one`, `${topic}.two`, `${topic}.*`].sort(),
    );
  });

  it("a dead letter that cannot be written leaves the entry pending, then goes through", async () => {
    const other = `rbw${newId().slice(0, 10)}`;
    const t = await open({ mesh: other, claimIdleMs: 500 });
    const service = uniqueName();
    await raw.set(`${other}:dl`, "not a stream"); // an operator's mistake: XADD there fails
    let handled = 0;
    await t.consumeService(testServiceSpec(service), async (d) => {
      handled++;
      await d.reject();
    });
    await t.send({ kind: "rpc", service }, testFrame("keep-me"));
    await waitFor(() => handled >= 1, 10_000, "the first delivery");
    await delay(100);
    // Not lost: the entry is still in its stream, pending.
    expect(await raw.xlen(`${other}:sq:${service}`)).toBe(1);
    await raw.del(`${other}:dl`);
    await waitFor(
      async () => (await raw.exists(`${other}:dl`)) === 1 && (await raw.xlen(`${other}:dl`)) === 1,
      10_000,
      "the dead letter once the stream can be written",
    );
    expect(handled).toBeGreaterThanOrEqual(2); // claimed again and handled again
    await waitFor(
      async () => (await raw.xlen(`${other}:sq:${service}`)) === 0,
      5_000,
      "the service stream to empty",
    );
    await t.close();
    await raw.del(`${other}:dl`, `${other}:sq:${service}`);
  });

  it("an entry too wide to be a frame is dead-lettered whole, without reaching the handler", async () => {
    const t = await open();
    const service = uniqueName();
    let handled = 0;
    await t.consumeService(testServiceSpec(service), async (d) => {
      handled++;
      await d.ack();
    });
    const fields: string[] = ["c", "wide", "h", "{}", "b", "x"];
    for (let i = 0; i < 4_100; i++) fields.push(`f${i}`, String(i));
    await raw.xadd(`${mesh}:sq:${service}`, "*", ...fields);
    await waitFor(async () => (await deadLetters(service)).length === 1, 10_000, "a dead letter");
    const dl = (await deadLetters(service))[0] as Map<string, Buffer>;
    expect(dl.get("reason")?.toString()).toBe("undecodable");
    const kept = JSON.parse(dl.get("fields")?.toString() ?? "[]") as string[];
    expect(kept).toHaveLength(fields.length);
    expect(kept.slice(0, 2)).toEqual(["c", "wide"]);
    expect(handled).toBe(0);
    expect(await raw.xlen(`${mesh}:sq:${service}`)).toBe(0);
  });

  it("consumeResponses that loses a race with close() lets go of its connection and lease", async () => {
    const t = createRedisTransport({ url, mesh });
    await t.connect();
    const address = `rq-race-${newId().slice(0, 8)}`;
    const consuming = t.consumeResponses({ address }, () => undefined);
    const closing = t.close();
    await expect(consuming).rejects.toThrow(/closed/);
    await closing;
    await waitFor(
      async () => !String(await raw.client("LIST")).includes(`rq-${address}`),
      5_000,
      "the blocking connection to go",
    );
    // Released at once, or — when close() quit the connection before the release went out — left
    // to lapse: addressLeaseMs is 15 s by default, and nothing renews it.
    await waitFor(
      async () => (await raw.exists(`${mesh}:rql:${address}`)) === 0,
      20_000,
      "the address lease to go",
    );
  }, 30_000);

  it("an entry held by a consumer that died is claimed and redelivered", async () => {
    const t = await open({ claimIdleMs: 500 });
    const service = uniqueName();
    await (await t.consumeService(testServiceSpec(service), (d) => d.ack())).stop();
    await t.send({ kind: "rpc", service }, testFrame("orphan"));
    // A consumer that reads the entry and dies without a word.
    const read = await raw.xreadgroup(
      "GROUP",
      "nuropb",
      "dead",
      "COUNT",
      1,
      "STREAMS",
      `${mesh}:sq:${service}`,
      ">",
    );
    expect(read).not.toBeNull();
    const got = createCollector<Delivery>("deliveries");
    await t.consumeService(testServiceSpec(service), async (d) => {
      got.push(d);
      await d.ack();
    });
    const [again] = await got.waitForCount(1, 10_000);
    expect(again === undefined ? undefined : frameText(again)).toBe("orphan");
    expect(again?.redelivered).toBe(true);
    await waitFor(
      async () => (await raw.xlen(`${mesh}:sq:${service}`)) === 0,
      5_000,
      "the stream to empty",
    );
  });

  it("a handler slower than the claim time keeps its delivery: nobody else gets it", async () => {
    const service = uniqueName();
    const a = await open({ claimIdleMs: 500 });
    const b = await open({ claimIdleMs: 500 });
    const onA = createCollector<string>("deliveries on A");
    const onB = createCollector<string>("deliveries on B");
    await a.consumeService(testServiceSpec(service), async (d) => {
      onA.push(frameText(d));
      await delay(1_500); // three claim times
      await d.ack();
    });
    await a.send({ kind: "rpc", service }, testFrame("slow"));
    await onA.waitForCount(1);
    await b.consumeService(testServiceSpec(service), async (d) => {
      onB.push(frameText(d));
      await d.ack();
    });
    await delay(2_000);
    expect(onA.items).toEqual(["slow"]);
    expect(onB.items).toEqual([]);
  });

  it("an rpc alias bound to two services reaches both (AMQP direct-exchange semantics); bindings live in Redis", async () => {
    const t = await open();
    const other = await open();
    const alias = uniqueName();
    const [s1, s2] = [uniqueName(), uniqueName()];
    const got = createCollector<string>("deliveries");
    for (const s of [s1, s2]) {
      await t.consumeService(testServiceSpec(s, { rpcBindings: [alias] }), async (d) => {
        got.push(`${s}:${frameText(d)}`);
        await d.ack();
      });
    }
    expect((await raw.smembers(`${mesh}:rpc:${alias}`)).sort()).toEqual([s1, s2].sort());
    await other.send({ kind: "rpc", service: alias }, testFrame("both"));
    await got.waitForCount(2);
    expect([...got.items].sort()).toEqual([`${s1}:both`, `${s2}:both`].sort());
  });

  it("acknowledged entries are deleted from the service stream", async () => {
    const t = await open();
    const service = uniqueName();
    await t.consumeService(testServiceSpec(service), (d) => d.ack());
    for (let i = 0; i < 20; i++) await t.send({ kind: "rpc", service }, testFrame(`m${i}`));
    await waitFor(
      async () => (await raw.xlen(`${mesh}:sq:${service}`)) === 0,
      5_000,
      "acked entries deleted",
    );
  });

  it("stopped listeners and closed transports leave no consumer behind in the group", async () => {
    const a = await open();
    const b = await open();
    const service = uniqueName();
    const stream = `${mesh}:sq:${service}`;
    const consumers = async (): Promise<number> =>
      ((await raw.xinfo("CONSUMERS", stream, "nuropb")) as unknown[]).length;
    const got = createCollector<string>("deliveries");
    const handler = async (d: Delivery): Promise<void> => {
      got.push(frameText(d));
      await d.ack();
    };
    // Redis 7.0 adds a consumer to the group when it first receives an entry.
    const listener = await a.consumeService(testServiceSpec(service), handler);
    await a.send({ kind: "rpc", service }, testFrame("to-a"));
    await got.waitForCount(1);
    expect(await consumers()).toBe(1);
    await listener.stop();
    expect(await consumers()).toBe(0);
    await b.consumeService(testServiceSpec(service), handler);
    await a.send({ kind: "rpc", service }, testFrame("to-b"));
    await got.waitForCount(2);
    expect(await consumers()).toBe(1);
    await b.close();
    expect(await consumers()).toBe(0);
  });
});
