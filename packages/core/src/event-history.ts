import {
  NuropbMessageError,
  NuropbTransportError,
  assertTopicPattern,
  decodeFrame,
  eventLogOf,
  topicMatches,
} from "@nuropb/protocol";
import type {
  Context,
  EventLogEntry,
  EventLogStart,
  EventPayload,
  Frame,
  Logger,
  Transport,
  TransportEventLog,
} from "@nuropb/protocol";
import { withoutKeys } from "./options.ts";
import { DEFAULT_CONTEXT_TOKEN_KEY } from "./service-definition.ts";

/** Entries a {@link MeshParticipant.queryEvents} page holds when no `limit` is given. */
export const DEFAULT_EVENT_PAGE_LIMIT = 100;
/** The largest `limit` {@link MeshParticipant.queryEvents} accepts. */
export const MAX_EVENT_PAGE_LIMIT = 1000;

/**
 * The mesh has no event log: the transport does not offer one, or it was never set up
 * (`nuropb mesh setup --event-log-max-age …`, or `transport.eventLog.setup()`). The history API
 * (`queryEvents`, `subscribeEvents`, `publishEvent(…, { persisted: true })`) rejects with it.
 */
export class NuropbEventLogUnavailableError extends NuropbTransportError {
  static override readonly wireName: string = "NuropbEventLogUnavailableError";
}

/**
 * Parts of context key names taken for credentials (case, `_` and `-` ignored): such keys are
 * never stored by a persisted publish nor handed out by the history API, whoever published them.
 */
export const CREDENTIAL_KEY_PARTS: readonly string[] = [
  "authorization",
  "token",
  "password",
  "passwd",
  "secret",
  "apikey",
  "cookie",
  "credential",
  "privatekey",
];

/** Whether a context key names a credential (see {@link CREDENTIAL_KEY_PARTS}). */
function isCredentialKey(key: string): boolean {
  const k = key.toLowerCase().replace(/[-_]/g, "");
  return CREDENTIAL_KEY_PARTS.some((part) => k.includes(part));
}

/** `context` without its credential-like keys (the same object when it has none). */
export function withoutCredentials(context: Context): Context {
  const keys = Object.keys(context).filter(isCredentialKey);
  return keys.length === 0 ? context : withoutKeys(context, keys);
}

/** A past event, as {@link MeshParticipant.queryEvents} and `subscribeEvents` return it. */
export interface StoredEvent {
  readonly topic: string;
  /** The event payload, decoded. */
  readonly event: unknown;
  /** Instance or service names the event was meant for, or null. */
  readonly target: readonly string[] | null;
  /**
   * The publisher's context without credentials: `Authorization` and every credential-like key
   * ({@link CREDENTIAL_KEY_PARTS}: `sessionToken`, `apiKey`, `db_password`, …), the reader's
   * method token keys and secret context keys, and the query's `secretContextKeys` are left out.
   */
  readonly context: Context;
  readonly traceId: string | null;
  readonly correlationId: string;
  /** When the log stored it, in ms since the epoch. */
  readonly timestamp: number;
  /** Where it sits in the log: opaque; pass it as `after` / `{ position }` to resume after it. */
  readonly position: string;
}

/** Options of {@link MeshParticipant.queryEvents}. */
export interface QueryEventsOptions {
  /** AMQP topic patterns (`orders.*`, `orders.#`); an event matching any of them is returned. */
  readonly topics: readonly string[];
  /** Only events stored at or after this time (ms since the epoch, or a Date). */
  readonly since?: number | Date;
  /** Only events stored before this time (ms since the epoch, or a Date). */
  readonly until?: number | Date;
  /** The `cursor` of the previous page (or any event's `position`): the page starts after it. */
  readonly after?: string;
  /**
   * Most events in the page, 1 to {@link MAX_EVENT_PAGE_LIMIT} (1000).
   * @defaultValue 100
   */
  readonly limit?: number;
  /** Further context keys to leave out of the returned contexts. @defaultValue [] */
  readonly secretContextKeys?: readonly string[];
  readonly signal?: AbortSignal;
}

/** One page of {@link MeshParticipant.queryEvents}. */
export interface EventPage {
  /** The events, oldest first. */
  readonly events: readonly StoredEvent[];
  /**
   * Pass as `after` for the next page; undefined when no stored event follows this page. A page
   * can be short, even empty, with a cursor: each call reads a bounded part of the log, so a
   * rare topic over a long log comes in several pages.
   */
  readonly cursor: string | undefined;
}

/** Where {@link MeshParticipant.subscribeEvents} starts. */
export type EventReplayStart =
  /** Only events stored from now on. */
  | "now"
  /** Stored events from this time (ms since the epoch, or a Date), then live ones. */
  | { readonly time: number | Date }
  /** Stored events after this position (the last one processed), then live ones. */
  | { readonly position: string };

