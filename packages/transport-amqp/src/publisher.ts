import {
  NuropbMessageError,
  NuropbNotDeliveredError,
  NuropbTransportError,
} from "@nuropb/protocol";
import type { Destination, Logger, TransportLifecycle } from "@nuropb/protocol";
import type { ConfirmChannel, Message } from "amqplib";
import { channelError } from "./connection.ts";
import type { OutgoingMessage } from "./frame-codec.ts";
import { publishOn } from "./publish-frames.ts";
import { closeQuietly, newHandle } from "./session.ts";
import type { ChannelHandle, Session } from "./session.ts";

/** What a publisher needs from its transport. */
export interface PublisherHost {
  readonly log: Logger;
  readonly life: TransportLifecycle;
  /** The broker password, kept out of error texts. */
  readonly password: string | undefined;
  /** The session the transport has installed, if any. */
  current(): Session | undefined;
}

interface PublishEntry {
  readonly exchange: string;
  readonly routingKey: string;
  readonly correlationId: string;
  returned: boolean;
}

/**
 * The confirm channel of one session: publishes, pairs their confirms and basic.returns, and
 * gives way to a fresh channel when the broker closes it or a publish leaves it unusable.
 */
export class Publisher {
  readonly handle: ChannelHandle<ConfirmChannel>;
  readonly #session: Session;
  readonly #host: PublisherHost;
  /** Mandatory publishes awaiting their confirm, in publish order (to pair basic.return). */
  readonly #mandatory: PublishEntry[] = [];
  /** Publishes awaiting their confirm. */
  #pending = 0;
  /** A publish threw: the channel takes no more and closes once `#pending` is 0. */
  #retired = false;

  /** Opens the publisher channel of `session`. */
  static async open(session: Session, host: PublisherHost): Promise<Publisher> {
    const ch = await session.conn.createConfirmChannel();
    return new Publisher(session, host, ch);
  }

