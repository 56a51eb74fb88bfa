import type { CommandPayload, Context, RequestPayload } from "@nuropb/protocol";
import {
  createOutgoingHeaders,
  type ClientCall,
  type ClientCommandCall,
  type ClientEventCall,
  type ClientRequestCall,
  type IncomingResponse,
  type OutgoingHeaders,
} from "./middleware.ts";
import { checkPlainObject, checkTtl } from "./options.ts";
import type { EventToPublish } from "./types.ts";

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

// Classes rather than literals: one is made per call that has middleware, and what a call's
// middleware may never touch (its headers map, its state) is made only when it is asked for.

/** A request as its middleware sees it; core records the response on it. */
export class RequestCall implements ClientRequestCall {
  readonly kind = "request";
  readonly service: string;
  readonly method: string;
  params: Readonly<Record<string, unknown>>;
  context: Context;
  traceId: string;
  readonly correlationId: string;
  ttlMs: number;
  encrypted: boolean;
  readonly rpcResponse: boolean;
  response: IncomingResponse | undefined = undefined;
  #headers: OutgoingHeaders | undefined;
  #state: Record<string, unknown> | undefined;

  constructor(f: CallFields, rpcResponse: boolean) {
    this.service = f.service;
    this.method = f.method;
    this.params = f.params;
    this.context = f.context;
    this.traceId = f.traceId;
    this.correlationId = f.correlationId;
    this.ttlMs = f.ttlMs;
    this.encrypted = f.encrypted;
    this.rpcResponse = rpcResponse;
  }

  get headers(): OutgoingHeaders {
    return (this.#headers ??= createOutgoingHeaders());
  }

  get state(): Record<string, unknown> {
    return (this.#state ??= {});
  }

  /** The extra headers, or undefined when no middleware asked for them. */
  static headersOf(call: RequestCall): OutgoingHeaders | undefined {
    return call.#headers;
  }
}

/** A command as its middleware sees it. */
export class CommandCall implements ClientCommandCall {
  readonly kind = "command";
  readonly service: string;
  readonly method: string;
  params: Readonly<Record<string, unknown>>;
  context: Context;
  traceId: string;
  readonly correlationId: string;
  ttlMs: number;
  encrypted: boolean;
  #headers: OutgoingHeaders | undefined;
  #state: Record<string, unknown> | undefined;

  constructor(f: CallFields) {
    this.service = f.service;
    this.method = f.method;
    this.params = f.params;
    this.context = f.context;
    this.traceId = f.traceId;
    this.correlationId = f.correlationId;
    this.ttlMs = f.ttlMs;
    this.encrypted = f.encrypted;
  }

  get headers(): OutgoingHeaders {
    return (this.#headers ??= createOutgoingHeaders());
  }

  get state(): Record<string, unknown> {
    return (this.#state ??= {});
  }

  /** The extra headers, or undefined when no middleware asked for them. */
  static headersOf(call: CommandCall): OutgoingHeaders | undefined {
    return call.#headers;
  }
}

/** An event as its middleware sees it; a void trace id (a raised event's) shows as "". */
export class EventCall implements ClientEventCall {
  readonly kind = "event";
  readonly topic: string;
  event: unknown;
  target: readonly string[] | null;
  context: Context;
  traceId: string;
  readonly correlationId: string;
  #headers: OutgoingHeaders | undefined;
  #state: Record<string, unknown> | undefined;

  constructor(e: EventToPublish, context: Context, traceId: string | null, correlationId: string) {
    this.topic = e.topic;
    this.event = e.event;
    this.target = e.target ?? null;
    this.context = context;
    this.traceId = traceId ?? "";
    this.correlationId = correlationId;
  }

  get headers(): OutgoingHeaders {
    return (this.#headers ??= createOutgoingHeaders());
  }

  get state(): Record<string, unknown> {
    return (this.#state ??= {});
  }

  /** The extra headers, or undefined when no middleware asked for them. */
  static headersOf(call: EventCall): OutgoingHeaders | undefined {
    return call.#headers;
  }
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
