import type { Context, Logger, ResponsePayload, Transport } from "@nuropb/protocol";
import type { PayloadEncryptorOptions, ServiceKeys } from "@nuropb/crypto";
import type { MeshMethodOptions } from "./mesh-method.ts";
import type { FailurePolicy } from "./failure-policy.ts";
import type { ServiceDescription } from "./describe.ts";
import type { ServiceStatsReport } from "./service-stats.ts";
import type { LifecycleListener } from "./message-lifecycle.ts";
import type { ClientMiddleware, ServiceMiddleware } from "./middleware.ts";
import type { LeaderElection } from "./leader-election.ts";
import type {
  EventPage,
  EventSubscription,
  QueryEventsOptions,
  StoredEventHandler,
  SubscribeEventsOptions,
} from "./event-history.ts";
import type { AnswerHandlerOption } from "./call-later-handlers.ts";
import type { CallLaterOptions } from "./call-later.ts";
import type { ServicesWatch, WatchServicesOptions } from "./watch-services.ts";

/** Options of {@link MeshParticipant.request}. */
export interface RequestOptions {
  /** Time-to-live in ms: the message's expiry and the client's timeout. @defaultValue the participant's `defaultTtlMs` */
  readonly ttlMs?: number;
  /** Trace id carried in headers and bodies. @defaultValue a fresh id (or the handler's, inside a handler) */
  readonly traceId?: string;
  /**
   * Encrypt the call end to end. @defaultValue true when the cached description of the target says
   * the method requires encryption, else false.
   */
  readonly encrypted?: boolean;
  /** `false`: resolve with the whole response payload (error included) instead of the result. @defaultValue true */
  readonly rpcResponse?: boolean;
  /** Abort waiting (rejects with the signal's reason). */
  readonly signal?: AbortSignal;
}

/** Options of {@link MeshParticipant.command}. */
export interface CommandOptions {
  readonly ttlMs?: number;
  readonly traceId?: string;
  readonly encrypted?: boolean;
}

/** Options of {@link MeshParticipant.publishEvent}. */
export interface PublishEventOptions {
  readonly traceId?: string;
  /** Instance or service names the event is meant for (informational, carried as `target`). */
  readonly target?: readonly string[] | null;
  /**
   * Events are never encrypted: Python subscribers cannot read encrypted events and would
   * dead-letter them. Passing `true` throws.
   */
  readonly encrypted?: false;
  /**
   * Resolve only once the mesh's event log holds the event (it is also delivered as usual).
   * Rejects with `NuropbEventLogUnavailableError` when the mesh has no log. @defaultValue false
   */
  readonly persisted?: boolean;
}

/** An event to publish after a handler succeeds. */
export interface EventToPublish {
  readonly topic: string;
  readonly event: unknown;
  readonly target?: readonly string[] | null;
}

