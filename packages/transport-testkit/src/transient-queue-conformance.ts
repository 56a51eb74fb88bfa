import { afterEach, describe, expect, it } from "vitest";
import { NuropbNotDeliveredError, isNuropbError } from "@nuropb/protocol";
import type { Delivery, Listener, Transport } from "@nuropb/protocol";
import type { Collector } from "./helpers.ts";
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

/** Options of {@link describeTransientQueueConformance}. */
export interface TransientQueueConformanceOptions {
  /** Shown in the suite title. */
  readonly name: string;
  /** Returns a fresh, unconnected transport on the same broker and mesh as every other call. */
  readonly create: () => Transport | Promise<Transport>;
  /** Longest wait for one expected outcome, in milliseconds. @defaultValue 10000 */
  readonly timeoutMs?: number;
  /** How long a test watches to show that something does *not* happen, in ms. @defaultValue 250 */
  readonly quietMs?: number;
}

/**
 * Registers the scenarios of `ServiceQueueSpec.transient`: a transient queue receives like any
 * other while its consumer runs, and nothing of it stays once the consumer stops or its
 * transport closes: an event published meanwhile is kept for nobody, and (on a transport with
 * `notDelivered`) a command to its name is refused as not delivered. Two transient queues with
 * different names each get every event.
 * @throws TypeError when an option is invalid.
 * @example
 * describeTransientQueueConformance({ name: "memory", create: () => createMemoryTransport({ hub }) });
 */
export function describeTransientQueueConformance(options: TransientQueueConformanceOptions): void {
  if (typeof options !== "object" || options === null) {
    throw new TypeError("describeTransientQueueConformance needs an options object");
  }
  if (typeof options.name !== "string" || options.name === "") {
    throw new TypeError("options.name must be a non-empty string");
  }
  if (typeof options.create !== "function") {
    throw new TypeError("options.create must be a function");
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
  const testTimeout = timeoutMs * 6 + quietMs * 4;

  describe(`transient queue conformance: ${options.name}`, () => {
    const made: Transport[] = [];
    afterEach(async () => {
      const all = made.splice(0);
      await Promise.allSettled(all.map((t) => withTimeout(t.close(), timeoutMs, "close()")));
    }, testTimeout);

    const open = async (): Promise<Transport> => {
      const t = await options.create();
      made.push(t);
      await withTimeout(t.connect(), timeoutMs, "connect()");
      return t;
    };
    const event = (label: string): ReturnType<typeof testFrame> =>
      testFrame(label, { headers: testHeaders("event") });
    /** A transient consumer of `service` bound to `topic`, acking what it records. */
    const listen = async (
      t: Transport,
      service: string,
      topic: string,
    ): Promise<{ listener: Listener; got: Collector<Delivery> }> => {
      const got = createCollector<Delivery>(`deliveries of ${service}`);
      const listener = await withTimeout(
        t.consumeService(
          testServiceSpec(service, { eventBindings: [topic], transient: true }),
          async (d) => {
            got.push(d);
            await d.ack();
          },
        ),
        timeoutMs,
        "consumeService()",
      );
      return { listener, got };
    };
    /** Shows that nothing of `service`'s transient queue is left on the broker. */
    const expectGone = async (t: Transport, service: string, topic: string): Promise<void> => {
      if (t.capabilities.notDelivered) {
        let refused: unknown;
        try {
          await withTimeout(
            t.send({ kind: "rpc", service }, testFrame("after")),
            timeoutMs,
            "send()",
          );
        } catch (err) {
          refused = err;
        }
        expect(
          isNuropbError(refused) && (refused as Error).name === NuropbNotDeliveredError.name,
          `a command to a removed transient queue is not delivered (got ${String(refused)})`,
        ).toBe(true);
      }
      // An event sent while nobody listens is kept for nobody: a new consumer of the name does
      // not get it (a durable queue would hand it over).
      await withTimeout(t.send({ kind: "event", topic }, event("while-gone")), timeoutMs, "send()");
      const again = await listen(t, service, topic);
      await t.send({ kind: "event", topic }, event("fresh"));
      await again.got.waitForCount(1, timeoutMs);
      await delay(quietMs);
      expect(again.got.items.map(frameText)).toEqual(["fresh"]);
      await again.listener.stop();
    };

    it(
      "delivers while consumed and leaves nothing once the listener stops",
      async () => {
        const t = await open();
        const service = uniqueName();
        const topic = `${uniqueName()}.status`;
        const { listener, got } = await listen(t, service, topic);
        await t.send({ kind: "event", topic }, event("one"));
        await got.waitForCount(1, timeoutMs);
        expect(frameText(got.items[0] as Delivery)).toBe("one");
        await listener.stop();
        await listener.stop();
        await expectGone(t, service, topic);
      },
      testTimeout,
    );

    it(
      "leaves nothing once its transport closes",
      async () => {
        const watcher = await open();
        const other = await open();
        const service = uniqueName();
        const topic = `${uniqueName()}.status`;
        const { got } = await listen(watcher, service, topic);
        await other.send({ kind: "event", topic }, event("one"));
        await got.waitForCount(1, timeoutMs);
        await withTimeout(watcher.close(), timeoutMs, "close()");
        await expectGone(other, service, topic);
      },
      testTimeout,
    );

    it(
      "gives each transient queue its own copy of an event",
      async () => {
        const t = await open();
        const topic = `${uniqueName()}.status`;
        const a = await listen(t, uniqueName(), topic);
        const b = await listen(t, uniqueName(), topic);
        await t.send({ kind: "event", topic }, event("both"));
        await a.got.waitForCount(1, timeoutMs);
        await b.got.waitForCount(1, timeoutMs);
        await delay(quietMs);
        expect(a.got.items.map(frameText)).toEqual(["both"]);
        expect(b.got.items.map(frameText)).toEqual(["both"]);
        await a.listener.stop();
        await b.listener.stop();
      },
      testTimeout,
    );
  });
}
