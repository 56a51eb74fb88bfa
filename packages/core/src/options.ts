import {
  MAX_TIMER_MS,
  DEFAULT_RPC_TTL_MS,
  assertTopicPattern,
  newId,
  noopLogger,
  responseQueueName,
  schedulingOf,
  type Context,
  type Logger,
  type Transport,
} from "@nuropb/protocol";
import {
  DEFAULT_CONTEXT_TOKEN_KEY,
  EVENT_HOOK,
  collectMethods,
  findMethod,
  type MethodEntry,
} from "./service-definition.ts";
import { collectAnswerHandlers, type AnswerTable } from "./call-later-handlers.ts";
import { checkLifecycleListener, type LifecycleListener } from "./message-lifecycle.ts";
import {
  checkMiddleware,
  composeMiddleware,
  type ClientCall,
  type ClientMiddleware,
  type Pipeline,
  type ServiceCall,
  type ServiceMiddleware,
} from "./middleware.ts";
import type { LeaderElection } from "./leader-election.ts";
import { checkFailurePolicy, type ResolvedFailurePolicy } from "./failure-policy.ts";
import type { ClientOptions, ServiceOptions } from "./types.ts";

/** Default of `maxInboundBodyBytes`: 4 MiB. */
const DEFAULT_MAX_INBOUND_BODY_BYTES = 4 * 1024 * 1024;
/** Default of `prefetch`. */
const DEFAULT_PREFETCH = 64;
/** Default of `drainTimeoutMs`. */
const DEFAULT_DRAIN_TIMEOUT_MS = 10_000;
const NAME_RE = /^[A-Za-z0-9_.:-]+$/;

/** The handler of a service's events (`instance.handleEvent`). */
export type EventHook = (event: unknown, ctx: unknown) => unknown;

/** What a service serves, validated and with its defaults filled in. */
export interface ServiceConfig<TService extends object> {
  readonly name: string;
  readonly instance: TService;
  readonly rpcBindings: readonly string[];
  readonly eventBindings: readonly string[];
  readonly prefetch: number;
  /** The prefetch while this instance leads; undefined: `prefetch` throughout. */
  readonly leaderPrefetch: number | undefined;
  /** A follower's bound on waiting for the leader's topology, in ms; undefined: no wait. */
  readonly topologyWaitMs: number | undefined;
  /** The service queue's type; undefined: the transport's default (classic). */
  readonly queueType: "classic" | "quorum" | undefined;
  /** Quorum queues: `x-delivery-limit`; undefined: the broker's. */
  readonly deliveryLimit: number | undefined;
  readonly drainTimeoutMs: number;
  /** The election among the service's instances; undefined: none (always the leader). */
  readonly election: LeaderElection | undefined;
  readonly serviceVersion: string | undefined;
  readonly description: string | undefined;
  readonly methods: ReadonlyMap<string, MethodEntry>;
  readonly eventHook: EventHook | undefined;
  /** Context keys left out of the events this service publishes; empty: the context as given. */
  readonly eventSecretKeys: readonly string[];
  /** Context keys holding credentials (token keys and `secretContextKeys`), whatever `eventContext` says. */
  readonly contextSecretKeys: readonly string[];
  /** The handlers of the answers of the service's asynchronous calls. */
  readonly answers: AnswerTable;
  /** The service's middleware, composed; undefined when there is none. */
  readonly pipeline: Pipeline<ServiceCall> | undefined;
  /** Whether any method has middleware of its own. */
  readonly methodPipelines: boolean;
  /** The service's failure policy; undefined: none (see failure-pipeline.ts). */
  readonly failurePolicy: ResolvedFailurePolicy | undefined;
}

/** The options of a client or a service, validated and with their defaults filled in. */
export interface ParticipantConfig<TService extends object> {
  readonly transport: Transport;
  readonly instanceId: string;
  readonly defaultTtlMs: number;
  /** Larger bodies are refused unread (never decrypted or parsed). */
  readonly maxInboundBodyBytes: number;
  readonly responseAddress: string;
  readonly log: Logger;
  /** Undefined for a client. */
  readonly service: ServiceConfig<TService> | undefined;
  /** The middleware of outgoing calls, composed; undefined when there is none. */
  readonly clientPipeline: Pipeline<ClientCall> | undefined;
  /** Undefined: nothing is measured. */
  readonly onLifecycle: LifecycleListener | undefined;
}