/** What every participant (client or service) can do on the mesh. */
export interface MeshParticipant extends AsyncDisposable {
  /** The service name, or undefined for a client-only participant. */
  readonly serviceName: string | undefined;
  readonly instanceId: string;
  /** True between a successful `connect()` and `disconnect()` (false while the transport is down). */
  readonly connected: boolean;
  /**
   * Whether this instance leads its service: what its `election` says (see
   * {@link ServiceOptions.election}); true for a participant without one (it is alone).
   */
  readonly isLeader: boolean;
  /** This participant's reply address (its response queue name). */
  readonly responseAddress: string;
  /**
   * Requests waiting for their response. Each holds its timer and, for an encrypted call, its
   * reply key; both are dropped when the response arrives, the ttl passes or the connection is lost.
   */
  readonly pendingRequests: number;
  /** Connects the transport if needed and starts consuming. @throws NuropbTransportError */
  connect(): Promise<void>;
  /** Stops consuming, drains in-flight handlers (bounded), rejects pending requests. Idempotent. */
  disconnect(): Promise<void>;
  /**
   * Settles once, when the participant has closed — after `disconnect()`, or when its transport
   * closed under it — with the reason if it was not asked to close (the transport's error, or a
   * `NuropbConnectionClosedError`). Never rejects.
   */
  closed(): Promise<Error | undefined>;
  /**
   * A stream of the participant's lifecycle events (`connected`, `disconnected`, `reconnected`,
   * `errored`, `closed`, and with an election `elected` and `deposed`); each call gets its own stream, which ends when the participant closes
   * (at once when it has closed already).
   */
  events(): AsyncIterable<ParticipantEvent>;
  /**
   * Calls `service.method(params)` and resolves with its result.
   * @throws NuropbTimeoutError when `ttlMs` passes without a response.
   * @throws NuropbNotDeliveredError when no service is there.
   * @throws the remote error rebuilt as its NuroPb class.
   */
  request<TResult = unknown>(
    service: string,
    method: string,
    params?: Readonly<Record<string, unknown>>,
    context?: Context,
    options?: RequestOptions & { readonly rpcResponse?: true },
  ): Promise<TResult>;
  request(
    service: string,
    method: string,
    params: Readonly<Record<string, unknown>> | undefined,
    context: Context | undefined,
    options: RequestOptions & { readonly rpcResponse: false },
  ): Promise<ResponsePayload>;
  /**
   * Sends a command (no response). Resolves when the transport has the message.
   * @throws NuropbNotDeliveredError when no service is there.
   */
  command(
    service: string,
    method: string,
    params?: Readonly<Record<string, unknown>>,
    context?: Context,
    options?: CommandOptions,
  ): Promise<void>;
  /** Publishes an event to every service bound to a matching pattern. */
  publishEvent(
    topic: string,
    event: unknown,
    context?: Context,
    options?: PublishEventOptions,
  ): Promise<void>;
  /**
   * One page of past events from the mesh's event log, oldest first, matching `topics` (AMQP
   * patterns), stored from `since` and before `until`, after the cursor `after`; contexts come
   * without credentials. Pass the page's `cursor` as `after` for the next page.
   * @throws TypeError / RangeError for bad options (limit 1 to 1000, default 100).
   * @throws NuropbEventLogUnavailableError when the mesh has no event log.
   */
  queryEvents(options: QueryEventsOptions): Promise<EventPage>;
  /**
   * Replays stored events from `from` (`"now"`, `{ time }`, `{ position }` of the last one
   * processed), then hands over live ones as the log stores them, in log order, without a gap or
   * a duplicate at the hand-over. Ends on `stop()`, on `disconnect()`, or when the handler throws.
   * @throws TypeError for bad options.
   * @throws NuropbEventLogUnavailableError when the mesh has no event log.
   */
  subscribeEvents(
    options: SubscribeEventsOptions,
    handler: StoredEventHandler,
  ): Promise<EventSubscription>;
  /**
   * The description of a service (cached; `refresh: true` asks again). `ttlMs` bounds the wait.
   * @defaultValue ttlMs 60000
   */
  describeService(
    name: string,
    options?: { readonly refresh?: boolean; readonly ttlMs?: number },
  ): Promise<ServiceDescription>;
  /** Whether `service.method` requires encryption, from its description. @throws NuropbHandlingError for an unknown method */
  requiresEncryption(service: string, method: string): Promise<boolean>;
  /** Whether the service announces a public key (RSA or nacl). */
  hasPublicKey(service: string): Promise<boolean>;
  /** A typed proxy: `proxy.method(params, context?)` calls `request(service, "method", params, context)`. */
  proxy<TService extends object>(service: string): ServiceProxy<TService>;
  /**
   * Watches the mesh's status reports (`nuropb.status`) on this participant's transport: the live
   * view of services, instances, leaders and last seen (see `watchServices`). Close the
   * watch before disconnecting.
   * @throws NuropbConnectionClosedError unless connected.
   */
  watchServices(options?: WatchServicesOptions): Promise<ServicesWatch>;
}

/** What a participant reports about itself through {@link MeshParticipant.events}. */
export type ParticipantEvent =
  /** `connect()` succeeded: the participant consumes its queues. */
  | { readonly type: "connected" }
  /** The transport lost its link; the pending requests were failed (the outcome is unknown). */
  | { readonly type: "disconnected"; readonly error?: Error }
  /** The transport is back, its consumers resumed. */
  | { readonly type: "reconnected" }
  /** Something went wrong that the participant survived (details in `error`). */
  | { readonly type: "errored"; readonly error: Error }
  /** The participant closed for good; `error` tells why when it was not asked to. */
  | { readonly type: "closed"; readonly error?: Error }
  /** This service instance leads its service from now on (see {@link ServiceOptions.election}). */
  | { readonly type: "elected" }
  /** This instance no longer leads: it resigned (disconnecting) or lost its lease (`error`). */
  | { readonly type: "deposed"; readonly error?: Error };

