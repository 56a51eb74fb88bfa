import {
  AckPolicy,
  DeliverPolicy,
  headers as natsHeaders,
  nanos,
  RetentionPolicy,
  type ConsumerConfig,
  type Msg,
  type MsgHdrs,
  type StreamConfig,
} from "nats";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { DeliveryHandler, Frame, Transport } from "@nuropb/protocol";
import { createNatsTransport, type NatsTransportOptions } from "@nuropb/transport-nats";
import { connections, fakeMsg, jsDelivery, type FakeNats, type Published } from "./fake-nats.ts";

// The fake is loaded when connect() is called: it imports "nats" itself, so loading it from this
// factory would wait on the mock being made.
vi.mock("nats", async (importOriginal) => ({
  ...(await importOriginal<typeof import("nats")>()),
  connect: async () => (await import("./fake-nats.ts")).fakeConnect(),
}));

const made: Transport[] = [];
afterEach(async () => {
  await Promise.allSettled(made.splice(0).map((t) => t.close()));
  connections.splice(0);
});

async function open(
  options: Partial<NatsTransportOptions> = {},
): Promise<{ t: Transport; fake: FakeNats }> {
  const t = createNatsTransport({ servers: "nats://fake:4222", mesh: "m", ...options });
  made.push(t);
  await t.connect();
  const fake = connections.at(-1);
  if (fake === undefined) throw new Error("no connection made");
  return { t, fake };
}

const frame: Frame = {
  headers: { nuropb_type: "request" },
  body: new Uint8Array([1, 2, 3]),
  correlationId: "c1",
};

function publishedOn(fake: FakeNats, subject: string): Published[] {
  return fake.published.filter((p) => p.subject === subject);
}

describe("send over a link that drops", () => {
  it.each([
    ["rpc", { kind: "rpc", service: "svc" }, "m.rpc.svc"],
    ["event", { kind: "event", topic: "a.b" }, "m.evt.a.b"],
  ] as const)(
    "a %s publish sent again after a disconnect keeps its Nats-Msg-Id, so the stream stores it once",
    async (_kind, to, subject) => {
      // Requests go into the stream only with requests: "jetstream" (core NATS has no Msg-Id).
      const { t, fake } = await open({ requests: "jetstream" });
      const sending = t.send(to, frame);
      await vi.waitFor(() => expect(publishedOn(fake, subject)).toHaveLength(1));
      // The stream stored it, but the acknowledgement is lost with the link.
      fake.disconnect();
      fake.reconnect();
      await vi.waitFor(() => expect(publishedOn(fake, subject)).toHaveLength(2));
      const [first, again] = publishedOn(fake, subject);
      const id = first?.headers?.get("Nats-Msg-Id") ?? "";
      expect(id).not.toBe("");
      expect(again?.headers?.get("Nats-Msg-Id")).toBe(id);
      if (again !== undefined) fake.ack(again, { stream: "S", seq: 1, duplicate: true });
      await sending;
      // Another send is another message.
      const other = t.send(to, frame);
      await vi.waitFor(() => expect(publishedOn(fake, subject)).toHaveLength(3));
      const third = publishedOn(fake, subject)[2];
      expect(third?.headers?.get("Nats-Msg-Id")).not.toBe(id);
      if (third !== undefined) fake.ack(third);
      await other;
    },
  );
});

/** Consumes service `svc` with `handler` and hands it one stored message (stream sequence 7). */
async function deliverToService(
  t: Transport,
  fake: FakeNats,
  handler: DeliveryHandler,
  stored: { headers?: MsgHdrs; data?: Uint8Array },
): Promise<string> {
  await t.consumeService(
    { service: "svc", rpcBindings: [], eventBindings: [], prefetch: 1 },
    handler,
  );
  const pull = fake.published.find((p) => p.subject.startsWith("$JS.API.CONSUMER.MSG.NEXT."));
  if (pull?.reply === undefined) throw new Error("no pull sent");
  const msg = jsDelivery({
    stream: "NUROPB-m-SQ-svc",
    consumer: "nuropb",
    seq: 7,
    subject: "m.rpc.svc",
    ...stored,
  });
  fake.deliver(pull.reply, msg);
  return msg.reply;
}

/**
 * Plays the dead-letter stream: refuses a copy with `Nats-Expected-Stream` and drops one whose
 * `Nats-Msg-Id` it stored already, as the server does.
 */
