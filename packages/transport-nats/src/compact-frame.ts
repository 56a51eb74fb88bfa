import { Buffer } from "node:buffer";
import type { MsgHdrs } from "nats";
import { MAX_HEADERS_JSON_BYTES, NuropbMessageError, type Frame } from "@nuropb/protocol";
import {
  encodeFrameHeaders,
  NatsHeader,
  type DecodedFrameFields,
  type Mutable,
} from "./frame-headers.ts";

/**
 * The compact framing of core-NATS requests and replies: the frame's fields ride in front of the
 * body, in the message data, and the message has no NATS headers at all.
 *
 *   byte 0     0x00 (no JSON body starts with it; a headed message is never read this way)
 *   byte 1     0x02, the version (0x01 is read too)
 *   bytes 2-5  n, the length of the fields in bytes (unsigned, big-endian)
 *   n bytes    the fields, UTF-8 text: a run of entries `<tag><length>:<text>`, the length in
 *              UTF-16 code units, decimal. Tags: `c` correlation id (first, once), `r` reply
 *              address, `t` ttl in ms, `s` the sender's clock at the first send (ms since the
 *              epoch; core requests), `d` sent again (`Nuropb-Redelivered`; empty text), then
 *              each NuroPb header as `h<key><value>` (two texts) or `n<key>` (value null);
 *              version 2 writes the five headers every frame has by a tag of their own and
 *              their value: `p` nuropb_protocol, `v` nuropb_version, `y` nuropb_type,
 *              `i` trace_id, `e` encrypted (70 bytes less per message than `h` entries).
 *   the rest   the frame's body, as it is
 *
 * Why: a message with headers costs nats.js (and the server) an `HPUB`/`HMSG` whose header block
 * is built, scanned and parsed into a map at each end, and a JSON text of the fields; about a
 * fifth of the process's time per request. Nothing but core requests and their replies is framed
 * this way: what JetStream stores (commands, events, requests spilled into a stream, dead
 * letters) keeps its headers, and a compact request that goes there is first written back in the
 * headed form ({@link expandCompactFrame}). A frame holding a lone surrogate (UTF-8 cannot carry
 * it) is sent with headers, whose JSON escapes it.
 */
export const COMPACT_FRAME_MARK = 0x00;
/** The version written. */
export const COMPACT_FRAME_VERSION = 0x02;
/** The first version (no tags of the usual headers), still read. */
const COMPACT_FRAME_V1 = 0x01;

/** Version 2's tag of each usual header's key, and back. */
const TAG_OF_KEY: Readonly<Record<string, string>> = {
  nuropb_protocol: "p",
  nuropb_version: "v",
  nuropb_type: "y",
  trace_id: "i",
  encrypted: "e",
};
const KEY_OF_TAG: readonly (string | undefined)[] = (() => {
  const out: (string | undefined)[] = [];
  for (const [key, tag] of Object.entries(TAG_OF_KEY)) out[tag.charCodeAt(0)] = key;
  return out;
})();
const PREFIX_BYTES = 6;
/** Longest fields text (UTF-16 code units) sent compact; longer goes with headers. At most 6
 * UTF-16 units per unit in the headed JSON (a control character's `\u0001`), so a compact
 * frame that is expanded for JetStream stays within the headed form's bound too. */
export const MAX_COMPACT_FIELDS = Math.floor(MAX_HEADERS_JSON_BYTES / 8);
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** `String.prototype.isWellFormed` (ES2024; every Node line we run has it). */
const wellFormed = (text: string): boolean =>
  (text as unknown as { isWellFormed(): boolean }).isWellFormed();

/**
 * `frame` in the compact framing, or undefined when one of its texts is not well-formed UTF-16
 * or its fields are longer than {@link MAX_COMPACT_FIELDS} (send it with headers).
 * @throws TypeError when a header value is not a string or null (the receiver would refuse it).
 */
export function encodeCompactFrame(
  frame: Frame,
  sentAtMs?: number,
  redelivered = false,
): Uint8Array | undefined {
  return encode(frame, sentAtMs, redelivered, MAX_COMPACT_FIELDS);
}

