import { afterEach, describe, expect, it } from "vitest";
import {
  NuropbConnectionClosedError,
  NuropbMessageError,
  NuropbNotDeliveredError,
  NuropbTransportError,
  isNuropbError,
  newId,
} from "@nuropb/protocol";
import type {
  Delivery,
  Frame,
  InboundFrame,
  Listener,
  ServiceQueueSpec,
  Transport,
  TransportCapabilities,
} from "@nuropb/protocol";
import {
  createCollector,
  delay,
  frameText,
  testFrame as frameOf,
  testHeaders as headersFor,
  testServiceSpec as spec,
  uniqueName,
  waitFor,
  watchEvents,
  withTimeout,
} from "./helpers.ts";
import type { Collector } from "./helpers.ts";

/** Options of {@link describeTransportConformance}. */
export interface TransportConformanceOptions {
  /** Shown in the suite title, e.g. `"amqp (RabbitMQ 4.1)"`. */
  readonly name: string;
  /**
   * Returns a fresh, unconnected transport on the same broker and mesh as every other call.
   * The suite connects and closes it.
   */
  readonly create: () => Transport | Promise<Transport>;
  /**
   * Forces a connection loss of an open transport (kill its socket, restart the broker, or ask
   * the hub). The transport must then report `disconnected` and, once it has recovered,
   * `reconnected`. Without it, the reconnection test is not registered.
   */
  readonly disrupt?: (transport: Transport) => Promise<void>;
  /**
   * Longest wait for any single expected outcome (a delivery, an event, connect), in milliseconds.
   * @defaultValue 10000
   */
  readonly timeoutMs?: number;
  /**
   * How long a test watches to show that something does *not* happen (no redelivery, no extra
   * copy), in milliseconds. Longer is stricter and slower.
   * @defaultValue 250
   */
  readonly quietMs?: number;
}

/** The capabilities the suite found on a transport, and so which conditional tests it registered. */
type Caps = Pick<TransportCapabilities, "notDelivered" | "redelivery" | "messageTtl">;

/**
 * Registers a vitest `describe` block with the behavioural contract every NuroPb transport must
 * pass, written only against the `Transport` interface. Tests that depend on a capability
 * (`notDelivered`, `redelivery`, `messageTtl`) are registered only when the transport claims it;
 * the reconnection test only when `disrupt` is given. Names (services, topics, addresses) are
 * unique per test, so the suite can run against a shared broker.
 *
 * Call it at the top level of a test file. It creates one transport while collecting, to read
 * its capabilities, and closes it without connecting.
 * @throws TypeError when an option is invalid.
 * @example
 * ```ts
 * import { describeTransportConformance } from "@nuropb/transport-testkit";
 * describeTransportConformance({
 *   name: "nats",
 *   create: () => createNatsTransport({ servers: process.env.NATS_URL! }),
 * });
 * ```
 */
export function describeTransportConformance(options: TransportConformanceOptions): void {
  if (typeof options !== "object" || options === null) {
    throw new TypeError("describeTransportConformance needs an options object");
  }
  if (typeof options.name !== "string" || options.name === "") {
    throw new TypeError("options.name must be a non-empty string");
  }
  if (typeof options.create !== "function")
    throw new TypeError("options.create must be a function");
  if (options.disrupt !== undefined && typeof options.disrupt !== "function") {
    throw new TypeError("options.disrupt must be a function when given");
  }
  const timeoutMs = options.timeoutMs ?? 10_000;
  const quietMs = options.quietMs ?? 250;
  for (const [key, value] of [
    ["timeoutMs", timeoutMs],
    ["quietMs", quietMs],
  ] as const) {
    if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
      throw new TypeError(`options.${key} must be a positive number of milliseconds`);
    }
  }

  describe(`transport conformance: ${options.name}`, async () => {
    const probe = await options.create();
    const caps: Caps = {
      notDelivered: probe.capabilities.notDelivered,
      redelivery: probe.capabilities.redelivery,
      messageTtl: probe.capabilities.messageTtl,
    };
    await probe.close();
    registerSuite({ ...options, timeoutMs, quietMs }, caps);
  });
}

interface Settings {
  readonly create: () => Transport | Promise<Transport>;
  readonly disrupt?: (transport: Transport) => Promise<void>;
  readonly timeoutMs: number;
  readonly quietMs: number;
}

const text = (bytes: Uint8Array): string => frameText({ body: bytes });
const unique = uniqueName;

/** True when `err` is (a copy of) a NuroPb error of class `cls` or a subclass. */
function isErrorOf(err: unknown, cls: abstract new (...args: never[]) => Error): boolean {
  if (err instanceof cls) return true;
  // A second installed copy of @nuropb/protocol: compare names along the prototype chain.
  if (!isNuropbError(err)) return false;
  for (let p: unknown = Object.getPrototypeOf(err); p !== null; p = Object.getPrototypeOf(p)) {
    if ((p as { constructor?: { name?: string } }).constructor?.name === cls.name) return true;
  }
  return false;
}

