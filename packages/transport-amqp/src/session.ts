import type { Channel, ChannelModel } from "amqplib";
import type { Publisher } from "./publisher.ts";

/** One AMQP channel as the transport tracks it. */
export interface ChannelHandle<C extends Channel = Channel> {
  readonly ch: C;
  /** The channel is gone; settling its deliveries is a no-op. */
  closed: boolean;
  /** Set when the broker closed the channel (an `error` event precedes `close`). */
  closeError: Error | undefined;
  /** We asked the channel to close. */
  retiring: boolean;
}

/** One connection and what was opened on it. */
export interface Session {
  readonly id: number;
  readonly conn: ChannelModel;
  publisher: Publisher | undefined;
  lastError: Error | undefined;
  /**
   * Set, whether or not the session is installed yet, once its connection closed or its
   * publisher channel or a consumer died with nobody to repair it: the transport then refuses to
   * install it (a failed attempt, retried) instead of running "open" on a dead connection.
   */
  dead: Error | undefined;
  /** The broker's reason while it blocks this connection's publishing (a resource alarm). */
  blocked: string | undefined;
}

/** Tracks `ch`: its `error` event is recorded as `closeError` (the caller handles `close`). */
export function newHandle<C extends Channel>(ch: C): ChannelHandle<C> {
  const handle: ChannelHandle<C> = { ch, closed: false, closeError: undefined, retiring: false };
  ch.on("error", (err: Error) => {
    handle.closeError = err;
  });
  return handle;
}

/** Closes a channel or connection, ignoring that it is already closed. */
export async function closeQuietly(x: { close(): Promise<void> }): Promise<void> {
  try {
    await x.close();
  } catch {
    // already closed
  }
}
