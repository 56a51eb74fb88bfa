import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MAX_HEADERS_JSON_BYTES, NuropbMessageError } from "@nuropb/protocol";
import type { Frame, WireHeaders } from "@nuropb/protocol";
import { headers as natsHeaders } from "nats";
import {
  MAX_COMPACT_FIELDS,
  compactRedelivered,
  decodeCompactFrame,
  encodeCompactFrame,
  expandCompactFrame,
  isCompactFrame,
} from "../src/compact-frame.ts";
import { decodeFrameHeaders, encodeFrameHeaders, NatsHeader } from "../src/frame-headers.ts";

const utf8 = new TextEncoder();

const base: WireHeaders = {
  nuropb_protocol: "0.1.1",
  nuropb_version: "0.1.0",
  nuropb_type: "request",
  trace_id: null,
  encrypted: "",
};

/** A compact message of the given field text and body, as the format says. */
function compact(text: string, body = "", version = 2): Uint8Array {
  const t = utf8.encode(text);
  const out = new Uint8Array(6 + t.length + body.length);
  out[1] = version;
  new DataView(out.buffer).setUint32(2, t.length);
  out.set(t, 6);
  out.set(utf8.encode(body), 6 + t.length);
  return out;
}

const text = (b: Uint8Array): string => new TextDecoder().decode(b);

