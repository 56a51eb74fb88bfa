/** Any JSON value as it travels in a body; an integer beyond ±(2^53 − 1) is a `bigint`. */
export type JsonValue =
  null | boolean | number | bigint | string | JsonValue[] | { [key: string]: JsonValue };
/** A JSON object. */
export type JsonObject = { [key: string]: JsonValue };

/** The error object of a response (PROTOCOL.md §4.5). `retryable`/`details` are our additions. */
export interface ErrorPayload {
  /** Class name of the error, e.g. `NuropbHandlingError`. */
  readonly error: string;
  /** Human text. */
  readonly description: string;
  readonly retryable?: boolean;
  readonly details?: Readonly<Record<string, unknown>>;
}

/** Caller context: echoed back in responses, carries the bearer token under `Authorization`. */
export type Context = Readonly<Record<string, unknown>>;

/** Body of a request (PROTOCOL.md §4.1). Field names are the wire's. */
export interface RequestPayload {
  readonly tag: "request";
  readonly service: string;
  readonly method: string;
  readonly params: Readonly<Record<string, unknown>>;
  readonly correlation_id: string;
  readonly context: Context;
  readonly trace_id: string | null;
}

/** Body of a command: a request that is never answered (PROTOCOL.md §4.2). */
export interface CommandPayload {
  readonly tag: "command";
  readonly service: string;
  readonly method: string;
  readonly params: Readonly<Record<string, unknown>>;
  readonly correlation_id: string;
  readonly context: Context;
  readonly trace_id: string | null;
}

/** Body of an event (PROTOCOL.md §4.3). `target` is always present (null when unset). */
export interface EventPayload {
  readonly tag: "event";
  readonly topic: string;
  readonly event: unknown;
  readonly context: Context;
  readonly trace_id: string | null;
  readonly correlation_id: string;
  readonly target: readonly string[] | null;
}

/** Body of a response (PROTOCOL.md §4.4). */
export interface ResponsePayload {
  readonly tag: "response";
  readonly result: unknown;
  readonly error: ErrorPayload | null;
  readonly correlation_id: string;
  readonly trace_id: string | null;
  readonly context: Context;
  readonly warning: string | null;
  readonly reply_to: string;
}

/** A message a service receives. */
export type ServicePayload = RequestPayload | CommandPayload | EventPayload;
/** Any NuroPb message body. */
export type Payload = ServicePayload | ResponsePayload;

/** An event as a service's `handleEvent` sees it. */
export interface EventType {
  readonly topic: string;
  readonly event: unknown;
  readonly target: readonly string[] | null;
  readonly context: Context;
  readonly traceId: string | null;
}

/**
 * What a transport is asked to send for one message: the encoded body plus the fields a broker
 * must see (PROTOCOL.md §3). Produced by {@link encodePayload}.
 */
export interface TransportServicePayload {
  readonly type: "request" | "command" | "event";
  readonly correlationId: string;
  readonly traceId: string | null;
  /** Where the response goes (requests and commands). */
  readonly replyTo?: string;
  /** Time-to-live in ms for requests and commands; absent or 0 = none. */
  readonly ttlMs?: number;
}

/** The fields a response needs besides its body. */
export interface TransportRespondPayload {
  readonly correlationId: string;
  readonly traceId: string | null;
  /** The requester's reply address (the request's `reply_to`). */
  readonly replyTo: string;
}
