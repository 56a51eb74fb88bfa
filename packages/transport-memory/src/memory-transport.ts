import {
  DEFAULT_MESH,
  NuropbNotDeliveredError,
  NuropbTransportError,
  assertTopicPattern,
  createTransportLifecycle,
  isLogger,
  noopLogger,
} from "@nuropb/protocol";
import type {
  DeliveryHandler,
  Destination,
  Frame,
  LifecycleState,
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
import { ResponseConsumer, ServiceConsumer, schedule } from "./broker.ts";
import type { VHost } from "./broker.ts";
import { assertDestination, copyOutgoingFrame } from "./frames.ts";
import { brokerOf } from "./memory-hub.ts";
import type { MemoryDisconnectOptions, MemoryHub } from "./memory-hub.ts";
import { createMemoryScheduling } from "./scheduling.ts";
import { MemoryEventLog, appendToEventLog } from "./event-log.ts";

/** Default largest body a memory transport accepts: 16 MiB. */
export const DEFAULT_MEMORY_MAX_FRAME_BYTES = 16 * 1024 * 1024;

/** Options of {@link createMemoryTransport}. */
export interface MemoryTransportOptions {
  /** The hub (in-process broker) to attach to, from `createMemoryHub()`. */
  readonly hub: MemoryHub;
  /**
   * The mesh (AMQP virtual host) to join; transports only reach others on the same mesh.
   * @defaultValue "nuropb"
   */
  readonly mesh?: string;
  /** Where lifecycle (info) and per-message (debug) logs go. @defaultValue noopLogger */
  readonly logger?: Logger;
  /**
   * Largest frame body `send` accepts, in bytes.
   * @defaultValue 16777216 (16 MiB)
   */
  readonly maxFrameBytes?: number;
}

/**
 * Creates an in-process transport that delivers like RabbitMQ as NuroPb uses it: durable service
 * queues with competing consumers, prefetch, requeue, dead-lettering and per-message ttl; topic
 * routing of events; exclusive, auto-deleted response queues; mandatory rpc delivery. Constructing
 * does no work; call `connect()`.
 * @throws TypeError when an option is invalid.
 * @example
 * ```ts
 * const hub = createMemoryHub();
 * await using transport = createMemoryTransport({ hub, mesh: "demo" });
 * await transport.connect();
 * ```
 */
export function createMemoryTransport(options: MemoryTransportOptions): Transport {
  if (typeof options !== "object" || options === null) {
    throw new TypeError("createMemoryTransport needs an options object with a hub");
  }
  const broker = brokerOf(options.hub);
  const mesh = options.mesh ?? DEFAULT_MESH;
  if (typeof mesh !== "string" || mesh === "") {
    throw new TypeError("mesh must be a non-empty string");
  }
  const maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MEMORY_MAX_FRAME_BYTES;
  if (!Number.isSafeInteger(maxFrameBytes) || maxFrameBytes < 1) {
    throw new TypeError("maxFrameBytes must be a positive integer number of bytes");
  }
  const logger = options.logger ?? noopLogger;
  if (!isLogger(logger)) {
    throw new TypeError("logger must implement the Logger interface of @nuropb/protocol");
  }
  const transport = new MemoryTransport(
    broker.vhost(mesh),
    maxFrameBytes,
    logger.child({ component: "transport-memory", mesh }),
  );
  broker.register(transport, {
    simulateDisconnect: (o) => transport.simulateDisconnect(o),
    fail: (error) => transport.fail(error),
  });
  return transport;
}

class MemoryTransport implements Transport {
  readonly kind = "memory";
  readonly mesh: string;
  readonly capabilities: TransportCapabilities;
  readonly scheduling: TransportScheduling;
  readonly eventLog: TransportEventLog;
  readonly #vhost: VHost;
  /** Service consumers of transient queues (deleted when the consumer stops). */
  readonly #transient = new Set<ServiceConsumer>();
  readonly #logger: Logger;
  readonly #life = createTransportLifecycle("memory");
  readonly #serviceConsumers = new Set<ServiceConsumer>();
  readonly #responseConsumers = new Set<ResponseConsumer>();
  /** Set while a simulated connection loss lasts; resolves when it is over. */
  #outage: Promise<void> | undefined;
  /** Ends the simulated outage now (the transport is closing): clears its timer, settles it. */
  #endOutage: (() => void) | undefined;

  constructor(vhost: VHost, maxFrameBytes: number, logger: Logger) {
    this.#vhost = vhost;
    this.mesh = vhost.mesh;
    this.#logger = logger;
    this.capabilities = Object.freeze({
      notDelivered: true,
      redelivery: true,
      deadLetter: true,
      messageTtl: true,
      maxFrameBytes,
      // In-process: every reader is nuropb-ts.
      slimBodies: true,
    });
    this.scheduling = createMemoryScheduling({
      vhost,
      whenUsable: async () => {
        this.#assertNotClosed();
        if (this.#life.state !== "open" || this.#outage !== undefined) await this.#whenUsable();
      },
      copyFrame: (frame) => copyOutgoingFrame(frame, maxFrameBytes),
    });
    this.eventLog = new MemoryEventLog({
      mesh: vhost,
      whenUsable: async () => {
        this.#assertNotClosed();
        if (this.#life.state !== "open" || this.#outage !== undefined) await this.#whenUsable();
      },
      copyFrame: (frame) => copyOutgoingFrame(frame, maxFrameBytes),
      route: (topic, frame) => this.#vhost.publishEvent(topic, frame),
      closed: () => this.#life.closed(),
    });
  }

  get state(): LifecycleState {
    return this.#life.state;
  }

  connect(options: { readonly signal?: AbortSignal } = {}): Promise<void> {
    const signal = options.signal;
    const state = this.#life.state;
    if (signal?.aborted === true && (state === "idle" || state === "connecting")) {
      return Promise.reject(abortedError(signal));
    }
    const attempt = this.#life.connect(
      () =>
        new Promise<void>((resolve, reject) => {
          // As on a broker: the signal of the call that started the attempt aborts it, and
          // the transport goes back to idle.
          const onAbort = (): void => reject(abortedError(signal as AbortSignal));
          signal?.addEventListener("abort", onAbort, { once: true });
          schedule(() => {
            signal?.removeEventListener("abort", onAbort);
            if (signal?.aborted === true) return;
            if (!this.#life.ending) this.#logger.info("connected");
            resolve();
          });
        }),
    );
    // Each caller gets its own (possibly abortable) view; the shared attempt never goes unhandled.
    attempt.catch(() => {});
    return signal === undefined ? attempt : abortable(attempt, signal);
  }

  close(): Promise<void> {
    return this.#life.close(() => this.#shutdown(undefined));
  }

  closed(): Promise<Error | undefined> {
    return this.#life.closed();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  events(): AsyncIterable<TransportEvent> {
    return this.#life.events();
  }

  async send(to: Destination, frame: Frame): Promise<void> {
    this.#assertNotClosed();
    assertDestination(to);
    const copy = copyOutgoingFrame(frame, this.capabilities.maxFrameBytes);
    if (this.#life.state !== "open" || this.#outage !== undefined) await this.#whenUsable();
    switch (to.kind) {
      case "rpc":
        if (!this.#vhost.publishRpc(to.service, copy)) {
          throw new NuropbNotDeliveredError(`no queue is bound for service '${to.service}'`, {
            details: { service: to.service },
          });
        }
        break;
      case "event":
        appendToEventLog(this.#vhost, to.topic, copy);
        this.#vhost.publishEvent(to.topic, copy);
        break;
      case "reply":
        // The default exchange drops a message for a queue that does not exist.
        this.#vhost.publishReply(to.address, copy);
        break;
    }
    this.#logger.debug("sent", { kind: to.kind, correlationId: copy.correlationId });
  }

  async consumeService(spec: ServiceQueueSpec, handler: DeliveryHandler): Promise<Listener> {
    this.#assertNotClosed();
    assertServiceSpec(spec);
    if (typeof handler !== "function") throw new TypeError("handler must be a function");
    if (this.#life.state !== "open" || this.#outage !== undefined) await this.#whenUsable();
    const queue = this.#vhost.declareServiceQueue(
      spec.service,
      spec.rpcBindings,
      spec.eventBindings,
    );
    const consumer = new ServiceConsumer(queue, spec.prefetch, handler, this.#logger);
    this.#serviceConsumers.add(consumer);
    consumer.attach();
    this.#logger.info("consuming service queue", { queue: queue.name, prefetch: spec.prefetch });
    if (spec.transient === true) this.#transient.add(consumer);
    return createListener(() => {
      consumer.stop();
      this.#serviceConsumers.delete(consumer);
      this.#dropIfTransient(consumer);
    });
  }

  /** A transient queue goes with its consumer (see `ServiceQueueSpec.transient`). */
  #dropIfTransient(consumer: ServiceConsumer): void {
    if (!this.#transient.delete(consumer)) return;
    this.#vhost.deleteServiceQueue(consumer.queue);
  }

  async consumeResponses(spec: ResponseQueueSpec, handler: ResponseHandler): Promise<Listener> {
    this.#assertNotClosed();
    if (typeof spec !== "object" || spec === null) throw new TypeError("spec must be an object");
    if (typeof spec.address !== "string" || spec.address === "") {
      throw new TypeError("spec.address must be a non-empty string");
    }
    if (typeof handler !== "function") throw new TypeError("handler must be a function");
    if (this.#life.state !== "open" || this.#outage !== undefined) await this.#whenUsable();
    const consumer = new ResponseConsumer(spec.address, this.#vhost, handler, this.#logger);
    if (!consumer.declare()) {
      throw new NuropbTransportError(
        `response queue '${spec.address}' is in exclusive use by another consumer`,
        { details: { address: spec.address } },
      );
    }
    this.#responseConsumers.add(consumer);
    this.#logger.info("consuming response queue", { address: spec.address });
    return createListener(() => {
      consumer.stop();
      this.#responseConsumers.delete(consumer);
    });
  }

  /** Hub fault injection: a connection loss followed by an automatic reconnect. */
  simulateDisconnect(options: MemoryDisconnectOptions): Promise<void> {
    if (this.#life.state !== "open") {
      return Promise.reject(
        new NuropbTransportError(`cannot disconnect a transport that is ${this.#life.state}`),
      );
    }
    if (this.#outage !== undefined) return this.#outage;
    const error =
      options.error ??
      new NuropbTransportError("connection lost (simulated by the memory hub)", {
        retryable: true,
      });
    this.#logger.warn("disconnected", { error });
    this.#life.emit({ type: "disconnected", error });
    for (const consumer of this.#serviceConsumers) consumer.loseAll();
    for (const consumer of this.#responseConsumers) consumer.undeclare();
    this.#outage = new Promise<void>((resolve) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const end = (): void => {
        if (timer !== undefined) clearTimeout(timer);
        this.#outage = undefined;
        this.#endOutage = undefined;
        resolve();
      };
      const restore = (): void => {
        end();
        if (this.#life.state === "open") this.#restore();
      };
      this.#endOutage = end;
      const downMs = options.downMs ?? 0;
      if (downMs > 0) timer = setTimeout(restore, downMs);
      else schedule(restore);
    });
    return this.#outage;
  }

  /** Hub fault injection: a connection loss the transport does not survive. */
  fail(error: Error | undefined): Promise<void> {
    const reason =
      error ?? new NuropbTransportError("connection failed (simulated by the memory hub)");
    return this.#life.close(() => this.#shutdown(reason), reason);
  }

  #restore(): void {
    for (const consumer of this.#serviceConsumers) consumer.attach();
    for (const consumer of [...this.#responseConsumers]) {
      if (consumer.declare()) continue;
      const error = new NuropbTransportError(
        `response queue '${consumer.address}' was taken by another consumer during a reconnect`,
        { details: { address: consumer.address } },
      );
      this.#logger.error("could not resume a response consumer", { error });
      consumer.stop();
      this.#responseConsumers.delete(consumer);
      this.#life.emit({ type: "errored", error });
    }
    this.#logger.info("reconnected");
    this.#life.emit({ type: "reconnected" });
  }

  /** Drops every consumer; the lifecycle is `closing` and reports `closed` when this returns. */
  async #shutdown(error: Error | undefined): Promise<void> {
    this.#endOutage?.();
    for (const consumer of this.#serviceConsumers) {
      consumer.loseAll();
      consumer.stop();
      this.#dropIfTransient(consumer);
    }
    for (const consumer of this.#responseConsumers) consumer.stop();
    this.#serviceConsumers.clear();
    this.#responseConsumers.clear();
    if (error === undefined) this.#logger.info("closed");
    else this.#logger.warn("closed by a connection failure", { error });
  }

  #assertNotClosed(): void {
    if (this.#life.ending) throw this.#life.closedError();
  }

  /** Waits until the transport can be used (connected, not mid-outage). */
  async #whenUsable(): Promise<void> {
    for (;;) {
      switch (this.#life.state) {
        case "idle":
          throw new NuropbTransportError("the transport is not connected: call connect() first");
        case "closing":
        case "closed":
          throw this.#life.closedError();
        case "connecting":
          await this.#life.connectSettled();
          break;
        case "open":
          if (this.#outage === undefined) return;
          await this.#outage;
          break;
      }
    }
  }
}

function assertServiceSpec(spec: ServiceQueueSpec): void {
  if (typeof spec !== "object" || spec === null) throw new TypeError("spec must be an object");
  if (typeof spec.service !== "string" || spec.service === "") {
    throw new TypeError("spec.service must be a non-empty string");
  }
  if (!Array.isArray(spec.rpcBindings)) throw new TypeError("spec.rpcBindings must be an array");
  for (const name of spec.rpcBindings) {
    if (typeof name !== "string" || name === "") {
      throw new TypeError("spec.rpcBindings entries must be non-empty strings");
    }
  }
  if (!Array.isArray(spec.eventBindings)) {
    throw new TypeError("spec.eventBindings must be an array");
  }
  for (const pattern of spec.eventBindings) assertTopicPattern(pattern);
  if (!Number.isSafeInteger(spec.prefetch) || spec.prefetch < 0) {
    throw new TypeError("spec.prefetch must be an integer >= 0 (0 = unlimited)");
  }
  if (spec.transient !== undefined && typeof spec.transient !== "boolean") {
    throw new TypeError("spec.transient must be a boolean when given");
  }
}

function createListener(stop: () => void): Listener {
  let stopped = false;
  const stopOnce = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    stop();
  };
  return { stop: stopOnce, [Symbol.asyncDispose]: stopOnce };
}

function abortedError(signal: AbortSignal): NuropbTransportError {
  return new NuropbTransportError("connect was aborted", { cause: signal.reason });
}

function abortable(promise: Promise<void>, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onAbort = (): void => reject(abortedError(signal));
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      () => {
        signal.removeEventListener("abort", onAbort);
        resolve();
      },
      (err: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(err as Error);
      },
    );
  });
}
