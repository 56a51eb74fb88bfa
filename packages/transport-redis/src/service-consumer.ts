import type { Redis } from "ioredis";
import type { DeliveryHandler, InboundFrame, Listener, Logger } from "@nuropb/protocol";
import { createDeliveryLedger } from "@nuropb/protocol/transport-kit";
import type { DeliveryLedger, HeldDelivery } from "@nuropb/protocol/transport-kit";
import { BlockingReader } from "./blocking-reader.ts";
import { fieldsToFrame, type EntryFrame } from "./frame-codec.ts";
import { entryTimeMs, SERVICE_GROUP } from "./keys.ts";
import { coalesceWrites, DEAD_LETTER, FORGET_CONSUMERS, REQUEUE, runScript } from "./scripts.ts";

/** Why an entry went to the dead-letter stream. */
export type DeadLetterReason = "rejected" | "expired" | "undecodable";

/**
 * Collects acknowledgements and sends them as one XACK + XDEL per stream and tick. Like an AMQP
 * basic.ack, an acknowledgement is not confirmed: commands on one connection run in order, so
 * anything sent after it (the reply, say) reaches Redis after it; if the connection drops first,
 * the entry is claimed again (at-least-once).
 */
export class AckBatcher {
  readonly #redis: Redis;
  readonly #logger: Logger;
  #pending = new Map<string, string[]>();
  #scheduled = false;

  constructor(redis: Redis, logger: Logger) {
    this.#redis = redis;
    this.#logger = logger;
  }

  ack(stream: string, id: string): void {
    let ids = this.#pending.get(stream);
    if (ids === undefined) {
      ids = [];
      this.#pending.set(stream, ids);
    }
    ids.push(id);
    if (!this.#scheduled) {
      this.#scheduled = true;
      // At the end of the tick, with the sends of the tick: their commands leave in one write.
      process.nextTick(() => this.flush());
    }
  }

