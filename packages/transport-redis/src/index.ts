export { createRedisTransport } from "./redis-transport.ts";
export {
  createRedisDeadLetterStore,
  type RedisDeadLetterStoreOptions,
} from "./dead-letter-store.ts";
export { DEFAULT_REDIS_MAX_FRAME_BYTES } from "./options.ts";
export { createRedisLeaseStore } from "./lease-store.ts";
export {
  createRedisBacklogProbe,
  type RedisBacklogProbe,
  type RedisBacklogProbeOptions,
} from "./backlog-probe.ts";

export type { RedisTransportOptions } from "./options.ts";
export type { RedisLeaseStore, RedisLeaseStoreOptions } from "./lease-store.ts";
