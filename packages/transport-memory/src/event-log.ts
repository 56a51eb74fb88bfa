import { NuropbTransportError, topicMatches } from "@nuropb/protocol";
import {
  assertEventLogFollowOptions,
  assertEventLogReadOptions,
  assertEventLogRetention,
  assertEventLogTopic,
} from "@nuropb/protocol/transport-kit";
import type {
  EventLogEntry,
  EventLogFollowOptions,
  EventLogPage,
  EventLogPosition,
  EventLogReadOptions,
  EventLogRetention,
  EventLogStart,
  Frame,
  TransportEventLog,
} from "@nuropb/protocol";
import { copyFrame } from "./frames.ts";

/** Most entries one `read` page returns on the memory hub; a larger `limit` is capped to it. */
export const MEMORY_EVENT_LOG_MAX_PAGE = 10_000;

/**
 * Most entries one `read` looks at on the memory hub: a page ends there (short, maybe empty,
 * with `more` and `scanned`), as the brokers' logs bound a read.
 */
export const MEMORY_EVENT_LOG_SCAN_BUDGET = 10_000;

/** One stored entry (internal). */
interface StoredEntry {
  readonly seq: number;
  readonly timestamp: number;
  readonly topic: string;
  readonly frame: Frame;
  /** What the entry counts against `maxBytes`: body, topic and header bytes. */
  readonly bytes: number;
}

/**
 * The event log of one mesh of a memory hub: entries in one total order (`seq`), dropped from the
 * front by age and size. Exists once `setup()` was called for the mesh (internal).
 */
export class MemoryEventStore {
  #retention: EventLogRetention;
  /** Stored from `#head` on; dropped entries are cut off by moving the head. */
  #entries: (StoredEntry | undefined)[] = [];
  #head = 0;
  #bytes = 0;
  #nextSeq = 1;
  #lastTimestamp = 0;
  readonly #waiters = new Set<() => void>();

  constructor(retention: EventLogRetention) {
    this.#retention = retention;
  }

  set retention(value: EventLogRetention) {
    this.#retention = value;
    this.#trim(Date.now());
  }

  /** Stores a (private) copy of an event frame; returns where it sits. */
  append(topic: string, frame: Frame): EventLogPosition {
    const now = Date.now();
    // Timestamps never go backwards, so reading by time agrees with reading by position.
    const timestamp = Math.max(now, this.#lastTimestamp);
    this.#lastTimestamp = timestamp;
    const entry: StoredEntry = {
      seq: this.#nextSeq++,
      timestamp,
      topic,
      frame,
      bytes: entryBytes(topic, frame),
    };
    this.#entries.push(entry);
    this.#bytes += entry.bytes;
    this.#trim(now);
    for (const wake of [...this.#waiters]) wake();
    return { position: String(entry.seq), timestamp };
  }

  /** The sequence number reading from `start` begins at. */
  startSeq(start: EventLogStart): number {
    this.#trim(Date.now());
    if (start === "start") return this.#first()?.seq ?? this.#nextSeq;
    if (start === "end") return this.#nextSeq;
    if ("after" in start) return parsePosition(start.after) + 1;
    for (let i = this.#head; i < this.#entries.length; i++) {
      const e = this.#entries[i] as StoredEntry;
      if (e.timestamp >= start.time) return e.seq;
    }
    return this.#nextSeq;
  }

  /** Where the log ends now: after the last entry stored, or the start of an empty log. */
  head(): EventLogStart {
    return this.#nextSeq === 1 ? "start" : { after: String(this.#nextSeq - 1) };
  }

  /** Up to `limit` entries from `seq` on that match `topics` and were stored before `until`. */
  page(
    seq: number,
    limit: number,
    topics: readonly string[] | undefined,
    until: number | undefined,
  ): { entries: EventLogEntry[]; more: boolean; next: number } {
    this.#trim(Date.now());
    const entries: EventLogEntry[] = [];
    const first = this.#first()?.seq ?? this.#nextSeq;
    let i = this.#head + Math.max(0, seq - first);
    for (let scanned = 0; i < this.#entries.length; i++, scanned++) {
      const e = this.#entries[i] as StoredEntry;
      if (scanned === MEMORY_EVENT_LOG_SCAN_BUDGET) return { entries, more: true, next: e.seq };
      if (until !== undefined && e.timestamp >= until) {
        return { entries, more: false, next: e.seq };
      }
      if (topics !== undefined && !topics.some((p) => topicMatches(p, e.topic))) continue;
      if (entries.length === limit) return { entries, more: true, next: e.seq };
      entries.push({
        position: String(e.seq),
        timestamp: e.timestamp,
        topic: e.topic,
        frame: copyFrame(e.frame),
      });
    }
    return { entries, more: false, next: this.#nextSeq };
  }

  /** Resolves at the next append, or when `signal` aborts. */
  waitForAppend(signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve) => {
      const wake = (): void => {
        this.#waiters.delete(wake);
        signal.removeEventListener("abort", wake);
        resolve();
      };
      this.#waiters.add(wake);
      signal.addEventListener("abort", wake, { once: true });
    });
  }

  #first(): StoredEntry | undefined {
    return this.#entries[this.#head];
  }

  /** Drops the oldest entries beyond the age and size limits; the newest entry always stays. */
  #trim(now: number): void {
    const oldest = now - this.#retention.maxAgeMs;
    while (this.#entries.length - this.#head > 0) {
      const e = this.#entries[this.#head] as StoredEntry;
      const tooBig = this.#bytes > this.#retention.maxBytes && e.seq !== this.#nextSeq - 1;
      if (!tooBig && e.timestamp >= oldest) break;
      this.#entries[this.#head++] = undefined;
      this.#bytes -= e.bytes;
    }
    // Compact once the dropped part is as long as the kept part: amortised O(1) per entry.
    if (this.#head > 0 && this.#head >= this.#entries.length - this.#head) {
      this.#entries = this.#entries.slice(this.#head);
      this.#head = 0;
    }
  }
}

