import { headers as natsHeaders, type MsgHdrs } from "nats";
import { NuropbMessageError, type Frame, type WireHeaders } from "@nuropb/protocol";

/**
 * How a frame's fields ride in NATS message headers.
 *
 * NuroPb headers travel as NATS headers of the same name when NATS can carry them exactly. What it
 * cannot is marked so the receiver rebuilds the frame byte for byte:
 * - `Nuropb-Null`: comma-separated keys whose value is `null` (the void `trace_id`);
 * - `Nuropb-Enc`: comma-separated keys whose value is percent-encoded (control characters,
 *   leading or trailing spaces: NATS trims values and refuses CR/LF);
 * - `Nuropb-Extra`: a JSON object of entries whose key NATS cannot carry, or which could be
 *   mistaken for ours or the server's (`Nats-…`, `Nuropb-…`).
 * The frame's own fields are `Nuropb-Correlation-Id` and `Nuropb-Reply-To` (percent-encoded) and
 * `Nuropb-Ttl-Ms` (decimal).
 */
export const NatsHeader = {
  correlationId: "Nuropb-Correlation-Id",
  replyTo: "Nuropb-Reply-To",
  ttlMs: "Nuropb-Ttl-Ms",
  nullKeys: "Nuropb-Null",
  encodedKeys: "Nuropb-Enc",
  extra: "Nuropb-Extra",
  probe: "Nuropb-Probe",
  deadLetterReason: "Nuropb-Dl-Reason",
  deadLetterSubject: "Nuropb-Dl-Subject",
  deadLetterSequence: "Nuropb-Dl-Sequence",
  /** What a dead letter too large for the server left out: `body`, or `body,headers`. */
  deadLetterDropped: "Nuropb-Dl-Dropped",
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
}

function isPlainKey(key: string): boolean {
  return /^[!-9;-~]+$/.test(key) && !/^(nats|nuropb)-/i.test(key) && !key.includes(",");
}

function isPlainValue(value: string): boolean {
  // eslint-disable-next-line no-control-regex
  return value.trim() === value && !/[\u0000-\u001f\u007f]/.test(value);
}

function encode(value: string): string {
  try {
    return encodeURIComponent(value);
  } catch (err) {
    throw new NuropbMessageError("a header value is not well-formed Unicode", { cause: err });
  }
}

/**
 * The NATS headers carrying `frame`'s headers, correlation id, reply-to and ttl.
 * @throws NuropbMessageError when a value is not well-formed Unicode.
 */
export function encodeFrameHeaders(frame: Frame): MsgHdrs {
  const h = natsHeaders();
  const nulls: string[] = [];
  const encoded: string[] = [];
  let extra: Record<string, string | null> | undefined;
  for (const [key, value] of Object.entries(frame.headers)) {
    if (!isPlainKey(key)) {
      (extra ??= {})[key] = value;
    } else if (value === null) {
      nulls.push(key);
    } else if (isPlainValue(value)) {
      h.set(key, value);
    } else {
      h.set(key, encode(value));
      encoded.push(key);
    }
  }
  if (nulls.length > 0) h.set(NatsHeader.nullKeys, nulls.join(","));
  if (encoded.length > 0) h.set(NatsHeader.encodedKeys, encoded.join(","));
  if (extra !== undefined) h.set(NatsHeader.extra, JSON.stringify(extra));
  h.set(NatsHeader.correlationId, encode(frame.correlationId));
  if (frame.replyTo !== undefined) h.set(NatsHeader.replyTo, encode(frame.replyTo));
  if (frame.ttlMs !== undefined && frame.ttlMs > 0)
    h.set(NatsHeader.ttlMs, String(Math.floor(frame.ttlMs)));
  return h;
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
  try {
    for (const [key, values] of h) {
      const value = values[0] ?? "";
      switch (key) {
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
        default:
          if (!/^(nats|nuropb)-/i.test(key)) out[key] = value;
      }
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
