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

/** Longest JSON record {@link MsgpackArrayWriter.jsonRecord} writes in place. */
const MAX_PLAIN_JSON = 2048;

/**
 * Writes `s` as a JSON string (in quotes) at `at` when it needs no escaping: printable ASCII
 * without `"` and `\`. Returns where it ends, or -1 when it needs escaping or passes `limit`.
 */
function writePlain(buf: Buffer, s: string, at: number, limit: number): number {
  if (at + s.length + 2 > limit) return -1;
  buf[at++] = 0x22;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c > 0x7f || c === 0x22 || c === 0x5c) return -1;
    buf[at++] = c;
  }
  buf[at++] = 0x22;
  return at;
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
  /** Where the string being built by `beginStr` starts. */
  #open = 0;

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

  /** Starts a string made of parts (`append…`); {@link endStr} closes it. */
  beginStr(): void {
    const buf = this.#reserve(5);
    buf[this.#off] = 0xdb;
    this.#open = this.#off;
    this.#off += 5;
  }

  /** Closes the string {@link beginStr} opened. */
  endStr(): void {
    this.#buf.writeUInt32BE(this.#off - this.#open - 5, this.#open + 1);
    this.#count++;
  }

  /** Appends ASCII text (a literal: `{"c":`…). */
  appendAscii(s: string): void {
    const buf = this.#reserve(s.length);
    const at = this.#off;
    for (let i = 0; i < s.length; i++) buf[at + i] = s.charCodeAt(i);
    this.#off = at + s.length;
  }

  /** Appends text as UTF-8. */
  appendUtf8(s: string): void {
    const buf = this.#reserve(s.length * 3);
    this.#off += buf.write(s, this.#off, "utf8");
  }

  /** Appends bytes. */
  appendBytes(bytes: Uint8Array): void {
    const buf = this.#reserve(bytes.byteLength);
    buf.set(bytes, this.#off);
    this.#off += bytes.byteLength;
  }

  /** Appends a 4-byte big-endian integer to be filled in with {@link patchUint32}; returns its place. */
  appendUint32Slot(): number {
    this.#reserve(4);
    const at = this.#off;
    this.#off += 4;
    return at;
  }

  /** Fills in the slot {@link appendUint32Slot} returned. */
  patchUint32(at: number, n: number): void {
    this.#buf.writeUInt32BE(n, at);
  }

  /** Where the next byte goes (to measure what was appended). */
  get offset(): number {
    return this.#off;
  }

  /** Appends `JSON.stringify(s)`. */
  appendJsonString(s: string): void {
    const buf = this.#reserve(s.length + 2);
    const end = writePlain(buf, s, this.#off, buf.length);
    if (end >= 0) this.#off = end;
    else this.appendUtf8(JSON.stringify(s));
  }

  /**
   * Appends `JSON.stringify(record)`: in place, without making the string, when every key and
   * value is printable ASCII without `"` or `\` and every value a string or null, as NuroPb
   * headers are; through JSON.stringify otherwise. The bytes are the same either way.
   */
  appendJsonRecord(record: Readonly<Record<string, string | null>>): void {
    const start = this.#off;
    const buf = this.#reserve(MAX_PLAIN_JSON);
    const limit = start + MAX_PLAIN_JSON;
    let at = start;
    let plain = typeof (record as { toJSON?: unknown }).toJSON !== "function";
    if (plain) {
      buf[at++] = 0x7b; // {
      for (const k in record) {
        const v = record[k];
        if (!Object.hasOwn(record, k) || (typeof v !== "string" && v !== null)) {
          plain = false;
          break;
        }
        if (at !== start + 1) buf[at++] = 0x2c; // ,
        at = writePlain(buf, k, at, limit - 6);
        if (at < 0) {
          plain = false;
          break;
        }
        buf[at++] = 0x3a; // :
        if (v === null) {
          buf[at++] = 0x6e; // n
          buf[at++] = 0x75; // u
          buf[at++] = 0x6c; // l
          buf[at++] = 0x6c; // l
        } else {
          at = writePlain(buf, v, at, limit - 1);
          if (at < 0) {
            plain = false;
            break;
          }
        }
      }
    }
    if (plain) {
      buf[at++] = 0x7d; // }
      this.#off = at;
    } else {
      this.appendUtf8(JSON.stringify(record));
    }
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
