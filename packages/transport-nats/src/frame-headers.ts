import { Buffer } from "node:buffer";
import { headers as natsHeaders, type Match, type MsgHdrs } from "nats";
import {
  MAX_HEADERS_JSON_BYTES,
  NuropbMessageError,
  type Frame,
  type InboundFrame,
  type WireHeaders,
} from "@nuropb/protocol";

/**
 * How a frame's fields ride in NATS message headers.
 *
 * One header, `Nuropb-Frame`, carries the NuroPb headers and the frame's fields as JSON:
 * `{"h":{…headers…},"c":"<correlation id>","r":"<reply to>","t":<ttl ms>,"s":<sent at ms>}` (`r`,
 * `t` and `s` only when set; `s`, the sender's clock at the first send, rides on core requests,
 * which have no stored timestamp to check the ttl against). JSON keeps every key and value exactly (nulls, spaces, control characters and lone
 * surrogates are escaped; no CR or LF reaches the header), and one header costs a fraction of
 * one per NuroPb header in nats.js, which validates, canonicalises and looks up every key.
 *
 * Read too, for messages stored by earlier versions (the streams are durable): NuroPb headers as
 * NATS headers of the same name, the fields in `Nuropb-Correlation-Id`, `Nuropb-Reply-To`
 * (percent-encoded) and `Nuropb-Ttl-Ms`, and the markers
 * - `Nuropb-Null`: comma-separated keys whose value is `null` (the void `trace_id`);
 * - `Nuropb-Enc`: comma-separated keys whose value is percent-encoded;
 * - `Nuropb-Extra`: a JSON object of entries whose key NATS cannot carry.
 * Other headers (another writer's, a gateway's) are taken as they are unless they start with
 * `Nats-` or `Nuropb-`; the packed ones win over them.
 */
export const NatsHeader = {
  frame: "Nuropb-Frame",
  correlationId: "Nuropb-Correlation-Id",
  replyTo: "Nuropb-Reply-To",
  ttlMs: "Nuropb-Ttl-Ms",
  nullKeys: "Nuropb-Null",
  encodedKeys: "Nuropb-Enc",
  extra: "Nuropb-Extra",
  probe: "Nuropb-Probe",
  /** `1` on a core request sent again (requeued or given back): its delivery is `redelivered`. */
  redelivered: "Nuropb-Redelivered",
  deadLetterReason: "Nuropb-Dl-Reason",
  deadLetterSubject: "Nuropb-Dl-Subject",
  deadLetterSequence: "Nuropb-Dl-Sequence",
  /** What a dead letter too large for the server left out: `body`, or `body,headers`. */
  deadLetterDropped: "Nuropb-Dl-Dropped",
  /** `compact`: the dead letter's data is a compact frame that could not be read (no frame headers). */
  deadLetterFraming: "Nuropb-Dl-Framing",
  /** Size of the body a dead letter left out, in bytes. */
  deadLetterBodyBytes: "Nuropb-Dl-Body-Bytes",
  /** Prefix of the stored message's own `Nats-…` headers in its dead letter. */
  deadLetterKept: "Nuropb-Dl-",
  msgId: "Nats-Msg-Id",
} as const;

/** The frame fields decoded from a NATS message's headers. */
export interface DecodedFrameFields {
  readonly headers: WireHeaders;
  readonly correlationId: string;
  readonly replyTo?: string;
  readonly ttlMs?: number;
  /** When the frame was first sent, by the sender's clock, in ms since the epoch (core requests). */
  readonly sentAtMs?: number;
  /** Marked as sent again ({@link NatsHeader.redelivered}). */
  readonly redelivered?: boolean;
}

/**
 * The frame a handler gets: `fields` read from a message, and its `body`. One object literal of
 * one shape (a spread of the fields would copy them key by key into a new shape per message).
 */
export function inboundFrame(
  fields: DecodedFrameFields,
  body: Uint8Array,
  redelivered = fields.redelivered === true,
): InboundFrame {
  const frame: Mutable<InboundFrame> = {
    headers: fields.headers,
    body,
    correlationId: fields.correlationId,
    redelivered,
  };
  if (fields.replyTo !== undefined) frame.replyTo = fields.replyTo;
  if (fields.ttlMs !== undefined) frame.ttlMs = fields.ttlMs;
  return frame;
}

