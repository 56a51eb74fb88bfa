import { watchServices as watchCore, type ServicesWatch } from "@nuropb/core";
import type { WatchServicesOptions as CoreWatchOptions } from "@nuropb/core";
import type { Transport } from "@nuropb/protocol";

/** Options of {@link watchServices}: core's, plus the transport to listen on. */
export interface WatchServicesOptions extends CoreWatchOptions {
  /** The transport to listen on, connected; the caller made it and closes it. */
  readonly transport: Transport;
}

/**
 * Watches the status reports of runner participants (see `status` of {@link createRunner}):
 * `watchServices` of `@nuropb/core` on `options.transport`, which reads a transient queue of its
 * own, so nothing of the watcher stays on the broker after `close()`.
 * @throws TypeError for bad options; the promise rejects when the transport cannot be reached.
 * @example
 * await using watch = await watchServices({ transport });
 * for await (const view of watch.updates()) render(view);
 */
export async function watchServices(options: WatchServicesOptions): Promise<ServicesWatch> {
  if (typeof options !== "object" || options === null) {
    throw new TypeError("watchServices: options must be an object");
  }
  const { transport, ...rest } = options;
  return watchCore(transport, rest);
}
