export { createAmqpTransport } from "./amqp-transport.ts";
export { COMPACT_MESH_MARKER, markMeshCompact } from "./dialect.ts";
export { AMQP_EVENT_LOG_MAX_PAGE } from "./event-log.ts";
export { createAmqpDeadLetterStore, type AmqpDeadLetterStoreOptions } from "./dead-letter-store.ts";
export {
  createAmqpBacklogProbe,
  type AmqpBacklogProbe,
  type AmqpBacklogProbeOptions,
} from "./backlog-probe.ts";
export {
  createAmqpLeaderElection,
  type AmqpLeaderElection,
  type AmqpLeaderElectionOptions,
  type AmqpLeadershipEvent,
} from "./leader-election.ts";
export { DEFAULT_HEARTBEAT_SEC, DEFAULT_MAX_FRAME_BYTES, obfuscateUrl } from "./options.ts";
export {
  buildAmqpUrl,
  buildManagementUrl,
  managementUrlFromAmqpUrl,
  listVhosts,
  vhostExists,
  createVhost,
  deleteVhost,
  configureMesh,
  teardownMesh,
} from "./management.ts";

export type { AmqpDialect } from "./frame-codec.ts";
export type {
  AmqpTransportOptions,
  AmqpConnectionSettings,
  AmqpTlsOptions,
  AmqpReconnectOptions,
  AmqpFailoverOrder,
} from "./options.ts";
export type {
  ManagementOptions,
  ManagementTarget,
  ManagementUrlParts,
  ConfigureMeshOptions,
  MeshSetupResult,
} from "./management.ts";