  private constructor(session: Session, host: PublisherHost, ch: ConfirmChannel) {
    this.#session = session;
    this.#host = host;
    const handle = newHandle(ch);
    this.handle = handle;
    ch.on("return", (msg: Message) => this.#onReturn(msg));
    ch.on("close", () => {
      handle.closed = true;
      if (handle.closeError === undefined) return; // our close, or the connection's
      if (host.life.ending) return;
      const error = channelError(handle.closeError, "publisher channel closed", host.password);
      if (host.current() !== session) {
        // The session is still being set up (or it is gone): fail that attempt.
        session.dead ??= error;
        return;
      }
      if (session.publisher !== this) return;
      // The broker closed only this channel (e.g. a publish to a missing exchange): the
      // affected sends have been rejected; open a fresh channel, or reconnect if we cannot.
      host.log.warn("publisher channel closed by the broker", { error: error.message });
      host.life.emit({ type: "errored", error });
      this.#replace();
    });
  }

  /**
   * Publishes `out` and resolves on the broker's confirm.
   * @throws NuropbNotDeliveredError when a mandatory message was returned (no queue bound).
   * @throws NuropbTransportError when the broker refused it or the link dropped first.
   */
  publish(out: OutgoingMessage, to: Destination): Promise<void> {
    const { exchange, routingKey, mandatory } = out;
    return new Promise<void>((resolve, reject) => {
      const entry: PublishEntry = {
        exchange,
        routingKey,
        correlationId: out.properties.correlationId ?? "",
        returned: false,
      };
      if (mandatory) this.#mandatory.push(entry);
      this.#pending++;
      let pending = true;
      const forget = (): void => {
        if (!pending) return;
        pending = false;
        this.#pending--;
        if (mandatory) {
          // Confirms come in publish order: usually the oldest.
          const list = this.#mandatory;
          if (list[0] === entry) list.shift();
          else {
            const i = list.indexOf(entry);
            if (i >= 0) list.splice(i, 1);
          }
        }
        this.#closeIfRetired();
      };
      const confirmed = (err: unknown): void => {
        forget();
        if (err !== null && err !== undefined) {
          // RabbitMQ 3.10 keeps nacking every later publish on a channel whose publish a
          // quorum queue refused while it elected a new leader (a node was lost), though
          // a fresh channel is accepted at once: after a nack, publish on a new channel.
          if (isNack(err)) this.#retire(err, "the broker nacked a publish");
          reject(this.#publishError(err, to));
        } else if (entry.returned) {
          reject(
            new NuropbNotDeliveredError(
              `Service ${routingKey} not available: no queue is bound to ${exchange} for it`,
              { details: { service: routingKey } },
            ),
          );
        } else resolve();
      };
      try {
        // One buffer, byte for byte amqplib's; amqplib itself for what that does not cover.
        publishOn(this.handle.ch, out, confirmed);
      } catch (err) {
        forget();
        this.#retire(err, "a publish failed");
        reject(encodeError(err));
      }
    });
  }

  /** Opens a fresh publisher channel for the session; drops the connection if none can be opened. */
  #replace(): void {
    const session = this.#session;
    session.publisher = undefined;
    // Sends in the meantime wait for it (one round trip) instead of failing.
    const opening = Publisher.open(session, this.#host);
    session.publisherOpening = opening;
    opening.then(
      (p) => {
        if (session.publisherOpening === opening) session.publisherOpening = undefined;
        if (this.#host.current() === session) session.publisher = p;
        else void closeQuietly(p.handle.ch);
      },
      () => {
        if (session.publisherOpening === opening) session.publisherOpening = undefined;
        void closeQuietly(session.conn);
      },
    );
  }

  /**
   * A publish threw after amqplib had registered its confirm callback (amqplib encodes after
   * that): the channel's callbacks are now one slot off the broker's delivery tags, so every
   * later publish on it would settle on another's confirm. It takes no more publishes and closes
   * once the earlier ones have their confirms; later sends get a fresh channel.
   */
  #retire(cause: unknown, why: string): void {
    if (this.#retired) return;
    this.#retired = true;
    const error = new NuropbTransportError(
      `publisher channel retired after ${why}: ${(cause as Error)?.message ?? String(cause)}`,
      { cause, retryable: true },
    );
    this.#host.log.warn(`publisher channel retired after ${why}`, { error: error.message });
    this.#host.life.emit({ type: "errored", error });
    this.#closeIfRetired();
    if (this.#host.current() === this.#session && this.#session.publisher === this) {
      this.#replace();
    }
  }

  /** Closes a retired publisher channel once no publish on it awaits its confirm. */
  #closeIfRetired(): void {
    const { handle } = this;
    if (!this.#retired || this.#pending > 0 || handle.closed || handle.retiring) return;
    handle.retiring = true;
    void closeQuietly(handle.ch);
  }

  /** Pairs a basic.return with the earliest unconfirmed mandatory publish it matches. */
  #onReturn(msg: Message): void {
    const correlationId =
      typeof msg.properties.correlationId === "string" ? msg.properties.correlationId : "";
    const entry = this.#mandatory.find(
      (e) =>
        !e.returned &&
        e.exchange === msg.fields.exchange &&
        e.routingKey === msg.fields.routingKey &&
        e.correlationId === correlationId,
    );
    if (entry !== undefined) entry.returned = true;
  }

  #publishError(err: unknown, to: Destination): NuropbTransportError {
    const closeError = this.handle.closeError;
    if (closeError !== undefined) {
      return channelError(
        closeError,
        `the broker refused the ${to.kind} message`,
        this.#host.password,
      );
    }
    if (isNack(err)) {
      return new NuropbTransportError("the broker could not take the message (basic.nack)", {
        cause: err,
        retryable: true,
      });
    }
    return new NuropbTransportError(
      "the connection was lost before the broker confirmed the message; it may or may not have been delivered",
      { cause: err, retryable: true },
    );
  }
}

/** amqplib's error for a basic.nack from the broker. */
function isNack(err: unknown): boolean {
  return ((err as Error)?.message ?? String(err)) === "message nacked";
}

/** What a publish that threw becomes: a frame amqplib cannot encode, or a channel gone. */
function encodeError(err: unknown): Error {
  if (err instanceof TypeError || err instanceof RangeError) {
    return new NuropbMessageError(`cannot encode the frame: ${err.message}`, { cause: err });
  }
  return new NuropbTransportError(`cannot send: ${(err as Error)?.message ?? String(err)}`, {
    cause: err,
    retryable: true,
  });
}
