import type { CommandPayload, Context, RequestPayload } from "@nuropb/protocol";
import {
  createOutgoingHeaders,
  type ClientCall,
  type ClientCommandCall,
  type ClientEventCall,
  type ClientRequestCall,
} from "./middleware.ts";
import { checkPlainObject, checkTtl } from "./options.ts";
import type { EventToPublish } from "./types.ts";

type Mutable<T> = { -readonly [K in keyof T]: T[K] };
/** A request as core holds it for middleware (core records the response on it). */
export type RequestCall = Mutable<ClientRequestCall>;
export type CommandCall = Mutable<ClientCommandCall>;
export type EventCall = Mutable<ClientEventCall>;

/** The fields of a request or command, checked. */
export interface CallFields {
  readonly service: string;
  readonly method: string;
  readonly params: Readonly<Record<string, unknown>>;
  readonly context: Context;
  readonly traceId: string;
  readonly correlationId: string;
  readonly ttlMs: number;
  readonly encrypted: boolean;
}

/** What a request's middleware sees. */
export function requestCall(f: CallFields, rpcResponse: boolean): RequestCall {
  return {
    kind: "request",
    service: f.service,
    method: f.method,
    params: f.params,
    context: f.context,
    headers: createOutgoingHeaders(),
    traceId: f.traceId,
    correlationId: f.correlationId,
    ttlMs: f.ttlMs,
    encrypted: f.encrypted,
    rpcResponse,
    response: undefined,
    state: {},
  };
}

/** What a command's middleware sees. */
export function commandCall(f: CallFields): CommandCall {
  return {
    kind: "command",
    service: f.service,
    method: f.method,
    params: f.params,
    context: f.context,
    headers: createOutgoingHeaders(),
    traceId: f.traceId,
    correlationId: f.correlationId,
    ttlMs: f.ttlMs,
    encrypted: f.encrypted,
    state: {},
  };
}

/** What an event's middleware sees; a void trace id (a raised event's) shows as "". */
export function eventCall(
  e: EventToPublish,
  context: Context,
  traceId: string | null,
  correlationId: string,
): EventCall {
  return {
    kind: "event",
    topic: e.topic,
    event: e.event,
    target: e.target ?? null,
    context,
    headers: createOutgoingHeaders(),
    traceId: traceId ?? "",
    correlationId,
    state: {},
  };
}

/** The wire payload of a request. */
export function requestPayload(
  service: string,
  method: string,
  params: Readonly<Record<string, unknown>>,
  correlationId: string,
  context: Context,
  traceId: string,
): RequestPayload {
  return {
    tag: "request",
    service,
    method,
    params,
    correlation_id: correlationId,
    context,
    trace_id: traceId,
  };
}

/** The wire payload of a command. */
export function commandPayload(
  service: string,
  method: string,
  params: Readonly<Record<string, unknown>>,
  correlationId: string,
  context: Context,
  traceId: string,
): CommandPayload {
  return {
    tag: "command",
    service,
    method,
    params,
    correlation_id: correlationId,
    context,
    trace_id: traceId,
  };
}

/**
 * Checks what middleware may have changed on an outgoing call, before it is encoded.
 * @throws TypeError naming the bad field.
 */
export function checkCallChanges(call: ClientCall): void {
  checkPlainObject(call.context, "call.context");
  if (typeof call.traceId !== "string") throw new TypeError("call.traceId must be a string");
  if (call.kind === "event") {
    const t: unknown = call.target;
    if (t !== null && (!Array.isArray(t) || !t.every((x) => typeof x === "string")))
      throw new TypeError("call.target must be an array of strings or null");
    return;
  }
  checkPlainObject(call.params, "call.params");
  checkTtl(call.ttlMs, "call.ttlMs");
  if (typeof call.encrypted !== "boolean") throw new TypeError("call.encrypted must be a boolean");
}
