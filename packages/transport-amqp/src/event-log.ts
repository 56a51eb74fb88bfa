import { NuropbTransportError, newId, topicMatches } from "@nuropb/protocol";
import type {
  Destination,
  EventLogEntry,
  EventLogFollowOptions,
  EventLogPage,
  EventLogPosition,
  EventLogReadOptions,
  EventLogRetention,
  EventLogStart,
  Frame,
  Logger,
  TransportEventLog,
} from "@nuropb/protocol";
import type { Channel, ChannelModel, Message } from "amqplib";
import {
  assertEventLogFollowOptions,
  assertEventLogReadOptions,
} from "@nuropb/protocol/transport-kit";
import { channelError } from "./connection.ts";
import { EVENT_TIME_HEADER, toInboundFrame } from "./frame-codec.ts";
import { EVENT_LOG_QUEUE, assertEventLogRetention, ensureEventLog } from "./management.ts";
import type { ManagementTarget } from "./management.ts";
import { closeQuietly } from "./session.ts";

// The event log on RabbitMQ (issue #16) is the stream queue `nuropb-event-log` of the mesh's
// vhost, bound to the events exchange with `#`: every event published to the exchange, by any
// peer, is stored in one order. Streams are read over AMQP 0-9-1 with a consumer that names its
// start in `x-stream-offset` (manual acks and a prefetch: an ack only returns credit); every
// delivery carries its offset in the `x-stream-offset` header, which is the entry's position.
//
// AMQP 0-9-1 says neither where a stream ends nor the offset of a message just published, so:
// - `read` publishes a barrier (an empty message to the stream through the default exchange,
//   never routed to a service) once its consumer is attached, and reads up to it: what was
//   stored before the barrier is the page's horizon. Readers skip every barrier.
// - `append` publishes the event (confirmed) with an id header while a tail consumer attached at
//   `next` watches the stream; the tail sees the event with its offset once the stream holds it
//   (a stream delivers only committed entries), which also proves that the log exists.
// - RabbitMQ 3.10 gives a stream entry no timestamp over AMQP 0-9-1: `append` stamps the event
//   with a `timestamp_in_ms` header (the one RabbitMQ 3.12's message interceptor sets), and the
//   transport's `send` stamps every event with it too. An entry without one (a Python peer's)
//   gets the timestamp of the entry before it.

/** Header with the stamp of an appended event, in milliseconds since the epoch. */
const TIMESTAMP_HEADER = EVENT_TIME_HEADER;
/** Header with the id an append recognises its event by in the stream. */
const APPEND_ID_HEADER = "x-nuropb-log-append";
/** Header of a read's barrier. */
const BARRIER_HEADER = "x-nuropb-log-barrier";
/** Header RabbitMQ sets on every stream delivery. */
const OFFSET_HEADER = "x-stream-offset";
/** Headers the log adds, removed from the frames it gives back. */
const LOG_HEADERS = new Set([TIMESTAMP_HEADER, APPEND_ID_HEADER, BARRIER_HEADER, OFFSET_HEADER]);

/** Most entries one `read` page returns on RabbitMQ; a larger `limit` is capped to it. */
export const AMQP_EVENT_LOG_MAX_PAGE = 10_000;
/**
 * Most stream entries one `read` looks at: the page ends there (short, maybe empty) with `more`
 * and `scanned`, so that a query of a rare topic over a long log goes on in pages.
 */
export const AMQP_EVENT_LOG_SCAN_BUDGET = 10_000;
/** Credit of a stream consumer: deliveries in flight before it acks. */
const PREFETCH = 500;
/** How much earlier than asked a read by time attaches: the broker's clock may lag ours. */
const CLOCK_SKEW_MS = 5_000;
/** Longest a read waits for its barrier, or an append for its event, in milliseconds. */
const LOG_TIMEOUT_MS = 30_000;
/** The tail of appends closes once no append has waited on it for this long. */
const TAIL_IDLE_MS = 2_000;

