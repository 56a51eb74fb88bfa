import {
  CONTENT_TYPE_JSON,
  Header,
  LifecycleState,
  MessageType,
  NuropbMessageError,
  NuropbNotDeliveredError,
  NuropbTransportError,
  assertFrameTtl,
  assertTopicPattern,
  createTransportLifecycle,
  serviceQueueName,
} from "@nuropb/protocol";
import type {
  Delivery,
  DeliveryHandler,
  Destination,
  Frame,
  InboundFrame,
  Listener,
  Logger,
  ResponseHandler,
  ResponseQueueSpec,
  ServiceQueueSpec,
  Transport,
  TransportCapabilities,
  TransportEvent,
  WireHeaders,
} from "@nuropb/protocol";
import type {
  Channel,
  ChannelModel,
  ConfirmChannel,
  ConsumeMessage,
  Message,
  Options,
} from "amqplib";
import {
  channelError,
  connectError,
  isAccessRefusal,
  isPermanent,
  openConnection,
} from "./connection.ts";
import { describeTarget, resolveOptions } from "./options.ts";
import type { AmqpTransportOptions, ResolvedOptions } from "./options.ts";

/**
 * Creates a RabbitMQ transport speaking the Python NuroPb 0.1.x wire (PROTOCOL.md §2, §3).
 * Constructing it does no I/O; call `connect()`.
 * @throws TypeError when an option is invalid (a URL's password is never echoed).
 * @example
 * ```ts
 * const transport = createAmqpTransport({ url: "amqp://guest:guest@localhost:5672/nuropb" });
 * await transport.connect();
 * ```
 */
export function createAmqpTransport(options: AmqpTransportOptions = {}): Transport {
  return new AmqpTransport(resolveOptions(options));
}

interface ChannelHandle {
  readonly ch: Channel;
  /** The channel is gone; settling its deliveries is a no-op. */
  closed: boolean;
  /** Set when the broker closed the channel (an `error` event precedes `close`). */
  closeError: Error | undefined;
  /** Handlers of this channel's deliveries whose promise has not settled yet. */
  running: number;
  /** We asked the channel to close. */
  retiring: boolean;
}

interface PublishEntry {
  readonly exchange: string;
  readonly routingKey: string;
  readonly correlationId: string;
  returned: boolean;
}

interface Publisher {
  readonly handle: ChannelHandle & { readonly ch: ConfirmChannel };
  /** Mandatory publishes awaiting their confirm, in publish order (to pair basic.return). */
  readonly mandatory: PublishEntry[];
  /** Publishes awaiting their confirm. */
  pending: number;
  /** A publish threw: the channel takes no more and closes once `pending` is 0. */
  retired: boolean;
}

interface Session {
  readonly id: number;
  readonly conn: ChannelModel;
  publisher: Publisher | undefined;
  lastError: Error | undefined;
  /**
   * Set, whether or not the session is installed yet, once its connection closed or its
   * publisher channel or a consumer died with nobody to repair it: `#establish` then refuses to
   * install it (a failed attempt, retried) instead of running "open" on a dead connection.
   */
  dead: Error | undefined;
  /** The broker's reason while it blocks this connection's publishing (a resource alarm). */
  blocked: string | undefined;
}

interface ListenerState {
  readonly kind: "service" | "responses";
  readonly queue: string;
  readonly declare: (ch: Channel) => Promise<void>;
  readonly consumeOptions: Options.Consume;
  readonly onMessage: (msg: ConsumeMessage, handle: ChannelHandle) => void;
  stopped: boolean;
  handle: ChannelHandle | undefined;
  consumerTag: string | undefined;
}

const RESOLVED: Promise<void> = Promise.resolve();

/** AMQP `delivery_mode` of a message the broker writes to disk in a durable queue. */
const PERSISTENT = 2;

class AmqpTransport implements Transport {
  readonly kind = "amqp";
  readonly mesh: string;
  readonly capabilities: TransportCapabilities;

  readonly #o: ResolvedOptions;
  readonly #log: Logger;
  readonly #life = createTransportLifecycle("AMQP");
  readonly #listeners = new Set<ListenerState>();
  readonly #inflight = new Set<Promise<unknown>>();
  /** close() is waiting for running handlers: their replies (only) may still be sent. */
  #draining = false;
  /** Closes of stopped listeners' channels (after their last handler): close() awaits them. */
  readonly #retiringChannels = new Set<Promise<void>>();
  /** Delivery handlers whose promise has not settled yet, on every listener. */
  #handlersRunning = 0;
  /** Set while close() waits for `#handlersRunning` to reach 0. */
  #onHandlersIdle: (() => void) | undefined;
  /** Aborted by close(): stops connect and reconnect loops. */
  readonly #shutdown = new AbortController();

  #session: Session | undefined;
  #sessionSeq = 0;
  #connectTask: Promise<void> | undefined;
  #reconnectTask: Promise<void> | undefined;

