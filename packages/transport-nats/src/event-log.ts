import {
  DeliverPolicy,
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  nanos,
  nuid,
  type ConsumerMessages,
  type JetStreamManager,
  type JsMsg,
  type NatsConnection,
  type OrderedConsumerOptions,
  type StreamConfig,
  type StreamInfo,
} from "nats";
import {
  NuropbTransportError,
  topicMatches,
  type EventLogEntry,
  type EventLogFollowOptions,
  type EventLogPage,
  type EventLogPosition,
  type EventLogReadOptions,
  type EventLogRetention,
  type EventLogStart,
  type Frame,
  type Logger,
  type TransportEventLog,
  type TransportLifecycle,
} from "@nuropb/protocol";
import {
  assertEventLogFollowOptions,
  assertEventLogReadOptions,
  assertEventLogRetention,
} from "@nuropb/protocol/transport-kit";
import { decodeFrameHeaders, encodeFrameHeaders } from "./frame-headers.ts";
import {
  eventSubject,
  eventsStreamName,
  eventsWildcard,
  isLiteralSubject,
  parseAckSubject,
  topicOfSubject,
} from "./names.ts";
import { apiErrorCode, JsErr, translateNatsError } from "./nats-errors.ts";

// The event log on NATS (issue #16) is the mesh's events stream `NUROPB-{mesh}-EVENTS` itself,
// turned from interest to limits retention (MaxAge, MaxBytes) by `setup()`. JetStream refuses
// two streams over overlapping subjects, so a second, limits stream over `{mesh}.evt.>` cannot
// exist beside it; a mirror could, but it would copy through a consumer of its own, so an
// event acknowledged by every service before the mirror's consumer had it (the mirror being
// re-created, a restart) would be gone from the interest stream and never reach the log, and
// an append would have to wait for the copy. On a limits stream, the services' durable
// consumers (explicit acks, deliver-new) work as before; messages just stay until the limits
// drop them. The position is the stream sequence, the timestamp the stream's.

/** Most entries one `read` page returns on NATS; a larger `limit` is capped to it. */
export const NATS_EVENT_LOG_MAX_PAGE = 10_000;
/**
 * Most entries one `read` looks at: the page ends there (short, maybe empty) with `more` and
 * `scanned`, so that a query of a rare topic over a long log goes on in pages.
 */
export const NATS_EVENT_LOG_SCAN_BUDGET = 10_000;
/** Longest one `read` may take, in milliseconds. */
const READ_TIMEOUT_MS = 30_000;
/** How long `append` trusts an earlier check that the log exists, in milliseconds. */
const KNOWN_LOG_MS = 10_000;
/** `eventRetentionMs` of a NATS transport by default. */
const DEFAULT_EVENT_RETENTION_MS = 86_400_000;
/** The server refuses a duplicate window longer than the stream's max age. */
const DUPLICATE_WINDOW_MS = 120_000;

/** nats.js's manager has a `direct` API (direct gets) that its exported interface omits. */
type WithDirectGet = JetStreamManager & {
  readonly direct?: {
    getMessage(stream: string, query: { seq: number }): Promise<{ readonly timestamp: string }>;
  };
};

/** What the event log needs from its transport. */
export interface NatsEventLogHost {
  readonly mesh: string;
  readonly logger: Logger;
  /** The open connection and its JetStream manager; throws once the transport is not open. */
  requireOpen(): { nc: NatsConnection; jsm: JetStreamManager };
  /** The transport's lifecycle: whether it is ending, its closed error, when it closed. */
  readonly life: Pick<TransportLifecycle, "ending" | "closedError" | "closed">;
  /**
   * `num_replicas` of the events stream when the log creates it (the transport's `replicas`, as
   * the topology gives it; an existing stream keeps its own). @defaultValue 1
   */
  readonly replicas?: number;
  /**
   * How long the events stream keeps an event no service has acknowledged yet (the transport's
   * `eventRetentionMs`): the log never keeps events for less. @defaultValue 86400000 (1 day)
   */
  readonly eventRetentionMs?: number;
}