/**
 * Validates the options of {@link createClient} (`service` false) or {@link createService}
 * (`service` true) and fills in their defaults. Encryption options are checked where the
 * encryptor is made (sealing.ts).
 * @throws TypeError naming the bad option.
 */
export function normaliseOptions<TService extends object>(
  options: ClientOptions | ServiceOptions<TService>,
  service: boolean,
): ParticipantConfig<TService> {
  if (typeof options !== "object" || options === null)
    throw new TypeError("options must be an object");
  if (!isTransport(options.transport)) {
    throw new TypeError("options.transport must be a Transport (see @nuropb/protocol)");
  }
  const transport = options.transport;
  const instanceId =
    options.instanceId === undefined
      ? newId()
      : checkName(options.instanceId, "options.instanceId");
  const defaultTtlMs =
    options.defaultTtlMs === undefined
      ? DEFAULT_RPC_TTL_MS
      : checkTtl(options.defaultTtlMs, "options.defaultTtlMs");
  const maxBody: unknown =
    options.maxInboundBodyBytes === undefined
      ? DEFAULT_MAX_INBOUND_BODY_BYTES
      : options.maxInboundBodyBytes;
  if (typeof maxBody !== "number" || !Number.isSafeInteger(maxBody) || maxBody <= 0) {
    throw new TypeError(
      `options.maxInboundBodyBytes must be a positive integer of bytes, got ${show(maxBody)}`,
    );
  }
  const name = options.name === undefined ? undefined : checkName(options.name, "options.name");
  let serviceConfig: ServiceConfig<TService> | undefined;
  let outgoing: readonly unknown[];
  if (service) {
    if (name === undefined) throw new TypeError("createService: options.name is required");
    const so = options as ServiceOptions<TService>;
    serviceConfig = normaliseService(so, name);
    checkFailureScheduling(serviceConfig, transport);
    outgoing = checkMiddleware(so.clientMiddleware, "createService: options.clientMiddleware");
  } else {
    outgoing = checkMiddleware(
      (options as ClientOptions).middleware,
      "createClient: options.middleware",
    );
  }
  const onLifecycle = checkLifecycleListener(options.onLifecycle);
  const log = (options.logger ?? noopLogger).child({
    component: service ? "nuropb-service" : "nuropb-client",
    ...(service ? { service: name } : {}),
    instanceId,
  });
  return {
    transport,
    instanceId,
    defaultTtlMs,
    maxInboundBodyBytes: maxBody,
    responseAddress: responseQueueName(name, instanceId, transport.mesh),
    log,
    service: serviceConfig,
    clientPipeline: composeMiddleware(outgoing as readonly ClientMiddleware[]),
    onLifecycle,
  };
}