  constructor(options: ResolvedOptions) {
    this.#o = options;
    this.mesh = options.target.vhost;
    this.capabilities = Object.freeze({
      notDelivered: true,
      redelivery: true,
      deadLetter: true,
      messageTtl: true,
      maxFrameBytes: options.maxFrameBytes,
    });
    this.#log = options.logger.child({
      component: "transport-amqp",
      target: describeTarget(options.target),
      connectionName: options.connectionName,
    });
  }

  get state(): LifecycleState {
    return this.#life.state;
  }

  // ---------------------------------------------------------------- lifecycle

  connect(options?: { readonly signal?: AbortSignal }): Promise<void> {
    if (this.#life.state === LifecycleState.open) return RESOLVED;
    if (this.#life.ending) return Promise.reject(this.#life.closedError());
    if (this.#connectTask !== undefined) return this.#connectTask;
    if (this.#reconnectTask !== undefined) {
      return this.#reconnectTask.then(() => {
        if (this.#life.state !== LifecycleState.open) throw this.#life.closedError();
      });
    }
    this.#life.state = LifecycleState.connecting;
    const task = this.#initialConnect(options?.signal).finally(() => {
      this.#connectTask = undefined;
    });
    this.#connectTask = task;
    return task;
  }

  close(): Promise<void> {
    return this.#close(undefined);
  }

  closed(): Promise<Error | undefined> {
    return this.#life.closed();
  }

  events(): AsyncIterable<TransportEvent> {
    return this.#life.events();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #initialConnect(signal: AbortSignal | undefined): Promise<void> {
    const deadline = Date.now() + this.#o.connectTimeoutMs;
    for (let attempt = 0; ; attempt++) {
      if (this.#shutdown.signal.aborted) throw this.#life.closedError();
      if (signal?.aborted) {
        this.#life.state = LifecycleState.idle;
        throw new NuropbTransportError("connect() was aborted", { cause: signal.reason });
      }
      try {
        const remaining = Math.max(1, deadline - Date.now());
        await this.#establish(Math.min(remaining, this.#o.connectTimeoutMs), signal);
        this.#life.state = LifecycleState.open;
        this.#log.info("connected");
        return;
      } catch (err) {
        if (this.#shutdown.signal.aborted) throw this.#life.closedError();
        const e = toTransportError(err, this.#o);
        if (signal?.aborted) {
          this.#life.state = LifecycleState.idle;
          throw new NuropbTransportError("connect() was aborted", { cause: signal.reason });
        }
        if (isPermanent(e) || Date.now() >= deadline) {
          this.#life.state = LifecycleState.idle;
          this.#log.warn("connect failed", { error: e.message });
          throw e;
        }
        this.#log.debug("connect attempt failed, retrying", { attempt, error: e.message });
        await sleep(Math.min(this.#backoff(attempt), Math.max(0, deadline - Date.now())), [
          this.#shutdown.signal,
          signal,
        ]);
      }
    }
  }

  /** Opens a connection and publisher channel, and starts every registered listener on it. */
  async #establish(timeoutMs: number, signal?: AbortSignal): Promise<void> {
    const conn = await raceAbort(
      openConnection({
        target: this.#o.target,
        tls: this.#o.tls,
        heartbeatSec: this.#o.heartbeatSec,
        timeoutMs,
        connectionName: this.#o.connectionName,
        clientProperties: this.#o.clientProperties,
      }),
      [this.#shutdown.signal, signal],
      (late) => {
        late.on("error", () => undefined);
        void late.close().catch(() => undefined);
      },
    );
    const session: Session = {
      id: ++this.#sessionSeq,
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
          : channelError(reason, "connection lost", this.#o.target.password);
      this.#onConnectionClosed(session, reason);
    });
    conn.on("blocked", (reason: unknown) => {
      session.blocked = typeof reason === "string" && reason !== "" ? reason : "no reason given";
      this.#log.warn("broker blocked publishing (resource alarm)", { reason: session.blocked });
    });
    conn.on("unblocked", () => {
      session.blocked = undefined;
      this.#log.info("broker unblocked publishing");
    });
    try {
      session.publisher = await this.#openPublisher(session);
      for (const l of this.#listeners) {
        if (!l.stopped) await this.#startListener(session, l);
      }
      if (this.#shutdown.signal.aborted || signal?.aborted === true) {
        throw new NuropbTransportError("aborted");
      }
      if (session.dead !== undefined) {
        // Something died while we were still awaiting: nobody else will notice it.
        throw new NuropbTransportError(
          `the connection failed while it was being set up: ${session.dead.message}`,
          { cause: session.dead, retryable: true },
        );
      }
    } catch (err) {
      await closeQuietly(conn);
      throw err;
    }
    this.#session = session;
  }

  #onConnectionClosed(session: Session, err: Error | undefined): void {
    if (this.#session !== session) return;
    this.#session = undefined;
    if (this.#life.ending) return;
    const code = (err as { code?: unknown } | undefined)?.code;
    const error =
      err === undefined
        ? new NuropbTransportError("connection closed", { retryable: true })
        : channelError(err, "connection lost", this.#o.target.password);
    this.#log.warn("disconnected", { error: error.message });
    this.#life.emit({ type: "disconnected", error });
    if (code === 403 || code === 530) {
      // The broker revoked our access: retrying cannot help.
      void this.#close(error);
      return;
    }
    this.#startReconnect();
  }

  #startReconnect(): void {
    if (this.#reconnectTask !== undefined || this.#life.ending) return;
    this.#life.state = LifecycleState.connecting;
    const task = (async () => {
      for (let attempt = 0; ; attempt++) {
        await sleep(this.#backoff(attempt), [this.#shutdown.signal]);
        if (this.#shutdown.signal.aborted) return;
        try {
          await this.#establish(this.#o.connectTimeoutMs);
          this.#life.state = LifecycleState.open;
          this.#log.info("reconnected", { attempts: attempt + 1 });
          this.#life.emit({ type: "reconnected" });
          return;
        } catch (err) {
          if (this.#shutdown.signal.aborted) return;
          const e = toTransportError(err, this.#o);
          // Only a refused login or vhost ends the transport here: anything else (a TLS reset,
          // DNS while the broker's container restarts, the response queue still held by the
          // old connection's exclusive consumer) may pass, so the loop keeps trying.
          if (isAccessRefusal(e)) {
            this.#log.error("reconnect refused, closing", { error: e.message });
            void this.#close(e);
            return;
          }
          const fields = { attempt, error: e.message };
          if (isPermanent(e)) this.#log.warn("reconnect attempt failed, retrying", fields);
          else this.#log.debug("reconnect attempt failed, retrying", fields);
        }
      }
    })().finally(() => {
      this.#reconnectTask = undefined;
    });
    this.#reconnectTask = task;
  }

  #backoff(attempt: number): number {
    const base = Math.min(this.#o.maxDelayMs, this.#o.initialDelayMs * 2 ** Math.min(attempt, 30));
    return Math.round(base / 2 + (Math.random() * base) / 2);
  }

  #close(reason: Error | undefined): Promise<void> {
    const wasIdle = this.#life.state === LifecycleState.idle;
    return this.#life.close(async () => {
      this.#shutdown.abort();
      await this.#connectTask?.catch(() => undefined);
      await this.#reconnectTask?.catch(() => undefined);
      const session = this.#session;
      if (session !== undefined) {
        // Stop deliveries first, then let outstanding confirms arrive, then close.
        await withDeadline(
          Promise.allSettled(
            [...this.#listeners].map((l) =>
              l.handle !== undefined && !l.handle.closed && l.consumerTag !== undefined
                ? l.handle.ch.cancel(l.consumerTag)
                : RESOLVED,
            ),
          ),
          this.#o.closeTimeoutMs,
        );
        // Handlers already running finish (bounded): they may still reply and settle.
        this.#draining = true;
        await this.#handlersIdle(this.#o.closeTimeoutMs);
        this.#draining = false;
        await withDeadline(Promise.allSettled([...this.#inflight]), this.#o.closeTimeoutMs);
        // Settlements go out on their consumer channel, connection.close on channel 0: amqplib
        // may write the latter first, and the broker drops what follows it (the acks: the
        // messages would come back). A channel's close follows its acks and waits for CloseOk.
        await withDeadline(
          Promise.allSettled([
            ...[...this.#listeners].map((l) =>
              l.handle !== undefined && !l.handle.closed ? closeQuietly(l.handle.ch) : RESOLVED,
            ),
            ...this.#retiringChannels,
          ]),
          this.#o.closeTimeoutMs,
        );
        this.#session = undefined;
        await withDeadline(closeQuietly(session.conn), this.#o.closeTimeoutMs);
      }
      for (const l of this.#listeners) l.stopped = true;
      this.#listeners.clear();
      if (!wasIdle || reason !== undefined) {
        this.#log.info("closed", reason === undefined ? {} : { reason: reason.message });
      }
    }, reason);
  }

  /**
   * Resolves once no delivery handler is running (on any listener, stopped ones included: their
   * handlers may still reply and settle), or after `timeoutMs`.
   */
  #handlersIdle(timeoutMs: number): Promise<void> {
    if (this.#handlersRunning === 0) return RESOLVED;
    return new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.#onHandlersIdle = undefined;
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.#onHandlersIdle = done;
    });
  }

  /**
   * Rejects unless the transport can talk to the broker right now. `reply`: a response, which
   * handlers still running while close() drains may send (nothing else may start then).
   */
  #requireOpen(what: string, reply = false): Session {
    if (reply && this.#draining && this.#session !== undefined) return this.#session;
    if (this.#life.ending) throw this.#life.closedError();
    const s = this.#session;
    if (this.#life.state !== LifecycleState.open || s === undefined) {
      throw new NuropbTransportError(
        this.#life.state === LifecycleState.idle
          ? `cannot ${what}: the transport is not connected (call connect() first)`
          : `cannot ${what}: the connection to the broker is down (reconnecting)`,
        { retryable: this.#life.state !== LifecycleState.idle },
      );
    }
    return s;
  }

  // ---------------------------------------------------------------- publishing

  async #openPublisher(session: Session): Promise<Publisher> {
    const ch = await session.conn.createConfirmChannel();
    const handle = newHandle(ch);
    const publisher: Publisher = { handle, mandatory: [], pending: 0, retired: false };
    ch.on("error", (err: Error) => {
      handle.closeError = err;
    });
    ch.on("return", (msg: Message) => onReturn(publisher, msg));
    ch.on("close", () => {
      handle.closed = true;
      if (handle.closeError === undefined) return; // our close, or the connection's
      if (this.#life.ending) return;
      const error = channelError(
        handle.closeError,
        "publisher channel closed",
        this.#o.target.password,
      );
      if (this.#session !== session) {
        // #establish is still setting the session up (or it is gone): fail that attempt.
        session.dead ??= error;
        return;
      }
      if (session.publisher !== publisher) return;
      // The broker closed only this channel (e.g. a publish to a missing exchange): the
      // affected sends have been rejected; open a fresh channel, or reconnect if we cannot.
      this.#log.warn("publisher channel closed by the broker", { error: error.message });
      this.#life.emit({ type: "errored", error });
      this.#replacePublisher(session);
    });
    return publisher;
  }

  /** Opens a fresh publisher channel for `session`; drops the connection if none can be opened. */
  #replacePublisher(session: Session): void {
    session.publisher = undefined;
    this.#openPublisher(session).then(
      (p) => {
        if (this.#session === session) session.publisher = p;
        else void closeQuietly(p.handle.ch);
      },
      () => void closeQuietly(session.conn),
    );
  }

  /**
   * A publish threw after amqplib had registered its confirm callback (amqplib encodes after
   * that): the channel's callbacks are now one slot off the broker's delivery tags, so every
   * later publish on it would settle on another's confirm. It takes no more publishes and closes
   * once the earlier ones have their confirms; later sends get a fresh channel.
   */
  #retirePublisher(session: Session, publisher: Publisher, cause: unknown): void {
    if (publisher.retired) return;
    publisher.retired = true;
    const error = new NuropbTransportError(
      `publisher channel retired after a publish failed: ${(cause as Error)?.message ?? String(cause)}`,
      { cause, retryable: true },
    );
    this.#log.warn("publisher channel retired after a publish failed", { error: error.message });
    this.#life.emit({ type: "errored", error });
    closeIfRetired(publisher);
    if (this.#session === session && session.publisher === publisher) {
      this.#replacePublisher(session);
    }
  }

  send(to: Destination, frame: Frame): Promise<void> {
    let p: Promise<void>;
    try {
      p = this.#publish(to, frame);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    this.#inflight.add(p);
    const done = (): void => void this.#inflight.delete(p);
    p.then(done, done);
    return p;
  }

  #publish(to: Destination, frame: Frame): Promise<void> {
    const body = frame.body;
    if (!(body instanceof Uint8Array))
      throw new NuropbMessageError("frame.body must be a Uint8Array");
    if (body.byteLength > this.#o.maxFrameBytes) {
      throw new NuropbMessageError(
        `frame body of ${body.byteLength} bytes exceeds maxFrameBytes (${this.#o.maxFrameBytes})`,
      );
    }
    if (typeof frame.correlationId !== "string") {
      throw new NuropbMessageError("frame.correlationId must be a string");
    }
    // AMQP short strings: amqplib would throw while encoding, after registering the confirm.
    if (Buffer.byteLength(frame.correlationId) > 255) {
      throw new NuropbMessageError(
        `frame.correlationId must be at most 255 UTF-8 bytes, got ${Buffer.byteLength(frame.correlationId)}`,
      );
    }
    const replyTo: unknown = frame.replyTo ?? "";
    if (typeof replyTo !== "string") {
      throw new NuropbMessageError(`frame.replyTo must be a string, got ${typeof replyTo}`);
    }
    if (Buffer.byteLength(replyTo) > 255) {
      throw new NuropbMessageError(
        `frame.replyTo must be at most 255 UTF-8 bytes, got ${Buffer.byteLength(replyTo)}`,
      );
    }
    let exchange: string;
    let routingKey: string;
    let mandatory = false;
    // What send() resolved for must outlive a broker restart: commands and events are published
    // persistent into the durable service queues. A request is only when asked (its caller's
    // connection does not survive the restart either), a response never. The kind is read from
    // the `nuropb_type` header (PROTOCOL.md §3); an rpc frame without a known one is kept too.
    let persistent = false;
    switch (to.kind) {
      case "rpc":
        exchange = this.#o.rpcExchange;
        routingKey = to.service;
        mandatory = true;
        persistent =
          this.#o.persistentRequests || frame.headers?.[Header.type] !== MessageType.request;
        break;
      case "event":
        exchange = this.#o.eventsExchange;
        routingKey = to.topic;
        persistent = true;
        break;
      case "reply":
        exchange = "";
        routingKey = to.address;
        break;
      default:
        throw new NuropbMessageError(
          `unknown destination kind ${String((to as { kind?: unknown }).kind)}`,
        );
    }
    if (
      typeof routingKey !== "string" ||
      routingKey === "" ||
      Buffer.byteLength(routingKey) > 255
    ) {
      throw new NuropbMessageError(
        `destination ${to.kind} needs a non-empty name of at most 255 bytes, got ${JSON.stringify(routingKey)}`,
      );
    }
    for (const key of Object.keys(frame.headers ?? {})) {
      if (Buffer.byteLength(key) > 255) {
        throw new NuropbMessageError(
          `frame.headers: the header name ${JSON.stringify(key.slice(0, 40))}… is over 255 UTF-8 bytes`,
        );
      }
    }
    const ttl = frame.ttlMs;
    assertFrameTtl(ttl);
    const properties: Options.Publish = {
      contentType: CONTENT_TYPE_JSON,
      correlationId: frame.correlationId,
      replyTo,
      headers: { ...frame.headers },
      ...(persistent ? { deliveryMode: PERSISTENT } : {}),
      ...(ttl !== undefined && ttl > 0 ? { expiration: String(ttl) } : {}),
      ...(mandatory ? { mandatory: true } : {}),
    };
    const session = this.#requireOpen("send", to.kind === "reply");
    if (session.blocked !== undefined) {
      // The broker would hold the message (and its confirm) until the alarm clears.
      throw new NuropbTransportError(
        `cannot send: the broker blocked publishing (resource alarm: ${session.blocked})`,
        { retryable: true, details: { blocked: session.blocked } },
      );
    }
    const publisher = session.publisher;
    if (publisher === undefined || publisher.handle.closed) {
      throw new NuropbTransportError("cannot send: the publisher channel is being re-opened", {
        retryable: true,
      });
    }
    const content = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
    return new Promise<void>((resolve, reject) => {
      const entry: PublishEntry = {
        exchange,
        routingKey,
        correlationId: frame.correlationId,
        returned: false,
      };
      if (mandatory) publisher.mandatory.push(entry);
      publisher.pending++;
      let pending = true;
      const forget = (): void => {
        if (!pending) return;
        pending = false;
        publisher.pending--;
        if (mandatory) {
          const i = publisher.mandatory.indexOf(entry);
          if (i >= 0) publisher.mandatory.splice(i, 1);
        }
        closeIfRetired(publisher);
      };
      try {
        publisher.handle.ch.publish(exchange, routingKey, content, properties, (err: unknown) => {
          forget();
          if (err !== null && err !== undefined) {
            reject(this.#publishError(err, publisher, to));
          } else if (entry.returned) {
            reject(
              new NuropbNotDeliveredError(
                `Service ${routingKey} not available: no queue is bound to ${exchange} for it`,
                { details: { service: routingKey } },
              ),
            );
          } else resolve();
        });
      } catch (err) {
        forget();
        this.#retirePublisher(session, publisher, err);
        if (err instanceof TypeError || err instanceof RangeError) {
          reject(new NuropbMessageError(`cannot encode the frame: ${err.message}`, { cause: err }));
        } else {
          reject(
            new NuropbTransportError(`cannot send: ${(err as Error)?.message ?? String(err)}`, {
              cause: err,
              retryable: true,
            }),
          );
        }
      }
    });
  }

  #publishError(err: unknown, publisher: Publisher, to: Destination): NuropbTransportError {
    const closeError = publisher.handle.closeError;
    if (closeError !== undefined) {
      return channelError(
        closeError,
        `the broker refused the ${to.kind} message`,
        this.#o.target.password,
      );
    }
    const message = (err as Error)?.message ?? String(err);
    if (message === "message nacked") {
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

  // ---------------------------------------------------------------- consuming

  async consumeService(spec: ServiceQueueSpec, handler: DeliveryHandler): Promise<Listener> {
    checkServiceSpec(spec);
    if (typeof handler !== "function")
      throw new TypeError("consumeService: handler must be a function");
    const queue = serviceQueueName(spec.service);
    const rpcKeys = [...new Set([spec.service, ...spec.rpcBindings])];
    const eventKeys = [...new Set(spec.eventBindings)];
    const { rpcExchange, eventsExchange, dlExchange } = this.#o;
    const state: ListenerState = {
      kind: "service",
      queue,
      declare: async (ch) => {
        await ch.prefetch(spec.prefetch, false);
        // Exactly the flags and arguments Python declares (PROTOCOL.md §2.3), or the broker
        // refuses one of the two with 406 PRECONDITION_FAILED.
        await ch.assertQueue(queue, {
          durable: true,
          exclusive: false,
          autoDelete: false,
          arguments: { "x-dead-letter-exchange": dlExchange },
        });
        await Promise.all([
          ...rpcKeys.map((k) => ch.bindQueue(queue, rpcExchange, k)),
          ...eventKeys.map((k) => ch.bindQueue(queue, eventsExchange, k)),
        ]);
      },
      consumeOptions: { noAck: false, exclusive: false },
      onMessage: (msg, handle) => this.#dispatchService(state, handle, msg, handler),
      stopped: false,
      handle: undefined,
      consumerTag: undefined,
    };
    return this.#addListener(state);
  }

  async consumeResponses(spec: ResponseQueueSpec, handler: ResponseHandler): Promise<Listener> {
    if (
      typeof spec?.address !== "string" ||
      spec.address === "" ||
      Buffer.byteLength(spec.address) > 255
    ) {
      throw new TypeError(
        "consumeResponses: spec.address must be a non-empty string of at most 255 bytes",
      );
    }
    if (typeof handler !== "function")
      throw new TypeError("consumeResponses: handler must be a function");
    const queue = spec.address;
    const state: ListenerState = {
      kind: "responses",
      queue,
      declare: async (ch) => {
        await ch.assertQueue(queue, { durable: false, exclusive: false, autoDelete: true });
      },
      consumeOptions: { noAck: true, exclusive: true },
      onMessage: (msg) => {
        if (state.stopped) return;
        try {
          // Typed as returning nothing, but an async handler returns a promise: its
          // rejection is logged here instead of becoming an unhandled rejection.
          const r: unknown = handler(toInboundFrame(msg));
          if (isPromiseLike(r)) {
            r.then(undefined, (err: unknown) => {
              this.#log.warn("response handler failed", {
                error: (err as Error)?.message ?? String(err),
              });
            });
          }
        } catch (err) {
          this.#log.warn("response handler threw", { error: (err as Error)?.message });
        }
      },
      stopped: false,
      handle: undefined,
      consumerTag: undefined,
    };
    return this.#addListener(state);
  }

  async #addListener(state: ListenerState): Promise<Listener> {
    const session = this.#requireOpen(
      state.kind === "service" ? "consume a service queue" : "consume responses",
    );
    await this.#startListener(session, state);
    if (this.#life.ending) {
      state.stopped = true;
      throw this.#life.closedError();
    }
    this.#listeners.add(state);
    this.#log.info("consuming", { queue: state.queue, kind: state.kind });
    const stop = (): Promise<void> => this.#stopListener(state);
    return { stop, [Symbol.asyncDispose]: stop };
  }

  /** Declares, binds and consumes one listener's queue on a fresh channel of `session`. */
  async #startListener(session: Session, l: ListenerState): Promise<void> {
    let ch: Channel;
    try {
      ch = await session.conn.createChannel();
    } catch (err) {
      throw channelError(err, `cannot open a channel for ${l.queue}`, this.#o.target.password);
    }
    const handle = newHandle(ch);
    let ready = false;
    ch.on("error", (err: Error) => {
      handle.closeError = err;
    });
    ch.on("close", () => {
      handle.closed = true;
      if (!ready || handle.closeError === undefined) return;
      if (l.handle !== handle || l.stopped || this.#life.ending) return;
      if (this.#session !== session) {
        // #establish is still setting the session up: fail that attempt.
        session.dead ??= channelError(
          handle.closeError,
          `channel of ${l.queue} closed`,
          this.#o.target.password,
        );
        return;
      }
      this.#restartListener(session, l, handle.closeError);
    });
    try {
      await l.declare(ch);
      const { consumerTag } = await ch.consume(
        l.queue,
        (msg) => {
          if (msg === null) {
            // The broker cancelled the consumer (e.g. the queue was deleted).
            if (l.handle !== handle || l.stopped || this.#life.ending) return;
            const cause = new Error(`consumer of ${l.queue} was cancelled by the broker`);
            if (this.#session !== session) {
              // #establish is still setting the session up: fail that attempt.
              session.dead ??= new NuropbTransportError(cause.message, { retryable: true });
              return;
            }
            this.#restartListener(session, l, cause);
            return;
          }
          l.onMessage(msg, handle);
        },
        l.consumeOptions,
      );
      l.handle = handle;
      l.consumerTag = consumerTag;
      ready = true;
      if (l.stopped) {
        // stop() ran while we were (re)starting: do not leave a consumer behind.
        await ch.cancel(consumerTag).catch(() => undefined);
        this.#maybeRetire(l, handle);
      }
    } catch (err) {
      void closeQuietly(ch);
      throw this.#listenerError(err, l);
    }
  }

  #listenerError(err: unknown, l: ListenerState): NuropbTransportError {
    const raw = (err as Error)?.message ?? String(err);
    if (l.kind === "responses" && /exclusive use|RESOURCE_LOCKED/.test(raw)) {
      return channelError(
        err,
        `response address '${l.queue}' is already consumed by another participant (same service name and instance id?)`,
        this.#o.target.password,
      );
    }
    return channelError(
      err,
      l.kind === "service"
        ? `cannot set up service queue ${l.queue}`
        : `cannot consume response queue ${l.queue}`,
      this.#o.target.password,
    );
  }

  /** A listener's channel or consumer went away while the connection stayed up: start it again. */
  #restartListener(session: Session, l: ListenerState, cause: Error): void {
    const old = l.handle;
    l.handle = undefined;
    l.consumerTag = undefined;
    if (old !== undefined && !old.closed) {
      old.retiring = true;
      void closeQuietly(old.ch);
    }
    const error = channelError(cause, `consumer of ${l.queue} lost`, this.#o.target.password);
    this.#log.warn("consumer lost, re-establishing", { queue: l.queue, error: error.message });
    this.#life.emit({ type: "errored", error });
    this.#startListener(session, l).then(undefined, (err: unknown) => {
      if (this.#life.ending || l.stopped) return;
      if (isPermanent(err)) {
        this.#log.error("cannot re-establish consumer, closing", {
          queue: l.queue,
          error: (err as Error).message,
        });
        void this.#close(err as Error);
      } else {
        void closeQuietly(session.conn); // reconnect and re-declare everything
      }
    });
  }

  #dispatchService(
    l: ListenerState,
    handle: ChannelHandle,
    msg: ConsumeMessage,
    handler: DeliveryHandler,
  ): void {
    if (l.stopped) return; // it goes back to the queue when the channel closes
    let settled = false;
    const settle = (how: "ack" | "requeue" | "reject"): Promise<void> => {
      if (settled) return RESOLVED;
      settled = true;
      if (!handle.closed) {
        try {
          if (how === "ack") handle.ch.ack(msg);
          else if (how === "requeue") handle.ch.nack(msg, false, true);
          else handle.ch.reject(msg, false);
        } catch (err) {
          // The channel went away under us: the broker redelivers the message.
          this.#log.debug("settle on a closed channel ignored", {
            how,
            error: (err as Error)?.message,
          });
        }
      }
      return RESOLVED;
    };
    const delivery: Delivery = {
      ...toInboundFrame(msg),
      ack: () => settle("ack"),
      requeue: () => settle("requeue"),
      reject: () => settle("reject"),
    };
    const failed = (err: unknown): void => {
      this.#log.warn("delivery handler threw", {
        queue: l.queue,
        error: (err as Error)?.message ?? String(err),
      });
      if (!settled) void settle("reject");
    };
    try {
      const r = handler(delivery);
      if (r !== undefined && r !== null && typeof (r as Promise<void>).then === "function") {
        // A running handler keeps a stopped listener's channel open so it can still settle.
        handle.running++;
        this.#handlersRunning++;
        const finished = (): void => {
          handle.running--;
          this.#maybeRetire(l, handle);
          if (--this.#handlersRunning === 0) this.#onHandlersIdle?.();
        };
        (r as Promise<void>).then(finished, (err: unknown) => {
          failed(err);
          finished();
        });
      }
    } catch (err) {
      failed(err);
    }
  }

  async #stopListener(l: ListenerState): Promise<void> {
    if (l.stopped) return;
    l.stopped = true;
    this.#listeners.delete(l);
    const handle = l.handle;
    if (handle !== undefined && !handle.closed && l.consumerTag !== undefined) {
      try {
        await handle.ch.cancel(l.consumerTag);
      } catch {
        // channel or connection already gone
      }
    }
    this.#maybeRetire(l, handle);
  }

  /**
   * Closes a stopped listener's channel once no handler is running on it: deliveries still
   * unsettled then go back to the queue (redelivered) for another consumer.
   */
  #maybeRetire(l: ListenerState, handle: ChannelHandle | undefined): void {
    if (!l.stopped || handle === undefined || handle.closed || handle.retiring) return;
    if (handle.running > 0) return;
    handle.retiring = true;
    const closing = closeQuietly(handle.ch);
    this.#retiringChannels.add(closing);
    void closing.finally(() => this.#retiringChannels.delete(closing));
  }
}

