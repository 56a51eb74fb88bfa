import type { ConsumeMessage } from "amqplib";
import type { ChannelHandle } from "./session.ts";

/**
 * The acknowledgements of one consumer channel, sent together: the acks given in one turn of the
 * event loop go out at its end (or when the channel's last running handler finishes) as one
 * `basic.ack(multiple)` for the longest run of acked deliveries at the front of the channel's
 * unsettled ones, and single acks for any acked delivery behind one still unsettled. Since
 * `multiple` acks every outstanding delivery up to its tag, every delivery the channel received
 * is recorded first (including those it drops unhandled), so a batch never covers one that has
 * not been settled. Rejects and requeues are not batched: the caller sends them at once and
 * calls {@link AckBatch.settled}.
 */
export interface AckBatch {
  /** A delivery arrived on the channel (before anything else is done with it). */
  received(msg: ConsumeMessage): void;
  /** `msg` is acked: the ack goes out with the batch. */
  ack(msg: ConsumeMessage): void;
  /** `msg` was settled otherwise (reject, requeue, a single ack sent by the caller). */
  settled(msg: ConsumeMessage): void;
  /** Sends the acks collected so far. */
  flush(): void;
}

interface Entry {
  readonly msg: ConsumeMessage;
  acked: boolean;
}

/** An {@link AckBatch} for the channel of `handle`. */
export function createAckBatch(handle: ChannelHandle): AckBatch {
  /** Deliveries not yet acknowledged to the broker, in delivery-tag order. */
  const open = new Map<number, Entry>();
  let collected = 0;
  let scheduled = false;
  const flush = (): void => {
    scheduled = false;
    if (collected === 0) return;
    collected = 0;
    if (handle.closed) {
      // The broker gives back whatever was unsettled on the channel.
      open.clear();
      return;
    }
    let last: Entry | undefined;
    for (const [tag, e] of open) {
      if (!e.acked) break;
      last = e;
      open.delete(tag);
    }
    if (last !== undefined) handle.ch.ack(last.msg, true);
    for (const [tag, e] of open) {
      if (e.acked) {
        open.delete(tag);
        handle.ch.ack(e.msg);
      }
    }
  };
  return {
    received(msg) {
      open.set(msg.fields.deliveryTag, { msg, acked: false });
    },
    ack(msg) {
      const e = open.get(msg.fields.deliveryTag);
      if (e === undefined || e.acked) return;
      e.acked = true;
      collected++;
      if (!scheduled) {
        scheduled = true;
        // After the promise jobs of this turn (handlers finishing together), before any I/O.
        process.nextTick(flush);
      }
    },
    settled(msg) {
      open.delete(msg.fields.deliveryTag);
    },
    flush,
  };
}
