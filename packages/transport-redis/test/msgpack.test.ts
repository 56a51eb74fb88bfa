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
          // One comparison per run, bytes as hex (all the same values): an expect per item,
          // Buffers compared by toEqual, took 140-240 ms of matcher time over the 500 runs.
          const got = read(w.finish()).map((v) => (typeof v === "number" ? v : v.toString("hex")));
          const want = items.map((item) =>
            typeof item === "number"
              ? item
              : (typeof item === "string" ? Buffer.from(item, "utf8") : Buffer.from(item)).toString(
                  "hex",
                ),
          );
          expect(got).toEqual(want);
        },
      ),
      { seed: 5, numRuns: 500 },
    );
    // Timed out at vitest's 5 s in a full parallel run (2 cores, every project). Warm, the 500
    // runs take ~70 ms; the first property of a fresh worker takes ~0.8 s (fast-check and the
    // JIT starting cold), and that part stretches when the cores are shared. The deadline is
    // for a starved machine; the property keeps its sizes and runs.
  }, 30_000);

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
