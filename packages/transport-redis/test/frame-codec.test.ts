import fc from "fast-check";
import { describe, expect, it, vi } from "vitest";
import { MAX_HEADERS_JSON_BYTES, NuropbMessageError, type Frame } from "@nuropb/protocol";
import {
  blobToFrame,
  Field,
  fieldsToFrame,
  frameToBlob,
  frameToFields,
  writeBlob,
  writeFrameFields,
} from "../src/frame-codec.ts";
import { MsgpackArrayWriter } from "../src/msgpack.ts";
import { read } from "./msgpack-reader.ts";

/** As Redis hands fields back with Buffer replies. */
const asReply = (fields: (string | Buffer)[]): Buffer[] =>
  fields.map((f) => (typeof f === "string" ? Buffer.from(f, "utf8") : Buffer.from(f)));

const frameArb = fc.record(
  {
    headers: fc.dictionary(
      fc.string({ maxLength: 12 }),
      fc.option(fc.string({ unit: "grapheme", maxLength: 16 }), { nil: null }),
      { maxKeys: 6 },
    ),
    body: fc.uint8Array({ maxLength: 256 }),
    correlationId: fc.string({ unit: "grapheme", maxLength: 40 }),
    replyTo: fc.string({ unit: "grapheme", maxLength: 30 }),
    ttlMs: fc.integer({ min: 1, max: 2 ** 40 }),
  },
  { requiredKeys: ["headers", "body", "correlationId"] },
);

describe("stream entry fields", () => {
  it("round-trip any frame exactly (fast-check)", () => {
    fc.assert(
      fc.property(frameArb, (frame: Frame) => {
        const got = fieldsToFrame(asReply(frameToFields(frame)));
        expect(got.headers).toEqual(frame.headers);
        expect(got.body).toEqual(new Uint8Array(frame.body));
        expect(got.correlationId).toBe(frame.correlationId);
        expect(got.replyTo).toBe(frame.replyTo);
        expect(got.ttlMs).toBe(frame.ttlMs);
        expect(got.requeued).toBe(false);
      }),
      { seed: 11, numRuns: 1_000 },
    );
  });

  it("keep a null trace_id null and read the requeue marks", () => {
    const fields = frameToFields({
      headers: { trace_id: null },
      body: new Uint8Array([0, 255]),
      correlationId: "c",
    });
    const got = fieldsToFrame(
      asReply([...fields, Field.redelivered, "1", Field.storedAtMs, "1700000000000"]),
    );
    expect(got.headers).toEqual({ trace_id: null });
    expect(got.requeued).toBe(true);
    expect(got.storedAtMs).toBe(1_700_000_000_000);
  });

  it("copy the body out of the reply buffer (the parser reuses its buffers)", () => {
    const reply = asReply(
      frameToFields({ headers: {}, body: new Uint8Array([1, 2, 3]), correlationId: "c" }),
    );
    const got = fieldsToFrame(reply);
    (reply[reply.length - 1] as Buffer).fill(9);
    expect(got.body).toEqual(new Uint8Array([1, 2, 3]));
  });

  it("give every body bytes of its own, small (shared slabs) or large, across many frames", () => {
    const bodies: Uint8Array[] = [];
    const sizes = [0, 1, 7, 100, 4_000, 4_097, 10_000];
    for (let i = 0; i < 400; i++) {
      const size = sizes[i % sizes.length] as number;
      const body = new Uint8Array(size).fill(i % 251);
      const reply = asReply(frameToFields({ headers: {}, body, correlationId: "c" }));
      const got = fieldsToFrame(reply).body;
      (reply[reply.length - 1] as Buffer).fill(255);
      bodies.push(got);
    }
    bodies.forEach((b, i) => {
      expect(b).toBeInstanceOf(Uint8Array);
      expect(b.byteLength).toBe(sizes[i % sizes.length]);
      expect(b.every((x) => x === i % 251)).toBe(true);
    });
  });

  it("keep only string and null header values, and never a __proto__ key", () => {
    const got = fieldsToFrame(
      asReply([
        Field.headers,
        '{"a":"x","n":null,"num":1,"obj":{},"__proto__":null}',
        Field.body,
        "b",
      ]),
    );
    expect(got.headers).toEqual({ a: "x", n: null });
    expect(Object.getPrototypeOf(got.headers)).toBe(Object.prototype);
  });

  it("refuse entries that are not frames with NuropbMessageError", () => {
    expect(() => fieldsToFrame(asReply(["x", "y"]))).toThrowError(/without headers or body/);
    expect(() => fieldsToFrame(asReply([Field.headers, "[1]", Field.body, "b"]))).toThrowError(
      /malformed/,
    );
  });
});

