import { MAX_TIMER_MS, serviceQueueName, topicMatches } from "@nuropb/protocol";
import type { DeliveryHandler, Frame, Logger, ResponseHandler } from "@nuropb/protocol";
import { createDeliveryLedger } from "@nuropb/protocol/transport-kit";
import type { DeliveryLedger, HeldDelivery } from "@nuropb/protocol/transport-kit";
import { inboundFrame } from "./frames.ts";
import { HubScheduler } from "./scheduling.ts";

// The in-process "broker": one VHost per mesh, holding durable service queues, their bindings,
// the auto-deleted response queues and the dead letters. Everything here runs synchronously;
// deliveries are handed to handlers after the sender's call stack (see `deliverSoon`).

/** Why a message was dead-lettered. */
export type DeadLetterReason = "rejected" | "expired";

/** A dead-lettered message as the hub keeps it. */
export interface StoredDeadLetter {
  readonly queue: string;
  readonly frame: Frame;
  readonly reason: DeadLetterReason;
}

/**
 * Runs `fn` on a later macrotask, which keeps it out of the caller's call stack and lets timers
 * and I/O run first. Deliveries take {@link deliverSoon}, which uses this once a turn's budget of
 * microtasks is spent.
 */
export function schedule(fn: () => void): void {
  if (typeof globalThis.setImmediate === "function") globalThis.setImmediate(fn);
  else globalThis.setTimeout(fn, 0);
}

/**
 * Deliveries handed over on microtasks per macrotask turn before {@link deliverSoon} falls back to
 * {@link schedule}. Bounded, so that timers and I/O still run between turns of a busy hub.
 */
const MICROTASK_DELIVERY_BUDGET = 64;
let microtaskDeliveriesLeft = MICROTASK_DELIVERY_BUDGET;
let budgetRefillScheduled = false;

function refillDeliveryBudget(): void {
  budgetRefillScheduled = false;
  microtaskDeliveriesLeft = MICROTASK_DELIVERY_BUDGET;
}

/**
 * Runs a delivery `fn` after the current call stack: on a microtask while this macrotask turn's
 * budget lasts, then on a later macrotask (see {@link schedule}); the budget is refilled on the
 * next turn. A hop through the event loop costs a few microseconds, a large share of a request's
 * round trip in one process (two hops per request: c=1 p50 went from 1.18–1.20 × Moleculer Fake's
 * to 1.03–1.06 ×). A handler that requeues forever still lets timers and I/O run after every
 * {@link MICROTASK_DELIVERY_BUDGET} deliveries.
 */
function deliverSoon(fn: () => void): void {
  if (microtaskDeliveriesLeft > 0) {
    microtaskDeliveriesLeft--;
    if (!budgetRefillScheduled) {
      budgetRefillScheduled = true;
      schedule(refillDeliveryBudget);
    }
    // Two hops: a sender awaiting `send` resumes first (its reaction job is queued behind the
    // first), as it did when every delivery took a macrotask.
    queueMicrotask(() => queueMicrotask(fn));
  } else schedule(fn);
}

/** A message in a service queue (internal). */
export interface QueuedMessage {
  readonly seq: number;
  /** {@link SETTLED_FRAME} once acknowledged or dead-lettered (see {@link forgetFrame}). */
  frame: Frame;
  redelivered: boolean;
  /** `Date.now()` value after which the message is dead-lettered instead of delivered. */
  readonly expiresAt: number | undefined;
}

/** What a settled message holds instead of its frame. */
const SETTLED_FRAME: Frame = Object.freeze({
  headers: Object.freeze({}),
  body: new Uint8Array(0),
  correlationId: "",
});

/**
 * Drops a message's frame once it is acknowledged or dead-lettered (the dead letter keeps its
 * own reference): it is never delivered again, but the ledger's record of it may outlive it.
 * A Map that has lived long has its table in old space, and each table it outgrows keeps its
 * entries reachable until the next full collection, so every record it held, and through the
 * frame the 16 KB slab behind the body (bytes.ts), would be promoted. Measured at c=64 on the
 * bench echo: with the frames and the client's pending records dropped, bytes promoted per
 * request fell from ~900–1,300 to ~100–400 and full collections from 5 to 1–3 per run.
 */
function forgetFrame(msg: QueuedMessage): void {
  msg.frame = SETTLED_FRAME;
}

