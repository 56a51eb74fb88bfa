import { connect, headers as natsHeaders, type Msg, type NatsConnection } from "nats";
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from "vitest";
import { createClient } from "@nuropb/core";
import {
  NuropbNotDeliveredError,
  NuropbTimeoutError,
  newId,
  type Delivery,
  type Transport,
} from "@nuropb/protocol";
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

// Requests on core NATS (the default, `requests: "core"`) and the option that puts them back on
// JetStream: what travels where, no responders, ttl at delivery, call-again, the prefetch bound
// and a request lost with its instance.
const url = inject("natsUrl");
const mesh = `nq${newId().slice(0, 10)}`;
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

/** Every message on a subject, seen by a plain (not queue) subscription. */
async function watch(subject: string): Promise<ReturnType<typeof createCollector<Msg>>> {
  const seen = createCollector<Msg>(`messages on ${subject}`);
  raw.subscribe(subject, { callback: (_e, m) => seen.push(m) });
  await raw.flush();
  return seen;
}

/** Messages stored in a service's stream so far (its sequence: stored, then maybe consumed). */
async function storedInStream(service: string): Promise<number> {
  const jsm = await raw.jetstreamManager();
  return (await jsm.streams.info(`NUROPB-${mesh}-SQ-${service}`)).state.last_seq;
}

async function deadLetterReasons(service: string): Promise<string[]> {
  const jsm = await raw.jetstreamManager();
  const info = await jsm.streams.info(`NUROPB-${mesh}-DL`).catch(() => undefined);
  if (info === undefined) return [];
  const reasons: string[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
    const m = await jsm.streams.getMessage(`NUROPB-${mesh}-DL`, { seq }).catch(() => undefined);
    if (m?.subject === `${mesh}.dl.${service}`) reasons.push(m.header.get("Nuropb-Dl-Reason"));
  }
  return reasons;
}