/** Options of {@link MeshParticipant.subscribeEvents}. */
export interface SubscribeEventsOptions {
  /** AMQP topic patterns. */
  readonly topics: readonly string[];
  readonly from: EventReplayStart;
  /** Further context keys to leave out of the contexts handed over. @defaultValue [] */
  readonly secretContextKeys?: readonly string[];
}

/**
 * Gets each event in log order; the next one waits until it settles. Store `event.position`
 * once it is processed to resume there after a restart.
 */
export type StoredEventHandler = (event: StoredEvent) => void | Promise<void>;

/** A running {@link MeshParticipant.subscribeEvents}. */
export interface EventSubscription extends AsyncDisposable {
  /** Stops reading; resolves once the handler has returned. Idempotent. */
  stop(): Promise<void>;
  /**
   * Settles when the subscription has ended: with undefined after `stop()` (or the participant's
   * disconnect), with the error when reading failed or the handler threw. Never rejects.
   */
  ended(): Promise<Error | undefined>;
  /** The position of the last event the handler finished, or undefined before the first. */
  readonly lastPosition: string | undefined;
}

/** What a participant's history needs (internal). */
export interface EventHistoryParts {
  readonly transport: Transport;
  /** Context keys always left out of what is read: the participant's token and secret keys. */
  readonly secretKeys: readonly string[];
  /** Throws unless the participant is connected. */
  readonly assertOpen: () => void;
  readonly log: Logger;
}

/** The history side of a participant: queries, subscriptions (internal). */
export class EventHistory {
  readonly #p: EventHistoryParts;
  readonly #subscriptions = new Set<Subscription>();

  constructor(parts: EventHistoryParts) {
    this.#p = parts;
  }

