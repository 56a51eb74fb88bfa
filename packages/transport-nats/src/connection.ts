import { connect as natsConnect, type NatsConnection } from "nats";
import { NuropbTransportError } from "@nuropb/protocol";
import type { ResolvedNatsOptions } from "./options.ts";

/**
 * Opens a NATS connection that reconnects by itself, forever. An abort stops the wait (a
 * connection made after it is closed at once).
 * @throws NuropbTransportError when no server answers (retryable) or the signal aborts.
 */
export async function openNatsConnection(
  opts: ResolvedNatsOptions,
  signal: AbortSignal | undefined,
): Promise<NatsConnection> {
  signal?.throwIfAborted();
  try {
    const pending = natsConnect({
      ...opts.connectionOptions,
      servers: [...opts.servers],
      name: opts.name,
      timeout: opts.connectTimeoutMs,
      reconnect: true,
      maxReconnectAttempts: -1,
      reconnectTimeWait: opts.reconnectWaitMs,
      waitOnFirstConnect: false,
    });
    return await (signal === undefined
      ? pending
      : abortable(pending, signal, (late) => void late.close()));
  } catch (err) {
    if (signal?.aborted === true)
      throw new NuropbTransportError("connect aborted", { cause: signal.reason });
    throw new NuropbTransportError(`cannot connect to NATS at ${describeServers(opts.servers)}`, {
      cause: err,
      retryable: true,
    });
  }
}

/**
 * Server URLs for an error or a log, credentials masked: `nats://user:****@host:4222`, a token
 * (`nats://token@host`) as `nats://****@host`.
 */
export function describeServers(servers: readonly string[]): string {
  return servers
    .map((s) =>
      s.replace(/\/\/([^:/@\s]*):[^@/\s]*@/g, "//$1:****@").replace(/\/\/([^:/@\s]+)@/g, "//****@"),
    )
    .join(", ");
}

function abortable<T>(
  promise: Promise<T>,
  signal: AbortSignal,
  onLate: (value: T) => void,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        if (signal.aborted) onLate(v);
        else resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}
