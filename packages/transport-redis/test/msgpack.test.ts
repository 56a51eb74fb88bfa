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

  it("writes short ASCII as fixstr and a headed blob as length, head, tail", () => {
    const w = new MsgpackArrayWriter(16);
    w.shortAscii("rd");
    w.headedBin('{"c":"é"}', new Uint8Array([0, 1, 255]));
    const [name, blob] = read(w.finish()) as [Buffer, Buffer];
    expect(name.toString()).toBe("rd");
    const head = Buffer.from('{"c":"é"}', "utf8");
    expect(blob.readUInt32BE(0)).toBe(head.length);
    expect(blob.subarray(4, 4 + head.length)).toEqual(head);
    expect([...blob.subarray(4 + head.length)]).toEqual([0, 1, 255]);
  });
});
