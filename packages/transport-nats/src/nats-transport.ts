import {
  AckPolicy,
  createInbox,
  connect as natsConnect,
  DeliverPolicy,
  DiscardPolicy,
  Empty,
  ErrorCode,
  Events,
  headers as natsHeaders,
  nanos,
  nuid,
  RetentionPolicy,
  StorageType,
  type ConsumerConfig,
  type JetStreamManager,
  type Msg,
  type MsgHdrs,
  type NatsConnection,
  type NatsError,
  type StreamConfig,
  type Subscription,
} from "nats";
import {
  assertFrameTtl,
  assertTopicPattern,
  copyBytes,
  createTransportLifecycle,
  LifecycleState,
  NuropbConnectionClosedError,
  NuropbMessageError,
  NuropbNotDeliveredError,
  NuropbTransportError,
  topicMatches,
  type Destination,
  type DeliveryHandler,
  type Frame,
  type Listener,
  type ResponseHandler,
  type ResponseQueueSpec,
  type ServiceQueueSpec,
  type Transport,
  type TransportCapabilities,
  type TransportEvent,
  type TransportLifecycle,
} from "@nuropb/protocol";
import { decodeFrameHeaders, encodeFrameHeaders, NatsHeader } from "./frame-headers.ts";
import {
  bindingsSubject,
  deadLetterStreamName,
  deadLetterSubject,
  deadLetterWildcard,
  eventsConsumerName,
  eventsStreamName,
  eventSubject,
  eventsWildcard,
  isLiteralSubject,
  replySubject,
  rpcSubject,
  SERVICE_CONSUMER,
  serviceStreamName,
  topicOfSubject,
  type AckInfo,
} from "./names.ts";
import {
  resolveNatsOptions,
  type NatsTransportOptions,
  type ResolvedNatsOptions,
} from "./options.ts";
import {
  DeadLetterCopy,
  deadLetterHeaders,
  deadLetterMsgId,
  DeadLetterRefused,
  type DeadLetterReason,
} from "./dead-letter.ts";
import { ServiceConsumer } from "./service-consumer.ts";

/** JetStream API error codes this transport reacts to. */
const JsErr = {
  streamNotFound: 10059,
  consumerNotFound: 10014,
  streamNameInUse: 10058,
  subjectsOverlap: 10065,
  consumerExists: 10148,
  consumerNameExists: 10013,
} as const;

/** Headroom left for headers under the server's `max_payload`, in bytes. */
const HEADER_ROOM_BYTES = 16_384;

function apiErrorCode(err: unknown): number | undefined {
  const api = (err as { api_error?: { err_code?: number } } | undefined)?.api_error;
  return typeof api?.err_code === "number" ? api.err_code : undefined;
}

function natsCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === "string" ? code : undefined;
}

interface ServiceTopology {
  readonly service: string;
  readonly rpcNames: readonly string[];
  readonly eventBindings: readonly string[];
}

/** A service listener's topology and the event patterns it currently serves. */
interface ServiceRecord extends ServiceTopology {
  /** Union of the event patterns of every instance of the service (grows, never shrinks). */
  patterns: string[];
  /** Announcements of that union by other instances. */
  announcements?: Subscription;
  /** Lowest ack wait of the service's consumers as the server has it, in milliseconds. */
  serverAckWaitMs?: number;
}

class ResponseConsumer implements Listener {
  #sub: Subscription | undefined;
  readonly #nc: NatsConnection;
  readonly #onStop: () => void;

  constructor(nc: NatsConnection, sub: Subscription, onStop: () => void) {
    this.#nc = nc;
    this.#sub = sub;
    this.#onStop = onStop;
  }

