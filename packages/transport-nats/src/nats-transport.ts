import { ErrorCode, Events, type JetStreamManager, type NatsConnection } from "nats";
import {
  createTransportLifecycle,
  LifecycleState,
  NuropbMessageError,
  NuropbTransportError,
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
  type TransportEventLog,
  type TransportLifecycle,
  type TransportScheduling,
} from "@nuropb/protocol";
import { openNatsConnection } from "./connection.ts";
import { CoreRequestConsumer } from "./core-request-consumer.ts";
import { DeliveryWindow } from "./delivery-window.ts";
import { publishDeadLetter, type DeadLetterReason, type StoredMsg } from "./dead-letter.ts";
import { NatsLink } from "./link.ts";
import {
  deadLetterSubject,
  isLiteralSubject,
  nameOfRequestSubject,
  replySubject,
  requestQueueGroup,
  requestSubject,
  rpcSubject,
  type AckInfo,
} from "./names.ts";
import { createNatsEventLog } from "./event-log.ts";
import { natsCode, translateNatsError } from "./nats-errors.ts";
import {
  resolveNatsOptions,
  type NatsTransportOptions,
  type ResolvedNatsOptions,
} from "./options.ts";
import { Publisher } from "./publisher.ts";
import { createNatsScheduling, type NatsScheduling } from "./scheduling.ts";
import { isResponseSubjectTaken, ResponseConsumer } from "./response-consumer.ts";
import { ServiceConsumer } from "./service-consumer.ts";
import { Topology, validateServiceSpec, type ServiceRecord } from "./topology.ts";

/** Headroom left for headers under the server's `max_payload`, in bytes. */
const HEADER_ROOM_BYTES = 16_384;
/** Longest one try at re-declaring a service after a reconnect waits, in ms. */
const REDECLARE_TRY_MS = 2_000;
/** The errors of declaration tries that ran out of time ({@link NatsTransport.#declareOnce}). */
const triesOutOfTime = new WeakSet<Error>();

/**
 * The facade: the connection's lifecycle (connect, the link's ups and downs, recovery, close),
 * and the listeners it hands out. Publishing lives in {@link Publisher}, declaring streams and
 * consumers in {@link Topology}, consuming in {@link ServiceConsumer} and
 * {@link ResponseConsumer}.
 */
class NatsTransport implements Transport {
  readonly kind = "nats";
  readonly mesh: string;
  readonly #opts: ResolvedNatsOptions;
  readonly #life: TransportLifecycle;
  readonly #link: NatsLink;
  readonly #publisher: Publisher;
  readonly #topology: Topology;
  #jsm: JetStreamManager | undefined;
  #maxFrameBytes: number;
  #capabilities: TransportCapabilities | undefined;
  readonly #services = new Map<ServiceConsumer, ServiceRecord>();
  readonly #responses = new Map<string, ResponseConsumer>();
  readonly #coreRequests = new Set<CoreRequestConsumer>();
  readonly #scheduler: NatsScheduling;
  readonly scheduling: TransportScheduling;
  readonly eventLog: TransportEventLog;