/** A typed proxy for a service class: each public method becomes a request returning a promise. */
export type ServiceProxy<TService> = {
  readonly [
    K in keyof TService as K extends `_${string}` | "handleEvent"
      ? never
      : TService[K] extends (...args: never[]) => unknown
        ? K
        : never
  ]: TService[K] extends (params: infer P, ...rest: never[]) => infer R
    ? (params: P, context?: Context, options?: RequestOptions) => Promise<Awaited<R>>
    : never;
};

/** Options shared by clients and services. */
export interface ParticipantOptions {
  /** The transport to use; core connects it if needed but never closes it (whoever created it does). */
  readonly transport: Transport;
  /** Instance id (32 hex chars by default). A fixed id makes a single-instance participant. */
  readonly instanceId?: string;
  /** Default request/command ttl in ms. @defaultValue 30000 */
  readonly defaultTtlMs?: number;
  readonly logger?: Logger;
  /** Key material for end-to-end encryption (see `@nuropb/crypto`). */
  readonly keys?: ServiceKeys;
  /** Encryption tuning (suites, key reuse, caches); see `createPayloadEncryptor` in `@nuropb/crypto`. */
  readonly encryption?: Omit<PayloadEncryptorOptions, "keys">;
  /**
   * Largest body, in bytes, this participant reads: a larger service message is dead-lettered
   * unread (a request is answered with `NuropbMessageError`), and a larger response fails its
   * request with `NuropbMessageError`. Neither is ever decrypted or parsed.
   * @defaultValue 4194304 (4 MiB)
   */
  readonly maxInboundBodyBytes?: number;
  /**
   * Gets every message's lifecycle transitions (Python NuroPb's states: `client-start` …
   * `client-end` for what this participant sends, `service-receive` … `service-ack` for what it
   * serves), with timestamps. A listener that throws is logged, never breaks a call.
   * @defaultValue none (nothing is measured)
   */
  readonly onLifecycle?: LifecycleListener;
}

/** Options of {@link createClient}. */
export interface ClientOptions extends ParticipantOptions {
  /** Name used in the response queue name. @defaultValue `{mesh}-client` */
  readonly name?: string;
  /**
   * Interceptors of the client's outgoing requests (and their responses), commands and events,
   * the first outermost. @defaultValue [] (calls go straight out)
   */
  readonly middleware?: readonly ClientMiddleware[];
}