/** One mesh (AMQP virtual host) of a hub. */
export class VHost {
  readonly mesh: string;
  readonly serviceQueues = new Map<string, ServiceQueue>();
  /** Direct-exchange routing: rpc routing key → queues bound for it. */
  readonly #rpcRoutes = new Map<string, Set<ServiceQueue>>();
  /** Response queues by address; a queue exists exactly while its (exclusive) consumer does. */
  readonly responseQueues = new Map<string, ResponseConsumer>();
  /** Stored from `#deadHead` on; the oldest are dropped by moving the head (`shift()` is O(n)). */
  #deadLetters: (StoredDeadLetter | undefined)[] = [];
  #deadHead = 0;
  readonly #maxDeadLetters: number;
  #scheduler: HubScheduler | undefined;

  constructor(mesh: string, maxDeadLetters: number) {
    this.mesh = mesh;
    this.#maxDeadLetters = maxDeadLetters;
  }

  /** Declares (if absent) the durable queue of `service` and adds the given bindings to it. */
  declareServiceQueue(
    service: string,
    rpcBindings: readonly string[],
    eventBindings: readonly string[],
  ): ServiceQueue {
    const name = serviceQueueName(service);
    let queue = this.serviceQueues.get(name);
    if (queue === undefined) {
      queue = new ServiceQueue(name, this);
      this.serviceQueues.set(name, queue);
    }
    for (const key of [service, ...rpcBindings]) {
      let bound = this.#rpcRoutes.get(key);
      if (bound === undefined) {
        bound = new Set();
        this.#rpcRoutes.set(key, bound);
      }
      bound.add(queue);
    }
    for (const pattern of eventBindings) queue.eventPatterns.add(pattern);
    return queue;
  }

  /**
   * Deletes a service queue with its bindings and waiting messages (a transient queue whose
   * consumer stopped), unless another consumer still reads it.
   */
  deleteServiceQueue(queue: ServiceQueue): void {
    if (queue.consumerCount > 0 || this.serviceQueues.get(queue.name) !== queue) return;
    this.serviceQueues.delete(queue.name);
    for (const [key, bound] of this.#rpcRoutes) {
      if (bound.delete(queue) && bound.size === 0) this.#rpcRoutes.delete(key);
    }
    queue.purge();
  }

  /** Routes a request or command; false when no queue is bound for `service` (basic.return). */
  publishRpc(service: string, frame: Frame): boolean {
    const bound = this.#rpcRoutes.get(service);
    if (bound === undefined || bound.size === 0) return false;
    for (const queue of bound) queue.enqueue(frame);
    return true;
  }

  /** Routes an event to every queue with a matching binding (one copy per queue); returns how many. */
  publishEvent(topic: string, frame: Frame): number {
    let routed = 0;
    for (const queue of this.serviceQueues.values()) {
      for (const pattern of queue.eventPatterns) {
        if (topicMatches(pattern, topic)) {
          queue.enqueue(frame);
          routed++;
          break;
        }
      }
    }
    return routed;
  }

  /** Delayed frames and claims of this mesh (scheduling), created on first use. */
  get scheduler(): HubScheduler {
    this.#scheduler ??= new HubScheduler(this);
    return this.#scheduler;
  }

  /**
   * Routes a response through the default exchange: to the response queue of that address, or to
   * the service queue of that name (a reply addressed to a service); false when there is none.
   */
  publishReply(address: string, frame: Frame): boolean {
    const queue = this.responseQueues.get(address);
    if (queue !== undefined) {
      queue.push(frame);
      return true;
    }
    const serviceQueue = this.serviceQueues.get(address);
    if (serviceQueue === undefined) return false;
    serviceQueue.enqueue(frame);
    return true;
  }

