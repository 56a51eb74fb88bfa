import { NuropbTransportError } from "@nuropb/protocol";
import type { Listener } from "@nuropb/protocol";
import type { Channel, ConsumeMessage, Options } from "amqplib";
import { channelError, isPermanent } from "./connection.ts";
import type { PublisherHost } from "./publisher.ts";
import { closeQuietly, newHandle } from "./session.ts";
import type { ChannelHandle, Session } from "./session.ts";

/** How many times a lost consumer is started again on the same connection before reconnecting. */
const RESTART_ATTEMPTS = 5;
/** The first pause between those attempts, doubled each time (0.1 + 0.2 + 0.4 + 0.8 s). */
const RESTART_PAUSE_MS = 100;

/** What a consumer needs from its transport. */
export interface ConsumerHost extends PublisherHost {
  /** A consumer cannot be re-established and retrying cannot help: close the transport. */
  fail(error: Error): void;
  /** A stopped consumer's channel is closing after its last handler: close() awaits it. */
  retiring(closing: Promise<void>): void;
}

/** What one kind of consumer (service queue, response queue) does on its channel. */
export interface ConsumerRole {
  readonly kind: "service" | "responses";
  readonly queue: string;
  readonly consumeOptions: Options.Consume;
  /** Declares (and binds) the queue on a fresh channel. */
  declare(ch: Channel): Promise<void>;
  /** The consumer is about to consume on `handle`: how that channel's messages are handled. */
  attach(handle: ChannelHandle, consumer: Consumer): ChannelUse;
}

/** A consumer's work on one channel. */
export interface ChannelUse {
  onMessage(msg: ConsumeMessage): void;
  /** Handlers still running: a stopped consumer's channel stays open until none is. */
  readonly running: number;
  /** Writes settlements still waiting (before we close the channel). */
  flush?(): void;
}

/**
 * One listener: its queue consumed on a channel of its own, started again on every new session
 * and after the broker closes its channel or cancels it. Stopping cancels the consumer and
 * closes the channel once no handler runs on it, so the broker gives back what is unsettled.
 */
export class Consumer {
  readonly #role: ConsumerRole;
  readonly #host: ConsumerHost;
  readonly #uses = new WeakMap<ChannelHandle, ChannelUse>();
  #stopped = false;
  /** Channels given up by a restart: each closes once no handler runs on it. */
  readonly #replaced = new WeakSet<ChannelHandle>();
  #handle: ChannelHandle | undefined;
  #consumerTag: string | undefined;

  constructor(role: ConsumerRole, host: ConsumerHost) {
    this.#role = role;
    this.#host = host;
  }

  get kind(): ConsumerRole["kind"] {
    return this.#role.kind;
  }

  get queue(): string {
    return this.#role.queue;
  }

  get stopped(): boolean {
    return this.#stopped;
  }

  /** As a {@link Listener}: `stop` runs {@link stop} after `onStop`. */
  listener(onStop: () => void): Listener {
    const stop = (): Promise<void> => {
      onStop();
      return this.stop();
    };
    return { stop, [Symbol.asyncDispose]: stop };
  }