describe("frames written into a batch", () => {
  const oddFrameArb = fc.record(
    {
      headers: fc.dictionary(
        fc.string({ unit: "binary", maxLength: 12 }),
        fc.option(fc.string({ unit: "binary", maxLength: 16 }), { nil: null }),
        { maxKeys: 6 },
      ),
      body: fc.uint8Array({ maxLength: 256 }),
      correlationId: fc.string({ unit: "binary", maxLength: 40 }),
      replyTo: fc.string({ unit: "binary", maxLength: 30 }),
      ttlMs: fc.oneof(
        fc.integer({ min: 1, max: 2 ** 40 }),
        fc.constantFrom(0.5, 1e21, Number.POSITIVE_INFINITY),
      ),
    },
    { requiredKeys: ["headers", "body", "correlationId"] },
  );
  const utf8 = (v: string | Buffer): Buffer => (typeof v === "string" ? Buffer.from(v, "utf8") : v);

  it("carry the same bytes as frameToFields and frameToBlob (fast-check)", () => {
    fc.assert(
      fc.property(frameArb, oddFrameArb, (plain: Frame, odd: Frame) => {
        for (const frame of [plain, odd]) {
          const w = new MsgpackArrayWriter(8);
          writeFrameFields(w, frame);
          writeBlob(w, frame);
          const [count, ...rest] = read(w.finish());
          const fields = frameToFields(frame).map(utf8);
          expect(count).toBe(fields.length);
          expect(rest.slice(0, fields.length)).toEqual(fields);
          expect(rest[fields.length]).toEqual(frameToBlob(frame));
        }
      }),
      { seed: 13, numRuns: 1_000 },
    );
  });
});

describe("response blobs", () => {
  it("round-trip any frame exactly (fast-check)", () => {
    fc.assert(
      fc.property(frameArb, (frame: Frame) => {
        const got = blobToFrame(frameToBlob(frame));
        expect(got.headers).toEqual(frame.headers);
        expect(got.body).toEqual(new Uint8Array(frame.body));
        expect(got.correlationId).toBe(frame.correlationId);
        expect(got.replyTo).toBe(frame.replyTo);
        expect(got.ttlMs).toBe(frame.ttlMs);
      }),
      { seed: 12, numRuns: 1_000 },
    );
  });

  it("refuse truncated or garbled blobs with NuropbMessageError", () => {
    const blob = frameToBlob({ headers: {}, body: new Uint8Array([1]), correlationId: "c" });
    expect(() => blobToFrame(blob.subarray(0, 3))).toThrowError(/malformed/);
    expect(() => blobToFrame(blob.subarray(0, 8))).toThrowError(/malformed/);
    const garbled = Buffer.from(blob);
    garbled[4] = 0x7b + 1;
    expect(() => blobToFrame(garbled)).toThrowError(/malformed/);
  });
});

describe("header JSON over MAX_HEADERS_JSON_BYTES", () => {
  it("is refused unread, in a stream entry and in a response blob", () => {
    const deep = "[".repeat(MAX_HEADERS_JSON_BYTES + 1);
    const parse = vi.spyOn(JSON, "parse");
    try {
      expect(() => fieldsToFrame(asReply([Field.headers, deep, Field.body, "b"]))).toThrowError(
        NuropbMessageError,
      );
      const head = Buffer.from(deep);
      const blob = Buffer.alloc(4 + head.length + 1);
      blob.writeUInt32BE(head.length, 0);
      head.copy(blob, 4);
      expect(() => blobToFrame(blob)).toThrowError(NuropbMessageError);
      expect(parse).not.toHaveBeenCalled();
    } finally {
      parse.mockRestore();
    }
    const atLimit = `{"pad":"${"p".repeat(MAX_HEADERS_JSON_BYTES - 10)}"}`;
    expect(atLimit.length).toBe(MAX_HEADERS_JSON_BYTES);
    expect(
      fieldsToFrame(asReply([Field.headers, atLimit, Field.body, "b"])).headers.pad,
    ).toHaveLength(MAX_HEADERS_JSON_BYTES - 10);
  });
});