/** What the event log needs from its transport. */
export interface AmqpEventLogHost {
  readonly log: Logger;
  /** The broker password, kept out of error texts. */
  readonly password: string;
  readonly vhost: string;
  readonly eventsExchange: string;
  /** The open connection. @throws when the transport is not open. */
  connection(): ChannelModel;
  /** The broker's management API (the log's retention is a policy). */
  management(): ManagementTarget;
  /** Sends as `transport.send` does (confirmed). */
  send(to: Destination, frame: Frame): Promise<void>;
  /** True once the transport is closing or closed. */
  ending(): boolean;
}

/** The event log of one AMQP transport (see the comment above). */
export function createAmqpEventLog(host: AmqpEventLogHost): TransportEventLog {
  return new AmqpEventLog(host);
}

class AmqpEventLog implements TransportEventLog {
  readonly #host: AmqpEventLogHost;
  #tail: AppendTail | undefined;
  #lastStamp = 0;

  constructor(host: AmqpEventLogHost) {
    this.#host = host;
  }

  async setup(retention: EventLogRetention): Promise<void> {
    assertEventLogRetention(retention);
    const h = this.#host;
    const made = await ensureEventLog(h.connection(), {
      management: h.management(),
      vhost: h.vhost,
      eventsExchange: h.eventsExchange,
      retention,
      password: h.password,
    });
    h.log.info("event log set up", { ...retention, ...made });
  }

