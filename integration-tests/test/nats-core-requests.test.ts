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
  return deadLetterHeader(service, "Nuropb-Dl-Reason");
}

/**
 * The fields of a core message in the compact framing (no headers; see compact-frame.ts), read
 * as its documentation says, independently of the transport's reader.
 */
function compactFields(m: Msg): {
  correlationId: string;
  redelivered: boolean;
  headers: Record<string, string | null>;
} {
  expect(m.headers).toBeUndefined();
  expect([m.data[0], m.data[1]]).toEqual([0x00, 0x02]);
  const n = new DataView(m.data.buffer, m.data.byteOffset).getUint32(2);
  const text = new TextDecoder().decode(m.data.subarray(6, 6 + n));
  const out = {
    correlationId: "",
    redelivered: false,
    headers: {} as Record<string, string | null>,
  };
  let at = 0;
  const next = (): string => {
    const colon = text.indexOf(":", at);
    const len = Number(text.slice(at, colon));
    at = colon + 1 + len;
    return text.slice(colon + 1, at);
  };
  // Version 2's tags of the five usual headers.
  const usual: Record<string, string> = {
    p: "nuropb_protocol",
    v: "nuropb_version",
    y: "nuropb_type",
    i: "trace_id",
    e: "encrypted",
  };
  while (at < text.length) {
    const tag = text[at++] as string;
    if (tag === "c") out.correlationId = next();
    else if (tag === "d") out.redelivered = next() === "";
    else if (tag === "h") out.headers[next()] = next();
    else if (tag === "n") out.headers[next()] = null;
    else if (usual[tag] !== undefined) out.headers[usual[tag]] = next();
    else next();
  }
  return out;
}

/** A header of every dead letter of `service`, in order. */
async function deadLetterHeader(service: string, name: string): Promise<string[]> {
  const jsm = await raw.jetstreamManager();
  const info = await jsm.streams.info(`NUROPB-${mesh}-DL`).catch(() => undefined);
  if (info === undefined) return [];
  const out: string[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
    const m = await jsm.streams.getMessage(`NUROPB-${mesh}-DL`, { seq }).catch(() => undefined);
    if (m?.subject === `${mesh}.dl.${service}`) out.push(m.header.get(name));
  }
  return out;
}

