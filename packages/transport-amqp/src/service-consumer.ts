import { serviceQueueName } from "@nuropb/protocol";
import type { DeliveryHandler, ServiceQueueSpec } from "@nuropb/protocol";
import { createDeliveryLedger } from "@nuropb/protocol/transport-kit";
import type { ConsumeMessage } from "amqplib";
import type { InboundFrame } from "@nuropb/protocol";
import { Consumer } from "./consumer.ts";
import { publishDeadLetterCopy } from "./dead-letter.ts";
import { Settlements } from "./settlements.ts";
import type { ChannelUse, ConsumerHost } from "./consumer.ts";
import type { ChannelHandle } from "./session.ts";
import { declareServiceQueue } from "./topology.ts";
import type { Exchanges } from "./topology.ts";

/** What a service consumer needs from its transport beyond a {@link ConsumerHost}. */
export interface ServiceConsumerHost extends ConsumerHost {
  readonly exchanges: Exchanges;
  /** A delivery as the handler gets it (notes which dialect its sender speaks). */
  inbound(msg: ConsumeMessage): InboundFrame;
  /** A delivery handler started running asynchronously (close() waits for them, bounded). */
  handlerStarted(): void;
  /** …and has finished. */
  handlerFinished(): void;
}

/**
 * The consumer of a service queue: acknowledged deliveries, at most `spec.prefetch` unsettled
 * (the broker counts them: basic.qos). Each channel keeps its deliveries in a delivery ledger of
 * the transport kit: settled once with ack / nack(requeue) / reject, rejected when the handler
 * fails without settling. A stopped listener's deliveries go back when its channel closes, once
 * no handler runs on it; settling one afterwards, or on a lost channel, is a no-op.
 */
export function createServiceConsumer(
  spec: ServiceQueueSpec,
  handler: DeliveryHandler,
  host: ServiceConsumerHost,
): Consumer {
  const queue = serviceQueueName(spec.service);
  return new Consumer(
    {
      kind: "service",
      queue,
      // A transient queue is exclusive to this connection: its consumer is too.
      consumeOptions: { noAck: false, exclusive: spec.transient === true },
      declare: (ch) => declareServiceQueue(ch, queue, spec, host.exchanges),
      attach: (handle, consumer) =>
        serviceChannel(handle, consumer, handler, host, spec.queueType === "quorum"),
    },
    host,
  );
}

function serviceChannel(
  handle: ChannelHandle,
  consumer: Consumer,
  handler: DeliveryHandler,
  host: ServiceConsumerHost,
  quorum: boolean,
): ChannelUse {
  // Acks coalesced at the end of the tick, in delivery order (see Settlements).
  const settlements = new Settlements(handle.ch, () => handle.closed);
  const ledger = createDeliveryLedger<ConsumeMessage>({
    // basic.qos: the broker keeps the window.
    prefetch: 0,
    settle: (msg, outcome) => {
      // On a channel that went away the broker redelivers the message: nothing to send.
      if (handle.closed) return;
      if (outcome === "ack") settlements.ack(msg);
      else if (outcome === "requeue") {
        // Call-again on a quorum queue counts against its delivery limit: on 3.x every return
        // does, but from 4.3 basic.nack means "not processed" and leaves delivery-count alone,
        // while basic.reject(requeue) counts on every version. A classic queue has no limit:
        // it keeps the basic.nack Python sends.
        if (quorum) settlements.reject(msg, true);
        else settlements.nack(msg, true);
      }
      // A failure dead-letters (basic.reject, requeue false) on every version and queue type.
      else settlements.reject(msg, false);
    },
    // The copy with the failure record goes to the dead-letter exchange (confirmed), then the
    // original is acked; a copy that cannot be sent makes the ledger reject the original.
    deadLetter: async (msg, headers) => {
      await publishDeadLetterCopy(host, host.exchanges.dlExchange, msg, headers);
      if (!handle.closed) settlements.ack(msg);
    },
    // Closing the channel (once no handler runs on it) gives them back.
    giveBack: () => undefined,
    logger: host.log,
    describe: () => ({ queue: consumer.queue }),
  });
  const finished = (): void => {
    consumer.retireIfIdle(handle);
    host.handlerFinished();
  };
  return {
    get running() {
      return ledger.running;
    },
    flush: () => settlements.flush(),
    onMessage(msg) {
      settlements.delivered(msg);
      if (consumer.stopped) return; // it goes back to the queue when the channel closes
      const running = ledger.dispatch(ledger.hold(msg), host.inbound(msg), handler);
      if (running !== undefined) {
        // A running handler keeps a stopped listener's channel open so it can still settle.
        host.handlerStarted();
        void running.then(finished);
      }
    },
  };
}
