import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MsgpackArrayWriter } from "../src/msgpack.ts";
import { read } from "./msgpack-reader.ts";

describe("MsgpackArrayWriter", () => {
  it("writes strings as UTF-8, bytes as they are, and counts, growing past its first buffer (fast-check)", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.string({ unit: "binary", maxLength: 200 }),
            fc.uint8Array({ maxLength: 300 }),
            fc.nat({ max: 2 ** 32 - 1 }),
          ),
          { maxLength: 40 },
        ),
        (items) => {
          const w = new MsgpackArrayWriter(64);
          for (const item of items) {
            if (typeof item === "string") w.str(item);
            else if (typeof item === "number") w.uint(item);
            else w.bin(item);
          }
          expect(w.count).toBe(items.length);
          const got = read(w.finish());
          items.forEach((item, i) => {
            if (typeof item === "string") expect(got[i]).toEqual(Buffer.from(item, "utf8"));
            else if (typeof item === "number") expect(got[i]).toBe(item);
            else expect(got[i]).toEqual(Buffer.from(item));
          });
        },
      ),
      { seed: 5, numRuns: 500 },
    );
  });

  it("writes short ASCII as fixstr and a string made of parts, with a length slot", () => {
    const w = new MsgpackArrayWriter(16);
    w.shortAscii("rd");
    w.beginStr();
    const slot = w.appendUint32Slot();
    w.appendAscii('{"c":');
    w.appendJsonString('é"x');
    w.appendAscii("}");
    w.patchUint32(slot, w.offset - slot - 4);
    w.appendBytes(new Uint8Array([0, 1, 255]));
    w.endStr();
    const [name, blob] = read(w.finish()) as [Buffer, Buffer];
    expect(name.toString()).toBe("rd");
    const head = Buffer.from(`{"c":${JSON.stringify('é"x')}}`, "utf8");
    expect(blob.readUInt32BE(0)).toBe(head.length);
    expect(blob.subarray(4, 4 + head.length)).toEqual(head);
    expect([...blob.subarray(4 + head.length)]).toEqual([0, 1, 255]);
  });

  it("appends exactly JSON.stringify of any string and any header record (fast-check)", () => {
    const text = fc.oneof(
      fc.string({ unit: "binary", maxLength: 40 }),
      fc.string({
        unit: fc.constantFrom("a", "_", '"', "\\", "\n", "\u007f", "é", " "),
        maxLength: 20,
      }),
    );
    fc.assert(
      fc.property(
        text,
        fc.dictionary(text, fc.option(text, { nil: null }), { maxKeys: 8 }),
        (s, record) => {
          const w = new MsgpackArrayWriter(8);
          w.beginStr();
          w.appendJsonString(s);
          w.endStr();
          w.beginStr();
          w.appendJsonRecord(record);
          w.endStr();
          const [a, b] = read(w.finish()) as [Buffer, Buffer];
          expect(a.toString("utf8")).toBe(Buffer.from(JSON.stringify(s), "utf8").toString("utf8"));
          expect(b).toEqual(Buffer.from(JSON.stringify(record), "utf8"));
        },
      ),
      { seed: 9, numRuns: 2_000 },
    );
  });

  it("falls back to JSON.stringify for records that are not plain string maps", () => {
    const odd: Record<string, unknown>[] = [
      { n: 1, s: "x" },
      { u: undefined, s: "x" },
      { toJSON: () => ({ replaced: "yes" }) },
      Object.assign(Object.create({ inherited: "x" }) as object, { own: "y" }),
      { long: "x".repeat(5_000) },
      { 2: "two", 1: "one", b: "b", a: "a" },
    ];
    for (const record of odd) {
      const w = new MsgpackArrayWriter(8);
      w.beginStr();
      w.appendJsonRecord(record as Record<string, string | null>);
      w.endStr();
      const [got] = read(w.finish()) as [Buffer];
      expect(got.toString("utf8")).toBe(JSON.stringify(record));
    }
  });
});