function serveDeadLetters(fake: FakeNats): Msg[] {
  const stored: Msg[] = [];
  const ids = new Map<string, number>();
  fake.subscribe("m.dl.>", {
    callback: (_err, msg) => {
      const expected = msg.headers?.get("Nats-Expected-Stream") ?? "";
      const id = msg.headers?.get("Nats-Msg-Id") ?? "";
      const seen = id === "" ? undefined : ids.get(id);
      const answer =
        expected !== "" && expected !== "NUROPB-m-DL"
          ? { error: { code: 400, err_code: 10060, description: "expected stream does not match" } }
          : seen !== undefined
            ? { stream: "NUROPB-m-DL", seq: seen, duplicate: true }
            : { stream: "NUROPB-m-DL", seq: stored.push(msg) };
      if (id !== "" && seen === undefined && !("error" in answer)) ids.set(id, answer.seq);
      const reply = msg.reply ?? "";
      queueMicrotask(() => fake.deliver(reply, fakeMsg(reply, JSON.stringify(answer))));
    },
  });
  return stored;
}

function settlements(fake: FakeNats, ackSubject: string): string[] {
  return fake.published
    .filter((p) => p.subject === ackSubject)
    .map((p) => new TextDecoder().decode(p.data))
    .filter((verb) => verb !== "+WPI");
}

describe("dead letters", () => {
  it("a stored message's Nats-… headers ride in its dead letter renamed, so the stream takes it (not 10060 forever)", async () => {
    const { t, fake } = await open();
    const stored = serveDeadLetters(fake);
    const h = natsHeaders();
    h.set("Nats-Expected-Stream", "NUROPB-m-SQ-svc");
    h.set("Nats-Msg-Id", "publisher-id");
    h.set("nuropb_type", "request");
    const ack = await deliverToService(t, fake, (d) => d.reject(), {
      headers: h,
      data: new Uint8Array([9]),
    });
    await vi.waitFor(() => expect(settlements(fake, ack)).toEqual(["+TERM"]));
    expect(stored).toHaveLength(1);
    const dl = stored[0]?.headers;
    expect(dl?.has("Nats-Expected-Stream")).toBe(false);
    expect(dl?.get("Nuropb-Dl-Nats-Expected-Stream")).toBe("NUROPB-m-SQ-svc");
    expect(dl?.get("Nuropb-Dl-Nats-Msg-Id")).toBe("publisher-id");
    expect(dl?.get("nuropb_type")).toBe("request");
    expect(dl?.get("Nuropb-Dl-Reason")).toBe("rejected");
    expect([...(stored[0]?.data ?? [])]).toEqual([9]);
  });

  it("a message delivered again (to this or another instance) is dead-lettered under the same Nats-Msg-Id, so the stream keeps one copy", async () => {
    const { t, fake } = await open();
    const stored = serveDeadLetters(fake);
    await t.consumeService(
      { service: "svc", rpcBindings: [], eventBindings: [], prefetch: 2 },
      (d) => d.reject(),
    );
    const pull = fake.published.find((p) => p.subject.startsWith("$JS.API.CONSUMER.MSG.NEXT."));
    const first = jsDelivery({ stream: "NUROPB-m-SQ-svc", consumer: "nuropb", seq: 7 });
    // The same message after the ack wait ran out (its +TERM lost with the link).
    const again = jsDelivery({
      stream: "NUROPB-m-SQ-svc",
      consumer: "nuropb",
      seq: 7,
      deliveryCount: 2,
    });
    fake.deliver(pull?.reply ?? "", first);
    await vi.waitFor(() => expect(settlements(fake, first.reply)).toEqual(["+TERM"]));
    fake.deliver(pull?.reply ?? "", again);
    await vi.waitFor(() => expect(settlements(fake, again.reply)).toEqual(["+TERM"]));
    const ids = stored.map((m) => m.headers?.get("Nats-Msg-Id"));
    expect(ids).toEqual(["NUROPB-m-SQ-svc:nuropb:7"]);
  });

  it("one event dead-lettered by two services (each through its own consumer) is stored twice", async () => {
    const { t, fake } = await open();
    const stored = serveDeadLetters(fake);
    const acks: string[] = [];
    for (const service of ["a", "b"]) {
      await t.consumeService(
        { service, rpcBindings: [], eventBindings: ["x.y"], prefetch: 1 },
        (d) => d.reject(),
      );
      const consumer = `svc-${service}`;
      const pull = fake.published.find(
        (p) => p.subject === `$JS.API.CONSUMER.MSG.NEXT.NUROPB-m-EVENTS.${consumer}`,
      );
      // The same event, stream sequence 7, through each service's consumer.
      const event = jsDelivery({
        stream: "NUROPB-m-EVENTS",
        consumer,
        seq: 7,
        subject: "m.evt.x.y",
      });
      fake.deliver(pull?.reply ?? "", event);
      acks.push(event.reply);
    }
    for (const ack of acks)
      await vi.waitFor(() => expect(settlements(fake, ack)).toEqual(["+TERM"]));
    expect(stored.map((m) => m.headers?.get("Nats-Msg-Id"))).toEqual([
      "NUROPB-m-EVENTS:svc-a:7",
      "NUROPB-m-EVENTS:svc-b:7",
    ]);
  });

  it("a dead letter answered 503 (the dead-letter stream's leader is elected) is sent again, not terminated without a copy", async () => {
    const { t, fake } = await open();
    const stored: Msg[] = [];
    let unavailable = 3;
    fake.subscribe("m.dl.>", {
      callback: (_err, msg) => {
        const reply = msg.reply ?? "";
        const answer =
          unavailable-- > 0
            ? fakeMsg(reply, "", { headers: natsHeaders(503, "No Responders") })
            : fakeMsg(reply, JSON.stringify({ stream: "NUROPB-m-DL", seq: stored.push(msg) }));
        queueMicrotask(() => fake.deliver(reply, answer));
      },
    });
    const ack = await deliverToService(t, fake, (d) => d.reject(), {});
    await vi.waitFor(() => expect(stored).toHaveLength(1), { timeout: 10_000 });
    await vi.waitFor(() => expect(settlements(fake, ack)).toEqual(["+TERM"]));
  });

  it("a dead letter the stream refuses (10060) is tried 3 times, then the message is terminated", async () => {
    const { t, fake } = await open();
    let tries = 0;
    fake.subscribe("m.dl.>", {
      callback: (_err, msg) => {
        tries++;
        const reply = msg.reply ?? "";
        const refusal = { error: { code: 400, err_code: 10060, description: "expected stream" } };
        queueMicrotask(() => fake.deliver(reply, fakeMsg(reply, JSON.stringify(refusal))));
      },
    });
    const ack = await deliverToService(t, fake, (d) => d.reject(), {});
    await vi.waitFor(() => expect(settlements(fake, ack)).toEqual(["+TERM"]), { timeout: 5_000 });
    expect(tries).toBe(3);
  });

  it("a message the dead-letter headers push over max_payload is dead-lettered without its body, once", async () => {
    const { t, fake } = await open();
    fake.info.max_payload = 4_096;
    const stored = serveDeadLetters(fake);
    const h = natsHeaders();
    h.set("nuropb_type", "request");
    const data = new Uint8Array(4_096 - (h as unknown as { encode(): Uint8Array }).encode().length);
    const ack = await deliverToService(t, fake, (d) => d.reject(), { headers: h, data });
    await vi.waitFor(() => expect(settlements(fake, ack)).toEqual(["+TERM"]));
    expect(stored).toHaveLength(1);
    expect(stored[0]?.data.byteLength).toBe(0);
    expect(stored[0]?.headers?.get("Nuropb-Dl-Dropped")).toBe("body");
    expect(stored[0]?.headers?.get("Nuropb-Dl-Body-Bytes")).toBe(String(data.byteLength));
    expect(stored[0]?.headers?.get("nuropb_type")).toBe("request");
  });
});

