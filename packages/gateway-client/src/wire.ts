/**
 * The gateway's WebSocket protocol: one JSON object per text message. The client numbers its
 * messages (`id`, a string or number it chooses, unique among its calls in flight); every answer
 * carries the `id` it answers. Events carry the `id` of the `subscribe` that asked for them.
 */

/** A message id chosen by the client. */
export type MessageId = string | number;

/** The NuroPb error object: the class name and a description, as on the mesh. */
export interface ErrorObject {
  readonly error: string;
  readonly description: string;
  readonly retryable?: boolean;
  readonly details?: Readonly<Record<string, unknown>>;
}

/** What a client sends. */
export type ClientMessage =
  /** Call a method; answered with `result` or `error`. */
  | {
      readonly id: MessageId;
      readonly type: "request";
      readonly service: string;
      readonly method: string;
      readonly params?: Readonly<Record<string, unknown>>;
      /** Ttl of the call, in ms. @defaultValue the gateway's */
      readonly ttlMs?: number;
      readonly traceId?: string;
    }
  /** Send a command; answered with `ok` once the mesh has it. */
  | {
      readonly id: MessageId;
      readonly type: "command";
      readonly service: string;
      readonly method: string;
      readonly params?: Readonly<Record<string, unknown>>;
      readonly ttlMs?: number;
      readonly traceId?: string;
    }
  /** Publish an event; answered with `ok`. */
  | {
      readonly id: MessageId;
      readonly type: "publish";
      readonly topic: string;
      readonly event?: unknown;
      readonly traceId?: string;
    }
  /** Receive the events matching an AMQP topic pattern; answered with `ok`, then `event`s. */
  | { readonly id: MessageId; readonly type: "subscribe"; readonly pattern: string }
  /** Stop a subscription (the `id` of its `subscribe`); answered with `ok`. */
  | { readonly id: MessageId; readonly type: "unsubscribe"; readonly subscription: MessageId }
  /** The exposed description of a service; answered with `result`. */
  | { readonly id: MessageId; readonly type: "describe"; readonly service: string }
  /** The names of the exposed services; answered with `result`. */
  | { readonly id: MessageId; readonly type: "services" }
  /** Set (or, with `null`, clear) the token used for this connection's later calls; `ok`. */
  | { readonly id: MessageId; readonly type: "authenticate"; readonly token: string | null }
  /**
   * A request sealed end to end (`body`: the encrypted NuroPb body, as its ASCII text);
   * answered with `sealed-response`. The gateway never sees what is inside.
   */
  | {
      readonly id: MessageId;
      readonly type: "sealed-request" | "sealed-command";
      readonly service: string;
      /** The correlation id sealed inside the body; the response carries it. */
      readonly correlationId: string;
      readonly body: string;
      readonly ttlMs?: number;
      readonly traceId?: string;
    }
  /** Heartbeat; answered with `pong`. */
  | { readonly type: "ping" };

/** What the gateway sends. */
export type ServerMessage =
  | {
      readonly id: MessageId;
      readonly type: "result";
      readonly result: unknown;
      readonly traceId?: string;
    }
  | { readonly id: MessageId; readonly type: "ok"; readonly traceId?: string }
  | {
      readonly id: MessageId | null;
      readonly type: "error";
      readonly error: ErrorObject;
      /** The HTTP status the same failure gets over REST. */
      readonly status: number;
    }
  | {
      readonly id: MessageId;
      readonly type: "sealed-response";
      /** False when the service answered in plaintext (it could not open the call). */
      readonly encrypted: boolean;
      readonly body: string;
    }
  | {
      readonly type: "event";
      /** The `id` of the `subscribe` this event matched. */
      readonly subscription: MessageId;
      readonly topic: string;
      readonly event: unknown;
      readonly target: readonly string[] | null;
      readonly traceId: string | null;
    }
  | { readonly type: "pong" };

/** WebSocket close codes the gateway and its client use. */
export const CloseCode = {
  /** Closed on purpose (`client.close()`). */
  normal: 1000,
  /** The gateway is shutting down. */
  goingAway: 1001,
  /** A message larger than the gateway's `maxMessageBytes`. */
  messageTooBig: 1009,
  /** The connection read too slowly: its send buffer passed `maxBufferedBytes`. */
  slowConsumer: 4001,
  /** No answer to heartbeats. */
  heartbeatTimeout: 4002,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

/** The WebSocket path the gateway serves. */
export const WEBSOCKET_PATH = "/ws";
