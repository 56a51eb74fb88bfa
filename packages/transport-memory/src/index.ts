export { createMemoryHub } from "./memory-hub.ts";
export { createMemoryTransport, DEFAULT_MEMORY_MAX_FRAME_BYTES } from "./memory-transport.ts";
export { createMemoryLeaseStore } from "./lease-store.ts";
export { createMemoryBacklogProbe } from "./backlog-probe.ts";

export type {
  MemoryHub,
  MemoryHubOptions,
  MemoryDeadLetter,
  MemoryDisconnectOptions,
} from "./memory-hub.ts";
export type { MemoryTransportOptions } from "./memory-transport.ts";
export type { MemoryLeaseStore, MemoryLeaseStoreOptions } from "./lease-store.ts";
