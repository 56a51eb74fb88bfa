import type { LifecycleState } from "./constants.ts";
import type { TransportScheduling } from "./scheduling.ts";
import type { TransportEventLog } from "./event-log.ts";

/**
 * Header values of a frame. On AMQP they are field-table entries: strings, or `null` for the
 * void `trace_id` Python sends when a caller gave no trace id.
 */
export type WireHeaders = Readonly<Record<string, string | null>>;

/**
 * What a transport moves: opaque body bytes plus the few fields the broker itself must see.
 * On AMQP these are exactly the properties and headers of PROTOCOL.md §3.
 */
export interface Frame {
  /** The NuroPb headers (`nuropb_protocol`, `nuropb_version`, `nuropb_type`, `trace_id`, `encrypted`). */
  readonly headers: WireHeaders;
  /** The body: UTF-8 JSON, or ciphertext when `encrypted` is `yes`. */
  readonly body: Uint8Array;
  /** AMQP `correlation_id`. */
  readonly correlationId: string;
  /** Requests and commands: the sender's reply address (its response queue). Otherwise absent. */
  readonly replyTo?: string;
  /** Requests and commands: time-to-live in milliseconds (AMQP `expiration`). Absent: none. */
  readonly ttlMs?: number;
}

/** A frame as it was received. */
export interface InboundFrame extends Frame {
  /** True when the broker delivered this message before (after a requeue or a lost consumer). */
  readonly redelivered: boolean;
}

/**
 * A service-queue message awaiting settlement. Exactly one of `ack`, `requeue` or `reject` must be
 * called; later calls are ignored. Settling a delivery whose channel was lost is a no-op (the
 * broker redelivers it), never an error.
 */
export interface Delivery extends InboundFrame {
  /** Done: remove the message. */
  ack(): Promise<void>;
  /** Put the message back once; the copy arrives with `redelivered: true` (AMQP nack requeue). */
  requeue(): Promise<void>;
  /** Failed: dead-letter the message (AMQP reject, requeue false). */
  reject(): Promise<void>;
  /**
   * Optional: failed for good, dead-letter the message with `headers` added to its own (the
   * failure record of core's failure pipeline). A transport that offers it sends the copy to its
   * dead-letter destination and waits for the broker to take it (publisher confirm) before
   * removing the original; when the copy cannot be sent it falls back to {@link reject}, so the
   * message is never lost. Settles the delivery like `ack`/`requeue`/`reject` (once). Without
   * it, callers use `reject()` and the failure record is only logged.
   */
  deadLetter?(headers: Readonly<Record<string, string>>): Promise<void>;
}

/** Where a frame is sent. */
export type Destination =
  /** A request or command for a service; delivery is mandatory (see {@link Transport.send}). */
  | { readonly kind: "rpc"; readonly service: string }
  /** An event to every service whose event bindings match `topic`. */
  | { readonly kind: "event"; readonly topic: string }
  /** A response to one participant's reply address. */
  | { readonly kind: "reply"; readonly address: string };

/** The queue a service consumes: requests, commands and events share it (PROTOCOL.md §2.4). */
export interface ServiceQueueSpec {
  /** Service name; the queue is also bound for it as an rpc routing key. */
  readonly service: string;
  /** Extra rpc names (aliases) routed to this queue. */
  readonly rpcBindings: readonly string[];
  /** Event topic patterns: dot-separated words, `*` one word, `#` zero or more. */
  readonly eventBindings: readonly string[];
  /** Most unsettled deliveries at once for this consumer; 0 = unlimited. */
  readonly prefetch: number;
  /**
   * The kind of queue (AMQP): `classic` (what Python NuroPb declares) or `quorum` (replicated
   * on every node of a cluster, survives the loss of a minority). Transports without queue types
   * (NATS streams have `replicas`, Redis and memory have none) ignore it.
   * @defaultValue "classic"
   */
  readonly queueType?: "classic" | "quorum";
  /**
   * Quorum queues: the redelivery budget, how many times a message may be given back
   * (requeued, or lost with its consumer) before the broker dead-letters it
   * (`x-delivery-limit`). Ignored for classic queues. @defaultValue the broker's (none on 3.x, 20 on 4.x)
   */
  readonly deliveryLimit?: number;
  /**
   * The queue lives only as long as this consumer: nothing of it stays behind once the listener
   * stops or the transport closes (AMQP: an exclusive, auto-deleted queue; NATS: its stream and
   * consumers deleted, the consumers also expiring once unused, and no stream at all when it
   * has event bindings and no rpc bindings, so its own name is then not routed; Redis: its
   * stream, group and bindings removed, and all expiring once unused; memory: the queue
   * removed). Use a name of its own (one consumer per name): a second consumer of the same
   * transient queue may be refused. For short-lived watchers.
   * @defaultValue false (a durable queue shared by the service's instances)
   */
  readonly transient?: boolean;
}