  /** See {@link MeshParticipant.queryEvents}. */
  async queryEvents(options: QueryEventsOptions): Promise<EventPage> {
    const o = checkQuery(options);
    this.#p.assertOpen();
    const log = await availableLog(this.#p.transport);
    if (o.after !== undefined) assertPositionOf(log, o.after, "options.after");
    const secretKeys = this.#secretKeys(o.secretContextKeys);
    const from: EventLogStart =
      o.after !== undefined
        ? { after: o.after }
        : o.since !== undefined
          ? { time: o.since }
          : "start";
    const events: StoredEvent[] = [];
    let start = from;
    let lastPosition: string | undefined;
    // A page of the log can hold entries core cannot read (or the transport filters coarsely):
    // read on until the page is full or the log has no more.
    for (;;) {
      const requested = o.limit - events.length;
      const page = await log.read({
        from: start,
        topics: o.topics,
        limit: requested,
        ...(o.until === undefined ? {} : { until: o.until }),
        ...(o.signal === undefined ? {} : { signal: o.signal }),
      });
      for (const entry of page.entries) {
        lastPosition = entry.position;
        // With both `after` and `since`, the log starts after the cursor: `since` still holds.
        if (o.since !== undefined && entry.timestamp < o.since) continue;
        const event = this.#toStoredEvent(entry, o.topics, secretKeys);
        if (event !== undefined) events.push(event);
      }
      if (page.scanned !== undefined) lastPosition = page.scanned;
      if (!page.more || lastPosition === undefined) {
        return { events, cursor: undefined };
      }
      // A short page with more: the log's scan budget ran out. Hand back what there is (maybe
      // nothing) with a cursor past what was scanned, so that each call stays bounded.
      if (events.length >= o.limit || page.entries.length < requested) {
        return { events, cursor: lastPosition };
      }
      start = { after: lastPosition };
    }
  }

  /** See {@link MeshParticipant.subscribeEvents}. */
  async subscribeEvents(
    options: SubscribeEventsOptions,
    handler: StoredEventHandler,
  ): Promise<EventSubscription> {
    const o = checkSubscribe(options);
    if (typeof handler !== "function") throw new TypeError("handler must be a function");
    this.#p.assertOpen();
    const log = await availableLog(this.#p.transport);
    if (typeof o.from === "object" && "position" in o.from) {
      assertPositionOf(log, o.from.position, "options.from.position");
    }
    const secretKeys = this.#secretKeys(o.secretContextKeys);
    // "now" is fixed before this resolves: what is published once it has resolved is seen.
    const from: EventLogStart =
      o.from === "now"
        ? await log.head()
        : "time" in o.from
          ? { time: o.from.time }
          : { after: o.from.position };
    const subscription = new Subscription(
      log,
      from,
      o.topics,
      (entry) => this.#toStoredEvent(entry, o.topics, secretKeys),
      handler,
      () => this.#subscriptions.delete(subscription),
    );
    this.#subscriptions.add(subscription);
    subscription.start();
    return subscription;
  }

  /** Stops every subscription (the participant is disconnecting). */
  async stopAll(): Promise<void> {
    await Promise.all([...this.#subscriptions].map((s) => s.stop()));
  }

  #secretKeys(extra: readonly string[]): readonly string[] {
    return [...new Set([DEFAULT_CONTEXT_TOKEN_KEY, ...this.#p.secretKeys, ...extra])];
  }

  /** The entry as a StoredEvent; undefined (logged) when it is not a readable event. */
  #toStoredEvent(
    entry: EventLogEntry,
    topics: readonly string[],
    secretKeys: readonly string[],
  ): StoredEvent | undefined {
    if (!topics.some((p) => topicMatches(p, entry.topic))) return undefined;
    let payload: EventPayload;
    let traceId: string | null;
    let correlationId: string;
    try {
      const decoded = decodeFrame(entry.frame);
      if (decoded.type !== "event") {
        throw new NuropbMessageError(`a ${decoded.type} message is not an event`);
      }
      payload = decoded.payload as EventPayload;
      traceId = decoded.traceId;
      correlationId = decoded.correlationId;
    } catch (err) {
      this.#p.log.warn("skipping an unreadable entry of the event log", {
        topic: entry.topic,
        position: entry.position,
        error: err as Error,
      });
      return undefined;
    }
    return {
      topic: entry.topic,
      event: payload.event,
      target: payload.target,
      context: withoutCredentials(withoutKeys(payload.context, secretKeys)),
      traceId,
      correlationId,
      timestamp: entry.timestamp,
      position: entry.position,
    };
  }
}

/** A running follow of the log feeding one handler. */
class Subscription implements EventSubscription {
  readonly #log: TransportEventLog;
  readonly #from: EventLogStart;
  readonly #topics: readonly string[];
  readonly #convert: (entry: EventLogEntry) => StoredEvent | undefined;
  readonly #handler: StoredEventHandler;
  readonly #onEnd: () => void;
  readonly #abort = new AbortController();
  #run: Promise<Error | undefined> = Promise.resolve(undefined);
  lastPosition: string | undefined;

  constructor(
    log: TransportEventLog,
    from: EventLogStart,
    topics: readonly string[],
    convert: (entry: EventLogEntry) => StoredEvent | undefined,
    handler: StoredEventHandler,
    onEnd: () => void,
  ) {
    this.#log = log;
    this.#from = from;
    this.#topics = topics;
    this.#convert = convert;
    this.#handler = handler;
    this.#onEnd = onEnd;
  }

  start(): void {
    this.#run = this.#follow().finally(this.#onEnd);
  }

  async #follow(): Promise<Error | undefined> {
    const signal = this.#abort.signal;
    try {
      for await (const entry of this.#log.follow({
        from: this.#from,
        topics: this.#topics,
        signal,
      })) {
        if (signal.aborted) break;
        const event = this.#convert(entry);
        if (event !== undefined) await this.#handler(event);
        this.lastPosition = entry.position;
        if (signal.aborted) break;
      }
      return undefined;
    } catch (err) {
      if (signal.aborted) return undefined;
      return err instanceof Error ? err : new Error(String(err));
    } finally {
      this.#abort.abort();
    }
  }

  async stop(): Promise<void> {
    this.#abort.abort();
    await this.#run;
  }

