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
export interface RequestContext {
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
  /** Queues an event; published after the response, and only if the handler succeeds. */
  addEvent(event: EventToPublish): void;
  request<TResult = unknown>(
    service: string,
    method: string,
    params?: Readonly<Record<string, unknown>>,
    context?: Context,
    options?: RequestOptions & { readonly rpcResponse?: true },
  ): Promise<TResult>;
  command(
    service: string,
    method: string,
    params?: Readonly<Record<string, unknown>>,
    context?: Context,
    options?: CommandOptions,
  ): Promise<void>;
  publishEvent(
    topic: string,
    event: unknown,
    context?: Context,
    options?: PublishEventOptions,
  ): Promise<void>;
}

/** Internal: a RequestContext plus the events it gathered. */
export interface HandlerContext extends RequestContext {
  readonly events: EventToPublish[];
}

export function createRequestContext(args: {
  readonly participant: MeshParticipant;
  readonly context: Context;
  readonly userClaims: unknown;
  readonly traceId: string | null;
  readonly correlationId: string;
  readonly service: string;
  readonly method: string;
  readonly encrypted: boolean;
}): HandlerContext {
  const { participant } = args;
  const events: EventToPublish[] = [];
  const trace = args.traceId ?? undefined;
  return {
    context: args.context,
    userClaims: args.userClaims,
    traceId: args.traceId,
    correlationId: args.correlationId,
    service: args.service,
    method: args.method,
    encrypted: args.encrypted,
    events,
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
      events.push(event);
    },
    request<TResult>(
      service: string,
      method: string,
      params?: Readonly<Record<string, unknown>>,
      context?: Context,
      options: RequestOptions = {},
    ): Promise<TResult> {
      return participant.request<TResult>(service, method, params, context ?? args.context, {
        ...(trace !== undefined ? { traceId: trace } : {}),
        ...options,
        rpcResponse: true,
      });
    },
    command(service, method, params, context, options = {}) {
      return participant.command(service, method, params, context ?? args.context, {
        ...(trace !== undefined ? { traceId: trace } : {}),
        ...options,
      });
    },
    publishEvent(topic, event, context, options = {}) {
      return participant.publishEvent(topic, event, context ?? args.context, {
        ...(trace !== undefined ? { traceId: trace } : {}),
        ...options,
      });
    },
  };
}