describe("declaring over what an earlier transport declared", () => {
  it("raises the consumers' ack wait to the options (never lowers it) and brings the streams' retention to them", async () => {
    const { t, fake } = await open({
      ackWaitMs: 2_000,
      eventRetentionMs: 3_600_000,
      deadLetterRetentionMs: 60_000,
    });
    // As declared by a transport with the defaults.
    const stream = (
      name: string,
      subjects: string[],
      maxAgeMs: number,
      retention: RetentionPolicy,
    ): StreamConfig =>
      ({
        name,
        subjects,
        retention,
        max_age: nanos(maxAgeMs),
        duplicate_window: nanos(120_000),
      }) as StreamConfig;
    fake.jsm.streamConfigs.set(
      "NUROPB-m-DL",
      stream("NUROPB-m-DL", ["m.dl.>"], 604_800_000, RetentionPolicy.Limits),
    );
    fake.jsm.streamConfigs.set(
      "NUROPB-m-SQ-svc",
      stream("NUROPB-m-SQ-svc", ["m.rpc.svc"], 0, RetentionPolicy.Workqueue),
    );
    fake.jsm.streamConfigs.set(
      "NUROPB-m-EVENTS",
      stream("NUROPB-m-EVENTS", ["m.evt.>"], 86_400_000, RetentionPolicy.Interest),
    );
    for (const key of ["NUROPB-m-SQ-svc/nuropb", "NUROPB-m-EVENTS/svc-svc"]) {
      fake.jsm.consumerConfigs.set(key, {
        durable_name: key.split("/")[1] ?? "",
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        ack_wait: nanos(30_000),
        description: JSON.stringify(["a.#"]),
      } as ConsumerConfig);
    }
    await t.consumeService(
      { service: "svc", rpcBindings: [], eventBindings: ["a.#"], prefetch: 1 },
      (d) => d.ack(),
    );
    // A lower ackWaitMs leaves the consumers' 30 s: other instances pace their progress by it.
    expect(fake.jsm.consumerConfigs.get("NUROPB-m-SQ-svc/nuropb")?.ack_wait).toBe(nanos(30_000));
    expect(fake.jsm.consumerConfigs.get("NUROPB-m-EVENTS/svc-svc")?.ack_wait).toBe(nanos(30_000));
    expect(fake.jsm.streamConfigs.get("NUROPB-m-EVENTS")?.max_age).toBe(nanos(3_600_000));
    expect(fake.jsm.streamConfigs.get("NUROPB-m-DL")).toMatchObject({
      max_age: nanos(60_000),
      duplicate_window: nanos(60_000),
    });
    expect(fake.jsm.streamConfigs.get("NUROPB-m-SQ-svc")?.max_age).toBe(0);
    // Declared again as it is: nothing to change.
    const updates = fake.jsm.consumerUpdates.length + fake.jsm.streamUpdates.length;
    await t.consumeService(
      { service: "svc", rpcBindings: [], eventBindings: ["a.#"], prefetch: 1 },
      (d) => d.ack(),
    );
    expect(fake.jsm.consumerUpdates.length + fake.jsm.streamUpdates.length).toBe(updates);
    // A higher one raises them.
    const { t: t2, fake: fake2 } = await open({ ackWaitMs: 60_000 });
    for (const [k, v] of fake.jsm.streamConfigs) fake2.jsm.streamConfigs.set(k, v);
    for (const [k, v] of fake.jsm.consumerConfigs) fake2.jsm.consumerConfigs.set(k, v);
    await t2.consumeService(
      { service: "svc", rpcBindings: [], eventBindings: ["a.#"], prefetch: 1 },
      (d) => d.ack(),
    );
    expect(fake2.jsm.consumerConfigs.get("NUROPB-m-SQ-svc/nuropb")?.ack_wait).toBe(nanos(60_000));
    expect(fake2.jsm.consumerConfigs.get("NUROPB-m-EVENTS/svc-svc")?.ack_wait).toBe(nanos(60_000));
  });

  it("leaves the retention of a limits events stream (the event log) alone", async () => {
    const { t, fake } = await open({ eventRetentionMs: 86_400_000 });
    fake.jsm.streamConfigs.set("NUROPB-m-EVENTS", {
      name: "NUROPB-m-EVENTS",
      subjects: ["m.evt.>"],
      retention: RetentionPolicy.Limits,
      max_age: nanos(3_600_000),
      max_bytes: 1 << 20,
      duplicate_window: nanos(120_000),
    } as StreamConfig);
    await t.consumeService(
      { service: "svc", rpcBindings: [], eventBindings: ["a.#"], prefetch: 1 },
      (d) => d.ack(),
    );
    expect(fake.jsm.streamConfigs.get("NUROPB-m-EVENTS")).toMatchObject({
      retention: RetentionPolicy.Limits,
      max_age: nanos(3_600_000),
      max_bytes: 1 << 20,
    });
  });
});

describe("consumeService", () => {
  it("resolves only once the server has read the first pulls (a flush after them), so messages sent next are shared with this instance", async () => {
    const { t, fake } = await open();
    let answer!: () => void;
    fake.flushGate = new Promise((r) => (answer = r));
    let resolved = false;
    const consuming = t
      .consumeService({ service: "svc", rpcBindings: [], eventBindings: [], prefetch: 64 }, (d) =>
        d.ack(),
      )
      .then(() => void (resolved = true));
    const isPull = (p: Published): boolean => p.subject.startsWith("$JS.API.CONSUMER.MSG.NEXT.");
    await vi.waitFor(() => expect(fake.published.some(isPull)).toBe(true));
    const pullAt = fake.published.findIndex(isPull);
    await new Promise((r) => setTimeout(r, 20));
    expect(resolved, "resolved before the server answered the flush").toBe(false);
    expect(fake.flushes.some((written) => written > pullAt)).toBe(true);
    answer();
    await consuming;
    expect(resolved).toBe(true);
  });
});
