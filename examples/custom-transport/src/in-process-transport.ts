import {
  NuropbMessageError,
  NuropbTransportError,
  assertFrameTtl,
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
  TransportLifecycle,
} from "@nuropb/protocol";
import { copyBytes } from "@nuropb/protocol/transport-kit";
import { Bus, Consumer } from "./in-process-bus.ts";
import type { InProcessBus } from "./in-process-bus.ts";

/** Options of {@link createInProcessTransport}. */
export interface InProcessTransportOptions {
  /** The bus to attach to, from `createInProcessBus()`. */
  readonly bus: InProcessBus;
  /** Largest frame body `send` accepts, in bytes. @defaultValue 1048576 (1 MiB) */
  readonly maxFrameBytes?: number;
  /** Where lifecycle (info) and dropped-message (warn) logs go. @defaultValue noopLogger */
  readonly logger?: Logger;
}

/**
 * Creates a transport on an in-process bus. It gives none of the optional guarantees, and says
 * so in `capabilities`: a request for a service nobody consumes is dropped (the caller's request
 * times out), a rejected message is dropped (and logged), a requeued one comes back unmarked,
 * and `ttlMs` is carried but not enforced. Constructing does no work; call `connect()`.
 * @throws TypeError when an option is invalid.
 * @example
 * ```ts
 * const bus = createInProcessBus();
 * await using transport = createInProcessTransport({ bus });
 * await transport.connect();
 * ```
 */
export function createInProcessTransport(options: InProcessTransportOptions): Transport {
  if (typeof options !== "object" || options === null || !(options.bus instanceof Bus)) {
    throw new TypeError("createInProcessTransport needs { bus } from createInProcessBus()");
  }
  const maxFrameBytes = options.maxFrameBytes ?? 1024 * 1024;
  if (!Number.isSafeInteger(maxFrameBytes) || maxFrameBytes < 1) {
    throw new TypeError("maxFrameBytes must be a positive integer number of bytes");
  }
  const logger = options.logger ?? noopLogger;
  if (!isLogger(logger)) throw new TypeError("logger must be a Logger of @nuropb/protocol");
  return new InProcessTransport(
    options.bus,
    maxFrameBytes,
    logger.child({ component: "in-process" }),
  );
}

class InProcessTransport implements Transport {
  readonly kind = "in-process";
  readonly mesh: string;
  readonly capabilities: TransportCapabilities;
  readonly #bus: Bus;
  readonly #log: Logger;
  // State, events(), closed(), a shared connect() and a once-only close(), as every transport has.
  readonly #life: TransportLifecycle;
  readonly #consumers = new Set<Consumer>();
  readonly #addresses = new Set<string>();

  constructor(bus: Bus, maxFrameBytes: number, log: Logger) {
    this.#bus = bus;
    this.mesh = bus.mesh;
    this.#log = log;
    this.#life = createTransportLifecycle("in-process", log);
    this.capabilities = Object.freeze({
      notDelivered: false,
      redelivery: false,
      deadLetter: false,
      messageTtl: false,
      maxFrameBytes,
    });
  }

  get state(): LifecycleState {
    return this.#life.state;
  }

  connect(): Promise<void> {
    // Nothing to open; a network transport connects (and may fail) here.
    return this.#life.connect(async () => this.#log.info("connected"));
  }

  close(): Promise<void> {
    return this.#life.close(async () => {
      // Unsettled deliveries go back to the queue for another consumer.
      for (const consumer of this.#consumers) consumer.stop(true);
      for (const address of this.#addresses) this.#bus.replies.delete(address);
      this.#consumers.clear();
      this.#addresses.clear();
      this.#log.info("closed");
    });
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
    await this.#ready();
    const copy = this.#copy(frame);
    switch (to.kind) {
      case "rpc":
        return this.#bus.sendRpc(to.service, copy);
      case "event":
        return this.#bus.sendEvent(to.topic, copy);
      case "reply":
        return this.#bus.sendReply(to.address, copy);
      default:
        throw new TypeError(`unknown destination kind: ${String((to as { kind: unknown }).kind)}`);
    }
  }

  async consumeService(spec: ServiceQueueSpec, handler: DeliveryHandler): Promise<Listener> {
    await this.#ready();
    checkServiceSpec(spec);
    if (typeof handler !== "function") throw new TypeError("handler must be a function");
    const queue = this.#bus.declare(spec.service, spec.rpcBindings, spec.eventBindings);
    const consumer = new Consumer(queue, spec.prefetch, handler, this.#log);
    this.#consumers.add(consumer);
    return listener(() => {
      if (this.#consumers.delete(consumer)) consumer.stop(false);
    });
  }

  async consumeResponses(spec: ResponseQueueSpec, handler: ResponseHandler): Promise<Listener> {
    await this.#ready();
    const address = spec?.address;
    if (typeof address !== "string" || address === "") {
      throw new TypeError("spec.address must be a non-empty string");
    }
    if (typeof handler !== "function") throw new TypeError("handler must be a function");
    if (this.#bus.replies.has(address)) {
      throw new NuropbTransportError(`response address '${address}' is in use by another consumer`);
    }
    this.#bus.replies.set(address, (frame) => {
      try {
        handler(frame);
      } catch (err) {
        this.#log.error("response handler failed", { error: err });
      }
    });
    this.#addresses.add(address);
    return listener(() => {
      if (this.#addresses.delete(address)) this.#bus.replies.delete(address);
    });
  }

  /** Waits out a connect under way; refuses when closed or never connected. */
  async #ready(): Promise<void> {
    await this.#life.connectSettled();
    if (this.#life.ending) throw this.#life.closedError();
    if (this.#life.state !== "open") {
      throw new NuropbTransportError("the in-process transport is not connected: call connect()");
    }
  }

  /** A private copy, so the sender may reuse its buffers once `send` resolves. */
  #copy(frame: Frame): Frame {
    if (!(frame?.body instanceof Uint8Array))
      throw new TypeError("frame.body must be a Uint8Array");
    assertFrameTtl(frame.ttlMs);
    const max = this.capabilities.maxFrameBytes;
    if (frame.body.byteLength > max) {
      throw new NuropbMessageError(`frame body of ${frame.body.byteLength} bytes exceeds ${max}`);
    }
    return { ...frame, headers: Object.freeze({ ...frame.headers }), body: copyBytes(frame.body) };
  }
}

function checkServiceSpec(spec: ServiceQueueSpec): void {
  if (typeof spec?.service !== "string" || spec.service === "") {
    throw new TypeError("spec.service must be a non-empty string");
  }
  if (!Array.isArray(spec.rpcBindings) || !Array.isArray(spec.eventBindings)) {
    throw new TypeError("spec.rpcBindings and spec.eventBindings must be arrays");
  }
  for (const pattern of spec.eventBindings) assertTopicPattern(pattern);
  if (!Number.isSafeInteger(spec.prefetch) || spec.prefetch < 0) {
    throw new TypeError("spec.prefetch must be an integer >= 0 (0 = unlimited)");
  }
}

/** A Listener whose stop() runs `stop` once. */
function listener(stop: () => void): Listener {
  const once = async (): Promise<void> => stop();
  return { stop: once, [Symbol.asyncDispose]: once };
}
