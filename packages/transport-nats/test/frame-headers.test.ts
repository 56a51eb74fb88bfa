import fc from "fast-check";
import { MsgHdrsImpl, headers as natsHeaders } from "nats";
import { describe, expect, it, vi } from "vitest";
import { MAX_HEADERS_JSON_BYTES, NuropbMessageError } from "@nuropb/protocol";
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
  it("packs NuroPb headers and the frame's fields into one JSON header", () => {
    const frame: Frame = {
      headers: base,
      body: new Uint8Array(),
      correlationId: "c1",
      replyTo: "r",
      ttlMs: 30_000,
    };
    const h = encodeFrameHeaders(frame);
    expect([...h.keys()]).toEqual([NatsHeader.frame]);
    expect(JSON.parse(h.get(NatsHeader.frame))).toEqual({ h: base, c: "c1", r: "r", t: 30_000 });
    expect(overTheWire(frame)).toEqual({
      headers: base,
      correlationId: "c1",
      replyTo: "r",
      ttlMs: 30_000,
    });
    const bare = encodeFrameHeaders({ headers: {}, body: new Uint8Array(), correlationId: "c" });
    expect(JSON.parse(bare.get(NatsHeader.frame))).toEqual({ h: {}, c: "c" });
  });

  it("writes the very bytes nats.js's own headers write, also once changed", () => {
    const viaNats = (json: string, msgId?: string): Uint8Array => {
      const h = natsHeaders();
      h.set(NatsHeader.frame, json);
      if (msgId !== undefined) h.set(NatsHeader.msgId, msgId);
      return (h as MsgHdrsImpl).encode();
    };
    fc.assert(
      fc.property(
        fc.dictionary(fc.string(), fc.option(fc.string(), { nil: null })),
        fc.string(),
        fc.option(fc.string({ minLength: 1 }), { nil: undefined }),
        fc.option(fc.nat(), { nil: undefined }),
        (headers, correlationId, replyTo, sentAtMs) => {
          const frame: Frame = {
            headers,
            body: new Uint8Array(),
            correlationId,
            ...(replyTo !== undefined ? { replyTo } : {}),
          };
          const h = encodeFrameHeaders(frame, sentAtMs) as MsgHdrsImpl;
          const json = h.get(NatsHeader.frame);
          expect(json).toBe(
            JSON.stringify({
              h: headers,
              c: correlationId,
              ...(replyTo !== undefined ? { r: replyTo } : {}),
              ...(sentAtMs !== undefined ? { s: sentAtMs } : {}),
            }),
          );
          expect(h.encode()).toEqual(viaNats(json));
          expect(encodeFrameHeaders(frame, sentAtMs).has(NatsHeader.frame)).toBe(true);
          expect([...h]).toEqual([[NatsHeader.frame, [json]]]);
          h.set(NatsHeader.msgId, "m-1");
          expect(h.encode()).toEqual(viaNats(json, "m-1"));
          expect(decodeFrameHeaders(MsgHdrsImpl.decode(h.encode())).correlationId).toBe(
            correlationId,
          );
        },
      ),
    );
  });

  it("reads the per-header layout earlier versions stored (durable streams outlive upgrades)", () => {
    const h = natsHeaders();
    h.set("nuropb_protocol", "0.1.1");
    h.set("nuropb_type", "request");
    h.set("spaced", encodeURIComponent("  x  "));
    h.set(NatsHeader.encodedKeys, "spaced");
    h.set(NatsHeader.nullKeys, "trace_id");
    h.set(NatsHeader.extra, JSON.stringify({ "Nats-Msg-Id": "theirs" }));
    h.set(NatsHeader.correlationId, encodeURIComponent("id %"));
    h.set(NatsHeader.replyTo, "nuropb-x-rq");
    h.set(NatsHeader.ttlMs, "5000");
    h.set("Nats-Msg-Id", "server's");
    expect(decodeFrameHeaders(MsgHdrsImpl.decode((h as MsgHdrsImpl).encode()))).toEqual({
      headers: {
        nuropb_protocol: "0.1.1",
        nuropb_type: "request",
        spaced: "  x  ",
        trace_id: null,
        "Nats-Msg-Id": "theirs",
      },
      correlationId: "id %",
      replyTo: "nuropb-x-rq",
      ttlMs: 5_000,
    });
  });

  it("keeps other writers' plain headers beside the packed ones, which win", () => {
    const h = encodeFrameHeaders({
      headers: { nuropb_type: "request", shared: "ours" },
      body: new Uint8Array(),
      correlationId: "c",
    });
    h.set("traceparent", "00-abc-def-01");
    h.set("shared", "theirs");
    h.set("Nats-Msg-Id", "id");
    expect(decodeFrameHeaders(MsgHdrsImpl.decode((h as MsgHdrsImpl).encode())).headers).toEqual({
      nuropb_type: "request",
      shared: "ours",
      traceparent: "00-abc-def-01",
    });
  });

  it("reads a packed frame's ttl, send time and redelivery mark", () => {
    const h = encodeFrameHeaders(
      { headers: base, body: new Uint8Array(), correlationId: "c", ttlMs: 1_000 },
      1_700_000_000_000,
    );
    const once = decodeFrameHeaders(MsgHdrsImpl.decode((h as MsgHdrsImpl).encode()));
    expect(once).toEqual({
      headers: base,
      correlationId: "c",
      ttlMs: 1_000,
      sentAtMs: 1_700_000_000_000,
    });
    h.set(NatsHeader.redelivered, "1");
    expect(decodeFrameHeaders(MsgHdrsImpl.decode((h as MsgHdrsImpl).encode()))).toEqual({
      ...once,
      redelivered: true,
    });
  });

  it("round-trips lone surrogates, which percent-encoding could not carry", () => {
    const got = overTheWire({
      headers: { odd: "a\ud800b", other: "\udfff" },
      body: new Uint8Array(),
      correlationId: "c\ud83d",
    });
    expect(got.headers).toEqual({ odd: "a\ud800b", other: "\udfff" });
    expect(got.correlationId).toBe("c\ud83d");
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

  it("refuses to write a header value that is not a string or null (the receiver would refuse it)", () => {
    for (const value of [1, true, {}, undefined]) {
      expect(() =>
        encodeFrameHeaders({
          headers: { ok: "x", bad: value } as unknown as WireHeaders,
          body: new Uint8Array(),
          correlationId: "c",
        }),
      ).toThrowError(/frame header 'bad' must be a string or null/);
    }
  });

  it("rejects a malformed marker or packed header with NuropbMessageError", () => {
    const old = natsHeaders();
    old.set(NatsHeader.extra, "{not json");
    expect(() => decodeFrameHeaders(old)).toThrowError(/malformed NuroPb headers/);
    for (const value of [
      "{not json",
      "[]",
      "null",
      '{"c":"x"}',
      '{"h":[],"c":"x"}',
      '{"h":{"a":1},"c":"x"}',
      '{"h":{},"c":5}',
      '{"h":{},"c":"x","r":7}',
      '{"h":{},"c":"x","t":0}',
      '{"h":{},"c":"x","t":1.5}',
    ]) {
      const h = natsHeaders();
      h.set(NatsHeader.frame, value);
      expect(() => decodeFrameHeaders(h), value).toThrowError(NuropbMessageError);
    }
  });

  it("refuses header JSON over MAX_HEADERS_JSON_BYTES unread (no megabyte JSON.parse)", () => {
    const parse = vi.spyOn(JSON, "parse");
    try {
      for (const key of [NatsHeader.frame, NatsHeader.extra]) {
        const h = natsHeaders();
        h.set(key, "[".repeat(MAX_HEADERS_JSON_BYTES + 1));
        expect(() => decodeFrameHeaders(h), key).toThrowError(NuropbMessageError);
      }
      expect(parse).not.toHaveBeenCalled();
    } finally {
      parse.mockRestore();
    }
    // At the limit it is read as usual.
    const h = natsHeaders();
    const packed = JSON.stringify({ h: { pad: "" }, c: "x" });
    const atLimit = packed.replace(
      '"pad":""',
      `"pad":"${"p".repeat(MAX_HEADERS_JSON_BYTES - packed.length)}"`,
    );
    h.set(NatsHeader.frame, atLimit);
    expect(decodeFrameHeaders(h).correlationId).toBe("x");
  });
});
