import { isNuropbError } from "@nuropb/protocol";
import type { ServiceMiddleware } from "@nuropb/core";

/** One line of the audit trail: who called what, and how it ended. Never params or tokens. */
export interface AuditEntry {
  readonly service: string;
  readonly method: string;
  /** The caller's verified claims; undefined when authorisation did not run or refused. */
  readonly user: unknown;
  readonly outcome: "ok" | "error";
  /** The error's wire name, when it did not end well. */
  readonly error?: string;
  readonly correlationId: string;
  readonly traceId: string | null;
}

/**
 * Writes an audit entry for each request and command a service handles. It is the outermost
 * service middleware, so it sees every refusal (rate limit, authorisation) too; it reads the
 * claims after `next()`, once authorisation has run.
 */
export function auditTrail(write: (entry: AuditEntry) => void): ServiceMiddleware {
  return async (call, next) => {
    if (call.kind === "event") return next();
    const entry = (outcome: AuditEntry["outcome"], error?: string): AuditEntry => ({
      service: call.service,
      method: call.method,
      user: call.userClaims,
      outcome,
      ...(error !== undefined ? { error } : {}),
      correlationId: call.correlationId,
      traceId: call.traceId,
    });
    try {
      const result = await next();
      write(entry("ok"));
      return result;
    } catch (err) {
      write(entry("error", isNuropbError(err) ? err.wireName : (err as Error).name));
      throw err;
    }
  };
}
