import { utf8Bytes } from "./bytes.ts";
import {
  ENCRYPTED_YES,
  Header,
  MessageType,
  NUROPB_PROTOCOL_VERSION,
  NUROPB_VERSION,
  SUPPORTED_PROTOCOL_VERSIONS,
} from "./constants.ts";
import { NuropbMessageError } from "./errors.ts";
import { normaliseJson, normalisedMarks, parseWireJson, stringifyNormalised } from "./json.ts";
import type {
  CommandPayload,
  Context,
  ErrorPayload,
  EventPayload,
  Payload,
  RequestPayload,
  ResponsePayload,
} from "./payloads.ts";
import type { Frame, WireHeaders } from "./transport.ts";

const utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false });

/** Options for {@link encodePayload}. */
export interface EncodeOptions {
  /** The sender's reply address; requests and commands only. */
  readonly replyTo?: string;
  /** Time-to-live in milliseconds; requests and commands only. 0 or absent: none. */
  readonly ttlMs?: number;
  /**
   * A slim body (requests, commands and responses; events are always whole): it leaves out what
   * the frame already carries, the correlation id and the trace id, and what a reader fills in
   * by itself, an empty `context`, a null `warning` and a response's `reply_to`.
   * {@link decodeFrame} reads it back to the same payload (nuropb-ts 0.1.0 did too). Only for a
   * transport whose every reader is nuropb-ts (`TransportCapabilities.slimBodies`): a Python
   * peer reads these fields with hard key access.
   */
  readonly slim?: boolean;
}

/**
 * A decoded message: its typed payload plus the fields that came from the envelope. A union over
 * the payload kinds, so checking `type` narrows `payload` (`type === "response"` gives a
 * {@link ResponsePayload}).
 */
export type DecodedMessage<P extends Payload = Payload> = P extends Payload
  ? DecodedMessageOf<P>
  : never;

/** {@link DecodedMessage} for one payload kind. */
export interface DecodedMessageOf<P extends Payload> {
  readonly type: P["tag"];
  readonly payload: P;
  /** From the transport's correlation id when present, else the body's. */
  readonly correlationId: string;
  /** From the `trace_id` header when present (a void header stays null), else the body's. */
  readonly traceId: string | null;
  readonly protocol: string;
  /** The sender's library version (informational), `undefined` when absent. */
  readonly version: string | undefined;
  /** Whether the `encrypted` header said `yes` (the body given to the decoder is plaintext). */
  readonly encrypted: boolean;
}

/** The input of {@link decodeFrame}: a received frame whose body is already plaintext. */
export interface DecodableFrame {
  readonly headers: Readonly<Record<string, unknown>> | undefined | null;
  readonly body: Uint8Array | string;
  readonly correlationId?: string | undefined;
}

/**
 * The headers NuroPb puts on every message (PROTOCOL.md §3).
 */
export function buildHeaders(
  type: MessageType,
  traceId: string | null,
  encrypted = false,
): WireHeaders {
  // The names of `Header`, written out: a literal with fixed keys is cloned from a boilerplate,
  // computed keys cost a property definition each (about twice the time per message).
  return {
    nuropb_protocol: NUROPB_PROTOCOL_VERSION,
    nuropb_version: NUROPB_VERSION,
    nuropb_type: type,
    trace_id: traceId,
    encrypted: encrypted ? ENCRYPTED_YES : "",
  } satisfies Record<(typeof Header)[keyof typeof Header], string | null>;
}

/**
 * Encodes a payload to the frame a transport sends: the exact JSON body plus correlation id,
 * reply-to, ttl and the NuroPb headers.
 *
 * The body holds exactly the protocol's fields for the type, in the order Python writes them
 * (PROTOCOL.md §4), and always all of them, since Python peers read them with hard key access:
 * an `undefined` `result`, `event` or `error`, or an absent `target`, `trace_id` or `warning`, is
 * written as `null`; an absent `context` as `{}`. Other keys of `payload` are not sent. Values are
 * written by the rules of {@link toWireJson}.
 * @throws NuropbMessageError when the payload cannot be sent: bad ttl, missing correlation id, a
 *   field of the wrong type (e.g. a non-string `service`, `params` that is not an object), a
 *   value that cannot become JSON (cyclic, too deep).
 */