  async available(): Promise<boolean> {
    const ch = await this.#host.connection().createChannel();
    ch.on("error", () => undefined);
    try {
      await ch.checkQueue(EVENT_LOG_QUEUE);
    } catch (err) {
      if ((err as { code?: unknown }).code === 404) return false;
      throw channelError(err, "cannot look for the event log", this.#host.password);
    }
    await closeQuietly(ch);
    return true;
  }

  async append(topic: string, frame: Frame): Promise<EventLogPosition> {
    assertTopicName(topic);
    if (typeof frame !== "object" || frame === null || typeof frame.headers !== "object") {
      throw new TypeError("frame must be a Frame { headers, body, correlationId }");
    }
    const conn = this.#host.connection();
    let tail = this.#tail;
    if (tail === undefined || tail.conn !== conn || tail.ended) {
      tail = new AppendTail(conn, this.#host, () => {
        if (this.#tail === tail) this.#tail = undefined;
      });
      this.#tail = tail;
    }
    const id = newId();
    const timestamp = Math.max(Date.now(), this.#lastStamp);
    this.#lastStamp = timestamp;
    const { offset: seen } = await tail.expect(id);
    try {
      await this.#host.send(
        { kind: "event", topic },
        {
          ...frame,
          headers: {
            ...frame.headers,
            [TIMESTAMP_HEADER]: String(timestamp),
            [APPEND_ID_HEADER]: id,
          },
        },
      );
    } catch (err) {
      tail.forget(id);
      throw err;
    }
    const offset = await seen;
    return { position: String(offset), timestamp };
  }

  isPosition(position: string): boolean {
    try {
      parsePosition(position);
      return true;
    } catch {
      return false;
    }
  }

  /** A barrier published now: its offset ends the log (readers skip barriers). */
  async head(): Promise<EventLogStart> {
    const reader = await StreamReader.open(this.#host, "end");
    const deadline = AbortSignal.timeout(LOG_TIMEOUT_MS);
    try {
      const barrier = newId();
      reader.publishBarrier(barrier);
      for (;;) {
        const msg = await reader.next(deadline);
        if (msg === undefined) {
          if (deadline.aborted) {
            throw new NuropbTransportError(
              `the event log did not answer within ${LOG_TIMEOUT_MS} ms`,
              { retryable: true },
            );
          }
          throw reader.lostError();
        }
        if (msg.properties.headers?.[BARRIER_HEADER] !== barrier) continue;
        const offset = Number(msg.properties.headers[OFFSET_HEADER]);
        if (!Number.isSafeInteger(offset)) throw reader.lostError();
        return { after: String(offset) };
      }
    } finally {
      await reader.close();
    }
  }

  async read(options: EventLogReadOptions): Promise<EventLogPage> {
    assertEventLogReadOptions(options, (p) => this.isPosition(p));
    options.signal?.throwIfAborted();
    const limit = Math.min(options.limit, AMQP_EVENT_LOG_MAX_PAGE);
    const reader = await StreamReader.open(this.#host, options.from);
    const deadline = AbortSignal.timeout(LOG_TIMEOUT_MS);
    const stop =
      options.signal === undefined ? deadline : AbortSignal.any([options.signal, deadline]);
    try {
      const barrier = newId();
      reader.publishBarrier(barrier);
      const filter = new EntryFilter(options.from, options.topics, this.#host.eventsExchange, 0);
      const entries: EventLogEntry[] = [];
      let scanned = 0;
      let lastOffset: number | undefined;
      for (;;) {
        const msg = await reader.next(stop);
        if (msg === undefined) {
          options.signal?.throwIfAborted();
          if (deadline.aborted) {
            throw new NuropbTransportError(
              `the event log did not answer within ${LOG_TIMEOUT_MS} ms`,
              { retryable: true },
            );
          }
          throw reader.lostError();
        }
        if (msg.properties.headers?.[BARRIER_HEADER] === barrier) return { entries, more: false };
        const offset = Number(msg.properties.headers?.[OFFSET_HEADER]);
        if (scanned === AMQP_EVENT_LOG_SCAN_BUDGET && lastOffset !== undefined) {
          return { entries, more: true, scanned: String(lastOffset) };
        }
        scanned++;
        if (Number.isSafeInteger(offset)) lastOffset = offset;
        const entry = filter.accept(msg);
        if (entry === undefined) continue;
        if (options.until !== undefined && entry.timestamp >= options.until) {
          return { entries, more: false };
        }
        if (entries.length === limit) return { entries, more: true };
        entries.push(entry);
      }
    } finally {
      await reader.close();
    }
  }

  async *follow(options: EventLogFollowOptions): AsyncIterable<EventLogEntry> {
    assertEventLogFollowOptions(options, (p) => this.isPosition(p));
    options.signal?.throwIfAborted();
    const aborted = (): boolean => options.signal?.aborted === true;
    const exchange = this.#host.eventsExchange;
    let from = await this.#notPastEnd(options.from);
    let reader = await StreamReader.open(this.#host, from);
    // From the end, a barrier gives the follow an offset to resume after from the start.
    if (from === "end") reader.publishBarrier(newId());
    let filter = new EntryFilter(from, options.topics, exchange, 0);
    /** The offset of the last delivery (barriers and skipped entries included). */
    let last: number | undefined;
    try {
      for (;;) {
        const msg = await reader.next(options.signal);
        if (msg === undefined) {
          if (aborted() || this.#host.ending()) return;
          // The connection was lost: once the transport is back, attach again just after the
          // last offset delivered, so that nothing is missed or repeated.
          await reader.close();
          if (last !== undefined) from = { after: String(last) };
          const again = await this.#reattach(from, options.signal);
          if (again === undefined) return;
          reader = again;
          filter = new EntryFilter(from, options.topics, exchange, filter.lastTimestamp);
          continue;
        }
        const offset = Number(msg.properties.headers?.[OFFSET_HEADER]);
        if (Number.isSafeInteger(offset)) last = Math.max(last ?? offset, offset);
        const entry = filter.accept(msg);
        if (entry !== undefined) yield entry;
        if (aborted()) return;
      }
    } finally {
      await reader.close();
    }
  }

  /**
   * `from`, or the end when it is a position at or past the end: the stream was made again
   * (offsets restart), and attaching at an old, larger offset would skip every new entry up to
   * it. NATS and the memory log go on from the end too. Costs a barrier for a follow `after`.
   */
  async #notPastEnd(from: EventLogStart): Promise<EventLogStart> {
    if (typeof from !== "object" || !("after" in from)) return from;
    const end = await this.head();
    if (typeof end !== "object" || !("after" in end)) return from;
    if (parsePosition(from.after) < parsePosition(end.after)) return from;
    this.#host.log.warn(
      "event log follow: the position is past the end of the log (was it made again?); following from the end",
      { position: from.after, end: end.after },
    );
    return end;
  }

  /**
   * Attaches a reader at `from` once the transport is open again (backing off from 100 ms to
   * 2 s); undefined once `signal` aborts or the transport is closing.
   * @throws NuropbTransportError when the log is gone.
   */
  async #reattach(from: EventLogStart, signal?: AbortSignal): Promise<StreamReader | undefined> {
    for (let attempt = 0; ; attempt++) {
      if (signal?.aborted === true || this.#host.ending()) return undefined;
      try {
        return await StreamReader.open(this.#host, from);
      } catch (err) {
        if ((err as Error).message === NOT_SET_UP) throw err;
        this.#host.log.debug("event log follow: attaching again failed, retrying", {
          attempt,
          error: (err as Error).message,
        });
      }
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer);
          signal?.removeEventListener("abort", done);
          resolve();
        };
        const timer = setTimeout(done, Math.min(2_000, 100 * 2 ** Math.min(attempt, 5)));
        signal?.addEventListener("abort", done, { once: true });
      });
    }
  }
}

