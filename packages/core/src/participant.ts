import {
  DESCRIBE_METHOD,
  encodePayload,
  newId,
  type Context,
  type Listener,
  type Transport,
} from "@nuropb/protocol";
import { Caller } from "./caller.ts";
import { CallLaterSender, type CallLaterOptions } from "./call-later.ts";
import type { RequestContextFields } from "./request-context.ts";
import { buildDescription, type ServiceDescription } from "./describe.ts";
import { Dispatcher } from "./dispatcher.ts";
import { EventHistory } from "./event-history.ts";
import type {
  EventPage,
  EventSubscription,
  QueryEventsOptions,
  StoredEventHandler,
  SubscribeEventsOptions,
} from "./event-history.ts";
import type { LeaderElection } from "./leader-election.ts";
import { consumeWithLeaderPrefetch } from "./leader-prefetch.ts";
import { checkName, normaliseOptions, type ServiceConfig } from "./options.ts";
import { ParticipantLifecycle } from "./participant-lifecycle.ts";
import { PendingResponses } from "./pending-responses.ts";
import { requestPayload } from "./outgoing-calls.ts";
import { Responder } from "./responder.ts";
import { Sealing } from "./sealing.ts";
import { EVENT_HOOK } from "./service-definition.ts";
import { ServiceStats, type ServiceStatsReport } from "./service-stats.ts";
import { watchServices, type ServicesWatch, type WatchServicesOptions } from "./watch-services.ts";
import { waitForTopology } from "./topology-wait.ts";
import type {
  ClientOptions,
  CommandOptions,
  MeshParticipant,
  MeshService,
  ParticipantEvent,
  PublishEventOptions,
  RequestOptions,
  ServiceOptions,
  ServiceProxy,
} from "./types.ts";

/**
 * A client or a service: the public face that composes the parts, each in its own file —
 * options (options.ts), lifecycle (participant-lifecycle.ts), the calling side (caller.ts,
 * pending-responses.ts), the dispatching side (dispatcher.ts, admission.ts, responder.ts),
 * sealing (sealing.ts) and outcomes (outcomes.ts).
 */
class Participant<TService extends object> implements MeshService<TService> {
  readonly serviceName: string;
  readonly instanceId: string;
  readonly responseAddress: string;
  readonly #service: ServiceConfig<TService> | undefined;
  readonly #sealing: Sealing;
  readonly #pending: PendingResponses;
  readonly #caller: Caller;
  readonly #history: EventHistory;
  /** A service's asynchronous calls; undefined for a client. */
  readonly #later: CallLaterSender | undefined;
  readonly #lifecycle: ParticipantLifecycle;
  readonly #election: LeaderElection | undefined;
  readonly #transport: Transport;
  #description: ServiceDescription | undefined;
  /** A service's call counts; undefined for a client. */
  #stats: ServiceStats | undefined;

