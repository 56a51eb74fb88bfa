import { DEFAULT_MESH, topicMatches } from "@nuropb/protocol";
import type {
  DeliveryHandler,
  Frame,
  InboundFrame,
  Logger,
  ResponseHandler,
} from "@nuropb/protocol";
import { copyBytes, createDeliveryLedger } from "@nuropb/protocol/transport-kit";
import type { DeliveryLedger } from "@nuropb/protocol/transport-kit";

// The "broker" of the example: plain maps and arrays in one process. A real transport talks to
// a server here instead; what it must offer core is the same (see the README).

/** An in-process message bus: what a broker is to a network transport. Share one per mesh. */
export interface InProcessBus {
  /** The mesh every transport on this bus belongs to. */
  readonly mesh: string;
}

/**
 * Creates an empty bus.
 * @throws TypeError when `mesh` is not a non-empty string.
 */
export function createInProcessBus(mesh: string = DEFAULT_MESH): InProcessBus {
  if (typeof mesh !== "string" || mesh === "")
    throw new TypeError("mesh must be a non-empty string");
  return new Bus(mesh);
}

/** Runs `fn` later, never inside the caller's stack (a handler may send again at once). */
const later = (fn: () => void): void => void setImmediate(fn);

export class Bus implements InProcessBus {
  readonly mesh: string;
  /** Service queues by service name, and which of them each rpc name (service or alias) reaches. */
  readonly queues = new Map<string, ServiceQueue>();
  readonly #routes = new Map<string, Set<ServiceQueue>>();
  /** Response consumers by reply address (exclusive: one each). */
  readonly replies = new Map<string, ResponseHandler>();

  constructor(mesh: string) {
    this.mesh = mesh;
  }

  /** Creates the queue of `service` if needed and adds the bindings to it. */
  declare(service: string, rpcNames: readonly string[], patterns: readonly string[]): ServiceQueue {
    let queue = this.queues.get(service);
    if (queue === undefined) this.queues.set(service, (queue = new ServiceQueue()));
    for (const name of [service, ...rpcNames]) {
      const bound = this.#routes.get(name) ?? new Set();
      this.#routes.set(name, bound.add(queue));
    }
    for (const pattern of patterns) queue.patterns.add(pattern);
    return queue;
  }

  /** A request or command; silently dropped when no queue is bound (no `notDelivered`). */
  sendRpc(service: string, frame: Frame): void {
    for (const queue of this.#routes.get(service) ?? []) queue.push(frame);
  }

  /** An event: one copy to every queue with a matching pattern. */
  sendEvent(topic: string, frame: Frame): void {
    for (const queue of this.queues.values()) {
      if ([...queue.patterns].some((p) => topicMatches(p, topic))) queue.push(frame);
    }
  }

  /** A response; dropped when nobody consumes the address (now, or when it is handed over). */
  sendReply(address: string, frame: Frame): void {
    const deliver = this.replies.get(address);
    if (deliver === undefined) return;
    later(() => {
      if (this.replies.get(address) === deliver) deliver(inbound(frame));
    });
  }
}

/** A frame as a consumer sees it, with a body of its own. No history is kept: never redelivered. */
function inbound(frame: Frame): InboundFrame {
  return { ...frame, body: copyBytes(frame.body), redelivered: false };
}

/** A queue with competing consumers: each message goes to one consumer with room for it. */
export class ServiceQueue {
  readonly patterns = new Set<string>();
  readonly #waiting: Frame[] = [];
  readonly #consumers: Consumer[] = [];
  #next = 0;
  #pumping = false;

  push(frame: Frame): void {
    this.#waiting.push(frame);
    this.pump();
  }

  /** Messages a consumer gave back go first, in the order they came. */
  putBack(frames: readonly Frame[]): void {
    this.#waiting.unshift(...frames);
    this.pump();
  }

  add(consumer: Consumer): void {
    this.#consumers.push(consumer);
    this.pump();
  }

  remove(consumer: Consumer): void {
    const i = this.#consumers.indexOf(consumer);
    if (i >= 0) this.#consumers.splice(i, 1);
  }

  /** Hands waiting messages out round robin, on a later turn. */
  pump(): void {
    if (this.#pumping) return;
    this.#pumping = true;
    later(() => {
      this.#pumping = false;
      for (let frame = this.#waiting[0]; frame !== undefined; frame = this.#waiting[0]) {
        const consumer = this.#pick();
        if (consumer === undefined) return;
        this.#waiting.shift();
        consumer.deliver(frame);
      }
    });
  }

  #pick(): Consumer | undefined {
    for (let i = 0; i < this.#consumers.length; i++) {
      const consumer = this.#consumers[(this.#next + i) % this.#consumers.length] as Consumer;
      if (consumer.hasRoom()) {
        this.#next = (this.#next + i + 1) % this.#consumers.length;
        return consumer;
      }
    }
    return undefined;
  }
}

/**
 * One consumer of a service queue. The rules every consumer keeps (settle once, reject when the
 * handler throws without settling, give back on stop, prefetch) are the transport kit's
 * delivery ledger: the consumer hands it the broker work.
 */
export class Consumer {
  readonly #queue: ServiceQueue;
  readonly #handler: DeliveryHandler;
  readonly #ledger: DeliveryLedger<Frame>;

  constructor(queue: ServiceQueue, prefetch: number, handler: DeliveryHandler, log: Logger) {
    this.#queue = queue;
    this.#handler = handler;
    this.#ledger = createDeliveryLedger<Frame>({
      prefetch,
      settle: (frame, outcome) => {
        // Without dead letters a rejected message is gone: log it where an operator can see it.
        if (outcome === "reject")
          log.warn("message rejected and dropped", { correlationId: frame.correlationId });
        if (outcome === "requeue") queue.putBack([frame]);
      },
      // Messages given back go first, in the order they came.
      giveBack: (frames) => queue.putBack(frames),
      onRelease: () => queue.pump(),
      logger: log,
      describe: (frame) => ({ correlationId: frame.correlationId }),
    });
    queue.add(this);
  }

  hasRoom(): boolean {
    return this.#ledger.hasRoom();
  }

  deliver(frame: Frame): void {
    void this.#ledger.dispatch(this.#ledger.hold(frame), inbound(frame), this.#handler);
  }

  /**
   * Stops taking messages. `all` (a close): every unsettled message goes back now; otherwise
   * (Listener.stop) only those whose handler has returned, the others when it returns.
   */
  stop(all: boolean): void {
    this.#queue.remove(this);
    void (all ? this.#ledger.close() : this.#ledger.stop());
  }
}