// ------------------------------------------------------------------ helpers

function newHandle<C extends Channel>(ch: C): ChannelHandle & { readonly ch: C } {
  return { ch, closed: false, closeError: undefined, running: 0, retiring: false };
}

function isPromiseLike(x: unknown): x is PromiseLike<unknown> {
  return (
    (typeof x === "object" || typeof x === "function") &&
    x !== null &&
    typeof (x as { then?: unknown }).then === "function"
  );
}

/** Closes a retired publisher channel once no publish on it awaits its confirm. */
function closeIfRetired(publisher: Publisher): void {
  const { handle } = publisher;
  if (!publisher.retired || publisher.pending > 0 || handle.closed || handle.retiring) return;
  handle.retiring = true;
  void closeQuietly(handle.ch);
}

/** Pairs a basic.return with the earliest unconfirmed mandatory publish it matches. */
function onReturn(publisher: Publisher, msg: Message): void {
  const correlationId =
    typeof msg.properties.correlationId === "string" ? msg.properties.correlationId : "";
  const entry = publisher.mandatory.find(
    (e) =>
      !e.returned &&
      e.exchange === msg.fields.exchange &&
      e.routingKey === msg.fields.routingKey &&
      e.correlationId === correlationId,
  );
  if (entry !== undefined) entry.returned = true;
}