/**
 * The NATS headers carrying `frame`'s headers, correlation id, reply-to and ttl.
 * @throws TypeError when a header value is not a string or null (the receiver would refuse it).
 */
export function encodeFrameHeaders(frame: Frame, sentAtMs?: number): MsgHdrs {
  // Own keys, as JSON.stringify writes them.
  for (const key of Object.keys(frame.headers)) {
    const value: unknown = frame.headers[key];
    if (value !== null && typeof value !== "string") {
      throw new TypeError(`frame header '${key}' must be a string or null`);
    }
  }
  const packed: PackedFrame = { h: frame.headers, c: frame.correlationId };
  if (frame.replyTo !== undefined) packed.r = frame.replyTo;
  if (frame.ttlMs !== undefined && frame.ttlMs > 0) packed.t = Math.floor(frame.ttlMs);
  if (sentAtMs !== undefined) packed.s = sentAtMs;
  return new PackedHeaders(JSON.stringify(packed));
}

/**
 * NATS headers holding one `Nuropb-Frame` header, written straight to the wire bytes nats.js
 * would write for it (`NATS/1.0\r\nNuropb-Frame: {json}\r\n\r\n`; JSON never holds a raw CR
 * or LF, the one thing nats.js checks a value for). nats.js's own headers validate and
 * canonicalise the key, scan the value and build the text again at every publish: a tenth of
 * the NATS-specific time per request. Read or changed (a `Nats-Msg-Id` set for JetStream, a
 * dead letter reading the frame back), they become nats.js's headers with that one entry.
 */
class PackedHeaders implements MsgHdrs {
  readonly #json: string;
  #full: MsgHdrs | undefined;

  constructor(json: string) {
    this.#json = json;
  }

  /** nats.js's headers with the same entries, made on first use. */
  get #h(): MsgHdrs {
    if (this.#full === undefined) {
      this.#full = natsHeaders();
      this.#full.set(NatsHeader.frame, this.#json);
    }
    return this.#full;
  }

  /** The wire bytes; what nats.js's `publish` calls. */
  encode(): Uint8Array {
    if (this.#full !== undefined)
      return (this.#full as MsgHdrs & { encode(): Uint8Array }).encode();
    // Node's pooled Buffer: a TextEncoder array has an ArrayBuffer of its own, several times
    // the cost of encoding a few hundred bytes.
    return Buffer.from(`NATS/1.0\r\n${NatsHeader.frame}: ${this.#json}\r\n\r\n`, "utf8");
  }

  get hasError(): boolean {
    return this.#h.hasError;
  }
  get status(): string {
    return this.#h.status;
  }
  get code(): number {
    return this.#h.code;
  }
  get description(): string {
    return this.#h.description;
  }
  get(k: string, match?: Match): string {
    return this.#h.get(k, match);
  }
  set(k: string, v: string, match?: Match): void {
    this.#h.set(k, v, match);
  }
  append(k: string, v: string, match?: Match): void {
    this.#h.append(k, v, match);
  }
  has(k: string, match?: Match): boolean {
    return this.#h.has(k, match);
  }
  keys(): string[] {
    return this.#h.keys();
  }
  values(k: string, match?: Match): string[] {
    return this.#h.values(k, match);
  }
  delete(k: string, match?: Match): void {
    this.#h.delete(k, match);
  }
  last(k: string, match?: Match): string {
    return this.#h.last(k, match);
  }
  [Symbol.iterator](): Iterator<[string, string[]]> {
    return this.#h[Symbol.iterator]();
  }
}

export type Mutable<T> = { -readonly [K in keyof T]: T[K] };

interface PackedFrame {
  h: WireHeaders;
  c: string;
  r?: string;
  t?: number;
  s?: number;
}

/** The fields of a `Nuropb-Frame` header. @throws TypeError naming what is wrong. */
function unpack(value: string): Mutable<DecodedFrameFields> {
  const parsed = JSON.parse(value) as unknown;
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed))
    throw new TypeError("not an object");
  const { h, c, r, t, s } = parsed as Record<string, unknown>;
  if (typeof h !== "object" || h === null || Array.isArray(h)) throw new TypeError("h");
  for (const k in h) {
    const v: unknown = (h as Record<string, unknown>)[k];
    if (typeof v !== "string" && v !== null) throw new TypeError("a header value");
  }
  if (typeof c !== "string") throw new TypeError("c");
  if (r !== undefined && typeof r !== "string") throw new TypeError("r");
  if (t !== undefined && (!Number.isSafeInteger(t) || (t as number) <= 0)) throw new TypeError("t");
  if (s !== undefined && (!Number.isSafeInteger(s) || (s as number) < 0)) throw new TypeError("s");
  // Built field by field, not spread: this runs for every message received.
  const out: Mutable<DecodedFrameFields> = {
    headers: h as WireHeaders,
    correlationId: c,
  };
  if (r !== undefined) out.replyTo = r as string;
  if (t !== undefined) out.ttlMs = t as number;
  if (s !== undefined) out.sentAtMs = s as number;
  return out;
}

