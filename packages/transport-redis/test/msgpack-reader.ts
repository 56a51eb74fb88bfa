import { expect } from "vitest";

/** Reads the subset the writer produces (array 32 of fixstr, str 32, fixint, uint 32). */
export function read(buf: Buffer): (Buffer | number)[] {
  expect(buf[0]).toBe(0xdd);
  const count = buf.readUInt32BE(1);
  const out: (Buffer | number)[] = [];
  let at = 5;
  while (at < buf.length) {
    const t = buf[at] as number;
    if (t < 0x80) {
      out.push(t);
      at += 1;
    } else if (t === 0xce) {
      out.push(buf.readUInt32BE(at + 1));
      at += 5;
    } else if ((t & 0xe0) === 0xa0) {
      const n = t & 0x1f;
      out.push(buf.subarray(at + 1, at + 1 + n));
      at += 1 + n;
    } else if (t === 0xdb) {
      const n = buf.readUInt32BE(at + 1);
      out.push(buf.subarray(at + 5, at + 5 + n));
      at += 5 + n;
    } else {
      throw new Error(`unexpected type byte ${t}`);
    }
  }
  expect(at).toBe(buf.length);
  expect(out).toHaveLength(count);
  return out;
}