export function encodePayload(payload: Payload, options: EncodeOptions = {}): Frame {
  const tag = (payload as { tag?: unknown }).tag;
  if (tag !== "request" && tag !== "command" && tag !== "event" && tag !== "response") {
    throw new NuropbMessageError(`cannot encode a payload with tag ${describe(tag)}`);
  }
  if (typeof payload.correlation_id !== "string" || payload.correlation_id === "") {
    throw new NuropbMessageError(
      `cannot encode a ${tag}: correlation_id must be a non-empty string`,
    );
  }
  const traceId = outgoingTraceId(payload);
  const marks = normalisedMarks();
  // Building the body from the known fields also means only the free-form values (params,
  // context, event, result…) need the JSON walk, not the whole payload.
  const fields =
    options.slim === true && tag !== "event" ? slimBody(payload) : wireBody(payload, traceId);
  const body = utf8Bytes(stringifyNormalised(fields, marks) as string);
  const headers = buildHeaders(tag, traceId);
  const frame: { -readonly [K in keyof Frame]: Frame[K] } = {
    headers,
    body,
    correlationId: payload.correlation_id,
  };
  if (tag === "request" || tag === "command") {
    const { ttlMs, replyTo } = options;
    if (ttlMs !== undefined && (!Number.isSafeInteger(ttlMs) || ttlMs < 0)) {
      throw new NuropbMessageError(
        `ttlMs must be a non-negative integer of milliseconds, got ${describe(ttlMs)}`,
      );
    }
    if (replyTo !== undefined) frame.replyTo = replyTo;
    if (ttlMs !== undefined && ttlMs > 0) frame.ttlMs = ttlMs;
  }
  return frame;
}

/** The body object to write for `payload`: its protocol fields, checked and normalised. */
function wireBody(payload: Payload, traceId: string | null): Record<string, unknown> {
  switch (payload.tag) {
    case "request":
    case "command":
      return {
        tag: payload.tag,
        service: outgoingString(payload, "service"),
        method: outgoingString(payload, "method"),
        params: outgoingObject(payload, "params", false),
        correlation_id: payload.correlation_id,
        context: outgoingObject(payload, "context", true),
        trace_id: traceId,
      };
    case "event":
      return {
        tag: "event",
        topic: outgoingString(payload, "topic"),
        event: normaliseJson(payload.event, 2) ?? null,
        context: outgoingObject(payload, "context", true),
        trace_id: traceId,
        correlation_id: payload.correlation_id,
        target: outgoingTarget(payload),
      };
    case "response":
      return {
        tag: "response",
        result: normaliseJson(payload.result, 2) ?? null,
        error: outgoingError(payload),
        correlation_id: payload.correlation_id,
        trace_id: traceId,
        context: outgoingObject(payload, "context", true),
        warning: outgoingNullableString(payload, "warning"),
        reply_to: outgoingString(payload, "reply_to"),
      };
  }
}

/**
 * {@link wireBody} less the correlation id and trace id (the frame carries both), an empty
 * context, a null warning and a response's `reply_to`: what a reader fills in by itself. Checked
 * as fully as the whole body.
 */
function slimBody(payload: Payload): Record<string, unknown> {
  let out: Record<string, unknown>;
  if (payload.tag === "request" || payload.tag === "command") {
    out = {
      tag: payload.tag,
      service: outgoingString(payload, "service"),
      method: outgoingString(payload, "method"),
      params: outgoingObject(payload, "params", false),
    };
  } else {
    out = {
      tag: "response",
      result: normaliseJson((payload as ResponsePayload).result, 2) ?? null,
      error: outgoingError(payload),
    };
    const warning = outgoingNullableString(payload, "warning");
    if (warning !== null) out.warning = warning;
    outgoingString(payload, "reply_to"); // left out, but checked as in a whole body
  }
  const context = outgoingObject(payload, "context", true);
  if (!isEmptyObject(context)) out.context = context;
  return out;
}