/** Options of {@link createService}. */
export interface ServiceOptions<TService extends object> extends ParticipantOptions {
  /** The service name (rpc routing key, queue `nuropb-{name}-sq`). */
  readonly name: string;
  /** The object whose public methods are served. */
  readonly instance: TService;
  /** Extra rpc names routed to this service. @defaultValue [] */
  readonly rpcBindings?: readonly string[];
  /** Event topic patterns delivered to `instance.handleEvent`. @defaultValue [] */
  readonly eventBindings?: readonly string[];
  /**
   * Interceptors of every request, command and event the service handles (and of its
   * responses), the first outermost; they run after decoding and decryption, before
   * authorisation. Per-method middleware goes in `publishToMesh({ middleware })`.
   * @defaultValue []
   */
  readonly middleware?: readonly ServiceMiddleware[];
  /**
   * Interceptors of the service's own outgoing calls (`ctx.request`, `ctx.command`, the events
   * it publishes, `service.request`…), as a client's `middleware`. @defaultValue []
   */
  readonly clientMiddleware?: readonly ClientMiddleware[];
  /** Most messages handled at once by this instance. 0 = unlimited. @defaultValue 64 */
  readonly prefetch?: number;
  /**
   * The prefetch while this instance leads (see `election`): a positive integer no larger than
   * `prefetch` (any, when `prefetch` is 0). The consumer is switched when leadership changes
   * (the new one starts before the old one stops; never while disconnected). Ignored without an
   * election. @defaultValue none (`prefetch` throughout)
   */
  readonly leaderPrefetch?: number;
  /**
   * With an election: the leader declares the service's topology (its queue and bindings, by
   * starting to consume) before the others consume. An instance that does not lead when it
   * connects waits, at most this many ms, until the service queue takes a describe request
   * (the topology is there; the request carries no ttl, so it never expires into the dead
   * letters: the next consumer answers it), or until it leads itself; past the bound it logs a
   * warning and declares the topology itself (idempotent). `connect()` resolves after the wait. Needs `election`.
   * @defaultValue none (every instance declares and consumes at once)
   */
  readonly topologyWaitMs?: number;
  /**
   * The kind of the service queue on a broker that has queue types (AMQP): `classic` (what
   * Python NuroPb declares) or `quorum` (replicated on a RabbitMQ cluster; survives the loss of a
   * node). All the service's instances must agree: the broker refuses a declaration that
   * conflicts with the existing queue. Other transports ignore it. @defaultValue "classic"
   */
  readonly queueType?: "classic" | "quorum";
  /**
   * Quorum queues: the redelivery budget, how many times a message may be given back (call-again,
   * or a consumer lost while holding it) before the broker dead-letters it (`x-delivery-limit`).
   * A positive integer; only with `queueType: "quorum"`. @defaultValue the broker's
   */
  readonly deliveryLimit?: number;
  /** Method options for plain JavaScript (instead of the `publishToMesh` decorator). */
  readonly methods?: Readonly<Record<string, MeshMethodOptions>>;
  /**
   * Answer handlers for plain JavaScript (instead of the `onAnswer` / `onAnswerError`
   * decorators): instance methods, named here, that handle the answers of asynchronous calls
   * (`callLater`) to each remote method. They are not served as mesh methods. @defaultValue []
   */
  readonly answerHandlers?: readonly AnswerHandlerOption[];
  /** `service_version` in the description. */
  readonly serviceVersion?: string;
  /** `description` in the description. */
  readonly description?: string;
  /** How long `disconnect()` waits for in-flight handlers, in ms. @defaultValue 10000 */
  readonly drainTimeoutMs?: number;
  /**
   * The election among this service's instances (`createLeaseElection` on a transport's lease
   * store, say): the service campaigns once connected, resigns first thing when it disconnects,
   * and `isLeader` and its `elected` / `deposed` events follow it. Whoever made the election
   * closes it. @defaultValue none (`isLeader` is always true)
   */
  readonly election?: LeaderElection | undefined;
  /**
   * Further context keys that hold secrets (API keys, session ids): with `eventContext:
   * "strip-secrets"` they are left out of the context of every event this service publishes,
   * like the token keys. Top-level keys, matched exactly. @defaultValue []
   */
  readonly secretContextKeys?: readonly string[];
  /**
   * The context of the events this service publishes (raised with `ctx.addEvent` or
   * `NuropbSuccess`, or sent with `publishEvent`), which every subscriber of the topic receives.
   * `"strip-secrets"`: without `Authorization`, any method's `contextTokenKey` and
   * `secretContextKeys`, so no subscriber gets a credential it could replay. `"full"`: the
   * context as given, the request's whole context for raised events (Python's behaviour).
   * Calls a handler makes (`ctx.request`, `ctx.command`) always carry the caller's whole context.
   * @defaultValue "strip-secrets"
   */
  readonly eventContext?: EventContextMode;
  /**
   * What happens to a failed request, command or event: immediate retries, delayed redelivery
   * (needs a transport with `scheduling`), dead-lettering with the failure recorded in headers,
   * fault events. A method's `failurePolicy` replaces it. @defaultValue none (a failed message
   * is dead-lettered at once, as without the pipeline)
   */
  readonly failurePolicy?: FailurePolicy;
}

/** What the context of a service's events keeps; see {@link ServiceOptions.eventContext}. */
export type EventContextMode = "strip-secrets" | "full";

/** A service: a participant that also serves its instance's methods. */
export interface MeshService<TService extends object = object> extends MeshParticipant {
  readonly serviceName: string;
  readonly instance: TService;
  /** The description this service answers `nuropb_describe` with. */
  describe(): ServiceDescription;
  /** What this service answers `nuropb_stats` with: per-method counts, errors, timings, uptime. */
  stats(): ServiceStatsReport;
  /**
   * Calls `service.method(params)` asynchronously: the answer is addressed to this service's own
   * queue (not this instance's), so whichever instance takes it runs the handler declared with
   * `onAnswer` (the result) or `onAnswerError` (the error, or `NuropbTimeoutError` once when
   * `deadlineMs` passes first), even after this instance has gone. Resolves with the call id (the
   * request's correlation id) once the broker has the request. Needs `transport.scheduling`.
   * @throws TypeError for a bad argument or a transport without scheduling (at once).
   * @throws NuropbNotDeliveredError when no service is there.
   * @example
   * const callId = await orders.callLater("payments", "charge", { amount: 42 }, {
   *   state: { orderId: "o-1" }, deadlineMs: 60_000 });
   */
  callLater(
    service: string,
    method: string,
    params?: Readonly<Record<string, unknown>>,
    options?: CallLaterOptions,
  ): Promise<string>;
}

/** A client-only participant. */
export type MeshClient = MeshParticipant;
