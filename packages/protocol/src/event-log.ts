import { assertTopicPattern } from "./topic.ts";
import type { Frame } from "./transport.ts";

/**
 * Optional transport capability: the mesh's event log. When the log is set up, every event frame
 * sent to an `event` destination is also stored in it, in one total order per mesh; participants
 * read it back by position or time and follow it live. A mesh without a log behaves as before.
 *
 * A transport offers it as `transport.eventLog`; core checks for it and answers the history API
 * with a typed error when it is missing or not set up.
 */
export interface TransportEventLog {
  /**
   * Creates the log, or updates its retention, for this mesh. Idempotent. Used by mesh set-up
   * (`configureMesh`, `nuropb mesh setup`), never implicitly by a service.
   */
  setup(retention: EventLogRetention): Promise<void>;
  /** True when the log exists for this mesh. */
  available(): Promise<boolean>;
  /**
   * Sends an event frame to `topic` like `send({ kind: "event", topic }, frame)` and resolves once
   * the log holds it durably.
   * @throws NuropbTransportError (with a message saying the log is not set up) when there is no log.
   */
  append(topic: string, frame: Frame): Promise<EventLogPosition>;
  /**
   * Where the log ends now: a start from which `read` and `follow` give exactly the entries
   * stored after this resolves (`{ after }` the last stored entry or a marker, or `"start"` when
   * the log is empty). `follow({ from: "end" })` only fixes its start once it is iterated; a
   * caller that must not miss what it appends next (a subscription "from now") resolves the end
   * with `head()` first.
   */
  head(): Promise<EventLogStart>;
  /** Whether `position` is one this log hands out (checked before any I/O). */
  isPosition(position: string): boolean;
  /** One page of stored entries, in log order. */
  read(options: EventLogReadOptions): Promise<EventLogPage>;
  /**
   * Stored entries from `options.from`, then live ones as they are stored, in log order, without a
   * gap or a duplicate at the hand-over; ends when `signal` aborts or the transport closes.
   */
  follow(options: EventLogFollowOptions): AsyncIterable<EventLogEntry>;
}

/** How long the log keeps events; whichever limit is reached first drops the oldest. */
export interface EventLogRetention {
  /** Oldest entry kept, in milliseconds. */
  readonly maxAgeMs: number;
  /** Largest size of the log in bytes. */
  readonly maxBytes: number;
}

/** Where an entry sits in the log. `position` is opaque; compare positions only through the log. */
export interface EventLogPosition {
  /** Opaque, transport-defined, totally ordered within one log; safe to store and resume from. */
  readonly position: string;
  /** When the log stored the entry, in milliseconds since the epoch. */
  readonly timestamp: number;
}

/** A stored event frame. */
export interface EventLogEntry extends EventLogPosition {
  readonly topic: string;
  readonly frame: Frame;
}

/** Where reading starts. `after` resumes just past a position returned earlier. */
export type EventLogStart =
  "start" | "end" | { readonly time: number } | { readonly after: string };

export interface EventLogReadOptions {
  readonly from: EventLogStart;
  /** Only entries stored before this time (ms since the epoch). */
  readonly until?: number;
  /** AMQP topic patterns; a transport may filter on the broker, core filters again. */
  readonly topics?: readonly string[];
  /** Most entries in the page (the transport may cap it and says so in its README). */
  readonly limit: number;
  readonly signal?: AbortSignal;
}

export interface EventLogPage {
  readonly entries: readonly EventLogEntry[];
  /**
   * True when more stored entries may follow this page (before `until`). A page can end short
   * of `limit`, even empty, with `more`: the log scans a bounded number of entries per read
   * (its README says how many), so a query of a rare topic over a long log goes on in pages.
   */
  readonly more: boolean;
  /**
   * With `more`: the position of the last entry the read looked at (returned or skipped), where
   * the next page starts (`{ after: scanned }`). Absent: after the last entry of the page.
   */
  readonly scanned?: string;
}

