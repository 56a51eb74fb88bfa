import {
  DESCRIBE_METHOD,
  DESCRIBE_TTL_MS,
  NuropbHandlingError,
  NuropbMessageError,
  NuropbTimeoutError,
  NuropbValidationError,
  encodePayload,
  newId,
  type CommandPayload,
  type Context,
  type EventPayload,
  type Frame,
  type RequestPayload,
  type Transport,
} from "@nuropb/protocol";
import type { ReplyKey } from "@nuropb/crypto";
import { normaliseDescription, type ServiceDescription } from "./describe.ts";
import { checkCallOptions, checkName, checkPlainObject, checkTtl, withoutKeys } from "./options.ts";
import { sendError } from "./outcomes.ts";
import type { PendingResponses } from "./pending-responses.ts";
import { peerKeysOf, type Sealing } from "./sealing.ts";
import type {
  CommandOptions,
  EventToPublish,
  PublishEventOptions,
  RequestOptions,
  ServiceProxy,
} from "./types.ts";

/** What the calling side needs of its participant. */
export interface CallerParts {
  readonly transport: Transport;
  readonly responseAddress: string;
  readonly defaultTtlMs: number;
  /** Context keys left out of the events this participant publishes. */
  readonly eventSecretKeys: readonly string[];
  readonly sealing: Sealing;
  readonly pending: PendingResponses;
  /** Throws unless calls may go out; `fromHandler`: a handler's own call during the drain may. */
  readonly assertOpen: (fromHandler: boolean) => void;
}

/**
 * The calling side of a participant: requests (and their pending responses), commands, events,
 * and the descriptions of the services it calls (cached; they say which methods need
 * encryption and hold the keys to seal with).
 */
export class Caller {
  readonly #p: CallerParts;
  readonly #describeCache = new Map<string, ServiceDescription>();

  constructor(parts: CallerParts) {
    this.#p = parts;
  }

  /** See {@link MeshParticipant.request}; `fromHandler`: a handler's call, allowed while draining. */
  async request(
    service: string,
    method: string,
    params: Readonly<Record<string, unknown>> | undefined,
    context: Context | undefined,
    options: RequestOptions = {},
    fromHandler = false,
  ): Promise<unknown> {
    checkCallOptions(options);
    checkName(service, "service");
    if (typeof method !== "string" || method === "")
      throw new TypeError("method must be a non-empty string");
    const p = checkPlainObject(params, "params");
    const ctx = checkPlainObject(context, "context");
    const ttlMs =
      options.ttlMs === undefined ? this.#p.defaultTtlMs : checkTtl(options.ttlMs, "options.ttlMs");
    options.signal?.throwIfAborted();
    this.#p.assertOpen(fromHandler);

    const encrypted = options.encrypted ?? this.#cachedRequiresEncryption(service, method);
    const correlationId = newId();
    const traceId = options.traceId ?? newId();
    const payload: RequestPayload = {
      tag: "request",
      service,
      method,
      params: p,
      correlation_id: correlationId,
      context: ctx,
      trace_id: traceId,
    };
    let frame = encodePayload(payload, { replyTo: this.#p.responseAddress, ttlMs });
    let replyKey: ReplyKey | undefined;
    if (encrypted) {
      ({ frame, replyKey } = await this.#seal(service, frame));
      // Sealing may have waited for the service's description: look again before sending.
      options.signal?.throwIfAborted();
      this.#p.assertOpen(fromHandler);
    }
    return this.#await(service, method, correlationId, frame, replyKey, ttlMs, options);
  }

  /** Sends a sealed or plain request frame and waits for its response (or ttl, or abort). */
  #await(
    service: string,
    method: string,
    correlationId: string,
    frame: Frame,
    replyKey: ReplyKey | undefined,
    ttlMs: number,
    options: RequestOptions,
  ): Promise<unknown> {
    const pending = this.#p.pending;
    return new Promise<unknown>((resolve, reject) => {
      const onAbort = (): void => {
        if (pending.drop(correlationId)) {
          clearTimeout(timer);
          reject(
            options.signal?.reason instanceof Error
              ? options.signal.reason
              : new NuropbTimeoutError("request aborted"),
          );
        }
      };
      const timer = setTimeout(() => {
        if (pending.drop(correlationId)) {
          options.signal?.removeEventListener("abort", onAbort);
          reject(
            new NuropbTimeoutError(
              `no response from ${service}.${method} within ${String(ttlMs)} ms`,
              { retryable: true, details: { service, method, correlationId, ttlMs } },
            ),
          );
        }
      }, ttlMs);
      options.signal?.addEventListener("abort", onAbort, { once: true });
      pending.add(correlationId, {
        service,
        method,
        rpcResponse: options.rpcResponse !== false,
        replyKey,
        resolve,
        reject,
        cleanup: () => {
          clearTimeout(timer);
          options.signal?.removeEventListener("abort", onAbort);
        },
      });
      this.#p.transport.send({ kind: "rpc", service }, frame).catch((err: unknown) => {
        const p = pending.take(correlationId);
        if (p === undefined) return;
        p.cleanup();
        reject(sendError(err, service, method));
      });
    });
  }

