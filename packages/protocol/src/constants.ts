/** Version of this TypeScript library, sent in the `nuropb_version` header (informational). */
export const NUROPB_VERSION = "0.1.0";

/** Wire protocol version this library speaks, sent in the `nuropb_protocol` header. */
export const NUROPB_PROTOCOL_VERSION = "0.1.1";

/** Wire protocol versions accepted from peers. A message with any other version is undecodable. */
export const SUPPORTED_PROTOCOL_VERSIONS: readonly string[] = Object.freeze([
  NUROPB_PROTOCOL_VERSION,
]);

/** The four message types; the header `nuropb_type` and the body `tag` carry one of these. */
export const MessageType = {
  request: "request",
  command: "command",
  event: "event",
  response: "response",
} as const;
/** One of {@link MessageType}. */
export type MessageType = (typeof MessageType)[keyof typeof MessageType];

/** Lifecycle of a transport, client or service. */
export const LifecycleState = {
  idle: "idle",
  connecting: "connecting",
  open: "open",
  closing: "closing",
  closed: "closed",
} as const;
/** One of {@link LifecycleState}. */
export type LifecycleState = (typeof LifecycleState)[keyof typeof LifecycleState];

/** Header names every NuroPb message carries (PROTOCOL.md §3). */
export const Header = {
  protocol: "nuropb_protocol",
  version: "nuropb_version",
  type: "nuropb_type",
  traceId: "trace_id",
  encrypted: "encrypted",
} as const;

/** Value of the `encrypted` header for an encrypted body; anything else means plaintext. */
export const ENCRYPTED_YES = "yes";

/** Content type of every NuroPb message, encrypted or not. */
export const CONTENT_TYPE_JSON = "application/json";

/** Reserved method answered by every service with its description (PROTOCOL.md §9). */
export const DESCRIBE_METHOD = "nuropb_describe";

/** Default rpc exchange (direct, durable) (PROTOCOL.md §2). */
export const DEFAULT_RPC_EXCHANGE = "nuropb-rpc-exchange";
/** Default events exchange (topic, durable). */
export const DEFAULT_EVENTS_EXCHANGE = "nuropb-events-exchange";
/** Default dead-letter exchange (fanout, durable). */
export const DEFAULT_DL_EXCHANGE = "nuropb-dl-exchange";
/** Default dead-letter queue declared by mesh setup (non-durable, as Python declares it). */
export const DEFAULT_DL_QUEUE = "nuropb-dl-queue";
/** Default mesh (vhost) name. */
export const DEFAULT_MESH = "nuropb";

/**
 * Default time-to-live of a request or command, in milliseconds. Python NuroPb uses one hour and
 * has no client-side timeout; we use a value that suits an RPC call and enforce it on the client.
 */
export const DEFAULT_RPC_TTL_MS = 30_000;

/** Time-to-live of a `nuropb_describe` call, in milliseconds (as Python sends it). */
export const DESCRIBE_TTL_MS = 60_000;

/** The service queue of a service: `nuropb-{service}-sq`. */
export function serviceQueueName(service: string): string {
  return `nuropb-${service}-sq`;
}

/**
 * The response queue of one participant: `nuropb-{service}-{instanceId}-rq`; a client-only
 * participant uses `{mesh}-client` as its service name.
 */
export function responseQueueName(
  service: string | undefined,
  instanceId: string,
  mesh: string,
): string {
  return `nuropb-${service ?? `${mesh}-client`}-${instanceId}-rq`;
}
