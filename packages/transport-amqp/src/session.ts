import { NuropbTransportError } from "@nuropb/protocol";
import type { Logger } from "@nuropb/protocol";
import type { Channel, ChannelModel } from "amqplib";
import { channelError, openConnection } from "./connection.ts";
import type { ResolvedOptions } from "./options.ts";
import type { Publisher } from "./publisher.ts";
import { raceAbort } from "./timing.ts";

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

/** What {@link openSession} needs. */
export interface SessionParams {
  readonly id: number;
  readonly options: ResolvedOptions;
  /** Longest wait for the broker, in milliseconds. */
  readonly timeoutMs: number;
  /** Any of them aborting gives up the attempt (a late connection is closed). */
  readonly signals: readonly (AbortSignal | undefined)[];
  readonly log: Logger;
  /** The connection closed (with the broker's reason when it gave one). */
  readonly onClosed: (session: Session, reason: Error | undefined) => void;
}

/**
 * Opens a connection as a {@link Session}: records its errors, marks it `dead` when it closes,
 * and follows the broker blocking and unblocking publishing (resource alarms).
 * @throws NuropbTransportError when the broker cannot be reached, refuses us, or a signal aborts.
 */
export async function openSession(p: SessionParams): Promise<Session> {
  const o = p.options;
  const conn = await raceAbort(
    openConnection({
      target: o.target,
      tls: o.tls,
      heartbeatSec: o.heartbeatSec,
      timeoutMs: p.timeoutMs,
      connectionName: o.connectionName,
      clientProperties: o.clientProperties,
    }),
    p.signals,
    (late) => {
      late.on("error", () => undefined);
      void late.close().catch(() => undefined);
    },
  );
  const session: Session = {
    id: p.id,
    conn,
    publisher: undefined,
    lastError: undefined,
    dead: undefined,
    blocked: undefined,
  };
  conn.on("error", (err: Error) => {
    session.lastError = err;
  });
  conn.on("close", (err?: Error) => {
    const reason = err ?? session.lastError;
    session.dead ??=
      reason === undefined
        ? new NuropbTransportError("connection closed", { retryable: true })
        : channelError(reason, "connection lost", o.target.password);
    p.onClosed(session, reason);
  });
  conn.on("blocked", (reason: unknown) => {
    session.blocked = typeof reason === "string" && reason !== "" ? reason : "no reason given";
    p.log.warn("broker blocked publishing (resource alarm)", { reason: session.blocked });
  });
  conn.on("unblocked", () => {
    session.blocked = undefined;
    p.log.info("broker unblocked publishing");
  });
  return session;
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
