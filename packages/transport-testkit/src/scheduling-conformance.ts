import { afterEach, describe, expect, it } from "vitest";
import { MAX_MESSAGE_TTL_MS, schedulingOf } from "@nuropb/protocol";
import type { Delivery, Frame, Transport, TransportScheduling } from "@nuropb/protocol";
import {
  createCollector,
  delay,
  frameText,
  testFrame,
  testHeaders,
  testServiceSpec,
  uniqueName,
  withTimeout,
} from "./helpers.ts";

/** Options of {@link describeSchedulingConformance}. */
export interface SchedulingConformanceOptions {
  /** Shown in the suite title, e.g. `"amqp (RabbitMQ 4.1)"`. */
  readonly name: string;
  /**
   * Returns a fresh, unconnected transport with a `scheduling` capability, on the same broker and
   * mesh as every other call. The suite connects and closes it.
   */
  readonly create: () => Transport | Promise<Transport>;
  /**
   * Longest wait for any single expected outcome (a delivery, connect), in milliseconds, on top of
   * the delay being tested.
   * @defaultValue 10000
   */
  readonly timeoutMs?: number;
  /**
   * How long after a claim's ttl the suite expects the claim to be gone, in milliseconds (the
   * broker's expiry may lag a little).
   * @defaultValue 500
   */
  readonly expirySlackMs?: number;
}

/** A delivery with the `Date.now()` at which its handler saw it. */
interface Arrival {
  readonly delivery: Delivery;
  readonly at: number;
}

/**
 * Registers a vitest `describe` block with the contract of `transport.scheduling`
 * ({@link TransportScheduling}), written only against the `Transport` interface: a delayed frame
 * never arrives early, still arrives when the sender has closed, arrives as an ordinary delivery
 * without a ttl; a reply sent to `serviceReplyAddress` lands on the service queue; of two
 * transports claiming at once exactly one wins (the other loses); a taker claims again; expired
 * and unknown claims are absent; bad arguments are refused at once with a TypeError or RangeError naming them.
 * Names are unique per test, so the suite can run against a shared broker.
 * @throws TypeError when an option is invalid.
 * @example
 * ```ts
 * describeSchedulingConformance({ name: "memory", create: () => createMemoryTransport({ hub }) });
 * ```
 */
export function describeSchedulingConformance(options: SchedulingConformanceOptions): void {
  if (typeof options !== "object" || options === null) {
    throw new TypeError("describeSchedulingConformance needs an options object");
  }
  if (typeof options.name !== "string" || options.name === "") {
    throw new TypeError("options.name must be a non-empty string");
  }
  if (typeof options.create !== "function") {
    throw new TypeError("options.create must be a function");
  }
  const timeoutMs = options.timeoutMs ?? 10_000;
  const slackMs = options.expirySlackMs ?? 500;
  for (const [key, value] of [
    ["timeoutMs", timeoutMs],
    ["expirySlackMs", slackMs],
  ] as const) {
    if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
      throw new TypeError(`options.${key} must be a positive number of milliseconds`);
    }
  }
  describe(`scheduling conformance: ${options.name}`, () => {
    registerSuite(options.create, timeoutMs, slackMs);
  });
}

