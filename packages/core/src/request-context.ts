import { NuropbValidationError, type Context } from "@nuropb/protocol";
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
 * trace id (and, unless given another, the caller's context) along.
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
> & { readonly participant: MeshParticipant };

/** A class rather than an object of closures: one is made per handled message. */
class HandlerContextImpl implements HandlerContext {
  readonly context: Context;
  readonly userClaims: unknown;
  readonly traceId: string | null;
  readonly correlationId: string;
  readonly service: string;
  readonly method: string;
  readonly encrypted: boolean;
  readonly redelivered: boolean;
  readonly events: EventToPublish[] = [];
  readonly #participant: MeshParticipant;

  constructor(f: RequestContextFields) {
    this.context = f.context;
    this.userClaims = f.userClaims;
    this.traceId = f.traceId;
    this.correlationId = f.correlationId;
    this.service = f.service;
    this.method = f.method;
    this.encrypted = f.encrypted;
    this.redelivered = f.redelivered;
    this.#participant = f.participant;
  }

  addEvent(event: EventToPublish): void {
    if (
      typeof event !== "object" ||
      event === null ||
      typeof event.topic !== "string" ||
      event.topic === ""
    ) {
      throw new NuropbValidationError(
        "ctx.addEvent needs { topic: non-empty string, event, target? }",
      );
    }
    this.events.push(event);
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
}

/** The context handed to one handler call (internal to core). */
export function createRequestContext(fields: RequestContextFields): HandlerContext {
  return new HandlerContextImpl(fields);
}