/** A compact core message (see compact-frame.ts) with the given fields text and body. */
function compactMessage(fields: string, body: string): Uint8Array {
  const f = new TextEncoder().encode(fields);
  const out = new Uint8Array(6 + f.length + body.length);
  out[1] = 0x01;
  new DataView(out.buffer).setUint32(2, f.length);
  out.set(f, 6);
  out.set(new TextEncoder().encode(body), 6 + f.length);
  return out;
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
    expect(sent.map((m) => compactFields(m).redelivered)).toEqual([false, true]);
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

describe("compact framing of core requests and replies (coreFraming)", () => {
  it("requests and replies travel without NATS headers by default; 'headers' puts them back in Nuropb-Frame; each reads the other", async () => {
    for (const [callerFraming, serviceFraming] of [
      ["compact", "headers"],
      ["headers", "compact"],
    ] as const) {
      const service = uniqueName();
      const address = `nuropb-${service}-rq`;
      const onCore = await watch(`${mesh}.req.${service}`);
      const svc = await open({ coreFraming: serviceFraming });
      await svc.consumeService(testServiceSpec(service), async (d) => {
        const reply = { ...testFrame(`re:${frameText(d)}`), correlationId: d.correlationId };
        await svc.send(
          { kind: "reply", address: d.replyTo ?? "" },
          {
            ...reply,
            headers: { ...reply.headers, nuropb_type: "response", trace_id: null },
          },
        );
        await d.ack();
      });
      const caller = await open({ coreFraming: callerFraming });
      const replies = createCollector<string>("replies");
      await caller.consumeResponses({ address }, (f) => {
        replies.push(`${f.correlationId} ${frameText(f)} ${String(f.headers.trace_id)}`);
      });
      // After the consumer: a plain subscriber would make its probe find the address taken.
      const onReply = await watch(`${mesh}.reply.${address}`);
      const label = `x${callerFraming}`;
      await caller.send(
        { kind: "rpc", service },
        testFrame(label, { replyTo: address, ttlMs: 30_000 }),
      );
      expect(await replies.waitForCount(1)).toEqual([`${label} re:${label} null`]);
      const [request] = await onCore.waitForCount(1);
      const [reply] = await onReply.waitForCount(1);
      const headed = (m: Msg | undefined): boolean => m?.headers?.has("Nuropb-Frame") === true;
      expect(headed(request)).toBe(callerFraming === "headers");
      expect(headed(reply)).toBe(serviceFraming === "headers");
      if (callerFraming === "compact" && request !== undefined) {
        expect(compactFields(request).correlationId).toBe(label);
      }
      if (serviceFraming === "compact" && reply !== undefined) {
        expect(compactFields(reply).headers).toMatchObject({
          nuropb_type: "response",
          trace_id: null,
        });
      }
    }
  });

  it("a compact request past its ttl (its `s` entry) is dead-lettered as expired, in the headed form", async () => {
    const t = await open();
    const service = uniqueName();
    const got = createCollector<string>("deliveries");
    await t.consumeService(testServiceSpec(service), async (d) => {
      got.push(frameText(d));
      await d.ack();
    });
    const sent = Date.now() - 10_000;
    raw.publish(
      `${mesh}.req.${service}`,
      compactMessage(`c3:oldt4:1000s${String(String(sent).length)}:${String(sent)}`, "stale"),
    );
    await t.send({ kind: "rpc", service }, testFrame("fresh"));
    await got.waitForCount(1);
    await waitFor(
      async () => (await deadLetterReasons(service)).includes("expired"),
      10_000,
      "the expired dead letter",
    );
    expect(got.items).toEqual(["fresh"]);
    const frames = await deadLetterHeader(service, "Nuropb-Frame");
    expect(JSON.parse(frames[0] ?? "{}")).toEqual({ h: {}, c: "old", t: 1000, s: sent });
  });

  it("a frame UTF-8 cannot carry (a lone surrogate) goes with headers, and arrives exact", async () => {
    const t = await open();
    const service = uniqueName();
    const onCore = await watch(`${mesh}.req.${service}`);
    const got = createCollector<Delivery>("deliveries");
    await t.consumeService(testServiceSpec(service), async (d) => {
      got.push(d);
      await d.ack();
    });
    const frame = testFrame("lone", { correlationId: "id\uD800" });
    await t.send({ kind: "rpc", service }, frame);
    const [d] = await got.waitForCount(1);
    expect(d?.correlationId).toBe("id\uD800");
    const [m] = await onCore.waitForCount(1);
    expect(m?.headers?.has("Nuropb-Frame")).toBe(true);
  });

  it("refuses a coreFraming other than compact or headers", () => {
    expect(() =>
      createNatsTransport({ servers: url, mesh, coreFraming: "json" as "compact" }),
    ).toThrow(/'coreFraming' must be "compact" or "headers", got 'json'/);
  });

  it("a malformed compact request is dead-lettered as undecodable, a malformed reply dropped; both go on serving", async () => {
    const t = await open();
    const service = uniqueName();
    const got = createCollector<string>("deliveries");
    await t.consumeService(testServiceSpec(service), async (d) => {
      got.push(frameText(d));
      await d.ack();
    });
    const address = `nuropb-${service}-rq`;
    const replies = createCollector<string>("replies");
    await t.consumeResponses({ address }, (f) => replies.push(frameText(f)));
    const garbage = [
      new Uint8Array([0x00, 0x07, 0, 0, 0, 0]), // an unknown version
      new Uint8Array([0x00, 0x01, 0, 0, 0, 9, 0x63]), // fields past the end
      new Uint8Array([0x00, 0x01, 0, 0, 0, 3, 0x78, 0x3a, 0x3a]), // no correlation id
    ];
    for (const g of garbage) {
      raw.publish(`${mesh}.req.${service}`, g);
      raw.publish(`${mesh}.reply.${address}`, g);
    }
    await raw.flush();
    await t.send({ kind: "rpc", service }, testFrame("fine"));
    await t.send({ kind: "reply", address }, testFrame("answer"));
    expect(await got.waitForCount(1)).toEqual(["fine"]);
    expect(await replies.waitForCount(1)).toEqual(["answer"]);
    await waitFor(
      async () =>
        (await deadLetterReasons(service)).filter((r) => r === "undecodable").length ===
        garbage.length,
      10_000,
      "three undecodable dead letters",
    );
    // Stored as they came, marked as compact bytes nobody could read.
    expect(await deadLetterHeader(service, "Nuropb-Dl-Framing")).toEqual([
      "compact",
      "compact",
      "compact",
    ]);
    await delay(200);
    expect(got.items).toEqual(["fine"]);
    expect(replies.items).toEqual(["answer"]);
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