/** The event log of one NATS transport (see the comment above). */
export function createNatsEventLog(host: NatsEventLogHost): TransportEventLog {
  return new NatsEventLog(host);
}

class NatsEventLog implements TransportEventLog {
  readonly #host: NatsEventLogHost;
  readonly #stream: string;
  #closing: AbortSignal | undefined;
  /** When append last found the log there, and whether it serves direct gets. */
  #known = { at: 0, direct: false };

  constructor(host: NatsEventLogHost) {
    this.#host = host;
    this.#stream = eventsStreamName(host.mesh);
  }

  async setup(retention: EventLogRetention): Promise<void> {
    assertEventLogRetention(retention);
    const { jsm } = this.#host.requireOpen();
    // The log's limits apply to what services have not acknowledged too (one stream): never
    // keep events for less than services are promised, and say what a byte limit does.
    const minAgeMs = this.#host.eventRetentionMs ?? DEFAULT_EVENT_RETENTION_MS;
    const maxAgeMs = Math.max(retention.maxAgeMs, minAgeMs);
    if (maxAgeMs !== retention.maxAgeMs) {
      this.#host.logger.warn(
        "event log: maxAgeMs is below the transport's eventRetentionMs; the events stream keeps eventRetentionMs, as services may not have acknowledged events yet",
        { maxAgeMs: retention.maxAgeMs, eventRetentionMs: minAgeMs },
      );
    }
    this.#host.logger.warn(
      "event log: maxBytes also bounds what services have not acknowledged yet: once the events stream is full, the oldest events go, read or not",
      { maxBytes: retention.maxBytes },
    );
    const limits = {
      retention: RetentionPolicy.Limits,
      max_age: nanos(maxAgeMs),
      max_bytes: retention.maxBytes,
      duplicate_window: nanos(Math.min(DUPLICATE_WINDOW_MS, maxAgeMs)),
      // append reads the stored time back: a direct get skips the JetStream API's JSON.
      allow_direct: true,
    };
    try {
      for (let attempt = 0; ; attempt++) {
        const info = await this.#info(jsm);
        if (info === undefined) {
          try {
            await jsm.streams.add({
              num_replicas: this.#host.replicas ?? 1,
              name: this.#stream,
              subjects: [eventsWildcard(this.#host.mesh)],
              storage: StorageType.File,
              discard: DiscardPolicy.Old,
              ...limits,
            });
            break;
          } catch (err) {
            // Created meanwhile (by a service, or another set-up): look again.
            if (apiErrorCode(err) !== JsErr.streamNameInUse || attempt > 3) throw err;
            continue;
          }
        }
        if (await this.#toLimits(jsm, info, limits)) break;
      }
    } catch (err) {
      throw err instanceof NuropbTransportError
        ? err
        : translateNatsError(err, "set up the event log", this.#host.life);
    }
    this.#known = { at: 0, direct: false };
    this.#host.logger.info("event log set up", { stream: this.#stream, ...retention, maxAgeMs });
  }

  /**
   * Brings an existing events stream to limits retention with `limits`. A server before 2.10
   * cannot change a stream's retention: an interest stream without consumers holds nothing and
   * is made again; one with consumers (services running) is refused with the way out.
   * @returns false when the stream must be looked at again (it was deleted to be made again).
   */
  async #toLimits(
    jsm: JetStreamManager,
    info: StreamInfo,
    limits: Partial<StreamConfig>,
  ): Promise<boolean> {
    try {
      await jsm.streams.update(this.#stream, { ...info.config, ...limits });
      return true;
    } catch (err) {
      if (info.config.retention === RetentionPolicy.Limits) throw err;
      if (info.state.consumer_count > 0) {
        throw new NuropbTransportError(
          `the events stream ${this.#stream} has interest retention and ${info.state.consumer_count} service consumer(s), and this NATS server cannot change a stream's retention (it needs 2.10 or later): set the event log up before services subscribe to events, or stop them and delete the stream`,
          { cause: err },
        );
      }
      await jsm.streams.delete(this.#stream);
      return false;
    }
  }

  async available(): Promise<boolean> {
    const { jsm } = this.#host.requireOpen();
    const info = await this.#info(jsm);
    return info !== undefined && info.config.retention === RetentionPolicy.Limits;
  }

  async append(topic: string, frame: Frame): Promise<EventLogPosition> {
    if (typeof topic !== "string" || !isLiteralSubject(topic) || /[*#]/.test(topic)) {
      throw new TypeError(`topic must be a dot-separated name without wildcards, got ${topic}`);
    }
    const headers = encodeFrameHeaders(frame);
    const { nc, jsm } = this.#host.requireOpen();
    if (Date.now() - this.#known.at > KNOWN_LOG_MS) {
      const info = await this.#requireLog(jsm);
      this.#known = { at: Date.now(), direct: info.config.allow_direct === true };
    }
    try {
      const ack = await nc.jetstream().publish(eventSubject(this.#host.mesh, topic), frame.body, {
        headers,
        msgID: nuid.next(),
      });
      const direct = (jsm as WithDirectGet).direct;
      const stored =
        this.#known.direct && direct !== undefined
          ? await direct.getMessage(ack.stream, { seq: ack.seq })
          : await jsm.streams.getMessage(ack.stream, { seq: ack.seq });
      return { position: String(ack.seq), timestamp: storedMs(stored.timestamp) };
    } catch (err) {
      if ((err as { code?: unknown }).code === "503") throw notSetUp();
      throw translateNatsError(err, `append event '${topic}'`, this.#host.life);
    }
  }

  isPosition(position: string): boolean {
    try {
      parsePosition(position);
      return true;
    } catch {
      return false;
    }
  }

  async head(): Promise<EventLogStart> {
    const { jsm } = this.#host.requireOpen();
    const info = await this.#requireLog(jsm);
    const last = info.state.last_seq;
    return last > 0 ? { after: String(last) } : "start";
  }

  async read(options: EventLogReadOptions): Promise<EventLogPage> {
    assertEventLogReadOptions(options, (p) => this.isPosition(p));
    options.signal?.throwIfAborted();
    const limit = Math.min(options.limit, NATS_EVENT_LOG_MAX_PAGE);
    const { nc, jsm } = this.#host.requireOpen();
    const info = await this.#requireLog(jsm);
    // What is stored now is the page's horizon: reading stops at it (or at a later entry).
    const horizon = info.state.last_seq;
    const start = await this.#startFor(jsm, options.from, info);
    if (start === undefined) return { entries: [], more: false };
    const deadline = AbortSignal.timeout(READ_TIMEOUT_MS);
    const stop =
      options.signal === undefined ? deadline : AbortSignal.any([options.signal, deadline]);
    // Unfiltered: the read ends at the horizon, a message it must see (a filtered consumer
    // would wait out the deadline when nothing matches); the scan budget bounds it instead.
    const messages = await this.#consume(nc, start);
    const onStop = (): void => messages.stop();
    stop.addEventListener("abort", onStop, { once: true });
    const entries: EventLogEntry[] = [];
    let scanned = 0;
    let lastSeq: number | undefined;
    try {
      for await (const m of messages) {
        const last = m.seq >= horizon || m.info.pending === 0;
        if (scanned === NATS_EVENT_LOG_SCAN_BUDGET && lastSeq !== undefined) {
          return { entries, more: true, scanned: String(lastSeq) };
        }
        const entry = this.#entry(m, options.topics);
        if (entry !== undefined) {
          if (options.until !== undefined && entry.timestamp >= options.until) break;
          if (entries.length === limit) return { entries, more: true };
          entries.push(entry);
        }
        scanned++;
        lastSeq = m.seq;
        if (last) break;
      }
      options.signal?.throwIfAborted();
      if (deadline.aborted) {
        throw new NuropbTransportError(
          `reading the event log took longer than ${READ_TIMEOUT_MS} ms`,
          { retryable: true },
        );
      }
      return { entries, more: false };
    } finally {
      stop.removeEventListener("abort", onStop);
      messages.stop();
    }
  }

  async *follow(options: EventLogFollowOptions): AsyncIterable<EventLogEntry> {
    assertEventLogFollowOptions(options, (p) => this.isPosition(p));
    options.signal?.throwIfAborted();
    const { nc, jsm } = this.#host.requireOpen();
    const info = await this.#requireLog(jsm);
    const start = (await this.#startFor(jsm, options.from, info)) ?? {
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: info.state.last_seq + 1,
    };
    const messages = await this.#consume(nc, start, options.topics);
    const onStop = (): void => messages.stop();
    options.signal?.addEventListener("abort", onStop, { once: true });
    const closing = this.#closingSignal();
    closing.addEventListener("abort", onStop, { once: true });
    const aborted = (): boolean => options.signal?.aborted === true;
    try {
      for await (const m of messages) {
        if (aborted()) return;
        const entry = this.#entry(m, options.topics);
        if (entry !== undefined) yield entry;
        if (aborted()) return;
      }
    } finally {
      options.signal?.removeEventListener("abort", onStop);
      closing.removeEventListener("abort", onStop);
      messages.stop();
    }
    if (!aborted() && !this.#host.life.ending) {
      throw new NuropbTransportError(
        "the event log follow stopped (connection lost?); resume after the last position read",
        { retryable: true },
      );
    }
  }

  /** Aborts once the transport has closed: one listener on `closed()` for all follows. */
  #closingSignal(): AbortSignal {
    if (this.#closing === undefined) {
      const controller = new AbortController();
      this.#closing = controller.signal;
      void this.#host.life.closed().then(
        () => controller.abort(),
        () => controller.abort(),
      );
    }
    return this.#closing;
  }

  /**
   * An ordered consumer of the events stream from `start`, consumed; filtered on the server
   * when `topics` is one pattern a subject can say (NATS before 2.10 takes one filter).
   */
  async #consume(
    nc: NatsConnection,
    start: Partial<OrderedConsumerOptions>,
    topics?: readonly string[],
  ): Promise<ConsumerMessages> {
    const consumer = await nc.jetstream().consumers.get(this.#stream, {
      filterSubjects: filterSubjectOf(this.#host.mesh, topics),
      ...start,
    });
    return consumer.consume({ max_messages: 256 });
  }

  /**
   * Where an ordered consumer starts for `from`; undefined when nothing stored can follow it
   * (`end`, a position at or past the last entry, a time after the last entry's).
   */
  async #startFor(
    jsm: JetStreamManager,
    from: EventLogStart,
    info: StreamInfo,
  ): Promise<Partial<OrderedConsumerOptions> | undefined> {
    const last = info.state.last_seq;
    if (info.state.messages === 0 || from === "end") return undefined;
    // By sequence (nats.js's ordered consumer did not deliver with DeliverPolicy.All).
    if (from === "start") {
      return {
        deliver_policy: DeliverPolicy.StartSequence,
        opt_start_seq: Math.max(1, info.state.first_seq),
      };
    }
    if ("after" in from) {
      const seq = parsePosition(from.after) + 1;
      if (seq > last) return undefined;
      return { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: seq };
    }
    const newest = await jsm.streams.getMessage(this.#stream, { seq: last }).catch(() => undefined);
    if (newest !== undefined && storedMs(newest.timestamp) < from.time) return undefined;
    return {
      deliver_policy: DeliverPolicy.StartTime,
      opt_start_time: new Date(from.time).toISOString(),
    };
  }

  /** The entry of a message, or undefined when no topic pattern matches (or it is unreadable). */
  #entry(m: JsMsg, topics: readonly string[] | undefined): EventLogEntry | undefined {
    const topic = topicOfSubject(this.#host.mesh, m.subject);
    if (topics !== undefined && !topics.some((p) => topicMatches(p, topic))) return undefined;
    let fields: ReturnType<typeof decodeFrameHeaders>;
    try {
      fields = decodeFrameHeaders(m.headers);
    } catch (err) {
      this.#host.logger.debug("event log entry with unreadable headers skipped", {
        seq: m.seq,
        error: err,
      });
      return undefined;
    }
    // The ack subject has the stored time in exact nanoseconds (`timestampNanos` is a double).
    const info = parseAckSubject((m as JsMsg & { readonly reply?: string }).reply);
    const frame: Frame = {
      headers: fields.headers,
      body: m.data,
      correlationId: fields.correlationId,
      ...(fields.replyTo !== undefined ? { replyTo: fields.replyTo } : {}),
      ...(fields.ttlMs !== undefined ? { ttlMs: fields.ttlMs } : {}),
    };
    return {
      position: String(m.seq),
      timestamp: info?.timestampMs ?? Math.floor(m.info.timestampNanos / 1_000_000),
      topic,
      frame,
    };
  }

  async #info(jsm: JetStreamManager): Promise<StreamInfo | undefined> {
    try {
      return await jsm.streams.info(this.#stream);
    } catch (err) {
      if (apiErrorCode(err) === JsErr.streamNotFound) return undefined;
      throw translateNatsError(err, "look for the event log", this.#host.life);
    }
  }

  /** The stream info of the log. @throws NuropbTransportError when the log is not set up */
  async #requireLog(jsm: JetStreamManager): Promise<StreamInfo> {
    const info = await this.#info(jsm);
    if (info === undefined || info.config.retention !== RetentionPolicy.Limits) throw notSetUp();
    return info;
  }
}

