import { describe, expect, it } from "vitest";
import * as protocol from "@nuropb/protocol";
import * as kit from "@nuropb/protocol/transport-kit";
import { copyBytes } from "@nuropb/protocol/transport-kit";

describe("copyBytes", () => {
  it("is reached through the transport kit, not the public surface", () => {
    expect(Object.keys(protocol)).not.toContain("copyBytes");
    expect(Object.keys(protocol)).not.toContain("utf8Bytes");
    // The kit is for transport authors: the byte helpers, the ledger, and the argument checks
    // the optional capabilities (scheduling, event log) share. Nothing else leaks into it.
    expect(Object.keys(kit).sort()).toEqual([
      "MAX_CLAIM_KEY_LENGTH",
      "MAX_CLAIM_TAKER_LENGTH",
      "assertClaimKey",
      "assertClaimTaker",
      "assertClaimTtl",
      "assertEventLogFollowOptions",
      "assertEventLogReadOptions",
      "assertEventLogRetention",
      "assertEventLogTopic",
      "assertScheduledService",
      "copyBytes",
      "createDeliveryLedger",
      "scheduledDelayMs",
    ]);
    expect(Object.keys(protocol)).not.toContain("createDeliveryLedger");
  });

  it("gives every copy bytes of its own, small (shared slabs) or large, across many copies", () => {
    const sizes = [0, 1, 7, 100, 4_096, 4_097, 10_000];
    const sources: Uint8Array[] = [];
    const copies: Uint8Array[] = [];
    for (let i = 0; i < 500; i++) {
      const size = sizes[i % sizes.length] as number;
      const source = new Uint8Array(size).fill(i % 251);
      sources.push(source);
      copies.push(copyBytes(source));
    }
    for (const s of sources) s.fill(255); // the originals change: the copies must not
    copies.forEach((c, i) => {
      expect(c).toBeInstanceOf(Uint8Array);
      expect(c.byteLength).toBe(sizes[i % sizes.length]);
      expect(c.every((x) => x === i % 251)).toBe(true);
    });
    // Writing into one copy leaves its neighbours in the same slab alone.
    copies[1]?.fill(0);
    expect(copies[2]?.every((x) => x === 2)).toBe(true);
    expect(copies[8]?.every((x) => x === 8)).toBe(true);
  });

  it("copies a view with an offset, and Buffers, as the bytes they show", () => {
    const backing = Uint8Array.from({ length: 32 }, (_, i) => i);
    expect([...copyBytes(backing.subarray(5, 9))]).toEqual([5, 6, 7, 8]);
    expect([...copyBytes(Buffer.from("hé"))]).toEqual([0x68, 0xc3, 0xa9]);
  });
});
