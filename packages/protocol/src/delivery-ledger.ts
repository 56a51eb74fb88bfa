import { noopLogger } from "./logger.ts";
import type { LogFields, Logger } from "./logger.ts";
import type { Delivery, DeliveryHandler, InboundFrame } from "./transport.ts";

/** How a handler settles a delivery: `Delivery.ack()`, `requeue()` or `reject()`. */
export type Settlement = "ack" | "requeue" | "reject";

/** What a {@link DeliveryLedger} asks of its transport: the broker work, as functions. */
export interface DeliveryLedgerOptions<TMessage> {
  /**
   * Most unsettled deliveries at once (the prefetch window); 0 = unlimited. Only
   * {@link DeliveryLedger.hasRoom} and {@link DeliveryLedger.free} read it: a transport whose
   * broker counts prefetch itself (AMQP `basic.qos`) may pass 0.
   */
  readonly prefetch: number;
  /**
   * Tells the broker how `message` was settled. Called at most once per delivery, after its
   * slot was freed, and never for a delivery given back. A throw or rejection is logged and
   * swallowed: settling a delivery whose channel was lost is a no-op (the broker redelivers it).
   */
  readonly settle: (message: TMessage, outcome: Settlement) => void | Promise<void>;
  /**
   * Puts unsettled messages back in the queue, for another consumer (marked redelivered), in
   * one batch. Called for a stopped listener's deliveries once their handler has returned, and
   * for every unsettled delivery on {@link DeliveryLedger.close} or
   * {@link DeliveryLedger.giveBackAll}. A throw or rejection is logged and swallowed.
   */
  readonly giveBack: (messages: readonly TMessage[]) => void | Promise<void>;
  /**
   * Optional: dead-letters `message` with `headers` added (see `Delivery.deadLetter`): send the
   * copy to the dead-letter destination, wait for the broker to take it, then remove the
   * original. Called at most once per delivery, after its slot was freed. When it throws or
   * rejects, the ledger logs it and settles the message with `"reject"` instead (a plain dead
   * letter), so nothing is lost. Without it, deliveries have no `deadLetter` method.
   */
  readonly deadLetter?: (
    message: TMessage,
    headers: Readonly<Record<string, string>>,
  ) => void | Promise<void>;
  /** A slot was freed (a delivery settled or given back): read or pump again. */
  readonly onRelease?: () => void;
  /** Where handler failures go (error when unsettled, warn after settling). @defaultValue noopLogger */
  readonly logger?: Logger;
  /** Log fields that name a message (a queue, a correlation id; never its body). */
  readonly describe?: (message: TMessage) => LogFields;
}

/** One delivery a {@link DeliveryLedger} holds, from {@link DeliveryLedger.hold}. */
export interface HeldDelivery<TMessage> {
  /** The transport's own record of the message (its tag, id, ack subject…). */
  readonly message: TMessage;
  /** Settled or given back: later settle calls are no-ops and it no longer takes a slot. */
  readonly settled: boolean;
  /** Its handler has returned, thrown or rejected (or it was never handed to one). */
  readonly handlerDone: boolean;
}

/**
 * The delivery bookkeeping of one service consumer, the same on every broker: each delivery is
 * settled once (later calls are no-ops), rejected when its handler throws or rejects without
 * settling, given back when the listener stops once its handler has returned (at once on
 * close), and counted against the prefetch window while unsettled. The transport keeps the
 * broker work (ack frames, scripts, requeue) and hands it in as {@link DeliveryLedgerOptions}.
 */
