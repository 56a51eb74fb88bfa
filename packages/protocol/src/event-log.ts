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
  /** True when more stored entries follow the last one of this page (before `until`). */
  readonly more: boolean;
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
  for (const name of ["setup", "available", "append", "read", "follow"] as const) {
    if (typeof log[name] !== "function") {
      throw new TypeError(`transport.eventLog must implement TransportEventLog (no ${name}())`);
    }
  }
  return value as TransportEventLog;
}
