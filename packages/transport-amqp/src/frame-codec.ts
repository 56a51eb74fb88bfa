import {
  CONTENT_TYPE_JSON,
  Header,
  MessageType,
  NuropbMessageError,
  assertFrameTtl,
} from "@nuropb/protocol";
import type { Destination, Frame, InboundFrame, WireHeaders } from "@nuropb/protocol";
import type { Message, Options } from "amqplib";

/** AMQP `delivery_mode` of a message the broker writes to disk in a durable queue. */
const PERSISTENT = 2;

/** What {@link encodeFrame} needs of the options. */
export interface EncodeSettings {
  readonly rpcExchange: string;
  readonly eventsExchange: string;
  readonly maxFrameBytes: number;
  readonly persistentRequests: boolean;
}

/**
 * How the five NuroPb header fields travel: `python`, the headers table of PROTOCOL.md §3 (what
 * Python peers read); `compact`, AMQP basic properties, so that neither Node nor RabbitMQ (which
 * decodes every headers table it routes) pays for a table. A receiver reads both forms.
 */
export type AmqpDialect = "python" | "compact";

/**
 * Compact form: `type` = nuropb_type, `app_id` = "{nuropb_protocol} {nuropb_version}",
 * `message_id` = trace_id (absent for a null trace id), `content_encoding` = this value when
 * `encrypted` is "yes". RabbitMQ validates none of these (unlike `user_id`); Python ignores them.
 */
export const COMPACT_ENCRYPTED = "nuropb-encrypted";

/**
 * Header every event is sent with: when it was sent, in ms since the epoch (the name RabbitMQ
 * 3.12's message interceptor uses). The event log reads it as the entry's time; receivers drop it.
 */
export const EVENT_TIME_HEADER = "timestamp_in_ms";

/** A frame as amqplib publishes it. */
export interface OutgoingMessage {
  readonly exchange: string;
  readonly routingKey: string;
  /** Requests and commands: a basic.return tells that no queue took it. */
  readonly mandatory: boolean;
  readonly content: Buffer;
  readonly properties: Options.Publish;
}

/**
 * Maps a frame for `to` onto AMQP (PROTOCOL.md §3): the exchange and routing key, and the exact
 * properties and headers Python peers read. Checks everything amqplib would otherwise throw on
 * while encoding (after registering the confirm).
 * @throws NuropbMessageError for a malformed or oversized frame or destination.
 */
export function encodeFrame(
  to: Destination,
  frame: Frame,
  o: EncodeSettings,
  dialect: AmqpDialect = "python",
): OutgoingMessage {
  const body = frame.body;
  if (!(body instanceof Uint8Array))
    throw new NuropbMessageError("frame.body must be a Uint8Array");
  if (body.byteLength > o.maxFrameBytes) {
    throw new NuropbMessageError(
      `frame body of ${body.byteLength} bytes exceeds maxFrameBytes (${o.maxFrameBytes})`,
    );
  }
  if (typeof frame.correlationId !== "string") {
    throw new NuropbMessageError("frame.correlationId must be a string");
  }
  // AMQP short strings: amqplib would throw while encoding, after registering the confirm.
  if (Buffer.byteLength(frame.correlationId) > 255) {
    throw new NuropbMessageError(
      `frame.correlationId must be at most 255 UTF-8 bytes, got ${Buffer.byteLength(frame.correlationId)}`,
    );
  }
  const replyTo: unknown = frame.replyTo ?? "";
  if (typeof replyTo !== "string") {
    throw new NuropbMessageError(`frame.replyTo must be a string, got ${typeof replyTo}`);
  }
  if (Buffer.byteLength(replyTo) > 255) {
    throw new NuropbMessageError(
      `frame.replyTo must be at most 255 UTF-8 bytes, got ${Buffer.byteLength(replyTo)}`,
    );
  }
  let exchange: string;
  let routingKey: string;
  let mandatory = false;
  // What send() resolved for must outlive a broker restart: commands and events are published
  // persistent into the durable service queues. A request is only when asked (its caller's
  // connection does not survive the restart either), a response never. The kind is read from
  // the `nuropb_type` header (PROTOCOL.md §3); an rpc frame without a known one is kept too.
  let persistent = false;
  switch (to.kind) {
    case "rpc":
      exchange = o.rpcExchange;
      routingKey = to.service;
      mandatory = true;
      persistent = o.persistentRequests || frame.headers?.[Header.type] !== MessageType.request;
      break;
    case "event":
      exchange = o.eventsExchange;
      routingKey = to.topic;
      persistent = true;
      // The event log's time (RabbitMQ 3.10 streams keep none over AMQP 0-9-1); Python ignores it.
      if (typeof frame.headers?.[EVENT_TIME_HEADER] !== "string") {
        frame = {
          ...frame,
          headers: { ...frame.headers, [EVENT_TIME_HEADER]: String(Date.now()) },
        };
      }
      break;
    case "reply":
      exchange = "";
      routingKey = to.address;
      break;
    default:
      throw new NuropbMessageError(
        `unknown destination kind ${String((to as { kind?: unknown }).kind)}`,
      );
  }
  if (typeof routingKey !== "string" || routingKey === "" || Buffer.byteLength(routingKey) > 255) {
    throw new NuropbMessageError(
      `destination ${to.kind} needs a non-empty name of at most 255 bytes, got ${JSON.stringify(routingKey)}`,
    );
  }
  for (const key of Object.keys(frame.headers ?? {})) {
    if (Buffer.byteLength(key) > 255) {
      throw new NuropbMessageError(
        `frame.headers: the header name ${JSON.stringify(key.slice(0, 40))}… is over 255 UTF-8 bytes`,
      );
    }
  }
  const ttl = frame.ttlMs;
  assertFrameTtl(ttl);
  // Assigned one by one rather than spread from conditional objects: one object per message.
  const properties: Options.Publish =
    dialect === "compact" ? compactFields(frame.headers ?? {}) : { headers: { ...frame.headers } };
  properties.contentType = CONTENT_TYPE_JSON;
  properties.correlationId = frame.correlationId;
  properties.replyTo = replyTo;
  if (persistent) properties.deliveryMode = PERSISTENT;
  if (ttl !== undefined && ttl > 0) properties.expiration = String(ttl);
  if (mandatory) properties.mandatory = true;
  const content = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  return { exchange, routingKey, mandatory, content, properties };
}