describe("nats requests on core NATS (requests: 'core', the default)", () => {
  it("a request travels on {mesh}.req.{service} to the queue group, not into the stream", async () => {
    const t = await open();
    const service = uniqueName();
    const onCore = await watch(`${mesh}.req.${service}`);
    const got = createCollector<string>("deliveries");
    await t.consumeService(testServiceSpec(service), async (d) => {
      got.push(frameText(d));
      await d.ack();
    });
    await t.send({ kind: "rpc", service }, testFrame("r1"));
    await got.waitForCount(1);
    expect(await onCore.waitForCount(1)).toHaveLength(1);
    expect(await storedInStream(service)).toBe(0);
  });

  it("no service at all: NuropbNotDeliveredError from send, nothing stored", async () => {
    const t = await open();
    const service = uniqueName();
    await expect(t.send({ kind: "rpc", service }, testFrame("nobody"))).rejects.toBeInstanceOf(
      NuropbNotDeliveredError,
    );
  });

  it("a request sent after the last instance left (send no longer waits) waits in the stream for the next", async () => {
    const t = await open();
    const service = uniqueName();
    const got = createCollector<string>("deliveries");
    const handler = async (d: Delivery): Promise<void> => {
      got.push(frameText(d));
      await d.ack();
    };
    const first = await t.consumeService(testServiceSpec(service), handler);
    // The first send waits for the flush and learns the subject has a subscriber.
    await t.send({ kind: "rpc", service }, testFrame("seen"));
    await got.waitForCount(1);
    await first.stop();
    await t.send({ kind: "rpc", service }, testFrame("later"));
    await waitFor(
      async () => (await storedInStream(service)) === 1,
      10_000,
      "stored in the stream",
    );
    await t.consumeService(testServiceSpec(service), handler);
    expect(await got.waitForCount(2)).toEqual(["seen", "later"]);
  });

  it("close() of the last instance puts its unsettled requests into the stream for the next", async () => {
    const service = uniqueName();
    const first = await open();
    const held = createCollector<Delivery>("deliveries on the first");
    await first.consumeService(testServiceSpec(service, { prefetch: 1 }), (d) => {
      held.push(d); // never settled
    });
    const caller = await open();
    await caller.send({ kind: "rpc", service }, testFrame("held"));
    await caller.send({ kind: "rpc", service }, testFrame("waiting"));
    await held.waitForCount(1);
    await first.close();
    const got = createCollector<Delivery>("deliveries on the next");
    await (
      await open()
    ).consumeService(testServiceSpec(service), async (d) => {
      got.push(d);
      await d.ack();
    });
    const again = await got.waitForCount(2);
    expect(again.map((d) => frameText(d)).sort()).toEqual(["held", "waiting"]);
    // "held" was handed out, so it comes back marked; "waiting" may have reached the server
    // after the first unsubscribed, then the caller moved it into the stream as it was.
    expect(again.find((d) => frameText(d) === "held")?.redelivered).toBe(true);
  });

  it("a request past its ttl when it arrives is dead-lettered as expired, never handled", async () => {
    const t = await open();
    const service = uniqueName();
    const got = createCollector<string>("deliveries");
    await t.consumeService(testServiceSpec(service), async (d) => {
      got.push(frameText(d));
      await d.ack();
    });
    // Sent ten seconds ago (by the sender's stamp) with a one-second ttl.
    const h = natsHeaders();
    h.set(
      "Nuropb-Frame",
      JSON.stringify({ h: { nuropb_type: "request" }, c: "old", t: 1_000, s: Date.now() - 10_000 }),
    );
    raw.publish(`${mesh}.req.${service}`, new TextEncoder().encode("stale"), { headers: h });
    await t.send({ kind: "rpc", service }, testFrame("fresh"));
    await got.waitForCount(1);
    await waitFor(
      async () => (await deadLetterReasons(service)).includes("expired"),
      10_000,
      "the expired dead letter",
    );
    expect(got.items).toEqual(["fresh"]);
  });

  it("requeue() publishes the request again once, marked redelivered", async () => {
    const t = await open();
    const service = uniqueName();
    const onCore = await watch(`${mesh}.req.${service}`);
    const got = createCollector<Delivery>("deliveries");
    await t.consumeService(testServiceSpec(service), async (d) => {
      got.push(d);
      if (d.redelivered) await d.ack();
      else await d.requeue();
    });
    await t.send({ kind: "rpc", service }, testFrame("again"));
    const [first, second] = await got.waitForCount(2);
    expect(first?.redelivered).toBe(false);
    expect(second?.redelivered).toBe(true);
    expect(second === undefined ? "" : frameText(second)).toBe("again");
    const sent = await onCore.waitForCount(2);
    expect(sent[0]?.headers?.get("Nuropb-Redelivered")).toBe("");
    expect(sent[1]?.headers?.get("Nuropb-Redelivered")).toBe("1");
    await delay(300);
    expect(got.items).toHaveLength(2);
    expect(onCore.items).toHaveLength(2);
  });

  it("prefetch bounds the requests in the handler; past the local queue they spill into the stream and are all served", async () => {
    const t = await open();
    const service = uniqueName();
    const onCore = await watch(`${mesh}.req.${service}`);
    let running = 0;
    let most = 0;
    const got = createCollector<string>("deliveries");
    await t.consumeService(testServiceSpec(service, { prefetch: 2 }), async (d) => {
      running++;
      most = Math.max(most, running);
      await delay(100);
      running--;
      got.push(frameText(d));
      await d.ack();
    });
    const labels = Array.from({ length: 10 }, (_, i) => `p${String(i)}`);
    await Promise.all(labels.map((l) => t.send({ kind: "rpc", service }, testFrame(l))));
    await got.waitForCount(labels.length, 20_000);
    expect([...got.items].sort()).toEqual([...labels].sort());
    expect(most).toBeLessThanOrEqual(2);
    expect(onCore.items).toHaveLength(labels.length);
    // Two in the handler, two waiting here: the other six waited in the stream.
    expect(await storedInStream(service)).toBe(6);
  });

  it("a request lost with a crashing instance fails typed at the caller's ttl", async () => {
    const service = uniqueName();
    // An instance that takes the request and dies without a word: a queue subscriber that drops it.
    const taken = createCollector<string>("requests taken");
    raw.subscribe(`${mesh}.req.${service}`, {
      queue: `svc-${service}`,
      callback: (_e, m) => taken.push(m.subject),
    });
    await raw.flush();
    const client = createClient({ transport: await open(), defaultTtlMs: 5_000 });
    await client.connect();
    try {
      const e = await client.request(service, "x", {}, {}, { ttlMs: 300 }).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(NuropbTimeoutError);
      expect(taken.items).toHaveLength(1);
    } finally {
      await client.disconnect();
    }
  });
});

describe("nats requests on JetStream (requests: 'jetstream')", () => {
  it("a request is stored in the service's stream, nothing on the core subject", async () => {
    const t = await open({ requests: "jetstream" });
    const service = uniqueName();
    const onCore = await watch(`${mesh}.req.${service}`);
    const got = createCollector<string>("deliveries");
    await t.consumeService(testServiceSpec(service), async (d) => {
      got.push(frameText(d));
      await d.ack();
    });
    await t.send({ kind: "rpc", service }, testFrame("j1"));
    await got.waitForCount(1);
    expect(await storedInStream(service)).toBe(1);
    expect(onCore.items).toHaveLength(0);
  });

  it("a core-mode caller reaches a jetstream-mode service through its stream", async () => {
    const service = uniqueName();
    const server = await open({ requests: "jetstream" });
    const got = createCollector<string>("deliveries");
    await server.consumeService(testServiceSpec(service), async (d) => {
      got.push(frameText(d));
      await d.ack();
    });
    const caller = await open();
    await caller.send({ kind: "rpc", service }, testFrame("mixed"));
    expect(await got.waitForCount(1)).toEqual(["mixed"]);
  });

  it("refuses a requests value other than core or jetstream", () => {
    expect(() =>
      createNatsTransport({ servers: url, requests: "queue" as unknown as "core" }),
    ).toThrow(TypeError);
  });
});
