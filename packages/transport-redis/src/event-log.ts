import type { Redis } from "ioredis";
import { NuropbMessageError, NuropbTransportError, topicMatches } from "@nuropb/protocol";
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
  Logger,
  TransportEventLog,
} from "@nuropb/protocol";
import { fieldsToFrame } from "./frame-codec.ts";
import { entryTimeMs, isKeyName, type MeshKeys } from "./keys.ts";
import { READ_EVENT_LOG, SETUP_EVENT_LOG, coalesceWrites, type Script } from "./scripts.ts";
import type { SendBatcher } from "./send-batcher.ts";

/** Most entries one `read` page returns on Redis; a larger `limit` is capped to it. */
export const REDIS_EVENT_LOG_MAX_PAGE = 10_000;
/** Entries one read script scans at most before it hands back (it blocks the server meanwhile). */
const SCAN_BUDGET = 20_000;
/** Entries one XREAD of a follow takes at most. */
const FOLLOW_BATCH = 256;
/** How long one XREAD of a follow blocks, in ms, before it checks its signal again. */
const FOLLOW_BLOCK_MS = 2_000;
/** The largest sequence part of a stream id: `{ms}-{MAX_SEQ}` is the last id of a millisecond. */
const MAX_SEQ = "18446744073709551615";

/** What the Redis transport gives its event log (internal). */
export interface RedisEventLogHost {
  readonly keys: MeshKeys;
  readonly logger: Logger;
  readonly maxFrameBytes: number;
  /** The shared command connection and send batcher. @throws unless the transport is open */
  readonly open: () => { redis: Redis; sends: SendBatcher };
  /** A new connection of the transport's settings, for a follow's blocking reads. */
  readonly newConnection: (name: string) => Redis;
  /** Translates a Redis error at the boundary (`what` names the operation). */
  readonly translate: (err: unknown, what: string) => Error;
  /** Settles when the transport has closed. */
  readonly closed: () => Promise<unknown>;
}

/**
 * The event log of a mesh on Redis: the stream `{mesh}:evlog`, every event frame sent added to
 * it in the script that fans the event out (so storing and delivering are one atomic step), with
 * its retention in `{mesh}:evlog:cfg`. Positions are stream entry ids; timestamps their
 * milliseconds (the Redis server's clock).
 */
export class RedisEventLog implements TransportEventLog {
  readonly #h: RedisEventLogHost;
  #closing: AbortSignal | undefined;

  constructor(host: RedisEventLogHost) {
    this.#h = host;
  }