/** Maps an AMQP message to the transport's inbound frame (PROTOCOL.md §3, §5). */
function toInboundFrame(msg: Message): InboundFrame {
  const p = msg.properties;
  const ttl = parseTtl(p.expiration);
  return {
    headers: toWireHeaders(p.headers),
    body: msg.content,
    correlationId: typeof p.correlationId === "string" ? p.correlationId : "",
    ...(typeof p.replyTo === "string" && p.replyTo !== "" ? { replyTo: p.replyTo } : {}),
    ...(ttl !== undefined ? { ttlMs: ttl } : {}),
    redelivered: msg.fields.redelivered === true,
  };
}

/**
 * Field-table headers as strings: long strings stay, void stays null, byte arrays are read as
 * UTF-8, numbers and booleans become their text; nested tables and arrays are dropped (no NuroPb
 * header uses them). An absent table gives `{}` (core treats that as undecodable).
 */
function toWireHeaders(headers: Record<string, unknown> | undefined): WireHeaders {
  const out: Record<string, string | null> = {};
  if (headers === undefined || headers === null) return out;
  for (const [k, v] of Object.entries(headers)) {
    if (typeof v === "string" || v === null) out[k] = v;
    else if (v instanceof Uint8Array)
      out[k] = Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("utf8");
    else if (typeof v === "number" || typeof v === "boolean" || typeof v === "bigint")
      out[k] = String(v);
  }
  return out;
}