  constructor(opts: ResolvedNatsOptions) {
    this.#opts = opts;
    this.#life = createTransportLifecycle("NATS", opts.logger);
    this.mesh = opts.mesh;
    this.#maxFrameBytes = opts.maxFrameBytes;
    this.#link = new NatsLink(this.#life, opts.logger);
    this.#publisher = new Publisher({
      mesh: opts.mesh,
      link: this.#link,
      life: this.#life,
      logger: opts.logger,
      publishTimeoutMs: opts.publishTimeoutMs,
      requests: opts.requests,
      coreFraming: opts.coreFraming,
    });
    this.#topology = new Topology({
      mesh: opts.mesh,
      ackWaitMs: opts.ackWaitMs,
      eventRetentionMs: opts.eventRetentionMs,
      deadLetterRetentionMs: opts.deadLetterRetentionMs,
      replicas: opts.replicas,
      requireOpen: () => this.#requireOpen(),
    });
    this.#scheduler = createNatsScheduling({
      mesh: opts.mesh,
      replicas: opts.replicas,
      logger: opts.logger,
      maxFrameBytes: () => this.#maxFrameBytes,
      requireOpen: () => this.#requireOpen(),
      publishConfirmed: (subject, body, headers, msgID) =>
        this.#publisher.publishConfirmed(subject, body, headers, msgID),
      translate: (err, what) => translateNatsError(err, what, this.#life),
    });
    this.scheduling = this.#scheduler.scheduling;
    this.eventLog = createNatsEventLog({
      mesh: opts.mesh,
      logger: opts.logger,
      requireOpen: () => this.#requireOpen(),
      life: this.#life,
      replicas: opts.replicas,
      eventRetentionMs: opts.eventRetentionMs,
    });
  }

  get state(): LifecycleState {
    return this.#life.state;
  }

  get capabilities(): TransportCapabilities {
    // Read per call by core: made again only when the server's limit changed it.
    if (this.#capabilities?.maxFrameBytes !== this.#maxFrameBytes) {
      this.#capabilities = Object.freeze({
        notDelivered: true,
        redelivery: true,
        deadLetter: true,
        messageTtl: true,
        maxFrameBytes: this.#maxFrameBytes,
        // Only nuropb-ts reads a NATS mesh: no Python NuroPb runs on NATS.
        slimBodies: true,
      });
    }
    return this.#capabilities;
  }

  connect(options: { readonly signal?: AbortSignal } = {}): Promise<void> {
    return this.#life.connect(() => this.#doConnect(options.signal));
  }

  async #doConnect(signal: AbortSignal | undefined): Promise<void> {
    const log = this.#opts.logger;
    const nc = await openNatsConnection(this.#opts, signal);
    if (this.#life.ending) {
      await nc.close().catch(() => undefined);
      throw this.#life.closedError("the NATS transport was closed while connecting");
    }
    try {
      this.#jsm = await nc.jetstreamManager({ timeout: this.#opts.publishTimeoutMs });
      this.#publisher.listen(nc);
    } catch (err) {
      await nc.close().catch(() => undefined);
      throw new NuropbTransportError(
        "JetStream is not available on this NATS server (start it with -js)",
        { cause: err },
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
    this.#link.attach(nc);
    this.#life.opened();
    this.#scheduler.start();
    void this.#watchStatus(nc);
    void nc.closed().then((err) => this.#onConnectionClosed(err));
    log.info("connected", { servers: this.#opts.servers, mesh: this.mesh });
  }

  async #watchStatus(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (this.#life.state !== LifecycleState.open) continue;
      switch (s.type) {
        case Events.Disconnect:
          if (this.#link.lost()) {
            this.#publisher.abandonConfirms();
            for (const c of this.#services.keys()) c.pause();
          }
          this.#life.linkDown({ server: s.data });
          break;
        case Events.Reconnect:
          this.#link.restored();
          // Pull again at once: the durable consumers are kept by the cluster, and a pull that
          // finds none yet (leaders still elected) is answered with a status and tried again.
          // The re-declaration may wait for JetStream's meta leader meanwhile.
          for (const c of this.#services.keys()) c.resume();
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

  /**
   * After a reconnect: re-declare streams and consumers, then pull again. Each try is bounded
   * ({@link #declareOnce}); the lifecycle tries again with backoff, logging each failure.
   */
  #recover(): Promise<void> {
    return this.#life.recover(
      async () => {
        for (const [consumer, topo] of this.#services) {
          await this.#declareOnce(topo);
          if (this.#life.state !== LifecycleState.open) return;
          consumer.resume();
        }
      },
      () => this.#link.up,
    );
  }

  /**
   * Declares `topo` once, giving up after {@link REDECLARE_TRY_MS} (each request has its own
   * publishTimeoutMs too). After a server of a cluster is lost, JetStream API requests go unanswered until
   * a new meta leader is elected: waiting out each one's full timeout would leave the service's
   * stored messages unconsumed (and past their ttl) that long. A request left behind is
   * harmless: declaring is idempotent.
   * @throws NuropbTransportError (retryable) when the bound passes first.
   */
  #declareOnce(topo: ServiceRecord): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([
      this.#topology.ensureService(topo).finally(() => clearTimeout(timer)),
      new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => {
          const err = new NuropbTransportError(
            `declaring service '${topo.service}': JetStream did not answer within ${REDECLARE_TRY_MS} ms`,
            { retryable: true },
          );
          triesOutOfTime.add(err);
          reject(err);
        }, REDECLARE_TRY_MS);
        timer.unref();
      }),
    ]);
  }

  /**
   * Declares a new listener's topology. While JetStream does not answer (a cluster electing its
   * meta leader after the loss of a server), bounded tries ({@link #declareOnce}) go on with
   * backoff, each logged, for up to publishTimeoutMs (at least {@link REDECLARE_TRY_MS}); other
   * errors reject at once.
   */
  async #declareFirst(topo: ServiceRecord): Promise<void> {
    const deadline = Date.now() + Math.max(this.#opts.publishTimeoutMs, REDECLARE_TRY_MS);
    for (let attempt = 0; ; attempt++) {
      try {
        await this.#declareOnce(topo);
        return;
      } catch (err) {
        const wait = Math.min(REDECLARE_TRY_MS, 100 * 2 ** attempt);
        const open = this.#life.state === LifecycleState.open && !this.#life.ending;
        if (!unanswered(err) || !open || Date.now() + wait >= deadline) throw err;
        this.#opts.logger.warn("JetStream did not answer a declaration; retrying", {
          service: topo.service,
          attempt,
          error: String(err),
        });
        await new Promise((r) => setTimeout(r, wait));
      }
    }
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
    void this.#scheduler.stop();
    this.#link.release();
    this.#publisher.abandonConfirms();
    for (const c of this.#services.keys()) void c.shutdown();
    this.#services.clear();
    for (const c of this.#coreRequests) void c.shutdown();
    this.#coreRequests.clear();
    for (const r of this.#responses.values()) r.shutdown();
    this.#responses.clear();
  }

  close(): Promise<void> {
    return this.#life.close(() => this.#doClose());
  }

  async #doClose(): Promise<void> {
    await this.#life.connectSettled();
    await this.#scheduler.stop();
    const transients = [...this.#services.values()].filter((t) => t.transient === true);
    const withdrawn = [
      ...[...this.#coreRequests].map((c) => c.shutdown()),
      ...[...this.#services.keys()].map((c) => c.shutdown()),
    ];
    for (const r of this.#responses.values()) void r.stop();
    const nc = this.#link.nc;
    this.#publisher.uncork();
    if (nc !== undefined && !nc.isClosed()) {
      // The pull inboxes are withdrawn (what the server sent before is given back), then the
      // settlements and replies already written go out before the socket closes.
      await Promise.race([
        Promise.all(withdrawn)
          .then(() => Promise.all(transients.map((t) => this.#removeTransient(t))))
          .then(() => {
            this.#publisher.uncork();
            return nc.flush().catch(() => undefined);
          }),
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
    const nc = this.#link.nc;
    if (this.#life.state !== LifecycleState.open || nc === undefined || this.#jsm === undefined) {
      throw new NuropbTransportError("the NATS transport is not connected: call connect() first");
    }
    return { nc, jsm: this.#jsm };
  }

  async send(to: Destination, frame: Frame): Promise<void> {
    const { nc } = this.#requireOpen();
    if (frame.body.byteLength > this.#maxFrameBytes) {
      throw new NuropbMessageError(
        `frame body of ${frame.body.byteLength} bytes exceeds maxFrameBytes (${this.#maxFrameBytes})`,
      );
    }
    if (to.kind === "reply") {
      // An answer addressed to a service (scheduling.serviceReplyAddress) goes to its stream.
      const service = this.#scheduler.serviceOfAddress(to.address);
      if (service !== undefined) return this.#scheduler.deliverReply(service, frame);
    }
    await this.#publisher.send(nc, to, frame);
  }

  async consumeService(spec: ServiceQueueSpec, handler: DeliveryHandler): Promise<Listener> {
    const { nc } = this.#requireOpen();
    validateServiceSpec(spec);
    // A transient queue that only listens to events gets no stream (see ServiceTopology.rpcNames).
    const eventsOnly =
      spec.transient === true && spec.rpcBindings.length === 0 && spec.eventBindings.length > 0;
    const topo: ServiceRecord = {
      service: spec.service,
      rpcNames: eventsOnly ? [] : [...new Set([spec.service, ...spec.rpcBindings])],
      eventBindings: [...new Set(spec.eventBindings)],
      patterns: [],
      ...(spec.transient === true ? { transient: true } : {}),
    };
    if (topo.eventBindings.length > 0)
      this.#topology.watchAnnouncements(nc, topo, this.#opts.logger);
    try {
      await this.#declareFirst(topo);
    } catch (err) {
      topo.announcements?.unsubscribe();
      throw err instanceof NuropbTransportError
        ? err
        : translateNatsError(err, `declare service '${spec.service}'`, this.#life);
    }
    try {
      this.#requireOpen();
    } catch (err) {
      topo.announcements?.unsubscribe();
      throw err;
    }
    const window = new DeliveryWindow(spec.prefetch === 0 ? this.#opts.prefetch : spec.prefetch);
    const consumer: ServiceConsumer = new ServiceConsumer({
      nc,
      control: (subject, payload, reply) => this.#link.control(subject, payload, reply),
      logger: this.#opts.logger.child({ service: spec.service }),
      sources: this.#topology.pullSources(topo),
      window: window.limit,
      shared: window,
      ackWaitMs: this.#opts.ackWaitMs,
      serverAckWaitMs: () => topo.serverAckWaitMs,
      handler,
      deadLetter: (msg, info, reason, extra) =>
        this.#deadLetter(spec.service, msg, info, reason, extra),
      linkUp: () => this.#link.up && this.#life.state === LifecycleState.open,
      onConsumerLost: () => void this.#recover(),
      onStopped: (c) => {
        this.#services.get(c)?.announcements?.unsubscribe();
        this.#services.delete(c);
      },
    });
    this.#services.set(consumer, topo);
    const requests =
      this.#opts.requests === "core" && topo.rpcNames.length > 0
        ? this.#consumeRequests(nc, topo, window, handler)
        : undefined;
    consumer.start();
    if (!this.#link.up) consumer.pause();
    else {
      // The first pulls are this instance's place at the consumer: the server hands messages
      // round-robin over the pulls it holds, and one that is still on its way gets none of a
      // burst sent right after this resolves (another instance's open pull takes it all). A
      // flush answers once the server has read them (a link lost meanwhile pulls again later).
      try {
        await this.#link.flushSoon(nc);
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
    if (topo.transient !== true && requests === undefined) return consumer;
    // A transient queue goes once its consumer has withdrawn its pulls.
    let stopping: Promise<void> | undefined;
    const stop = (): Promise<void> =>
      (stopping ??= Promise.all([requests?.stop(), consumer.stop()]).then(() =>
        topo.transient === true ? this.#removeTransient(topo) : undefined,
      ));
    return { stop, [Symbol.asyncDispose]: stop };
  }

  /** Core-NATS requests of a service (`requests: "core"`): subscribed before `consumeService` resolves. */
  #consumeRequests(
    nc: NatsConnection,
    topo: ServiceRecord,
    window: DeliveryWindow,
    handler: DeliveryHandler,
  ): CoreRequestConsumer {
    const mesh = this.mesh;
    const requests = new CoreRequestConsumer({
      nc,
      service: topo.service,
      subjects: topo.rpcNames.map((name) => requestSubject(mesh, name)),
      queue: requestQueueGroup(topo.service),
      window,
      handler,
      logger: this.#opts.logger.child({ service: topo.service }),
      publishRequest: (subject, body, headers) => {
        const current = this.#link.nc;
        if (current === undefined || current.isClosed()) {
          return Promise.reject(new NuropbTransportError("the NATS connection is closed"));
        }
        return this.#publisher.publishRequest(current, subject, body, headers, true);
      },
      spill: (msg, headers) =>
        this.#publisher.publishConfirmed(
          rpcSubject(mesh, nameOfRequestSubject(mesh, msg.subject)),
          msg.data,
          headers,
        ),
      // Dead letters read as those of the stream: the same subject whichever way they came.
      deadLetter: (msg, info, reason, extra) =>
        this.#deadLetter(
          topo.service,
          { ...msg, subject: rpcSubject(mesh, nameOfRequestSubject(mesh, msg.subject)) },
          info,
          reason,
          extra,
        ),
      onStopped: (c) => this.#coreRequests.delete(c),
    });
    this.#coreRequests.add(requests);
    requests.start();
    return requests;
  }

  /** Removes a transient queue while the connection is there (else its consumers expire). */
  async #removeTransient(topo: ServiceRecord): Promise<void> {
    const nc = this.#link.nc;
    if (this.#jsm === undefined || nc === undefined || nc.isClosed()) return;
    await this.#topology.removeService(topo, this.#jsm, this.#opts.logger);
  }

  async #deadLetter(
    service: string,
    msg: StoredMsg,
    info: AckInfo,
    reason: DeadLetterReason,
    extra?: Readonly<Record<string, string>>,
  ): Promise<void> {
    if (this.#link.nc === undefined) throw new NuropbTransportError("not connected");
    const topology = this.#topology;
    await publishDeadLetter(
      {
        service,
        subject: deadLetterSubject(this.mesh, service),
        publish: (subject, body, headers, msgID) =>
          this.#publisher.publishConfirmed(subject, body, headers, msgID),
        redeclare: () =>
          topology.ensureStream(topology.deadLetterStream(), false).catch(() => undefined),
        logger: this.#opts.logger,
      },
      msg,
      info,
      reason,
      extra,
    );
  }

  async consumeResponses(spec: ResponseQueueSpec, handler: ResponseHandler): Promise<Listener> {
    const { nc } = this.#requireOpen();
    const address = spec.address;
    if (!isLiteralSubject(address)) {
      throw new NuropbTransportError(`'${address}' is not a valid reply address on NATS`);
    }
    this.#assertNotConsumed(address);
    const subject = replySubject(this.mesh, address);
    // Exclusive consumer: ask whether anyone answers on the subject before taking it.
    let taken: boolean;
    try {
      taken = await isResponseSubjectTaken(nc, subject);
    } catch (err) {
      throw translateNatsError(err, `probe response address '${address}'`, this.#life);
    }
    if (taken) {
      throw new NuropbTransportError(
        `response address '${address}' is in exclusive use by another consumer`,
        { details: { address } },
      );
    }
    this.#requireOpen();
    this.#assertNotConsumed(address);
    const log = this.#opts.logger;
    const listener = new ResponseConsumer({
      nc,
      address,
      subject,
      handler,
      logger: log,
      onStopped: () => this.#responses.delete(address),
    });
    this.#responses.set(address, listener);
    try {
      await nc.flush();
    } catch (err) {
      await listener.stop();
      throw translateNatsError(err, `consume responses on '${address}'`, this.#life);
    }
    log.info("consuming responses", { address });
    return listener;
  }

  #assertNotConsumed(address: string): void {
    if (this.#responses.has(address)) {
      throw new NuropbTransportError(
        `response address '${address}' is already consumed by this transport`,
      );
    }
  }
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

/**
 * A JetStream API request got no answer: timed out (also a {@link NatsTransport} declaration
 * try), or no responders (503: no meta leader yet, or JetStream not there).
 */
function unanswered(err: unknown): boolean {
  if (err instanceof Error && triesOutOfTime.has(err)) return true;
  const code = natsCode(err);
  return code === ErrorCode.Timeout || code === ErrorCode.NoResponders;
}
