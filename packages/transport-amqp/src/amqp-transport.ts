import { LifecycleState, NuropbTransportError, createTransportLifecycle } from "@nuropb/protocol";
import type {
  DeliveryHandler,
  Destination,
  Frame,
  Listener,
  Logger,
  ResponseHandler,
  ResponseQueueSpec,
  ServiceQueueSpec,
  Transport,
  TransportCapabilities,
  TransportEvent,
  TransportEventLog,
  TransportScheduling,
} from "@nuropb/protocol";
import { channelError, connectError, isAccessRefusal, isPermanent } from "./connection.ts";
import type { Consumer } from "./consumer.ts";
import { createAmqpEventLog } from "./event-log.ts";
import { assertMeshCompact } from "./dialect.ts";
import { encodeFrame, isCompact, toInboundFrame } from "./frame-codec.ts";
import type { AmqpDialect, OutgoingMessage } from "./frame-codec.ts";
import { managementFor } from "./management.ts";
import { describeTarget, resolveOptions } from "./options.ts";
import type { AmqpTransportOptions, ResolvedOptions } from "./options.ts";
import { Publisher } from "./publisher.ts";
import { ReplyChannel } from "./reply-channel.ts";
import { SCHEDULED_HEADER, createAmqpScheduling } from "./scheduling.ts";
import { createResponseConsumer } from "./response-consumer.ts";
import { createServiceConsumer } from "./service-consumer.ts";
import type { ServiceConsumerHost } from "./service-consumer.ts";
import { closeQuietly, openSession } from "./session.ts";
import type { Session } from "./session.ts";
import { sleep, withDeadline } from "./timing.ts";
import { checkResponseSpec, checkServiceSpec } from "./topology.ts";

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

const RESOLVED: Promise<void> = Promise.resolve();

/** Most response addresses remembered as compact (the oldest is forgotten first). */
const COMPACT_PEERS_MAX = 10_000;

/**
 * The facade and its lifecycle: the connection (a {@link Session}) with its reconnect loop,
 * close, and the operations, handed on to the publisher and the consumers.
 */
class AmqpTransport implements Transport {
  readonly kind = "amqp";
  readonly mesh: string;
  readonly capabilities: TransportCapabilities;
  readonly scheduling: TransportScheduling;
  readonly eventLog: TransportEventLog;