/**
 * Turns stream deliveries into entries: skips what is not an event (barriers), what a `from`
 * excludes (at or before `after`, older than `time`) and topics no pattern matches; gives an
 * entry without a stamp the timestamp of the one before it.
 */
class EntryFilter {
  readonly #after: number | undefined;
  readonly #since: number | undefined;
  readonly #topics: readonly string[] | undefined;
  readonly #exchange: string;
  #lastTimestamp: number;

  /** `lastTimestamp`: what an entry without a stamp gets until one with a stamp comes. */
  constructor(
    from: EventLogStart,
    topics: readonly string[] | undefined,
    exchange: string,
    lastTimestamp: number,
  ) {
    this.#after =
      typeof from === "object" && "after" in from ? parsePosition(from.after) : undefined;
    this.#since = typeof from === "object" && "time" in from ? from.time : undefined;
    this.#lastTimestamp = Math.max(this.#since ?? 0, lastTimestamp);
    this.#topics = topics;
    this.#exchange = exchange;
  }

  /** The timestamp of the last event seen (what the next unstamped one gets). */
  get lastTimestamp(): number {
    return this.#lastTimestamp;
  }

  accept(msg: Message): EventLogEntry | undefined {
    const headers = msg.properties.headers ?? {};
    const offset = Number(headers[OFFSET_HEADER]);
    if (!Number.isSafeInteger(offset)) return undefined;
    if (msg.fields.exchange !== this.#exchange) return undefined; // a barrier, or not an event
    const stamp = stampOf(msg);
    const timestamp = stamp ?? this.#lastTimestamp;
    this.#lastTimestamp = Math.max(this.#lastTimestamp, timestamp);
    // Attached at `after` itself, for its stamp: the entries that follow may carry it.
    if (this.#after !== undefined && offset <= this.#after) return undefined;
    if (this.#since !== undefined && timestamp < this.#since) return undefined;
    const topic = msg.fields.routingKey;
    if (this.#topics !== undefined && !this.#topics.some((p) => topicMatches(p, topic))) {
      return undefined;
    }
    const inbound = toInboundFrame(msg);
    const frameHeaders: Record<string, string | null> = {};
    for (const [k, v] of Object.entries(inbound.headers)) {
      if (!LOG_HEADERS.has(k)) frameHeaders[k] = v;
    }
    const frame: Frame = {
      headers: frameHeaders,
      body: inbound.body,
      correlationId: inbound.correlationId,
      ...(inbound.replyTo !== undefined ? { replyTo: inbound.replyTo } : {}),
      ...(inbound.ttlMs !== undefined ? { ttlMs: inbound.ttlMs } : {}),
    };
    return { position: String(offset), timestamp, topic, frame };
  }
}

/** The stamp of an appended event (or of RabbitMQ ≥ 3.12's interceptor), else the AMQP timestamp. */
function stampOf(msg: Message): number | undefined {
  const raw: unknown = msg.properties.headers?.[TIMESTAMP_HEADER];
  const ms = typeof raw === "string" ? Number(raw) : typeof raw === "number" ? raw : NaN;
  if (Number.isSafeInteger(ms) && ms > 0) return ms;
  const seconds: unknown = msg.properties.timestamp;
  return typeof seconds === "number" && seconds > 0 ? seconds * 1000 : undefined;
}

/** Where a stream consumer attaches for a start. */
function attachPoint(from: EventLogStart): unknown {
  if (from === "start") return "first";
  if (from === "end") return "next";
  if ("after" in from) return { "!": "long", value: parsePosition(from.after) };
  // Seconds, and a little earlier: entries before `time` are skipped by their stamps.
  return { "!": "timestamp", value: Math.max(0, Math.floor((from.time - CLOCK_SKEW_MS) / 1000)) };
}

/** A consumer of the stream on a channel of its own; deliveries are acked as they are taken. */
class StreamReader {
  readonly #ch: Channel;
  readonly #host: AmqpEventLogHost;
  readonly #buffer: Message[] = [];
  #wake: (() => void) | undefined;
  #closed = false;
  #error: Error | undefined;

  private constructor(ch: Channel, host: AmqpEventLogHost) {
    this.#ch = ch;
    this.#host = host;
    ch.on("error", (err: Error) => {
      this.#error ??= err;
    });
    ch.on("close", () => {
      this.#closed = true;
      this.#wake?.();
    });
  }

  /**
   * Attaches a consumer at `from`.
   * @throws NuropbTransportError saying the log is not set up when the stream does not exist.
   */
  static async open(host: AmqpEventLogHost, from: EventLogStart): Promise<StreamReader> {
    const ch = await host.connection().createChannel();
    const reader = new StreamReader(ch, host);
    try {
      await ch.prefetch(PREFETCH);
      await ch.consume(
        EVENT_LOG_QUEUE,
        (msg) => {
          if (msg === null)
            reader.#closed = true; // cancelled by the broker (stream deleted)
          else reader.#buffer.push(msg);
          reader.#wake?.();
        },
        { noAck: false, arguments: { [OFFSET_HEADER]: attachPoint(from) } },
      );
    } catch (err) {
      await closeQuietly(ch);
      if ((err as { code?: unknown }).code === 404) throw notSetUp();
      throw channelError(err, "cannot read the event log", host.password);
    }
    return reader;
  }

  /** Publishes a barrier: an empty message straight to the stream (no service sees it). */
  publishBarrier(id: string): void {
    this.#ch.publish("", EVENT_LOG_QUEUE, Buffer.alloc(0), { headers: { [BARRIER_HEADER]: id } });
  }

  /** The next delivery (acked), or undefined once the channel closed or `signal` aborted. */
  async next(signal?: AbortSignal): Promise<Message | undefined> {
    const aborted = (): boolean => signal?.aborted === true;
    if (aborted()) return undefined;
    while (this.#buffer.length === 0) {
      if (this.#closed || aborted()) return undefined;
      await new Promise<void>((resolve) => {
        const done = (): void => {
          this.#wake = undefined;
          signal?.removeEventListener("abort", done);
          resolve();
        };
        this.#wake = done;
        signal?.addEventListener("abort", done, { once: true });
      });
    }
    const msg = this.#buffer.shift() as Message;
    if (!this.#closed) this.#ch.ack(msg);
    return msg;
  }

  /** Why the consumer stopped, for an operation it was serving. */
  lostError(): NuropbTransportError {
    if (this.#host.ending()) {
      return new NuropbTransportError("the transport closed while reading the event log");
    }
    return this.#error !== undefined
      ? channelError(this.#error, "the event log reader stopped", this.#host.password)
      : new NuropbTransportError(
          "the event log reader lost its channel (connection lost?); resume after the last position read",
          { retryable: true },
        );
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await closeQuietly(this.#ch);
  }
}

interface Awaited {
  resolve(offset: number): void;
  reject(err: Error): void;
}

/**
 * A consumer attached at `next` while appends wait: it tells each append the offset its event
 * got, recognised by the append id header. Closes when idle, or when its connection goes.
 */
class AppendTail {
  readonly conn: ChannelModel;
  ended = false;
  readonly #onEnd: () => void;
  readonly #waiting = new Map<string, Awaited>();
  readonly #reader: Promise<StreamReader>;
  #idle: ReturnType<typeof setTimeout> | undefined;

  constructor(conn: ChannelModel, host: AmqpEventLogHost, onEnd: () => void) {
    this.conn = conn;
    this.#onEnd = onEnd;
    this.#reader = StreamReader.open(host, "end");
    this.#reader.then(
      (r) => void this.#run(r),
      (err: unknown) => this.#end(err as Error),
    );
  }

  /**
   * Registers an append; resolves (once the tail is attached, so that it sees the event) to the
   * promise of the event's offset (in an object: an async function would wait for it).
   */
  async expect(id: string): Promise<{ offset: Promise<number> }> {
    if (this.#idle !== undefined) clearTimeout(this.#idle);
    this.#idle = undefined;
    const offset = new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.forget(id);
        reject(
          new NuropbTransportError(
            `the event log did not show the appended event within ${LOG_TIMEOUT_MS} ms`,
            { retryable: true },
          ),
        );
      }, LOG_TIMEOUT_MS);
      this.#waiting.set(id, {
        resolve: (o) => {
          clearTimeout(timer);
          resolve(o);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
    });
    offset.catch(() => undefined);
    try {
      await this.#reader;
    } catch (err) {
      this.forget(id);
      throw err;
    }
    return { offset };
  }

  forget(id: string): void {
    this.#waiting.delete(id);
    this.#idleSoon();
  }

  async #run(reader: StreamReader): Promise<void> {
    for (;;) {
      const msg = await reader.next();
      if (msg === undefined) {
        this.#end(reader.lostError());
        return;
      }
      const id: unknown = msg.properties.headers?.[APPEND_ID_HEADER];
      const waiting = typeof id === "string" ? this.#waiting.get(id) : undefined;
      if (waiting === undefined || typeof id !== "string") continue;
      this.#waiting.delete(id);
      waiting.resolve(Number(msg.properties.headers?.[OFFSET_HEADER]));
      this.#idleSoon();
      if (this.ended) {
        await reader.close();
        return;
      }
    }
  }

  #idleSoon(): void {
    if (this.#waiting.size > 0 || this.#idle !== undefined || this.ended) return;
    this.#idle = setTimeout(() => {
      this.#idle = undefined;
      if (this.#waiting.size > 0) return;
      this.#end(undefined);
      void this.#reader.then((r) => r.close()).catch(() => undefined);
    }, TAIL_IDLE_MS);
    this.#idle.unref();
  }

  #end(err: Error | undefined): void {
    if (!this.ended) {
      this.ended = true;
      this.#onEnd();
    }
    if (this.#idle !== undefined) clearTimeout(this.#idle);
    const error = err ?? new NuropbTransportError("the event log tail closed", { retryable: true });
    for (const w of this.#waiting.values()) w.reject(error);
    this.#waiting.clear();
  }
}

const NOT_SET_UP =
  "the event log is not set up for this mesh: run nuropb mesh setup with the event-log options, or transport.eventLog.setup()";

function notSetUp(): NuropbTransportError {
  return new NuropbTransportError(NOT_SET_UP);
}

/** @throws TypeError for a topic that is empty or has wildcards */
function assertTopicName(topic: string): void {
  if (typeof topic !== "string" || topic === "" || /[*#]/.test(topic)) {
    throw new TypeError(`topic must be a non-empty string without wildcards, got ${String(topic)}`);
  }
}

/** A position this log handed out (a stream offset). @throws TypeError for anything else */
function parsePosition(position: unknown): number {
  if (typeof position !== "string" || !/^(0|[1-9][0-9]{0,15})$/.test(position)) {
    throw new TypeError(`not a position of the RabbitMQ event log: ${JSON.stringify(position)}`);
  }
  const n = Number(position);
  if (!Number.isSafeInteger(n)) {
    throw new TypeError(`not a position of the RabbitMQ event log: ${JSON.stringify(position)}`);
  }
  return n;
}
