import { connect, type NatsConnection, type StoredMsg } from "nats";
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from "vitest";
import { NuropbTransportError, newId, type Delivery, type Transport } from "@nuropb/protocol";
import { createNatsTransport, type NatsTransportOptions } from "@nuropb/transport-nats";
import {
  createCollector,
  delay,
  frameText,
  testFrame,
  testServiceSpec,
  uniqueName,
  waitFor,
} from "@nuropb/transport-testkit";
import { launchNats } from "../src/brokers/nats.ts";

// What the conformance suite cannot see: where dead letters go, expiry, binding unions, the
// JetStream ack wait, and the broker objects an operator reads.
const url = inject("natsUrl");
const mesh = `nb${newId().slice(0, 10)}`;
const made: Transport[] = [];
let raw: NatsConnection;

beforeAll(async () => {
  raw = await connect({ servers: url });
});
afterAll(async () => {
  await raw.close();
});
afterEach(async () => {
  await Promise.allSettled(made.splice(0).map((t) => t.close()));
});

async function open(options: Partial<NatsTransportOptions> = {}): Promise<Transport> {
  const t = createNatsTransport({ servers: url, mesh, ...options });
  made.push(t);
  await t.connect();
  return t;
}

async function deadLetter(service: string, timeoutMs = 10_000): Promise<StoredMsg> {
  const jsm = await raw.jetstreamManager();
  let found: StoredMsg | undefined;
  await waitFor(
    async () => {
      try {
        found = await jsm.streams.getMessage(`NUROPB-${mesh}-DL`, {
          last_by_subj: `${mesh}.dl.${service}`,
        });
        return true;
      } catch {
        return false;
      }
    },
    timeoutMs,
    `a dead letter of ${service}`,
  );
  return found as StoredMsg;
}

async function deadLetterCount(service: string): Promise<number> {
  const jsm = await raw.jetstreamManager();
  const info = await jsm.streams.info(`NUROPB-${mesh}-DL`, {
    subjects_filter: `${mesh}.dl.${service}`,
  });
  return info.state.subjects?.[`${mesh}.dl.${service}`] ?? 0;
}