  /** Declares, binds and consumes the queue on a fresh channel of `session`. */
  async start(session: Session): Promise<void> {
    const host = this.#host;
    const queue = this.queue;
    let ch: Channel;
    try {
      ch = await session.conn.createChannel();
    } catch (err) {
      throw channelError(err, `cannot open a channel for ${queue}`, host.password);
    }
    const handle = newHandle(ch);
    let ready = false;
    ch.on("close", () => {
      handle.closed = true;
      if (!ready || handle.closeError === undefined) return;
      if (this.#handle !== handle || this.#stopped || host.life.ending) return;
      if (host.current() !== session) {
        // The session is still being set up: fail that attempt.
        session.dead ??= channelError(
          handle.closeError,
          `channel of ${queue} closed`,
          host.password,
        );
        return;
      }
      this.#restart(session, handle.closeError);
    });
    const use = this.#role.attach(handle, this);
    this.#uses.set(handle, use);
    try {
      await this.#role.declare(ch);
      const { consumerTag } = await ch.consume(
        queue,
        (msg) => {
          if (msg === null) {
            // The broker cancelled the consumer (e.g. the queue was deleted).
            if (this.#handle !== handle || this.#stopped || host.life.ending) return;
            const cause = new Error(`consumer of ${queue} was cancelled by the broker`);
            if (host.current() !== session) {
              // The session is still being set up: fail that attempt.
              session.dead ??= new NuropbTransportError(cause.message, { retryable: true });
              return;
            }
            this.#restart(session, cause);
            return;
          }
          use.onMessage(msg);
        },
        this.#role.consumeOptions,
      );
      this.#handle = handle;
      this.#consumerTag = consumerTag;
      ready = true;
      if (this.#stopped) {
        // stop() ran while we were (re)starting: do not leave a consumer behind.
        await ch.cancel(consumerTag).catch(() => undefined);
        this.retireIfIdle(handle);
      }
    } catch (err) {
      void closeQuietly(ch);
      throw this.#startError(err);
    }
  }

  /** Listener.stop(): cancels the consumer; the channel closes once no handler runs on it. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    const handle = this.#handle;
    if (handle !== undefined && !handle.closed && this.#consumerTag !== undefined) {
      try {
        await handle.ch.cancel(this.#consumerTag);
      } catch {
        // channel or connection already gone
      }
    }
    this.retireIfIdle(handle);
  }

  /** The transport closes: no deliveries from now on (handlers already running go on). */
  cancel(): Promise<unknown> {
    const handle = this.#handle;
    return handle !== undefined && !handle.closed && this.#consumerTag !== undefined
      ? handle.ch.cancel(this.#consumerTag)
      : Promise.resolve();
  }

  /**
   * The transport closes: the channel closes after the settlements sent on it (a channel's
   * close follows its acks and waits for CloseOk); the broker gives back what is unsettled.
   */
  closeChannel(): Promise<void> {
    const handle = this.#handle;
    if (handle === undefined || handle.closed) return Promise.resolve();
    this.#uses.get(handle)?.flush?.();
    return closeQuietly(handle.ch);
  }

  /** The transport has closed: the consumer is stopped for good. */
  abandon(): void {
    this.#stopped = true;
  }

  /**
   * Closes a stopped consumer's channel (or one a restart replaced) once no handler is running on
   * it: deliveries still unsettled then go back to the queue (redelivered) for another consumer.
   */
  retireIfIdle(handle: ChannelHandle | undefined): void {
    if (handle === undefined || handle.closed || handle.retiring) return;
    if (!this.#stopped && !this.#replaced.has(handle)) return;
    if ((this.#uses.get(handle)?.running ?? 0) > 0) return;
    handle.retiring = true;
    this.#uses.get(handle)?.flush?.();
    this.#host.retiring(closeQuietly(handle.ch));
  }

  /**
   * The channel or consumer went away while the connection stayed up (the broker closed the
   * channel, or sent basic.cancel: the queue was deleted, or its node went away): declare and
   * consume again on a fresh channel. A failure that may pass (a quorum queue still electing its
   * leader) is retried {@link RESTART_ATTEMPTS} times with a growing pause, each logged; then
   * the connection is dropped so the reconnect declares everything again. A permanent refusal
   * closes the transport with its reason.
   */
  #restart(session: Session, cause: Error, attempt = 0): void {
    const host = this.#host;
    const old = this.#handle;
    this.#handle = undefined;
    this.#consumerTag = undefined;
    if (old !== undefined && !old.closed) {
      // Its running handlers may still settle on it: it closes after the last one.
      this.#replaced.add(old);
      this.retireIfIdle(old);
    }
    const error = channelError(cause, `consumer of ${this.queue} lost`, host.password);
    if (attempt === 0) {
      host.log.warn("consumer lost, re-establishing", { queue: this.queue, error: error.message });
      host.life.emit({ type: "errored", error });
    }
    this.start(session).then(
      () => {
        host.log.info("consuming again", { queue: this.queue, attempts: attempt + 1 });
      },
      (err: unknown) => {
        if (host.life.ending || this.#stopped) return;
        const message = (err as Error)?.message ?? String(err);
        if (isPermanent(err)) {
          host.log.error("cannot re-establish consumer, closing", {
            queue: this.queue,
            error: message,
          });
          host.fail(err as Error);
        } else if (attempt + 1 < RESTART_ATTEMPTS && host.current() === session) {
          const pauseMs = RESTART_PAUSE_MS * 2 ** attempt;
          host.log.warn("consumer not re-established, retrying", {
            queue: this.queue,
            attempt: attempt + 1,
            pauseMs,
            error: message,
          });
          const timer = setTimeout(() => {
            if (host.life.ending || this.#stopped || host.current() !== session) return;
            this.#restart(session, err as Error, attempt + 1);
          }, pauseMs);
          timer.unref?.();
        } else {
          host.log.warn("consumer not re-established, reconnecting", {
            queue: this.queue,
            attempts: attempt + 1,
            error: message,
          });
          // Reconnect and re-declare everything; after this turn, so that the acks settled in
          // it (written at the end of the tick, settlements.ts) go out before the close.
          setImmediate(() => void closeQuietly(session.conn));
        }
      },
    );
  }

  #startError(err: unknown): NuropbTransportError {
    const raw = (err as Error)?.message ?? String(err);
    const password = this.#host.password;
    if (this.kind === "responses" && /exclusive use|RESOURCE_LOCKED/.test(raw)) {
      return channelError(
        err,
        `response address '${this.queue}' is already consumed by another participant (same service name and instance id?)`,
        password,
      );
    }
    return channelError(
      err,
      this.kind === "service"
        ? `cannot set up service queue ${this.queue}`
        : `cannot consume response queue ${this.queue}`,
      password,
    );
  }
}
