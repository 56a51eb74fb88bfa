export { tracing } from "./tracing.ts";
export { metrics, MetricName } from "./metrics.ts";
export { Attr, Outcome, messagingSystemOf } from "./attributes.ts";
export { headerGetter, headerSetter } from "./header-carrier.ts";

export type { TracingOptions, NuropbTracing } from "./tracing.ts";
export type { MetricsOptions, NuropbMetrics } from "./metrics.ts";
