import { NuropbTransportError } from "@nuropb/protocol";
import type { Logger } from "@nuropb/protocol";
import type { Channel, ChannelModel } from "amqplib";
import { channelError, isAccessRefusal, isPermanent, openConnection } from "./connection.ts";
import { describeTarget } from "./options.ts";
import type { ResolvedOptions, ResolvedTarget } from "./options.ts";
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
  /** The broker (of a cluster's addresses) this connection reached. */
  readonly target: ResolvedTarget;
  publisher: Publisher | undefined;
  /** The replacement publisher channel being opened while `publisher` is undefined. */
  publisherOpening: Promise<Publisher> | undefined;
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
 * The order in which the brokers are tried for one connection: as listed, or shuffled
 * (Fisher-Yates) for `random` failover.
 */
export function failoverOrder(o: ResolvedOptions): readonly ResolvedTarget[] {
  if (o.failover !== "random" || o.targets.length < 2) return o.targets;
  const order = [...o.targets];
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [order[i], order[j]] = [order[j] as ResolvedTarget, order[i] as ResolvedTarget];
  }
  return order;
}

/**
 * Connects to the first broker of {@link failoverOrder} that takes us. Each address gets an
 * equal share of `timeoutMs` (at least a second), so one silent node cannot use up the attempt.
 * Any failure, a refused login or vhost too (one node may have lost its vhost while the others
 * serve it), moves on to the next address.
 * @throws NuropbTransportError naming every address's failure when there were several: an access
 * refusal (the reconnect loop gives up) only when every address refused us, retryable unless
 * every one failed permanently.
 */
async function connectAny(
  p: SessionParams,
): Promise<{ conn: ChannelModel; target: ResolvedTarget }> {
  const o = p.options;
  const order = failoverOrder(o);
  const share =
    order.length === 1 ? p.timeoutMs : Math.max(1_000, Math.floor(p.timeoutMs / order.length));
  const failures: NuropbTransportError[] = [];
  for (const target of order) {
    try {
      const conn = await raceAbort(
        openConnection({
          target,
          tls: o.tls,
          heartbeatSec: o.heartbeatSec,
          timeoutMs: Math.min(share, p.timeoutMs),
          connectionName: o.connectionName,
          clientProperties: o.clientProperties,
        }),
        p.signals,
        (late) => {
          late.on("error", () => undefined);
          void late.close().catch(() => undefined);
        },
      );
      if (order.length > 1) p.log.info("connected to broker", { broker: describeTarget(target) });
      return { conn, target };
    } catch (err) {
      const e =
        err instanceof NuropbTransportError
          ? err
          : new NuropbTransportError(String(err), { cause: err, retryable: true });
      if (e.message === "aborted" || order.length === 1) throw e;
      p.log.debug(
        isAccessRefusal(e)
          ? "broker refused us, trying the next"
          : "broker unreachable, trying the next",
        {
          broker: describeTarget(target),
          error: e.message,
        },
      );
      failures.push(e);
    }
  }
  const last = failures[failures.length - 1] as NuropbTransportError;
  const permanent = failures.every((f) => isPermanent(f));
  const listed = failures.map((f) => f.message).join("; ");
  if (failures.every((f) => isAccessRefusal(f))) {
    const refused = (last.details as { refused: "login" | "vhost" }).refused;
    return Promise.reject(
      new NuropbTransportError(`every broker of the cluster refused us: ${listed}`, {
        cause: last,
        retryable: false,
        details: { permanent: true, refused, attempts: failures.length },
      }),
    );
  }
  return Promise.reject(
    new NuropbTransportError(`no broker of the cluster could be reached: ${listed}`, {
      cause: last,
      retryable: !permanent,
      details: { permanent, attempts: failures.length },
    }),
  );
}

/**
 * Opens a connection as a {@link Session} to one of the brokers (see {@link connectAny}):
 * records its errors, marks it `dead` when it closes, and follows the broker blocking and
 * unblocking publishing (resource alarms).
 * @throws NuropbTransportError when no broker can be reached, one refuses us, or a signal aborts.
 */
export async function openSession(p: SessionParams): Promise<Session> {
  const o = p.options;
  const { conn, target } = await connectAny(p);
  const session: Session = {
    id: p.id,
    conn,
    target,
    publisher: undefined,
    publisherOpening: undefined,
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
