import { DEFAULT_MESH } from "@nuropb/protocol";
import type { Frame, Transport } from "@nuropb/protocol";
import { VHost } from "./broker.ts";
import { copyFrame } from "./frames.ts";

/** Options of {@link createMemoryHub}. */
export interface MemoryHubOptions {
  /**
   * Most dead letters kept per mesh; the oldest are dropped beyond it.
   * @defaultValue 10000
   */
  readonly maxDeadLetters?: number;
}

/** A message the hub dead-lettered (AMQP `reject` with requeue false, or ttl expiry). */
export interface MemoryDeadLetter {
  /** Name of the service queue it was dead-lettered from, e.g. `nuropb-orders-sq`. */
  readonly queue: string;
  /** A copy of the message as it was sent. */
  readonly frame: Frame;
  /** `"rejected"` by a consumer (or its failing handler), or `"expired"` after its `ttlMs`. */
  readonly reason: "rejected" | "expired";
}

/** Options of {@link MemoryHub.disconnect}. */
export interface MemoryDisconnectOptions {
  /**
   * How long the connection stays down, in milliseconds. 0 means one event-loop turn.
   * @defaultValue 0
   */
  readonly downMs?: number;
  /** The error reported with the `disconnected` event. Default: a retryable `NuropbTransportError`. */
  readonly error?: Error;
}

/**
 * The in-process "broker" that memory transports attach to. Each mesh is a separate namespace
 * (like an AMQP virtual host). Besides routing, the hub offers inspection and fault injection for
 * tests. A hub is an explicit object: two hubs never see each other's messages.
 */
export interface MemoryHub {
  /**
   * Simulates a lost connection of `transport`: it reports `{ type: "disconnected" }`, its unsettled
   * deliveries go back to their queues marked redelivered, its response queues are deleted (with
   * the responses in them); after `downMs` its consumers are restored and it reports
   * `{ type: "reconnected" }`. Sends made meanwhile wait for the reconnect. Resolves once reconnected
   * (or closed meanwhile).
   * @throws TypeError when `transport` was not created on this hub.
   * @throws NuropbTransportError when `transport` is not open.
   */
  disconnect(transport: Transport, options?: MemoryDisconnectOptions): Promise<void>;
  /**
   * Simulates a connection failure the transport does not recover from: it closes, reports
   * `{ type: "closed", error }`, and `closed()` resolves with `error`.
   * @throws TypeError when `transport` was not created on this hub.
   */
  fail(transport: Transport, error?: Error): Promise<void>;
  /** Names of the existing queues of a mesh (service and response queues), sorted. */
  queueNames(mesh?: string): string[];
  /** Messages waiting in a queue (not handed to a consumer); 0 for a queue that does not exist. */
  queueDepth(queue: string, mesh?: string): number;
  /** Messages handed to consumers of a service queue and not yet settled. */
  unsettledCount(queue: string, mesh?: string): number;
  /** Live consumers of a queue (a response queue has at most one). */
  consumerCount(queue: string, mesh?: string): number;
  /** Topic patterns the service queue is bound with, in binding order. */
  eventBindings(queue: string, mesh?: string): string[];
  /** Copies of the dead letters of a mesh, oldest first. */
  deadLetters(mesh?: string): MemoryDeadLetter[];
  /** Forgets the dead letters of a mesh. */
  clearDeadLetters(mesh?: string): void;
}

/** What the hub needs from a transport to inject faults (internal). */
export interface TransportControl {
  simulateDisconnect(options: MemoryDisconnectOptions): Promise<void>;
  fail(error: Error | undefined): Promise<void>;
}

class MemoryBroker implements MemoryHub {
  readonly #vhosts = new Map<string, VHost>();
  readonly #transports = new WeakMap<Transport, TransportControl>();
  readonly #maxDeadLetters: number;

  constructor(maxDeadLetters: number) {
    this.#maxDeadLetters = maxDeadLetters;
  }