  deadLetter(queue: string, frame: Frame, reason: DeadLetterReason): void {
    if (this.#maxDeadLetters === 0) return;
    this.#deadLetters.push({ queue, frame, reason });
    if (this.#deadLetters.length - this.#deadHead > this.#maxDeadLetters) {
      this.#deadLetters[this.#deadHead++] = undefined; // let the frame go
      // Compact once the dropped part is as long as the kept part: amortised O(1) per letter.
      if (this.#deadHead >= this.#maxDeadLetters) {
        this.#deadLetters = this.#deadLetters.slice(this.#deadHead);
        this.#deadHead = 0;
      }
    }
  }

  /** The dead letters kept, oldest first. */
  get deadLetters(): readonly StoredDeadLetter[] {
    // Every entry from the head on is set: only dropped ones (before the head) are undefined.
    return this.#deadLetters.slice(this.#deadHead) as StoredDeadLetter[];
  }

  clearDeadLetters(): void {
    this.#deadLetters = [];
    this.#deadHead = 0;
  }

  /** Ready (undelivered) messages of a queue: service queue or response queue. */
  queueDepth(name: string): number {
    return this.serviceQueues.get(name)?.depth ?? this.responseQueues.get(name)?.depth ?? 0;
  }
}

/** A durable service queue: competing consumers, prefetch, requeue, dead-lettering and TTL. */
export class ServiceQueue {
  readonly name: string;
  readonly eventPatterns = new Set<string>();
  readonly #vhost: VHost;
  /** Waiting messages from `#head` on (taken from the front by index: `shift()` is O(n)). */
  #ready: (QueuedMessage | undefined)[] = [];
  #head = 0;
  readonly #consumers: ServiceConsumer[] = [];
  #nextConsumer = 0;
  #seq = 0;
  #pumpScheduled = false;
  #expiryTimer: ReturnType<typeof setTimeout> | undefined;
  #expiryAt = Number.POSITIVE_INFINITY;

  constructor(name: string, vhost: VHost) {
    this.name = name;
    this.#vhost = vhost;
  }

  get depth(): number {
    return this.#ready.length - this.#head;
  }

  get consumerCount(): number {
    return this.#consumers.length;
  }