  ended(): Promise<Error | undefined> {
    return this.#run;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}

/**
 * The transport's log, once it says it is set up.
 * @throws NuropbEventLogUnavailableError when it has none.
 */
async function availableLog(transport: Transport): Promise<TransportEventLog> {
  const log = eventLogOf(transport);
  if (log === undefined) {
    throw new NuropbEventLogUnavailableError(
      `the ${transport.kind} transport offers no event log: event history is not available`,
    );
  }
  if (!(await log.available())) throw notSetUp(transport);
  return log;
}

/** @throws TypeError unless `position` is one of this log's (a stale or foreign cursor) */
function assertPositionOf(log: TransportEventLog, position: string, what: string): void {
  if (!log.isPosition(position)) {
    throw new TypeError(
      `${what} is not a position of this mesh's event log: ${JSON.stringify(position)}`,
    );
  }
}

function notSetUp(transport: Transport): NuropbEventLogUnavailableError {
  return new NuropbEventLogUnavailableError(
    `the event log of mesh '${transport.mesh}' is not set up: run \`nuropb mesh setup --event-log-max-age <age> --event-log-max-bytes <size>\` (or transport.eventLog.setup())`,
  );
}

/**
 * Appends an event frame to the log (a persisted publish): resolves once the log holds it.
 * @throws NuropbEventLogUnavailableError when the mesh has no log.
 */
export async function appendToLog(
  transport: Transport,
  topic: string,
  frame: Frame,
): Promise<void> {
  const log = eventLogOf(transport);
  if (log === undefined) {
    throw new NuropbEventLogUnavailableError(
      `the ${transport.kind} transport offers no event log: an event cannot be persisted`,
    );
  }
  try {
    await log.append(topic, frame);
  } catch (err) {
    // Ask only on failure, so a persisted publish costs one round trip.
    const available = await log.available().catch(() => true);
    if (!available) throw Object.assign(notSetUp(transport), { cause: err });
    throw err;
  }
}

/** A time given as ms since the epoch or a Date. @throws TypeError */
function checkTime(value: unknown, what: string): number | undefined {
  if (value === undefined) return undefined;
  const ms = value instanceof Date ? value.getTime() : value;
  if (typeof ms !== "number" || !Number.isFinite(ms)) {
    throw new TypeError(
      `${what} must be a Date or a time in ms since the epoch, got ${String(value)}`,
    );
  }
  return ms;
}

function checkTopics(value: unknown, what: string): readonly string[] {
  if (!Array.isArray(value) || value.length === 0) {
    throw new TypeError(`${what} must be a non-empty array of topic patterns`);
  }
  for (const t of value) {
    try {
      assertTopicPattern(t as string);
    } catch (err) {
      throw new TypeError(`${what}: ${(err as Error).message} (got ${JSON.stringify(t)})`);
    }
  }
  return [...(value as string[])];
}

function checkKeys(value: unknown, what: string): readonly string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every((k) => typeof k === "string" && k !== "")) {
    throw new TypeError(`${what} must be an array of non-empty strings`);
  }
  return value as string[];
}

function checkPosition(value: unknown, what: string): string {
  if (typeof value !== "string" || value === "") {
    throw new TypeError(`${what} must be a position (a non-empty string) from an earlier event`);
  }
  return value;
}

interface Query {
  readonly topics: readonly string[];
  readonly since: number | undefined;
  readonly until: number | undefined;
  readonly after: string | undefined;
  readonly limit: number;
  readonly secretContextKeys: readonly string[];
  readonly signal: AbortSignal | undefined;
}

function checkQuery(options: QueryEventsOptions): Query {
  if (typeof options !== "object" || options === null) {
    throw new TypeError("queryEvents needs an options object with topics");
  }
  const limit = options.limit ?? DEFAULT_EVENT_PAGE_LIMIT;
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_EVENT_PAGE_LIMIT) {
    throw new RangeError(
      `options.limit must be an integer from 1 to ${MAX_EVENT_PAGE_LIMIT}, got ${String(options.limit)}`,
    );
  }
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) {
    throw new TypeError("options.signal must be an AbortSignal");
  }
  const since = checkTime(options.since, "options.since");
  const until = checkTime(options.until, "options.until");
  if (since !== undefined && until !== undefined && until < since) {
    throw new RangeError("options.until must not be before options.since");
  }
  return {
    topics: checkTopics(options.topics, "options.topics"),
    since,
    until,
    after: options.after === undefined ? undefined : checkPosition(options.after, "options.after"),
    limit,
    secretContextKeys: checkKeys(options.secretContextKeys, "options.secretContextKeys"),
    signal: options.signal,
  };
}

interface Subscribe {
  readonly topics: readonly string[];
  readonly from: "now" | { readonly time: number } | { readonly position: string };
  readonly secretContextKeys: readonly string[];
}

function checkSubscribe(options: SubscribeEventsOptions): Subscribe {
  if (typeof options !== "object" || options === null) {
    throw new TypeError("subscribeEvents needs an options object with topics and from");
  }
  const topics = checkTopics(options.topics, "options.topics");
  const f = options.from as unknown;
  let from: Subscribe["from"];
  if (f === "now") from = "now";
  else if (typeof f === "object" && f !== null && "position" in f) {
    from = {
      position: checkPosition((f as { position: unknown }).position, "options.from.position"),
    };
  } else if (typeof f === "object" && f !== null && "time" in f) {
    const time = checkTime((f as { time: unknown }).time, "options.from.time");
    if (time === undefined) throw new TypeError("options.from.time must be given");
    from = { time };
  } else {
    throw new TypeError(
      `options.from must be "now", { time } or { position }, got ${JSON.stringify(f) ?? String(f)}`,
    );
  }
  return {
    topics,
    from,
    secretContextKeys: checkKeys(options.secretContextKeys, "options.secretContextKeys"),
  };
}
