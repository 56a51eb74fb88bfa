export { createInProcessBus } from "./in-process-bus.ts";
export { createInProcessTransport } from "./in-process-transport.ts";

export type { InProcessBus } from "./in-process-bus.ts";
export type { InProcessTransportOptions } from "./in-process-transport.ts";