  get unsettledCount(): number {
    let n = 0;
    for (const c of this.#consumers) n += c.unsettledCount;
    return n;
  }

  enqueue(frame: Frame): void {
    const ttl = frame.ttlMs;
    const msg: QueuedMessage = {
      seq: this.#seq++,
      frame,
      redelivered: false,
      // PROTOCOL.md §3: a ttl of 0 means "no expiry".
      expiresAt: ttl === undefined || ttl === 0 ? undefined : Date.now() + ttl,
    };
    this.#ready.push(msg);
    if (msg.expiresAt !== undefined) this.#armExpiry(msg.expiresAt);
    this.pumpSoon();
  }

  /** Puts messages back at the head of the queue, in their original order, marked redelivered. */
  returnToHead(messages: readonly QueuedMessage[]): void {
    if (messages.length === 0) return;
    const sorted = [...messages].sort((a, b) => a.seq - b.seq);
    for (const msg of sorted) {
      msg.redelivered = true;
      if (msg.expiresAt !== undefined) this.#armExpiry(msg.expiresAt);
    }
    // Not `unshift(...sorted)`: spreading a six-figure array overflows the call stack.
    this.#ready = (sorted as (QueuedMessage | undefined)[]).concat(this.#ready.slice(this.#head));
    this.#head = 0;
    this.pumpSoon();
  }

  deadLetter(msg: QueuedMessage, reason: DeadLetterReason): void {
    this.#vhost.deadLetter(this.name, msg.frame, reason);
  }

  /** Drops every waiting message and the expiry timer (the queue is being deleted). */
  purge(): void {
    this.#ready = [];
    this.#head = 0;
    if (this.#expiryTimer !== undefined) clearTimeout(this.#expiryTimer);
    this.#expiryTimer = undefined;
    this.#expiryAt = Number.POSITIVE_INFINITY;
  }

  attach(consumer: ServiceConsumer): void {
    if (!this.#consumers.includes(consumer)) this.#consumers.push(consumer);
    this.pumpSoon();
  }

  detach(consumer: ServiceConsumer): void {
    const i = this.#consumers.indexOf(consumer);
    if (i < 0) return;
    this.#consumers.splice(i, 1);
    if (this.#nextConsumer > i) this.#nextConsumer--;
  }

  pumpSoon(): void {
    if (this.#pumpScheduled) return;
    this.#pumpScheduled = true;
    deliverSoon(() => {
      this.#pumpScheduled = false;
      this.#pump();
    });
  }

  #pump(): void {
    // Pick first, call handlers afterwards: a handler that settles synchronously then only
    // schedules another pump, instead of re-entering this loop.
    const batch: [ServiceConsumer, HeldDelivery<QueuedMessage>][] = [];
    const now = Date.now();
    while (this.#head < this.#ready.length) {
      const consumer = this.#pickConsumer();
      if (consumer === undefined) break;
      const msg = this.#ready[this.#head] as QueuedMessage;
      this.#ready[this.#head++] = undefined;
      if (msg.expiresAt !== undefined && msg.expiresAt <= now) {
        this.deadLetter(msg, "expired");
        continue;
      }
      batch.push([consumer, consumer.take(msg)]);
    }
    if (this.#head === this.#ready.length) {
      this.#ready.length = 0;
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > this.#ready.length) {
      this.#ready = this.#ready.slice(this.#head);
      this.#head = 0;
    }
    for (const [consumer, rec] of batch) consumer.invoke(rec);
  }

  #pickConsumer(): ServiceConsumer | undefined {
    const n = this.#consumers.length;
    for (let i = 0; i < n; i++) {
      const index = (this.#nextConsumer + i) % n;
      const consumer = this.#consumers[index] as ServiceConsumer;
      if (consumer.hasCapacity()) {
        this.#nextConsumer = (index + 1) % n;
        return consumer;
      }
    }
    return undefined;
  }

  /**
   * Makes sure the expiry sweep runs by `expiresAt`. One timer per queue, armed for the earliest
   * expiry among waiting messages, instead of one timer per message: with traffic flowing,
   * messages leave the queue long before they expire and the timer rarely fires.
   */
  #armExpiry(expiresAt: number): void {
    if (this.#expiryTimer !== undefined && this.#expiryAt <= expiresAt) return;
    if (this.#expiryTimer !== undefined) clearTimeout(this.#expiryTimer);
    this.#expiryAt = expiresAt;
    // A Node timer holds at most 2^31 - 1 ms; a later expiry is reached in steps of that.
    const delay = Math.min(MAX_TIMER_MS, Math.max(0, expiresAt - Date.now()));
    const timer = setTimeout(() => this.#sweepExpired(), delay);
    // A waiting message must not keep the process alive on its own.
    (timer as { unref?: () => void }).unref?.();
    this.#expiryTimer = timer;
  }

  #sweepExpired(): void {
    this.#expiryTimer = undefined;
    const now = Date.now();
    let next: number | undefined;
    const keep: QueuedMessage[] = [];
    for (let i = this.#head; i < this.#ready.length; i++) {
      const msg = this.#ready[i] as QueuedMessage;
      if (msg.expiresAt !== undefined && msg.expiresAt <= now) this.deadLetter(msg, "expired");
      else {
        keep.push(msg);
        if (msg.expiresAt !== undefined && (next === undefined || msg.expiresAt < next))
          next = msg.expiresAt;
      }
    }
    this.#ready = keep;
    this.#head = 0;
    if (next !== undefined) this.#armExpiry(next);
  }
}

/**
 * One consumer of a service queue. `stop()` is Listener.stop(): no new deliveries; a delivery whose
 * handler is still running may still be settled by it; unsettled deliveries whose handler has
 * returned go back to the queue, marked redelivered. `loseAll()` is a lost channel: everything
 * unsettled goes back at once and settling it afterwards is a no-op. The settle-once, reject on
 * throw, give back and prefetch rules are the transport kit's {@link DeliveryLedger}.
 */
export class ServiceConsumer {
  readonly queue: ServiceQueue;
  readonly prefetch: number;
  readonly #handler: DeliveryHandler;
  readonly #logger: Logger;
  readonly #ledger: DeliveryLedger<QueuedMessage>;
  #attached = false;

  constructor(queue: ServiceQueue, prefetch: number, handler: DeliveryHandler, logger: Logger) {
    this.queue = queue;
    this.prefetch = prefetch;
    this.#handler = handler;
    this.#logger = logger;
    this.#ledger = createDeliveryLedger<QueuedMessage>({
      prefetch,
      settle: (msg, outcome) => {
        if (outcome === "requeue") queue.returnToHead([msg]);
        else {
          if (outcome === "reject") queue.deadLetter(msg, "rejected");
          forgetFrame(msg);
        }
      },
      // The copy with the failure record added goes where reject sends it: no confirm to wait for.
      deadLetter: (msg, headers) => {
        const frame = { ...msg.frame, headers: { ...msg.frame.headers, ...headers } };
        queue.deadLetter({ ...msg, frame }, "rejected");
        forgetFrame(msg);
      },
      giveBack: (messages) => queue.returnToHead(messages),
      onRelease: () => queue.pumpSoon(),
      logger,
      describe: (msg) => ({ queue: queue.name, correlationId: msg.frame.correlationId }),
    });
  }

  get stopped(): boolean {
    return this.#ledger.stopped;
  }

  get unsettledCount(): number {
    return this.#ledger.size;
  }

  hasCapacity(): boolean {
    return this.#attached && this.#ledger.hasRoom();
  }

  /** Starts (or resumes, after a reconnect) consuming. */
  attach(): void {
    if (this.#ledger.stopped || this.#attached) return;
    this.#attached = true;
    this.queue.attach(this);
  }

  /** Listener.stop(). Idempotent. */
  stop(): void {
    this.#detach();
    void this.#ledger.stop();
  }

  /** The channel is gone (close or connection loss): every unsettled delivery goes back. */
  loseAll(): void {
    this.#detach();
    void this.#ledger.giveBackAll();
  }

  take(msg: QueuedMessage): HeldDelivery<QueuedMessage> {
    return this.#ledger.hold(msg);
  }

  invoke(held: HeldDelivery<QueuedMessage>): void {
    if (held.settled) return;
    if (this.#ledger.stopped || !this.#attached) {
      // Stopped or disconnected between being picked and being handed over.
      void this.#ledger.giveBack(held);
      return;
    }
    const msg = held.message;
    this.#logger.debug("delivering", {
      queue: this.queue.name,
      correlationId: msg.frame.correlationId,
      redelivered: msg.redelivered,
    });
    void this.#ledger.dispatch(held, inboundFrame(msg.frame, msg.redelivered, true), this.#handler);
  }

  #detach(): void {
    if (!this.#attached) return;
    this.#attached = false;
    this.queue.detach(this);
  }
}

/**
 * The consumer of a response queue, which is the queue itself: response queues are auto-deleted
 * with their exclusive consumer. Responses are auto-acknowledged.
 */
export class ResponseConsumer {
  readonly address: string;
  readonly #vhost: VHost;
  readonly #handler: ResponseHandler;
  readonly #logger: Logger;
  #pending: Frame[] = [];
  #flushScheduled = false;
  #stopped = false;

  constructor(address: string, vhost: VHost, handler: ResponseHandler, logger: Logger) {
    this.address = address;
    this.#vhost = vhost;
    this.#handler = handler;
    this.#logger = logger;
  }

  get stopped(): boolean {
    return this.#stopped;
  }

  get depth(): number {
    return this.#pending.length;
  }

  /** True when this consumer holds its address in the vhost. */
  get declared(): boolean {
    return this.#vhost.responseQueues.get(this.address) === this;
  }

  /**
   * Declares the queue and starts consuming.
   * @returns false when another live consumer holds the address.
   */
  declare(): boolean {
    if (this.#stopped) return true;
    const holder = this.#vhost.responseQueues.get(this.address);
    if (holder !== undefined && holder !== this) return false;
    this.#vhost.responseQueues.set(this.address, this);
    return true;
  }

  /** The queue goes away with its consumer; responses not yet handed over are lost. */
  undeclare(): void {
    if (this.declared) this.#vhost.responseQueues.delete(this.address);
    this.#pending = [];
  }

  /** Listener.stop(). Idempotent. */
  stop(): void {
    this.#stopped = true;
    this.undeclare();
  }

  push(frame: Frame): void {
    this.#pending.push(frame);
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    deliverSoon(() => {
      this.#flushScheduled = false;
      this.#flush();
    });
  }

  #flush(): void {
    const batch = this.#pending;
    this.#pending = [];
    for (const frame of batch) {
      if (!this.declared) return;
      this.#logger.debug("delivering response", {
        address: this.address,
        correlationId: frame.correlationId,
      });
      try {
        const result: unknown = this.#handler(inboundFrame(frame, false, false));
        if (isPromiseLike(result)) {
          result.then(undefined, (err: unknown) => this.#failed(frame, err));
        }
      } catch (err) {
        this.#failed(frame, err);
      }
    }
  }

  #failed(frame: Frame, err: unknown): void {
    this.#logger.error("response handler failed", {
      address: this.address,
      correlationId: frame.correlationId,
      error: err,
    });
  }
}

function isPromiseLike(value: unknown): value is PromiseLike<unknown> {
  return (
    typeof value === "object" &&
    value !== null &&
    typeof (value as { then?: unknown }).then === "function"
  );
}
