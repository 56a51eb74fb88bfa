import { NuropbValidationError, type Context } from "@nuropb/protocol";
import type { CallLaterDefaults, CallLaterFunction, CallLaterOptions } from "./call-later.ts";
import type {
  CommandOptions,
  EventToPublish,
  MeshParticipant,
  PublishEventOptions,
  RequestOptions,
} from "./types.ts";

/**
 * What a handler gets as its second argument: the call's context, the caller's claims, the trace
 * and correlation ids, events to publish on success, and calls to other services that carry the
 * trace id (and, unless given another, the caller's context) along. Requests and commands carry
 * the caller's whole context, token included; the service leaves its secret keys out of the
 * context of events (see `ServiceOptions.eventContext`).
 */
export interface RequestContext extends Pick<MeshParticipant, "command" | "publishEvent"> {
  /** The caller's context, as sent. */
  readonly context: Context;
  /** What the method's `authorize` returned, or undefined. */
  readonly userClaims: unknown;
  readonly traceId: string | null;
  readonly correlationId: string;
  readonly service: string;
  readonly method: string;
  /** True when the call arrived encrypted. */
  readonly encrypted: boolean;
  /** True when the broker delivered this message before (e.g. after `NuropbCallAgain`). */
  readonly redelivered: boolean;
  /** Queues an event; published after the response, and only if the handler succeeds. */
  addEvent(event: EventToPublish): void;
  /** Like {@link MeshParticipant.request}, always resolving with the result. */
  request<TResult = unknown>(
    service: string,
    method: string,
    params?: Readonly<Record<string, unknown>>,
    context?: Context,
    options?: RequestOptions & { readonly rpcResponse?: true },
  ): Promise<TResult>;
  /**
   * An asynchronous call: its answer goes to this service's queue, to the handler declared with
   * `onAnswer` / `onAnswerError` for `service.method`, on whichever instance takes it. Resolves
   * with the call id once the broker has the request. The trace id and context default to this
   * handler's. See {@link MeshService.callLater}.
   * @throws TypeError for a bad argument, or a transport without scheduling.
   */
  callLater: CallLaterFunction;
}

/** Internal: a RequestContext plus the events it gathered. */
export interface HandlerContext extends RequestContext {
  readonly events: EventToPublish[];
}

/** The fields a request context is built from. */
export type RequestContextFields = Pick<
  RequestContext,
  | "context"
  | "userClaims"
  | "traceId"
  | "correlationId"
  | "service"
  | "method"
  | "encrypted"
  | "redelivered"
> & {
  /** Where the context's calls go (core passes calls that still work while it drains). */
  readonly participant: Pick<MeshParticipant, "request" | "command" | "publishEvent"> & {
    /** A service's asynchronous calls; undefined for a client. */
    readonly callLater?: (
      service: string,
      method: string,
      params: Readonly<Record<string, unknown>> | undefined,
      options: CallLaterOptions | undefined,
      defaults: CallLaterDefaults,
    ) => Promise<string>;
  };
};

/**
 * The calls a handler's context makes onward (a request's handler, an answer's): the trace id
 * goes along, and the context unless another is given. A class, not closures: one context is
 * made per handled message.
 */
export abstract class OnwardCalls {
  abstract readonly context: Context;
  abstract readonly traceId: string | null;
  readonly #participant: RequestContextFields["participant"];

  constructor(participant: RequestContextFields["participant"]) {
    this.#participant = participant;
  }

  #trace(): { traceId?: string } {
    return this.traceId === null ? {} : { traceId: this.traceId };
  }

  request<TResult>(
    service: string,
    method: string,
    params?: Readonly<Record<string, unknown>>,
    context?: Context,
    options: RequestOptions = {},
  ): Promise<TResult> {
    return this.#participant.request<TResult>(service, method, params, context ?? this.context, {
      ...this.#trace(),
      ...options,
      rpcResponse: true,
    });
  }

  command(
    service: string,
    method: string,
    params?: Readonly<Record<string, unknown>>,
    context?: Context,
    options: CommandOptions = {},
  ): Promise<void> {
    return this.#participant.command(service, method, params, context ?? this.context, {
      ...this.#trace(),
      ...options,
    });
  }

  publishEvent(
    topic: string,
    event: unknown,
    context?: Context,
    options: PublishEventOptions = {},
  ): Promise<void> {
    return this.#participant.publishEvent(topic, event, context ?? this.context, {
      ...this.#trace(),
      ...options,
    });
  }

  callLater(
    service: string,
    method: string,
    params?: Readonly<Record<string, unknown>>,
    options?: CallLaterOptions,
  ): Promise<string> {
    const callLater = this.#participant.callLater;
    if (callLater === undefined)
      return Promise.reject(new TypeError("callLater is for services only"));
    return callLater(service, method, params, options, {
      context: this.context,
      traceId: this.traceId,
    });
  }
}

/** The context of one handled request or command. */
class HandlerContextImpl extends OnwardCalls implements HandlerContext {
  readonly context: Context;
  readonly userClaims: unknown;
  readonly traceId: string | null;
  readonly correlationId: string;
  readonly service: string;
  readonly method: string;
  readonly encrypted: boolean;
  readonly redelivered: boolean;
  readonly events: EventToPublish[] = [];

  constructor(f: RequestContextFields) {
    super(f.participant);
    this.context = f.context;
    this.userClaims = f.userClaims;
    this.traceId = f.traceId;
    this.correlationId = f.correlationId;
    this.service = f.service;
    this.method = f.method;
    this.encrypted = f.encrypted;
    this.redelivered = f.redelivered;
  }

  addEvent(event: EventToPublish): void {
    // Checked here, where the handler can still see the mistake, not when the events go out.
    if (
      typeof event !== "object" ||
      event === null ||
      typeof event.topic !== "string" ||
      event.topic === "" ||
      event.topic.includes("*") ||
      event.topic.includes("#")
    ) {
      throw new NuropbValidationError(
        "ctx.addEvent needs { topic: non-empty string without wildcards, event, target? }",
      );
    }
    const target: unknown = event.target;
    if (
      target !== undefined &&
      target !== null &&
      (!Array.isArray(target) || !target.every((t) => typeof t === "string"))
    ) {
      throw new NuropbValidationError("ctx.addEvent: target must be an array of strings or null");
    }
    this.events.push(event);
  }
}

/** The context handed to one handler call (internal to core). */
export function createRequestContext(fields: RequestContextFields): HandlerContext {
  return new HandlerContextImpl(fields);
}