function encode(
  frame: Frame,
  sentAtMs: number | undefined,
  redelivered: boolean,
  maxFields: number,
): Uint8Array | undefined {
  const cid = frame.correlationId;
  if (!wellFormed(cid)) return undefined;
  let text = `c${String(cid.length)}:${cid}`;
  const { replyTo, ttlMs } = frame;
  if (replyTo !== undefined) {
    if (!wellFormed(replyTo)) return undefined;
    text += `r${String(replyTo.length)}:${replyTo}`;
  }
  if (ttlMs !== undefined && ttlMs > 0) {
    const t = String(Math.floor(ttlMs));
    text += `t${String(t.length)}:${t}`;
  }
  if (sentAtMs !== undefined) {
    const at = String(sentAtMs);
    text += `s${String(at.length)}:${at}`;
  }
  if (redelivered) text += "d0:";
  const headers = frame.headers;
  // Own keys only, as the headed form's JSON.stringify takes them.
  for (const key of Object.keys(headers)) {
    const value: unknown = headers[key];
    if (!wellFormed(key)) return undefined;
    if (value === null) {
      text += `n${String(key.length)}:${key}`;
      continue;
    }
    if (typeof value !== "string")
      throw new TypeError(`frame header '${key}' must be a string or null`);
    if (!wellFormed(value)) return undefined;
    const tag = Object.hasOwn(TAG_OF_KEY, key) ? TAG_OF_KEY[key] : undefined;
    text +=
      tag === undefined
        ? `h${String(key.length)}:${key}${String(value.length)}:${value}`
        : `${tag}${String(value.length)}:${value}`;
  }
  if (text.length > maxFields) return undefined;
  const body = frame.body;
  const n = Buffer.byteLength(text, "utf8");
  // Node's pooled allocation: most frames are a few hundred bytes.
  const out = Buffer.allocUnsafe(PREFIX_BYTES + n + body.length);
  out[0] = COMPACT_FRAME_MARK;
  out[1] = COMPACT_FRAME_VERSION;
  out.writeUInt32BE(n, 2);
  out.write(text, PREFIX_BYTES, "utf8");
  out.set(body, PREFIX_BYTES + n);
  return out;
}

/** Whether a received message is in the compact framing (it has no headers and starts 0x00). */
export function isCompactFrame(headers: MsgHdrs | undefined, data: Uint8Array): boolean {
  if (data.length === 0 || data[0] !== COMPACT_FRAME_MARK) return false;
  if (headers === undefined) return true;
  // A header added on the way (a gateway's) does not make it headed; frame headers do. With
  // headers, only a known version reads as compact (another writer's binary body may start 0x00).
  return (
    (data[1] === COMPACT_FRAME_VERSION || data[1] === COMPACT_FRAME_V1) &&
    !headers.has(NatsHeader.frame) &&
    !headers.has(NatsHeader.correlationId)
  );
}

/** A compact frame read: its fields and its body (a view into `data`). */
export interface CompactFrame {
  readonly fields: DecodedFrameFields;
  readonly body: Uint8Array;
}

/**
 * Reads a message in the compact framing.
 * @throws NuropbMessageError when it is truncated, of an unknown version, or its fields are not
 *   what {@link encodeCompactFrame} writes.
 */
export function decodeCompactFrame(data: Uint8Array): CompactFrame {
  try {
    if (data.length < PREFIX_BYTES) throw new RangeError("shorter than its prefix");
    const version = data[1];
    if (version !== COMPACT_FRAME_VERSION && version !== COMPACT_FRAME_V1) {
      throw new RangeError(
        `version ${String(version)}, not ${String(COMPACT_FRAME_V1)} or ${String(COMPACT_FRAME_VERSION)}`,
      );
    }
    const n =
      (data[2] as number) * 0x1000000 +
      (((data[3] as number) << 16) | ((data[4] as number) << 8) | (data[5] as number));
    if (n > MAX_HEADERS_JSON_BYTES) {
      throw new RangeError(`fields over ${String(MAX_HEADERS_JSON_BYTES)} bytes; not read`);
    }
    if (PREFIX_BYTES + n > data.length) throw new RangeError("fields longer than the message");
    const text = utf8.decode(data.subarray(PREFIX_BYTES, PREFIX_BYTES + n));
    const fields = readFields(text, version === COMPACT_FRAME_VERSION);
    return { fields, body: data.subarray(PREFIX_BYTES + n) };
  } catch (err) {
    throw new NuropbMessageError("malformed compact NuroPb frame in a NATS message", {
      cause: err,
    });
  }
}

/**
 * The fields of a compact frame's text; `tagged`: version 2 (the usual headers by their tags).
 * @throws RangeError naming what is wrong.
 */
function readFields(text: string, tagged: boolean): Mutable<DecodedFrameFields> {
  const r = new FieldReader(text);
  if (text.charCodeAt(0) !== 99 /* c */) throw new RangeError("no correlation id first");
  r.at = 1;
  const headers: Record<string, string | null> = {};
  const out: Mutable<DecodedFrameFields> = { headers, correlationId: r.next() };
  while (r.at < text.length) {
    const tag = text.charCodeAt(r.at++);
    switch (tag) {
      case 104 /* h */: {
        const key = r.next();
        put(headers, key, r.next());
        break;
      }
      case 110 /* n */:
        put(headers, r.next(), null);
        break;
      case 114 /* r */:
        out.replyTo = r.next();
        break;
      case 116 /* t */:
        out.ttlMs = r.nextWholeMs(1);
        break;
      case 115 /* s */:
        out.sentAtMs = r.nextWholeMs(0);
        break;
      case 100 /* d */:
        if (r.next() !== "") throw new RangeError("a 'd' entry with text");
        out.redelivered = true;
        break;
      default: {
        const key = tagged ? KEY_OF_TAG[tag] : undefined;
        if (key === undefined)
          throw new RangeError(`unknown field tag '${String.fromCharCode(tag)}'`);
        put(headers, key, r.next());
      }
    }
  }
  return out;
}