/** Whether `value` is an object without own enumerable keys. */
function isEmptyObject(value: unknown): boolean {
  for (const key in value as Record<string, unknown>) {
    if (Object.prototype.hasOwnProperty.call(value, key)) return false;
  }
  return true;
}

type Fields = Readonly<Record<string, unknown>>;

function cannotEncode(payload: Payload, key: string, wanted: string, got: unknown): never {
  throw new NuropbMessageError(
    `cannot encode a ${payload.tag}: field '${key}' must be ${wanted}, got ${describe(got)}`,
  );
}

function outgoingTraceId(payload: Payload): string | null {
  const v = (payload as unknown as Fields).trace_id;
  if (v === undefined || v === null) return null;
  if (typeof v !== "string") cannotEncode(payload, "trace_id", "a string or null", v);
  return v;
}

function outgoingString(payload: Payload, key: string): string {
  const v = (payload as unknown as Fields)[key];
  if (typeof v !== "string") cannotEncode(payload, key, "a string", v);
  return v;
}

function outgoingNullableString(payload: Payload, key: string): string | null {
  const v = (payload as unknown as Fields)[key];
  if (v === undefined || v === null) return null;
  if (typeof v !== "string") cannotEncode(payload, key, "a string or null", v);
  return v;
}

/** A JSON object field (`params`, `context`); `context` may be left out (written as `{}`). */
function outgoingObject(payload: Payload, key: string, optional: boolean): unknown {
  const v = (payload as unknown as Fields)[key];
  if (optional && (v === undefined || v === null)) return {};
  const n = normaliseJson(v, 2);
  if (typeof n !== "object" || n === null || Array.isArray(n)) {
    cannotEncode(payload, key, "an object", v);
  }
  return n;
}

function outgoingTarget(payload: Payload): readonly string[] | null {
  const v = (payload as unknown as Fields).target;
  if (v === undefined || v === null) return null;
  if (!Array.isArray(v) || !v.every((t) => typeof t === "string")) {
    cannotEncode(payload, "target", "a list of strings or null", v);
  }
  return v as string[];
}

function outgoingError(payload: Payload): unknown {
  const v = (payload as unknown as Fields).error;
  if (v === undefined || v === null) return null;
  const n = normaliseJson(v, 2) as Record<string, unknown> | null | undefined;
  if (
    typeof n !== "object" ||
    n === null ||
    Array.isArray(n) ||
    typeof n.error !== "string" ||
    typeof n.description !== "string"
  ) {
    cannotEncode(payload, "error", "null or an object with string 'error' and 'description'", v);
  }
  return n;
}

/**
 * Decodes a received frame. Everything malformed — bytes that are not UTF-8 JSON, a body that
 * is not an object, an unsupported `nuropb_protocol`, an unknown `nuropb_type`, missing or
 * mistyped fields, a header that disagrees with the body — throws {@link NuropbMessageError}
 * naming the problem; nothing else escapes.
 *
 * The body must already be plaintext: decrypting is the caller's job (see `@nuropb/crypto`).
 * @throws NuropbMessageError
 */
export function decodeFrame(frame: DecodableFrame): DecodedMessage {
  try {
    return decodeUnchecked(frame);
  } catch (err) {
    if (err instanceof NuropbMessageError) throw err;
    throw new NuropbMessageError(`undecodable message: ${(err as Error)?.message ?? String(err)}`, {
      cause: err,
    });
  }
}

