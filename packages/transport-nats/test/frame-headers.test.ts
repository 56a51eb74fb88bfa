import fc from "fast-check";
import { MsgHdrsImpl } from "nats";
import { describe, expect, it } from "vitest";
import type { Frame, WireHeaders } from "@nuropb/protocol";
import { decodeFrameHeaders, encodeFrameHeaders, NatsHeader } from "../src/frame-headers.ts";

/** Encodes as the client writes headers on the wire and parses them as the receiving client does. */
function overTheWire(frame: Frame): ReturnType<typeof decodeFrameHeaders> {
  const bytes = (encodeFrameHeaders(frame) as MsgHdrsImpl).encode();
  return decodeFrameHeaders(MsgHdrsImpl.decode(bytes));
}

const base: WireHeaders = {
  nuropb_protocol: "0.1.1",
  nuropb_version: "0.1.0",
  nuropb_type: "request",
  trace_id: null,
  encrypted: "",
};

describe("frame headers on NATS", () => {
  it("carries NuroPb headers as plain NATS headers, the null trace_id as a marker", () => {
    const h = encodeFrameHeaders({
      headers: base,
      body: new Uint8Array(),
      correlationId: "c1",
      replyTo: "r",
      ttlMs: 30_000,
    });
    expect(h.get("nuropb_type")).toBe("request");
    expect(h.get(NatsHeader.nullKeys)).toBe("trace_id");
    expect(h.has("trace_id")).toBe(false);
    expect(h.get(NatsHeader.ttlMs)).toBe("30000");
    expect(
      overTheWire({
        headers: base,
        body: new Uint8Array(),
        correlationId: "c1",
        replyTo: "r",
        ttlMs: 30_000,
      }),
    ).toEqual({
      headers: base,
      correlationId: "c1",
      replyTo: "r",
      ttlMs: 30_000,
    });
  });

  it("round-trips awkward keys and values exactly", () => {
    const headers: WireHeaders = {
      "Nats-Msg-Id": "not the server's",
      "nuropb-extra": "x",
      "with space": "v",
      "colon:key": "v",
      "": "empty key",
      spaced: "  leading and trailing  ",
      crlf: "a\r\nb",
      tab: "a\tb",
      unicode: "héllo ✓ 🚀",
      percent: "100%",
      comma: "a,b",
      nullish: null,
    };
    const got = overTheWire({
      headers,
      body: new Uint8Array(),
      correlationId: "id with spaces %",
      replyTo: "r\n",
    });
    expect(got.headers).toEqual(headers);
    expect(got.correlationId).toBe("id with spaces %");
    expect(got.replyTo).toBe("r\n");
    expect(got.ttlMs).toBeUndefined();
  });

  it("round-trips any string headers, correlation id and reply-to (fast-check)", () => {
    const value = fc.option(fc.string({ unit: "grapheme-composite", maxLength: 12 }), {
      nil: null,
    });
    fc.assert(
      fc.property(
        fc.dictionary(fc.string({ unit: "grapheme-ascii", maxLength: 10 }), value, { maxKeys: 6 }),
        fc.string({ unit: "grapheme", maxLength: 40 }),
        fc.option(fc.string({ unit: "grapheme", maxLength: 20 }), { nil: undefined }),
        fc.option(fc.integer({ min: 1, max: 2 ** 31 }), { nil: undefined }),
        (headers, correlationId, replyTo, ttlMs) => {
          const frame: Frame = {
            headers,
            body: new Uint8Array(),
            correlationId,
            ...(replyTo !== undefined ? { replyTo } : {}),
            ...(ttlMs !== undefined ? { ttlMs } : {}),
          };
          const got = overTheWire(frame);
          expect(got.headers).toEqual(headers);
          expect(got.correlationId).toBe(correlationId);
          expect(got.replyTo).toBe(replyTo);
          expect(got.ttlMs).toBe(ttlMs);
        },
      ),
      { seed: 42, numRuns: 1_000 },
    );
  });

  it("reads messages from other writers: no correlation id is an empty one", () => {
    expect(decodeFrameHeaders(undefined)).toEqual({ headers: {}, correlationId: "" });
  });

  it("rejects a malformed marker with NuropbMessageError", () => {
    const h = encodeFrameHeaders({ headers: {}, body: new Uint8Array(), correlationId: "c" });
    h.set(NatsHeader.extra, "{not json");
    expect(() => decodeFrameHeaders(h)).toThrowError(/malformed NuroPb headers/);
  });
});