  readonly #o: ResolvedOptions;
  readonly #log: Logger;
  readonly #life = createTransportLifecycle("AMQP");
  readonly #listeners = new Set<Consumer>();
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
  /** Each session's channel for responses (no publisher confirms). */
  readonly #replyChannels = new WeakMap<Session, ReplyChannel>();
  /**
   * Response addresses whose requests came in the compact form: their replies go compact too;
   * every other reply goes in the Python form (PROTOCOL.md §3).
   */
  readonly #compactPeers = new Set<string>();
  #sessionSeq = 0;
  #reconnectTask: Promise<void> | undefined;
  /** What the publisher and the consumers need of the transport. */
  readonly #host: ServiceConsumerHost;

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
      target: options.targets.map((t) => describeTarget(t)).join(","),
      connectionName: options.connectionName,
    });
    this.#host = {
      log: this.#log,
      life: this.#life,
      password: options.target.password,
      exchanges: options,
      current: () => this.#session,
      fail: (error) => void this.#close(error),
      retiring: (closing) => {
        this.#retiringChannels.add(closing);
        void closing.finally(() => this.#retiringChannels.delete(closing));
      },
      inbound: (msg) => {
        const compact = isCompact(msg);
        const frame = toInboundFrame(msg, compact);
        if (msg.properties.headers?.[SCHEDULED_HEADER] !== undefined) {
          // A scheduled copy: its form is ours, not the caller's; learn nothing from it.
          delete (frame.headers as Record<string, unknown>)[SCHEDULED_HEADER];
        } else if (frame.replyTo !== undefined) {
          this.#notePeer(frame.replyTo, compact);
        }
        return frame;
      },
      handlerStarted: () => void this.#handlersRunning++,
      handlerFinished: () => {
        if (--this.#handlersRunning === 0) this.#onHandlersIdle?.();
      },
    };
    this.scheduling = createAmqpScheduling({
      log: this.#log,
      password: options.target.password,
      connection: () => this.#requireOpen("schedule").conn,
      // A copy keeps its caller's form: compact only towards a reply address known compact.
      encode: (to, frame) =>
        encodeFrame(to, frame, this.#o, this.#copyDialect(frame.replyTo ?? "")),
      track: (p) => {
        this.#inflight.add(p);
        const done = (): void => void this.#inflight.delete(p);
        p.then(done, done);
        return p;
      },
    });
    this.eventLog = createAmqpEventLog({
      log: this.#log,
      password: options.target.password,
      vhost: options.target.vhost,
      eventsExchange: options.eventsExchange,
      connection: () => this.#requireOpen("use the event log").conn,
      // The node this transport reached (the first listed may be down).
      management: () => managementFor({}, this.#session?.target ?? options.target),
      send: (to, frame) => this.send(to, frame),
      ending: () => this.#life.ending,
    });
  }

  get state(): LifecycleState {
    return this.#life.state;
  }

  // ---------------------------------------------------------------- lifecycle

  connect(options?: { readonly signal?: AbortSignal }): Promise<void> {
    if (this.#reconnectTask !== undefined && this.#life.state === LifecycleState.connecting) {
      // The link is being re-established: connect() resolves when it is back.
      return this.#reconnectTask.then(() => {
        if (this.#life.state !== LifecycleState.open) throw this.#life.closedError();
      });
    }
    return this.#life.connect(() => this.#initialConnect(options?.signal));
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
        throw new NuropbTransportError("connect() was aborted", { cause: signal.reason });
      }
      try {
        const remaining = Math.max(1, deadline - Date.now());
        await this.#establish(Math.min(remaining, this.#o.connectTimeoutMs), signal);
        this.#life.opened();
        this.#log.info("connected");
        return;
      } catch (err) {
        if (this.#shutdown.signal.aborted) throw this.#life.closedError();
        const e = toTransportError(err, this.#o);
        if (signal?.aborted) {
          throw new NuropbTransportError("connect() was aborted", { cause: signal.reason });
        }
        if (isPermanent(e) || Date.now() >= deadline) {
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
    const session = await openSession({
      id: ++this.#sessionSeq,
      options: this.#o,
      timeoutMs,
      signals: [this.#shutdown.signal, signal],
      log: this.#log,
      onClosed: (closed, reason) => this.#onConnectionClosed(closed, reason),
    });
    const conn = session.conn;
    try {
      if (this.#o.dialect === "compact") {
        await assertMeshCompact(conn, this.#o.target.vhost, this.#o.target.password);
      }
      session.publisher = await Publisher.open(session, this.#host);
      this.#replyChannels.set(session, await ReplyChannel.open(session, this.#host));
      for (const l of this.#listeners) {
        if (!l.stopped) await l.start(session);
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
    this.#life.reconnecting();
    const task = (async () => {
      for (let attempt = 0; ; attempt++) {
        await sleep(this.#backoff(attempt), [this.#shutdown.signal]);
        if (this.#shutdown.signal.aborted) return;
        try {
          await this.#establish(this.#o.connectTimeoutMs);
          this.#life.opened();
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
      await this.#life.connectSettled();
      await this.#reconnectTask?.catch(() => undefined);
      const session = this.#session;
      if (session !== undefined) {
        // Stop deliveries first, then let outstanding confirms arrive, then close.
        await withDeadline(
          Promise.allSettled([...this.#listeners].map((l) => l.cancel())),
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
            ...[...this.#listeners].map((l) => l.closeChannel()),
            ...this.#retiringChannels,
            this.#replyChannels.get(session)?.close(),
          ]),
          this.#o.closeTimeoutMs,
        );
        this.#session = undefined;
        await withDeadline(closeQuietly(session.conn), this.#o.closeTimeoutMs);
      }
      for (const l of this.#listeners) l.abandon();
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

  // ---------------------------------------------------------------- operations

  send(to: Destination, frame: Frame): Promise<void> {
    let p: Promise<void>;
    try {
      p = this.#publish(to, frame);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    // A reply written at once has nothing in flight (no confirm): close() need not wait for it.
    if (p === RESOLVED) return p;
    this.#inflight.add(p);
    const done = (): void => void this.#inflight.delete(p);
    p.then(done, done);
    return p;
  }

  /** The dialect of a scheduled copy of a frame whose caller waits at `replyTo` ("" for none). */
  #copyDialect(replyTo: string): AmqpDialect {
    if (this.#o.dialect !== "compact") return "python";
    return replyTo === "" || this.#compactPeers.has(replyTo) ? "compact" : "python";
  }

  /** Remembers whether the participant answering at `address` speaks the compact form. */

  #notePeer(address: string, compact: boolean): void {
    const peers = this.#compactPeers;
    if (!compact) {
      if (peers.size > 0) peers.delete(address);
      return;
    }
    if (peers.has(address)) return;
    if (peers.size >= COMPACT_PEERS_MAX) {
      for (const oldest of peers) {
        peers.delete(oldest);
        break;
      }
    }
    peers.add(address);
  }

  #publish(to: Destination, frame: Frame): Promise<void> {
    const reply = to.kind === "reply";
    const dialect = reply
      ? this.#compactPeers.has(to.address)
        ? "compact"
        : "python"
      : this.#o.dialect;
    const out = encodeFrame(to, frame, this.#o, dialect);
    const session = this.#requireOpen("send", reply);
    if (session.blocked !== undefined) {
      // The broker would hold the message (and its confirm) until the alarm clears.
      throw new NuropbTransportError(
        `cannot send: the broker blocked publishing (resource alarm: ${session.blocked})`,
        { retryable: true, details: { blocked: session.blocked } },
      );
    }
    if (reply) {
      const channel = this.#replyChannels.get(session);
      if (channel !== undefined) {
        // No confirm: the caller's ttl covers a lost reply. A reply that cannot be written
        // rejects (core logs it), never unhandled; one written to a full buffer waits for drain.
        return channel.publish(out) ?? RESOLVED;
      }
    }
    return this.#publishOn(session, out, to, 0);
  }

  /**
   * Publishes on the session's publisher channel; while a retired one is being replaced, waits
   * for the replacement (at most twice: it may be retired in turn) instead of failing the send.
   */
  #publishOn(
    session: Session,
    out: OutgoingMessage,
    to: Destination,
    waits: number,
  ): Promise<void> {
    const publisher = session.publisher;
    if (publisher !== undefined && !publisher.handle.closed) return publisher.publish(out, to);
    const opening = session.publisherOpening;
    const reopening = (): NuropbTransportError =>
      new NuropbTransportError("cannot send: the publisher channel is being re-opened", {
        retryable: true,
      });
    if (opening === undefined || waits >= 2 || session.dead !== undefined) throw reopening();
    return opening.then(
      () => {
        if (this.#session !== session) throw reopening();
        return this.#publishOn(session, out, to, waits + 1);
      },
      () => {
        throw reopening();
      },
    );
  }

  async consumeService(spec: ServiceQueueSpec, handler: DeliveryHandler): Promise<Listener> {
    checkServiceSpec(spec);
    if (typeof handler !== "function")
      throw new TypeError("consumeService: handler must be a function");
    return this.#addListener(createServiceConsumer(spec, handler, this.#host));
  }

  async consumeResponses(spec: ResponseQueueSpec, handler: ResponseHandler): Promise<Listener> {
    checkResponseSpec(spec);
    if (typeof handler !== "function")
      throw new TypeError("consumeResponses: handler must be a function");
    return this.#addListener(createResponseConsumer(spec, handler, this.#host));
  }

  async #addListener(consumer: Consumer): Promise<Listener> {
    const session = this.#requireOpen(
      consumer.kind === "service" ? "consume a service queue" : "consume responses",
    );
    await consumer.start(session);
    if (this.#life.ending) {
      consumer.abandon();
      throw this.#life.closedError();
    }
    this.#listeners.add(consumer);
    this.#log.info("consuming", { queue: consumer.queue, kind: consumer.kind });
    return consumer.listener(() => this.#listeners.delete(consumer));
  }
}

function toTransportError(err: unknown, o: ResolvedOptions): NuropbTransportError {
  if (err instanceof NuropbTransportError) return err;
  return connectError(err, o.target);
}