function decodeUnchecked(frame: DecodableFrame): DecodedMessage {
  const headers = frame.headers;
  if (headers === null || headers === undefined || typeof headers !== "object") {
    throw new NuropbMessageError("message has no headers");
  }
  const protocol = headers[Header.protocol];
  if (typeof protocol !== "string") {
    throw new NuropbMessageError(`header ${Header.protocol} is missing`);
  }
  if (protocol !== NUROPB_PROTOCOL_VERSION && !SUPPORTED_PROTOCOL_VERSIONS.includes(protocol)) {
    throw new NuropbMessageError(`nuropb_protocol '${protocol}' is not supported`);
  }
  const type = headers[Header.type];
  if (type !== "request" && type !== "command" && type !== "event" && type !== "response") {
    throw new NuropbMessageError(`message_type ${describe(type)} is not supported`);
  }
  const rawVersion = headers[Header.version];
  const version = typeof rawVersion === "string" ? rawVersion : undefined;
  const encrypted = headers[Header.encrypted] === ENCRYPTED_YES;

  let text: string;
  if (typeof frame.body === "string") text = frame.body;
  else {
    try {
      text = utf8Decoder.decode(frame.body);
    } catch (err) {
      throw new NuropbMessageError("body is not valid UTF-8", { cause: err });
    }
  }
  const body = parseWireJson(text);
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new NuropbMessageError(
      `Decoded payload is not a dictionary: ${Array.isArray(body) ? "list" : body === null ? "null" : typeof body}`,
    );
  }
  const b = body as Record<string, unknown>;
  if (b.tag !== type) {
    throw new NuropbMessageError(
      `header nuropb_type '${type}' disagrees with body tag ${describe(b.tag)}`,
    );
  }

  const bodyCorrelation = optionalString(b, "correlation_id");
  const propCorrelation =
    frame.correlationId === undefined || frame.correlationId === ""
      ? undefined
      : frame.correlationId;
  if (
    propCorrelation !== undefined &&
    bodyCorrelation !== undefined &&
    propCorrelation !== bodyCorrelation
  ) {
    throw new NuropbMessageError(
      `correlation id '${propCorrelation}' disagrees with body correlation_id '${bodyCorrelation}'`,
    );
  }
  const correlationId = propCorrelation ?? bodyCorrelation;
  if (correlationId === undefined) throw new NuropbMessageError("message has no correlation id");

  const bodyTrace = nullableString(b, "trace_id");
  let traceId: string | null;
  if (Object.hasOwn(headers, Header.traceId)) {
    const h = headers[Header.traceId];
    if (h !== null && h !== undefined && typeof h !== "string") {
      throw new NuropbMessageError(`header trace_id must be a string or void, got ${describe(h)}`);
    }
    traceId = h ?? null;
  } else traceId = bodyTrace;

  const payload = checkBody(type, b, correlationId, traceId);
  // checkBody returns the payload kind named by `type` (the tag was checked against it above).
  return { type, payload, correlationId, traceId, protocol, version, encrypted } as DecodedMessage;
}