  vhost(mesh: string): VHost {
    let vhost = this.#vhosts.get(mesh);
    if (vhost === undefined) {
      vhost = new VHost(mesh, this.#maxDeadLetters);
      this.#vhosts.set(mesh, vhost);
    }
    return vhost;
  }

  register(transport: Transport, control: TransportControl): void {
    this.#transports.set(transport, control);
  }

  async disconnect(transport: Transport, options: MemoryDisconnectOptions = {}): Promise<void> {
    const control = this.#control(transport);
    const downMs = options.downMs ?? 0;
    if (typeof downMs !== "number" || !Number.isFinite(downMs) || downMs < 0) {
      throw new TypeError("downMs must be a finite number of milliseconds >= 0");
    }
    return control.simulateDisconnect({ ...options, downMs });
  }

  async fail(transport: Transport, error?: Error): Promise<void> {
    return this.#control(transport).fail(error);
  }

  queueNames(mesh: string = DEFAULT_MESH): string[] {
    const vhost = this.#vhosts.get(mesh);
    if (vhost === undefined) return [];
    return [...vhost.serviceQueues.keys(), ...vhost.responseQueues.keys()].sort();
  }

  queueDepth(queue: string, mesh: string = DEFAULT_MESH): number {
    return this.#vhosts.get(mesh)?.queueDepth(queue) ?? 0;
  }

  unsettledCount(queue: string, mesh: string = DEFAULT_MESH): number {
    return this.#vhosts.get(mesh)?.serviceQueues.get(queue)?.unsettledCount ?? 0;
  }

  consumerCount(queue: string, mesh: string = DEFAULT_MESH): number {
    const vhost = this.#vhosts.get(mesh);
    if (vhost === undefined) return 0;
    const service = vhost.serviceQueues.get(queue);
    if (service !== undefined) return service.consumerCount;
    return vhost.responseQueues.has(queue) ? 1 : 0;
  }

  eventBindings(queue: string, mesh: string = DEFAULT_MESH): string[] {
    return [...(this.#vhosts.get(mesh)?.serviceQueues.get(queue)?.eventPatterns ?? [])];
  }

  deadLetters(mesh: string = DEFAULT_MESH): MemoryDeadLetter[] {
    return (this.#vhosts.get(mesh)?.deadLetters ?? []).map((d) => ({
      queue: d.queue,
      frame: copyFrame(d.frame),
      reason: d.reason,
    }));
  }

  clearDeadLetters(mesh: string = DEFAULT_MESH): void {
    this.#vhosts.get(mesh)?.clearDeadLetters();
  }

  #control(transport: Transport): TransportControl {
    const control = this.#transports.get(transport);
    if (control === undefined) {
      throw new TypeError("transport was not created by createMemoryTransport on this hub");
    }
    return control;
  }
}

/**
 * Creates an in-process broker hub. Transports made with `createMemoryTransport({ hub })` on the
 * same hub and mesh reach each other; nothing is global.
 * @throws TypeError when an option is invalid.
 * @example
 * ```ts
 * const hub = createMemoryHub();
 * const a = createMemoryTransport({ hub });
 * const b = createMemoryTransport({ hub });
 * ```
 */
export function createMemoryHub(options: MemoryHubOptions = {}): MemoryHub {
  if (typeof options !== "object" || options === null) {
    throw new TypeError("createMemoryHub options must be an object");
  }
  const max = options.maxDeadLetters ?? 10_000;
  if (!Number.isSafeInteger(max) || max < 0) {
    throw new TypeError("maxDeadLetters must be an integer >= 0");
  }
  return new MemoryBroker(max);
}

/**
 * The broker behind a public hub (internal to this package).
 * @throws TypeError when `hub` did not come from {@link createMemoryHub}.
 */
export function brokerOf(hub: unknown): {
  vhost(mesh: string): VHost;
  register(transport: Transport, control: TransportControl): void;
} {
  if (!(hub instanceof MemoryBroker)) {
    throw new TypeError("options.hub must be a hub returned by createMemoryHub()");
  }
  return hub;
}