  async stop(): Promise<void> {
    if (this.#sub === undefined) return;
    this.#sub.unsubscribe();
    this.#sub = undefined;
    this.#onStop();
    // Once the server has the unsubscribe, the address is free for another consumer.
    await this.#nc.flush().catch(() => undefined);
  }

  /** The transport is closing. */
  shutdown(): void {
    this.#sub = undefined;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

class NatsTransport implements Transport {
  readonly kind = "nats";
  readonly mesh: string;
  readonly #opts: ResolvedNatsOptions;
  readonly #life: TransportLifecycle;
  #nc: NatsConnection | undefined;
  /**
   * JetStream publish acknowledgements come back on one subscription, `{ackPrefix}.{n}`, matched
   * by `n`: `js.publish()` makes a full request per message (a reply subscription, a timer and
   * three stack-carrying errors), a fifth of the process's time under load.
   */
  #ackPrefix = "";
  #ackSeq = 0;
  readonly #acks = new Map<
    string,
    {
      resolve: () => void;
      reject: (err: Error) => void;
      readonly deadline: number;
      readonly timeoutMs: number;
    }
  >();
  #ackSweep: NodeJS.Timeout | undefined;
  #jsm: JetStreamManager | undefined;
  /** The socket is up (false between a disconnect and the client's reconnect). */
  #linkUp = false;
  /** Settles once the link is up again; replaced at every disconnect. */
  #linkBack: { promise: Promise<void>; resolve: () => void } = settled();
  /** Settlements written while the link was down: sent when it is back (acks stay valid). */
  readonly #heldControl: [subject: string, payload: string][] = [];
  #maxFrameBytes: number;
  #nextFlush: Promise<void> | undefined;
  readonly #services = new Map<ServiceConsumer, ServiceRecord>();
  readonly #responses = new Map<string, ResponseConsumer>();

  constructor(opts: ResolvedNatsOptions) {
    this.#opts = opts;
    this.#life = createTransportLifecycle("NATS", opts.logger);
    this.mesh = opts.mesh;
    this.#maxFrameBytes = opts.maxFrameBytes;
  }

  get state(): LifecycleState {
    return this.#life.state;
  }

  get capabilities(): TransportCapabilities {
    return {
      notDelivered: true,
      redelivery: true,
      deadLetter: true,
      messageTtl: true,
      maxFrameBytes: this.#maxFrameBytes,
    };
  }

  connect(options: { readonly signal?: AbortSignal } = {}): Promise<void> {
    return this.#life.connect(() => this.#doConnect(options.signal));
  }

  async #doConnect(signal: AbortSignal | undefined): Promise<void> {
    const log = this.#opts.logger;
    signal?.throwIfAborted();
    let nc: NatsConnection;
    try {
      const pending = natsConnect({
        ...this.#opts.connectionOptions,
        servers: [...this.#opts.servers],
        name: this.#opts.name,
        timeout: this.#opts.connectTimeoutMs,
        reconnect: true,
        maxReconnectAttempts: -1,
        reconnectTimeWait: this.#opts.reconnectWaitMs,
        waitOnFirstConnect: false,
      });
      nc = await (signal === undefined
        ? pending
        : abortable(pending, signal, (late) => void late.close()));
    } catch (err) {
      if (signal?.aborted === true)
        throw new NuropbTransportError("connect aborted", { cause: signal.reason });
      throw new NuropbTransportError(`cannot connect to NATS at ${this.#opts.servers.join(", ")}`, {
        cause: err,
        retryable: true,
      });
    }
    if (this.#life.ending) {
      await nc.close().catch(() => undefined);
      throw this.#life.closedError("the NATS transport was closed while connecting");
    }
    try {
      this.#jsm = await nc.jetstreamManager({ timeout: this.#opts.publishTimeoutMs });
      this.#ackPrefix = createInbox();
      nc.subscribe(`${this.#ackPrefix}.*`, { callback: (err, msg) => this.#onPubAck(err, msg) });
    } catch (err) {
      await nc.close().catch(() => undefined);
      throw new NuropbTransportError(
        "JetStream is not available on this NATS server (start it with -js)",
        {
          cause: err,
        },
      );
    }
    if (this.#life.ending) {
      await nc.close().catch(() => undefined);
      throw this.#life.closedError("the NATS transport was closed while connecting");
    }
    const maxPayload = nc.info?.max_payload;
    if (typeof maxPayload === "number" && maxPayload > HEADER_ROOM_BYTES) {
      this.#maxFrameBytes = Math.min(this.#opts.maxFrameBytes, maxPayload - HEADER_ROOM_BYTES);
    }
    this.#nc = nc;
    this.#linkUp = true;
    this.#life.state = LifecycleState.open;
    void this.#watchStatus(nc);
    void nc.closed().then((err) => this.#onConnectionClosed(err));
    log.info("connected", { servers: this.#opts.servers, mesh: this.mesh });
  }

  async #watchStatus(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (this.#life.state !== LifecycleState.open) continue;
      switch (s.type) {
        case Events.Disconnect:
          if (this.#linkUp) {
            this.#linkUp = false;
            this.#linkBack = pending();
            this.#abandonConfirms();
            for (const c of this.#services.keys()) c.pause();
          }
          this.#life.linkDown({ server: s.data });
          break;
        case Events.Reconnect:
          if (!this.#linkUp) {
            this.#linkUp = true;
            this.#linkBack.resolve();
            for (const [subject, payload] of this.#heldControl.splice(0))
              this.#control(subject, payload);
          }
          void this.#recover();
          break;
        case Events.Error:
          this.#life.emit({
            type: "errored",
            error: new NuropbTransportError(`NATS reported an error: ${String(s.data)}`),
          });
          break;
        default:
          break;
      }
    }
  }

  /** After a reconnect: re-declare streams and consumers, then pull again. */
  #recover(): Promise<void> {
    return this.#life.recover(
      async () => {
        for (const [consumer, topo] of this.#services) {
          await this.#ensureServiceTopology(topo);
          if (this.#life.state !== LifecycleState.open) return;
          consumer.resume();
        }
      },
      () => this.#linkUp,
    );
  }

  #onConnectionClosed(err: void | Error): void {
    if (this.#life.ending) return;
    const reason = new NuropbTransportError(
      "the NATS connection closed",
      err ? { cause: err } : {},
    );
    this.#opts.logger.error("connection closed unexpectedly", { error: err });
    this.#release();
    this.#life.finish(reason);
  }

  /** Lets go of everything waiting on the connection: the transport is ending. */
  #release(): void {
    this.#linkBack.resolve();
    this.#abandonConfirms();
    for (const c of this.#services.keys()) void c.shutdown();
    this.#services.clear();
    for (const r of this.#responses.values()) r.shutdown();
    this.#responses.clear();
  }

  close(): Promise<void> {
    return this.#life.close(() => this.#doClose());
  }

  async #doClose(): Promise<void> {
    await this.#life.connectSettled();
    const withdrawn = [...this.#services.keys()].map((c) => c.shutdown());
    for (const r of this.#responses.values()) void r.stop();
    const nc = this.#nc;
    if (nc !== undefined && !nc.isClosed()) {
      // The pull inboxes are withdrawn (what the server sent before is given back), then the
      // settlements and replies already written go out before the socket closes.
      await Promise.race([
        Promise.all(withdrawn).then(() => nc.flush().catch(() => undefined)),
        new Promise((r) => setTimeout(r, 2_000).unref()),
      ]);
      await nc.close().catch(() => undefined);
    }
    this.#opts.logger.info("closed");
    this.#release();
  }

  closed(): Promise<Error | undefined> {
    return this.#life.closed();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  events(): AsyncIterable<TransportEvent> {
    return this.#life.events();
  }

  #requireOpen(): { nc: NatsConnection; jsm: JetStreamManager } {
    if (this.#life.ending) throw this.#life.closedError();
    if (
      this.#life.state !== LifecycleState.open ||
      this.#nc === undefined ||
      this.#jsm === undefined
    ) {
      throw new NuropbTransportError("the NATS transport is not connected: call connect() first");
    }
    return { nc: this.#nc, jsm: this.#jsm };
  }

  /** Translates a broker error at the boundary; the original stays as `cause`. */
  #translate(err: unknown, what: string): Error {
    if (this.#life.ending) return this.#life.closedError(undefined, { cause: err });
    const code = natsCode(err);
    if (code === ErrorCode.ConnectionClosed || code === ErrorCode.ConnectionDraining) {
      return new NuropbConnectionClosedError(`${what}: the NATS connection is closed`, {
        cause: err,
      });
    }
    if (code === ErrorCode.Timeout) {
      return new NuropbTransportError(
        `${what}: NATS did not confirm in time (the frame may still arrive)`,
        {
          cause: err,
          retryable: true,
        },
      );
    }
    if (code === ErrorCode.MaxPayloadExceeded) {
      return new NuropbMessageError(`${what}: frame larger than the server accepts`, {
        cause: err,
      });
    }
    const message = err instanceof Error ? err.message : String(err);
    return new NuropbTransportError(`${what}: ${message}`, { cause: err, retryable: true });
  }

  async send(to: Destination, frame: Frame): Promise<void> {
    const { nc } = this.#requireOpen();
    if (frame.body.byteLength > this.#maxFrameBytes) {
      throw new NuropbMessageError(
        `frame body of ${frame.body.byteLength} bytes exceeds maxFrameBytes (${this.#maxFrameBytes})`,
      );
    }
    assertFrameTtl(frame.ttlMs); // as every transport: refused here, refused everywhere
    const headers = encodeFrameHeaders(frame);
    // One id per send, reused by every attempt: a publish the stream stored before its
    // acknowledgement was lost to a disconnect is not stored again (duplicate window).
    const msgID = nuid.next();
    switch (to.kind) {
      case "rpc": {
        if (!isLiteralSubject(to.service)) {
          throw new NuropbNotDeliveredError(`no service can be named '${to.service}' on NATS`);
        }
        try {
          await this.#publishConfirmed(
            rpcSubject(this.mesh, to.service),
            frame.body,
            headers,
            msgID,
          );
        } catch (err) {
          if (natsCode(err) === ErrorCode.NoResponders) {
            throw new NuropbNotDeliveredError(`no service '${to.service}' on mesh '${this.mesh}'`, {
              cause: err,
              details: { service: to.service },
            });
          }
          throw this.#translate(err, `send to service '${to.service}'`);
        }
        return;
      }
      case "event": {
        if (!isLiteralSubject(to.topic)) {
          throw new NuropbMessageError(
            `'${to.topic}' is not a valid event topic (dot-separated words, no wildcards)`,
          );
        }
        try {
          await this.#publishConfirmed(
            eventSubject(this.mesh, to.topic),
            frame.body,
            headers,
            msgID,
          );
        } catch (err) {
          // No events stream yet: no service subscribes to any event, so nobody misses this one.
          if (natsCode(err) === ErrorCode.NoResponders) return;
          throw this.#translate(err, `publish event '${to.topic}'`);
        }
        return;
      }
      case "reply": {
        if (!isLiteralSubject(to.address)) {
          throw new NuropbMessageError(`'${to.address}' is not a valid reply address on NATS`);
        }
        try {
          await this.#publishReply(nc, replySubject(this.mesh, to.address), frame.body, headers);
        } catch (err) {
          throw this.#translate(err, `reply to '${to.address}'`);
        }
        return;
      }
    }
  }

  /**
   * Waits until the link is up (the client drops what is written while it reconnects), within
   * `deadline`.
   * @throws NATS-style timeout error when the deadline passes first.
   */
  async #linkReady(deadline: number): Promise<void> {
    while (!this.#linkUp) {
      if (this.#life.state !== LifecycleState.open) throw this.#life.closedError();
      const left = deadline - Date.now();
      if (left <= 0) throw Object.assign(new Error("NATS link down"), { code: ErrorCode.Timeout });
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        this.#linkBack.promise,
        new Promise<void>((r) => (timer = setTimeout(r, left))),
      ]);
      clearTimeout(timer);
    }
  }

  /**
   * Publishes to JetStream and waits for its acknowledgement. A publish caught by a disconnect is
   * sent again once the link is back (within `publishTimeoutMs`) with the same `msgID`, so the
   * stream stores it once if the first one got there (within the stream's duplicate window).
   */
  async #publishConfirmed(
    subject: string,
    body: Uint8Array,
    headers: MsgHdrs,
    msgID?: string,
  ): Promise<void> {
    const deadline = Date.now() + this.#opts.publishTimeoutMs;
    for (;;) {
      if (!this.#linkUp) await this.#linkReady(deadline);
      try {
        await this.#jsPublish(subject, body, headers, Math.max(1, deadline - Date.now()), msgID);
        return;
      } catch (err) {
        // A link loss rejects every publish awaiting its acknowledgement with Disconnect.
        if (
          natsCode(err) !== ErrorCode.Disconnect ||
          Date.now() >= deadline ||
          this.#life.state !== LifecycleState.open
        )
          throw err;
      }
      this.#opts.logger.debug("publish caught by a disconnect; sending again", { subject });
    }
  }

  /** Publishes into JetStream and resolves on the stream's acknowledgement (see `#ackPrefix`). */
  #jsPublish(
    subject: string,
    body: Uint8Array,
    headers: MsgHdrs,
    timeoutMs: number,
    msgID?: string,
  ): Promise<void> {
    const nc = this.#nc;
    if (nc === undefined || nc.isClosed()) {
      return Promise.reject(
        Object.assign(new Error("NATS connection closed"), { code: ErrorCode.ConnectionClosed }),
      );
    }
    if (msgID !== undefined) headers.set("Nats-Msg-Id", msgID);
    const token = String(++this.#ackSeq);
    return new Promise<void>((resolve, reject) => {
      this.#acks.set(token, { resolve, reject, deadline: Date.now() + timeoutMs, timeoutMs });
      try {
        nc.publish(subject, body, { headers, reply: `${this.#ackPrefix}.${token}` });
      } catch (err) {
        this.#acks.delete(token);
        reject(err as Error);
        return;
      }
      this.#sweepAcksSoon();
    });
  }

  /**
   * One clock for every acknowledgement awaited (a timer per publish cost more than the publish):
   * rejects those past their deadline, at most {@link ACK_SWEEP_MS} late, and stops when none
   * are left.
   */
  #sweepAcksSoon(): void {
    if (this.#ackSweep !== undefined) return;
    this.#ackSweep = setInterval(() => {
      const now = Date.now();
      for (const [token, waiting] of this.#acks) {
        if (waiting.deadline > now) continue;
        this.#acks.delete(token);
        waiting.reject(
          Object.assign(
            new Error(`no JetStream acknowledgement within ${String(waiting.timeoutMs)} ms`),
            { code: ErrorCode.Timeout },
          ),
        );
      }
      if (this.#acks.size === 0) {
        clearInterval(this.#ackSweep);
        this.#ackSweep = undefined;
      }
    }, ACK_SWEEP_MS);
    this.#ackSweep.unref();
  }

  #onPubAck(err: Error | null, msg: Msg): void {
    if (err !== null) return; // the subscription closes with the connection
    const token = msg.subject.slice(this.#ackPrefix.length + 1);
    const waiting = this.#acks.get(token);
    if (waiting === undefined) return; // timed out or abandoned meanwhile
    this.#acks.delete(token);
    const status = msg.headers?.code ?? 0;
    if (status === 503) {
      waiting.reject(
        Object.assign(new Error("no responders: no stream captures the subject"), {
          code: ErrorCode.NoResponders,
        }),
      );
      return;
    }
    if (status >= 400) {
      waiting.reject(
        Object.assign(new Error(msg.headers?.description ?? `status ${String(status)}`), {
          code: String(status),
        }),
      );
      return;
    }
    let ack: { error?: { code?: number; err_code?: number; description?: string } };
    try {
      ack = JSON.parse(utf8.decode(msg.data)) as typeof ack;
    } catch (parseErr) {
      waiting.reject(parseErr as Error);
      return;
    }
    if (ack.error !== undefined) {
      waiting.reject(
        Object.assign(new Error(ack.error.description ?? "JetStream refused the message"), {
          code: String(ack.error.code ?? ack.error.err_code ?? "500"),
          api_error: ack.error,
        }),
      );
      return;
    }
    waiting.resolve();
  }

  #abandonConfirms(): void {
    // Their publishes are sent again (or given up) by #publishConfirmed; a late ack is ignored.
    const waiting = [...this.#acks.values()];
    this.#acks.clear();
    for (const w of waiting) {
      w.reject(Object.assign(new Error("NATS link lost"), { code: ErrorCode.Disconnect }));
    }
  }

  /** Publishes on core NATS and flushes; sent again if a disconnect swallowed it. */
  async #publishReply(
    nc: NatsConnection,
    subject: string,
    body: Uint8Array,
    headers: MsgHdrs,
  ): Promise<void> {
    const deadline = Date.now() + this.#opts.publishTimeoutMs;
    for (;;) {
      await this.#linkReady(deadline);
      nc.publish(subject, body, { headers });
      try {
        await this.#flushSoon(nc);
        return;
      } catch (err) {
        if (natsCode(err) !== ErrorCode.Disconnect || Date.now() >= deadline) throw err;
      }
    }
  }

  /** Acks, naks, progress and pulls: fire-and-forget, kept while the link is down. */
  #control(subject: string, payload: string, reply?: string): void {
    const nc = this.#nc;
    if (nc === undefined || nc.isClosed()) return;
    if (!this.#linkUp) {
      // Settlements stay valid across a reconnect; pulls and progress are sent afresh after it.
      if (reply === undefined && payload !== "+WPI") this.#heldControl.push([subject, payload]);
      return;
    }
    try {
      nc.publish(subject, payload, reply === undefined ? undefined : { reply });
    } catch (err) {
      this.#opts.logger.debug("control message not sent", { error: err });
    }
  }

  /** One flush (PING/PONG) shared by every publish written before it goes out. */
  #flushSoon(nc: NatsConnection): Promise<void> {
    this.#nextFlush ??= Promise.resolve().then(() => {
      this.#nextFlush = undefined;
      return nc.flush();
    });
    return this.#nextFlush;
  }

  async consumeService(spec: ServiceQueueSpec, handler: DeliveryHandler): Promise<Listener> {
    const { nc } = this.#requireOpen();
    validateServiceSpec(spec);
    const topo: ServiceRecord = {
      service: spec.service,
      rpcNames: [...new Set([spec.service, ...spec.rpcBindings])],
      eventBindings: [...new Set(spec.eventBindings)],
      patterns: [],
    };
    if (topo.eventBindings.length > 0) {
      // Announcements arrive on this connection in order with the events themselves, so an
      // event published after another instance widened the bindings is never filtered out here.
      topo.announcements = nc.subscribe(bindingsSubject(this.mesh, spec.service), {
        callback: (err, msg) => {
          if (err !== null) return;
          try {
            const announced = JSON.parse(new TextDecoder().decode(msg.data)) as unknown;
            if (Array.isArray(announced)) {
              const valid = announced.filter((p): p is string => typeof p === "string");
              topo.patterns = [...new Set([...topo.patterns, ...valid])].sort();
            }
          } catch {
            this.#opts.logger.debug("malformed bindings announcement", { service: spec.service });
          }
        },
      });
    }
    try {
      await this.#ensureServiceTopology(topo);
    } catch (err) {
      topo.announcements?.unsubscribe();
      throw err instanceof NuropbTransportError
        ? err
        : this.#translate(err, `declare service '${spec.service}'`);
    }
    try {
      this.#requireOpen();
    } catch (err) {
      topo.announcements?.unsubscribe();
      throw err;
    }
    const mesh = this.mesh;
    const consumer: ServiceConsumer = new ServiceConsumer({
      nc,
      control: (subject, payload, reply) => this.#control(subject, payload, reply),
      logger: this.#opts.logger.child({ service: spec.service }),
      sources: [
        { stream: serviceStreamName(mesh, spec.service), consumer: SERVICE_CONSUMER },
        ...(topo.eventBindings.length > 0
          ? [
              {
                stream: eventsStreamName(mesh),
                consumer: eventsConsumerName(spec.service),
                accepts: (subject: string): boolean => {
                  const topic = topicOfSubject(mesh, subject);
                  return topo.patterns.some((p) => topicMatches(p, topic));
                },
              },
            ]
          : []),
      ],
      window: spec.prefetch === 0 ? this.#opts.prefetch : spec.prefetch,
      ackWaitMs: this.#opts.ackWaitMs,
      serverAckWaitMs: () => topo.serverAckWaitMs,
      handler,
      deadLetter: (msg, info, reason) => this.#deadLetter(spec.service, msg, info, reason),
      linkUp: () => this.#linkUp && this.#life.state === LifecycleState.open,
      onConsumerLost: () => void this.#recover(),
      onStopped: (c) => {
        this.#services.get(c)?.announcements?.unsubscribe();
        this.#services.delete(c);
      },
    });
    this.#services.set(consumer, topo);
    consumer.start();
    if (!this.#linkUp) consumer.pause();
    else {
      // The first pulls are this instance's place at the consumer: the server hands messages
      // round-robin over the pulls it holds, and one that is still on its way gets none of a
      // burst sent right after this resolves (another instance's open pull takes it all). A
      // flush answers once the server has read them (a link lost meanwhile pulls again later).
      try {
        await this.#flushSoon(nc);
      } catch (err) {
        this.#opts.logger.debug("flush after the first pulls failed", { error: err });
      }
    }
    this.#opts.logger.info("consuming service queue", {
      service: spec.service,
      rpcNames: topo.rpcNames,
      eventBindings: topo.eventBindings,
      prefetch: spec.prefetch,
    });
    return consumer;
  }

  async #deadLetter(
    service: string,
    msg: Msg,
    info: AckInfo,
    reason: DeadLetterReason,
  ): Promise<void> {
    if (this.#nc === undefined) throw new NuropbTransportError("not connected");
    // The dead-letter headers can take a message that just fit over the server's max_payload:
    // then the copy leaves out the body, and if still too large the stored headers.
    const copies = [DeadLetterCopy.whole, DeadLetterCopy.headers, DeadLetterCopy.bare];
    for (const [i, copy] of copies.entries()) {
      try {
        await this.#publishConfirmed(
          deadLetterSubject(this.mesh, service),
          copy === DeadLetterCopy.whole ? msg.data : Empty,
          deadLetterHeaders(msg, info, reason, copy),
          deadLetterMsgId(info),
        );
        return;
      } catch (err) {
        if (natsCode(err) === ErrorCode.NoResponders) {
          // The dead-letter stream is gone (deleted by hand): declare it for the next attempt.
          await this.#ensureStream(this.#deadLetterStream(), false).catch(() => undefined);
        }
        const tooLarge = natsCode(err) === ErrorCode.MaxPayloadExceeded;
        // A definite refusal: sending it again cannot help.
        if (apiErrorCode(err) !== undefined || (tooLarge && i === copies.length - 1)) {
          throw new DeadLetterRefused(
            `the dead-letter stream refused the copy: ${(err as Error).message}`,
            { cause: err },
          );
        }
        if (!tooLarge) throw err;
        this.#opts.logger.warn("dead letter larger than the server accepts; leaving out more", {
          service,
          stream: info.stream,
          seq: info.streamSequence,
          left: copies[i + 1],
        });
      }
    }
  }

  /** Configuration of the mesh's dead-letter stream. */
  #deadLetterStream(): Partial<StreamConfig> & { name: string; subjects: string[] } {
    return {
      name: deadLetterStreamName(this.mesh),
      subjects: [deadLetterWildcard(this.mesh)],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      discard: DiscardPolicy.Old,
      max_age: nanos(this.#opts.deadLetterRetentionMs),
    };
  }

  /**
   * Declares (idempotently) what a service consumes, merges the service's event patterns into
   * `topo.patterns` and announces them to the other instances.
   */
  async #ensureServiceTopology(topo: ServiceRecord): Promise<void> {
    const mesh = this.mesh;
    const o = this.#opts;
    await this.#ensureStream(this.#deadLetterStream(), false);
    const streamName = serviceStreamName(mesh, topo.service);
    await this.#ensureStream(
      {
        name: streamName,
        subjects: topo.rpcNames.map((n) => rpcSubject(mesh, n)),
        retention: RetentionPolicy.Workqueue,
        storage: StorageType.File,
        discard: DiscardPolicy.Old,
      },
      true,
    );
    const rpc = await this.#ensureConsumer(streamName, {
      durable_name: SERVICE_CONSUMER,
      ack_policy: AckPolicy.Explicit,
      ack_wait: nanos(o.ackWaitMs),
      deliver_policy: DeliverPolicy.All,
      max_deliver: -1,
      max_ack_pending: -1,
    });
    topo.serverAckWaitMs = rpc.ackWaitMs;
    if (topo.eventBindings.length === 0) return;
    const eventsName = eventsStreamName(mesh);
    await this.#ensureStream(
      {
        name: eventsName,
        subjects: [eventsWildcard(mesh)],
        retention: RetentionPolicy.Interest,
        storage: StorageType.File,
        discard: DiscardPolicy.Old,
        max_age: nanos(o.eventRetentionMs),
      },
      false,
    );
    const events = await this.#ensureConsumer(
      eventsName,
      {
        durable_name: eventsConsumerName(topo.service),
        ack_policy: AckPolicy.Explicit,
        ack_wait: nanos(o.ackWaitMs),
        deliver_policy: DeliverPolicy.New,
        filter_subject: eventsWildcard(mesh),
        max_deliver: -1,
        max_ack_pending: -1,
        description: JSON.stringify([...topo.eventBindings].sort()),
      },
      topo.eventBindings,
    );
    topo.serverAckWaitMs = Math.min(rpc.ackWaitMs, events.ackWaitMs);
    topo.patterns = [...new Set([...topo.patterns, ...events.union])].sort();
    const { nc } = this.#requireOpen();
    nc.publish(bindingsSubject(mesh, topo.service), JSON.stringify(topo.patterns));
    await nc.flush();
  }

  async #ensureStream(
    config: Partial<StreamConfig> & { name: string; subjects: string[] },
    mergeSubjects: boolean,
  ): Promise<void> {
    const { jsm } = this.#requireOpen();
    for (let attempt = 0; ; attempt++) {
      try {
        const info = await jsm.streams.info(config.name);
        const changes: Partial<StreamConfig> = {};
        const have = new Set(info.config.subjects ?? []);
        if (mergeSubjects && !config.subjects.every((s) => have.has(s))) {
          changes.subjects = [...new Set([...have, ...config.subjects])];
        }
        // A retention changed in the options reaches a stream declared before: the last
        // transport to declare it wins.
        if (config.max_age !== undefined && info.config.max_age !== config.max_age) {
          changes.max_age = config.max_age;
          // The server refuses a duplicate window longer than the retention.
          if (info.config.duplicate_window > config.max_age)
            changes.duplicate_window = config.max_age;
        }
        if (Object.keys(changes).length === 0) return;
        await jsm.streams.update(config.name, { ...info.config, ...changes });
        return;
      } catch (err) {
        const code = apiErrorCode(err);
        if (code === JsErr.subjectsOverlap) throw overlapError(config, err);
        if (code !== JsErr.streamNotFound || attempt > 3) throw err;
      }
      try {
        await jsm.streams.add(config);
        return;
      } catch (err) {
        const code = apiErrorCode(err);
        if (code === JsErr.subjectsOverlap) throw overlapError(config, err);
        // Created by someone else meanwhile: look again.
        if (code !== JsErr.streamNameInUse || attempt > 3) throw err;
      }
    }
  }

  /**
   * Declares a durable consumer. With `bindings`, the consumer's description keeps the union of
   * the event patterns of every instance of the service (the patterns this consumer serves).
   * Resolves to that union and the consumer's ack wait as the server now has it, in ms.
   */
  async #ensureConsumer(
    stream: string,
    config: Partial<ConsumerConfig> & { durable_name: string },
    bindings?: readonly string[],
  ): Promise<{ union: string[]; ackWaitMs: number }> {
    const ms = (ns: number | undefined): number =>
      ns === undefined || ns <= 0 ? Number.POSITIVE_INFINITY : ns / 1_000_000;
    const { jsm } = this.#requireOpen();
    for (let attempt = 0; ; attempt++) {
      try {
        const info = await jsm.consumers.info(stream, config.durable_name);
        const changes: Partial<ConsumerConfig> = {};
        // A longer ackWaitMs in the options reaches a consumer declared before; a shorter one
        // does not lower it (delete the consumer for that). Instances with different settings
        // would otherwise flip it back and forth, and one that lowered it would get messages
        // redelivered from the others, whose progress is paced by their longer ack wait. Only
        // raised, it never drops under what a running instance paces its progress by: each
        // paces it by the lower of its own ackWaitMs and the consumer's.
        if (
          config.ack_wait !== undefined &&
          (info.config.ack_wait === undefined || info.config.ack_wait < config.ack_wait)
        )
          changes.ack_wait = config.ack_wait;
        let union: string[] = [];
        if (bindings !== undefined) {
          let known: string[] = [];
          try {
            const parsed = JSON.parse(info.config.description ?? "[]") as unknown;
            if (Array.isArray(parsed))
              known = parsed.filter((p): p is string => typeof p === "string");
          } catch {
            known = [];
          }
          union = [...new Set([...known, ...bindings])].sort();
          if (union.length !== known.length) changes.description = JSON.stringify(union);
        }
        const now =
          Object.keys(changes).length > 0
            ? await jsm.consumers.update(stream, config.durable_name, changes)
            : info;
        return { union, ackWaitMs: ms(now.config.ack_wait) };
      } catch (err) {
        if (apiErrorCode(err) !== JsErr.consumerNotFound || attempt > 3) throw err;
      }
      try {
        const made = await jsm.consumers.add(stream, config);
        return {
          union: bindings === undefined ? [] : [...bindings],
          ackWaitMs: ms(made.config.ack_wait),
        };
      } catch (err) {
        const code = apiErrorCode(err);
        if ((code !== JsErr.consumerExists && code !== JsErr.consumerNameExists) || attempt > 3)
          throw err;
      }
    }
  }

  async consumeResponses(spec: ResponseQueueSpec, handler: ResponseHandler): Promise<Listener> {
    const { nc } = this.#requireOpen();
    const address = spec.address;
    if (!isLiteralSubject(address)) {
      throw new NuropbTransportError(`'${address}' is not a valid reply address on NATS`);
    }
    if (this.#responses.has(address)) {
      throw new NuropbTransportError(
        `response address '${address}' is already consumed by this transport`,
      );
    }
    const subject = replySubject(this.mesh, address);
    // Exclusive consumer: ask whether anyone answers on the subject before taking it.
    const probe = natsHeaders();
    probe.set(NatsHeader.probe, "1");
    let taken: boolean;
    try {
      await nc.request(subject, Empty, { timeout: 1_000, headers: probe });
      taken = true;
    } catch (err) {
      const code = natsCode(err);
      if (code === ErrorCode.NoResponders) taken = false;
      else if (code === ErrorCode.Timeout) taken = true;
      else throw this.#translate(err, `probe response address '${address}'`);
    }
    if (taken) {
      throw new NuropbTransportError(
        `response address '${address}' is in exclusive use by another consumer`,
        {
          details: { address },
        },
      );
    }
    this.#requireOpen();
    if (this.#responses.has(address)) {
      throw new NuropbTransportError(
        `response address '${address}' is already consumed by this transport`,
      );
    }
    const log = this.#opts.logger;
    const sub = nc.subscribe(subject, {
      callback: (err: NatsError | null, msg: Msg) => {
        if (err !== null) {
          log.warn("response subscription error", { address, error: err });
          return;
        }
        if (msg.headers?.has(NatsHeader.probe) === true) {
          if (msg.reply) msg.respond();
          return;
        }
        try {
          const fields = decodeFrameHeaders(msg.headers);
          handler({ ...fields, body: copyBytes(msg.data), redelivered: false });
        } catch (e) {
          log.warn("response handler failed", { address, error: e });
        }
      },
    });
    const listener = new ResponseConsumer(nc, sub, () => this.#responses.delete(address));
    this.#responses.set(address, listener);
    try {
      await nc.flush();
    } catch (err) {
      await listener.stop();
      throw this.#translate(err, `consume responses on '${address}'`);
    }
    log.info("consuming responses", { address });
    return listener;
  }
}

