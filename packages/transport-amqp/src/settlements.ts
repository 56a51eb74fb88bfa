import type { Channel, ConsumeMessage } from "amqplib";

/**
 * The settlements of one consumer channel. Rejects and nacks are written at once; acks wait for
 * the end of the tick and go out as few frames as the broker allows: one `basic.ack` with
 * `multiple` for the run of deliveries, oldest first, that are all settled (the broker acks
 * every unacknowledged delivery up to that tag, and every one of them was acked here or settled
 * already), then one plain `basic.ack` per ack beyond a delivery still open.
 *
 * Every delivery of the channel is recorded with {@link delivered} (ones nobody handles too: they
 * go back when the channel closes), so a `multiple` ack never covers a delivery that is not
 * settled. Waiting for the end of the tick also puts a reply (published as its request is acked)
 * on the wire before the ack: the reply is what someone waits for.
 *
 * Measured (2 shared cores, interleaved rounds, echo through core): at c=64 about one ack frame
 * per socket read instead of one per message, which the broker parses and hands to the queue.
 */
export class Settlements {
  readonly #ch: Channel;
  readonly #closed: () => boolean;
  /** Delivery tags in the order they arrived; those before `#head` are settled. */
  #order: number[] = [];
  #head = 0;
  /** Delivered and not settled (no ack queued, nothing written). */
  readonly #open = new Set<number>();
  /** Acks waiting for {@link flush}, by delivery tag. */
  readonly #acks = new Map<number, ConsumeMessage>();
  #scheduled = false;
  readonly #flush = (): void => {
    this.#scheduled = false;
    this.flush();
  };

  /** `closed`: the channel is gone (what is unsettled goes back: nothing is written then). */
  constructor(ch: Channel, closed: () => boolean) {
    this.#ch = ch;
    this.#closed = closed;
  }

  /** How many delivery tags the record holds (open ones, and settled ones not yet dropped). */
  get recorded(): number {
    return this.#order.length;
  }

  /** Records a delivery as it arrives (in delivery-tag order, as the channel delivers them). */
  delivered(msg: ConsumeMessage): void {
    const tag = msg.fields.deliveryTag;
    // Settled tags are passed over only when acks are flushed: without acks for a long time
    // (every delivery rejected) they pile up; dropped here, amortised.
    if (this.#order.length - this.#head > 1024 + 2 * (this.#open.size + this.#acks.size)) {
      this.#compact();
    }
    this.#order.push(tag);
    this.#open.add(tag);
  }

  /** Acks `msg` at the end of the tick (with others, when it can). */
  ack(msg: ConsumeMessage): void {
    const tag = msg.fields.deliveryTag;
    if (!this.#open.delete(tag)) return; // settled already, or not recorded: never guess
    this.#acks.set(tag, msg);
    if (!this.#scheduled) {
      this.#scheduled = true;
      process.nextTick(this.#flush);
    }
  }

  /** basic.nack, now. */
  nack(msg: ConsumeMessage, requeue: boolean): void {
    if (this.#settleNow(msg)) this.#ch.nack(msg, false, requeue);
  }

  /** basic.reject, now. */
  reject(msg: ConsumeMessage, requeue: boolean): void {
    if (this.#settleNow(msg)) this.#ch.reject(msg, requeue);
  }

  /** Writes the acks waiting; before the channel is closed by us, so that none is lost. */
  flush(): void {
    const acks = this.#acks;
    if (acks.size === 0) return;
    if (this.#closed()) {
      // On a channel that went away the broker redelivers the messages: nothing to send.
      acks.clear();
      return;
    }
    const order = this.#order;
    const open = this.#open;
    let last: ConsumeMessage | undefined;
    let head = this.#head;
    while (head < order.length) {
      const tag = order[head] as number;
      if (open.has(tag)) break;
      const msg = acks.get(tag);
      if (msg !== undefined) {
        last = msg;
        acks.delete(tag);
      }
      head++;
    }
    this.#head = head;
    try {
      if (last !== undefined) this.#ch.ack(last, true);
      for (const msg of acks.values()) this.#ch.ack(msg);
    } catch {
      // The channel is closing: the broker gives back what it did not get acked.
    }
    acks.clear();
    if (head === order.length) {
      // Everything recorded is settled: start the record again (the usual case).
      order.length = 0;
      this.#head = 0;
    } else if (order.length - head > 1024 + 2 * open.size || head > 1024) {
      // Settled tags behind one still open (a long handler): the record stays the size of
      // what is open.
      this.#compact();
    }
  }

  /**
   * Keeps only the tags still open or with an ack waiting. Dropping the others changes no ack:
   * the broker no longer counts a settled delivery as unacknowledged, so a `multiple` ack
   * passes over it the same whether it is recorded or not.
   */
  #compact(): void {
    const open = this.#open;
    const acks = this.#acks;
    this.#order = this.#order.slice(this.#head).filter((tag) => open.has(tag) || acks.has(tag));
    this.#head = 0;
  }

  #settleNow(msg: ConsumeMessage): boolean {
    return this.#open.delete(msg.fields.deliveryTag);
  }
}