function normaliseService<TService extends object>(
  so: ServiceOptions<TService>,
  name: string,
): ServiceConfig<TService> {
  if (typeof so.instance !== "object" || so.instance === null) {
    throw new TypeError(
      "createService: options.instance must be an object whose methods are served",
    );
  }
  for (const b of so.rpcBindings ?? []) checkName(b, "createService: each of options.rpcBindings");
  if (so.rpcBindings !== undefined && !Array.isArray(so.rpcBindings))
    throw new TypeError("createService: options.rpcBindings must be an array");
  if (so.eventBindings !== undefined && !Array.isArray(so.eventBindings))
    throw new TypeError("createService: options.eventBindings must be an array");
  for (const b of so.eventBindings ?? []) {
    try {
      assertTopicPattern(b);
    } catch (err) {
      throw new TypeError(`createService: options.eventBindings: ${(err as Error).message}`);
    }
  }
  if (so.prefetch !== undefined && (!Number.isSafeInteger(so.prefetch) || so.prefetch < 0)) {
    throw new TypeError(
      `createService: options.prefetch must be a non-negative integer, got ${String(so.prefetch)}`,
    );
  }
  const prefetch = so.prefetch ?? DEFAULT_PREFETCH;
  const lp = so.leaderPrefetch;
  if (
    lp !== undefined &&
    (!Number.isSafeInteger(lp) || lp < 1 || (prefetch !== 0 && lp > prefetch))
  ) {
    throw new TypeError(
      `createService: options.leaderPrefetch must be a positive integer no larger than prefetch (${String(prefetch)}), got ${String(lp)}`,
    );
  }
  if (so.drainTimeoutMs !== undefined)
    checkTtl(so.drainTimeoutMs, "createService: options.drainTimeoutMs");
  const queueType = so.queueType;
  if (queueType !== undefined && queueType !== "classic" && queueType !== "quorum") {
    throw new TypeError(
      `createService: options.queueType must be "classic" or "quorum", got ${show(queueType)}`,
    );
  }
  const deliveryLimit = so.deliveryLimit;
  if (deliveryLimit !== undefined) {
    if (!Number.isSafeInteger(deliveryLimit) || deliveryLimit < 1) {
      throw new TypeError(
        `createService: options.deliveryLimit must be a positive integer, got ${show(deliveryLimit)}`,
      );
    }
    if (queueType !== "quorum") {
      throw new TypeError(
        'createService: options.deliveryLimit needs queueType: "quorum" (classic queues have no delivery limit)',
      );
    }
  }
  const election = so.election;
  if (
    election !== undefined &&
    (typeof election !== "object" ||
      election === null ||
      !["start", "stop", "events"].every(
        (m) => typeof (election as unknown as Record<string, unknown>)[m] === "function",
      ))
  ) {
    throw new TypeError(
      "createService: options.election must be a LeaderElection (createLeaseElection, say)",
    );
  }
  const topologyWaitMs = so.topologyWaitMs;
  if (topologyWaitMs !== undefined) {
    checkTtl(topologyWaitMs, "createService: options.topologyWaitMs");
    if (election === undefined) {
      throw new TypeError(
        "createService: options.topologyWaitMs needs an election (only followers wait for the leader's topology)",
      );
    }
  }
  const secretKeys = checkSecretContextKeys(so.secretContextKeys);
  const eventContext = so.eventContext ?? "strip-secrets";
  if (eventContext !== "strip-secrets" && eventContext !== "full") {
    throw new TypeError(
      `createService: options.eventContext must be "strip-secrets" or "full", got ${show(eventContext)}`,
    );
  }
  const middleware = checkMiddleware(so.middleware, "createService: options.middleware");
  const answers = collectAnswerHandlers(so.instance, so.answerHandlers);
  const methods = collectMethods(so.instance, so.methods, answers.methodNames);
  const contextSecretKeys = [
    ...new Set([
      DEFAULT_CONTEXT_TOKEN_KEY,
      ...[...methods.values()].map((m) => m.contextTokenKey),
      ...secretKeys,
    ]),
  ];
  // Looked up like the methods: a getter named handleEvent is neither run nor a hook.
  const eventHook = findMethod(so.instance, EVENT_HOOK) as EventHook | undefined;
  if ((so.eventBindings?.length ?? 0) > 0 && eventHook === undefined) {
    throw new TypeError(
      `createService: eventBindings were given but the instance has no ${EVENT_HOOK}(event, ctx) method`,
    );
  }
  return {
    name,
    instance: so.instance,
    rpcBindings: so.rpcBindings ?? [],
    eventBindings: so.eventBindings ?? [],
    prefetch,
    leaderPrefetch: lp,
    topologyWaitMs,
    queueType,
    deliveryLimit,
    drainTimeoutMs: so.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS,
    election,
    serviceVersion: so.serviceVersion,
    description: so.description,
    methods,
    eventHook,
    pipeline: composeMiddleware(middleware as readonly ServiceMiddleware[]),
    methodPipelines: [...methods.values()].some((m) => m.pipeline !== undefined),
    failurePolicy: checkFailurePolicy(so.failurePolicy, "createService: options"),
    eventSecretKeys: eventContext === "full" ? [] : contextSecretKeys,
    contextSecretKeys,
    answers,
  };
}

