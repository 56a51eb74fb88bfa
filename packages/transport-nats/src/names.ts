/**
 * Subjects and JetStream object names. Every subject starts with the mesh:
 *
 * - `{mesh}.rpc.{name}`     commands (and requests with `requests: "jetstream"`, delayed requests and
 *                           requests a busy instance spills); captured by the stream of the service bound to `name`
 * - `{mesh}.req.{name}`     requests on core NATS (`requests: "core"`): a queue group per service
 * - `{mesh}.evt.{topic}`    events; captured by the mesh's events stream
 * - `{mesh}.reply.{address}` responses, on core NATS (no stream)
 * - `{mesh}.dl.{service}`   dead letters; captured by the mesh's dead-letter stream
 */

/** True for a dot-separated subject of literal tokens: no wildcards, whitespace or empty tokens. */
export function isLiteralSubject(value: string): boolean {
  return typeof value === "string" && LITERAL_SUBJECT.test(value);
}

/** A character a subject token may hold: printable, no `.`, `*`, `>` or whitespace. */
const TOKEN_CHAR = String.raw`[^\s.*>\u0000-\u001f\u007f]`;
/** One token, the whole string. */
const SUBJECT_TOKEN = new RegExp(`^${TOKEN_CHAR}+$`);
/** Tokens joined by single dots (one pass: every send checks its subject). */
const LITERAL_SUBJECT = new RegExp(`^${TOKEN_CHAR}+(?:\\.${TOKEN_CHAR}+)*$`);

/** True for one subject token: non-empty, printable, no `.`, `*`, `>` or whitespace. */
export function isSubjectToken(value: string): boolean {
  return typeof value === "string" && SUBJECT_TOKEN.test(value);
}

/** Subject of requests and commands for an rpc name (a service or one of its aliases). */
export function rpcSubject(mesh: string, name: string): string {
  return `${mesh}.rpc.${name}`;
}

/** Core-NATS subject of requests for an rpc name (`requests: "core"`). */
export function requestSubject(mesh: string, name: string): string {
  return `${mesh}.req.${name}`;
}

/** The rpc name of a core request subject. */
export function nameOfRequestSubject(mesh: string, subject: string): string {
  return subject.slice(mesh.length + 5);
}

/** Queue group the instances of a service take core requests in (one per service). */
export function requestQueueGroup(service: string): string {
  return `svc-${encodeName(service)}`;
}

/** Subject of an event. */
export function eventSubject(mesh: string, topic: string): string {
  return `${mesh}.evt.${topic}`;
}

/** Subjects the events stream captures. */
export function eventsWildcard(mesh: string): string {
  return `${mesh}.evt.>`;
}

/** The event topic of a subject from the events stream. */
export function topicOfSubject(mesh: string, subject: string): string {
  return subject.slice(mesh.length + 5);
}

/** Core-NATS subject of a response address. */
export function replySubject(mesh: string, address: string): string {
  return `${mesh}.reply.${address}`;
}

/**
 * Core-NATS subject on which instances of a service announce the union of its event patterns,
 * so that every instance filters the shared events consumer with the same patterns.
 */
export function bindingsSubject(mesh: string, service: string): string {
  return `${mesh}.ctl.evb.${service}`;
}

/** Dead-letter subject of a service. */
export function deadLetterSubject(mesh: string, service: string): string {
  return `${mesh}.dl.${service}`;
}

/** Subjects the dead-letter stream captures. */
export function deadLetterWildcard(mesh: string): string {
  return `${mesh}.dl.>`;
}

/**
 * Encodes a name for use in a stream or consumer name (which may not hold `.`, `*`, `>`,
 * slashes, whitespace or control characters): every character outside `[A-Za-z0-9_]` becomes
 * `~` and its code point in hex, then `~`. Injective, so two names never share a stream.
 */
export function encodeName(value: string): string {
  let out = "";
  for (const ch of value) {
    out += /[A-Za-z0-9_]/.test(ch) ? ch : `~${(ch.codePointAt(0) ?? 0).toString(16)}~`;
  }
  return out;
}

/** Stream holding a service's requests and commands. */
export function serviceStreamName(mesh: string, service: string): string {
  return `NUROPB-${encodeName(mesh)}-SQ-${encodeName(service)}`;
}

/** Stream holding the mesh's events. */
export function eventsStreamName(mesh: string): string {
  return `NUROPB-${encodeName(mesh)}-EVENTS`;
}

/** Stream holding the mesh's dead letters. */
export function deadLetterStreamName(mesh: string): string {
  return `NUROPB-${encodeName(mesh)}-DL`;
}

/** Durable consumer of a service stream (one per stream: the instances compete on it). */
export const SERVICE_CONSUMER = "nuropb";

/** Durable consumer a service reads the events stream with. */
export function eventsConsumerName(service: string): string {
  return `svc-${encodeName(service)}`;
}

/** What the reply subject of a JetStream delivery tells. */
export interface AckInfo {
  readonly stream: string;
  readonly consumer: string;
  /** How many times this message was delivered, this time included. */
  readonly deliveryCount: number;
  readonly streamSequence: number;
  /** When the stream stored the message, in milliseconds since the epoch. */
  readonly timestampMs: number;
  /** `Nats-Msg-Id` of its dead letter, when not made of the stream and sequence (core requests). */
  readonly deadLetterId?: string;
}

/**
 * Parses a JetStream ack subject: `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>`,
 * or the v2 form with domain and account hash after `$JS.ACK`. Undefined when it is not one.
 */
export function parseAckSubject(subject: string | undefined): AckInfo | undefined {
  if (subject === undefined || !subject.startsWith("$JS.ACK.")) return undefined;
  const t = subject.split(".");
  let i: number;
  if (t.length === 9) i = 2;
  else if (t.length >= 11) i = 4;
  else return undefined;
  const deliveryCount = Number(t[i + 2]);
  const streamSequence = Number(t[i + 3]);
  const ns = t[i + 5] ?? "";
  if (!Number.isFinite(deliveryCount) || !Number.isFinite(streamSequence) || !/^\d+$/.test(ns)) {
    return undefined;
  }
  return {
    stream: t[i] ?? "",
    consumer: t[i + 1] ?? "",
    deliveryCount,
    streamSequence,
    timestampMs: Number(BigInt(ns) / 1_000_000n),
  };
}
