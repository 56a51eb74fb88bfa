import {
  DESCRIBE_METHOD as DESCRIBE,
  NuropbValidationError,
  encodePayload,
  newId,
  type CommandPayload,
  type Context,
  type EventPayload,
  type Frame,
  type Logger,
  type RequestPayload,
  type Transport,
} from "@nuropb/protocol";
import type { ReplyKey } from "@nuropb/crypto";
import {
  createFlow,
  errorName,
  type LifecycleListener,
  type MessageFlow,
} from "./message-lifecycle.ts";
import {
  activePipeline,
  withHeaders,
  type ClientCall,
  type OutgoingHeaders,
  type Pipeline,
} from "./middleware.ts";
import { checkCallOptions, checkName, checkPlainObject, checkTtl, withoutKeys } from "./options.ts";
import {
  CommandCall,
  EventCall,
  RequestCall,
  checkCallChanges,
  commandPayload,
  requestPayload,
} from "./outgoing-calls.ts";
import { sendError } from "./outcomes.ts";
import { appendToLog, withoutCredentials } from "./event-history.ts";
import { abortError, type PendingResponses } from "./pending-responses.ts";
import { goesSlim, type Sealing } from "./sealing.ts";
import { ServiceDirectory } from "./service-directory.ts";
import type {
  CommandOptions,
  EventToPublish,
  PublishEventOptions,
  RequestOptions,
} from "./types.ts";

/** What the calling side needs of its participant. */
export interface CallerParts {
  readonly transport: Transport;
  readonly responseAddress: string;
  readonly defaultTtlMs: number;
  /** Context keys left out of the events this participant publishes. */
  readonly eventSecretKeys: readonly string[];
  /**
   * Context keys left out of the events this participant persists (the log keeps them and any
   * reader sees them), whatever `eventContext` says; credential-like keys go too.
   */
  readonly persistedSecretKeys: readonly string[];
  readonly sealing: Sealing;
  readonly pending: PendingResponses;
  /** Throws unless calls may go out; `fromHandler`: a handler's own call during the drain may. */
  readonly assertOpen: (fromHandler: boolean) => void;
  /** The middleware of outgoing calls, composed; undefined: none. */
  readonly pipeline: Pipeline<ClientCall> | undefined;
  /** Undefined: no message is measured. */
  readonly onLifecycle: LifecycleListener | undefined;
  readonly log: Logger;
}

/**
 * The calling side of a participant: requests (their responses wait in {@link PendingResponses}),
 * commands and events, and the descriptions of the services it calls. Outgoing calls go
 * through the middleware and are measured when the participant has either; otherwise they go
 * straight out (chosen per call: middleware may say it is inactive).
 */
export class Caller {
  readonly #p: CallerParts;
  readonly directory: ServiceDirectory;

  constructor(parts: CallerParts) {
    this.#p = parts;
    this.directory = new ServiceDirectory((service, ttlMs) =>
      this.request(service, DESCRIBE, {}, {}, { ttlMs, encrypted: false }),
    );
  }

  /**
   * See {@link MeshParticipant.request}; `fromHandler`: a handler's call, allowed while draining.
   * Not `async`: the promise of the response is returned as it is, without a wrapper promise and
   * its extra microtask hops (a bad argument still rejects, never throws).
   */
  request(
    service: string,
    method: string,
    params: Readonly<Record<string, unknown>> | undefined,
    context: Context | undefined,
    options: RequestOptions = {},
    fromHandler = false,
  ): Promise<unknown> {
    try {
      return this.#request(service, method, params, context, options, fromHandler);
    } catch (err) {
      return Promise.reject(err as Error);
    }
  }

  #request(
    service: string,
    method: string,
    params: Readonly<Record<string, unknown>> | undefined,
    context: Context | undefined,
    options: RequestOptions,
    fromHandler: boolean,
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

