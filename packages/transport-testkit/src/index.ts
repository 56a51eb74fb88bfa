export { describeTransportConformance } from "./conformance.ts";
export { describeCoreConformance } from "./core-conformance.ts";
export { describeCallLaterConformance } from "./call-later-conformance.ts";
export { describeEventLogConformance } from "./event-log-conformance.ts";
export { describeSchedulingConformance } from "./scheduling-conformance.ts";
export { describeTransientQueueConformance } from "./transient-queue-conformance.ts";
export {
  DEFAULT_WAIT_TIMEOUT_MS,
  waitFor,
  withTimeout,
  createCollector,
  watchEvents,
  delay,
  testHeaders,
  testFrame,
  frameText,
  testServiceSpec,
  uniqueName,
} from "./helpers.ts";

export type { TransportConformanceOptions } from "./conformance.ts";
export type { CoreConformanceOptions } from "./core-conformance.ts";
export type { CallLaterConformanceOptions } from "./call-later-conformance.ts";
export type { EventLogConformanceOptions } from "./event-log-conformance.ts";
export type { SchedulingConformanceOptions } from "./scheduling-conformance.ts";
export type { TransientQueueConformanceOptions } from "./transient-queue-conformance.ts";
export type { Collector, EventWatcher } from "./helpers.ts";