async function expectRejection(
  promise: Promise<unknown>,
  cls: abstract new (...args: never[]) => Error,
  timeoutMs: number,
): Promise<unknown> {
  let outcome: { ok: true } | { ok: false; err: unknown };
  try {
    await withTimeout(promise, timeoutMs, `a rejection with ${cls.name}`);
    outcome = { ok: true };
  } catch (err) {
    outcome = { ok: false, err };
  }
  expect(outcome.ok, `expected a rejection with ${cls.name}`).toBe(false);
  const err = (outcome as { err: unknown }).err;
  expect(isErrorOf(err, cls), `expected ${cls.name}, got ${String(err)}`).toBe(true);
  return err;
}

function labelOf(d: InboundFrame): string {
  return text(d.body);
}

function registerSuite(s: Settings, caps: Caps): void {
  const { timeoutMs, quietMs } = s;
  /** Per-test budget: a handful of waits plus quiet periods. */
  const testTimeout = timeoutMs * 4 + quietMs * 8;
  const made: Transport[] = [];

  afterEach(async () => {
    const all = made.splice(0);
    await Promise.allSettled(all.map((t) => withTimeout(t.close(), timeoutMs, "close()")));
  }, testTimeout);

  const fresh = async (): Promise<Transport> => {
    const t = await s.create();
    made.push(t);
    return t;
  };
  const open = async (): Promise<Transport> => {
    const t = await fresh();
    await withTimeout(t.connect(), timeoutMs, "connect()");
    return t;
  };
  /** Short bounded wait, only to show something did not happen. */
  const quiet = (): Promise<void> => delay(quietMs);
  const consume = (
    t: Transport,
    queue: ServiceQueueSpec,
    handler: (d: Delivery) => void | Promise<void>,
  ): Promise<Listener> =>
    withTimeout(t.consumeService(queue, handler), timeoutMs, "consumeService()");
  const send = (t: Transport, ...args: Parameters<Transport["send"]>): Promise<void> =>
    withTimeout(t.send(...args), timeoutMs, "send()");
  /** A collector whose handler acks each delivery after recording it. */
  const acking = (
    what: string,
  ): Collector<Delivery> & { handler: (d: Delivery) => Promise<void> } => {
    const c = createCollector<Delivery>(what);
    return Object.assign(c, {
      handler: async (d: Delivery): Promise<void> => {
        c.push(d);
        await d.ack();
      },
    });
  };
  /** A collector whose handler records deliveries and leaves them unsettled. */
  const holding = (what: string): Collector<Delivery> & { handler: (d: Delivery) => void } => {
    const c = createCollector<Delivery>(what);
    return Object.assign(c, { handler: (d: Delivery): void => c.push(d) });
  };

  describe("lifecycle", () => {
    it(
      "connect() and close() are idempotent; state goes idle → connecting → open → closed",
      async () => {
        const t = await fresh();
        expect(t.state).toBe("idle");
        const first = t.connect();
        expect(["connecting", "open"]).toContain(t.state);
        const second = t.connect();
        await withTimeout(Promise.all([first, second]), timeoutMs, "connect()");
        expect(t.state).toBe("open");
        await withTimeout(t.connect(), timeoutMs, "a second connect()");
        expect(t.state).toBe("open");
        await withTimeout(Promise.all([t.close(), t.close()]), timeoutMs, "close()");
        expect(t.state).toBe("closed");
        await withTimeout(t.close(), timeoutMs, "a third close()");
        expect(t.state).toBe("closed");
      },
      testTimeout,
    );

    it(
      "closed() stays pending while open, then settles once with undefined after close()",
      async () => {
        const t = await open();
        let settled = false;
        void t.closed().then(() => (settled = true));
        await send(t, { kind: "event", topic: `${unique()}.nobody` }, frameOf("ping"));
        expect(settled).toBe(false);
        await withTimeout(t.close(), timeoutMs, "close()");
        await expect(withTimeout(t.closed(), timeoutMs, "closed()")).resolves.toBeUndefined();
        await expect(withTimeout(t.closed(), timeoutMs, "closed() again")).resolves.toBeUndefined();
        expect(settled).toBe(true);
      },
      testTimeout,
    );

    it(
      "close() during connect() is safe and ends closed",
      async () => {
        const t = await fresh();
        const connecting = t.connect();
        const outcome = connecting.then(
          () => undefined,
          (err: unknown) => err,
        );
        await withTimeout(t.close(), timeoutMs, "close() during connect()");
        const err = await withTimeout(outcome, timeoutMs, "the interrupted connect() to settle");
        if (err !== undefined) {
          expect(
            isErrorOf(err, NuropbTransportError),
            `connect() interrupted by close() rejected with ${String(err)}`,
          ).toBe(true);
        }
        expect(t.state).toBe("closed");
        await expect(withTimeout(t.closed(), timeoutMs, "closed()")).resolves.toBeUndefined();
        await expectRejection(
          t.send({ kind: "event", topic: "x" }, frameOf("late")),
          NuropbConnectionClosedError,
          timeoutMs,
        );
      },
      testTimeout,
    );

    it(
      "close() before connect() closes for good",
      async () => {
        const t = await fresh();
        await withTimeout(t.close(), timeoutMs, "close()");
        expect(t.state).toBe("closed");
        await expectRejection(t.connect(), NuropbConnectionClosedError, timeoutMs);
      },
      testTimeout,
    );

    it(
      "every operation after close() rejects with NuropbConnectionClosedError",
      async () => {
        const t = await open();
        await withTimeout(t.close(), timeoutMs, "close()");
        const name = unique();
        const ops: [string, () => Promise<unknown>][] = [
          ["connect", () => t.connect()],
          ["send rpc", () => t.send({ kind: "rpc", service: name }, frameOf("a"))],
          ["send event", () => t.send({ kind: "event", topic: name }, frameOf("a"))],
          ["send reply", () => t.send({ kind: "reply", address: name }, frameOf("a"))],
          ["consumeService", () => t.consumeService(spec(name), () => {})],
          ["consumeResponses", () => t.consumeResponses({ address: name }, () => {})],
        ];
        for (const [label, op] of ops) {
          const err = await expectRejection(op(), NuropbConnectionClosedError, timeoutMs);
          expect(err, label).toBeDefined();
        }
      },
      testTimeout,
    );

    it(
      "await using closes the transport",
      async () => {
        let seen: Transport | undefined;
        {
          await using t = await s.create();
          seen = t;
          await withTimeout(t.connect(), timeoutMs, "connect()");
          expect(t.state).toBe("open");
        }
        expect(seen.state).toBe("closed");
        await expect(withTimeout(seen.closed(), timeoutMs, "closed()")).resolves.toBeUndefined();
      },
      testTimeout,
    );

    it(
      "events() streams end when the transport closes; a stream opened after close ends at once",
      async () => {
        const t = await open();
        const events = watchEvents(t);
        await withTimeout(t.close(), timeoutMs, "close()");
        await withTimeout(events.ended, timeoutMs, "the events() stream to end");
        expect(events.items.map((e) => e.type)).not.toContain("disconnected");
        const late = watchEvents(t);
        await withTimeout(late.ended, timeoutMs, "a late events() stream to end");
      },
      testTimeout,
    );
  });

  describe("frames", () => {
    const allBytes = Uint8Array.from({ length: 256 }, (_, i) => i);

    it(
      "request frames arrive byte-exact: headers (null and non-ASCII values), binary body, correlationId, replyTo, ttlMs",
      async () => {
        const t = await open();
        const service = unique();
        const got = acking("deliveries");
        await consume(t, spec(service, { prefetch: 0 }), got.handler);
        const sent: Frame[] = [
          {
            headers: headersFor("request", null),
            body: allBytes,
            correlationId: newId(),
            replyTo: `nuropb-${service}-${newId()}-rq`,
            ttlMs: 60_000,
          },
          {
            headers: {
              ...headersFor("command", "trace-ünïcödé-✓-日本語-🚀"),
              encrypted: "yes",
              x_note: "naïve café — ½ €",
            },
            body: allBytes.slice().reverse(),
            correlationId: newId(),
            replyTo: `nuropb-${service}-${newId()}-rq`,
            ttlMs: 1_234_567,
          },
        ];
        for (const f of sent) await send(t, { kind: "rpc", service }, f);
        await got.waitForCount(2, timeoutMs);
        for (const f of sent) {
          const d = got.items.find((x) => x.correlationId === f.correlationId);
          expect(d, `delivery ${f.correlationId}`).toBeDefined();
          if (d === undefined) continue;
          expect({ ...d.headers }).toStrictEqual({ ...f.headers });
          expect(Array.from(d.body)).toEqual(Array.from(f.body));
          expect(d.replyTo).toBe(f.replyTo);
          expect(d.ttlMs).toBe(f.ttlMs);
          expect(d.redelivered).toBe(false);
        }
      },
      testTimeout,
    );

    it(
      "event and reply frames arrive byte-exact, without replyTo or ttlMs",
      async () => {
        const t = await open();
        const service = unique();
        const topic = `${service}.happened`;
        const address = `nuropb-${service}-${newId()}-rq`;
        const events = acking("events");
        const replies = createCollector<InboundFrame>("replies");
        await consume(t, spec(service, { eventBindings: [topic] }), events.handler);
        await withTimeout(
          t.consumeResponses({ address }, (f) => replies.push(f)),
          timeoutMs,
          "consumeResponses()",
        );
        const event: Frame = {
          headers: headersFor("event", "ünï"),
          body: allBytes,
          correlationId: newId(),
        };
        const reply: Frame = {
          headers: headersFor("response", null),
          body: new Uint8Array(0),
          correlationId: newId(),
        };
        await send(t, { kind: "event", topic }, event);
        await send(t, { kind: "reply", address }, reply);
        const [e] = await events.waitForCount(1, timeoutMs);
        const [r] = await replies.waitForCount(1, timeoutMs);
        for (const [got, f] of [
          [e, event],
          [r, reply],
        ] as const) {
          expect(got).toBeDefined();
          if (got === undefined) continue;
          expect({ ...got.headers }).toStrictEqual({ ...f.headers });
          expect(Array.from(got.body)).toEqual(Array.from(f.body));
          expect(got.correlationId).toBe(f.correlationId);
          expect(got.replyTo).toBeUndefined();
          expect(got.ttlMs).toBeUndefined();
          expect(got.redelivered).toBe(false);
        }
      },
      testTimeout,
    );

    it(
      "the sender may reuse its body and headers as soon as send() resolves",
      async () => {
        const t = await open();
        const service = unique();
        const got = acking("deliveries");
        await consume(t, spec(service), got.handler);
        const body = new TextEncoder().encode("original");
        const headers: Record<string, string | null> = { ...headersFor("request") };
        await send(t, { kind: "rpc", service }, { headers, body, correlationId: "c" });
        body.fill(0x21);
        headers.nuropb_type = "changed";
        const [d] = await got.waitForCount(1, timeoutMs);
        expect(text(d?.body ?? new Uint8Array())).toBe("original");
        expect(d?.headers.nuropb_type).toBe("request");
      },
      testTimeout,
    );
  });

  describe("routing", () => {
    it(
      "requests are routed by service name and by rpc alias",
      async () => {
        const t = await open();
        const service = unique();
        const alias = unique();
        const got = acking("deliveries");
        await consume(t, spec(service, { rpcBindings: [alias] }), got.handler);
        await send(t, { kind: "rpc", service }, frameOf("by-name"));
        await send(t, { kind: "rpc", service: alias }, frameOf("by-alias"));
        await got.waitForCount(2, timeoutMs);
        await quiet();
        expect(got.items.map(labelOf).sort()).toEqual(["by-alias", "by-name"]);
      },
      testTimeout,
    );

    it(
      "competing consumers: instances of one service share its queue, each message once, every instance busy",
      async () => {
        const instances = [await open(), await open(), await open()];
        const service = unique();
        const got = new Map<string, string[]>();
        let delivered = 0;
        for (const [i, t] of instances.entries()) {
          await consume(t, spec(service, { prefetch: 4 }), async (d) => {
            got.set(labelOf(d), [...(got.get(labelOf(d)) ?? []), `i${String(i)}`]);
            delivered++;
            await delay(1);
            await d.ack();
          });
        }
        const labels = Array.from({ length: 300 }, (_, i) => `m${String(i).padStart(3, "0")}`);
        const sender = instances[0] as Transport;
        await Promise.all(
          labels.map((label) => send(sender, { kind: "rpc", service }, frameOf(label))),
        );
        await waitFor(() => delivered >= labels.length, timeoutMs, "every message delivered");
        await quiet();
        expect([...got.keys()].sort()).toEqual(labels);
        expect([...got.values()].every((who) => who.length === 1)).toBe(true);
        expect(new Set([...got.values()].flat()).size).toBe(instances.length);
      },
      testTimeout,
    );

    // Once consumeService() resolved, a consumer is in line for what is sent next. The window is
    // wider than the burst, so no prefetch limit pushes work over to the second instance: the
    // transport must. 64 is core's default prefetch; 0 leaves the bound to the transport.
    for (const prefetch of [64, 0]) {
      it(
        `competing consumers at prefetch ${String(prefetch)}: a burst smaller than the window is spread over the idle instances`,
        async () => {
          const sender = await open();
          const instances = [await open(), await open()];
          const service = unique();
          const got = new Map<string, number[]>();
          let delivered = 0;
          for (const [i, t] of instances.entries()) {
            await consume(t, spec(service, { prefetch }), async (d) => {
              got.set(labelOf(d), [...(got.get(labelOf(d)) ?? []), i]);
              delivered++;
              await delay(5);
              await d.ack();
            });
          }
          const labels = Array.from({ length: 60 }, (_, i) => `m${String(i).padStart(2, "0")}`);
          await Promise.all(
            labels.map((label) => send(sender, { kind: "rpc", service }, frameOf(label))),
          );
          await waitFor(() => delivered >= labels.length, timeoutMs, "every message delivered");
          await quiet();
          expect([...got.keys()].sort()).toEqual(labels);
          expect([...got.values()].every((who) => who.length === 1)).toBe(true);
          const shares = instances.map(
            (_, i) => [...got.values()].filter((w) => w[0] === i).length,
          );
          // A fair share each, not an exact split: brokers need not alternate strictly.
          for (const share of shares) {
            expect(share, `messages per instance: ${shares.join(" / ")}`).toBeGreaterThanOrEqual(
              labels.length * 0.2,
            );
          }
        },
        testTimeout,
      );
    }

    it(
      "events fan out once to every subscribed service, matching * and # as AMQP does",
      async () => {
        const t = await open();
        const p = unique(); // topic prefix, unique to this test
        const subscribers = {
          star: [`${p}.orders.*`],
          hash: [`${p}.orders.#`],
          both: [`${p}.orders.*`, `${p}.orders.#`, `${p}.#`],
          middle: [`${p}.#.eu`],
          other: [`${p}.invoices.*`],
        } as const;
        const got = new Map<string, Collector<string>>();
        for (const [role, patterns] of Object.entries(subscribers)) {
          const service = unique();
          const c = createCollector<string>(`events of ${role}`);
          got.set(role, c);
          await consume(t, spec(service, { eventBindings: patterns, prefetch: 0 }), async (d) => {
            c.push(labelOf(d));
            await d.ack();
          });
        }
        // Two instances of one service share its queue: each event reaches one of them.
        const shared = unique();
        const twin = await open();
        const sharedGot = createCollector<string>("events of the shared service");
        for (const instance of [t, twin]) {
          await consume(instance, spec(shared, { eventBindings: [`${p}.orders.#`] }), async (d) => {
            sharedGot.push(labelOf(d));
            await d.ack();
          });
        }
        const topics = ["orders.created", "orders.created.eu", "orders", "unrelated.thing"];
        for (const topic of topics) {
          await send(t, { kind: "event", topic: `${p}.${topic}` }, frameOf(topic));
        }
        const expected: Record<string, string[]> = {
          star: ["orders.created"],
          hash: ["orders", "orders.created", "orders.created.eu"],
          both: ["orders", "orders.created", "orders.created.eu", "unrelated.thing"],
          middle: ["orders.created.eu"],
          other: [],
        };
        for (const [role, labels] of Object.entries(expected)) {
          await got.get(role)?.waitForCount(labels.length, timeoutMs);
        }
        await sharedGot.waitForCount(3, timeoutMs);
        await quiet();
        for (const [role, labels] of Object.entries(expected)) {
          expect([...(got.get(role)?.items ?? [])].sort(), role).toEqual(labels);
        }
        expect([...sharedGot.items].sort()).toEqual([
          "orders",
          "orders.created",
          "orders.created.eu",
        ]);
      },
      testTimeout,
    );

    it(
      "an event nobody subscribes to is accepted and dropped",
      async () => {
        const t = await open();
        const topic = `${unique()}.nobody.listens`;
        await send(t, { kind: "event", topic }, frameOf("dropped"));
        expect(t.state).toBe("open");
        // A subscriber that comes later gets what is published from then on, not the old event.
        const got = createCollector<string>("events");
        await consume(t, spec(unique(), { eventBindings: [topic] }), async (d) => {
          got.push(labelOf(d));
          await d.ack();
        });
        await send(t, { kind: "event", topic }, frameOf("marker"));
        await got.waitForCount(1, timeoutMs);
        await quiet();
        expect(got.items).toEqual(["marker"]);
      },
      testTimeout,
    );

    it(
      "replies reach only the addressed response consumer; a reply to an unknown address is dropped",
      async () => {
        const a = await open();
        const b = await open();
        const addressA = `nuropb-${unique()}-rq`;
        const addressB = `nuropb-${unique()}-rq`;
        const gotA = createCollector<InboundFrame>("replies on A");
        const gotB = createCollector<InboundFrame>("replies on B");
        await withTimeout(
          a.consumeResponses({ address: addressA }, (f) => gotA.push(f)),
          timeoutMs,
        );
        await withTimeout(
          b.consumeResponses({ address: addressB }, (f) => gotB.push(f)),
          timeoutMs,
        );
        const unknown = `nuropb-${unique()}-rq`;
        await send(b, { kind: "reply", address: unknown }, frameOf("lost"));
        await send(b, { kind: "reply", address: addressA }, frameOf("for-a"));
        await send(a, { kind: "reply", address: addressB }, frameOf("for-b"));
        await gotA.waitForCount(1, timeoutMs);
        await gotB.waitForCount(1, timeoutMs);
        // Consuming the unknown address now shows the reply sent there was dropped, not kept.
        const gotLate = createCollector<InboundFrame>("replies on the late address");
        await withTimeout(
          a.consumeResponses({ address: unknown }, (f) => gotLate.push(f)),
          timeoutMs,
        );
        await send(b, { kind: "reply", address: unknown }, frameOf("marker"));
        await gotLate.waitForCount(1, timeoutMs);
        await quiet();
        expect(gotA.items.map(labelOf)).toEqual(["for-a"]);
        expect(gotB.items.map(labelOf)).toEqual(["for-b"]);
        expect(gotLate.items.map(labelOf)).toEqual(["marker"]);
      },
      testTimeout,
    );

    it(
      "a second live consumer of a response address is refused with NuropbTransportError; after stop() the address is free",
      async () => {
        const a = await open();
        const b = await open();
        const address = `nuropb-${unique()}-rq`;
        const first = await withTimeout(
          a.consumeResponses({ address }, () => {}),
          timeoutMs,
        );
        await expectRejection(
          b.consumeResponses({ address }, () => {}),
          NuropbTransportError,
          timeoutMs,
        );
        await withTimeout(first.stop(), timeoutMs, "Listener.stop()");
        const got = createCollector<InboundFrame>("replies on the new consumer");
        await withTimeout(
          b.consumeResponses({ address }, (f) => got.push(f)),
          timeoutMs,
          "consumeResponses() after the first consumer stopped",
        );
        await send(a, { kind: "reply", address }, frameOf("after"));
        await got.waitForCount(1, timeoutMs);
      },
      testTimeout,
    );

    if (caps.notDelivered) {
      it(
        "send() of a request for a service nobody consumes rejects with NuropbNotDeliveredError",
        async () => {
          const t = await open();
          await expectRejection(
            t.send({ kind: "rpc", service: unique() }, frameOf("nobody")),
            NuropbNotDeliveredError,
            timeoutMs,
          );
          const service = unique();
          const got = acking("deliveries");
          await consume(t, spec(service), got.handler);
          await send(t, { kind: "rpc", service }, frameOf("still-works"));
          await got.waitForCount(1, timeoutMs);
        },
        testTimeout,
      );
    }
  });

  describe("settlement", () => {
    it(
      "ack() removes the message: it is neither redelivered nor given to a later consumer",
      async () => {
        const a = await open();
        const b = await open();
        const service = unique();
        const gotA = acking("deliveries on A");
        const listener = await consume(a, spec(service), gotA.handler);
        await send(a, { kind: "rpc", service }, frameOf("m1"));
        await gotA.waitForCount(1, timeoutMs);
        await send(a, { kind: "rpc", service }, frameOf("m2"));
        await gotA.waitForCount(2, timeoutMs);
        await withTimeout(listener.stop(), timeoutMs, "Listener.stop()");
        const gotB = acking("deliveries on B");
        await consume(b, spec(service), gotB.handler);
        await send(a, { kind: "rpc", service }, frameOf("marker"));
        await gotB.waitForCount(1, timeoutMs);
        await quiet();
        expect(gotA.items.map(labelOf)).toEqual(["m1", "m2"]);
        expect(gotB.items.map(labelOf)).toEqual(["marker"]);
      },
      testTimeout,
    );

    if (caps.redelivery) {
      it(
        "requeue() redelivers the message once, marked redelivered",
        async () => {
          const t = await open();
          const service = unique();
          const got = createCollector<string>("deliveries");
          await consume(t, spec(service), async (d) => {
            got.push(`${labelOf(d)}:${String(d.redelivered)}`);
            await (d.redelivered ? d.ack() : d.requeue());
          });
          await send(t, { kind: "rpc", service }, frameOf("m1"));
          await got.waitForCount(2, timeoutMs);
          await quiet();
          expect(got.items).toEqual(["m1:false", "m1:true"]);
        },
        testTimeout,
      );
    }

    it(
      "reject() does not redeliver the message",
      async () => {
        const t = await open();
        const service = unique();
        const got = createCollector<string>("deliveries");
        await consume(t, spec(service), async (d) => {
          got.push(labelOf(d));
          await (labelOf(d) === "m1" ? d.reject() : d.ack());
        });
        await send(t, { kind: "rpc", service }, frameOf("m1"));
        await got.waitForCount(1, timeoutMs);
        await send(t, { kind: "rpc", service }, frameOf("marker"));
        await got.waitForCount(2, timeoutMs);
        await quiet();
        expect(got.items).toEqual(["m1", "marker"]);
      },
      testTimeout,
    );

    it(
      "a handler that throws without settling has its delivery rejected, not redelivered",
      async () => {
        const t = await open();
        const service = unique();
        const got = createCollector<string>("deliveries");
        await consume(t, spec(service), async (d) => {
          got.push(labelOf(d));
          if (labelOf(d) === "sync") throw new Error("handler failure (expected by the test)");
          if (labelOf(d) === "async") {
            await Promise.reject(new Error("handler failure (expected by the test)"));
          }
          await d.ack();
        });
        await send(t, { kind: "rpc", service }, frameOf("sync"));
        await got.waitForCount(1, timeoutMs);
        await send(t, { kind: "rpc", service }, frameOf("async"));
        await got.waitForCount(2, timeoutMs);
        await send(t, { kind: "rpc", service }, frameOf("marker"));
        await got.waitForCount(3, timeoutMs);
        await quiet();
        expect(got.items).toEqual(["sync", "async", "marker"]);
      },
      testTimeout,
    );

    it(
      "only the first settle call counts; later ones resolve and are ignored",
      async () => {
        const t = await open();
        const service = unique();
        const got = createCollector<string>("deliveries");
        await consume(t, spec(service), async (d) => {
          got.push(labelOf(d));
          await d.ack();
          await d.reject();
          await d.requeue();
          await d.ack();
        });
        await send(t, { kind: "rpc", service }, frameOf("m1"));
        await got.waitForCount(1, timeoutMs);
        await send(t, { kind: "rpc", service }, frameOf("marker"));
        await got.waitForCount(2, timeoutMs);
        await quiet();
        expect(got.items).toEqual(["m1", "marker"]);
      },
      testTimeout,
    );

    it(
      "prefetch 1 allows at most one unsettled delivery at a time",
      async () => {
        const t = await open();
        const service = unique();
        const held = holding("deliveries");
        await consume(t, spec(service, { prefetch: 1 }), held.handler);
        const labels = ["m1", "m2", "m3"];
        for (const label of labels) await send(t, { kind: "rpc", service }, frameOf(label));
        for (let i = 0; i < labels.length; i++) {
          await held.waitForCount(i + 1, timeoutMs);
          await quiet();
          expect(held.items, "deliveries while one is unsettled").toHaveLength(i + 1);
          await held.items[i]?.ack();
        }
        expect(held.items.map(labelOf).sort()).toEqual(labels);
      },
      testTimeout,
    );
  });

  describe("stopping consumers", () => {
    it(
      "Listener.stop() stops deliveries; its unsettled deliveries come back, redelivered, to another consumer",
      async () => {
        const a = await open();
        const b = await open();
        const service = unique();
        const heldA = holding("deliveries on A");
        const listener = await consume(a, spec(service), heldA.handler);
        await send(a, { kind: "rpc", service }, frameOf("m1"));
        await heldA.waitForCount(1, timeoutMs);
        const gotB = acking("deliveries on B");
        await consume(b, spec(service), gotB.handler);
        await withTimeout(listener.stop(), timeoutMs, "Listener.stop()");
        await withTimeout(listener.stop(), timeoutMs, "a second Listener.stop()");
        const [again] = await gotB.waitForCount(1, timeoutMs);
        expect(again === undefined ? undefined : labelOf(again)).toBe("m1");
        if (caps.redelivery) expect(again?.redelivered).toBe(true);
        await send(a, { kind: "rpc", service }, frameOf("m2"));
        await gotB.waitForCount(2, timeoutMs);
        // Settling the stale delivery is a no-op, never an error.
        await withTimeout(heldA.items[0]?.ack() ?? Promise.resolve(), timeoutMs, "a stale ack()");
        await quiet();
        expect(heldA.items.map(labelOf)).toEqual(["m1"]);
        expect(gotB.items.map(labelOf)).toEqual(["m1", "m2"]);
      },
      testTimeout,
    );

    it(
      "a handler still running when Listener.stop() is called can still ack its delivery",
      async () => {
        const a = await open();
        const b = await open();
        const service = unique();
        let release: () => void = () => {};
        const gate = new Promise<void>((resolve) => (release = resolve));
        const acked = createCollector<string>("acks on A");
        const started = createCollector<string>("deliveries on A");
        const listener = await consume(a, spec(service), async (d) => {
          started.push(labelOf(d));
          await gate;
          await d.ack();
          acked.push(labelOf(d));
        });
        await send(a, { kind: "rpc", service }, frameOf("m1"));
        await started.waitForCount(1, timeoutMs);
        await withTimeout(listener.stop(), timeoutMs, "Listener.stop()");
        release();
        await acked.waitForCount(1, timeoutMs);
        const gotB = acking("deliveries on B");
        await consume(b, spec(service), gotB.handler);
        await send(a, { kind: "rpc", service }, frameOf("marker"));
        await gotB.waitForCount(1, timeoutMs);
        await quiet();
        expect(gotB.items.map(labelOf)).toEqual(["marker"]);
        expect(started.items).toEqual(["m1"]);
      },
      testTimeout,
    );

    it(
      "close() gives unsettled deliveries back for another consumer; settling them afterwards is a no-op",
      async () => {
        const a = await open();
        const b = await open();
        const service = unique();
        const heldA = holding("deliveries on A");
        await consume(a, spec(service), heldA.handler);
        await send(b, { kind: "rpc", service }, frameOf("m1"));
        await heldA.waitForCount(1, timeoutMs);
        await withTimeout(a.close(), timeoutMs, "close()");
        await withTimeout(heldA.items[0]?.ack() ?? Promise.resolve(), timeoutMs, "a stale ack()");
        const gotB = acking("deliveries on B");
        await consume(b, spec(service), gotB.handler);
        const [again] = await gotB.waitForCount(1, timeoutMs);
        expect(again === undefined ? undefined : labelOf(again)).toBe("m1");
        if (caps.redelivery) expect(again?.redelivered).toBe(true);
      },
      testTimeout,
    );
  });

  describe("limits", () => {
    it(
      "a body over capabilities.maxFrameBytes rejects with NuropbMessageError; the transport stays usable",
      async () => {
        const t = await open();
        const service = unique();
        const got = acking("deliveries");
        await consume(t, spec(service), got.handler);
        const oversize = {
          ...frameOf("big"),
          body: new Uint8Array(t.capabilities.maxFrameBytes + 1),
        };
        await expectRejection(
          t.send({ kind: "rpc", service }, oversize),
          NuropbMessageError,
          timeoutMs,
        );
        await send(t, { kind: "rpc", service }, frameOf("small"));
        const [d] = await got.waitForCount(1, timeoutMs);
        expect(d === undefined ? undefined : labelOf(d)).toBe("small");
      },
      testTimeout,
    );

    it(
      "a ttlMs that is not a whole number of ms from 0 to 2^32 − 1 rejects with NuropbMessageError and sends nothing",
      async () => {
        const t = await open();
        const service = unique();
        const got = acking("deliveries");
        await consume(t, spec(service), got.handler);
        for (const ttlMs of [-1, 0.5, 2 ** 32, Number.POSITIVE_INFINITY, Number.NaN]) {
          await expectRejection(
            t.send({ kind: "rpc", service }, { ...frameOf(`bad-${String(ttlMs)}`), ttlMs }),
            NuropbMessageError,
            timeoutMs,
          );
        }
        // Nothing of the refused sends arrives: the first delivery is a marker sent after them.
        await send(t, { kind: "rpc", service }, { ...frameOf("marker"), ttlMs: 2 ** 32 - 1 });
        const [d] = await got.waitForCount(1, timeoutMs);
        expect(d === undefined ? undefined : labelOf(d)).toBe("marker");
      },
      testTimeout,
    );

    if (caps.messageTtl) {
      it(
        "a message that waits in the queue longer than its ttlMs is not delivered",
        async () => {
          const t = await open();
          const service = unique();
          const held = holding("deliveries");
          await consume(t, spec(service, { prefetch: 1 }), held.handler);
          await send(t, { kind: "rpc", service }, frameOf("first", { ttlMs: 60_000 }));
          await held.waitForCount(1, timeoutMs);
          // Waits behind the unsettled first message until its ttl has passed.
          const ttlMs = Math.max(50, Math.round(quietMs / 2));
          await send(t, { kind: "rpc", service }, frameOf("expires", { ttlMs }));
          await delay(ttlMs + quietMs);
          await held.items[0]?.ack();
          await send(t, { kind: "rpc", service }, frameOf("marker", { ttlMs: 60_000 }));
          await held.waitForCount(2, timeoutMs);
          await held.items[1]?.ack();
          await quiet();
          expect(held.items.map(labelOf)).toEqual(["first", "marker"]);
        },
        testTimeout,
      );
    }
  });

  const disrupt = s.disrupt;
  if (disrupt !== undefined) {
    describe("connection loss", () => {
      it(
        "events() reports disconnected then reconnected, and consuming resumes",
        async () => {
          const t = await open();
          const other = await open();
          const service = unique();
          const address = `nuropb-${service}-${newId()}-rq`;
          const got = acking("deliveries");
          const replies = createCollector<InboundFrame>("replies");
          await consume(t, spec(service), got.handler);
          await withTimeout(
            t.consumeResponses({ address }, (f) => replies.push(f)),
            timeoutMs,
          );
          const events = watchEvents(t);
          await withTimeout(disrupt(t), timeoutMs, "disrupt()");
          await events.waitForItem((e) => e.type === "reconnected", timeoutMs);
          const types = events.items.map((e) => e.type);
          expect(types.indexOf("disconnected")).toBeGreaterThanOrEqual(0);
          expect(types.indexOf("disconnected")).toBeLessThan(types.indexOf("reconnected"));
          expect(t.state).toBe("open");
          await waitFor(
            async () => {
              try {
                await other.send({ kind: "rpc", service }, frameOf("after"));
                return true;
              } catch {
                return false;
              }
            },
            timeoutMs,
            "a request to be accepted after the reconnect",
          );
          await got.waitForItem((d) => labelOf(d) === "after", timeoutMs);
          await send(other, { kind: "reply", address }, frameOf("reply-after"));
          await replies.waitForItem((f) => labelOf(f) === "reply-after", timeoutMs);
          await send(t, { kind: "rpc", service }, frameOf("own"));
          await got.waitForItem((d) => labelOf(d) === "own", timeoutMs);
          events.stop();
        },
        testTimeout,
      );
    });
  }
}
