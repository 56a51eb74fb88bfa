import {
  MAX_HEADERS_JSON_BYTES,
  NuropbMessageError,
  type Frame,
  type InboundFrame,
  type WireHeaders,
} from "@nuropb/protocol";
import { copyBytes } from "@nuropb/protocol/transport-kit";
import type { MsgpackArrayWriter } from "./msgpack.ts";

/**
 * Field names of a service-stream entry. Operators reading the stream (or the dead-letter
 * stream) see the frame field by field:
 * `c` correlation id, `h` headers (JSON, `null` kept), `r` reply-to, `t` ttl in ms, `b` body bytes;
 * a requeued copy adds `rd` (`1`) and `ts` (when the original was stored, in ms); a dead letter
 * adds `reason`, `service` and `id` (the entry's id in its service stream).
 */
export const Field = {
  correlationId: "c",
  headers: "h",
  replyTo: "r",
  ttlMs: "t",
  body: "b",
  redelivered: "rd",
  storedAtMs: "ts",
} as const;

/** Names and values of the widest entry read as a frame (room for a few foreign extras). */
const MAX_ENTRY_FIELDS = 64;

/** A frame as stream-entry fields (names and values alternating), ready for XADD. */
export function frameToFields(frame: Frame): (string | Buffer)[] {
  const out: (string | Buffer)[] = [
    Field.correlationId,
    frame.correlationId,
    Field.headers,
    JSON.stringify(frame.headers),
  ];
  if (frame.replyTo !== undefined) out.push(Field.replyTo, frame.replyTo);
  if (hasTtl(frame)) out.push(Field.ttlMs, String(Math.floor(frame.ttlMs)));
  out.push(Field.body, bufferOf(frame.body));
  return out;
}

function hasTtl(frame: Frame): frame is Frame & { readonly ttlMs: number } {
  return frame.ttlMs !== undefined && frame.ttlMs > 0;
}

/**
 * Writes what {@link frameToFields} returns, preceded by how many values it is, into a batch
 * (see {@link MsgpackArrayWriter}).
 */
export function writeFrameFields(w: MsgpackArrayWriter, frame: Frame): void {
  const replyTo = frame.replyTo;
  const ttl = hasTtl(frame);
  w.uint(6 + (replyTo !== undefined ? 2 : 0) + (ttl ? 2 : 0));
  w.shortAscii(Field.correlationId);
  w.str(frame.correlationId);
  w.shortAscii(Field.headers);
  w.str(JSON.stringify(frame.headers));
  if (replyTo !== undefined) {
    w.shortAscii(Field.replyTo);
    w.str(replyTo);
  }
  if (ttl) {
    w.shortAscii(Field.ttlMs);
    w.shortAscii(String(Math.floor(frame.ttlMs))); // at most 23 characters, even for 1e308
  }
  w.shortAscii(Field.body);
  w.bin(frame.body);
}

/** The frame fields of a stream entry, plus what the transport keeps about it. */
export interface EntryFrame {
  readonly headers: WireHeaders;
  readonly body: Uint8Array;
  readonly correlationId: string;
  readonly replyTo?: string;
  readonly ttlMs?: number;
  /** A requeued copy. */
  readonly requeued: boolean;
  /** When the original was stored, in ms (requeued copies), else undefined. */
  readonly storedAtMs?: number;
}

/**
 * Headers from their parsed JSON: an object whose string or null values are kept. The parsed
 * object itself when it holds nothing else (the usual case: no copy).
 */
function headersOf(parsed: unknown): WireHeaders {
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new TypeError("headers are not a JSON object");
  }
  for (const k in parsed) {
    const v = (parsed as Record<string, unknown>)[k];
    if (k === "__proto__" || (typeof v !== "string" && v !== null)) return copyHeaders(parsed);
  }
  return parsed as WireHeaders;
}

function copyHeaders(parsed: object): WireHeaders {
  const out: Record<string, string | null> = {};
  for (const k in parsed) {
    if (k === "__proto__") continue; // an own key from JSON.parse; assigning it would be a prototype
    const v = (parsed as Record<string, unknown>)[k];
    if (typeof v === "string" || v === null) out[k] = v;
  }
  return out;
}

/** Field name bytes (`c`, `h`, `r`, `t`, `b`; `rd`, `ts`), compared without making strings. */
const C = 0x63;
const H = 0x68;
const R = 0x72;
const T = 0x74;
const B = 0x62;
const D = 0x64;
const S = 0x73;

/**
 * Reads a stream entry's fields (as returned with Buffer replies).
 * @throws NuropbMessageError when the entry is not a NuroPb frame.
 */