describe("nats transport behaviour", () => {
  it("reject() dead-letters the message once, headers and body intact, with the reason", async () => {
    const t = await open();
    const service = uniqueName();
    await t.consumeService(testServiceSpec(service), (d) => d.reject());
    const body = new Uint8Array([0, 1, 2, 254, 255]);
    await t.send(
      { kind: "rpc", service },
      testFrame("x", { body, replyTo: "nuropb-x-rq", ttlMs: 60_000 }),
    );
    const dl = await deadLetter(service);
    expect(dl.header.get("Nuropb-Dl-Reason")).toBe("rejected");
    expect(dl.header.get("Nuropb-Dl-Subject")).toBe(`${mesh}.rpc.${service}`);
    const packed = JSON.parse(dl.header.get("Nuropb-Frame")) as Record<string, unknown>;
    expect(packed).toMatchObject({ c: "x", r: "nuropb-x-rq", t: 60_000 });
    expect(packed.h).toMatchObject({ nuropb_type: "request", trace_id: null });
    expect(new Uint8Array(dl.data)).toEqual(body);
    await delay(300);
    expect(await deadLetterCount(service)).toBe(1);
  });

  it("a foreign message carrying Nats-Expected-Stream is dead-lettered once, that header kept renamed", async () => {
    const t = await open();
    const service = uniqueName();
    const got = createCollector<string>("deliveries");
    await t.consumeService(testServiceSpec(service), (d) => {
      got.push(frameText(d));
      return d.reject();
    });
    // A publisher outside NuroPb that checks which stream takes its message.
    await raw.jetstream().publish(`${mesh}.rpc.${service}`, new TextEncoder().encode("foreign"), {
      expect: { streamName: `NUROPB-${mesh}-SQ-${service}` },
    });
    const dl = await deadLetter(service);
    expect(dl.header.get("Nuropb-Dl-Reason")).toBe("rejected");
    expect(dl.header.get("Nuropb-Dl-Nats-Expected-Stream")).toBe(`NUROPB-${mesh}-SQ-${service}`);
    expect(dl.header.has("Nats-Expected-Stream")).toBe(false);
    expect(frameText({ body: dl.data })).toBe("foreign");
    await delay(300);
    expect(got.items).toEqual(["foreign"]);
    expect(await deadLetterCount(service)).toBe(1);
  });

  it("a message the dead-letter headers would push over max_payload is dead-lettered without its body", async () => {
    const t = await open();
    const service = uniqueName();
    const got = createCollector<number>("deliveries");
    await t.consumeService(testServiceSpec(service), (d) => {
      got.push(d.body.byteLength);
      return d.reject();
    });
    const maxPayload = raw.info?.max_payload ?? 1_048_576;
    await raw.jetstream().publish(`${mesh}.rpc.${service}`, new Uint8Array(maxPayload));
    const dl = await deadLetter(service);
    expect(dl.header.get("Nuropb-Dl-Dropped")).toBe("body");
    expect(dl.header.get("Nuropb-Dl-Body-Bytes")).toBe(String(maxPayload));
    expect(dl.data.byteLength).toBe(0);
    await delay(300);
    expect(got.items).toEqual([maxPayload]);
    expect(await deadLetterCount(service)).toBe(1);
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
    const dl = await deadLetter(service);
    expect(dl.header.get("Nuropb-Dl-Reason")).toBe("expired");
    expect(frameText({ body: dl.data })).toBe("expires");
  });

  it("overlapping bindings give one delivery per event; `a.#` matches `a` itself", async () => {
    const t = await open();
    const service = uniqueName();
    const topic = uniqueName();
    const got = createCollector<Delivery>("events");
    await t.consumeService(
      testServiceSpec(service, { eventBindings: [`${topic}.*`, `${topic}.#`], prefetch: 0 }),
      async (d) => {
        got.push(d);
        await d.ack();
      },
    );
    for (const tp of [`${topic}.x`, topic, `${topic}.x.y`, `other.${topic}`]) {
      await t.send({ kind: "event", topic: tp }, testFrame(tp));
    }
    await got.waitForCount(3);
    await delay(300);
    expect(got.items.map(frameText).sort()).toEqual([topic, `${topic}.x`, `${topic}.x.y`].sort());
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
      testServiceSpec(service, { eventBindings: [`${topic}.two`], prefetch: 4 }),
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
  });

  it("a delivery held by a consumer that died comes back, redelivered, after the ack wait", async () => {
    const service = uniqueName();
    const first = await open({ ackWaitMs: 1_000 });
    await (await first.consumeService(testServiceSpec(service), (d) => d.ack())).stop();
    await first.send({ kind: "rpc", service }, testFrame("orphan"));
    // A consumer that takes the message and dies without a word: a bare pull, never acknowledged.
    const inbox = `_INBOX.${newId()}`;
    const taken = createCollector<string>("bare pulls");
    const sub = raw.subscribe(inbox, {
      callback: (_e, m) => m.reply?.startsWith("$JS.ACK") && taken.push(m.reply),
    });
    raw.publish(
      `$JS.API.CONSUMER.MSG.NEXT.NUROPB-${mesh}-SQ-${service}.nuropb`,
      JSON.stringify({ batch: 1 }),
      {
        reply: inbox,
      },
    );
    await taken.waitForCount(1);
    sub.unsubscribe();
    const got = createCollector<Delivery>("deliveries");
    await first.consumeService(testServiceSpec(service), async (d) => {
      got.push(d);
      await d.ack();
    });
    const [again] = await got.waitForCount(1, 10_000);
    expect(again === undefined ? undefined : frameText(again)).toBe("orphan");
    expect(again?.redelivered).toBe(true);
  });

  it("a handler slower than the ack wait keeps its delivery: nobody else gets it", async () => {
    const service = uniqueName();
    const a = await open({ ackWaitMs: 1_000 });
    const b = await open({ ackWaitMs: 1_000 });
    const onA = createCollector<string>("deliveries on A");
    const onB = createCollector<string>("deliveries on B");
    await a.consumeService(testServiceSpec(service), async (d) => {
      onA.push(frameText(d));
      await delay(2_500); // two and a half ack waits
      await d.ack();
    });
    await a.send({ kind: "rpc", service }, testFrame("slow"));
    await onA.waitForCount(1);
    await b.consumeService(testServiceSpec(service), async (d) => {
      onB.push(frameText(d));
      await d.ack();
    });
    await delay(3_000);
    expect(onA.items).toEqual(["slow"]);
    expect(onB.items).toEqual([]);
  });

  it("a higher ackWaitMs (never a lower one) and a changed retention reach consumers and streams declared before", async () => {
    const own = `nc${newId().slice(0, 10)}`;
    const service = uniqueName();
    const spec = testServiceSpec(service, { eventBindings: [`${uniqueName()}.#`] });
    const before = await open({ mesh: own, ackWaitMs: 2_000 });
    await (await before.consumeService(spec, (d) => d.ack())).stop();
    const after = await open({
      mesh: own,
      ackWaitMs: 4_000,
      eventRetentionMs: 3_600_000,
      deadLetterRetentionMs: 60_000,
    });
    await after.consumeService(spec, (d) => d.ack());
    const lower = await open({
      mesh: own,
      ackWaitMs: 2_000,
      eventRetentionMs: 3_600_000,
      deadLetterRetentionMs: 60_000,
    });
    await lower.consumeService(spec, (d) => d.ack());
    const jsm = await raw.jetstreamManager();
    const ms = (ns: number): number => ns / 1_000_000;
    const rpc = await jsm.consumers.info(`NUROPB-${own}-SQ-${service}`, "nuropb");
    expect(ms(rpc.config.ack_wait ?? 0)).toBe(4_000);
    const events = await jsm.consumers.info(`NUROPB-${own}-EVENTS`, `svc-${service}`);
    expect(ms(events.config.ack_wait ?? 0)).toBe(4_000);
    expect(ms((await jsm.streams.info(`NUROPB-${own}-EVENTS`)).config.max_age)).toBe(3_600_000);
    const dl = await jsm.streams.info(`NUROPB-${own}-DL`);
    expect(ms(dl.config.max_age)).toBe(60_000);
    expect(ms(dl.config.duplicate_window)).toBeLessThanOrEqual(60_000);
  });

  it("an rpc alias already bound to another service is refused with NuropbTransportError", async () => {
    const t = await open();
    const alias = uniqueName();
    const first = uniqueName();
    const got = createCollector<string>("deliveries");
    await t.consumeService(testServiceSpec(first, { rpcBindings: [alias] }), async (d) => {
      got.push(frameText(d));
      await d.ack();
    });
    await expect(
      t.consumeService(testServiceSpec(uniqueName(), { rpcBindings: [alias] }), (d) => d.ack()),
    ).rejects.toBeInstanceOf(NuropbTransportError);
    await t.send({ kind: "rpc", service: alias }, testFrame("via-alias"));
    await got.waitForItem((l) => l === "via-alias");
  });

  it("what is sent after a listener stopped reaches the next one at once, even across a server restart", async () => {
    // A server of its own, restarted under a listener that stopped (its transport stays open).
    const server = await launchNats();
    const own = `nr${newId().slice(0, 10)}`;
    const local: Transport[] = [];
    const connectLocal = async (): Promise<Transport> => {
      // A long ack wait: a message left with a stopped listener's pull would take that long.
      const t = createNatsTransport({
        servers: server.url,
        mesh: own,
        ackWaitMs: 30_000,
        reconnectWaitMs: 100,
      });
      local.push(t);
      await t.connect();
      return t;
    };
    try {
      const service = uniqueName();
      const topic = uniqueName();
      const spec = testServiceSpec(service, { eventBindings: [`${topic}.#`], prefetch: 4 });
      const first = await connectLocal();
      await (await first.consumeService(spec, (d) => d.ack())).stop();
      const sender = await connectLocal();
      const sent: string[] = [];
      for (let i = 0; i < 8; i++) {
        sent.push(`command-${String(i)}`, `event-${String(i)}`);
        await sender.send({ kind: "rpc", service }, testFrame(`command-${String(i)}`));
        await sender.send({ kind: "event", topic: `${topic}.x` }, testFrame(`event-${String(i)}`));
      }
      await server.process.restart("SIGTERM");
      const next = await connectLocal();
      const got = createCollector<Delivery>("deliveries after the restart");
      await next.consumeService(spec, async (d) => {
        got.push(d);
        await d.ack();
      });
      // Well under the ack wait: nothing was left with the stopped listener.
      const items = await got.waitForCount(sent.length, 10_000);
      expect(items.map(frameText).sort()).toEqual([...sent].sort());
      expect(items.filter((d) => d.redelivered).map(frameText)).toEqual([]);
    } finally {
      await Promise.allSettled(local.map((t) => t.close()));
      await server.stop();
    }
  }, 60_000);

  it("frame headers the server would act on (Nats-Msg-Id) are carried as data", async () => {
    const t = await open();
    const service = uniqueName();
    const got = createCollector<Delivery>("deliveries");
    await t.consumeService(testServiceSpec(service, { prefetch: 0 }), async (d) => {
      got.push(d);
      await d.ack();
    });
    const headers = { "Nats-Msg-Id": "same", "Nats-Expected-Stream": "nope", trace_id: null };
    await t.send({ kind: "rpc", service }, testFrame("one", { headers }));
    await t.send({ kind: "rpc", service }, testFrame("two", { headers }));
    const items = await got.waitForCount(2);
    for (const d of items) expect(d.headers).toEqual(headers);
  });
});