describe("compact frames on core NATS", () => {
  it("writes the documented layout: mark, version, length, tagged fields, then the body", () => {
    const frame: Frame = {
      headers: { nuropb_type: "request", trace_id: null },
      body: utf8.encode('{"x":1}'),
      correlationId: "c1",
      replyTo: "r.é",
      ttlMs: 1000,
    };
    const bytes = encodeCompactFrame(frame, 5) as Uint8Array;
    const fields = "c2:c1r3:r.ét4:1000s1:5y7:requestn8:trace_id";
    expect([...bytes]).toEqual([...compact(fields, '{"x":1}')]);
    expect(isCompactFrame(undefined, bytes)).toBe(true);
    const read = decodeCompactFrame(bytes);
    expect(read.fields).toEqual({
      headers: { nuropb_type: "request", trace_id: null },
      correlationId: "c1",
      replyTo: "r.é",
      ttlMs: 1000,
      sentAtMs: 5,
    });
    expect(text(read.body)).toBe('{"x":1}');
  });

  it("writes the five usual headers by their tags, and still reads version 1's entries", () => {
    const frame: Frame = {
      headers: { ...base, trace_id: "t1", encrypted: "yes", x: "1" },
      body: utf8.encode("{}"),
      correlationId: "c1",
    };
    const bytes = encodeCompactFrame(frame) as Uint8Array;
    const fields = "c2:c1p5:0.1.1v5:0.1.0y7:requesti2:t1e3:yesh1:x1:1";
    expect([...bytes]).toEqual([...compact(fields, "{}")]);
    expect(decodeCompactFrame(bytes).fields.headers).toStrictEqual(frame.headers);
    // What a sender of version 1 wrote for the same frame.
    const v1 = compact(
      "c2:c1h15:nuropb_protocol5:0.1.1h14:nuropb_version5:0.1.0h11:nuropb_type7:request" +
        "h8:trace_id2:t1h9:encrypted3:yesh1:x1:1",
      "{}",
      1,
    );
    expect(isCompactFrame(undefined, v1)).toBe(true);
    const read = decodeCompactFrame(v1);
    expect(read.fields.headers).toStrictEqual(frame.headers);
    expect(read.fields.correlationId).toBe("c1");
    expect(text(read.body)).toBe("{}");
    // Sent again, a version 1 frame goes out as version 2, its fields unchanged.
    const again = decodeCompactFrame(compactRedelivered(v1));
    expect(again.fields.headers).toStrictEqual(frame.headers);
    expect(again.fields.redelivered).toBe(true);
  });

  it("round-trips any well-formed headers and fields, a `__proto__` key and astral text included", () => {
    const str = fc.string({ unit: "grapheme", maxLength: 12 });
    fc.assert(
      fc.property(
        fc.dictionary(str, fc.option(str, { nil: null }), { maxKeys: 6 }),
        str,
        fc.option(str, { nil: undefined }),
        fc.option(fc.integer({ min: 1, max: 2 ** 31 }), { nil: undefined }),
        fc.option(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), { nil: undefined }),
        fc.boolean(),
        (headers, correlationId, replyTo, ttlMs, sentAtMs, redelivered) => {
          const frame: Frame = {
            headers,
            body: utf8.encode("body"),
            correlationId,
            ...(replyTo !== undefined ? { replyTo } : {}),
            ...(ttlMs !== undefined ? { ttlMs } : {}),
          };
          const read = decodeCompactFrame(
            encodeCompactFrame(frame, sentAtMs, redelivered) as Uint8Array,
          );
          expect(read.fields.headers).toStrictEqual({ ...headers });
          expect(Object.keys(read.fields.headers)).toEqual(Object.keys(headers));
          expect(read.fields.correlationId).toBe(correlationId);
          expect(read.fields.replyTo).toBe(replyTo);
          expect(read.fields.ttlMs).toBe(ttlMs);
          expect(read.fields.sentAtMs).toBe(sentAtMs);
          expect(read.fields.redelivered).toBe(redelivered ? true : undefined);
          expect(text(read.body)).toBe("body");
        },
      ),
    );
    const proto = JSON.parse('{"__proto__":"x","a":null}') as WireHeaders;
    const read = decodeCompactFrame(
      encodeCompactFrame({
        headers: proto,
        body: new Uint8Array(),
        correlationId: "c",
      }) as Uint8Array,
    );
    expect(Object.getPrototypeOf(read.fields.headers)).toBe(Object.prototype);
    expect(Object.entries(read.fields.headers)).toEqual([
      ["__proto__", "x"],
      ["a", null],
    ]);
  });

  it("gives no compact form for a lone surrogate (UTF-8 cannot carry it): the frame goes with headers", () => {
    const frame = (over: Partial<Frame>): Frame => ({
      headers: base,
      body: new Uint8Array(),
      correlationId: "c",
      ...over,
    });
    expect(encodeCompactFrame(frame({ correlationId: "a\uD800" }))).toBeUndefined();
    expect(encodeCompactFrame(frame({ replyTo: "\uDC00" }))).toBeUndefined();
    expect(encodeCompactFrame(frame({ headers: { "k\uD83D": "v" } }))).toBeUndefined();
    expect(encodeCompactFrame(frame({ headers: { k: "v\uDFFF" } }))).toBeUndefined();
    expect(encodeCompactFrame(frame({ headers: { k: "😀" } }))).toBeInstanceOf(Uint8Array);
  });

  it("gives no compact form for fields longer than the bound (the headed form's JSON must fit too)", () => {
    const frame = (traceId: string): Frame => ({
      headers: { ...base, trace_id: traceId },
      body: new Uint8Array(),
      correlationId: "c",
    });
    expect(encodeCompactFrame(frame("x".repeat(MAX_COMPACT_FIELDS)))).toBeUndefined();
    const long = "\u0001".repeat(MAX_COMPACT_FIELDS - 200);
    const fits = encodeCompactFrame(frame(long)) as Uint8Array;
    expect(fits).toBeInstanceOf(Uint8Array);
    // Expanded for a stream, its JSON (each \u0001 six characters) is still within the bound.
    const { headers } = expandCompactFrame(fits);
    expect(headers.get(NatsHeader.frame).length).toBeLessThanOrEqual(MAX_HEADERS_JSON_BYTES);
    expect(decodeFrameHeaders(headers).headers.trace_id).toBe(long);
  });

  it("sends a header object's own keys only, as the headed form does", () => {
    const headers = Object.create({ inherited: "no", bad: 1 }) as Record<string, string>;
    headers.own = "yes";
    const frame = { headers, body: new Uint8Array(), correlationId: "c" };
    const read = decodeCompactFrame(encodeCompactFrame(frame) as Uint8Array);
    expect(read.fields.headers).toEqual({ own: "yes" });
    // The headed form neither sends nor checks an inherited key.
    expect(decodeFrameHeaders(encodeFrameHeaders(frame)).headers).toEqual({ own: "yes" });
  });

  it("marks a frame at the bound as sent again: it stays compact", () => {
    // "c<4 digits>:<id>" is exactly the bound long.
    const id = "x".repeat(MAX_COMPACT_FIELDS - 6);
    const at = encodeCompactFrame({ headers: {}, body: utf8.encode("b"), correlationId: id });
    expect(at).toBeInstanceOf(Uint8Array);
    const again = compactRedelivered(at as Uint8Array);
    expect(decodeCompactFrame(again).fields).toEqual({
      headers: {},
      correlationId: id,
      redelivered: true,
    });
    expect(text(decodeCompactFrame(again).body)).toBe("b");
  });

  it("refuses a header value that is not a string or null", () => {
    const headers = { n: 1 } as unknown as WireHeaders;
    expect(() =>
      encodeCompactFrame({ headers, body: new Uint8Array(), correlationId: "c" }),
    ).toThrow(new TypeError("frame header 'n' must be a string or null"));
  });

  it("reads a malformed compact frame as a NuropbMessageError saying what is wrong", () => {
    const bad: [string, Uint8Array][] = [
      ["shorter than its prefix", new Uint8Array([0, 1, 0])],
      ["version 3", compact("c1:c", "", 3)],
      ["version 0", compact("c1:c", "", 0)],
      // Version 1 has no tags of the usual headers.
      ["unknown field tag 'y'", compact("c1:cy7:request", "", 1)],
      ["unknown field tag 'i'", compact("c1:ci1:t", "", 1)],
      ["fields longer than the message", compact("c1:c").subarray(0, 8)],
      ["no correlation id first", compact("r1:r")],
      ["a malformed length", compact("c:c")],
      ["a malformed length", compact("c1234567:c")],
      ["a malformed length", compact("c01:c")],
      ["a 'd' entry with text", compact("c1:cd1:x")],
      ["no correlation id first", compact("\uFEFFc1:c")],
      ["a text runs past the fields", compact("c5:c")],
      ["a length runs past the fields", compact("c1:ch3")],
      ["unknown field tag 'x'", compact("c1:cx1:x")],
      ["a time in ms out of range", compact("c1:ct1:0")],
      ["a time in ms that is not digits", compact("c1:ct2:1e")],
      ["a time in ms of no or too many digits", compact("c1:cs17:12345678901234567")],
      ["a time in ms out of range", compact("c1:cs16:9999999999999999")],
      ["a time in ms with a leading zero", compact("c1:ct5:00060")],
    ];
    for (const [why, bytes] of bad) {
      let caught: unknown;
      try {
        decodeCompactFrame(bytes);
      } catch (err) {
        caught = err;
      }
      expect(caught, why).toBeInstanceOf(NuropbMessageError);
      expect(String((caught as Error).cause), why).toContain(why);
    }
    // Not UTF-8 (the decoder is fatal), and a length over the bound of headers' JSON.
    const invalid = compact("c1:c");
    invalid[9] = 0xff;
    expect(() => decodeCompactFrame(invalid)).toThrow(NuropbMessageError);
    const huge = compact("c1:c");
    new DataView(huge.buffer).setUint32(2, MAX_HEADERS_JSON_BYTES + 1);
    expect(() => decodeCompactFrame(huge)).toThrow(NuropbMessageError);
  });

  it("is told apart from a headed message and from a JSON body", () => {
    expect(isCompactFrame(undefined, utf8.encode("{}"))).toBe(false);
    expect(isCompactFrame(undefined, new Uint8Array())).toBe(false);
    const bytes = encodeCompactFrame({ headers: base, body: new Uint8Array(), correlationId: "c" });
    expect(isCompactFrame(undefined, bytes as Uint8Array)).toBe(true);
    expect(
      isCompactFrame(expandCompactFrame(bytes as Uint8Array).headers, new Uint8Array([0])),
    ).toBe(false);
    // A header someone added on the way (a gateway's) does not make a compact frame headed.
    const added = natsHeaders();
    added.set("X-Gateway", "1");
    expect(isCompactFrame(added, bytes as Uint8Array)).toBe(true);
    // With headers, only a known version reads as compact: another writer's binary body.
    expect(isCompactFrame(added, new Uint8Array([0, 9, 0, 0, 0, 0]))).toBe(false);
    expect(isCompactFrame(undefined, new Uint8Array([0, 9, 0, 0, 0, 0]))).toBe(true);
  });

  it("expands into the headed form JetStream stores, with the same fields, marked when sent again", () => {
    const frame: Frame = {
      headers: base,
      body: utf8.encode("b"),
      correlationId: "c9",
      replyTo: "r",
      ttlMs: 60_000,
    };
    const plain = expandCompactFrame(encodeCompactFrame(frame, 42) as Uint8Array);
    expect(text(plain.body)).toBe("b");
    expect(decodeFrameHeaders(plain.headers)).toEqual({
      headers: base,
      correlationId: "c9",
      replyTo: "r",
      ttlMs: 60_000,
      sentAtMs: 42,
    });
    const again = compactRedelivered(encodeCompactFrame(frame, 42) as Uint8Array);
    expect(decodeCompactFrame(again).fields.redelivered).toBe(true);
    expect(compactRedelivered(again)).toBe(again);
    const expanded = expandCompactFrame(again);
    expect(expanded.headers.get(NatsHeader.redelivered)).toBe("1");
    expect(decodeFrameHeaders(expanded.headers).redelivered).toBe(true);
    expect(decodeFrameHeaders(expanded.headers).sentAtMs).toBe(42);
  });
});