/**
 * The subject a consumer filters on for `topics`: the pattern's own subject when it is one
 * pattern without `#` (`*` is the same in both; `#` also matches no word, which `>` does not),
 * else every event. Core and `#entry` match the patterns again.
 */
export function filterSubjectOf(mesh: string, topics: readonly string[] | undefined): string {
  const only = topics?.length === 1 ? topics[0] : undefined;
  if (only !== undefined && !only.split(".").includes("#")) {
    const subject = eventSubject(mesh, only);
    if (subject.split(".").every((w) => w === "*" || isLiteralSubject(w))) return subject;
  }
  return eventsWildcard(mesh);
}

/** Milliseconds since the epoch of a stored message's RFC 3339 time (nanoseconds cut to ms). */
function storedMs(timestamp: string): number {
  const m = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$/.exec(timestamp);
  if (m === null) return Date.parse(timestamp);
  const ms = (m[2] ?? "").padEnd(3, "0").slice(0, 3);
  return Date.parse(`${m[1] ?? ""}.${ms}${m[3] ?? "Z"}`);
}

function notSetUp(): NuropbTransportError {
  return new NuropbTransportError(
    "the event log is not set up for this mesh: run nuropb mesh setup with the event-log options, or transport.eventLog.setup()",
  );
}

/** A position this log handed out (a stream sequence). @throws TypeError for anything else */
function parsePosition(position: unknown): number {
  if (typeof position !== "string" || !/^[1-9][0-9]{0,15}$/.test(position)) {
    throw new TypeError(`not a position of the NATS event log: ${JSON.stringify(position)}`);
  }
  const n = Number(position);
  if (!Number.isSafeInteger(n)) {
    throw new TypeError(`not a position of the NATS event log: ${JSON.stringify(position)}`);
  }
  return n;
}