/** Reads the `<length>:<text>` entries of a compact frame's fields. */
class FieldReader {
  at = 0;
  readonly #text: string;

  constructor(text: string) {
    this.#text = text;
  }

  /** The `<length>:` at {@link at}, read; the text's length. */
  #length(): number {
    const text = this.#text;
    let at = this.at;
    let len = 0;
    let digits = 0;
    for (;;) {
      if (at >= text.length) throw new RangeError("a length runs past the fields");
      const ch = text.charCodeAt(at++);
      if (ch === 58 /* : */ && digits > 0) break;
      if (ch < 48 || ch > 57 || digits >= 6 || (digits === 1 && len === 0)) {
        throw new RangeError("a malformed length");
      }
      len = len * 10 + (ch - 48);
      digits++;
    }
    if (at + len > text.length) throw new RangeError("a text runs past the fields");
    this.at = at;
    return len;
  }

  /** The `<length>:<digits>` at {@link at}: a whole number of milliseconds, at least `min`. */
  nextWholeMs(min: number): number {
    const len = this.#length();
    const text = this.#text;
    const at = this.at;
    if (len === 0 || len > 16) throw new RangeError("a time in ms of no or too many digits");
    if (len > 1 && text.charCodeAt(at) === 48)
      throw new RangeError("a time in ms with a leading zero");
    let v = 0;
    for (let i = at; i < at + len; i++) {
      const ch = text.charCodeAt(i);
      if (ch < 48 || ch > 57) throw new RangeError("a time in ms that is not digits");
      v = v * 10 + (ch - 48);
    }
    if (!Number.isSafeInteger(v) || v < min) throw new RangeError(`a time in ms out of range`);
    this.at = at + len;
    return v;
  }

  /** The `<length>:<text>` at {@link at}. */
  next(): string {
    const len = this.#length();
    const text = this.#text;
    const at = this.at;
    this.at = at + len;
    // The usual texts as the same strings each time: a key sliced anew is hashed and looked up
    // again when it becomes a property, and a fresh string per message is garbage.
    const usual = USUAL_BY_LENGTH[len];
    if (usual !== undefined) {
      for (const u of usual) if (text.startsWith(u, at)) return u;
    }
    return text.slice(at, at + len);
  }
}

/** The headers' keys and values most frames carry, by length. */
const USUAL_BY_LENGTH: (string[] | undefined)[] = [];
for (const u of [
  "",
  "nuropb_protocol",
  "nuropb_version",
  "nuropb_type",
  "trace_id",
  "encrypted",
  "yes",
  "request",
  "response",
  "command",
  "event",
  "0.1.1",
  "0.1.8",
]) {
  (USUAL_BY_LENGTH[u.length] ??= []).push(u);
}

/** Sets an own entry, `__proto__` included (as `JSON.parse` would). */
function put(headers: Record<string, string | null>, key: string, value: string | null): void {
  if (key === "__proto__") {
    Object.defineProperty(headers, key, {
      value,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  } else headers[key] = value;
}

/** The frame (body a view into `data`) that {@link decodeCompactFrame} reads, and its send time. */
function frameOf({ fields, body }: CompactFrame): Frame {
  return {
    headers: fields.headers,
    body,
    correlationId: fields.correlationId,
    ...(fields.replyTo !== undefined ? { replyTo: fields.replyTo } : {}),
    ...(fields.ttlMs !== undefined ? { ttlMs: fields.ttlMs } : {}),
  };
}

/**
 * A compact frame written back in the headed form, for what JetStream stores (a stream, the
 * dead-letter stream): the body alone, and NATS headers carrying the fields.
 * @throws NuropbMessageError as {@link decodeCompactFrame}.
 */
export function expandCompactFrame(data: Uint8Array): { headers: MsgHdrs; body: Uint8Array } {
  const read = decodeCompactFrame(data);
  const headers = encodeFrameHeaders(frameOf(read), read.fields.sentAtMs);
  if (read.fields.redelivered === true) headers.set(NatsHeader.redelivered, "1");
  return { headers, body: read.body };
}

/** `data`, a compact frame, marked as sent again. @throws NuropbMessageError as decoding. */
export function compactRedelivered(data: Uint8Array): Uint8Array {
  const read = decodeCompactFrame(data);
  if (read.fields.redelivered === true) return data;
  // Decoded text is well-formed, and a frame that came compact stays compact: its 3 more
  // characters may pass the sending bound (and a peer's bound may have been another).
  const again = encode(frameOf(read), read.fields.sentAtMs, true, Number.POSITIVE_INFINITY);
  if (again === undefined) throw new NuropbMessageError("compact frame not encodable again");
  return again;
}
