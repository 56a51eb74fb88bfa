export { run, CLI_VERSION } from "./run.ts";
export { DEFAULT_CONNECT_TIMEOUT_MS } from "./commands/context.ts";
export { ExitCode } from "./errors.ts";
export {
  formatTable,
  formatParameters,
  formatDescription,
  formatServices,
  formatEvent,
  formatEventJson,
  schemaType,
} from "./format.ts";
export { listServiceQueues } from "./management.ts";
export { urlTransportFactory } from "./transports.ts";

export type { RunOptions } from "./run.ts";
export type { CliIo, Colors } from "./io.ts";
export type { TransportFactory } from "./session.ts";
export type { Column, ServiceQueueInfo, ReceivedEvent } from "./format.ts";