    const encrypted = options.encrypted ?? this.directory.cachedRequiresEncryption(service, method);
    const correlationId = newId();
    const traceId = options.traceId ?? newId();
    // No middleware active for this call and no lifecycle listener: straight out.
    const pipeline = activePipeline(this.#p.pipeline);
    if (pipeline === undefined && this.#p.onLifecycle === undefined) {
      const payload = requestPayload(service, method, p, correlationId, ctx, traceId);
      return this.#sendRequest(
        payload,
        ttlMs,
        encrypted,
        undefined,
        undefined,
        options,
        fromHandler,
      );
    }
    const flow = createFlow(
      this.#p.onLifecycle,
      this.#p.log,
      "request",
      correlationId,
      traceId,
      service,
      method,
      undefined,
      encrypted,
    );
    if (pipeline === undefined) {
      const payload = requestPayload(service, method, p, correlationId, ctx, traceId);
      return this.#run(undefined, flow, () =>
        this.#sendRequest(payload, ttlMs, encrypted, undefined, flow, options, fromHandler),
      );
    }
    const fields = {
      service,
      method,
      params: p,
      context: ctx,
      traceId,
      correlationId,
      ttlMs,
      encrypted,
    };
    const call = new RequestCall(fields, options.rpcResponse !== false);
    return this.#run(call, flow, () => {
      checkCallChanges(call);
      this.#p.assertOpen(fromHandler);
      const { traceId: trace, encrypted: sealed } = call;
      if (flow !== undefined) Object.assign(flow.fields, { traceId: trace, encrypted: sealed });
      const payload = requestPayload(
        service,
        method,
        call.params,
        correlationId,
        call.context,
        trace,
      );
      return this.#sendRequest(payload, call.ttlMs, sealed, call, flow, options, fromHandler);
    });
  }

  /** Encodes (with `call`'s headers), seals when asked, sends and waits for the response. */
  #sendRequest(
    payload: RequestPayload,
    ttlMs: number,
    encrypted: boolean,
    call: RequestCall | undefined,
    flow: MessageFlow | undefined,
    options: RequestOptions,
    fromHandler: boolean,
  ): Promise<unknown> {
    flow?.emit("client-encode");
    const frame = withHeaders(
      encodePayload(payload, {
        replyTo: this.#p.responseAddress,
        ttlMs,
        slim: goesSlim(this.#p.transport, encrypted),
      }),
      call === undefined ? undefined : RequestCall.headersOf(call),
    );
    if (!encrypted) return this.#send(payload, frame, undefined, ttlMs, options, call, flow);
    const sealed = this.#sealNow(payload.service, frame);
    if (sealed !== undefined) {
      return this.#send(payload, sealed.frame, sealed.replyKey, ttlMs, options, call, flow);
    }
    return this.#sealAndSend(payload, frame, ttlMs, options, fromHandler, call, flow);
  }

  async #sealAndSend(
    payload: RequestPayload,
    plain: Frame,
    ttlMs: number,
    options: RequestOptions,
    fromHandler: boolean,
    call: RequestCall | undefined,
    flow: MessageFlow | undefined,
  ): Promise<unknown> {
    const { frame, replyKey } = await this.#seal(payload.service, plain);
    // Sealing may have waited for the service's description: look again before sending.
    options.signal?.throwIfAborted();
    this.#p.assertOpen(fromHandler);
    return this.#send(payload, frame, replyKey, ttlMs, options, call, flow);
  }

  /** Sends a request frame; resolves with its response (or fails at ttl, on abort, on send). */
  #send(
    payload: RequestPayload,
    frame: Frame,
    replyKey: ReplyKey | undefined,
    ttlMs: number,
    options: RequestOptions,
    call: RequestCall | undefined,
    flow: MessageFlow | undefined,
  ): Promise<unknown> {
    const { service, method, correlation_id: id } = payload;
    // Aborted meanwhile (an async middleware ran): not sent at all.
    if (options.signal?.aborted === true) return Promise.reject(abortError(options.signal));
    const pending = this.#p.pending;
    const response = pending.expect(id, service, method, ttlMs, options, replyKey, call, flow);
    flow?.emit("client-send");
    this.#p.transport
      .send({ kind: "rpc", service }, frame)
      .catch((err: unknown) => pending.sendFailed(id, err));
    return response;
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
    const encrypted = options.encrypted ?? this.directory.cachedRequiresEncryption(service, method);
    const correlationId = newId();
    const traceId = options.traceId ?? newId();
    // No middleware active for this call and no lifecycle listener: straight out.
    const pipeline = activePipeline(this.#p.pipeline);
    if (pipeline === undefined && this.#p.onLifecycle === undefined) {
      const payload = commandPayload(service, method, p, correlationId, ctx, traceId);
      return this.#sendCommand(payload, ttlMs, encrypted, undefined, undefined, fromHandler);
    }
    const flow = createFlow(
      this.#p.onLifecycle,
      this.#p.log,
      "command",
      correlationId,
      traceId,
      service,
      method,
      undefined,
      encrypted,
    );
    if (pipeline === undefined) {
      const payload = commandPayload(service, method, p, correlationId, ctx, traceId);
      await this.#run(undefined, flow, () =>
        this.#sendCommand(payload, ttlMs, encrypted, undefined, flow, fromHandler),
      );
      return;
    }
    const fields = {
      service,
      method,
      params: p,
      context: ctx,
      traceId,
      correlationId,
      ttlMs,
      encrypted,
    };
    const call = new CommandCall(fields);
    await this.#run(call, flow, () => {
      checkCallChanges(call);
      this.#p.assertOpen(fromHandler);
      const { traceId: trace, encrypted: sealed } = call;
      if (flow !== undefined) Object.assign(flow.fields, { traceId: trace, encrypted: sealed });
      const payload = commandPayload(
        service,
        method,
        call.params,
        correlationId,
        call.context,
        trace,
      );
      const headers = CommandCall.headersOf(call);
      return this.#sendCommand(payload, call.ttlMs, sealed, headers, flow, fromHandler);
    });
  }

  /** Encodes (with `headers`), seals when asked and sends a command. */
  async #sendCommand(
    payload: CommandPayload,
    ttlMs: number,
    encrypted: boolean,
    headers: OutgoingHeaders | undefined,
    flow: MessageFlow | undefined,
    fromHandler: boolean,
  ): Promise<void> {
    flow?.emit("client-encode");
    let frame = withHeaders(
      encodePayload(payload, {
        replyTo: this.#p.responseAddress,
        ttlMs,
        slim: goesSlim(this.#p.transport, encrypted),
      }),
      headers,
    );
    // The reply key of a command is never needed (no response): it is not kept anywhere.
    if (encrypted) {
      const sealed = this.#sealNow(payload.service, frame);
      if (sealed !== undefined) frame = sealed.frame;
      else {
        ({ frame } = await this.#seal(payload.service, frame));
        this.#p.assertOpen(fromHandler);
      }
    }
    flow?.emit("client-send");
    try {
      await this.#p.transport.send({ kind: "rpc", service: payload.service }, frame);
    } catch (err) {
      throw sendError(err, payload.service, payload.method);
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
    if (options.persisted !== undefined && typeof options.persisted !== "boolean") {
      throw new TypeError("options.persisted must be a boolean");
    }
    const ctx = checkPlainObject(context, "context");
    this.#p.assertOpen(fromHandler);
    await this.sendEvent(
      { topic, event, target: options.target ?? null },
      ctx,
      options.traceId ?? newId(),
      newId(),
      options.persisted === true,
    );
  }

  /**
   * Publishes one event (checked already; a service's raised events come here directly), through
   * the middleware, without the participant's secret context keys.
   */
  async sendEvent(
    e: EventToPublish,
    context: Context,
    traceId: string | null,
    correlationId: string,
    persisted = false,
  ): Promise<void> {
    const pipeline = activePipeline(this.#p.pipeline);
    if (pipeline === undefined && this.#p.onLifecycle === undefined)
      return this.#publish(e, context, traceId, correlationId, undefined, undefined, persisted);
    const flow = createFlow(
      this.#p.onLifecycle,
      this.#p.log,
      "event",
      correlationId,
      traceId,
      undefined,
      undefined,
      e.topic,
      false,
    );
    if (pipeline === undefined) {
      await this.#run(undefined, flow, () =>
        this.#publish(e, context, traceId, correlationId, undefined, flow, persisted),
      );
      return;
    }
    const call = new EventCall(e, context, traceId, correlationId);
    await this.#run(call, flow, () => {
      checkCallChanges(call);
      const trace = call.traceId === "" ? null : call.traceId;
      if (flow !== undefined) flow.fields.traceId = trace;
      const changed = { topic: call.topic, event: call.event, target: call.target };
      const headers = EventCall.headersOf(call);
      return this.#publish(changed, call.context, trace, correlationId, headers, flow, persisted);
    });
  }

  async #publish(
    e: EventToPublish,
    context: Context,
    traceId: string | null,
    correlationId: string,
    headers: OutgoingHeaders | undefined,
    flow: MessageFlow | undefined,
    persisted: boolean,
  ): Promise<void> {
    const payload: EventPayload = {
      tag: "event",
      topic: e.topic,
      event: e.event,
      // Every subscriber of the topic gets this context: a service leaves its secrets out.
      context: persisted
        ? withoutCredentials(withoutKeys(context, this.#p.persistedSecretKeys))
        : withoutKeys(context, this.#p.eventSecretKeys),
      trace_id: traceId,
      correlation_id: correlationId,
      target: e.target ?? null,
    };
    flow?.emit("client-encode");
    const frame = withHeaders(encodePayload(payload), headers);
    flow?.emit("client-send");
    // Persisted: the log's append also delivers it, and resolves once the log holds it.
    if (persisted) await appendToLog(this.#p.transport, e.topic, frame);
    else await this.#p.transport.send({ kind: "event", topic: e.topic }, frame);
  }

  /** Runs a call through the middleware (when `call` is given), reporting its start and end. */
  #run(
    call: ClientCall | undefined,
    flow: MessageFlow | undefined,
    terminal: () => Promise<unknown>,
  ): Promise<unknown> {
    flow?.emit("client-start");
    let run: Promise<unknown>;
    try {
      const pipeline = this.#p.pipeline;
      run = call !== undefined && pipeline !== undefined ? pipeline(call, terminal) : terminal();
    } catch (err) {
      run = Promise.reject(err);
    }
    if (flow === undefined) return run;
    return run.then(
      (value) => {
        flow.emit("client-end");
        return value;
      },
      (err: unknown) => {
        flow.emit("client-end", { error: errorName(err) });
        throw err;
      },
    );
  }

  /**
   * `frame` sealed for `service` here and now, when its description is cached and no cipher
   * thread is used; otherwise undefined (then {@link #seal}).
   * @throws NuropbMessageError when the peer cannot be sealed for.
   */
  #sealNow(service: string, frame: Frame): { frame: Frame; replyKey: ReplyKey } | undefined {
    if (!this.#p.sealing.inline) return undefined;
    const peer = this.directory.cachedPeerKeys(service);
    return peer === undefined ? undefined : this.#p.sealing.sealRequestNow(frame, peer);
  }

  /** `frame` sealed for `service` (its keys come from its description, fetched if needed). */
  async #seal(service: string, frame: Frame): Promise<{ frame: Frame; replyKey: ReplyKey }> {
    return this.#p.sealing.sealRequest(frame, await this.directory.peerKeys(service));
  }
}
