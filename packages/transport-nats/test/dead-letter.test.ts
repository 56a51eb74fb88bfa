import { describe, expect, it } from "vitest";
import { DeadLetterCopy, deadLetterHeaders } from "../src/dead-letter.ts";
import { NatsHeader, decodeFrameHeaders, encodeFrameHeaders } from "../src/frame-headers.ts";
import type { AckInfo } from "../src/names.ts";
import { fakeMsg } from "./fake-nats.ts";

const info: AckInfo = {
  stream: "NUROPB-m-SQ-orders",
  consumer: "nuropb",
  deliveryCount: 1,
  streamSequence: 7,
  timestampMs: 0,
};

const stored = fakeMsg("m.rpc.orders", new Uint8Array([1, 2]), {
  headers: encodeFrameHeaders({
    headers: { nuropb_type: "command", trace_id: null },
    body: new Uint8Array(),
    correlationId: "c-1",
    ttlMs: 5_000,
  }),
});

describe("deadLetterHeaders with a failure record", () => {
  it("packs the record into the frame headers the dead letter reads as", () => {
    const h = deadLetterHeaders(stored, info, "rejected", DeadLetterCopy.whole, {
      nuropb_failure_error: "NuropbException",
      nuropb_failure_attempts: "3",
    });
    const read = decodeFrameHeaders(h);
    expect(read).toEqual({
      headers: {
        nuropb_type: "command",
        trace_id: null,
        nuropb_failure_error: "NuropbException",
        nuropb_failure_attempts: "3",
      },
      correlationId: "c-1",
      ttlMs: 5_000,
    });
    expect(h.get(NatsHeader.deadLetterReason)).toBe("rejected");
    expect(h.get(NatsHeader.deadLetterSequence)).toBe("NUROPB-m-SQ-orders:7");
  });

  it("keeps only the record (and the correlation id) in a bare copy", () => {
    const h = deadLetterHeaders(stored, info, "rejected", DeadLetterCopy.bare, {
      nuropb_failure_error: "NuropbException",
    });
    expect(decodeFrameHeaders(h).headers).toEqual({ nuropb_failure_error: "NuropbException" });
    expect(decodeFrameHeaders(h).correlationId).toBe("c-1");
  });

  it("leaves the stored headers as they are without a record", () => {
    const h = deadLetterHeaders(stored, info, "expired");
    expect(h.get(NatsHeader.frame)).toBe(stored.headers?.get(NatsHeader.frame));
  });
});
