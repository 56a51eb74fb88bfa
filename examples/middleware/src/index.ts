export { logCalls } from "./logging.ts";
export { timeHandling, timeCalls } from "./timing.ts";
export { tokenBucket } from "./rate-limit.ts";
export { auditTrail } from "./audit.ts";

export type { Timing } from "./timing.ts";
export type { TokenBucketOptions } from "./rate-limit.ts";
export type { AuditEntry } from "./audit.ts";
