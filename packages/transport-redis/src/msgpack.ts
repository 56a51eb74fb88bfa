/** Strings up to this length are tried as ASCII in a loop: cheaper than a call into `write`. */
const SHORT = 16;

/** Writes `s` at `at` if it is all ASCII and returns its length; else -1 (bytes may be written). */
function writeAscii(buf: Buffer, s: string, at: number): number {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x80) return -1;
    buf[at + i] = c;
  }
  return s.length;
}

/**
 * Writes one MessagePack array of strings, byte strings and small integers, as the send-batch
 * script reads it with `cmsgpack.unpack` (built into Redis's Lua). A batch travels as one
 * argument: ioredis encodes each argument of a command on its own, at several hundred
 * nanoseconds apiece, where this writes a field with one `write` into one buffer.
 *
 * Strings always take the 32-bit length form (`str 32`), so that a string is written once and
 * its length patched in after; the array too (`array 32`). Bytes are written as strings too:
 * Redis's cmsgpack does not read the `bin` types, and a Lua string holds any bytes.
 */
export class MsgpackArrayWriter {
  #buf: Buffer;
  #off = 5;
  #count = 0;

  constructor(capacity = 16 * 1024) {
    this.#buf = Buffer.allocUnsafe(Math.max(64, capacity));
  }

  /** Elements written so far. */
  get count(): number {
    return this.#count;
  }

  /** Bytes written so far. */
  get byteLength(): number {
    return this.#off;
  }

  #reserve(bytes: number): Buffer {
    const need = this.#off + bytes;
    if (need > this.#buf.length) {
      const bigger = Buffer.allocUnsafe(Math.max(need, this.#buf.length * 2));
      this.#buf.copy(bigger, 0, 0, this.#off);
      this.#buf = bigger;
    }
    return this.#buf;
  }

  /** A string, UTF-8 encoded (lone surrogates become U+FFFD, as ioredis would send them). */
  str(s: string): void {
    const buf = this.#reserve(5 + s.length * 3);
    const at = this.#off;
    buf[at] = 0xdb;
    const n = s.length <= SHORT ? writeAscii(buf, s, at + 5) : -1;
    const len = n >= 0 ? n : buf.write(s, at + 5, "utf8");
    buf.writeUInt32BE(len, at + 1);
    this.#off = at + 5 + len;
    this.#count++;
  }

  /** A string known to be ASCII and shorter than 32 bytes (field names, kinds): `fixstr`. */
  shortAscii(s: string): void {
    const buf = this.#reserve(1 + s.length);
    const at = this.#off;
    buf[at] = 0xa0 | s.length;
    for (let i = 0; i < s.length; i++) buf[at + 1 + i] = s.charCodeAt(i);
    this.#off = at + 1 + s.length;
    this.#count++;
  }

  /** Bytes (as a `str 32`). */
  bin(bytes: Uint8Array): void {
    const buf = this.#reserve(5 + bytes.byteLength);
    const at = this.#off;
    buf[at] = 0xdb;
    buf.writeUInt32BE(bytes.byteLength, at + 1);
    buf.set(bytes, at + 5);
    this.#off = at + 5 + bytes.byteLength;
    this.#count++;
  }

  /**
   * Bytes made of a 4-byte big-endian length of `head` (UTF-8), `head`, then `tail`: a response
   * blob (see `frameToBlob`), written in place.
   */
  headedBin(head: string, tail: Uint8Array): void {
    const buf = this.#reserve(9 + head.length * 3 + tail.byteLength);
    const at = this.#off;
    buf[at] = 0xdb;
    const h = buf.write(head, at + 9, "utf8");
    buf.writeUInt32BE(h, at + 5);
    buf.set(tail, at + 9 + h);
    buf.writeUInt32BE(4 + h + tail.byteLength, at + 1);
    this.#off = at + 9 + h + tail.byteLength;
    this.#count++;
  }

  /** A non-negative integer below 2^32. */
  uint(n: number): void {
    const buf = this.#reserve(5);
    const at = this.#off;
    if (n < 128) {
      buf[at] = n;
      this.#off = at + 1;
    } else {
      buf[at] = 0xce;
      buf.writeUInt32BE(n, at + 1);
      this.#off = at + 5;
    }
    this.#count++;
  }

  /** The array, as a buffer of its own (the writer must not be used afterwards). */
  finish(): Buffer {
    const buf = this.#buf;
    buf[0] = 0xdd;
    buf.writeUInt32BE(this.#count, 1);
    return buf.subarray(0, this.#off);
  }
}