export interface DeliveryLedger<TMessage> {
  /** Unsettled deliveries (the slots taken). */
  readonly size: number;
  /** Deliveries whose handler has not returned yet. */
  readonly running: number;
  /** {@link stop} or {@link close} ran: deliveries still arriving should be given back. */
  readonly stopped: boolean;
  /** Not stopped and a slot is free (always, with prefetch 0). */
  hasRoom(): boolean;
  /** Free slots: `prefetch - size` (may be below 0), `Infinity` with prefetch 0. */
  free(): number;
  /** Registers a delivery as unsettled; `key` (say a stream entry id) lets {@link holds} find it. */
  hold(message: TMessage, key?: unknown): HeldDelivery<TMessage>;
  /** An unsettled delivery was held under `key`. */
  holds(key: unknown): boolean;
  /** A snapshot of the unsettled deliveries, in the order they were held. */
  unsettled(): HeldDelivery<TMessage>[];
  /**
   * Marks `held` settled and frees its slot without telling the broker; false when it was
   * settled (or given back) already. For settlements of the transport's own (an expired or
   * undecodable message sent to the dead letters).
   */
  release(held: HeldDelivery<TMessage>): boolean;
  /** Settles `held` once with `outcome`; a later call is a no-op. Never rejects. */
  settle(held: HeldDelivery<TMessage>, outcome: Settlement): Promise<void>;
  /** Gives `held` back to the queue unless it was settled. Never rejects. */
  giveBack(held: HeldDelivery<TMessage>): Promise<void>;
  /**
   * Dead-letters `held` once with `headers` added (the transport's `deadLetter` option, falling
   * back to `"reject"`); a later call is a no-op. Never rejects.
   * @throws TypeError when the transport gave no `deadLetter` option.
   */
  deadLetter(
    held: HeldDelivery<TMessage>,
    headers: Readonly<Record<string, string>>,
  ): Promise<void>;
  /**
   * The {@link Delivery} a handler gets: `frame` plus `ack`/`requeue`/`reject` bound to `held`
   * (and `deadLetter` when the transport gave that option).
   */
  delivery(held: HeldDelivery<TMessage>, frame: InboundFrame): Delivery;
  /**
   * Hands `frame` to `handler` now, as {@link delivery}. A throw or rejection rejects the
   * delivery unless the handler settled it (and is logged); once the handler has returned on a
   * stopped ledger, an unsettled delivery is given back. Returns `undefined` when the handler
   * returned synchronously, else a promise settled (never rejected) when it has finished.
   */
  dispatch(
    held: HeldDelivery<TMessage>,
    frame: InboundFrame,
    handler: DeliveryHandler,
  ): Promise<void> | undefined;
  /**
   * `Listener.stop()`: stopped; the unsettled deliveries whose handler has returned are given
   * back now, the others when their handler returns (it may still settle them). Idempotent.
   */
  stop(): Promise<void>;
  /** The transport closes: stopped, and every unsettled delivery is given back now. */
  close(): Promise<void>;
  /** The channel was lost: every unsettled delivery is given back now; not stopped. */
  giveBackAll(): Promise<void>;
}

/**
 * Creates the {@link DeliveryLedger} of one service consumer.
 * @throws TypeError when `prefetch` is not an integer >= 0 or a callback is missing.
 * @example
 * ```ts
 * const ledger = createDeliveryLedger<Message>({
 *   prefetch: spec.prefetch,
 *   settle: (msg, outcome) => broker.settle(msg.tag, outcome),
 *   giveBack: (msgs) => broker.requeue(msgs.map((m) => m.tag)),
 *   onRelease: () => this.#pump(),
 * });
 * // on a message from the broker:
 * void ledger.dispatch(ledger.hold(msg), toInboundFrame(msg), handler);
 * ```
 */
export function createDeliveryLedger<TMessage>(
  options: DeliveryLedgerOptions<TMessage>,
): DeliveryLedger<TMessage> {
  if (typeof options !== "object" || options === null) {
    throw new TypeError("createDeliveryLedger needs an options object");
  }
  if (!Number.isSafeInteger(options.prefetch) || options.prefetch < 0) {
    throw new TypeError("createDeliveryLedger: prefetch must be an integer >= 0 (0 = unlimited)");
  }
  if (typeof options.settle !== "function" || typeof options.giveBack !== "function") {
    throw new TypeError("createDeliveryLedger: settle and giveBack must be functions");
  }
  return new Ledger(options);
}

const RESOLVED: Promise<void> = Promise.resolve();

class Held<TMessage> implements HeldDelivery<TMessage> {
  readonly message: TMessage;
  readonly key: unknown;
  settled = false;
  handlerDone = false;

  constructor(message: TMessage, key: unknown) {
    this.message = message;
    this.key = key;
  }
}