export function fieldsToFrame(fields: readonly Buffer[]): EntryFrame {
  if (fields.length > MAX_ENTRY_FIELDS) {
    // Not ours (a frame has at most seven fields): dead-lettered as it is, never requeued.
    throw new NuropbMessageError(
      `stream entry has ${fields.length / 2} fields; a NuroPb frame has at most seven`,
    );
  }
  let headers: WireHeaders | undefined;
  let body: Uint8Array | undefined;
  let correlationId = "";
  let replyTo: string | undefined;
  let ttlMs: number | undefined;
  let requeued = false;
  let storedAtMs: number | undefined;
  try {
    for (let i = 0; i + 1 < fields.length; i += 2) {
      const name = fields[i] as Buffer;
      const value = fields[i + 1] as Buffer;
      if (name.length === 1) {
        switch (name[0]) {
          case C:
            correlationId = value.toString("utf8");
            break;
          case H:
            if (value.length > MAX_HEADERS_JSON_BYTES) throw headersTooLarge(value.length);
            headers = headersOf(JSON.parse(value.toString("utf8")));
            break;
          case R:
            replyTo = value.toString("utf8");
            break;
          case T: {
            const n = Number(value.toString("latin1"));
            if (Number.isSafeInteger(n) && n > 0) ttlMs = n;
            break;
          }
          case B:
            body = copyBytes(value);
            break;
          default:
            break;
        }
      } else if (name.length === 2) {
        if (name[0] === R && name[1] === D) {
          requeued = value.length === 1 && value[0] === 0x31;
        } else if (name[0] === T && name[1] === S) {
          const n = Number(value.toString("latin1"));
          if (Number.isSafeInteger(n)) storedAtMs = n;
        }
      }
    }
  } catch (err) {
    throw new NuropbMessageError("malformed NuroPb stream entry", { cause: err });
  }
  if (headers === undefined || body === undefined) {
    throw new NuropbMessageError("stream entry without headers or body");
  }
  const frame: Mutable<EntryFrame> = { headers, body, correlationId, requeued };
  if (replyTo !== undefined) frame.replyTo = replyTo;
  if (ttlMs !== undefined) frame.ttlMs = ttlMs;
  if (storedAtMs !== undefined) frame.storedAtMs = storedAtMs;
  return frame;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

function headersTooLarge(bytes: number): NuropbMessageError {
  return new NuropbMessageError(
    `frame headers of ${String(bytes)} bytes exceed ${String(MAX_HEADERS_JSON_BYTES)}; not read`,
  );
}

function bufferOf(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes)
    ? bytes
    : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A response as one list element: 4-byte big-endian length of a JSON head, the head, the body. */
export function frameToBlob(frame: Frame): Buffer {
  const head = Buffer.from(blobHead(frame), "utf8");
  const out = Buffer.allocUnsafe(4 + head.length + frame.body.byteLength);
  out.writeUInt32BE(head.length, 0);
  head.copy(out, 4);
  out.set(frame.body, 4 + head.length);
  return out;
}

/** Writes what {@link frameToBlob} returns into a batch, as one byte string. */
export function writeBlob(w: MsgpackArrayWriter, frame: Frame): void {
  w.headedBin(blobHead(frame), frame.body);
}

/** `{"c":…,"h":…[,"r":…][,"t":…]}`, as JSON.stringify writes that object, without making it. */
function blobHead(frame: Frame): string {
  let head = `{"c":${JSON.stringify(frame.correlationId)},"h":${JSON.stringify(frame.headers)}`;
  if (frame.replyTo !== undefined) head += `,"r":${JSON.stringify(frame.replyTo)}`;
  if (hasTtl(frame)) head += `,"t":${JSON.stringify(Math.floor(frame.ttlMs))}`;
  return `${head}}`;
}

/**
 * Reads a list element written by {@link frameToBlob}, as a response (never redelivered).
 * @throws NuropbMessageError when it is not one.
 */
export function blobToFrame(blob: Buffer): InboundFrame {
  try {
    if (blob.length < 4) throw new TypeError("too short");
    const len = blob.readUInt32BE(0);
    if (4 + len > blob.length) throw new TypeError("head length beyond the end");
    if (len > MAX_HEADERS_JSON_BYTES) throw headersTooLarge(len);
    const head = JSON.parse(blob.toString("utf8", 4, 4 + len)) as {
      c?: unknown;
      h?: unknown;
      r?: unknown;
      t?: unknown;
    };
    const frame: Mutable<InboundFrame> = {
      headers: headersOf(head.h ?? null),
      body: copyBytes(blob.subarray(4 + len)),
      correlationId: typeof head.c === "string" ? head.c : "",
      redelivered: false,
    };
    if (typeof head.r === "string") frame.replyTo = head.r;
    if (typeof head.t === "number" && head.t > 0) frame.ttlMs = head.t;
    return frame;
  } catch (err) {
    throw new NuropbMessageError("malformed NuroPb response blob", { cause: err });
  }
}