function list(value: string | undefined): string[] {
  return value === undefined || value === "" ? [] : value.split(",");
}

/**
 * Rebuilds a frame's headers and fields from NATS headers written by {@link encodeFrameHeaders}.
 * Headers of other writers are taken as they are; a missing correlation id reads as `""`.
 * @throws NuropbMessageError when a marker header is malformed.
 */
export function decodeFrameHeaders(h: MsgHdrs | undefined): DecodedFrameFields {
  const out: Record<string, string | null> = {};
  let correlationId = "";
  let replyTo: string | undefined;
  let ttlMs: number | undefined;
  if (h === undefined) return { headers: out, correlationId };
  let nulls: string[] = [];
  let encoded: string[] = [];
  let extra: string | undefined;
  let packed: string | undefined;
  let redelivered = false;
  try {
    for (const [key, values] of h) {
      const value = values[0] ?? "";
      switch (key) {
        case NatsHeader.frame:
          packed = value;
          break;
        case NatsHeader.correlationId:
          correlationId = decodeURIComponent(value);
          break;
        case NatsHeader.replyTo:
          replyTo = decodeURIComponent(value);
          break;
        case NatsHeader.ttlMs: {
          const n = Number(value);
          if (Number.isSafeInteger(n) && n > 0) ttlMs = n;
          break;
        }
        case NatsHeader.nullKeys:
          nulls = list(value);
          break;
        case NatsHeader.encodedKeys:
          encoded = list(value);
          break;
        case NatsHeader.extra:
          extra = value;
          break;
        case NatsHeader.redelivered:
          redelivered = value === "1";
          break;
        default:
          if (!/^(nats|nuropb)-/i.test(key)) out[key] = value;
      }
    }
    // Parsed JSON outside the body, which core bounds: a megabyte of `[[[[` would stall us.
    if (
      (packed?.length ?? 0) > MAX_HEADERS_JSON_BYTES ||
      (extra?.length ?? 0) > MAX_HEADERS_JSON_BYTES
    )
      throw new RangeError(`headers over ${String(MAX_HEADERS_JSON_BYTES)} bytes; not read`);
    if (packed !== undefined) {
      const fields = unpack(packed);
      // Other writers' plain headers (a gateway's…) stay; the packed ones win.
      let others = false;
      for (const _ in out) {
        others = true;
        break;
      }
      if (others) fields.headers = { ...out, ...fields.headers };
      if (redelivered) fields.redelivered = true;
      return fields;
    }
    for (const key of encoded) {
      const v = out[key];
      if (typeof v === "string") out[key] = decodeURIComponent(v);
    }
    for (const key of nulls) out[key] = null;
    if (extra !== undefined) {
      const parsed = JSON.parse(extra) as unknown;
      if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed))
        throw new TypeError("not an object");
      for (const [k, v] of Object.entries(parsed as Record<string, unknown>)) {
        if (typeof v === "string" || v === null) out[k] = v;
      }
    }
  } catch (err) {
    throw new NuropbMessageError("malformed NuroPb headers in a NATS message", { cause: err });
  }
  return {
    headers: out,
    correlationId,
    ...(replyTo !== undefined ? { replyTo } : {}),
    ...(ttlMs !== undefined ? { ttlMs } : {}),
  };
}