class Ledger<TMessage> implements DeliveryLedger<TMessage> {
  readonly #o: DeliveryLedgerOptions<TMessage>;
  readonly #log: Logger;
  /** Unsettled deliveries by key (the record itself when no key was given). */
  readonly #held = new Map<unknown, Held<TMessage>>();
  #running = 0;
  #stopped = false;

  constructor(options: DeliveryLedgerOptions<TMessage>) {
    this.#o = options;
    this.#log = options.logger ?? noopLogger;
  }

  get size(): number {
    return this.#held.size;
  }

  get running(): number {
    return this.#running;
  }

  get stopped(): boolean {
    return this.#stopped;
  }

  hasRoom(): boolean {
    return !this.#stopped && (this.#o.prefetch === 0 || this.#held.size < this.#o.prefetch);
  }

  free(): number {
    return this.#o.prefetch === 0 ? Number.POSITIVE_INFINITY : this.#o.prefetch - this.#held.size;
  }

  hold(message: TMessage, key?: unknown): HeldDelivery<TMessage> {
    const held = new Held(message, key);
    this.#held.set(key ?? held, held);
    return held;
  }

  holds(key: unknown): boolean {
    return this.#held.has(key);
  }

  unsettled(): HeldDelivery<TMessage>[] {
    return [...this.#held.values()];
  }

  release(held: HeldDelivery<TMessage>): boolean {
    const h = held as Held<TMessage>;
    if (h.settled) return false;
    h.settled = true;
    this.#held.delete(h.key ?? h);
    this.#o.onRelease?.();
    return true;
  }

  settle(held: HeldDelivery<TMessage>, outcome: Settlement): Promise<void> {
    if (!this.release(held)) return RESOLVED;
    // No closure per call: this runs for every delivery.
    let result: void | Promise<void>;
    try {
      result = this.#o.settle(held.message, outcome);
    } catch (err) {
      this.#brokerFailed("settle", held.message, err);
      return RESOLVED;
    }
    return isPromiseLike(result) ? this.#caught(result, "settle", held.message) : RESOLVED;
  }

  giveBack(held: HeldDelivery<TMessage>): Promise<void> {
    return this.#giveBack([held]);
  }

  deadLetter(
    held: HeldDelivery<TMessage>,
    headers: Readonly<Record<string, string>>,
  ): Promise<void> {
    const send = this.#o.deadLetter;
    if (send === undefined) throw new TypeError("this transport gave the ledger no deadLetter");
    if (!this.release(held)) return RESOLVED;
    const fallback = (err: unknown): Promise<void> => {
      this.#log.warn("could not dead-letter with headers; rejecting the delivery instead", {
        ...this.#o.describe?.(held.message),
        error: err,
      });
      try {
        const r = this.#o.settle(held.message, "reject");
        return isPromiseLike(r) ? this.#caught(r, "settle", held.message) : RESOLVED;
      } catch (e) {
        this.#brokerFailed("settle", held.message, e);
        return RESOLVED;
      }
    };
    let result: void | Promise<void>;
    try {
      result = send(held.message, headers);
    } catch (err) {
      return fallback(err);
    }
    return isPromiseLike(result) ? Promise.resolve(result).then(undefined, fallback) : RESOLVED;
  }

  delivery(held: HeldDelivery<TMessage>, frame: InboundFrame): Delivery {
    return this.#newDelivery(frame, held);
  }

  #newDelivery(frame: InboundFrame, held: HeldDelivery<TMessage>): Delivery {
    return this.#o.deadLetter === undefined
      ? new LedgerDelivery(frame, held, this)
      : new DeadLetteringDelivery(frame, held, this);
  }

  dispatch(
    held: HeldDelivery<TMessage>,
    frame: InboundFrame,
    handler: DeliveryHandler,
  ): Promise<void> | undefined {
    const h = held as Held<TMessage>;
    this.#running++;
    let result: unknown;
    try {
      result = handler(this.#newDelivery(frame, held));
    } catch (err) {
      void this.#failed(h, err);
      void this.#returned(h);
      return undefined;
    }
    if (!isPromiseLike(result)) {
      void this.#returned(h);
      return undefined;
    }
    return Promise.resolve(result).then(
      () => void this.#returned(h),
      async (err: unknown) => {
        await this.#failed(h, err);
        void this.#returned(h);
      },
    );
  }

  stop(): Promise<void> {
    if (this.#stopped) return RESOLVED;
    this.#stopped = true;
    return this.#giveBack([...this.#held.values()].filter((h) => h.handlerDone));
  }

  close(): Promise<void> {
    this.#stopped = true;
    return this.giveBackAll();
  }

  giveBackAll(): Promise<void> {
    return this.#giveBack([...this.#held.values()]);
  }

  #giveBack(records: readonly HeldDelivery<TMessage>[]): Promise<void> {
    const messages: TMessage[] = [];
    for (const held of records) if (this.release(held)) messages.push(held.message);
    if (messages.length === 0) return RESOLVED;
    let result: void | Promise<void>;
    try {
      result = this.#o.giveBack(messages);
    } catch (err) {
      this.#brokerFailed("give back", messages[0] as TMessage, err);
      return RESOLVED;
    }
    return isPromiseLike(result)
      ? this.#caught(result, "give back", messages[0] as TMessage)
      : RESOLVED;
  }

  /** The handler has returned: on a stopped ledger its unsettled delivery goes back. */
  #returned(held: Held<TMessage>): Promise<void> {
    held.handlerDone = true;
    this.#running--;
    return this.#stopped ? this.giveBack(held) : RESOLVED;
  }

  #failed(held: Held<TMessage>, err: unknown): Promise<void> {
    const fields = { ...this.#o.describe?.(held.message), error: err };
    if (held.settled) {
      this.#log.warn("delivery handler failed after settling", fields);
      return RESOLVED;
    }
    this.#log.error("delivery handler failed without settling; rejecting the delivery", fields);
    return this.settle(held, "reject");
  }

  /** Broker work that returned a promise: its rejection is logged, never passed on. */
  #caught(work: Promise<void>, what: string, message: TMessage): Promise<void> {
    return Promise.resolve(work).then(undefined, (err: unknown) =>
      this.#brokerFailed(what, message, err),
    );
  }

  #brokerFailed(what: string, message: TMessage, err: unknown): void {
    this.#log.debug(`${what} failed; the broker redelivers the message`, {
      ...this.#o.describe?.(message),
      error: err,
    });
  }
}

