import { describe, expect, it } from "vitest";
import { MAX_MESSAGE_TTL_MS, NuropbTransportError } from "@nuropb/protocol";
import {
  DELAY_QUEUE_IDLE_MS,
  createAmqpScheduling,
  delayBucketMs,
  delayQueueArguments,
  type AmqpSchedulingHost,
} from "../src/scheduling.ts";

// The delay buckets: one TTL queue per bucket, so a delay is rounded UP to a bucket (never early).
describe("delayBucketMs", () => {
  it.each([
    [1, 100],
    [100, 100],
    [101, 200],
    [999, 1_000],
    [1_000, 1_000],
    [1_001, 2_000],
    [59_999, 60_000],
    [60_001, 70_000],
    [600_000, 600_000],
    [600_001, 660_000],
    [3_600_000, 3_600_000],
  ])("rounds %d ms up to %d ms", (delay, bucket) => {
    expect(delayBucketMs(delay)).toBe(bucket);
  });

  it("never rounds below the delay, and never beyond the largest ttl RabbitMQ takes", () => {
    for (let d = 1; d < 2_000_000; d += 997) {
      const b = delayBucketMs(d);
      expect(b).toBeGreaterThanOrEqual(d);
    }
    expect(delayBucketMs(MAX_MESSAGE_TTL_MS)).toBe(MAX_MESSAGE_TTL_MS);
    expect(delayBucketMs(MAX_MESSAGE_TTL_MS - 1)).toBe(MAX_MESSAGE_TTL_MS);
  });

  it("keeps the number of buckets small: 10 below 1 s, 59 more to 1 min, 54 to 10 min", () => {
    const buckets = new Set<number>();
    for (let d = 1; d <= 600_000; d++) buckets.add(delayBucketMs(d));
    expect(buckets.size).toBe(10 + 59 + 54);
  });
});

describe("delayQueueArguments", () => {
  it("never lets a delay queue expire before its frames are due, near the largest bucket too", () => {
    for (const delay of [1, 60_000, 3_600_000, MAX_MESSAGE_TTL_MS - 60_001, MAX_MESSAGE_TTL_MS]) {
      const bucket = delayBucketMs(delay);
      const args = delayQueueArguments("svc", bucket);
      expect(args["x-message-ttl"]).toBe(bucket);
      const expires = args["x-expires"];
      if (expires !== undefined) {
        expect(expires).toBeGreaterThanOrEqual(bucket + DELAY_QUEUE_IDLE_MS);
        expect(expires).toBeLessThanOrEqual(MAX_MESSAGE_TTL_MS);
      }
    }
    expect(delayQueueArguments("svc", MAX_MESSAGE_TTL_MS)).not.toHaveProperty("x-expires");
    expect(delayQueueArguments("svc", 1_000)["x-expires"]).toBe(1_000 + DELAY_QUEUE_IDLE_MS);
  });
});

describe("claim on a claim queue that a passive declare cannot find", () => {
  /** A scheduling whose every passive declare fails with a 404 saying `message`. */
  function schedulingWith404(message: string) {
    const channel = {
      on: () => channel,
      close: async () => undefined,
      checkQueue: async () => Promise.reject(Object.assign(new Error(message), { code: 404 })),
    };
    const connection = { createChannel: async () => channel };
    return createAmqpScheduling({
      log: { debug: () => undefined } as unknown as AmqpSchedulingHost["log"],
      password: undefined,
      connection: () => connection as unknown as ReturnType<AmqpSchedulingHost["connection"]>,
      encode: () => {
        throw new Error("not used");
      },
      track: (p) => p,
    });
  }

  it("answers absent for a queue that does not exist", async () => {
    const s = schedulingWith404(
      "Operation failed: QueueDeclare; 404 (NOT-FOUND) with message \"NOT_FOUND - no queue 'nuropb-claim-k' in vhost '/'\"",
    );
    expect(await s.claim("k", "a")).toBe("absent");
  });

  it("throws a retryable error, not absent, when the queue's cluster node is down", async () => {
    const s = schedulingWith404(
      "Operation failed: QueueDeclare; 404 (NOT-FOUND) with message \"NOT_FOUND - home node 'rabbit@n2' of durable queue 'nuropb-claim-k' in vhost '/' is down or inaccessible\"",
    );
    const err: unknown = await s.claim("k", "a").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NuropbTransportError);
    expect(err).toMatchObject({ retryable: true });
  });
});