/** The per-instance queue responses arrive on. */
export interface ResponseQueueSpec {
  /** The reply address (on AMQP the response queue's name). Exclusive: a second live consumer is refused. */
  readonly address: string;
}

/** Handler of service-queue deliveries. If it throws without settling, the delivery is rejected. */
export type DeliveryHandler = (delivery: Delivery) => void | Promise<void>;
/** Handler of responses (they need no settling: the response queue is auto-acknowledged). */
export type ResponseHandler = (frame: InboundFrame) => void;

/** A running consumer. */
export interface Listener extends AsyncDisposable {
  /**
   * Stops taking new messages. Idempotent. A handler still running may still settle its
   * delivery; a delivery left unsettled once its handler has returned goes back to the queue
   * (marked redelivered), and settling it later is a no-op. On AMQP cancelling the consumer is
   * not enough for the second half: unsettled deliveries must be requeued explicitly.
   */
  stop(): Promise<void>;
}

/** What a transport reports about itself. */
export type TransportEvent =
  /** The connection was lost; responses in flight may be lost with it. */
  | { readonly type: "disconnected"; readonly error?: Error }
  /** The connection is back, topology re-declared and consumers resumed. */
  | { readonly type: "reconnected" }
  /** Something went wrong that the transport survived (details in `error`). */
  | { readonly type: "errored"; readonly error: Error }
  /** The transport closed for good; `error` tells why when it was not asked to. */
  | { readonly type: "closed"; readonly error?: Error };

/** Guarantees a transport gives; core adapts to what is missing, never the other way round. */
export interface TransportCapabilities {
  /** `send` to an rpc destination nobody consumes rejects `NuropbNotDeliveredError`. */
  readonly notDelivered: boolean;
  /** `requeue()` redelivers the message once, marked redelivered. */
  readonly redelivery: boolean;
  /** `reject()` keeps the message where an operator can read it. */
  readonly deadLetter: boolean;
  /**
   * `ttlMs` is honoured: a message that waited longer than its ttl is dead-lettered, never
   * delivered (RabbitMQ expires it in the queue; NATS and Redis check at delivery).
   */
  readonly messageTtl: boolean;
  /** Largest body the transport accepts, in bytes. */
  readonly maxFrameBytes: number;
  /**
   * Every reader on this transport is nuropb-ts (no Python peer can be there): requests,
   * commands and responses are sent with slim bodies (`EncodeOptions.slim`), about a fifth
   * fewer bytes per call. Absent: false.
   */
  readonly slimBodies?: boolean;
}

/**
 * The contract between core and a broker. A transport moves frames and owns its connection,
 * reconnection and topology; it knows nothing of services or payload meaning.
 *
 * Lifecycle: construct (no I/O), `connect()`, use, `close()`. `close()` is graceful, idempotent and
 * safe mid-connect; operations after it reject with `NuropbConnectionClosedError`.
 */
export interface Transport extends AsyncDisposable {
  /** `"memory"`, `"amqp"`, `"nats"`, `"redis"` or a third party's name. */
  readonly kind: string;
  /** The mesh this transport is attached to (the AMQP vhost). */
  readonly mesh: string;
  readonly capabilities: TransportCapabilities;
  readonly state: LifecycleState;
  /** @throws NuropbTransportError when the broker cannot be reached or refuses us. */
  connect(options?: { readonly signal?: AbortSignal }): Promise<void>;
  /** Stops consumers and closes the connection. Idempotent. */
  close(): Promise<void>;
  /** Settles once, when the transport is closed, with the reason if it was not asked to close. Never rejects. */
  closed(): Promise<Error | undefined>;
  /**
   * Sends a frame; resolves when the broker has it.
   * @throws NuropbNotDeliveredError for an rpc destination with no queue (when `capabilities.notDelivered`).
   * @throws NuropbMessageError for a body larger than `capabilities.maxFrameBytes`.
   * @throws NuropbTransportError when the broker could not take it.
   */
  send(to: Destination, frame: Frame): Promise<void>;
  /**
   * Declares and consumes a service queue (competing consumers among instances of one service).
   * Survives reconnects: after one, the queue is re-declared, re-bound and consumed again.
   */
  consumeService(spec: ServiceQueueSpec, handler: DeliveryHandler): Promise<Listener>;
  /**
   * Declares and consumes this participant's response queue, exclusively.
   * @throws NuropbTransportError when another live consumer holds the address.
   */
  consumeResponses(spec: ResponseQueueSpec, handler: ResponseHandler): Promise<Listener>;
  /** A stream of lifecycle events; each call gets its own stream, ending when the transport closes. */
  events(): AsyncIterable<TransportEvent>;
  /** Optional: delayed delivery, answers addressed to a service and claims (see {@link TransportScheduling}). */
  readonly scheduling?: TransportScheduling;
  /** Optional: the mesh's event log (see {@link TransportEventLog}). */
  readonly eventLog?: TransportEventLog;
}