function parseTtl(expiration: unknown): number | undefined {
  if (typeof expiration !== "string" || !/^\d+$/.test(expiration)) return undefined;
  const n = Number(expiration);
  return Number.isSafeInteger(n) ? n : undefined;
}

function checkServiceSpec(spec: ServiceQueueSpec): void {
  if (typeof spec !== "object" || spec === null)
    throw new TypeError("consumeService: spec must be an object");
  if (
    typeof spec.service !== "string" ||
    spec.service === "" ||
    Buffer.byteLength(spec.service) > 240
  ) {
    throw new TypeError(
      "consumeService: spec.service must be a non-empty string of at most 240 bytes",
    );
  }
  if (
    !Array.isArray(spec.rpcBindings) ||
    !spec.rpcBindings.every((b) => typeof b === "string" && b !== "")
  ) {
    throw new TypeError("consumeService: spec.rpcBindings must be a list of non-empty strings");
  }
  if (!Array.isArray(spec.eventBindings))
    throw new TypeError("consumeService: spec.eventBindings must be a list");
  for (const b of spec.eventBindings) assertTopicPattern(b);
  if (!Number.isInteger(spec.prefetch) || spec.prefetch < 0 || spec.prefetch > 65_535) {
    throw new TypeError(
      "consumeService: spec.prefetch must be an integer from 0 (unlimited) to 65535",
    );
  }
}

