export { createService, createClient } from "./participant.ts";
export { publishToMesh } from "./mesh-method.ts";
export { FailureHeader, failureRecordOf, withoutFailureHeaders } from "./failure-policy.ts";
export { faultTopic } from "./failure-pipeline.ts";
export { onAnswer, onAnswerError } from "./call-later-handlers.ts";
export {
  CALL_LATER_CONTEXT_KEY,
  MAX_CALL_LATER_STATE_BYTES,
  ANSWER_CLAIM_MARGIN_MS,
} from "./call-later.ts";
export { normaliseDescription } from "./describe.ts";
export { MessageLifecycleState } from "./message-lifecycle.ts";
export { STATS_METHOD } from "./service-stats.ts";
export { serveHealth } from "./health-server.ts";
export { createLeaseElection } from "./leader-election.ts";
export {
  NuropbEventLogUnavailableError,
  DEFAULT_EVENT_PAGE_LIMIT,
  MAX_EVENT_PAGE_LIMIT,
} from "./event-history.ts";
export {
  watchServices,
  createServicesView,
  isStatusEvent,
  STATUS_TOPIC,
  MIN_STATUS_HEARTBEAT_MS,
  MAX_STATUS_HEARTBEAT_MS,
} from "./watch-services.ts";

export type {
  JSONSchema,
  AuthorizeFunction,
  AuthorizeInfo,
  MeshMethodOptions,
} from "./mesh-method.ts";
export type { FailurePolicy, FailureRecord } from "./failure-policy.ts";
export type { ServiceDescription, MethodDescription } from "./describe.ts";
export type {
  StoredEvent,
  QueryEventsOptions,
  EventPage,
  EventReplayStart,
  SubscribeEventsOptions,
  StoredEventHandler,
  EventSubscription,
} from "./event-history.ts";
export type { RequestContext } from "./request-context.ts";
export type { CallLaterOptions, CallLaterFunction } from "./call-later.ts";
export type {
  AnswerContext,
  AnswerHandler,
  AnswerErrorHandler,
  AnswerHandlerOption,
} from "./call-later-handlers.ts";
export type {
  ClientCall,
  ClientRequestCall,
  ClientCommandCall,
  ClientEventCall,
  ClientMiddleware,
  ServiceCall,
  ServiceRequestCall,
  ServiceCommandCall,
  ServiceEventCall,
  ServiceAnswerCall,
  ServiceMiddleware,
  MethodCall,
  MethodMiddleware,
  OutgoingHeaders,
  IncomingResponse,
} from "./middleware.ts";
export type { LifecycleTransition, LifecycleListener } from "./message-lifecycle.ts";
export type { ServiceStatsReport, MethodStats } from "./service-stats.ts";
export type { HealthServer, HealthServerOptions, HealthTarget } from "./health-server.ts";
export type {
  LeaderElection,
  LeadershipEvent,
  LeaseStore,
  LeaseElectionOptions,
} from "./leader-election.ts";
export type {
  StatusEvent,
  ParticipantStatus,
  ServicesView,
  ServiceView,
  InstanceView,
  ServicesViewBuilder,
  WatchServicesOptions,
  ServicesWatch,
} from "./watch-services.ts";
export type {
  RequestOptions,
  CommandOptions,
  PublishEventOptions,
  EventToPublish,
  MeshParticipant,
  ParticipantEvent,
  MeshService,
  MeshClient,
  ServiceProxy,
  ParticipantOptions,
  ClientOptions,
  ServiceOptions,
  EventContextMode,
} from "./types.ts";
