import { NuropbTransportError, isNuropbError } from "@nuropb/protocol";
import type { Delivery, InboundFrame, Transport, TransportEvent } from "@nuropb/protocol";
import { createAmqpTransport, deleteVhost, managementUrlFromAmqpUrl } from "@nuropb/transport-amqp";
import {
  createCollector,
  testFrame,
  testServiceSpec,
  waitFor,
  watchEvents,
  withTimeout,
} from "@nuropb/transport-testkit";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  closeConnectionByName,
  createTestMesh,
  rabbitEnv,
  startRabbitApp,
  stopRabbitApp,
} from "../src/amqp-helpers.ts";
import type { TestMesh } from "../src/amqp-helpers.ts";

const T = 15_000;
const dec = new TextDecoder();
let mesh: TestMesh;
const open: Transport[] = [];
const names = new WeakMap<Transport, string>();
let seq = 0;

beforeEach(async () => {
  mesh = await createTestMesh("reconnect");
});
afterEach(async () => {
  await Promise.allSettled(open.splice(0).map((t) => t.close()));
  await mesh.teardown().catch(() => undefined);
});

function transport(extra: Partial<Parameters<typeof createAmqpTransport>[0]> = {}): Transport {
  const connectionName = `reconnect-${mesh.vhost}-${++seq}`;
  const t = createAmqpTransport({
    url: mesh.url,
    connectionName,
    reconnect: { initialDelayMs: 100, maxDelayMs: 1_000 },
    ...extra,
  });
  names.set(t, connectionName);
  open.push(t);
  return t;
}

/** Force-closes a transport's connection on the broker side. */
async function disrupt(t: Transport): Promise<void> {
  await closeConnectionByName(names.get(t) ?? "");
}

/** Sends until the broker takes it: the sender may itself still be reconnecting. */
async function sendEventually(t: Transport, ...args: Parameters<Transport["send"]>): Promise<void> {
  await waitFor(
    () =>
      t.send(...args).then(
        () => true,
        () => false,
      ),
    T,
    "the broker to take a message",
  );
}

describe("broker restart (rabbitmqctl stop_app / start_app)", () => {
  it("reports disconnected then reconnected, refuses sends promptly meanwhile, and consumes again", async () => {
    const service = transport();
    const client = transport();
    await service.connect();
    await client.connect();
    const got = createCollector<string>("deliveries");
    await service.consumeService(testServiceSpec("restart"), async (d) => {
      got.push(dec.decode(d.body));
      await d.ack();
    });
    const address = `nuropb-restart-${mesh.vhost}-rq`;
    const replies = createCollector<string>("replies");
    await client.consumeResponses({ address }, (f) => replies.push(dec.decode(f.body)));
    await client.send({ kind: "rpc", service: "restart" }, testFrame("before"));
    await got.waitForItem((x) => x === "before", T);

    const events = watchEvents(service);
    const clientEvents = watchEvents(client);
    await stopRabbitApp();
    try {
      await events.waitForItem((e) => e.type === "disconnected", T);
      await clientEvents.waitForItem((e) => e.type === "disconnected", T);
      // While the broker is away a send fails at once with a retryable transport error.
      const err = await withTimeout(
        client.send({ kind: "rpc", service: "restart" }, testFrame("during")).then(
          () => undefined,
          (e: unknown) => e,
        ),
        T,
        "a send during the outage to settle",
      );
      expect(err).toBeInstanceOf(NuropbTransportError);
      expect((err as NuropbTransportError).retryable).toBe(true);
      expect(service.state).toBe("connecting");
    } finally {
      await startRabbitApp();
    }
    await events.waitForItem((e) => e.type === "reconnected", T * 2);
    await clientEvents.waitForItem((e) => e.type === "reconnected", T * 2);
    expect(service.state).toBe("open");
    const types = events.items.map((e: TransportEvent) => e.type);
    expect(types.indexOf("disconnected")).toBeLessThan(types.indexOf("reconnected"));

    await sendEventually(client, { kind: "rpc", service: "restart" }, testFrame("after"));
    await got.waitForItem((x) => x === "after", T);
    // The auto-delete response queue vanished with the broker's restart; it was re-declared.
    await sendEventually(service, { kind: "reply", address }, testFrame("reply-after"));
    await replies.waitForItem((x) => x === "reply-after", T);
    expect(got.items).not.toContain("during");
    events.stop();
    clientEvents.stop();
  });
});