export interface EventLogFollowOptions {
  readonly from: EventLogStart;
  readonly topics?: readonly string[];
  readonly signal?: AbortSignal;
}

/** The transport's event log, or undefined when it has none. */
export function eventLogOf(transport: object): TransportEventLog | undefined {
  const value = (transport as { eventLog?: unknown }).eventLog;
  if (value === undefined || value === null) return undefined;
  const log = value as Partial<TransportEventLog>;
  for (const name of [
    "setup",
    "available",
    "append",
    "head",
    "isPosition",
    "read",
    "follow",
  ] as const) {
    if (typeof log[name] !== "function") {
      throw new TypeError(`transport.eventLog must implement TransportEventLog (no ${name}())`);
    }
  }
  return value as TransportEventLog;
}

// Argument checks every event log makes alike (exported from "@nuropb/protocol/transport-kit").

/**
 * Checks a retention: both limits positive safe integers.
 * @throws TypeError naming the bad limit.
 */
export function assertEventLogRetention(retention: EventLogRetention): void {
  if (typeof retention !== "object" || retention === null) {
    throw new TypeError("retention must be an object { maxAgeMs, maxBytes }");
  }
  for (const key of ["maxAgeMs", "maxBytes"] as const) {
    const v = retention[key];
    if (!Number.isSafeInteger(v) || v < 1) {
      throw new TypeError(`retention.${key} must be a positive integer, got ${String(v)}`);
    }
  }
}

/**
 * Checks the topic of an append: non-empty dot-separated words without wildcards.
 * @throws TypeError
 */
export function assertEventLogTopic(topic: string): void {
  if (
    typeof topic !== "string" ||
    topic === "" ||
    topic.split(".").some((w) => w === "" || w === "*" || w === "#")
  ) {
    throw new TypeError(
      `'${String(topic)}' is not an event topic (dot-separated words, no wildcards)`,
    );
  }
}

/**
 * Checks read options; `isPosition` says whether a string is a position of this log.
 * @throws TypeError naming the bad option.
 */
export function assertEventLogReadOptions(
  options: EventLogReadOptions,
  isPosition: (position: string) => boolean,
): void {
  if (typeof options !== "object" || options === null) {
    throw new TypeError("read options must be an object");
  }
  assertStart(options.from, isPosition);
  assertTopics(options.topics);
  if (!Number.isSafeInteger(options.limit) || options.limit < 1) {
    throw new TypeError(`limit must be a positive integer, got ${String(options.limit)}`);
  }
  if (options.until !== undefined && !Number.isFinite(options.until)) {
    throw new TypeError("until must be a time in ms since the epoch");
  }
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) {
    throw new TypeError("signal must be an AbortSignal");
  }
}

/**
 * Checks follow options; `isPosition` says whether a string is a position of this log.
 * @throws TypeError naming the bad option.
 */
export function assertEventLogFollowOptions(
  options: EventLogFollowOptions,
  isPosition: (position: string) => boolean,
): void {
  if (typeof options !== "object" || options === null) {
    throw new TypeError("follow options must be an object");
  }
  assertStart(options.from, isPosition);
  assertTopics(options.topics);
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) {
    throw new TypeError("signal must be an AbortSignal");
  }
}

function assertStart(from: EventLogStart, isPosition: (position: string) => boolean): void {
  if (from === "start" || from === "end") return;
  if (typeof from === "object" && from !== null) {
    if ("after" in from) {
      if (typeof from.after === "string" && isPosition(from.after)) return;
      throw new TypeError(
        `not a position of this event log: ${JSON.stringify(from.after) ?? "undefined"}`,
      );
    }
    if ("time" in from && Number.isFinite(from.time)) return;
  }
  throw new TypeError(
    'from must be "start", "end", { time: <ms since the epoch> } or { after: <position> }',
  );
}

function assertTopics(topics: readonly string[] | undefined): void {
  if (topics === undefined) return;
  if (!Array.isArray(topics)) throw new TypeError("topics must be an array of topic patterns");
  for (const t of topics) assertTopicPattern(t);
}