/**
 * A failure policy with delays needs the transport's scheduling (delayed redelivery).
 * @throws TypeError naming the policy's field.
 */
function checkFailureScheduling(service: ServiceConfig<object>, transport: Transport): void {
  if (schedulingOf(transport) !== undefined) return;
  const where =
    (service.failurePolicy?.delays.length ?? 0) > 0
      ? "options.failurePolicy.delays"
      : [...service.methods.values()]
          .filter((m) => (m.options.failurePolicy || undefined)?.delays?.length)
          .map((m) => `methods.${m.name}.failurePolicy.delays`)[0];
  if (where === undefined) return;
  throw new TypeError(
    `createService: ${where} needs a transport with scheduling (delayed redelivery); the ${transport.kind} transport has none`,
  );
}

function isTransport(t: unknown): t is Transport {
  return (
    typeof t === "object" &&
    t !== null &&
    typeof (t as Transport).send === "function" &&
    typeof (t as Transport).consumeService === "function" &&
    typeof (t as Transport).consumeResponses === "function" &&
    typeof (t as Transport).connect === "function"
  );
}

/** A service, instance or participant name. @throws TypeError naming `what`. */
export function checkName(value: unknown, what: string): string {
  if (typeof value !== "string" || !NAME_RE.test(value)) {
    throw new TypeError(
      `${what} must be a non-empty string of letters, digits, '_', '.', ':' or '-', got ${JSON.stringify(value)}`,
    );
  }
  return value;
}

/** A ttl in ms that a timer can hold. @throws TypeError naming `what`. */
export function checkTtl(value: unknown, what: string): number {
  if (
    typeof value !== "number" ||
    !Number.isSafeInteger(value) ||
    value <= 0 ||
    value > MAX_TIMER_MS
  ) {
    throw new TypeError(
      `${what} must be a positive integer of milliseconds up to ${String(MAX_TIMER_MS)}, got ${String(value)}`,
    );
  }
  return value;
}

/** `params` or `context` of a call: an object (`{}` when absent). @throws TypeError */
export function checkPlainObject(value: unknown, what: string): Readonly<Record<string, unknown>> {
  if (value === undefined) return {};
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new TypeError(
      `${what} must be an object, got ${Array.isArray(value) ? "an array" : String(value)}`,
    );
  }
  return value as Record<string, unknown>;
}

/** Checks the options object of request, command and publishEvent: its common fields. */
export function checkCallOptions(options: unknown): void {
  if (options === undefined) return;
  if (typeof options !== "object" || options === null || Array.isArray(options))
    throw new TypeError("options must be an object");
  const o = options as { traceId?: unknown; signal?: unknown; encrypted?: unknown };
  if (o.traceId !== undefined && typeof o.traceId !== "string")
    throw new TypeError("options.traceId must be a string");
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal))
    throw new TypeError("options.signal must be an AbortSignal");
  if (o.encrypted !== undefined && typeof o.encrypted !== "boolean")
    throw new TypeError("options.encrypted must be a boolean");
}

/** A bad option value, for an error message; never throws. */
export function show(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return typeof value;
  }
}

/** `createService`'s `secretContextKeys`: an array of non-empty strings. */
function checkSecretContextKeys(value: unknown): readonly string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every((k) => typeof k === "string" && k !== "")) {
    throw new TypeError(
      `createService: options.secretContextKeys must be an array of non-empty strings, got ${show(value)}`,
    );
  }
  return value as string[];
}

/**
 * `context` without `keys`, matched without regard to case (a context built from Node's
 * `req.headers` spells the token `authorization`); the same object when it has none of them.
 */
export function withoutKeys(context: Context, keys: readonly string[]): Context {
  let out: Record<string, unknown> | undefined;
  for (const k of Object.keys(context)) {
    const lower = k.toLowerCase();
    if (!keys.some((s) => s.toLowerCase() === lower)) continue;
    out ??= { ...context };
    delete out[k];
  }
  return out ?? context;
}