describe("deliveries in flight when the connection drops", () => {
  it("come back redelivered; settling the stale copy is a no-op and the channel survives", async () => {
    const service = transport();
    await service.connect();
    const got = createCollector<Delivery>("deliveries");
    await service.consumeService(testServiceSpec("inflight"), (d) => got.push(d)); // holds them
    await service.send({ kind: "rpc", service: "inflight" }, testFrame("m1"));
    const [first] = await got.waitForCount(1, T);
    expect(first?.redelivered).toBe(false);
    const events = watchEvents(service);
    await disrupt(service);
    await events.waitForItem((e) => e.type === "reconnected", T);
    const again = await got.waitForItem((d) => d !== first, T);
    expect(dec.decode(again.body)).toBe("m1");
    expect(again.redelivered).toBe(true);
    await first?.ack(); // stale: must neither throw nor disturb the new channel
    await first?.reject();
    await again.ack();
    await again.ack(); // double settle: ignored, never a second basic.ack (406)
    await service.send({ kind: "rpc", service: "inflight" }, testFrame("m2"));
    const m2 = await got.waitForItem((d) => dec.decode(d.body) === "m2", T);
    await m2.ack();
    expect(events.items.filter((e) => e.type === "disconnected")).toHaveLength(1);
    events.stop();
  });
});

describe("close() while handlers are running", () => {
  it("lets them reply and ack, refuses anything else meanwhile, and resolves as the last one ends", async () => {
    const service = transport();
    const client = transport();
    await Promise.all([service.connect(), client.connect()]);
    const address = `nuropb-drain-${mesh.vhost}-rq`;
    const replies = createCollector<string>("replies");
    await client.consumeResponses({ address }, (f) => replies.push(dec.decode(f.body)));
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const got = createCollector<string>("deliveries");
    await service.consumeService(testServiceSpec("drain", { prefetch: 2 }), async (d) => {
      const label = dec.decode(d.body);
      got.push(label);
      await gate;
      await service.send({ kind: "reply", address }, testFrame(`reply-${label}`));
      await d.ack();
    });
    await client.send({ kind: "rpc", service: "drain" }, testFrame("m1"));
    await client.send({ kind: "rpc", service: "drain" }, testFrame("m2"));
    await got.waitForCount(2, T);
    let closed = false;
    const closing = service.close().then(() => (closed = true));
    // Nothing new starts while it drains: only the running handlers' replies may go out.
    await expect(
      service.send({ kind: "rpc", service: "drain" }, testFrame("late")),
    ).rejects.toThrow();
    await new Promise((r) => setTimeout(r, 100));
    expect(closed).toBe(false);
    release();
    await withTimeout(closing, T, "close() after the handlers ended");
    await replies.waitForItem((x) => x === "reply-m2", T);
    expect([...replies.items].sort()).toEqual(["reply-m1", "reply-m2"]);
    // Both were acked: a new consumer's first delivery is a marker sent after them.
    const next = transport();
    await next.connect();
    const after = createCollector<Delivery>("after");
    await next.consumeService(testServiceSpec("drain"), (d) => after.push(d));
    await client.send({ kind: "rpc", service: "drain" }, testFrame("marker"));
    const [first] = await after.waitForCount(1, T);
    expect(dec.decode(first?.body ?? new Uint8Array())).toBe("marker");
    await first?.ack();
  });

  it("an ack made just before close() reaches the broker before the connection closes", async () => {
    // Acks travel on the consumer's channel, connection.close on channel 0: written the other
    // way round, the broker drops the acks and the messages come back.
    for (let round = 0; round < 5; round++) {
      const service = transport();
      const client = transport();
      await Promise.all([service.connect(), client.connect()]);
      let closing: Promise<void> | undefined;
      const acked = createCollector<string>("acked");
      await service.consumeService(testServiceSpec(`quick${String(round)}`), (d) => {
        void d.ack();
        acked.push(dec.decode(d.body));
        closing ??= service.close();
      });
      await client.send({ kind: "rpc", service: `quick${String(round)}` }, testFrame("m1"));
      await acked.waitForCount(1, T);
      await withTimeout(closing ?? Promise.resolve(), T, "close()");
      const next = transport();
      await next.connect();
      const after = createCollector<Delivery>("after");
      await next.consumeService(testServiceSpec(`quick${String(round)}`), (d) => after.push(d));
      await client.send({ kind: "rpc", service: `quick${String(round)}` }, testFrame("marker"));
      const [first] = await after.waitForCount(1, T);
      expect(dec.decode(first?.body ?? new Uint8Array())).toBe("marker");
      await first?.ack();
    }
  });

  it("stops waiting after closeTimeoutMs: an unsettled delivery goes back to the queue", async () => {
    const service = transport({ closeTimeoutMs: 300 });
    const client = transport();
    await Promise.all([service.connect(), client.connect()]);
    const got = createCollector<string>("deliveries");
    await service.consumeService(testServiceSpec("stuck"), (d) => {
      got.push(dec.decode(d.body));
      return new Promise<void>(() => {}); // never ends
    });
    await client.send({ kind: "rpc", service: "stuck" }, testFrame("m1"));
    await got.waitForCount(1, T);
    await withTimeout(service.close(), T, "close() bounded by closeTimeoutMs");
    expect(service.state).toBe("closed");
    const next = transport();
    await next.connect();
    const again = createCollector<Delivery>("again");
    await next.consumeService(testServiceSpec("stuck"), (d) => again.push(d));
    const [first] = await again.waitForCount(1, T);
    expect(dec.decode(first?.body ?? new Uint8Array())).toBe("m1");
    expect(first?.redelivered).toBe(true);
    await first?.ack();
  });
});

