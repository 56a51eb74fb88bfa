export { createNatsTransport } from "./nats-transport.ts";
export { NATS_EVENT_LOG_MAX_PAGE } from "./event-log.ts";
export { createNatsDeadLetterStore, type NatsDeadLetterStoreOptions } from "./dead-letter-store.ts";
export { DEFAULT_NATS_MAX_FRAME_BYTES } from "./options.ts";
export { createNatsLeaseStore } from "./lease-store.ts";
export {
  createNatsBacklogProbe,
  type NatsBacklogProbe,
  type NatsBacklogProbeOptions,
} from "./backlog-probe.ts";

export type { NatsCoreFraming, NatsRequestMode, NatsTransportOptions } from "./options.ts";
export type { NatsLeaseStore, NatsLeaseStoreOptions } from "./lease-store.ts";