function checkBody(
  type: MessageType,
  b: Record<string, unknown>,
  correlationId: string,
  traceId: string | null,
): Payload {
  switch (type) {
    case MessageType.request:
    case MessageType.command: {
      const p: RequestPayload | CommandPayload = {
        tag: type,
        service: requiredString(b, "service"),
        method: requiredString(b, "method"),
        params: requiredObject(b, "params"),
        correlation_id: correlationId,
        context: contextOf(b),
        trace_id: traceId,
      };
      return p;
    }
    case MessageType.event: {
      if (!Object.hasOwn(b, "event"))
        throw new NuropbMessageError("event body has no 'event' field");
      const p: EventPayload = {
        tag: "event",
        topic: requiredString(b, "topic"),
        event: b.event,
        context: contextOf(b),
        trace_id: traceId,
        correlation_id: correlationId,
        target: targetOf(b),
      };
      return p;
    }
    case MessageType.response: {
      if (!Object.hasOwn(b, "result"))
        throw new NuropbMessageError("response body has no 'result' field");
      if (!Object.hasOwn(b, "error"))
        throw new NuropbMessageError("response body has no 'error' field");
      const warning = b.warning;
      if (warning !== undefined && warning !== null && typeof warning !== "string") {
        throw new NuropbMessageError(
          `response field 'warning' must be a string or null, got ${describe(warning)}`,
        );
      }
      const replyTo = b.reply_to;
      if (replyTo !== undefined && replyTo !== null && typeof replyTo !== "string") {
        throw new NuropbMessageError(
          `response field 'reply_to' must be a string, got ${describe(replyTo)}`,
        );
      }
      const p: ResponsePayload = {
        tag: "response",
        result: b.result,
        error: errorOf(b.error),
        correlation_id: correlationId,
        trace_id: traceId,
        context: contextOf(b),
        warning: warning ?? null,
        reply_to: replyTo ?? "",
      };
      return p;
    }
  }
}

function errorOf(value: unknown): ErrorPayload | null {
  if (value === null) return null;
  if (typeof value !== "object" || Array.isArray(value)) {
    throw new NuropbMessageError(
      `response field 'error' must be an object or null, got ${describe(value)}`,
    );
  }
  const e = value as Record<string, unknown>;
  if (typeof e.error !== "string")
    throw new NuropbMessageError("response error object has no string 'error'");
  if (typeof e.description !== "string") {
    throw new NuropbMessageError("response error object has no string 'description'");
  }
  const out: {
    error: string;
    description: string;
    retryable?: boolean;
    details?: Record<string, unknown>;
  } = {
    error: e.error,
    description: e.description,
  };
  if (e.retryable === true) out.retryable = true;
  if (typeof e.details === "object" && e.details !== null && !Array.isArray(e.details)) {
    out.details = e.details as Record<string, unknown>;
  }
  return out;
}

function contextOf(b: Record<string, unknown>): Context {
  const c = b.context;
  if (c === undefined || c === null) return {};
  if (typeof c !== "object" || Array.isArray(c)) {
    throw new NuropbMessageError(`field 'context' must be an object, got ${describe(c)}`);
  }
  return c as Context;
}

function targetOf(b: Record<string, unknown>): readonly string[] | null {
  const t = b.target;
  if (t === undefined || t === null) return null;
  if (!Array.isArray(t) || !t.every((x) => typeof x === "string")) {
    throw new NuropbMessageError(
      `event field 'target' must be a list of strings or null, got ${describe(t)}`,
    );
  }
  return t as string[];
}

function requiredString(b: Record<string, unknown>, key: string): string {
  const v = b[key];
  if (typeof v !== "string")
    throw new NuropbMessageError(`field '${key}' must be a string, got ${describe(v)}`);
  return v;
}

function optionalString(b: Record<string, unknown>, key: string): string | undefined {
  const v = b[key];
  if (v === undefined) return undefined;
  if (typeof v !== "string")
    throw new NuropbMessageError(`field '${key}' must be a string, got ${describe(v)}`);
  return v;
}

function nullableString(b: Record<string, unknown>, key: string): string | null {
  const v = b[key];
  if (v === undefined || v === null) return null;
  if (typeof v !== "string")
    throw new NuropbMessageError(`field '${key}' must be a string or null, got ${describe(v)}`);
  return v;
}

function requiredObject(b: Record<string, unknown>, key: string): Record<string, unknown> {
  const v = b[key];
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new NuropbMessageError(`field '${key}' must be an object, got ${describe(v)}`);
  }
  return v as Record<string, unknown>;
}

function describe(v: unknown): string {
  if (v === undefined) return "missing";
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  if (typeof v === "string") return `'${v.length > 40 ? `${v.slice(0, 40)}…` : v}'`;
  if (typeof v === "object") return "an object";
  return `${typeof v} ${String(v)}`;
}