describe("permanent errors", () => {
  const password = "S3cret-Pa55word-xyz";

  it("a wrong password fails connect() at once with a clear error that does not contain it", async () => {
    const url = mesh.url.replace("guest:guest@", `guest:${password}@`);
    const t = transport({ url, connectTimeoutMs: 120_000 });
    const err = await withTimeout(
      t.connect().then(
        () => undefined,
        (e: unknown) => e,
      ),
      T,
      "connect() with a wrong password to fail (it must not retry)",
    );
    expect(err).toBeInstanceOf(NuropbTransportError);
    const text = String((err as Error).message);
    expect(text).toMatch(/ACCESS_REFUSED/);
    expect(text).toContain("guest");
    expect(text).not.toContain(password);
    expect(JSON.stringify(err)).not.toContain(password);
    expect(t.state).toBe("idle");
  });

  it("a missing vhost fails connect() at once, naming the vhost", async () => {
    const t = transport({ url: `${rabbitEnv().amqpUrl}/no-such-mesh`, connectTimeoutMs: 120_000 });
    const err = await withTimeout(
      t.connect().then(
        () => undefined,
        (e: unknown) => e,
      ),
      T,
      "connect() to a missing vhost to fail",
    );
    expect(isNuropbError(err)).toBe(true);
    expect(String((err as Error).message)).toMatch(/vhost 'no-such-mesh'.*does not exist/);
    expect(t.state).toBe("idle");
  });

  it("a bad URL is refused by the factory without echoing its password", () => {
    let err: unknown;
    try {
      createAmqpTransport({ url: `http://guest:${password}@host:5672/vhost` });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TypeError);
    expect(String((err as Error).message)).toContain("amqp: or amqps:");
    expect(String((err as Error).message)).not.toContain(password);
    expect(() => createAmqpTransport({ url: `amqp://guest:${password}@host:5672` })).toThrow(
      /no vhost/,
    );
  });

  it("losing the vhost after startup closes the transport with that reason", async () => {
    const doomed = await createTestMesh("doomed");
    try {
      const t = transport({ url: doomed.url });
      await t.connect();
      await t.consumeService(testServiceSpec("doomed"), () => {});
      const events = watchEvents(t);
      await deleteVhost(managementUrlFromAmqpUrl(doomed.url), doomed.vhost);
      const reason = await withTimeout(t.closed(), T * 2, "the transport to close");
      expect(reason).toBeInstanceOf(NuropbTransportError);
      expect(String(reason?.message)).toContain(doomed.vhost);
      expect(t.state).toBe("closed");
      await events.ended;
      const types = events.items.map((e) => e.type);
      // The broker cancels the consumer ("errored") and drops the connection ("disconnected");
      // re-declaring or reconnecting then finds the vhost gone, whichever comes first, and the
      // transport gives up instead of retrying forever.
      expect(types.at(-1)).toBe("closed");
      expect(types).not.toContain("reconnected");
      const closedEvent = events.items.at(-1) as { error?: Error };
      expect(closedEvent.error).toBe(reason);
    } finally {
      await doomed.teardown();
    }
  });
});

describe("replies after a reconnect", () => {
  it("responses reach the re-declared response queue", async () => {
    const a = transport();
    const b = transport();
    await a.connect();
    await b.connect();
    const address = `nuropb-replies-${mesh.vhost}-rq`;
    const got = createCollector<InboundFrame>("replies");
    await a.consumeResponses({ address }, (f) => got.push(f));
    const events = watchEvents(a);
    await disrupt(a);
    await events.waitForItem((e) => e.type === "reconnected", T);
    await sendEventually(b, { kind: "reply", address }, testFrame("r1"));
    await got.waitForItem((f) => dec.decode(f.body) === "r1", T);
    events.stop();
  });
});