/** A delivery: the frame's fields plus settle methods bound to its ledger record. */
class LedgerDelivery<TMessage> implements Delivery {
  readonly headers: InboundFrame["headers"];
  readonly body: Uint8Array;
  readonly correlationId: string;
  readonly replyTo?: string;
  readonly ttlMs?: number;
  readonly redelivered: boolean;
  readonly #held: HeldDelivery<TMessage>;
  readonly #ledger: Ledger<TMessage>;

  constructor(frame: InboundFrame, held: HeldDelivery<TMessage>, ledger: Ledger<TMessage>) {
    this.headers = frame.headers;
    this.body = frame.body;
    this.correlationId = frame.correlationId;
    if (frame.replyTo !== undefined) this.replyTo = frame.replyTo;
    if (frame.ttlMs !== undefined) this.ttlMs = frame.ttlMs;
    this.redelivered = frame.redelivered;
    this.#held = held;
    this.#ledger = ledger;
  }

  ack(): Promise<void> {
    return this.#ledger.settle(this.#held, "ack");
  }

  requeue(): Promise<void> {
    return this.#ledger.settle(this.#held, "requeue");
  }

  reject(): Promise<void> {
    return this.#ledger.settle(this.#held, "reject");
  }

  /** `Delivery.deadLetter` of a subclass (private fields stay private: no own properties). */
  static deadLetter<T>(
    d: LedgerDelivery<T>,
    headers: Readonly<Record<string, string>>,
  ): Promise<void> {
    return d.#ledger.deadLetter(d.#held, headers);
  }
}

/** A delivery of a transport that dead-letters with headers (`Delivery.deadLetter`). */
class DeadLetteringDelivery<TMessage> extends LedgerDelivery<TMessage> {
  deadLetter(headers: Readonly<Record<string, string>>): Promise<void> {
    return LedgerDelivery.deadLetter(this, headers);
  }
}

function isPromiseLike(value: unknown): value is PromiseLike<unknown> {
  return (
    (typeof value === "object" || typeof value === "function") &&
    value !== null &&
    typeof (value as { then?: unknown }).then === "function"
  );
}