  /** See {@link MeshParticipant.command}. */
  async command(
    service: string,
    method: string,
    params: Readonly<Record<string, unknown>> | undefined,
    context: Context | undefined,
    options: CommandOptions = {},
    fromHandler: boolean,
  ): Promise<void> {
    checkCallOptions(options);
    checkName(service, "service");
    if (typeof method !== "string" || method === "")
      throw new TypeError("method must be a non-empty string");
    const p = checkPlainObject(params, "params");
    const ctx = checkPlainObject(context, "context");
    const ttlMs =
      options.ttlMs === undefined ? this.#p.defaultTtlMs : checkTtl(options.ttlMs, "options.ttlMs");
    this.#p.assertOpen(fromHandler);
    const encrypted = options.encrypted ?? this.#cachedRequiresEncryption(service, method);
    const payload: CommandPayload = {
      tag: "command",
      service,
      method,
      params: p,
      correlation_id: newId(),
      context: ctx,
      trace_id: options.traceId ?? newId(),
    };
    let frame = encodePayload(payload, { replyTo: this.#p.responseAddress, ttlMs });
    // The reply key of a command is never needed (no response): it is not kept anywhere.
    if (encrypted) {
      ({ frame } = await this.#seal(service, frame));
      this.#p.assertOpen(fromHandler);
    }
    try {
      await this.#p.transport.send({ kind: "rpc", service }, frame);
    } catch (err) {
      throw sendError(err, service, method);
    }
  }

  /** See {@link MeshParticipant.publishEvent}. */
  async publishEvent(
    topic: string,
    event: unknown,
    context: Context | undefined,
    options: PublishEventOptions = {},
    fromHandler: boolean,
  ): Promise<void> {
    checkCallOptions(options);
    if (typeof topic !== "string" || topic === "" || topic.includes("*") || topic.includes("#")) {
      throw new TypeError(
        `topic must be a non-empty string without wildcards, got ${JSON.stringify(topic)}`,
      );
    }
    if ((options.encrypted as boolean | undefined) === true) {
      throw new NuropbValidationError(
        "events are never encrypted: Python subscribers cannot read encrypted events",
      );
    }
    if (
      options.target !== undefined &&
      options.target !== null &&
      (!Array.isArray(options.target) || !options.target.every((t) => typeof t === "string"))
    ) {
      throw new TypeError("options.target must be an array of strings or null");
    }
    const ctx = checkPlainObject(context, "context");
    this.#p.assertOpen(fromHandler);
    await this.sendEvent(
      { topic, event, target: options.target ?? null },
      ctx,
      options.traceId ?? newId(),
      newId(),
    );
  }

  /** Publishes one event as it is (checked already), without the participant's secret keys. */
  async sendEvent(
    e: EventToPublish,
    context: Context,
    traceId: string | null,
    correlationId: string,
  ): Promise<void> {
    const payload: EventPayload = {
      tag: "event",
      topic: e.topic,
      event: e.event,
      // Every subscriber of the topic gets this context: a service leaves its secrets out.
      context: withoutKeys(context, this.#p.eventSecretKeys),
      trace_id: traceId,
      correlation_id: correlationId,
      target: e.target ?? null,
    };
    await this.#p.transport.send({ kind: "event", topic: e.topic }, encodePayload(payload));
  }

  /** See {@link MeshParticipant.describeService}. */
  async describeService(
    name: string,
    options: { readonly refresh?: boolean; readonly ttlMs?: number } = {},
  ): Promise<ServiceDescription> {
    checkName(name, "service name");
    const ttlMs =
      options.ttlMs === undefined ? DESCRIBE_TTL_MS : checkTtl(options.ttlMs, "options.ttlMs");
    const cached = this.#describeCache.get(name);
    if (cached !== undefined && options.refresh !== true) return cached;
    const raw = await this.request(name, DESCRIBE_METHOD, {}, {}, { ttlMs, encrypted: false });
    let d: ServiceDescription;
    try {
      d = normaliseDescription(raw);
    } catch (err) {
      throw new NuropbMessageError(
        `service ${name} answered ${DESCRIBE_METHOD} with something that is not a description`,
        { cause: err },
      );
    }
    this.#describeCache.set(name, d);
    return d;
  }

  /** See {@link MeshParticipant.requiresEncryption}. */
  async requiresEncryption(service: string, method: string): Promise<boolean> {
    const d = await this.describeService(service);
    const m = Object.hasOwn(d.methods, method) ? d.methods[method] : undefined;
    if (m === undefined)
      throw new NuropbHandlingError(`Unknown method ${method} on service ${service}`);
    return m.requires_encryption;
  }

  /** See {@link MeshParticipant.hasPublicKey}. */
  async hasPublicKey(service: string): Promise<boolean> {
    const d = await this.describeService(service);
    return d.public_key !== null || (d.nacl_public_key ?? null) !== null;
  }

  /** See {@link MeshParticipant.proxy}. */
  proxy<T extends object>(service: string): ServiceProxy<T> {
    checkName(service, "service");
    return new Proxy({} as ServiceProxy<T>, {
      get: (_target, prop) => {
        if (typeof prop !== "string" || prop === "then") return undefined;
        return (
          params?: Readonly<Record<string, unknown>>,
          context?: Context,
          options?: RequestOptions,
        ) => this.request(service, prop, params, context, { ...options, rpcResponse: true });
      },
    });
  }

  #cachedRequiresEncryption(service: string, method: string): boolean {
    const d = this.#describeCache.get(service);
    return d?.methods[method]?.requires_encryption === true;
  }

  /** `frame` sealed for `service` (its keys come from its description, fetched if needed). */
  async #seal(service: string, frame: Frame): Promise<{ frame: Frame; replyKey: ReplyKey }> {
    const peer = peerKeysOf(await this.describeService(service), service);
    return this.#p.sealing.sealRequest(frame, peer);
  }
}
