export {
  NUROPB_VERSION,
  NUROPB_PROTOCOL_VERSION,
  SUPPORTED_PROTOCOL_VERSIONS,
  MessageType,
  LifecycleState,
  Header,
  ENCRYPTED_YES,
  CONTENT_TYPE_JSON,
  DESCRIBE_METHOD,
  DEFAULT_RPC_EXCHANGE,
  DEFAULT_EVENTS_EXCHANGE,
  DEFAULT_DL_EXCHANGE,
  DEFAULT_DL_QUEUE,
  DEFAULT_MESH,
  DEFAULT_RPC_TTL_MS,
  DESCRIBE_TTL_MS,
  serviceQueueName,
  responseQueueName,
} from "./constants.ts";
export { newId } from "./ids.ts";
export {
  NuropbError,
  NuropbTimeoutError,
  NuropbTransportError,
  NuropbConnectionClosedError,
  NuropbMessageError,
  NuropbHandlingError,
  NuropbDeprecatedError,
  NuropbValidationError,
  NuropbAuthenticationError,
  NuropbAuthorizationError,
  NuropbNotDeliveredError,
  NuropbCallAgain,
  NuropbCallAgainReject,
  NuropbSuccess,
  isNuropbError,
  toErrorPayload,
  fromErrorPayload,
} from "./errors.ts";
export { MAX_JSON_DEPTH, toWireJson, normaliseJson, parseWireJson } from "./json.ts";
export { buildHeaders, encodePayload, decodeFrame } from "./codec.ts";
export { noopLogger, createConsoleLogger, isLogger } from "./logger.ts";
export {
  MAX_HEADERS_JSON_BYTES,
  MAX_TIMER_MS,
  MAX_MESSAGE_TTL_MS,
  assertFrameTtl,
  positiveIntOption,
  timerOption,
} from "./limits.ts";
export { createDeferred } from "./runtime.ts";
export { createEventChannel } from "./event-channel.ts";
export { createTransportLifecycle } from "./lifecycle.ts";
export { topicMatches, assertTopicPattern } from "./topic.ts";
export { schedulingOf } from "./scheduling.ts";
export { eventLogOf } from "./event-log.ts";

export type { NuropbErrorOptions, PendingEvent } from "./errors.ts";
export type {
  JsonValue,
  JsonObject,
  ErrorPayload,
  Context,
  RequestPayload,
  CommandPayload,
  EventPayload,
  ResponsePayload,
  ServicePayload,
  Payload,
  EventType,
  TransportServicePayload,
  TransportRespondPayload,
} from "./payloads.ts";
export type { EncodeOptions, DecodedMessage, DecodedMessageOf, DecodableFrame } from "./codec.ts";
export type {
  WireHeaders,
  Frame,
  InboundFrame,
  Delivery,
  Destination,
  ServiceQueueSpec,
  ResponseQueueSpec,
  DeliveryHandler,
  ResponseHandler,
  Listener,
  TransportEvent,
  TransportCapabilities,
  Transport,
} from "./transport.ts";
export type { ClaimOutcome, TransportScheduling } from "./scheduling.ts";
export type { DeadLetterEntry, DeadLetterStore } from "./dead-letters.ts";
export type {
  TransportEventLog,
  EventLogRetention,
  EventLogPosition,
  EventLogEntry,
  EventLogStart,
  EventLogReadOptions,
  EventLogPage,
  EventLogFollowOptions,
} from "./event-log.ts";
export type { Logger, LogFields } from "./logger.ts";
export type { Deferred } from "./runtime.ts";
export type { EventChannel } from "./event-channel.ts";
export type { TransportLifecycle } from "./lifecycle.ts";