function overlapError(
  config: { name: string; subjects: string[] },
  cause: unknown,
): NuropbTransportError {
  return new NuropbTransportError(
    `an rpc name of stream ${config.name} is already bound to another service (subjects ${config.subjects.join(", ")})`,
    { cause },
  );
}

function validateServiceSpec(spec: ServiceQueueSpec): void {
  if (!isLiteralSubject(spec.service)) {
    throw new TypeError(
      `service name '${spec.service}' is not usable on NATS (no spaces, '*', '>' or empty words)`,
    );
  }
  for (const name of spec.rpcBindings) {
    if (!isLiteralSubject(name)) throw new TypeError(`rpc binding '${name}' is not usable on NATS`);
  }
  for (const pattern of spec.eventBindings) assertTopicPattern(pattern);
  if (!Number.isSafeInteger(spec.prefetch) || spec.prefetch < 0) {
    throw new TypeError(`prefetch must be an integer >= 0, got ${String(spec.prefetch)}`);
  }
}

/** Period of the clock that times out JetStream acknowledgements, in milliseconds. */
const ACK_SWEEP_MS = 50;
const utf8 = new TextDecoder();

function settled(): { promise: Promise<void>; resolve: () => void } {
  return { promise: Promise.resolve(), resolve: () => {} };
}

function pending(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
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

/**
 * Creates a NuroPb transport on NATS JetStream. Does no I/O: call `connect()`.
 *
 * @example
 * ```ts
 * const transport = createNatsTransport({ servers: "nats://127.0.0.1:4222" });
 * await transport.connect();
 * ```
 * @throws TypeError when an option is invalid.
 */
export function createNatsTransport(options: NatsTransportOptions): Transport {
  return new NatsTransport(resolveNatsOptions(options));
}