/** The event stores of the hub's meshes, by mesh (created by `setup()`). */
const stores = new WeakMap<object, MemoryEventStore>();

/**
 * Stores an event frame the transport sends in its mesh's log, when the log is set up (the
 * transport's `send` calls this for every event); the position, or undefined without a log.
 */
export function appendToEventLog(
  mesh: object,
  topic: string,
  frame: Frame,
): EventLogPosition | undefined {
  return stores.get(mesh)?.append(topic, frame);
}

/** What a memory transport gives its event log (internal). */
export interface MemoryEventLogHost {
  /** The mesh (the hub's vhost object) whose log this is. */
  readonly mesh: object;
  /** Throws unless the transport is usable (open; waits out a simulated outage). */
  readonly whenUsable: () => Promise<void>;
  /** The transport's checks and private copy of an outgoing frame. */
  readonly copyFrame: (frame: Frame) => Frame;
  /** Routes an event frame to the bound queues (as `send` does after storing it). */
  readonly route: (topic: string, frame: Frame) => void;
  /** Settles when the transport has closed. */
  readonly closed: () => Promise<unknown>;
}

/** The `eventLog` of one memory transport: the mesh's store seen through the transport. */
export class MemoryEventLog implements TransportEventLog {
  readonly #host: MemoryEventLogHost;
  #closing: AbortSignal | undefined;

  constructor(host: MemoryEventLogHost) {
    this.#host = host;
  }

  async setup(retention: EventLogRetention): Promise<void> {
    assertEventLogRetention(retention);
    await this.#host.whenUsable();
    const copy = { maxAgeMs: retention.maxAgeMs, maxBytes: retention.maxBytes };
    const store = stores.get(this.#host.mesh);
    if (store === undefined) stores.set(this.#host.mesh, new MemoryEventStore(copy));
    else store.retention = copy;
  }

  async available(): Promise<boolean> {
    await this.#host.whenUsable();
    return stores.has(this.#host.mesh);
  }

  async append(topic: string, frame: Frame): Promise<EventLogPosition> {
    assertEventLogTopic(topic);
    const copy = this.#host.copyFrame(frame);
    await this.#host.whenUsable();
    const position = appendToEventLog(this.#host.mesh, topic, copy);
    if (position === undefined) throw notSetUp();
    this.#host.route(topic, copy);
    return position;
  }

  isPosition(position: string): boolean {
    return isPosition(position);
  }

  async head(): Promise<EventLogStart> {
    await this.#host.whenUsable();
    return this.#store().head();
  }

  async read(options: EventLogReadOptions): Promise<EventLogPage> {
    assertEventLogReadOptions(options, isPosition);
    options.signal?.throwIfAborted();
    await this.#host.whenUsable();
    const store = this.#store();
    const limit = Math.min(options.limit, MEMORY_EVENT_LOG_MAX_PAGE);
    const { entries, more, next } = store.page(
      store.startSeq(options.from),
      limit,
      options.topics,
      options.until,
    );
    return more && next > 1 ? { entries, more, scanned: String(next - 1) } : { entries, more };
  }

  async *follow(options: EventLogFollowOptions): AsyncIterable<EventLogEntry> {
    assertEventLogFollowOptions(options, isPosition);
    await this.#host.whenUsable();
    const store = this.#store();
    const closing = this.#closingSignal();
    const stop =
      options.signal === undefined ? closing : AbortSignal.any([options.signal, closing]);
    let seq = store.startSeq(options.from);
    while (!stop.aborted) {
      const { entries, more, next } = store.page(seq, 256, options.topics, undefined);
      seq = next;
      for (const entry of entries) {
        if (stop.aborted) return;
        yield entry;
      }
      if (entries.length === 0 && !more && !stop.aborted) await store.waitForAppend(stop);
    }
  }

  /** Aborts once the transport has closed. */
  #closingSignal(): AbortSignal {
    if (this.#closing === undefined) {
      const controller = new AbortController();
      this.#closing = controller.signal;
      void this.#host.closed().then(() => controller.abort());
    }
    return this.#closing;
  }

  #store(): MemoryEventStore {
    const store = stores.get(this.#host.mesh);
    if (store === undefined) throw notSetUp();
    return store;
  }
}

function notSetUp(): NuropbTransportError {
  return new NuropbTransportError(
    "the event log is not set up for this mesh: call transport.eventLog.setup() (nuropb mesh setup) first",
  );
}

/** Bytes an entry counts for: its body, topic and headers (names and values). */
function entryBytes(topic: string, frame: Frame): number {
  let bytes = frame.body.byteLength + Buffer.byteLength(topic);
  for (const [k, v] of Object.entries(frame.headers)) {
    bytes += Buffer.byteLength(k) + (typeof v === "string" ? Buffer.byteLength(v) : 8);
  }
  return bytes;
}

const POSITION_RE = /^[1-9][0-9]{0,15}$/;

/** Whether `position` is one this log hands out (a decimal sequence number). */
function isPosition(position: string): boolean {
  return POSITION_RE.test(position);
}

/** A position this log handed out (checked by the option checks already). */
function parsePosition(position: string): number {
  return Number(position);
}