function toTransportError(err: unknown, o: ResolvedOptions): NuropbTransportError {
  if (err instanceof NuropbTransportError) return err;
  return connectError(err, o.target);
}

async function closeQuietly(x: { close(): Promise<void> }): Promise<void> {
  try {
    await x.close();
  } catch {
    // already closed
  }
}

function sleep(ms: number, signals: readonly (AbortSignal | undefined)[]): Promise<void> {
  return new Promise((resolve) => {
    const live = signals.filter((s): s is AbortSignal => s !== undefined);
    if (live.some((s) => s.aborted)) return resolve();
    const done = (): void => {
      clearTimeout(timer);
      for (const s of live) s.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    for (const s of live) s.addEventListener("abort", done, { once: true });
  });
}

/** Resolves with `p` unless a signal aborts first; a late result is handed to `onLate`. */
function raceAbort<T>(
  p: Promise<T>,
  signals: readonly (AbortSignal | undefined)[],
  onLate: (value: T) => void,
): Promise<T> {
  const live = signals.filter((s): s is AbortSignal => s !== undefined);
  if (live.length === 0) return p;
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const onAbort = (): void => {
      if (settled) return;
      settled = true;
      cleanup();
      reject(new NuropbTransportError("aborted"));
    };
    const cleanup = (): void => {
      for (const s of live) s.removeEventListener("abort", onAbort);
    };
    for (const s of live) {
      if (s.aborted) return onAbort();
      s.addEventListener("abort", onAbort, { once: true });
    }
    p.then(
      (v) => {
        if (settled) return onLate(v);
        settled = true;
        cleanup();
        resolve(v);
      },
      (err: unknown) => {
        if (settled) return;
        settled = true;
        cleanup();
        reject(err as Error);
      },
    );
  });
}

function withDeadline(p: Promise<unknown>, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    p.then(
      () => {
        clearTimeout(timer);
        resolve();
      },
      () => {
        clearTimeout(timer);
        resolve();
      },
    );
  });
}