/**
 * The compact form of `headers` (see {@link COMPACT_ENCRYPTED}): the fields it can carry as
 * properties, any other header (or a value the properties cannot carry) in a headers table.
 */
function compactFields(headers: Readonly<Record<string, string | null>>): Options.Publish {
  const out: Options.Publish = {};
  const type = headers[Header.type];
  const protocol = headers[Header.protocol];
  const version = headers[Header.version];
  const trace = headers[Header.traceId];
  const encrypted = headers[Header.encrypted];
  const typed = typeof type === "string";
  const app =
    typeof protocol === "string" && typeof version === "string" && !protocol.includes(" ");
  const traced = trace === null || (typeof trace === "string" && trace !== "");
  const marked = encrypted === "yes" || encrypted === "";
  if (typed) out.type = type;
  if (app) out.appId = `${protocol} ${version}`;
  if (traced && trace !== null) out.messageId = trace;
  if (encrypted === "yes") out.contentEncoding = COMPACT_ENCRYPTED;
  // Any other header, or one whose value the properties cannot carry, in a headers table (built
  // without copying and deleting: `delete` makes an object a slow dictionary).
  let rest: Record<string, string | null> | undefined;
  for (const key of Object.keys(headers)) {
    let carried: boolean;
    switch (key) {
      case Header.type:
        carried = typed;
        break;
      case Header.protocol:
      case Header.version:
        carried = app;
        break;
      case Header.traceId:
        carried = traced;
        break;
      case Header.encrypted:
        carried = marked;
        break;
      default:
        carried = false;
    }
    if (!carried) (rest ??= {})[key] = headers[key] as string | null;
  }
  if (rest !== undefined) out.headers = rest;
  return out;
}

/** Maps an AMQP message to the transport's inbound frame (PROTOCOL.md §3, §5), either dialect. */
export function toInboundFrame(msg: Message, compact = isCompact(msg)): InboundFrame {
  const p = msg.properties;
  const ttl = parseTtl(p.expiration);
  const headers = (compact ? fromCompact(p) : toWireHeaders(p.headers)) as Record<
    string,
    string | null
  >;
  // Only when there: a `delete` turns the object into a slower dictionary for every later read.
  if (headers[EVENT_TIME_HEADER] !== undefined) delete headers[EVENT_TIME_HEADER];
  const frame: { -readonly [K in keyof InboundFrame]: InboundFrame[K] } = {
    headers,
    body: msg.content,
    correlationId: typeof p.correlationId === "string" ? p.correlationId : "",
    redelivered: msg.fields.redelivered === true,
  };
  if (typeof p.replyTo === "string" && p.replyTo !== "") frame.replyTo = p.replyTo;
  if (ttl !== undefined) frame.ttlMs = ttl;
  return frame;
}

/**
 * Field-table headers as strings: long strings stay, void stays null, byte arrays are read as
 * UTF-8, numbers and booleans become their text; nested tables and arrays are dropped (no NuroPb
 * header uses them). An absent table gives `{}` (core treats that as undecodable).
 */
function toWireHeaders(headers: Record<string, unknown> | undefined): WireHeaders {
  const out: Record<string, string | null> = {};
  if (headers === undefined || headers === null) return out;
  for (const [k, v] of Object.entries(headers)) {
    if (typeof v === "string" || v === null) out[k] = v;
    else if (v instanceof Uint8Array)
      out[k] = Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("utf8");
    else if (typeof v === "number" || typeof v === "boolean" || typeof v === "bigint")
      out[k] = String(v);
  }
  return out;
}

/**
 * A message in the compact form: it has a `type` property (Python never sets one) and no
 * `nuropb_type` header.
 */
export function isCompact(msg: Message): boolean {
  const p = msg.properties;
  return typeof p.type === "string" && (p.headers?.[Header.type] ?? undefined) === undefined;
}

/** The five header fields of a compact message, plus any headers table it has. */
function fromCompact(p: Message["properties"]): WireHeaders {
  const out = toWireHeaders(p.headers) as Record<string, string | null>;
  out[Header.type] = p.type as string;
  const appId: unknown = p.appId;
  if (typeof appId === "string") {
    const space = appId.indexOf(" ");
    if (space > 0) {
      out[Header.protocol] ??= appId.slice(0, space);
      out[Header.version] ??= appId.slice(space + 1);
    }
  }
  if (!(Header.traceId in out)) {
    out[Header.traceId] = typeof p.messageId === "string" ? p.messageId : null;
  }
  out[Header.encrypted] ??= p.contentEncoding === COMPACT_ENCRYPTED ? "yes" : "";
  return out;
}

function parseTtl(expiration: unknown): number | undefined {
  if (typeof expiration !== "string" || !/^\d+$/.test(expiration)) return undefined;
  const n = Number(expiration);
  return Number.isSafeInteger(n) ? n : undefined;
}
