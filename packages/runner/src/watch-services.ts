import { createService, type MeshService } from "@nuropb/core";
import { createEventChannel, timerOption, type Logger, type Transport } from "@nuropb/protocol";
import { STATUS_TOPIC } from "./status-publisher.ts";
import { createServicesView, type ServicesView } from "./services-view.ts";

/** Options of {@link watchServices}. */
export interface WatchServicesOptions {
  /** The transport to listen on; the caller made it and closes it. */
  readonly transport: Transport;
  /**
   * The watcher's name: it listens as a service of this name bound to `nuropb.status`. On
   * RabbitMQ, NATS and Redis that service queue is durable: keep one name per watching
   * application, and give two watchers two names (one name is shared, each report reaching one).
   */
  readonly name: string;
  /** How often silent instances are looked for, in ms. @defaultValue 1000 */
  readonly pruneEveryMs?: number;
  /** Heartbeats an instance may miss before it leaves the view. @defaultValue 3 */
  readonly silentAfterHeartbeats?: number;
  readonly logger?: Logger;
}

/** A running watch; `close()` (or `await using`) stops it. */
export interface ServicesWatch extends AsyncDisposable {
  /** The view now. */
  view(): ServicesView;
  /** The view after each change (a new instance, a state or leader change, one gone); ends at `close()`. */
  updates(): AsyncIterable<ServicesView>;
  /** Stops listening (the transport stays open). Idempotent. */
  close(): Promise<void>;
}

/**
 * Watches the status reports of runner participants (see `status` of {@link createRunner}) and
 * keeps the live view of the mesh: services, their instances and states, leaders, last seen. An
 * instance that reports `stopped` leaves it at once; one that goes silent (crashed) leaves it
 * after `silentAfterHeartbeats` of its heartbeats.
 * @throws TypeError for bad options; the promise rejects when the transport cannot be reached.
 * @example
 * await using watch = await watchServices({ transport, name: "dashboard-status" });
 * for await (const view of watch.updates()) render(view);
 */
export async function watchServices(options: WatchServicesOptions): Promise<ServicesWatch> {
  if (typeof options !== "object" || options === null) {
    throw new TypeError("watchServices: options must be an object");
  }
  const pruneEveryMs = timerOption("watchServices", "pruneEveryMs", options.pruneEveryMs, 1000);
  const builder = createServicesView(
    options.silentAfterHeartbeats === undefined
      ? {}
      : { silentAfterHeartbeats: options.silentAfterHeartbeats },
  );
  const channel = createEventChannel<ServicesView>();
  const changed = (): void => channel.emit(builder.view());
  const service: MeshService = createService({
    transport: options.transport,
    name: options.name,
    instance: {
      handleEvent: (e: { topic: string; event: unknown }) => {
        if (e.topic === STATUS_TOPIC && builder.apply(e.event)) changed();
      },
    },
    eventBindings: [STATUS_TOPIC],
    ...(options.logger !== undefined ? { logger: options.logger } : {}),
  });
  await service.connect();
  const timer = setInterval(() => {
    if (builder.prune()) changed();
  }, pruneEveryMs);
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      clearInterval(timer);
      await service.disconnect();
      channel.end();
    })());
  return {
    view: () => builder.view(),
    updates: () => channel.iterate(),
    close,
    [Symbol.asyncDispose]: close,
  };
}
