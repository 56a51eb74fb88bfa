import { describe, expect, it } from "vitest";
import { MAX_MESSAGE_TTL_MS } from "@nuropb/protocol";
import { delayBucketMs } from "../src/scheduling.ts";

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