  async setup(retention: EventLogRetention): Promise<void> {
    assertEventLogRetention(retention);
    const { redis } = this.#h.open();
    try {
      // Each call drops at most 1000 entries (it blocks the server meanwhile): repeat until done.
      while (
        (await runBuffer(
          redis,
          SETUP_EVENT_LOG,
          [this.#h.keys.eventLog, this.#h.keys.eventLogConfig],
          [String(retention.maxAgeMs), String(retention.maxBytes)],
        )) === 2
      );
    } catch (err) {
      throw this.#h.translate(err, "set up the event log");
    }
    this.#h.logger.info("event log set up", { ...retention });
  }

  async available(): Promise<boolean> {
    const { redis } = this.#h.open();
    try {
      return (await redis.exists(this.#h.keys.eventLogConfig)) === 1;
    } catch (err) {
      throw this.#h.translate(err, "ask for the event log");
    }
  }

  async append(topic: string, frame: Frame): Promise<EventLogPosition> {
    assertEventLogTopic(topic);
    if (!isKeyName(topic)) throw new TypeError(`'${topic}' is not a valid event topic`);
    if (!(frame?.body instanceof Uint8Array))
      throw new TypeError("frame.body must be a Uint8Array");
    if (frame.body.byteLength > this.#h.maxFrameBytes) {
      throw new NuropbMessageError(
        `frame body of ${frame.body.byteLength} bytes exceeds maxFrameBytes (${this.#h.maxFrameBytes})`,
      );
    }
    const id = await this.#h.open().sends.logAppend(topic, frame);
    return { position: id, timestamp: entryTimeMs(id) };
  }

  isPosition(position: string): boolean {
    return isPosition(position);
  }

  async head(): Promise<EventLogStart> {
    const { redis } = this.#h.open();
    await this.#assertAvailable(redis);
    const after = await this.#lastId(redis);
    return after === undefined ? "start" : { after };
  }

  async read(options: EventLogReadOptions): Promise<EventLogPage> {
    assertEventLogReadOptions(options, isPosition);
    options.signal?.throwIfAborted();
    const { redis } = this.#h.open();
    await this.#assertAvailable(redis);
    if (options.from === "end") return { entries: [], more: false };
    const limit = Math.min(options.limit, REDIS_EVENT_LOG_MAX_PAGE);
    let cursor = readStart(options.from);
    const entries: EventLogEntry[] = [];
    for (;;) {
      options.signal?.throwIfAborted();
      let reply: unknown;
      try {
        reply = await runBuffer(
          redis,
          READ_EVENT_LOG,
          [this.#h.keys.eventLog],
          [
            cursor,
            options.until === undefined ? "" : String(Math.floor(options.until)),
            String(limit - entries.length),
            String(SCAN_BUDGET),
            ...(options.topics ?? []),
          ],
        );
      } catch (err) {
        throw this.#h.translate(err, "read the event log");
      }
      const [raw, state, next] = reply as [unknown[], number, Buffer];
      for (const e of raw) {
        const entry = toEntry(e);
        if (entry !== undefined) entries.push(entry);
        else this.#h.logger.warn("skipping a foreign entry of the event log");
      }
      if (state !== 2) return { entries, more: state === 1 };
      cursor = next.toString();
    }
  }

  async *follow(options: EventLogFollowOptions): AsyncIterable<EventLogEntry> {
    assertEventLogFollowOptions(options, isPosition);
    const { redis } = this.#h.open();
    await this.#assertAvailable(redis);
    const closing = this.#closingSignal();
    const stop =
      options.signal === undefined ? closing : AbortSignal.any([options.signal, closing]);
    let after = await this.#followStart(redis, options.from);
    const topics = options.topics;
    const blocking = this.#h.newConnection("evlog-follow");
    const onStop = (): void => blocking.disconnect();
    stop.addEventListener("abort", onStop, { once: true });
    try {
      while (!stop.aborted) {
        let reply: [Buffer, [Buffer, Buffer[]][]][] | null;
        try {
          reply = await blocking.xreadBuffer(
            "COUNT",
            FOLLOW_BATCH,
            "BLOCK",
            FOLLOW_BLOCK_MS,
            "STREAMS",
            this.#h.keys.eventLog,
            after,
          );
        } catch (err) {
          if (stop.aborted) return;
          throw this.#h.translate(err, "follow the event log");
        }
        for (const [, items] of reply ?? []) {
          for (const item of items) {
            after = item[0].toString();
            const entry = toEntry(item);
            if (entry === undefined) continue;
            if (topics !== undefined && !topics.some((p) => topicMatches(p, entry.topic))) continue;
            if (stop.aborted) return;
            yield entry;
          }
        }
      }
    } finally {
      stop.removeEventListener("abort", onStop);
      blocking.disconnect();
    }
  }

  /** The id a follow reads after. */
  async #followStart(redis: Redis, from: EventLogStart): Promise<string> {
    if (from === "start") return "0-0";
    if (from === "end") return (await this.#lastId(redis)) ?? "0-0";
    if ("after" in from) return from.after;
    const ms = Math.floor(from.time);
    return ms <= 0 ? "0-0" : `${ms - 1}-${MAX_SEQ}`;
  }

  /** The id of the newest entry, or undefined when the log is empty. */
  async #lastId(redis: Redis): Promise<string | undefined> {
    try {
      const last = await redis.xrevrange(this.#h.keys.eventLog, "+", "-", "COUNT", 1);
      return last[0]?.[0];
    } catch (err) {
      throw this.#h.translate(err, "find the end of the event log");
    }
  }

  async #assertAvailable(redis: Redis): Promise<void> {
    let exists: number;
    try {
      exists = await redis.exists(this.#h.keys.eventLogConfig);
    } catch (err) {
      throw this.#h.translate(err, "ask for the event log");
    }
    if (exists !== 1) {
      throw new NuropbTransportError(
        "the event log is not set up for this mesh: run nuropb mesh setup with the event-log options, or transport.eventLog.setup()",
      );
    }
  }

  /** Aborts once the transport has closed. */
  #closingSignal(): AbortSignal {
    if (this.#closing === undefined) {
      const controller = new AbortController();
      this.#closing = controller.signal;
      void this.#h.closed().then(() => controller.abort());
    }
    return this.#closing;
  }
}

/** Runs `s` with Buffer replies (the bodies are binary), loading it when the server lacks it. */
async function runBuffer(
  redis: Redis,
  s: Script,
  keys: readonly string[],
  args: readonly string[],
): Promise<unknown> {
  coalesceWrites(redis);
  try {
    return await redis.callBuffer("EVALSHA", s.sha, keys.length, ...keys, ...args);
  } catch (err) {
    if (!(err instanceof Error && err.message.startsWith("NOSCRIPT"))) throw err;
    return await redis.callBuffer("EVAL", s.source, keys.length, ...keys, ...args);
  }
}

/** A log entry (`[id, [topic, <topic>, …frame fields]]`), or undefined when it is not ours. */
function toEntry(raw: unknown): EventLogEntry | undefined {
  if (!Array.isArray(raw) || raw.length !== 2) return undefined;
  const [rawId, fields] = raw as [Buffer, Buffer[]];
  if (!Array.isArray(fields) || fields.length < 2 || fields[0]?.toString() !== "topic") {
    return undefined;
  }
  const id = rawId.toString();
  try {
    const f = fieldsToFrame(fields.slice(2));
    const frame: { -readonly [K in keyof Frame]: Frame[K] } = {
      headers: f.headers,
      body: f.body,
      correlationId: f.correlationId,
    };
    if (f.replyTo !== undefined) frame.replyTo = f.replyTo;
    if (f.ttlMs !== undefined) frame.ttlMs = f.ttlMs;
    return {
      position: id,
      timestamp: entryTimeMs(id),
      topic: (fields[1] as Buffer).toString(),
      frame,
    };
  } catch {
    return undefined;
  }
}

const ID_RE = /^[0-9]{1,20}-[0-9]{1,20}$/;

/** The XRANGE start of a read. */
function readStart(from: Exclude<EventLogStart, "end">): string {
  if (from === "start") return "-";
  if ("after" in from) return `(${from.after}`;
  const ms = Math.floor(from.time);
  return ms <= 0 ? "-" : `${ms}-0`;
}

/** Whether `position` is a stream id (`{ms}-{seq}`). */
function isPosition(position: string): boolean {
  return ID_RE.test(position);
}
