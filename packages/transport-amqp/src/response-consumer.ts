import type { ResponseHandler, ResponseQueueSpec } from "@nuropb/protocol";
import { Consumer } from "./consumer.ts";
import type { ConsumerHost } from "./consumer.ts";
import { toInboundFrame } from "./frame-codec.ts";
import { declareResponseQueue } from "./topology.ts";

/**
 * The consumer of this participant's response queue: exclusive (a second live consumer is
 * refused by the broker) and auto-acknowledged, so there is nothing to settle.
 */
export function createResponseConsumer(
  spec: ResponseQueueSpec,
  handler: ResponseHandler,
  host: ConsumerHost,
): Consumer {
  const queue = spec.address;
  return new Consumer(
    {
      kind: "responses",
      queue,
      consumeOptions: { noAck: true, exclusive: true },
      declare: (ch) => declareResponseQueue(ch, queue),
      attach: (_handle, consumer) => ({
        running: 0,
        onMessage(msg) {
          if (consumer.stopped) return;
          try {
            // Typed as returning nothing, but an async handler returns a promise: its
            // rejection is logged here instead of becoming an unhandled rejection.
            const r: unknown = handler(toInboundFrame(msg));
            if (isPromiseLike(r)) {
              r.then(undefined, (err: unknown) => {
                host.log.warn("response handler failed", {
                  error: (err as Error)?.message ?? String(err),
                });
              });
            }
          } catch (err) {
            host.log.warn("response handler threw", { error: (err as Error)?.message });
          }
        },
      }),
    },
    host,
  );
}

function isPromiseLike(x: unknown): x is PromiseLike<unknown> {
  return (
    (typeof x === "object" || typeof x === "function") &&
    x !== null &&
    typeof (x as { then?: unknown }).then === "function"
  );
}