function registerSuite(
  create: () => Transport | Promise<Transport>,
  timeoutMs: number,
  slackMs: number,
): void {
  const testTimeout = timeoutMs * 4 + slackMs * 4;
  const made: Transport[] = [];

  afterEach(async () => {
    const all = made.splice(0);
    await Promise.allSettled(all.map((t) => withTimeout(t.close(), timeoutMs, "close()")));
  }, testTimeout);

  const open = async (): Promise<[Transport, TransportScheduling]> => {
    const t = await create();
    made.push(t);
    await withTimeout(t.connect(), timeoutMs, "connect()");
    const scheduling = schedulingOf(t);
    if (scheduling === undefined) throw new Error(`transport '${t.kind}' has no scheduling`);
    return [t, scheduling];
  };

  /** Consumes `service` on `t`, acking and recording each delivery with its arrival time. */
  const consume = async (
    t: Transport,
    service: string,
  ): Promise<ReturnType<typeof createCollector<Arrival>>> => {
    const got = createCollector<Arrival>(`deliveries of ${service}`);
    await withTimeout(
      t.consumeService(testServiceSpec(service, { prefetch: 10 }), async (d) => {
        got.push({ delivery: d, at: Date.now() });
        await d.ack();
      }),
      timeoutMs,
      "consumeService()",
    );
    return got;
  };

  it(
    "delivers a delayed frame no sooner than its delay, as an ordinary delivery without ttl",
    async () => {
      const [a, sa] = await open();
      const service = uniqueName();
      const got = await consume(a, service);
      const label = uniqueName();
      const frame: Frame = {
        ...testFrame(label, { replyTo: "nuropb-somebody-rq", ttlMs: 50 }),
        headers: testHeaders("request", "trace-1"),
      };
      const delayMs = 700;
      const before = Date.now();
      await withTimeout(sa.sendDelayed(service, frame, delayMs), timeoutMs, "sendDelayed()");
      const { delivery, at } = await got.waitForItem(
        (x) => frameText(x.delivery) === label,
        timeoutMs + delayMs,
      );
      expect(at - before).toBeGreaterThanOrEqual(delayMs);
      expect(delivery.correlationId).toBe(label);
      expect(delivery.replyTo).toBe("nuropb-somebody-rq");
      expect(delivery.redelivered).toBe(false);
      expect(delivery.ttlMs).toBeUndefined();
      expect(delivery.headers).toMatchObject({ nuropb_type: "request", trace_id: "trace-1" });
      expect(got.items).toHaveLength(1);
    },
    testTimeout,
  );

  it(
    "keeps the order of due time across frames and delivers a zero delay",
    async () => {
      const [a, sa] = await open();
      const service = uniqueName();
      const got = await consume(a, service);
      const before = Date.now();
      await sa.sendDelayed(service, testFrame("late"), 1500);
      await sa.sendDelayed(service, testFrame("now"), 0);
      await sa.sendDelayed(service, testFrame("soon"), 300);
      const all = await got.waitForCount(3, timeoutMs + 1500);
      expect(all.map((x) => frameText(x.delivery))).toEqual(["now", "soon", "late"]);
      const late = all[2] as Arrival;
      const soon = all[1] as Arrival;
      expect(late.at - before).toBeGreaterThanOrEqual(1500);
      expect(soon.at - before).toBeGreaterThanOrEqual(300);
    },
    testTimeout,
  );

  it(
    "delivers a delayed frame after the sending transport closed, to another transport",
    async () => {
      const [sender, ss] = await open();
      const [receiver] = await open();
      const service = uniqueName();
      const got = await consume(receiver, service);
      const before = Date.now();
      await ss.sendDelayed(service, testFrame("orphan"), 500);
      await withTimeout(sender.close(), timeoutMs, "close()");
      const { at } = await got.waitForItem((x) => frameText(x.delivery) === "orphan", timeoutMs);
      expect(at - before).toBeGreaterThanOrEqual(500);
    },
    testTimeout,
  );

  it(
    "delivers each delayed frame once while several transports are connected",
    async () => {
      const all = await Promise.all([open(), open(), open()]);
      const service = uniqueName();
      const got = await consume((all[0] as [Transport, TransportScheduling])[0], service);
      const labels: string[] = [];
      await Promise.all(
        all.flatMap(([, s], i) =>
          Array.from({ length: 10 }, (_, j) => {
            const label = `f${i}-${j}`;
            labels.push(label);
            return s.sendDelayed(service, testFrame(label), (j % 4) * 100);
          }),
        ),
      );
      await got.waitForCount(labels.length, timeoutMs + 400);
      await delay(slackMs);
      const seen = got.items.map((x) => frameText(x.delivery)).sort();
      expect(seen).toEqual([...labels].sort());
    },
    testTimeout,
  );

  it(
    "delivers a delayed frame to an instance that connects after its sender closed",
    async () => {
      const service = uniqueName();
      // The service's queue exists (an instance ran and stopped); nobody is connected when the
      // frame comes due but the instance that arrives later.
      const [first] = await open();
      const listener = await withTimeout(
        first.consumeService(testServiceSpec(service), (d) => d.requeue()),
        timeoutMs,
        "consumeService()",
      );
      await listener.stop();
      await withTimeout(first.close(), timeoutMs, "close()");
      const [sender, ss] = await open();
      const before = Date.now();
      await ss.sendDelayed(service, testFrame("for-later"), 400);
      await withTimeout(sender.close(), timeoutMs, "close()");
      await delay(500);
      const [late] = await open();
      const got = await consume(late, service);
      const { delivery, at } = await got.waitForItem(() => true, timeoutMs);
      expect(frameText(delivery)).toBe("for-later");
      expect(at - before).toBeGreaterThanOrEqual(400);
    },
    testTimeout,
  );

  it(
    "lands a reply sent to serviceReplyAddress on the service queue as a delivery",
    async () => {
      const [a, sa] = await open();
      const [b] = await open();
      const service = uniqueName();
      const got = await consume(b, service);
      const address = sa.serviceReplyAddress(service);
      expect(typeof address).toBe("string");
      expect(address).not.toBe("");
      expect(sa.serviceReplyAddress(service)).toBe(address);
      const frame: Frame = {
        headers: testHeaders("response", "trace-r"),
        body: new TextEncoder().encode("answer"),
        correlationId: uniqueName(),
      };
      await withTimeout(a.send({ kind: "reply", address }, frame), timeoutMs, "send()");
      const { delivery } = await got.waitForItem(() => true, timeoutMs);
      expect(frameText(delivery)).toBe("answer");
      expect(delivery.correlationId).toBe(frame.correlationId);
      expect(delivery.headers).toMatchObject({ nuropb_type: "response", trace_id: "trace-r" });
    },
    testTimeout,
  );

  it(
    "lets exactly one of two transports take a claim, and the winner take it again",
    async () => {
      const [, sa] = await open();
      const [, sb] = await open();
      for (let round = 0; round < 5; round++) {
        const key = `${uniqueName()}:${round}`;
        await sa.openClaim(key, 30_000);
        const [wa, wb] = await Promise.all([sa.claim(key, "a"), sb.claim(key, "b")]);
        expect([wa, wb].sort()).toEqual(["lost", "won"]);
        const [won, lost] = wa === "won" ? ["a", "b"] : ["b", "a"];
        // The claim belongs to the taker, whichever transport asks (a redelivered message).
        expect(await sa.claim(key, won)).toBe("won");
        expect(await sb.claim(key, won)).toBe("won");
        expect(await sa.claim(key, lost)).toBe("lost");
        // Opening again is idempotent: the taker stays.
        await sb.openClaim(key, 30_000);
        expect(await sb.claim(key, lost)).toBe("lost");
        expect(await sa.claim(key, won)).toBe("won");
      }
    },
    testTimeout,
  );

  it(
    "tells a claim that was never opened or has expired (absent) from one another holds (lost)",
    async () => {
      const [, sa] = await open();
      const [b, sb] = await open();
      expect(await sa.claim(uniqueName(), "a")).toBe("absent");
      const open1 = uniqueName();
      const taken = uniqueName();
      const ttlMs = 400;
      await sa.openClaim(open1, ttlMs);
      await sa.openClaim(taken, ttlMs);
      expect(await sb.claim(taken, "b")).toBe("won");
      expect(await sa.claim(taken, "a")).toBe("lost");
      await b.close();
      await delay(ttlMs + slackMs);
      expect(await sa.claim(open1, "a")).toBe("absent");
      expect(await sa.claim(taken, "b")).toBe("absent");
      expect(await sa.claim(taken, "a")).toBe("absent");
      // An expired claim may be opened afresh.
      await sa.openClaim(taken, 30_000);
      expect(await sa.claim(taken, "a")).toBe("won");
    },
    testTimeout,
  );

  it(
    "refuses bad arguments at once, naming them",
    async () => {
      const [, s] = await open();
      const frame = testFrame("x");
      const rejects = async (
        call: () => unknown,
        cls: typeof TypeError | typeof RangeError,
        name: string,
      ): Promise<void> => {
        let error: unknown;
        try {
          await call();
        } catch (err) {
          error = err;
        }
        expect(error, `expected ${cls.name} naming ${name}`).toBeInstanceOf(cls);
        expect((error as Error).message).toContain(name);
      };
      expect(() => s.serviceReplyAddress("")).toThrow(TypeError);
      expect(() => s.serviceReplyAddress(7 as unknown as string)).toThrow(/service/);
      for (const bad of [-1, Number.NaN, Number.POSITIVE_INFINITY, MAX_MESSAGE_TTL_MS + 1]) {
        await rejects(() => s.sendDelayed("svc", frame, bad), RangeError, "delayMs");
      }
      await rejects(
        () => s.sendDelayed("svc", frame, "5" as unknown as number),
        RangeError,
        "delayMs",
      );
      await rejects(() => s.sendDelayed("", frame, 5), TypeError, "service");
      for (const key of ["", "has space", "x".repeat(201), "é", 5 as unknown as string]) {
        await rejects(() => s.openClaim(key, 1000), TypeError, "key");
        await rejects(() => s.claim(key, "t"), TypeError, "key");
      }
      for (const ttl of [0, -5, 1.5, Number.NaN, MAX_MESSAGE_TTL_MS + 1]) {
        await rejects(() => s.openClaim("k", ttl), RangeError, "ttlMs");
      }
      for (const taker of ["", 3 as unknown as string, "t".repeat(1025)]) {
        await rejects(() => s.claim("k", taker), TypeError, "taker");
      }
    },
    testTimeout,
  );

  it(
    "rejects scheduling on a closed transport",
    async () => {
      const [t, s] = await open();
      await t.close();
      await expect(s.sendDelayed("svc", testFrame("x"), 10)).rejects.toThrow();
      await expect(s.openClaim("k", 1000)).rejects.toThrow();
      await expect(s.claim("k", "t")).rejects.toThrow();
    },
    testTimeout,
  );
}