  /**
   * Takes what is collected when it is one stream's (the usual case: a service's listener acks
   * the delivery it answers), for a script that acknowledges them itself; else nothing is taken.
   */
  takeOne(): { readonly stream: string; readonly ids: readonly string[] } | undefined {
    if (this.#pending.size !== 1) return undefined;
    const [entry] = this.#pending;
    this.#pending = new Map();
    const [stream, ids] = entry as [string, string[]];
    return { stream, ids };
  }

  /** An acknowledgement that did not go through (sent by {@link flush} or by a script). */
  failed(err: unknown): void {
    this.#logger.debug("acknowledgement not sent; the entries will be claimed again", {
      error: err,
    });
  }

  /** Sends what is collected now. */
  flush(): void {
    this.#scheduled = false;
    if (this.#pending.size === 0) return;
    const batches = this.#pending;
    this.#pending = new Map();
    coalesceWrites(this.#redis);
    for (const [stream, ids] of batches) {
      Promise.all([
        this.#redis.xack(stream, SERVICE_GROUP, ...ids),
        this.#redis.xdel(stream, ...ids),
      ]).catch((err: unknown) => this.failed(err));
    }
  }
}

/** What a {@link ServiceConsumer} needs from its transport. */
export interface ServiceConsumerDeps {
  /** Shared command connection. */
  readonly redis: Redis;
  /** This consumer's own connection for blocking reads. */
  readonly blocking: Redis;
  readonly acks: AckBatcher;
  readonly logger: Logger;
  readonly stream: string;
  readonly deadLetters: string;
  readonly service: string;
  /** Consumer name in the group (unique per listener). */
  readonly consumer: string;
  readonly window: number;
  readonly claimIdleMs: number;
  readonly deadLetterMaxLen: number;
  readonly handler: DeliveryHandler;
  /** The server's clock, in ms since the epoch. */
  readonly serverNow: () => number;
  /** The group is gone (e.g. Redis restarted without data): declare the service again. */
  readonly redeclare: () => Promise<void>;
  readonly onStopped: (consumer: ServiceConsumer) => void;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** How often a listener removes idle, empty consumers from its group, in milliseconds. */
const FORGET_EVERY_MS = 60_000;

/** How long one blocking read waits, in milliseconds. */
const BLOCK_MS = 5_000;

/**
 * Most entries one read takes, whatever the window's free room. Redis hands entries added at
 * once to the blocked readers in turn, each up to its COUNT: a reader asking for its whole
 * window (64, 256) took a whole burst and left idle instances of the service nothing.
 */
const READ_BATCH = 16;

/**
 * Reads queued on the connection at once (see {@link BlockingReader}). Together they never ask
 * for more entries than the window has room for, nor for its last quarter (kept for claiming
 * what dead consumers held, which would otherwise wait while the reads sit queued); each asks for
 * an eighth of the rest (up to {@link READ_BATCH}), so that the reads queued stay many and small
 * rather than a few big ones topped up after every answer.
 */
const READ_DEPTH = 8;

/** An entry this listener holds (its ledger's message). */
interface Entry {
  readonly id: string;
  renewedAt: number;
  /** Read after the consumer stopped: never handed to a handler (given back unmarked). */
  readonly unhanded?: true;
}

type Held = HeldDelivery<Entry>;

type RawEntry = [id: Buffer, fields: Buffer[] | null];

interface AutoClaimBuffer {
  xautoclaimBuffer(...args: (string | number)[]): Promise<unknown>;
}

function isEntryList(value: unknown): value is RawEntry[] {
  return Array.isArray(value);
}

/**
 * One service listener: reads its service stream with XREADGROUP (never more than the window of
 * unsettled deliveries), claims entries idle too long at consumers that stopped answering
 * (XAUTOCLAIM), renews what it holds, and settles with XACK/XDEL or the requeue/dead-letter scripts.
 */
export class ServiceConsumer implements Listener {
  readonly #deps: ServiceConsumerDeps;
  /** Settle once, reject on a handler failure, give back on stop, the window: the kit's rules. */
  readonly #ledger: DeliveryLedger<Entry>;
  /** The COUNT of each read queued, in the order sent: room the window keeps for their answers. */
  readonly #asked: number[] = [];
  #reserved = 0;
  #redeclaring: Promise<void> | undefined;
  /** Most entries the queued reads ask for together. */
  readonly #readRoom: number;
  readonly #readCount: number;
  #timer: NodeJS.Timeout | undefined;
  #claimCursor = "0-0";
  #claiming = false;
  readonly #reader: BlockingReader;
  #nextForget = Date.now() + FORGET_EVERY_MS;

  constructor(deps: ServiceConsumerDeps) {
    this.#deps = deps;
    this.#reader = new BlockingReader(deps.blocking, deps.redis, READ_DEPTH);
    this.#readRoom = deps.window - Math.floor(deps.window / 4);
    this.#readCount = Math.max(1, Math.min(READ_BATCH, Math.floor(this.#readRoom / READ_DEPTH)));
    this.#ledger = createDeliveryLedger<Entry>({
      prefetch: deps.window,
      settle: (entry, outcome) => {
        if (outcome === "ack") deps.acks.ack(deps.stream, entry.id);
        else if (outcome === "requeue") return this.#requeue([entry]);
        else return this.#storeDeadLetter(entry, "rejected");
        return undefined;
      },
      // The failure record joins the copy's headers in the same script; a failed script leaves
      // the entry pending (claimed again later), as any dead letter that fails.
      deadLetter: (entry, headers) => this.#storeDeadLetter(entry, "rejected", headers),
      giveBack: (entries) => this.#requeue(entries),
      onRelease: () => this.#released(),
      logger: deps.logger,
      describe: (entry) => ({ stream: deps.stream, id: entry.id }),
    });
  }

  /** Starts reading. */
  async start(): Promise<void> {
    const tick = Math.max(200, Math.min(this.#deps.claimIdleMs / 3, 5_000));
    this.#timer = setInterval(() => void this.#onTick(), tick);
    this.#timer.unref();
    await this.#reader.start({
      next: () => this.#read(),
      answered: (reply) => this.#readAnswered(reply),
      failed: (err, ending) => this.#readFailed(err, ending),
    });
  }

  async stop(): Promise<void> {
    if (this.#ledger.stopped) return;
    // Unsettled deliveries whose handler has returned go back, marked redelivered; a handler
    // still running may still settle its delivery.
    const back = this.#ledger.stop();
    await this.#endLoop();
    await back;
    this.#deps.onStopped(this);
    if (this.#ledger.size === 0) {
      this.#clearTimer();
      await this.#forget();
    }
  }

  /** The transport is closing: every unsettled delivery goes back now; settling it later is a no-op. */
  async shutdown(): Promise<void> {
    const back = this.#ledger.close();
    await this.#endLoop();
    await back;
    this.#clearTimer();
    await this.#forget();
  }

  /** Removes this consumer from the group when it holds nothing (so the group does not grow). */
  async #forget(): Promise<void> {
    const d = this.#deps;
    await runScript(d.redis, FORGET_CONSUMERS, [d.stream], [SERVICE_GROUP, "", d.consumer]).catch(
      (err: unknown) => d.logger.debug("consumer not removed", { error: err }),
    );
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  async #endLoop(): Promise<void> {
    await this.#reader.end();
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Sends a read for as many entries as the window has room for beside the reads queued. */
  #read(): Promise<unknown> | undefined {
    if (this.#ledger.stopped) return undefined;
    const room = Math.min(this.#ledger.free(), this.#readRoom) - this.#reserved;
    const count = Math.min(this.#readCount, room);
    if (count <= 0) return undefined;
    const { blocking, stream, consumer } = this.#deps;
    this.#asked.push(count);
    this.#reserved += count;
    return blocking.callBuffer(
      "XREADGROUP",
      "GROUP",
      SERVICE_GROUP,
      consumer,
      "COUNT",
      count,
      "BLOCK",
      BLOCK_MS,
      "STREAMS",
      stream,
      ">",
    );
  }

  /** A read came back: its room is the window's again. */
  #readDone(): void {
    this.#reserved -= this.#asked.shift() ?? 0;
  }

  #readAnswered(reply: unknown): void {
    this.#readDone();
    if (!Array.isArray(reply)) return;
    for (const perStream of reply as unknown[]) {
      const entries = Array.isArray(perStream) ? (perStream[1] as unknown) : undefined;
      if (!isEntryList(entries)) continue;
      for (const [id, fields] of entries) this.#accept(id.toString("latin1"), fields, false);
    }
  }

  /** A read failed: every queued read fails alike (NOGROUP, say), so one re-declaration serves all. */
  #readFailed(err: unknown, ending: boolean): Promise<void> {
    this.#readDone();
    const { stream, logger } = this.#deps;
    if (ending || this.#ledger.stopped) return Promise.resolve();
    if (err instanceof Error && err.message.includes("NOGROUP")) {
      if (this.#redeclaring === undefined) {
        logger.warn("consumer group missing; declaring the service again", { stream });
        this.#redeclaring = this.#deps
          .redeclare()
          .catch((e: unknown) => logger.warn("re-declare failed", { error: e }))
          .finally(() => (this.#redeclaring = undefined));
      }
      return this.#redeclaring;
    }
    logger.debug("read failed; retrying", { stream, error: err });
    return Promise.resolve();
  }

  #accept(id: string, fields: Buffer[] | null, claimed: boolean): void {
    const { logger } = this.#deps;
    if (this.#ledger.holds(id)) return;
    if (fields === null) {
      // Deleted while pending: nothing left to deliver.
      this.#deps.acks.ack(this.#deps.stream, id);
      return;
    }
    if (this.#ledger.stopped) {
      // A queued read answered after the stop: back to the stream as it came (the next
      // consumer sees no redelivery: no handler ever had it).
      void this.#ledger.giveBack(
        this.#ledger.hold({ id, renewedAt: Date.now(), unhanded: true }, id),
      );
      return;
    }
    const held = this.#ledger.hold({ id, renewedAt: Date.now() }, id);
    let frame: EntryFrame;
    try {
      frame = fieldsToFrame(fields);
    } catch (err) {
      logger.warn("undecodable entry; dead-lettering", { id, error: err });
      void this.#deadLetter(held, "undecodable");
      return;
    }
    const storedAt = frame.storedAtMs ?? entryTimeMs(id);
    if (frame.ttlMs !== undefined && this.#deps.serverNow() > storedAt + frame.ttlMs) {
      logger.debug("expired; dead-lettering", { id });
      void this.#deadLetter(held, "expired");
      return;
    }
    void this.#deliver(held, frame, claimed || frame.requeued);
  }

  #deliver(held: Held, frame: EntryFrame, redelivered: boolean): void {
    const inbound: Mutable<InboundFrame> = {
      headers: frame.headers,
      body: frame.body,
      correlationId: frame.correlationId,
      redelivered,
    };
    if (frame.replyTo !== undefined) inbound.replyTo = frame.replyTo;
    if (frame.ttlMs !== undefined) inbound.ttlMs = frame.ttlMs;
    void this.#ledger.dispatch(held, inbound, this.#deps.handler);
  }

  /** A slot was freed. */
  #released(): void {
    // Read again once a quarter of the window is free (or all of it): one read per slot freed
    // would cost a round trip per delivery when the window is full.
    const free = this.#ledger.free() - this.#reserved;
    const empty = this.#ledger.size === 0;
    if (free >= Math.ceil(this.#deps.window / 4) || empty) this.#reader.fill();
    if (this.#ledger.stopped && empty) this.#clearTimer();
  }

  /**
   * Puts entries back in the stream for any consumer, marked requeued (redelivered) unless no
   * handler ever had them.
   */
  async #requeue(entries: readonly Entry[]): Promise<void> {
    const { redis, stream, consumer } = this.#deps;
    await Promise.all(
      entries.map(async (entry) => {
        try {
          const mark = entry.unhanded === true ? "0" : "1";
          await runScript(redis, REQUEUE, [stream], [SERVICE_GROUP, entry.id, consumer, mark]);
        } catch (err) {
          this.#deps.logger.warn(
            "requeue failed; the entry stays pending and will be claimed again",
            { error: err },
          );
        }
      }),
    );
  }

  /** Dead-letters an entry of ours (expired, undecodable), unless settled already. */
  async #deadLetter(held: Held, reason: DeadLetterReason): Promise<void> {
    if (this.#ledger.release(held)) await this.#storeDeadLetter(held.message, reason);
  }

  async #storeDeadLetter(
    entry: Entry,
    reason: DeadLetterReason,
    extra?: Readonly<Record<string, string>>,
  ): Promise<void> {
    const d = this.#deps;
    try {
      await runScript(
        d.redis,
        DEAD_LETTER,
        [d.stream, d.deadLetters],
        [
          SERVICE_GROUP,
          entry.id,
          d.consumer,
          reason,
          d.service,
          d.deadLetterMaxLen,
          extra === undefined ? "" : JSON.stringify(extra),
        ],
      );
    } catch (err) {
      d.logger.error("dead-letter failed; the entry stays pending and will be claimed again", {
        reason,
        error: err,
      });
    }
  }

  async #onTick(): Promise<void> {
    const d = this.#deps;
    const now = Date.now();
    if (now >= this.#nextForget) {
      // Consumers of instances that died, once others claimed what they held.
      this.#nextForget = now + FORGET_EVERY_MS;
      const idle = Math.max(FORGET_EVERY_MS, 10 * d.claimIdleMs);
      void runScript(d.redis, FORGET_CONSUMERS, [d.stream], [SERVICE_GROUP, idle, ""]).catch(
        (err: unknown) => d.logger.debug("idle consumers not removed", { error: err }),
      );
    }
    // Renew what we hold, so that nobody claims a delivery whose handler is merely slow.
    const stale = this.#ledger
      .unsettled()
      .map((h) => h.message)
      .filter((e) => now - e.renewedAt >= d.claimIdleMs / 3);
    if (stale.length > 0) {
      for (const e of stale) e.renewedAt = now;
      await d.redis
        .xclaim(d.stream, SERVICE_GROUP, d.consumer, 0, ...stale.map((e) => e.id), "JUSTID")
        .catch((err: unknown) => d.logger.debug("renewal failed", { error: err }));
    }
    const free = this.#ledger.free();
    // With a window under 4 the reads may have reserved all of it: claim one anyway (the window
    // then holds one more, as when a claim and a read answer together).
    const room = Math.max(free - this.#reserved, Math.min(free, 1));
    if (this.#ledger.stopped || this.#claiming || room <= 0) return;
    // Claim what consumers that stopped answering held too long (including our own entries
    // whose read reply was lost with a connection).
    this.#claiming = true;
    // The claim's room is kept from the reads until it is answered, as a read's is.
    this.#reserved += room;
    try {
      // ioredis generates `xautoclaimBuffer` but does not type it; `callBuffer` on an
      // auto-pipelined connection loses the command name (ioredis 5.11).
      const reply = await (d.redis as unknown as AutoClaimBuffer).xautoclaimBuffer(
        d.stream,
        SERVICE_GROUP,
        d.consumer,
        d.claimIdleMs,
        this.#claimCursor,
        "COUNT",
        room,
      );
      if (Array.isArray(reply)) {
        const [cursor, entries] = reply as [Buffer, unknown];
        this.#claimCursor = Buffer.isBuffer(cursor) ? cursor.toString("latin1") : "0-0";
        if (isEntryList(entries)) {
          for (const [id, fields] of entries) {
            d.logger.debug("claimed an entry held too long elsewhere", {
              id: id.toString("latin1"),
            });
            this.#accept(id.toString("latin1"), fields, true);
          }
        }
      }
    } catch (err) {
      if (err instanceof Error && err.message.includes("NOGROUP")) this.#claimCursor = "0-0";
      d.logger.debug("claim failed", { error: err });
    } finally {
      this.#reserved -= room;
      this.#claiming = false;
      this.#reader.fill();
    }
  }
}

/**
 * How long the keys of a transient service queue outlive their last renewal, in milliseconds: a
 * consumer that crashed (never removed them) stops receiving events within this, and its stream
 * goes away with it. A live one renews them every third of it.
 */
export const TRANSIENT_KEYS_TTL_MS = 30_000;

/**
 * The keys of a transient service queue (`ServiceQueueSpec.transient`): its stream, its event
 * bindings and the rpc set of its own name expire unless renewed, so nothing of a consumer that
 * died stays: the events router (which reads the bindings) stops feeding it and drops it from
 * `{mesh}:evs` at the next event, and its name is no longer routed. `remove()` takes the stream,
 * the bindings and the rpc routes (its aliases' too) at stop.
 */
export class TransientKeys {
  readonly #redis: () => Redis | undefined;
  readonly #keys: { readonly stream: string; readonly bindings: string; readonly services: string };
  readonly #rpcSets: readonly string[];
  readonly #service: string;
  readonly #logger: Logger;
  #timer: NodeJS.Timeout | undefined;

  constructor(parts: {
    /** The command connection now; undefined once it is gone. */
    readonly redis: () => Redis | undefined;
    readonly service: string;
    readonly stream: string;
    /** The service's event-binding set, and the set of services with event bindings. */
    readonly bindings: string;
    readonly services: string;
    /** The rpc sets that name the service. */
    readonly rpcSets: readonly string[];
    readonly logger: Logger;
  }) {
    this.#redis = parts.redis;
    this.#service = parts.service;
    this.#keys = { stream: parts.stream, bindings: parts.bindings, services: parts.services };
    this.#rpcSets = parts.rpcSets;
    this.#logger = parts.logger;
  }

  /**
   * Sets (or renews) the keys' expiry; call after each registration. The rpc set of the queue's
   * own name (`rpcSets[0]`) expires too: a transient queue has a name of its own. The sets of its
   * aliases may name other services, so they do not.
   */
  async touch(): Promise<void> {
    const tx = this.#redis()
      ?.multi()
      .pexpire(this.#keys.stream, TRANSIENT_KEYS_TTL_MS)
      .pexpire(this.#keys.bindings, TRANSIENT_KEYS_TTL_MS);
    const own = this.#rpcSets[0];
    if (own !== undefined) tx?.pexpire(own, TRANSIENT_KEYS_TTL_MS);
    await tx?.exec();
  }

  /** Renews the expiry every third of it until {@link remove}. */
  start(): void {
    this.#timer ??= setInterval(() => {
      this.touch().catch((err: unknown) =>
        this.#logger.debug("transient queue not renewed", { error: String(err) }),
      );
    }, TRANSIENT_KEYS_TTL_MS / 3);
    this.#timer.unref();
  }

  /** Removes the stream, the event bindings and the rpc routes at once. Never rejects. */
  async remove(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    try {
      const tx = this.#redis()?.multi();
      if (tx === undefined) return;
      for (const set of this.#rpcSets) tx.srem(set, this.#service);
      tx.srem(this.#keys.services, this.#service).del(this.#keys.bindings, this.#keys.stream);
      await tx.exec();
    } catch (err) {
      this.#logger.warn("transient queue not removed; it expires", { error: String(err) });
    }
  }
}