  constructor(options: ClientOptions | ServiceOptions<TService>, service: boolean) {
    const config = normaliseOptions<TService>(options, service);
    const { transport, log } = config;
    this.#transport = transport;
    const so = config.service;
    this.#service = so;
    this.#election = so?.election;
    this.serviceName = so?.name as string;
    this.instanceId = config.instanceId;
    this.responseAddress = config.responseAddress;
    const sealing = new Sealing(options);
    if (
      so !== undefined &&
      !sealing.hasKeys &&
      [...so.methods.values()].some((m) => m.options.requiresEncryption === true)
    ) {
      throw new TypeError(
        "createService: a method requires encryption but no keys were given; pass options.keys (e.g. from loadOrCreateKeyFile) so every instance shares them",
      );
    }
    this.#sealing = sealing;
    const pending = new PendingResponses(sealing, config.maxInboundBodyBytes, log);
    this.#pending = pending;
    let dispatcher: Dispatcher<TService> | undefined;
    const waitMs = so?.topologyWaitMs;
    const lifecycle: ParticipantLifecycle = new ParticipantLifecycle({
      transport,
      log,
      responseAddress: config.responseAddress,
      drainTimeoutMs: so?.drainTimeoutMs ?? 10_000,
      consumeResponses: () =>
        transport.consumeResponses({ address: config.responseAddress }, (frame) =>
          pending.onResponse(frame),
        ),
      consumeService:
        so === undefined
          ? undefined
          : () => {
              const consume = (prefetch: number): Promise<Listener> =>
                transport.consumeService(
                  {
                    service: so.name,
                    rpcBindings: so.rpcBindings,
                    eventBindings: so.eventBindings,
                    prefetch,
                    ...(so.queueType !== undefined ? { queueType: so.queueType } : {}),
                    ...(so.deliveryLimit !== undefined ? { deliveryLimit: so.deliveryLimit } : {}),
                  },
                  (delivery) =>
                    lifecycle.track((dispatcher as Dispatcher<TService>).onDelivery(delivery)),
                );
              return so.election === undefined || so.leaderPrefetch === undefined
                ? consume(so.prefetch)
                : consumeWithLeaderPrefetch({
                    transport,
                    election: so.election,
                    prefetch: so.prefetch,
                    leaderPrefetch: so.leaderPrefetch,
                    consume,
                    closing: () => lifecycle.closing,
                    log,
                  });
            },
      failPending: (make) => pending.failAll(make),
      release: () => sealing.close(),
      election: so?.election,
      awaitTopology:
        so?.election === undefined || waitMs === undefined
          ? undefined
          : (signal) =>
              waitForTopology({
                signal,
                // No ttl: a probe the queue holds until someone consumes is never dead-lettered.
                probe: () =>
                  transport.send(
                    { kind: "rpc", service: so.name },
                    encodePayload(
                      requestPayload(so.name, DESCRIBE_METHOD, {}, newId(), {}, newId()),
                      { replyTo: config.responseAddress },
                    ),
                  ),
                isLeader: () => so.election?.isLeader === true,
                waitMs,
                log,
              }),
    });
    this.#lifecycle = lifecycle;
    const caller = new Caller({
      transport,
      responseAddress: config.responseAddress,
      defaultTtlMs: config.defaultTtlMs,
      eventSecretKeys: so?.eventSecretKeys ?? [],
      persistedSecretKeys: so?.contextSecretKeys ?? [],
      sealing,
      pending,
      assertOpen: (fromHandler) => lifecycle.assertOpen(fromHandler),
      pipeline: config.clientPipeline,
      onLifecycle: config.onLifecycle,
      log,
    });
    this.#caller = caller;
    this.#history = new EventHistory({
      transport,
      // Credentials are left out of what is read back, whatever `eventContext` says.
      secretKeys:
        so === undefined
          ? []
          : [
              ...[...so.methods.values()].map((m) => m.contextTokenKey),
              ...((options as ServiceOptions<TService>).secretContextKeys ?? []),
            ],
      assertOpen: () => lifecycle.assertOpen(false),
      log,
    });
    const later =
      so === undefined
        ? undefined
        : new CallLaterSender({
            transport,
            serviceName: so.name,
            defaultTtlMs: config.defaultTtlMs,
            secretKeys: so.contextSecretKeys,
            assertOpen: (fromHandler) => lifecycle.assertOpen(fromHandler),
            log,
          });
    this.#later = later;
    if (so !== undefined) {
      dispatcher = new Dispatcher({
        transport,
        service: so,
        maxInboundBodyBytes: config.maxInboundBodyBytes,
        log,
        sealing,
        responder: new Responder(transport, sealing, log),
        // What handler contexts call through: the public calls, also allowed while draining.
        handlerCalls: handlerCallsOf(caller, later),
        describe: () => this.describe(),
        sendEvent: (e, context, traceId, correlationId) =>
          caller.sendEvent(e, context, traceId, correlationId),
        onLifecycle: config.onLifecycle,
        stats: (this.#stats = new ServiceStats({
          serviceName: so.name,
          instanceId: config.instanceId,
          serviceVersion: so.serviceVersion,
          methods: so.methods,
          eventHook: so.eventHook === undefined ? undefined : EVENT_HOOK,
          transport,
          connected: () => lifecycle.connected,
        })),
      });
    }
  }

  get instance(): TService {
    if (this.#service === undefined) throw new TypeError("a client has no service instance");
    return this.#service.instance;
  }

  get isLeader(): boolean {
    return this.#election === undefined || this.#election.isLeader;
  }

  get pendingRequests(): number {
    return this.#pending.size;
  }

  get connected(): boolean {
    return this.#lifecycle.connected;
  }

  connect(): Promise<void> {
    return this.#lifecycle.connect();
  }

  async disconnect(): Promise<void> {
    await this.#history.stopAll();
    return this.#lifecycle.disconnect();
  }

  closed(): Promise<Error | undefined> {
    return this.#lifecycle.closed();
  }

  events(): AsyncIterable<ParticipantEvent> {
    return this.#lifecycle.events();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.disconnect();
  }

  request(
    service: string,
    method: string,
    params?: Readonly<Record<string, unknown>>,
    context?: Context,
    options?: RequestOptions,
  ): Promise<never> {
    return this.#caller.request(service, method, params, context, options) as Promise<never>;
  }

  command(
    service: string,
    method: string,
    params?: Readonly<Record<string, unknown>>,
    context?: Context,
    options?: CommandOptions,
  ): Promise<void> {
    return this.#caller.command(service, method, params, context, options, false);
  }

  publishEvent(
    topic: string,
    event: unknown,
    context?: Context,
    options?: PublishEventOptions,
  ): Promise<void> {
    return this.#caller.publishEvent(topic, event, context, options, false);
  }

  queryEvents(options: QueryEventsOptions): Promise<EventPage> {
    return this.#history.queryEvents(options);
  }

  subscribeEvents(
    options: SubscribeEventsOptions,
    handler: StoredEventHandler,
  ): Promise<EventSubscription> {
    return this.#history.subscribeEvents(options, handler);
  }

  describeService(
    name: string,
    options?: { readonly refresh?: boolean; readonly ttlMs?: number },
  ): Promise<ServiceDescription> {
    return this.#caller.directory.describeService(name, options);
  }

  requiresEncryption(service: string, method: string): Promise<boolean> {
    return this.#caller.directory.requiresEncryption(service, method);
  }

  hasPublicKey(service: string): Promise<boolean> {
    return this.#caller.directory.hasPublicKey(service);
  }

  proxy<T extends object>(service: string): ServiceProxy<T> {
    checkName(service, "service");
    return new Proxy({} as ServiceProxy<T>, {
      get: (_target, prop) => {
        if (typeof prop !== "string" || prop === "then") return undefined;
        return (
          params?: Readonly<Record<string, unknown>>,
          context?: Context,
          options?: RequestOptions,
        ) =>
          this.#caller.request(service, prop, params, context, { ...options, rpcResponse: true });
      },
    });
  }

  async watchServices(options?: WatchServicesOptions): Promise<ServicesWatch> {
    this.#lifecycle.assertOpen(false);
    return watchServices(this.#transport, options);
  }

  callLater(
    service: string,
    method: string,
    params?: Readonly<Record<string, unknown>>,
    options?: CallLaterOptions,
  ): Promise<string> {
    if (this.#later === undefined)
      return Promise.reject(new TypeError("a client cannot callLater: answers go to a service"));
    return this.#later.callLater(service, method, params, options, undefined, false);
  }

  stats(): ServiceStatsReport {
    if (this.#stats === undefined) throw new TypeError("a client has no stats");
    return this.#stats.report();
  }

  describe(): ServiceDescription {
    if (this.#service === undefined) throw new TypeError("a client has no description");
    this.#description ??= buildDescription({
      serviceName: this.serviceName,
      serviceVersion: this.#service.serviceVersion,
      description: this.#service.description,
      methods: this.#service.methods,
      publicKeyPem: this.#sealing.publicKeys.rsaPem,
      naclPublicKey: this.#sealing.publicKeys.nacl,
      nativePublicKey: this.#sealing.publicKeys.native,
    });
    return this.#description;
  }
}

/** What handler contexts call through: the public calls, also allowed while draining. */
function handlerCallsOf(
  caller: Caller,
  later: CallLaterSender | undefined,
): RequestContextFields["participant"] {
  return {
    ...(later === undefined
      ? {}
      : {
          callLater: (service, method, params, options, defaults) =>
            later.callLater(service, method, params, options, defaults, true),
        }),
    request: ((
      service: string,
      method: string,
      params?: Readonly<Record<string, unknown>>,
      context?: Context,
      options?: RequestOptions,
    ) =>
      caller.request(
        service,
        method,
        params,
        context,
        options,
        true,
      )) as MeshParticipant["request"],
    command: (service, method, params, context, options) =>
      caller.command(service, method, params, context, options, true),
    publishEvent: (topic, event, context, options) =>
      caller.publishEvent(topic, event, context, options, true),
  };
}

/**
 * Creates a service: the public methods of `options.instance` are served on the mesh.
 * Construction does no I/O; call `connect()`.
 * @throws TypeError naming the bad option.
 * @example
 * const service = createService({ transport, name: "orders", instance: new Orders() });
 * await service.connect();
 */
export function createService<TService extends object>(
  options: ServiceOptions<TService>,
): MeshService<TService> {
  return new Participant<TService>(options, true);
}

/**
 * Creates a client-only participant (it sends requests, commands and events; it serves nothing).
 * @throws TypeError naming the bad option.
 * @example
 * const client = createClient({ transport });
 * await client.connect();
 * const order = await client.request("orders", "getOrder", { id: "42" });
 */
export function createClient(options: ClientOptions): MeshParticipant {
  return new Participant<object>(options as ClientOptions, false);
}
